#!/usr/bin/env bash
# Stage 6 of the CPU results pipeline (issue 12, target 2: >= 99.40 % at <= 3,700 parameters).
#   bash benchmarks/results_3700_arch_cpu.sh DATA_ROOT        (after results_3700_recipe2_cpu.sh)
# 1. search: studies/mnist-3700-arch-cpu.toml searches the compact space's architectures under
#    3,700 parameters, with the lr, zoom and weight decay, for 40 minutes of 20-epoch trials on
#    50,000 training images, one halving rung at epoch 10, the front's 3,590-parameter network
#    enqueued as the reference; selection on the validation split (the last 10,000 images);
# 2. retrain: the best trial by validation accuracy (top 1: no selection on the test set),
#    all 60,000 images, 20 epochs, 3 seeds, final-epoch test accuracy;
# 3. results/arch-3700-cpu.md (target check, learning curves, the winner exported and
#    verified) and the HTML report (ignored).
# About an hour on 2 cores. Run it again after an interruption: finished steps are skipped
# (runs/results_3700_arch_cpu-steps.tsv, with their wall-clock seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:?usage: results_3700_arch_cpu.sh DATA_ROOT}"
study=studies/mnist-3700-arch-cpu.toml
steps=runs/results_3700_arch_cpu-steps.tsv

source benchmarks/pipeline_steps.sh  # step, recipe_pipeline

recipe_pipeline "$data" "$study" results/arch-3700-cpu.md "after stage 4 (results/recipe2-3700-cpu.md)" \
  "Architecture and recipe search"
