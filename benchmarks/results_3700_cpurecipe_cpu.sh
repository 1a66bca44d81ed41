#!/usr/bin/env bash
# Stage 10 of the CPU results pipeline (issue 12, target 2: >= 99.40 % at <= 3,700 parameters).
#   bash benchmarks/results_3700_cpurecipe_cpu.sh DATA_ROOT
# 1. search: studies/mnist-3700-cpurecipe-cpu.toml runs the H100 lease's 3,454-parameter winner
#    (studies/mnist-3700.toml trial 218) with the CPU stages' recipes (stage 7's and stage
#    4's), each all 20 epochs on 50,000 training images (no pruning); selection on the
#    validation split (the last 10,000);
# 2. retrain: the best trial by validation accuracy (top 1: no selection on the test set),
#    all 60,000 images, 20 epochs, 3 seeds, final-epoch test accuracy;
# 3. results/cpurecipe-3700-cpu.md (target check, learning curves, the winner exported and
#    verified) and the HTML report (ignored).
# About 35 minutes on 2 cores. Run it again after an interruption: finished steps are skipped
# (runs/results_3700_cpurecipe_cpu-steps.tsv, with their wall-clock seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:?usage: results_3700_cpurecipe_cpu.sh DATA_ROOT}"
study=studies/mnist-3700-cpurecipe-cpu.toml
steps=runs/results_3700_cpurecipe_cpu-steps.tsv

source benchmarks/pipeline_steps.sh  # step, recipe_pipeline

recipe_pipeline "$data" "$study" results/cpurecipe-3700-cpu.md "after stages 8 and 9 (results/h100arch-3700-cpu.md, results/h100arch-20k-cpu.md)" \
  "The H100 winner with the CPU recipes"
