"""How the registered search spaces spread over parameter counts (no training).

Draws ``--samples`` architectures from each space with Optuna's RandomSampler (what the TPE
sampler starts from) and counts each one's parameters: the share within the 20,000 budget
and within the 3,700 of target 2, the median, the smallest and the largest. The README's
figures on the spaces come from this script.

Usage: python benchmarks/space_stats.py [--samples 2000] [--seed 0] [--out results/space_stats]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
from pathlib import Path

import optuna

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.spec import InvalidSpecError, count_params  # noqa: E402
from search_spaces import SEARCH_SPACES, get_search_space  # noqa: E402

BUDGET, SMALL = 20_000, 3_700


def space_counts(name: str, samples: int, seed: int) -> tuple[list[int], int]:
    """Parameter counts of the valid ones of ``samples`` uniform draws from space ``name``, and
    how many were invalid (a feature map shrunk below a pixel: the harness rejects those untrained)."""
    space = get_search_space(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    counts, invalid = [], 0
    for _ in range(samples):
        trial = study.ask()
        try:
            counts.append(count_params(space.suggest(trial)))
        except InvalidSpecError:
            invalid += 1
        study.tell(trial, 0.0)
    return counts, invalid


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    if args.samples < 1:
        ap.error(f"--samples must be >= 1, got {args.samples}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    for name in sorted(SEARCH_SPACES):
        c, invalid = space_counts(name, args.samples, args.seed)
        if not c:
            sys.exit(f"space_stats: every one of {invalid:,} draws from space {name!r} is invalid")
        n = len(c) + invalid  # shares of all draws: an invalid one is within no budget
        rows.append({"space": name, "samples": n, "invalid": invalid, "within_budget": sum(x <= BUDGET for x in c) / n,
                     "within_small": sum(x <= SMALL for x in c) / n, "median": statistics.median(c),
                     "min": min(c), "max": max(c)})  # fmt: skip
    command = "python benchmarks/space_stats.py " + " ".join(sys.argv[1:])
    lines = [f"# Search spaces by parameter count ({dt.date.today().isoformat()}, optuna {optuna.__version__})", "",
             f"`{command.strip()}`: {args.samples:,} architectures drawn from each space by RandomSampler(seed="
             f"{args.seed}), parameters counted, nothing trained. Shares are of all draws; invalid ones (a feature "
             "map shrunk below a pixel, rejected untrained by the harness) are in none; median, smallest and largest "
             "are of the valid ones.", "",
             f"| space | samples | invalid | <= {BUDGET:,} params | <= {SMALL:,} params | median | smallest | largest |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        lines.append(f"| `{r['space']}` | {r['samples']:,} | {r['invalid']:,} | {r['within_budget']:.0%} | {r['within_small']:.0%} "
                     f"| {r['median']:,.0f} | {r['min']:,} | {r['max']:,} |")  # fmt: skip
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        out = Path(args.out)
        out.with_suffix(".md").write_text(text)
        out.with_suffix(".json").write_text(json.dumps({"command": command.strip(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
