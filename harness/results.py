"""The results table: the retrained winners of one or more studies, exported and verified.

``harness results STUDY.toml ... --out results/architectures.md`` reads the retrain records
(:mod:`harness.retrain`) from each study's storage and writes a markdown file with, for each
target of the 20k-parameter exercise, the retrained architecture the search ranked first on
validation among those of the target's size (never the highest test mean: that would be
selection on test), its parameters, search validation accuracy, mean ± std final-epoch test
accuracy over seeds, epochs, training time and device; then every
retrained architecture, the Pareto front of parameters against mean test accuracy, and the
mean learning curves (training loss, test accuracy per epoch: under- or over-fitting at the
last epoch?). Each winner's seed-0 retrained model is exported (torch.export
``.pt2`` and ONNX, :mod:`harness.export`) and verified on the test images; the table gives the result
and the files' sha256.
"""

from __future__ import annotations

import datetime
import functools
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import harness
from harness.study import counted, origin_of, param_count, plus_minus
from harness.study import pct_against as _pct_against

__all__ = ["SMALL_TARGET_PARAMS", "TOP_TARGET_ACC", "TOP_TARGET_PARAMS", "write_results"]

TOP_TARGET_ACC = 0.996  # target 1: mean test accuracy...
TOP_TARGET_PARAMS = 20_000  # ...with fewer than this many parameters (a budget of 20,000 admits 20,000 itself)
SMALL_TARGET_ACC = 0.994  # target 2: accuracy a network must reach...
SMALL_TARGET_PARAMS = 3_700  # ...with at most this many parameters


@dataclass
class _Entry:
    cfg: Any
    url: str
    study: Any
    record: dict[str, Any]

    @property
    def mean(self) -> float:
        return self.record["mean"]

    @property
    def params(self) -> int:
        return int(self.record["params"])

    @functools.cached_property
    def trial(self):
        """The search trial retrained (read from the storage once per entry)."""
        return self.study.get_trials(deepcopy=False)[self.record["trial"]]


def _mean_pct(value: float) -> str:
    """A mean test accuracy as written anywhere in the results: 2 decimals, or more where 2
    would put it on the other side of a target (99.5967 % reads 99.597 %, not a "99.60 %" that
    misses target 1)."""
    texts = [_pct_against(value, t) for t in (TOP_TARGET_ACC, SMALL_TARGET_ACC)]
    return max(texts, key=len)


def _pp(value: float) -> str:
    """Percentage points with 3 decimals (a 3-seed mean on 10,000 images moves in steps of
    0.0033 pp), or as many more as it takes not to show a non-zero value as 0.000."""
    digits = next((d for d in range(3, 7) if round(abs(value), d) > 0), 6) if value else 3
    return f"{value:.{digits}f}"


def _margin(e: _Entry, target: float) -> str:
    """How far ``e``'s mean is from ``target``, in percentage points and in standard errors of
    that mean over its seeds (sample stdev / sqrt(seeds): seed-to-seed spread on this test set
    only): "; +0.037 pp from 99.40%: 0.7 standard errors of the mean (standard error 0.054 pp,
    3 seeds)". The fewer, the likelier other seeds would turn the verdict, either way. Empty
    with fewer than 2 seeds (no spread to measure)."""
    accs = e.record.get("test_acc") or []
    if len(accs) < 2:
        return ""
    se = statistics.stdev(accs) / len(accs) ** 0.5 * 100
    diff = (e.mean - target) * 100
    text = f"; {'+' if diff >= 0 else ''}{_pp(diff)} pp from {target:.2%}"
    if se == 0:
        return f"{text} (no spread over {len(accs)} seeds)"
    return f"{text}: {abs(diff) / se:.1f} standard errors of the mean (standard error {_pp(se)} pp, {len(accs)} seeds)"


def _export(entry: _Entry, exports: Path, data_dir: str | None) -> str:
    """Export the entry's seed-0 retrained model; a short verification note for the table."""
    from harness.artifacts import open_artifact_store
    from harness.data import load_mnist
    from harness.export import DEFAULT_FORMATS, export_trial
    from harness.retrain import retrained_weights

    r = entry.record
    seed = min(int(s) for s in r["runs"])
    store = open_artifact_store(entry.cfg.artifact_root(entry.url), create=False)
    weights, info = retrained_weights(entry.study, r["trial"], seed, store)
    _, _, test_x, test_y = load_mnist(entry.cfg.data_root(data_dir))
    trial = entry.trial
    res = export_trial(entry.study, trial, weights, test_x, test_y, exports / entry.cfg.name,
                       list(DEFAULT_FORMATS), retrained=info)  # fmt: skip
    parts = []
    for fmt, v in res.card["verification"].items():
        sha = res.card["files"][fmt]["sha256"][:12]
        differ = v["predictions_differing_from_pytorch"]
        parts.append(f"{fmt} {'✓' if v['passed'] else '✗'} {v['test_acc_all_images']:.4%}, {differ} differ "
                     f"(sha256 {sha}…)")  # fmt: skip
    if not res.card["eager_check"]["passed"]:
        parts.append("✗ the weights do not reproduce the recorded accuracy")
    return f"`{res.card_path.name}` seed {seed}: " + "; ".join(parts)


def _front_lines(entries: list[_Entry]) -> list[str]:
    """The retrained architectures not beaten by a smaller one with a higher mean test accuracy."""
    from harness.study import pareto_front

    front = [entries[i] for i in pareto_front([(e.params, e.mean) for e in entries])]
    lines = ["", "## Pareto front: parameters against mean test accuracy", "",
             f"{len(front)} of the {len(entries)} retrained architectures: none of the others is both smaller "
             "and more accurate. The same points are plotted in the study's `harness report`.", "",
             "| params | test acc (mean ± std) | seeds | epochs | study | trial | proposed by | architecture |",
             "|---:|---:|---:|---:|---|---:|---|---|"]  # fmt: skip
    for e in front:
        r = e.record
        lines.append(f"| {e.params:,} | {_mean_pct(r['mean'])} {plus_minus(r['std'], r['seeds'])} | {r['seeds']} | {r['epochs']} | {e.cfg.name} "
                     f"| {r['trial']} | {origin_of(e.trial)} | `{_cell(r['arch'])}` |")  # fmt: skip
    return lines


def _trial_of(e: _Entry, entries: list[_Entry]) -> str:
    """The entry's trial number, "3", or "3 (study name)" where the entries come from several
    studies, whose trial numbers can coincide."""
    many = len({x.cfg.name for x in entries}) > 1
    return f"{e.record['trial']}" + (f" ({e.cfg.name})" if many else "")


def _curve_lines(entries: list[_Entry]) -> list[str]:
    """Mean over seeds of the per-epoch training loss and test accuracy, at a few epochs."""
    with_curves = [e for e in entries if all(run.get("test_curve") for run in e.record["runs"].values())]
    if not with_curves:
        return []
    epochs = max(e.record["epochs"] for e in with_curves)
    shown = sorted({1, *range(5, epochs, 5), epochs - 1, epochs} - {0})
    clean = [(_trial_of(e, entries), min(e.record["recipe"].get("clean_epochs", 0), e.record["epochs"]))
             for e in with_curves if (e.record.get("recipe") or {}).get("clean_epochs")]  # fmt: skip
    trained_on = "augmented images, as trained" + "".join(
        f"; trial {trial}: its last {'epoch' if k == 1 else f'{k} epochs'} on the images as they are (clean_epochs)"
        for trial, k in clean)  # fmt: skip
    lines = ["", "## Learning curves (mean over seeds)", "",
             f"Test accuracy and mean training loss ({trained_on}) after each shown epoch; "
             "\"best\" is the best epoch's mean test accuracy, for diagnosis only (the claim is the last epoch). "
             "Training loss still falling at the last epoch with test accuracy at its best there points to "
             "under-fitting (more epochs or width would help); a best epoch well before the last to over-fitting.", "",
             "| params | trial | " + " | ".join(f"ep {k}" for k in shown) + " | best (epoch) | train loss: "
             + " / ".join(f"ep {k}" for k in shown[-3:]) + " |",
             "|---:|---|" + "---:|" * len(shown) + "---:|---:|"]  # fmt: skip
    for e in sorted(with_curves, key=lambda e: e.params):
        runs = list(e.record["runs"].values())
        n = min(len(run["test_curve"]) for run in runs)
        acc = [statistics.mean(run["test_curve"][i] for run in runs) for i in range(n)]
        loss = [statistics.mean(run["train_loss"][i] for run in runs) for i in range(n)]
        best = max(range(n), key=lambda i: (acc[i], i))
        cells = [_mean_pct(acc[k - 1]) if k <= n else "" for k in shown]
        losses = " / ".join(f"{loss[k - 1]:.4f}" if k <= n else "–" for k in shown[-3:])
        lines.append(f"| {e.params:,} | {_trial_of(e, entries)} | " + " | ".join(cells)
                     + f" | {_mean_pct(acc[best])} ({best + 1}) | {losses} |")  # fmt: skip
    return lines


def _averaging_lines(entries: list[_Entry]) -> list[str]:
    """Weight averaging (train.ema_decay) against the trained weights of the same runs."""
    paired = [e for e in entries if all(run.get("raw_test_curve") for run in e.record["runs"].values())]
    if not paired:
        return []
    lines = ["", "## Weight averaging: averaged against trained weights, same runs", "",
             "Final-epoch test accuracy of the exponential moving average of the weights (what the table "
             "above reports) and of the trained weights it averaged, in the very same runs: the difference "
             "is paired, free of seed noise.", "",
             "| params | trial | ema_decay | averaged (mean ± std) | trained weights (mean ± std) "
             "| difference, mean | per seed (averaged − trained, pp) |",
             "|---:|---|---:|---:|---:|---:|---|"]  # fmt: skip
    for e in sorted(paired, key=lambda e: e.params):
        runs = [run for _, run in sorted(e.record["runs"].items(), key=lambda kv: int(kv[0]))]
        averaged = [run["test_acc"] for run in runs]
        trained = [run["raw_test_curve"][-1] for run in runs]
        spread = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in (averaged, trained)]
        diffs = [a - t for a, t in zip(averaged, trained)]
        lines.append(f"| {e.params:,} | {_trial_of(e, entries)} | {e.record['recipe'].get('ema_decay', 0.0)} "
                     f"| {_mean_pct(statistics.mean(averaged))} {plus_minus(spread[0], len(runs))} "
                     f"| {_mean_pct(statistics.mean(trained))} {plus_minus(spread[1], len(runs))} "
                     f"| {statistics.mean(diffs) * 100:+.3f} pp | {', '.join(f'{d * 100:+.2f}' for d in diffs)} |")  # fmt: skip
    return lines


def _row(target: str, e: _Entry | None, verified: str = "") -> str:
    if e is None:
        return f"| {target} | – | – | – | – | – | – | – | – | – | – | – | {verified} |"
    r = e.record
    secs = statistics.mean(run["train_seconds"] for run in r["runs"].values())
    devices = sorted({run["device"] for run in r["runs"].values()})
    origin = origin_of(e.trial)
    return (
        f"| {target} | {e.cfg.name} | {r['trial']} | {origin} | `{_cell(r['arch'])}` | {e.params:,} | "
        f"{_search_val_cell(e)} | {_mean_pct(r['mean'])} {plus_minus(r['std'], r['seeds'])} | {r['seeds']} | {r['epochs']} | {secs:.1f} | {'; '.join(devices)} "
        f"| {verified} |"
    )


def _search_val_cell(e: _Entry) -> str:
    """The search's validation accuracy, what the targets' picks rank by ("–" when none)."""
    v = _search_val(e)
    return f"{v:.2%}" if v == v else "–"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")  # a pipe would end the markdown table cell


_HEAD = (
    "| target | study | trial | proposed by | architecture | params | search val acc | test acc (mean ± std) "
    "| seeds | epochs | train s / run | device | exported model, verified on the test set |\n"
    "|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|---|---|"
)


def _baseline_over_budget(studies: list[tuple]) -> bool:
    """True if every study's baseline trial is over that study's budget (it is never trained there)."""
    fits = [param_count(t.user_attrs, 0) <= int(study.user_attrs.get("budget", 0))
            for _, _, study in studies for t in study.get_trials(deepcopy=False) if t.user_attrs.get("baseline")]  # fmt: skip
    return bool(fits) and not any(fits)


def _split_text(studies: list[tuple]) -> str:
    """Which training images each study selected on, e.g. "last 5,000 training images"."""
    sizes: dict[int, list[str]] = {}
    for cfg, _, _ in studies:
        sizes.setdefault(cfg.data.val_size, []).append(cfg.name)
    if len(sizes) == 1:
        return f"last {next(iter(sizes)):,} training images"
    return "; ".join(f"last {n:,} training images: {', '.join(names)}" for n, names in sizes.items())


def _images_text(entries: list[_Entry], key: str, kind: str) -> str:
    """The images the retrains recorded under ``key``: "60,000 training images", or per study
    where they differ ("training images (400: a; 60,000: b)"), or just "training images"."""
    studies: dict[int, set[str]] = {}
    for e in entries:
        if isinstance(e.record.get(key), int):
            studies.setdefault(e.record[key], set()).add(e.cfg.name)
    if len(studies) == 1:
        return f"{next(iter(studies)):,} {kind}"
    per_study = "; ".join(f"{n:,}: {', '.join(sorted(names))}" for n, names in sorted(studies.items()))
    return f"{kind} ({per_study})" if studies else kind


def _search_val(e: _Entry) -> float:
    """The validation accuracy the search recorded for the entry's trial (its seeds' mean with
    ``study.repeats``); NaN when it has none."""
    from harness.study import val_acc

    return val_acc(e.trial)


def _validation_rank(e: _Entry) -> tuple:
    """Sort key, the search's pick first: highest validation accuracy, then fewer parameters
    (then study and trial, for a stable order). No test number takes part."""
    v = _search_val(e)
    return (-v if v == v else math.inf, e.params, e.cfg.name, e.record["trial"])


def _protocol(e: _Entry) -> str:
    """How the search scored the entry's trial on validation: its epochs and training images, and
    the validation images ("20 epochs on 50,000 images, scored on 10,000")."""
    ua = dict(e.trial.user_attrs)
    # trials recorded before train_images and held_out_train_images were: the study's split
    data = e.study.user_attrs.get("data") or {}
    if ua.get("held_out_train_images") is None:
        ua["held_out_train_images"] = data.get("val_size")
    if ua.get("train_images") is None and isinstance(data.get("val_size"), int):
        ua["train_images"] = data.get("train_limit") or 60_000 - data["val_size"]

    def n(key: str) -> str:
        return f"{ua[key]:,}" if isinstance(ua.get(key), int) else "?"

    epochs = counted(ua["epochs_run"], "epoch") if isinstance(ua.get("epochs_run"), int) else "? epochs"
    seeds = len(ua.get("repeat_seeds") or [])  # study.repeats: the score is a mean over that many runs
    mean = f", mean of {seeds} seeds" if seeds > 1 else ""
    return f"{epochs} on {n('train_images')} images, scored on {n('held_out_train_images')}{mean}"


def _protocol_note(candidates: list[_Entry]) -> str:
    """Where a target's candidates were scored on validation under different search protocols
    (studies of other epochs or splits): said, since a longer protocol's scores rank higher for
    the protocol, not only for the architecture."""
    protocols = sorted({_protocol(e) for e in candidates})
    if len(protocols) < 2:
        return ""
    return (f"; ranked across {len(protocols)} search protocols ({'; '.join(protocols)}): "
            "validation scores of different protocols compare the protocols too")


def _status(entries: list[_Entry], pick: _Entry | None, acc: float, size: str) -> str:
    """A target's verdict: its validation pick's mean against ``acc``, or why there is none
    (nothing retrained; nothing retrained of the target's ``size``, e.g. "<= 3,700")."""
    if not entries:
        return "not retrained yet"
    if pick is None:
        return f"NOT reached: no retrained architecture has {size} parameters (smallest: {min(e.params for e in entries):,})"
    return "reached" if pick.mean >= acc else "NOT reached"


def _test_max_note(pick: _Entry, candidates: list[_Entry]) -> str:
    """Where another candidate has a higher test mean than the validation's pick: that one named,
    as what it is (a maximum over noisy means, chosen on test), so a reader sees both."""
    top = max(candidates, key=lambda e: (e.mean, -e.params))
    if top is pick or top.mean <= pick.mean:
        return ""
    return (f"; the highest test mean of these {len(candidates)} retrained, {_mean_pct(top.mean)} ({top.params:,} parameters, "
            f"trial {_trial_of(top, candidates)}), is chosen on test and is not the claim")


def write_results(studies: list[tuple], out: Path, exports: Path, *, note: str = "", data_dir: str | None = None,
                  command: str = "") -> int:  # fmt: skip
    """Write the markdown results for ``studies`` (a list of (config, storage URL, study)).
    Returns how many retrained architectures they hold (0: the file says nothing is yet)."""
    from harness.retrain import stored_retrains

    entries = [
        _Entry(cfg, url, study, rec)
        for cfg, url, study in studies
        for rec in stored_retrains(study).values()
        if rec.get("seeds") and rec["params"] <= int(study.user_attrs.get("budget", 0))
    ]
    from harness.data import check_mnist_files

    for root in {str(e.cfg.data_root(data_dir)) for e in entries}:  # damaged data: refused before any export
        check_mnist_files(root)
    # The largest budget given, said on target 1's line when it is under 20,000 (a small-budget study only adds candidates).
    budget = max((int(s.user_attrs.get("budget", 0)) for _, _, s in studies), default=0)
    # Each target's claim is the architecture the search ranked first on validation, never the
    # highest test mean: a maximum over several noisy means is biased upwards (test selection).
    top = [e for e in entries if e.params < TOP_TARGET_PARAMS]
    pick1 = min(top, key=_validation_rank, default=None)
    small = [e for e in entries if e.params <= SMALL_TARGET_PARAMS]
    pick2 = min(small, key=_validation_rank, default=None)
    baselines = [e for e in entries if e.record.get("baseline")]

    lines = [
        "# Architectures found by the harness",
        "",
        f"Generated {datetime.date.today().isoformat()} by `{command or 'harness results'}` "
        f"(harness {harness.__version__}, torch {torch.__version__}) from the study databases "
        f"(not committed). Protocol: architectures selected on the validation split ({_split_text(studies)}); "
        f"the selected ones retrained on all {_images_text(entries, 'train_images', 'training images')} with several "
        f"seeds by `harness retrain`; accuracy = final-epoch test accuracy on the "
        f"{_images_text(entries, 'test_images', 'test images')}, mean ± std over seeds.",
        "",
    ]
    if note:
        lines += [f"**{note}**", ""]
    status1 = _status(entries, pick1, TOP_TARGET_ACC, f"fewer than {TOP_TARGET_PARAMS:,}")
    status2 = _status(entries, pick2, SMALL_TARGET_ACC, f"<= {SMALL_TARGET_PARAMS:,}")
    lines += [
        "## Targets",
        "",
        "Each target's claim is the retrained architecture the search ranked first on the validation "
        "split (ties: fewer parameters) among those that fit the target's size; the test set only scores it.",
        "",
        f"1. Under {TOP_TARGET_PARAMS:,} parameters, mean test accuracy >= {TOP_TARGET_ACC:.1%}"
        + (f" (these studies' budget is smaller: at most {budget:,} parameters)" if budget < TOP_TARGET_PARAMS else "")
        + f": **{status1}**"
        + (f" (validation's pick: {_mean_pct(pick1.mean)} with {pick1.params:,} parameters"
           f"{_margin(pick1, TOP_TARGET_ACC)}){_test_max_note(pick1, top)}{_protocol_note(top)}" if pick1 else ""),
        f"2. At <= {SMALL_TARGET_PARAMS:,} parameters, mean test accuracy >= {SMALL_TARGET_ACC:.2%}: **{status2}**"
        + (f" (validation's pick: {_mean_pct(pick2.mean)} with {pick2.params:,} parameters"
           f"{_margin(pick2, SMALL_TARGET_ACC)}){_test_max_note(pick2, small)}{_protocol_note(small)}" if pick2 else ""),
        "3. The seed baseline under the same recipe: "
        + ("; ".join(f"{_mean_pct(e.mean)} {plus_minus(e.record['std'], e.record['seeds'])} ({e.cfg.name})" for e in baselines)
           or ("not retrained (over the budget of these studies, so rejected untrained)"
               if _baseline_over_budget(studies) else "not retrained yet")),
        "",
    ]  # fmt: skip
    if not entries:  # empty tables and a front "of 0" would say less than this
        lines.append("Nothing is retrained yet: `harness retrain STUDY.toml` retrains the search's best "
                     "architectures; the tables, the Pareto front and the learning curves come from those runs.")
        _write(out, lines)
        return 0
    lines.append(_HEAD)
    exported: dict[tuple[str, int], str] = {}

    def verified(e: _Entry | None) -> str:
        if e is None:
            return ""
        key = (e.cfg.name, e.record["trial"])
        if key not in exported:  # a winner of two targets is exported once
            exported[key] = _export(e, exports, data_dir)
        return exported[key]

    lines.append(_row(f"1: validation's pick under {TOP_TARGET_PARAMS:,}", pick1, verified(pick1)))
    lines.append(_row(f"2: validation's pick at <= {SMALL_TARGET_PARAMS:,}", pick2, verified(pick2)))
    for e in baselines:
        lines.append(_row("3: seed baseline", e, verified(e)))
    lines += ["", "## Every retrained architecture", "", _HEAD]
    for e in sorted(entries, key=lambda e: (-e.mean, e.params)):
        lines.append(_row("", e))
    lines += _front_lines(entries) + _curve_lines(entries) + _averaging_lines(entries)
    lines += ["", "Per-seed test accuracies:", ""]
    for e in sorted(entries, key=lambda e: (-e.mean, e.params)):
        accs = ", ".join(f"{a:.4f}" for a in e.record["test_acc"])
        teacher = e.record.get("teacher")  # distilled: the result depends on that network too
        taught = (f"; distilled from {Path(teacher['path']).name} ({teacher.get('study')} trial {teacher.get('trial')}, "
                  f"{teacher.get('params') or 0:,} params, sha256 {teacher['sha256'][:12]}…)") if teacher else ""  # fmt: skip
        lines.append(f"- {e.cfg.name} trial {e.record['trial']} ({e.params:,} params): {accs}{taught}")
    _write(out, lines)
    return len(entries)


def _write(out: Path, lines: list[str]) -> None:
    from harness.report import write_whole

    write_whole({out: "\n".join(lines) + "\n"})
