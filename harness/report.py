"""A study as a table (pandas) and as one self-contained HTML page of plotly figures.

:func:`trials_frame` flattens every trial (rejections, pruned and failed ones included) into
one row; :func:`write_report` turns it into ``report.html`` (plotly.js inlined, so the page
opens offline) and ``trials.csv``. Figures: validation and test accuracy against parameter
count (budget and target lines, baseline highlighted, rejections at their parameter count),
the Pareto front of validation accuracy vs parameters (with the retrained architectures' mean
test accuracy and their front), optimisation history, intermediate
values (pruning), parameter importances, and a table of the top trials.
"""

from __future__ import annotations

import contextlib
import html
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from harness.errors import HarnessError

__all__ = ["pareto_front", "trials_frame", "write_report"]

_COLUMNS = [
    "number", "outcome", "state", "origin", "baseline", "params", "val_acc", "test_acc", "test_images", "target_met",
    "epochs_run", "train_seconds", "train_images", "arch", "reject_reason", "fail_reason", "device", "seed",
    "datetime_start", "teacher", "teacher_sha256", "ema_decay", "trained_val_acc", "repeats", "repeat_val_accs",
    "intermediate_values", "val_images",
]  # fmt: skip


_INT_COLUMNS = ("params", "test_images", "epochs_run", "train_images", "val_images", "retrain_seeds", "retrain_epochs",
                "retrain_train_images", "repeats", "seed")  # fmt: skip


def _integer_param_columns(study: optuna.Study) -> set[str]:
    """The trials frame's ``param_*`` columns whose parameter only takes integers (an integer
    range, or choices that are all integers): a rejected trial's empty cell makes pandas hold
    them as floats (32.0)."""
    kinds: dict[str, bool] = {}
    for t in study.get_trials(deepcopy=False):
        for name, d in t.distributions.items():
            if isinstance(d, optuna.distributions.IntDistribution):
                integral = True
            elif isinstance(d, optuna.distributions.CategoricalDistribution):
                integral = all(isinstance(c, int) and not isinstance(c, bool) for c in d.choices)
            else:
                integral = False
            kinds[name] = kinds.get(name, True) and integral
    return {f"param_{name}" for name, integral in kinds.items() if integral}


def _kind(t: FrozenTrial) -> str:
    from harness.study import classify

    return classify(t)


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def trials_frame(study: optuna.Study):
    """One row per trial: outcome, parameter count, accuracies, readable arch, recipe params.

    ``val_acc`` of a pruned trial is its last validation accuracy (its epoch count is in
    ``epochs_run``); rejected trials have a parameter count and no accuracies. With weight
    averaging (``ema_decay`` > 0) ``val_acc`` scores the averaged weights, pruned trials too,
    and ``trained_val_acc`` the trained ones (what the pruner compared). With ``study.repeats``
    ``val_acc`` is the mean over the ``repeats`` seeds (each in ``repeat_val_accs``), while
    ``test_acc``, ``target_met`` and ``seed`` are the first seed's (the stored network's) and
    ``train_seconds`` the seeds' total.
    """
    import pandas as pd

    from harness.retrain import stored_retrains
    from harness.study import origin_of, param_count

    retrains = stored_retrains(study)
    study_recipe = study.user_attrs.get("train") or {}  # a trial without its own recipe trained with this one
    rows = []
    for t in study.get_trials(deepcopy=False):
        ua = t.user_attrs
        val = ua.get("val_acc")
        teacher = ua.get("teacher") or {}  # a distilled trial: its result depends on that network too
        if val is None and ua.get("val_history"):  # pruned with weight averaging: the averaged score
            val = ua["val_history"][-1]
        if val is None and t.intermediate_values:
            val = t.intermediate_values[max(t.intermediate_values)]
        recipe = ua.get("recipe") or study_recipe
        row = {
            "number": t.number,
            "outcome": _kind(t),
            "state": t.state.name,
            "origin": origin_of(t),
            "baseline": bool(ua.get("baseline", False)),
            "params": _num(param_count(ua)),
            "val_acc": _num(val),
            "test_acc": _num(ua.get("test_acc")),
            "test_images": _num(ua.get("test_images")),
            "target_met": ua.get("target_met"),
            "epochs_run": _num(ua.get("epochs_run")),
            "train_seconds": _num(ua.get("train_seconds")),
            "train_images": _num(ua.get("train_images")),
            "val_images": _num(ua.get("held_out_train_images")),  # the validation split it was scored on
            "arch": ua.get("arch", ""),
            "reject_reason": ua.get("reject_reason", ""),
            "fail_reason": ua.get("fail_reason", ""),
            "device": ua.get("device", ""),
            "seed": ua.get("seed"),
            "datetime_start": t.datetime_start,
            "teacher": teacher.get("path", ""),
            "teacher_sha256": teacher.get("sha256", ""),
            "ema_decay": _num(recipe.get("ema_decay", 0.0)) if ua.get("trainable_params") is not None else None,
            "trained_val_acc": _num((ua.get("raw_val_history") or [None])[-1]),
            # seeds behind val_acc: 1 for a single run (every study before study.repeats); none untrained
            "repeats": _num(len(ua.get("repeat_seeds") or [0]) if "epochs_run" in ua else None),
            "repeat_val_accs": " ".join(f"{v:.4f}" for v in ua.get("repeat_val_accs") or []),
            # what the pruner saw, epoch:score, exact (repr): harness restore rebuilds the curves from it
            "intermediate_values": " ".join(f"{step}:{value!r}" for step, value in sorted(t.intermediate_values.items())),
        }
        if t.number in retrains:  # harness retrain: full training set, several seeds
            r = retrains[t.number]
            row.update(retrain_test_mean=r.get("mean"), retrain_test_std=r.get("std"), retrain_seeds=r.get("seeds"),
                       retrain_epochs=r.get("epochs"), retrain_train_images=_num(r.get("train_images")))  # fmt: skip
        row.update({f"param_{k}": v for k, v in t.params.items()})
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=_COLUMNS)
    first = [c for c in _COLUMNS if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]]


def pareto_front(frame) -> Any:
    """Rows not dominated in (fewer params, higher val_acc), among completed within-budget trials,
    sorted by parameter count."""
    from harness.study import pareto_front as front_of

    done = frame[(frame["outcome"] == "complete") & frame["val_acc"].notna()]
    front = front_of(list(zip(done["params"], done["val_acc"])))
    return done.iloc[front]


def _hover(frame) -> list[str]:
    out = []
    for _, r in frame.iterrows():
        origin = f" ({r['origin']})" if r["origin"] != "sampler" else ""
        parts = [f"trial {r['number']}{origin}", f"{_fmt_int(r['params'])} params"]
        if not math.isnan(r["val_acc"]):
            parts.append(f"val {r['val_acc']:.4f}")
        if not math.isnan(r["test_acc"]):
            parts.append(f"test {r['test_acc']:.4f}")
        if r["reject_reason"]:
            parts.append(r["reject_reason"])
        parts.append(html.escape(str(r["arch"])))
        out.append("<br>".join(parts))
    return out


def _fmt_int(v: float) -> str:
    return "?" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{int(v):,}"


_STYLES = {  # outcome -> (label, marker symbol, colour)
    "complete": ("trained", "circle", "#1f77b4"),
    "pruned": ("pruned (last val acc)", "circle-open", "#7f7f7f"),
    "failed": ("failed", "x-thin-open", "#d62728"),
}


def _accuracy_figure(frame, budget: int, target: float):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=("validation accuracy (selection)", "test accuracy (record)"))  # fmt: skip
    scored = frame[frame["val_acc"].notna()]
    accs = list(scored["val_acc"]) + list(scored["test_acc"].dropna())
    lo = min(accs, default=0.9)
    hi = max(accs + [target], default=1.0)
    floor = lo - 0.08 * max(hi - lo, 1e-3)  # where rejected (never trained) trials are drawn
    # The x axis spans the trained points and the budget: one 86k-parameter rejection must not
    # squeeze them into a corner. Rejections beyond it are drawn at its edge (hover: real count).
    edge = 1.15 * max([budget, *scored["params"].dropna()])
    for col, metric in ((1, "val_acc"), (2, "test_acc")):
        for outcome, (label, symbol, colour) in _STYLES.items():
            part = frame[(frame["outcome"] == outcome) & frame[metric].notna() & ~frame["baseline"]]
            if part.empty:
                continue
            fig.add_trace(go.Scatter(
                x=part["params"], y=part[metric], mode="markers", name=label, legendgroup=label,
                showlegend=col == 1, marker=dict(symbol=symbol, color=colour, size=8),
                hovertext=_hover(part), hoverinfo="text",
            ), row=1, col=col)  # fmt: skip
        rejected = frame[frame["outcome"].isin(["over_budget", "invalid"]) & frame["params"].notna()]
        for part, label, symbol in ((rejected[rejected["params"] <= edge], "rejected over budget (not trained)", "x"),
                                    (rejected[rejected["params"] > edge], "rejected far over budget (drawn at the edge)",
                                     "triangle-right")):  # fmt: skip
            if part.empty:
                continue
            fig.add_trace(go.Scatter(
                x=[min(p, edge) for p in part["params"]], y=[floor] * len(part), mode="markers",
                name=label, legendgroup=label, showlegend=col == 1,
                marker=dict(symbol=symbol, color="#ff7f0e", size=9), hovertext=_hover(part), hoverinfo="text",
            ), row=1, col=col)  # fmt: skip
        base = frame[frame["baseline"] & frame[metric].notna()]
        if not base.empty:
            fig.add_trace(go.Scatter(
                x=base["params"], y=base[metric], mode="markers", name="baseline (seed network)",
                legendgroup="baseline", showlegend=col == 1,
                marker=dict(symbol="star", color="#ffbf00", size=18, line=dict(color="black", width=1)),
                hovertext=_hover(base), hoverinfo="text",
            ), row=1, col=col)  # fmt: skip
        fig.add_vline(x=budget, line=dict(color="#d62728", dash="dash"), row=1, col=col,
                      annotation_text=f"budget {budget:,}", annotation_position="top left")  # fmt: skip
        fig.add_hline(y=target, line=dict(color="#2ca02c", dash="dot"), row=1, col=col,
                      annotation_text=f"target {target:.2%}", annotation_position="bottom right")  # fmt: skip
        fig.update_xaxes(title_text="trainable parameters", range=[0, edge * 1.03], row=1, col=col)
    fig.update_yaxes(title_text="accuracy", tickformat=".2%", row=1, col=1)
    fig.update_layout(title="Accuracy against parameter count (every trial)", height=520,
                      legend=dict(orientation="h", y=-0.2))  # fmt: skip
    return fig


def _pareto_figure(frame, budget: int, target: float):
    import plotly.graph_objects as go

    fig = go.Figure()
    done = frame[(frame["outcome"] == "complete") & frame["val_acc"].notna()]
    front = pareto_front(frame)
    fig.add_trace(go.Scatter(x=done["params"], y=done["val_acc"], mode="markers", name="completed trials",
                             marker=dict(color="#c7c7c7", size=7), hovertext=_hover(done), hoverinfo="text"))  # fmt: skip
    fig.add_trace(go.Scatter(x=front["params"], y=front["val_acc"], mode="lines+markers", name="Pareto front",
                             line=dict(shape="hv", color="#9467bd"), marker=dict(size=10),
                             hovertext=_hover(front), hoverinfo="text"))  # fmt: skip
    if "retrain_test_mean" in frame.columns:  # harness retrain: the claims, on the test set
        from harness.study import counted, plus_minus
        from harness.study import pareto_front as front_of

        rt = frame[frame["retrain_test_mean"].notna()]
        on_front = rt.iloc[front_of(list(zip(rt["params"], rt["retrain_test_mean"])))]
        hover = [f"trial {n}: {m:.4%} {plus_minus(sd, int(k), '.4%')} over {counted(int(k), 'seed')}, {int(p):,} params"
                 for n, m, sd, k, p in zip(rt["number"], rt["retrain_test_mean"], rt["retrain_test_std"], rt["retrain_seeds"], rt["params"])]
        fig.add_trace(go.Scatter(x=rt["params"], y=rt["retrain_test_mean"], mode="markers",
                                 name="retrained: mean test accuracy ± std", marker=dict(color="#ff7f0e", size=9),
                                 error_y=dict(type="data", array=rt["retrain_test_std"], visible=True),
                                 hovertext=hover, hoverinfo="text"))
        fig.add_trace(go.Scatter(x=on_front["params"], y=on_front["retrain_test_mean"], mode="lines",
                                 name="retrained front (test)", line=dict(shape="hv", color="#ff7f0e")))
    fig.add_vline(x=budget, line=dict(color="#d62728", dash="dash"), annotation_text=f"budget {budget:,}")
    fig.add_hline(y=target, line=dict(color="#2ca02c", dash="dot"), annotation_text=f"target {target:.2%}",
                  annotation_position="bottom left")  # fmt: skip
    fig.update_layout(title="Pareto front: validation accuracy vs parameters (fewer params, higher accuracy); "
                      "retrained points: mean test accuracy", xaxis_title="trainable parameters",
                      yaxis_title="accuracy",
                      yaxis_tickformat=".2%", height=460)  # fmt: skip
    return fig


def _message_figure(title: str, message: str):
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    fig.update_layout(title=title, height=260, xaxis_visible=False, yaxis_visible=False)
    return fig


def _optuna_figures(study: optuna.Study) -> list:
    from optuna import visualization as vis

    multi = len(study.directions) > 1
    target = (lambda t: t.values[0]) if multi else None
    figs = []
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if complete:
        fig = vis.plot_optimization_history(study, target=target, target_name="validation accuracy")
        fig.update_layout(title="Optimisation history (validation accuracy)", height=420)
        figs.append(fig)
    else:
        figs.append(_message_figure("Optimisation history", "no completed trial yet"))
    if not multi and any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        fig = vis.plot_intermediate_values(study)
        fig.update_layout(title="Intermediate values: validation accuracy per epoch (pruned trials stop early)",
                          xaxis_title="epoch", yaxis_title="validation accuracy", height=420,
                          showlegend=True, legend_title_text="trial")  # fmt: skip
        figs.append(fig)
    try:  # PED-ANOVA: no scikit-learn needed (fANOVA would need it)
        with warnings.catch_warnings():  # "few trials in some regimes": true early in a study
            warnings.simplefilter("ignore", UserWarning)
            evaluator = optuna.importance.PedAnovaImportanceEvaluator()
            fig = vis.plot_param_importances(
                study, evaluator=evaluator, target=target, target_name="validation accuracy"
            )
        fig.update_layout(title="Parameter importances (PED-ANOVA, validation accuracy)", height=480)
        figs.append(fig)
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:
        figs.append(_message_figure("Parameter importances", f"not available: {html.escape(str(exc))[:200]}"))
    return figs


def _table_html(frame, top: int) -> str:
    from harness.study import plus_minus

    done = frame[frame["outcome"] == "complete"].sort_values(["val_acc", "params"], ascending=[False, True]).head(top)
    head = ["rank", "trial", "proposed by", "params", "val acc", "test acc", "target met", "epochs", "train s", "architecture"]
    k = int(done["repeats"].max()) if len(done) and done["repeats"].notna().any() else 1
    if k > 1:  # study.repeats: val is a mean, test one network's
        head[4:9] = [f"val acc (mean of {k} seeds)", "test acc (first seed)", "target met (first seed)", "epochs",
                     f"train s ({k} seeds)"]  # fmt: skip
    retrain = "retrain_test_mean" in frame.columns
    if retrain:
        head.insert(7, "retrained on all training images: test (mean ± std, seeds)")
    rows = []
    for rank, (_, r) in enumerate(done.iterrows(), 1):
        cells = [str(rank), f"{r['number']}" + (" ★ baseline" if r["baseline"] else ""), r["origin"], _fmt_int(r["params"]),
                 f"{r['val_acc']:.4%}", f"{r['test_acc']:.4%}" if not math.isnan(r["test_acc"]) else "n/a",
                 "yes" if r["target_met"] else "no", _fmt_int(r["epochs_run"]),
                 f"{r['train_seconds']:.1f}" if not math.isnan(r["train_seconds"]) else "",
                 f"<code>{html.escape(str(r['arch']))}</code>"]  # fmt: skip
        if retrain:
            m = r.get("retrain_test_mean")
            cells.insert(
                7,
                f"{m:.4%} {plus_minus(r['retrain_test_std'], int(r['retrain_seeds']), '.4%')} ({int(r['retrain_seeds'])})"
                if isinstance(m, float) and not math.isnan(m) else "",
            )  # fmt: skip
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return (
        f"<h2>Top {'trial' if len(done) == 1 else f'{len(done)} trials'} by validation accuracy</h2><table><thead><tr>"
        + "".join(f"<th>{h}</th>" for h in head)
        + "</tr></thead><tbody>"
        + ("".join(rows) or f"<tr><td colspan={len(head)}>no completed trial yet</td></tr>")
        + "</tbody></table>"
    )


def write_report(study: optuna.Study, out_html: Path, out_csv: Path | None = None, top: int = 15,
                 stale_after: float | None = None) -> Any:  # fmt: skip
    """Write the HTML report (and the CSV of all trials); returns the trials frame."""
    from harness.study import summarize

    frame = trials_frame(study)
    files: dict[Path, str] = {}
    if out_csv is not None:  # counts and integer parameters as integers (19290, not 19290.0); missing ones stay empty
        columns = [*_INT_COLUMNS, *_integer_param_columns(study)]
        ints = {c: frame[c].astype("Int64") for c in columns if c in frame.columns}
        files[out_csv] = frame.assign(**ints).to_csv(index=False)
    budget = int(study.user_attrs.get("budget", 0))
    target = float(study.user_attrs.get("target", 1.0))
    summary = summarize(study, stale_after)  # a RUNNING trial without heartbeat: shown as stale, with its age
    figures = []
    if frame.empty:
        figures.append(_message_figure("Accuracy against parameter count", "the study has no trials yet"))
    else:
        figures.append(_accuracy_figure(frame, budget, target))
        figures.append(_pareto_figure(frame, budget, target))
    figures.extend(_optuna_figures(study))
    parts = []
    for i, fig in enumerate(figures):
        fig.update_layout(template="plotly_white", margin=dict(l=60, r=30, t=60, b=40))
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0), config={"displaylogo": False}))
    summary_html = "<br>".join(html.escape(line) for line in summary.lines())
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>harness report: {html.escape(study.study_name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1400px; color: #222; }}
table {{ border-collapse: collapse; font-size: 13px; }} td, th {{ border: 1px solid #ddd; padding: 4px 8px; }}
th {{ background: #f3f3f3; text-align: left; }} code {{ font-size: 12px; }}
.summary {{ background: #f7f7fb; padding: 10px 14px; border-radius: 6px; font-family: monospace; }}
</style></head><body>
<h1>Study <code>{html.escape(study.study_name)}</code></h1>
<p class="summary">{summary_html}</p>
<p>Selection uses the validation split carved from the training set; test accuracy is recorded,
never selected on. Rejected candidates were counted over the budget and never trained.</p>
{parts[0]}
{_table_html(frame, top) if not frame.empty else ""}
{"".join(parts[1:])}
</body></html>
"""
    write_whole({out_html: page, **files})
    return frame


def written_path(path: Path) -> Path:
    """The file an output named ``path`` replaces: through a link, the file it points to (the
    link stays a link; a rename onto the link would have put a plain file in its place)."""
    return path.resolve() if path.is_symlink() else path


def temporary_path(path: Path) -> Path:
    """Where ``path`` is written before it is moved into place (checked as an output too)."""
    target = written_path(path)
    return target.with_name(target.name + ".tmp")


def written_in_place(path: Path) -> bool:
    """Whether the output ``path`` is written into as it is rather than replaced: a descriptor
    of this process's (:func:`inherited_descriptor`), or an existing path that is no regular
    file or folder (a device such as /dev/null, a named pipe). A rename would put a plain file
    where the device or pipe was."""
    if inherited_descriptor(path) is not None:
        return True
    return path.exists() and not path.is_file() and not path.is_dir()


def inherited_descriptor(path: Path) -> int | None:
    """The descriptor ``path`` names as this process's own (/dev/stdout, /dev/stderr,
    /dev/fd/N, /proc/self/fd/N), else None. Written through it, as the shell opened it:
    reopening the file it points to by name truncated a `>> run.log`, and a rename replaced it."""
    text = os.path.abspath(path)
    named = {"/dev/stdout": 1, "/dev/stderr": 2}
    if text in named:
        return named[text]
    for folder in ("/dev/fd/", "/proc/self/fd/", f"/proc/{os.getpid()}/fd/"):
        if text.startswith(folder) and text[len(folder):].isdigit():
            return int(text[len(folder):])
    return None


def check_writable(path: Path) -> None:
    """Refuse ``path`` now when its temporary file cannot be made there (a read-only folder or
    file system), before a command does work whose output it could not write. Nothing is
    left: the probe is removed. A device or pipe is not opened (a pipe's reader would take the
    probe's close for the end of the output): only its permission is checked.

    Raises:
        HarnessError: naming the file and the reason.
    """
    if written_in_place(path):
        if not os.access(path, os.W_OK):
            raise HarnessError(f"{path}: cannot write: Permission denied")
        return
    tmp = temporary_path(path)
    there = tmp.exists()  # a stopped run's leftover: written over later anyway, left as it is now
    try:
        tmp.open("a").close()
    except OSError as exc:
        raise HarnessError(f"{path}: cannot write: {exc.strerror or exc}") from None
    if not there:
        tmp.unlink()


def write_whole(files: dict[Path, str]) -> None:
    """Write each file to a temporary file beside it, then move them all into place: an output
    that cannot be written (or a Ctrl-C while writing) leaves every output as it was and no
    temporary file (only a stop between the final renames could move one and not the other).
    A device or pipe (:func:`written_in_place`) is written into directly, after the files.
    Text that UTF-8 cannot encode (a file name's undecodable bytes) is written escaped.

    Raises:
        HarnessError: a file cannot be written, naming it.
    """
    written: list[tuple[Path, Path]] = []
    in_place = [path for path in files if written_in_place(path)]
    current = None
    try:
        for path, text in files.items():
            if path not in in_place:
                current, tmp = path, temporary_path(path)
                written.append((tmp, path))
                tmp.write_text(text, encoding="utf-8", errors="backslashreplace")
        for path in in_place:
            current, fd = path, inherited_descriptor(path)
            if fd is not None:  # after what this process printed there before
                for printed in (sys.stdout, sys.stderr):
                    if printed is not None:
                        printed.flush()
            opened = os.fdopen(os.dup(fd), "w", encoding="utf-8", errors="backslashreplace") if fd is not None else \
                path.open("w", encoding="utf-8", errors="backslashreplace")  # fmt: skip
            with opened as stream:
                stream.write(files[path])
    except BaseException as exc:
        for tmp, _ in written:
            with contextlib.suppress(OSError):  # on a read-only file system unlink fails too
                tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise HarnessError(f"{current}: cannot write: {exc.strerror or exc}") from None
        raise
    for tmp, path in written:
        tmp.replace(written_path(path))
