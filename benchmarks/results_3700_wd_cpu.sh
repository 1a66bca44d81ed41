#!/usr/bin/env bash
# Stage 13 of the CPU results pipeline (issue 12, target 2: >= 99.40 % at <= 3,700 parameters).
#   bash benchmarks/results_3700_wd_cpu.sh DATA_ROOT
# 1. search: studies/mnist-3700-wd-cpu.toml runs the 3,454- and 3,646-parameter networks with
#    stage 12's winning recipe (batch 64, weight decay 1e-4), each all 20 epochs on 50,000
#    training images (no pruning); selection on the validation split (the last 10,000);
# 2. retrain: the best trial by validation accuracy (top 1: no selection on the test set),
#    all 60,000 images, 20 epochs, 3 seeds, final-epoch test accuracy;
# 3. results/wd-3700-cpu.md (target check, learning curves, the winner exported and
#    verified) and the HTML report (ignored).
# About 30 minutes (30 measured) on 2 cores. Run it again after an interruption: finished steps are skipped
# (runs/results_3700_wd_cpu-steps.tsv, with their wall-clock seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:?usage: results_3700_wd_cpu.sh DATA_ROOT}"
study=studies/mnist-3700-wd-cpu.toml
steps=runs/results_3700_wd_cpu-steps.tsv

source benchmarks/pipeline_steps.sh  # step, recipe_pipeline

recipe_pipeline "$data" "$study" results/wd-3700-cpu.md "after stage 12 (results/batch64-3700-cpu.md)" \
  "Stage 12's recipe on both networks"
