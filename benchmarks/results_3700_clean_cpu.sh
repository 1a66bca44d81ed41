#!/usr/bin/env bash
# Stage 19 of the CPU results pipeline (issue 12, target 2: >= 99.40 % at <= 3,700 parameters).
#   bash benchmarks/results_3700_clean_cpu.sh DATA_ROOT
# 1. search: studies/mnist-3700-clean-cpu.toml runs stage 13's network and recipe with the last
#    2 and the last 4 epochs on un-augmented images (train.clean_epochs), each all 20 epochs on
#    50,000 training images (no pruning);
#    selection on the validation split (the last 10,000);
# 2. retrain: the best trial by validation accuracy (top 1: no selection on the test set),
#    all 60,000 images, 20 epochs, 3 seeds (stage 17's retrain seeds), final-epoch test accuracy;
# 3. results/clean-3700-cpu.md (target check, learning curves, the winner exported and
#    verified) and the HTML report (ignored).
# About 50 minutes on a 2-core Intel Xeon (stage 17 took 23 + 30). Run it again after an interruption:
# finished steps are skipped (runs/results_3700_clean_cpu-steps.tsv, with their wall-clock
# seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:?usage: results_3700_clean_cpu.sh DATA_ROOT}"
study=studies/mnist-3700-clean-cpu.toml
steps=runs/results_3700_clean_cpu-steps.tsv

source benchmarks/pipeline_steps.sh  # step, recipe_pipeline

recipe_pipeline "$data" "$study" results/clean-3700-cpu.md "after stage 18 (results/act-3700-cpu.md)" \
  "Stage 13's network and recipe with its last 2 or 4 epochs un-augmented"
