#!/usr/bin/env bash
# Stage 11 of the CPU results pipeline (issue 12, target 2: >= 99.40 % at <= 3,700 parameters).
#   bash benchmarks/results_3700_wide_cpu.sh DATA_ROOT
# 1. search: studies/mnist-3700-wide-cpu.toml runs four widened variants of the H100 lease's
#    3,454-parameter winner (studies/mnist-3700.toml trial 218; stage 3 32 channels wide,
#    3,562-3,646 parameters) with stage 4's recipe, each all 20 epochs on 50,000 training
#    images (no pruning); selection on the validation split (the last 10,000);
# 2. retrain: the best trial by validation accuracy (top 1: no selection on the test set),
#    all 60,000 images, 20 epochs, 3 seeds, final-epoch test accuracy;
# 3. results/wide-3700-cpu.md (target check, learning curves, the winner exported and
#    verified) and the HTML report (ignored).
# About 40 minutes (38 measured) on 2 cores. Run it again after an interruption: finished steps are skipped
# (runs/results_3700_wide_cpu-steps.tsv, with their wall-clock seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:?usage: results_3700_wide_cpu.sh DATA_ROOT}"
study=studies/mnist-3700-wide-cpu.toml
steps=runs/results_3700_wide_cpu-steps.tsv

source benchmarks/pipeline_steps.sh  # step, recipe_pipeline

recipe_pipeline "$data" "$study" results/wide-3700-cpu.md "after stage 10 (results/cpurecipe-3700-cpu.md)" \
  "The H100 winner widened to the budget"
