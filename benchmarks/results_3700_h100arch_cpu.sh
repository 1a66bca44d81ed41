#!/usr/bin/env bash
# Stage 8 of the CPU results pipeline (issue 12, target 2: >= 99.40 % at <= 3,700 parameters).
#   bash benchmarks/results_3700_h100arch_cpu.sh DATA_ROOT
# 1. search: studies/mnist-3700-h100arch-cpu.toml runs the H100 lease's 3,454-parameter winner
#    (studies/mnist-3700.toml trial 218) with its recipe and with less regularisation (no
#    dropout, a fifth of the weight decay, half the zoom, all three), each all 20 epochs on
#    50,000 training images (no pruning); selection on the validation split (the last 10,000);
# 2. retrain: the best trial by validation accuracy (top 1: no selection on the test set),
#    all 60,000 images, 20 epochs, 3 seeds, final-epoch test accuracy;
# 3. results/h100arch-3700-cpu.md (target check, learning curves, the winner exported and
#    verified) and the HTML report (ignored).
# About 45 minutes on 2 cores. Run it again after an interruption: finished steps are skipped
# (runs/results_3700_h100arch_cpu-steps.tsv, with their wall-clock seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:?usage: results_3700_h100arch_cpu.sh DATA_ROOT}"
study=studies/mnist-3700-h100arch-cpu.toml
steps=runs/results_3700_h100arch_cpu-steps.tsv

source benchmarks/pipeline_steps.sh  # step, recipe_pipeline

recipe_pipeline "$data" "$study" results/h100arch-3700-cpu.md "after the H100 lease's mnist-3700 search (results/mnist-3700-nvidia-h100.md)" \
  "Recipe variants of the H100 winner"
