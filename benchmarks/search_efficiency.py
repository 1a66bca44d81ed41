"""Search efficiency: search strategies, the same wall-clock budget, the same CPU, one run.

Each strategy runs the harness's own pipeline (``open_study``, its sampler stream, the
``Objective`` with the budget gate and real training) on the study file given (by default
``studies/search-efficiency-3700.toml``: budget 3,700, 20,000 training images, the study's
validation split), for ``--minutes`` of wall-clock time each, one after the other:

a. ``textbook``: Optuna's textbook setup, as the harness did before: the ``modern`` space,
   TPE (independent, univariate), median pruner at full fidelity, the study seed for every process;
b. ``random``: random search over the default (``compact``) space with the new default pruner;
c. ``default``: the new default: ``compact`` space, TPE multivariate + group with the budget
   constraint, the new default pruner (the study file's ``[sampler]`` and ``[pruner]``);
d. ``repeats2``: (c) with two seeds per candidate (``study.repeats = 2``): each candidate costs
   twice as much, and its value and what the pruner compares are the two runs' mean.

``--only`` picks the strategies (by default a, b, c); the "reached/beat (a)'s best" columns
need (a) in the same run.

Reported per strategy: trials proposed, trials trained (reached training), distinct trained
architectures, the best validation accuracy of a completed trial at <= budget parameters, and
the time at which each strategy first beat the best accuracy that (a) reached.

A single run's validation accuracy carries seed noise (about +-0.15 pp on 5,000 images), and
the best of many runs of near-identical candidates is biased upwards by it. So, after the
timed searches, each strategy's top ``--rescore-top`` candidates (by their own validation
accuracy) are trained again with ``--rescore-seeds`` fresh seeds, same data and recipe, and
the best fresh-seed mean is reported beside the search's own number (outside the time budget).

Resumable: a strategy whose study in ``OUT.dbs/`` finished its time is not run again; one
that was cut short is started afresh.

Usage::

    python benchmarks/search_efficiency.py --data-dir .data --minutes 20 --out results/search_efficiency-cpu
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys
import time
from pathlib import Path

import optuna
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.config import PrunerConfig, SamplerConfig, load_study_config  # noqa: E402
from harness.data import load_splits  # noqa: E402
from harness.errors import StorageError  # noqa: E402
from harness.objective import TRAINING_FAILURES, Objective  # noqa: E402
from harness.study import claim_sampler_stream, classify, feasible_trials, open_study, param_count, rank_key  # noqa: E402
from harness.train import cpu_model, device_name, machine_label  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))

DONE_ATTR = "benchmark_seconds"


def strategies(cfg):
    """name -> (description, config) for every strategy, all from the one study file."""
    textbook = dataclasses.replace(
        cfg,
        search_space="modern",
        sampler=SamplerConfig(name="tpe", n_startup_trials=cfg.sampler.n_startup_trials, multivariate=False),
        pruner=PrunerConfig(name="median", n_startup_trials=5, n_warmup_steps=3),
    )
    random = dataclasses.replace(cfg, sampler=dataclasses.replace(cfg.sampler, name="random"))
    return {
        "textbook": ("(a) TPE univariate + median pruner, `modern` space (the earlier default)", textbook),
        "random": (f"(b) random sampler + {cfg.pruner.name} pruner, `{cfg.search_space}` space", random),
        "default": (f"(c) new default: TPE multivariate/group + {cfg.pruner.name} pruner, `{cfg.search_space}` space",
                    cfg),  # fmt: skip
        "repeats2": ("(d) (c) with 2 seeds per candidate (`study.repeats = 2`; value: their mean)",
                     dataclasses.replace(cfg, repeats=2)),  # fmt: skip
    }


def run_strategy(name: str, cfg, data, db: Path, seconds: float) -> optuna.Study:
    url = f"sqlite:///{db}"
    if db.exists():
        try:
            study = open_study(dataclasses.replace(cfg, name=name), url)
        except StorageError:  # made from another version of the study file: not this run's
            study = None
        if study is not None and DONE_ATTR in study.user_attrs:
            print(f"{name}: already done, {len(study.trials)} trials", flush=True)
            return study
        db.unlink()  # cut short: start afresh, so every strategy gets one uninterrupted budget
    cfg = dataclasses.replace(cfg, name=name)
    study = open_study(cfg, url)
    stream = claim_sampler_stream(study, cfg, url)
    objective = Objective(cfg, lambda: data, device_label=device_name(data.device), stream=stream)
    start = time.time()
    study.set_user_attr("benchmark_start", start)

    def line(study, trial):
        ua = trial.user_attrs
        print(f"{name} {time.time() - start:7.1f}s trial {trial.number}: {classify(trial)} "
              f"{param_count(ua, '')} val {_fmt_val(ua.get('val_acc'))} epochs {ua.get('epochs_run', '')}", flush=True)  # fmt: skip

    study.optimize(objective, timeout=seconds, callbacks=[line], catch=TRAINING_FAILURES)
    study.set_user_attr(DONE_ATTR, time.time() - start)
    return study


def _fmt_val(v: float | None) -> str:
    return "" if v is None else f"{v:.4f}"  # a mean of seeds is not a count out of the images: round it


def measure(study: optuna.Study, budget: int) -> dict:
    start = float(study.user_attrs["benchmark_start"])
    trials = study.get_trials(deepcopy=False)
    trained = [t for t in trials if classify(t) in ("complete", "pruned", "failed")]
    complete = sorted(
        (t for t in trials if classify(t) == "complete" and param_count(t.user_attrs, budget + 1) <= budget),
        key=lambda t: t.datetime_complete,
    )
    curve = []  # (seconds since start, best validation accuracy so far)
    best = float("-inf")
    for t in complete:
        v = float(t.user_attrs["val_acc"])
        if v > best:
            best = v
            curve.append(((t.datetime_complete.timestamp() - start), v, t.number))
    # The best as the study ranks it (what `harness export --best` takes; ties: fewer parameters);
    # the curve (earliest to reach each best value) is for timing only.
    top = min(complete, key=rank_key) if complete else None
    return {
        "proposed": sum(1 for t in trials if not t.user_attrs.get("baseline")),
        "rejected": sum(1 for t in trials if classify(t) in ("over_budget", "invalid")),
        "duplicates_skipped": sum(1 for t in trials if classify(t) == "duplicate"),
        "trained": len(trained),
        "completed": len(complete),
        "pruned": sum(1 for t in trials if classify(t) == "pruned"),
        "distinct_trained": len({t.user_attrs.get("spec") for t in trained}),
        "distinct_trained_with_recipe": len({json.dumps(t.params, sort_keys=True) for t in trained}),
        "best_val": best if complete else None,
        "best_trial": top.number if top else None,
        "best_params": param_count(top.user_attrs) if top else None,
        "best_arch": top.user_attrs["arch"] if top else None,
        "curve": curve,
        "seeds_per_candidate": int(study.user_attrs.get("repeats", 1)),
        "seconds": float(study.user_attrs.get(DONE_ATTR, 0.0)),
    }


def rescore(study: optuna.Study, cfg, data, top: int, seeds: int) -> list[dict]:
    """Train the study's ``top`` completed candidates again with ``seeds`` fresh seeds each
    (stored in the study, so an interrupted run resumes); their fresh-seed validation accuracy."""
    from harness.config import TrainConfig
    from harness.model import build
    from harness.spec import ArchSpec
    from harness.train import fit

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    out = []
    for t in sorted(feasible_trials(study), key=rank_key)[:top]:
        key = f"rescore:trial{t.number}"
        vals = list(study.user_attrs.get(key, []))
        recipe = cfg.train
        if t.user_attrs.get("recipe"):
            recipe = TrainConfig(**{k: v for k, v in t.user_attrs["recipe"].items() if k in fields})
        spec = ArchSpec.from_json(t.user_attrs["spec"])
        while len(vals) < seeds:
            seed = 1000 + len(vals)  # disjoint from the search's seeds (study seed + trial number)
            vals.append(fit(build(spec, seed=seed), data, recipe, seed=seed).val_acc)
            study.set_user_attr(key, vals)
            print(f"{study.study_name}: trial {t.number} re-scored: {vals}", flush=True)
        out.append({"trial": t.number, "params": param_count(t.user_attrs), "search_val": t.value,
                    "vals": vals, "mean": sum(vals) / len(vals), "arch": t.user_attrs["arch"]})  # fmt: skip
    return out


def first_beat(curve: list, threshold: float | None, strict: bool = True) -> float | None:
    if threshold is None:
        return None
    for seconds, v, _ in curve:
        if v > threshold or (not strict and v >= threshold):
            return seconds
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--study", default="studies/search-efficiency-3700.toml")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--minutes", type=float, default=25.0, help="wall-clock budget per strategy")
    ap.add_argument("--only", default="textbook,random,default",
                    help="strategies to run, in order, from textbook, random, default, repeats2")
    ap.add_argument("--rescore-top", type=int, default=3, help="candidates per strategy trained again")
    ap.add_argument("--rescore-seeds", type=int, default=2, help="fresh seeds per re-trained candidate (>= 1)")
    ap.add_argument("--seed", type=int, default=None,
                    help="study seed for every strategy (default: the study file's); a repetition with another seed is "
                         "an independent search")  # fmt: skip
    ap.add_argument("--out", default="results/search_efficiency-cpu")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    cfg = load_study_config(args.study)
    if cfg.train.teacher:  # its trainings would need the teacher, and its held-out check
        ap.error(f"{args.study}: distillation studies (train.teacher) are not supported by this benchmark")
    if args.seed is not None:
        cfg = dataclasses.replace(cfg, seed=args.seed)
    # Arguments checked before anything is loaded or written (a bad one leaves no .dbs folder).
    strats = strategies(cfg)
    if args.rescore_seeds < 1:
        ap.error(f"--rescore-seeds: must be at least 1, got {args.rescore_seeds}")
    names = list(dict.fromkeys(n.strip() for n in args.only.split(",")))
    args.only = ",".join(names)  # as the results file's command line shows it
    unknown = [n for n in names if n not in strats]
    if unknown:
        ap.error(f"--only: unknown strategy {', '.join(unknown)} (known: {', '.join(strats)})")
    device = torch.device("cpu")
    data = load_splits(args.data_dir, device, val_size=cfg.data.val_size, train_limit=cfg.data.train_limit,
                       test_limit=cfg.data.test_limit)  # fmt: skip
    out = Path(args.out)
    dbs = out.with_name(out.name + ".dbs")
    dbs.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in names:
        desc, scfg = strats[name]
        study = run_strategy(name, scfg, data, dbs / f"{name}.db", args.minutes * 60)
        results[name] = {"description": desc, **measure(study, cfg.budget)}
    for name in names:  # after every timed search: the re-scoring is outside the time budget
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{dbs / (name + '.db')}")
        results[name]["rescored"] = rescore(study, strats[name][1], data, args.rescore_top, args.rescore_seeds)
        best = max(results[name]["rescored"], key=lambda r: r["mean"], default=None)
        results[name]["rescored_best"] = best
    if "textbook" in results:  # the race against (a) only when it ran: null would read as "never"
        ref = results["textbook"]["best_val"]
        for name, r in results.items():
            r["first_beat_textbook_s"] = first_beat(r["curve"], ref, strict=name != "textbook")
    report = {
        "study": args.study, "minutes_per_strategy": args.minutes, "budget": cfg.budget, "epochs": cfg.train.epochs,
        "train_images": len(data.train_x), "val_images": len(data.val_x), "device": device_name(device),
        "cpu": cpu_model(), "torch": torch.__version__, "optuna": optuna.__version__,
        "date": dt.date.today().isoformat(), "seed": cfg.seed, "strategies": results,
        "pruner": dataclasses.asdict(cfg.pruner), "sampler": dataclasses.asdict(cfg.sampler),
    }  # fmt: skip
    out.with_suffix(".json").write_text(json.dumps(report, indent=1, default=str))
    out.with_suffix(".md").write_text(_markdown(report, args))
    print(out.with_suffix(".md").read_text())


def _fmt_s(s: float | None) -> str:
    return "never" if s is None else f"{s / 60:.1f} min"


def _markdown(rep: dict, args: argparse.Namespace) -> str:
    lines = [
        "# Search efficiency: the same wall-clock budget for each search strategy",
        "",
        f"Study file `{rep['study']}`: budget {rep['budget']:,} parameters, {rep['epochs']}-epoch trials on "
        f"{rep['train_images']:,} training images, selection on the {rep['val_images']:,}-image validation "
        f"split. {rep['minutes_per_strategy']:g} minutes of wall-clock time per strategy, one after the other "
        f"in one process, one study seed each (a single search: differences of a few hundredths of a percent "
        f"are within seed noise).",
        "",
        f"Machine: {machine_label(rep['device'], rep['cpu'])}; torch {rep['torch']}, optuna {rep['optuna']}; {rep['date']}.",
        f"Command: `python benchmarks/search_efficiency.py --study {args.study} --data-dir DATA "
        f"--minutes {args.minutes:g} --only {args.only} --rescore-top {args.rescore_top} "
        f"--rescore-seeds {args.rescore_seeds} "
        + (f"--seed {args.seed} " if args.seed is not None else "") + f"--out {args.out}` (study seed {rep['seed']})",
        "",
    ]
    # The race against (a) only when (a) ran in the same run: "never" would claim a race not run.
    versus_a = "textbook" in rep["strategies"]
    race = " reached (a)'s best at | beat (a)'s best at |" if versus_a else ""
    lines += [
        "| strategy | seeds per candidate | proposed | rejected (budget) | duplicates skipped | trained | pruned "
        "| completed (<= budget) | distinct trained archs | best val acc (completed, <= budget) | params of best |"
        + race,
        "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if versus_a else ""),
    ]
    for name, r in rep["strategies"].items():
        best = f"{r['best_val']:.4f}" if r["best_val"] is not None else "none"
        row = (f"| {r['description']} | {r.get('seeds_per_candidate', 1)} | {r['proposed']} | {r['rejected']} "
               f"| {r['duplicates_skipped']} | {r['trained']} | {r['pruned']} | {r['completed']} "
               f"| {r['distinct_trained']} | {best} "
               f"| {r['best_params'] or ''} |")  # fmt: skip
        if versus_a:
            reach = first_beat(r["curve"], rep["strategies"]["textbook"]["best_val"], strict=False)
            row += f" {_fmt_s(reach)} | {_fmt_s(r['first_beat_textbook_s']) if name != 'textbook' else '-'} |"
        lines.append(row)
    if any(r.get("seeds_per_candidate", 1) > 1 for r in rep["strategies"].values()):
        lines += ["", "With several seeds per candidate, \"trained\" counts candidates (each trained that many "
                  "times) and a candidate's val acc is its seeds' mean. A maximum of means is biased upwards "
                  "less than a maximum of single runs, so the search's own best val acc (and any race on it) "
                  "does not compare across seeds per candidate; the fresh-seed columns below do."]
    lines += [
        "",
        f"Re-scored (outside the time budget): each strategy's top {args.rescore_top} candidates by their own "
        f"validation accuracy trained again with {args.rescore_seeds} fresh seeds each. "
        "The search's own best is the maximum of many noisy scores. Free of that selection bias: the first-ranked "
        "candidate's fresh-seed mean (what `harness export --best` would take) and the mean over the top "
        f"{args.rescore_top}; the best re-scored candidate is again a maximum, over {args.rescore_top} fresh means.",
        "",
        "| strategy | search's best val acc | its first-ranked candidate, fresh seeds (mean) "
        "| best re-scored candidate: trial, params | fresh-seed val acc (mean) "
        f"| per seed | mean over its top {args.rescore_top} (fresh seeds) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rep["strategies"].items():
        b = r.get("rescored_best")
        if b is None:
            lines.append(f"| {name} | - | - | - | - | - | - |")
            continue
        best = f"{r['best_val']:.4f}" if r["best_val"] is not None else "none"
        top = [c["mean"] for c in r["rescored"]]
        fewer = f" ({len(top)} completed)" if len(top) < args.rescore_top else ""  # not a top-N mean then
        # The search's own pick (what `harness export --best` takes), not a second pick among the re-scored.
        first = r["rescored"][0]
        lines.append(f"| {name} | {best} | {first['mean']:.4f} (trial {first['trial']}) "
                     f"| {b['trial']}, {b['params']:,} | {b['mean']:.4f} | "
                     f"{', '.join(f'{v:.4f}' for v in b['vals'])} | {sum(top) / len(top):.4f}{fewer} |")  # fmt: skip
    lines += ["", "Every re-scored candidate (search rank order):", ""]
    for name, r in rep["strategies"].items():
        lines += [f"- {name}: " + "; ".join(f"trial {c['trial']} ({c['params']:,} params): search {c['search_val']:.4f}, "
                                             f"fresh {c['mean']:.4f}" for c in r.get("rescored", []))]  # fmt: skip
    lines += ["", "Best architectures:", ""]
    for name, r in rep["strategies"].items():
        lines.append(f"- {name}: trial {r['best_trial']}, `{r['best_arch']}`")
    lines += ["", "Best-so-far curves (minutes: validation accuracy):", ""]
    for name, r in rep["strategies"].items():
        pts = ", ".join(f"{s / 60:.1f}: {v:.4f}" for s, v, _ in r["curve"])
        lines.append(f"- {name}: {pts or 'no completed trial'}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
