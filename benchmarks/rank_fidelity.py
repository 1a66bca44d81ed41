"""How well does validation accuracy after epoch e predict the final validation accuracy?

Draws N architectures (and, in a ``search_recipe`` study, their training recipes) at random
from a study's search space, within its budget, trains each for the study's full schedule
(``train.epochs``, its learning-rate schedule) and records the validation accuracy after every
epoch. Then, for e = 1, 2, 4, 8 (and every epoch), reports:

* Spearman's rank correlation between accuracy at epoch e and at the final epoch, with a
  bootstrap 90 % interval over the architectures;
* what successive halving with reduction factor r would keep at e: the share of the final
  top 1/r among the kept top 1/r, and whether the final best survives the cut.

Reduced data is allowed (``--train-limit``); the validation split is the study's. With
``--amp bf16`` the same architectures are trained in bf16 as a second column (does bf16 rank
candidates as float32 does?). Resumable: each finished run is appended to OUT.jsonl and
skipped when the script is run again.

Usage::

    python benchmarks/rank_fidelity.py studies/mnist-20k.toml --data-dir .data --archs 24 \\
        --train-limit 10000 --out results/rank_fidelity-cpu
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.config import load_study_config  # noqa: E402
from harness.data import load_splits  # noqa: E402
from harness.model import build  # noqa: E402
from harness.spec import InvalidSpecError, count_params  # noqa: E402
from harness.train import cpu_model, device_name, machine_label, fit  # noqa: E402
from search_spaces import get_search_space  # noqa: E402
from search_spaces.recipe import suggest_recipe  # noqa: E402

EPOCHS_OF_INTEREST = (1, 2, 4, 8)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho: Pearson correlation of the (average-tie) ranks."""
    import pandas as pd

    ra, rb = pd.Series(a).rank().to_numpy(), pd.Series(b).rank().to_numpy()
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def bootstrap_interval(a: np.ndarray, b: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    rhos = []
    for _ in range(n):
        idx = rng.integers(0, len(a), len(a))
        r = spearman(a[idx], b[idx])
        if not np.isnan(r):
            rhos.append(r)
    return float(np.percentile(rhos, 5)), float(np.percentile(rhos, 95))


def halving_keep(early: np.ndarray, final: np.ndarray, r: int) -> tuple[float, bool]:
    """Keep the top 1/r by ``early``: (share of the final top 1/r among them, final best kept?)."""
    k = max(1, int(np.ceil(len(early) / r)))
    kept = set(np.argsort(-early, kind="stable")[:k])
    best_final = set(np.argsort(-final, kind="stable")[:k])
    return len(kept & best_final) / k, int(np.argmax(final)) in kept


def sample_candidates(cfg, n: int, seed: int) -> list[dict]:
    """n random (params, spec, recipe) within the study's budget, reproducible from ``seed``."""
    space = get_search_space(cfg.search_space, cfg.path.parent)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    while len(out) < n:
        trial = study.ask()
        spec = space.suggest(trial)
        recipe = suggest_recipe(trial, cfg.train, cfg.recipe_fields) if cfg.search_recipe else cfg.train
        study.tell(trial, 0.0)
        try:
            params = count_params(spec)
        except InvalidSpecError:
            continue
        if params <= cfg.budget:
            out.append({"index": len(out), "params": params, "arch": spec.describe(), "spec": spec, "recipe": recipe,
                        "trial_params": trial.params})  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study_file")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--archs", type=int, default=24)
    ap.add_argument("--train-limit", type=int, default=10_000, help="training images (the study's validation split)")
    ap.add_argument("--seed", type=int, default=0, help="sampling seed; architecture i trains with seed + i")
    ap.add_argument("--amp", default="off", help="comma list of precisions to train each architecture in (off,bf16)")
    ap.add_argument("--reduction-factors", default="2,3,4")
    ap.add_argument("--out", default="results/rank_fidelity-cpu")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    cfg = load_study_config(args.study_file)
    if cfg.train.teacher:  # its trainings would need the teacher, and its held-out check
        ap.error(f"{args.study_file}: distillation studies (train.teacher) are not supported by this benchmark")
    epochs = cfg.train.epochs
    device = torch.device("cpu")
    data = load_splits(args.data_dir, device, val_size=cfg.data.val_size, train_limit=args.train_limit)
    cands = sample_candidates(cfg, args.archs, args.seed)
    out = Path(args.out)
    log = out.with_suffix(".jsonl")
    done = {}
    if log.exists():
        for line in log.read_text().splitlines():
            r = json.loads(line)
            done[(r["index"], r["amp"])] = r
    precisions = args.amp.split(",")
    start = time.perf_counter()
    for amp in precisions:
        for c in cands:
            if (c["index"], amp) in done:
                continue
            recipe = dataclasses.replace(c["recipe"], epochs=epochs, amp=amp)
            t0 = time.perf_counter()
            result = fit(build(c["spec"], seed=args.seed + c["index"]), data, recipe, seed=args.seed + c["index"])
            r = {"index": c["index"], "amp": amp, "params": c["params"], "arch": c["arch"],
                 "trial_params": c["trial_params"], "history": result.history,
                 "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
            done[(c["index"], amp)] = r
            with log.open("a") as f:
                f.write(json.dumps(r) + "\n")
            print(f"[{amp}] arch {c['index']:2d}: {c['params']:6,} params, {r['seconds']:6.1f} s, "
                  f"val {' '.join(f'{v:.4f}' for v in result.history)}", flush=True)  # fmt: skip

    rfs = [int(x) for x in args.reduction_factors.split(",")]
    report: dict = {"study": args.study_file, "archs": len(cands), "epochs": epochs, "train_images": len(data.train_x),
                    "val_images": len(data.val_x), "device": device_name(device), "cpu": cpu_model(),
                    "torch": torch.__version__, "date": dt.date.today().isoformat(), "precisions": {}}  # fmt: skip
    for amp in precisions:
        hist = np.array([done[(c["index"], amp)]["history"] for c in cands])  # (archs, epochs)
        final = hist[:, -1]
        rows = []
        for e in range(1, epochs):
            lo, hi = bootstrap_interval(hist[:, e - 1], final)
            row = {"epoch": e, "spearman": spearman(hist[:, e - 1], final), "ci90": [lo, hi]}
            for r in rfs:
                share, best_kept = halving_keep(hist[:, e - 1], final, r)
                row[f"keep_share_r{r}"], row[f"best_kept_r{r}"] = share, best_kept
            rows.append(row)
        report["precisions"][amp] = {
            "rows": rows,
            "final_mean": float(final.mean()), "final_min": float(final.min()), "final_max": float(final.max()),
            "seconds": sum(done[(c["index"], amp)]["seconds"] for c in cands),
        }  # fmt: skip
    if "off" in precisions and "bf16" in precisions:
        f32 = np.array([done[(c["index"], "off")]["history"][-1] for c in cands])
        b16 = np.array([done[(c["index"], "bf16")]["history"][-1] for c in cands])
        report["bf16_vs_fp32_final_spearman"] = spearman(b16, f32)
        report["bf16_minus_fp32_final_mean_pp"] = float((b16 - f32).mean() * 100)
    report["wall_seconds_this_run"] = round(time.perf_counter() - start, 1)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    out.with_suffix(".md").write_text(_markdown(report, args, rfs))
    print(out.with_suffix(".md").read_text())


def _markdown(rep: dict, args: argparse.Namespace, rfs: list[int]) -> str:
    lines = [
        "# Rank fidelity: does an early epoch predict the final validation accuracy?",
        "",
        f"{rep['archs']} architectures drawn at random (within the budget) from the search space of "
        f"`{rep['study']}`, with their sampled training recipes, each trained for the study's full "
        f"schedule ({rep['epochs']} epochs, its learning-rate schedule) on {rep['train_images']:,} training "
        f"images (reduced data), scored on the study's {rep['val_images']:,}-image validation split after "
        f"every epoch. One seed per architecture.",
        "",
        f"Machine: {machine_label(rep['device'], rep['cpu'])}; torch {rep['torch']}; {rep['date']}.",
        f"Command: `python benchmarks/rank_fidelity.py {args.study_file} --data-dir DATA --archs {args.archs} "
        f"--train-limit {args.train_limit} --seed {args.seed} --amp {args.amp} --out {args.out}`",
        "",
        "Spearman = rank correlation between validation accuracy after epoch e and after the final epoch "
        "(90 % bootstrap interval over architectures). `keep r` = successive halving with reduction factor "
        "r at epoch e keeps the top 1/r: the share of the final top 1/r among those kept, and whether the "
        "final best is kept.",
        "",
    ]
    for amp, p in rep["precisions"].items():
        lines += [
            f"## Training precision: {'float32' if amp == 'off' else amp}",
            "",
            f"Final validation accuracy: mean {p['final_mean']:.4f}, range {p['final_min']:.4f}-{p['final_max']:.4f}; "
            f"{p['seconds'] / 60:.1f} min of training in all.",
            "",
            "| epoch e | Spearman(e, final) | 90 % interval | " + " | ".join(f"keep r={r}: share, best kept" for r in rfs) + " |",
            "|---|---|---|" + "---|" * len(rfs),
        ]
        for row in p["rows"]:
            mark = "**" if row["epoch"] in EPOCHS_OF_INTEREST else ""
            lines.append(
                f"| {mark}{row['epoch']}{mark} | {row['spearman']:.2f} | {row['ci90'][0]:.2f} to {row['ci90'][1]:.2f} | "
                + " | ".join(f"{row[f'keep_share_r{r}']:.2f}, {'yes' if row[f'best_kept_r{r}'] else 'no'}" for r in rfs)
                + " |"
            )
        lines.append("")
    if "bf16_vs_fp32_final_spearman" in rep:
        lines += [
            "## bf16 against float32",
            "",
            f"Spearman between the final accuracies trained in bf16 and in float32: "
            f"{rep['bf16_vs_fp32_final_spearman']:.2f}; mean difference (bf16 - float32): "
            f"{rep['bf16_minus_fp32_final_mean_pp']:+.3f} pp.",
            "",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
