#!/usr/bin/env bash
# The results pipeline (issue 12) on a CPU: search, retrain, results table, report.
#   bash benchmarks/results_cpu.sh DATA_ROOT
# 1. search: studies/mnist-front-cpu.toml (Pareto mode over the compact space, 30 minutes of
#    6-epoch trials on 20,000 images, selection on the validation split);
# 2. retrain: 5 points spread along the validation front, all 60,000 images, 20 epochs,
#    3 seeds, final-epoch test accuracy;
# 3. baseline: the seed network (19,290 parameters, the study's baseline trial) retrained the
#    same way, for comparison (not selected by the search; the spread runs are kept);
# 4. results/front-cpu.md (targets, the retrained front, winners exported and verified)
#    and the HTML report (ignored) with the retrained front plotted.
# About 2.5 hours on 2 cores (the time to target counts search + retrain only). Run it again after an interruption: finished steps are skipped
# (listed in runs/results_cpu-steps.tsv with their wall-clock seconds), an interrupted
# retrain keeps its finished runs, an interrupted search searches again for the full time.
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:?usage: results_cpu.sh DATA_ROOT}"
study=studies/mnist-front-cpu.toml
steps=runs/results_cpu-steps.tsv

source benchmarks/pipeline_steps.sh  # step NAME COMMAND...: run once, record its seconds (creates $steps)

step search harness run "$study" --data-dir "$data" --device cpu --quiet
step retrain harness retrain "$study" --spread 5 --seeds 3 --epochs 20 --no-baseline --data-dir "$data" --device cpu
step baseline harness retrain "$study" --spread 5 --seeds 3 --epochs 20 --data-dir "$data" --device cpu
total=$(awk -F'\t' '$1 == "search" || $1 == "retrain" {s += $2} END {print s}' "$steps")
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
harness results "$study" --out results/front-cpu.md --data-dir "$data" \
  --note "Search + retrain wall clock: $((total / 60)) min on a $(nproc)-core ${cpu:-CPU} (search $(awk -F'\t' '$1 == "search" {print int($2 / 60)}' "$steps") min, retrain $(awk -F'\t' '$1 == "retrain" {print int($2 / 60)}' "$steps") min; the seed baseline's retrain for comparison took another $(awk -F'\t' '$1 == "baseline" {print int($2 / 60)}' "$steps") min). Command: bash benchmarks/results_cpu.sh .data"
harness report "$study" --out runs/mnist-front-cpu-report.html --csv runs/mnist-front-cpu-trials.csv
