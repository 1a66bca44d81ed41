#!/usr/bin/env bash
# Stage 19 of the CPU results pipeline (issue 12, target 2: >= 99.40 % at <= 3,700 parameters).
#   bash benchmarks/results_3700_clean_cpu.sh DATA_ROOT
# A validation-only stage: studies/mnist-3700-clean-cpu.toml runs stage 13's network and recipe
# with the last 2 and the last 4 epochs on un-augmented images (train.clean_epochs), each all 20
# epochs on 50,000 training images (no pruning), scored on the validation split (the last
# 10,000). With stage 17's trial seeds on the same CPU model each run is one of stage 17's up to
# its clean epochs: the validation difference is paired. Not retrained here: the winner's clean
# epochs are measured on the test set in stage 20 (benchmarks/results_3700_geluclean_cpu.sh), on
# stage 18's GELU network, paired with stage 18's retrain.
# Prints the study's status and writes its HTML report and trials CSV (runs/, ignored), where
# val_acc and the per-epoch validation scores are. About 20 minutes on a 2-core Intel Xeon. Run
# it again after an interruption: a finished search is skipped
# (runs/results_3700_clean_cpu-steps.tsv, with its wall-clock seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:?usage: results_3700_clean_cpu.sh DATA_ROOT}"
study=studies/mnist-3700-clean-cpu.toml
steps=runs/results_3700_clean_cpu-steps.tsv

source benchmarks/pipeline_steps.sh  # step, step_minutes

step search harness run "$study" --data-dir "$data" --device cpu --quiet
echo "search wall clock: $(step_minutes search) min"
harness status "$study"
harness report "$study" --out runs/mnist-3700-clean-cpu-report.html --csv runs/mnist-3700-clean-cpu-trials.csv
