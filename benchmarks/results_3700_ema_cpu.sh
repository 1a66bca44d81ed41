#!/usr/bin/env bash
# Stage 17 of the CPU results pipeline (issue 12, target 2: >= 99.40 % at <= 3,700 parameters).
#   bash benchmarks/results_3700_ema_cpu.sh DATA_ROOT
# 1. search: studies/mnist-3700-ema-cpu.toml runs stage 13's network and recipe with weight
#    averaging (train.ema_decay 0.999 and 0.9998), each all 20 epochs on 50,000 training
#    images (no pruning); selection on the validation split (the last 10,000), on the averaged
#    weights' score;
# 2. retrain: the best trial by validation accuracy (top 1: no selection on the test set),
#    all 60,000 images, 20 epochs, 3 seeds, final-epoch test accuracy of the averaged weights,
#    with the trained weights of the same runs scored beside them;
# 3. results/ema-3700-cpu.md (target check, learning curves, averaged against trained weights,
#    the winner exported and verified) and the HTML report (ignored).
# About 30 minutes on 2 cores (stage 13 took 10 + 20). Run it again after an interruption:
# finished steps are skipped (runs/results_3700_ema_cpu-steps.tsv, with their wall-clock
# seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:?usage: results_3700_ema_cpu.sh DATA_ROOT}"
study=studies/mnist-3700-ema-cpu.toml
steps=runs/results_3700_ema_cpu-steps.tsv

source benchmarks/pipeline_steps.sh  # step, recipe_pipeline

recipe_pipeline "$data" "$study" results/ema-3700-cpu.md "after stage 16 (results/bornagain-3700-cpu.md)" \
  "Stage 13's network and recipe with weight averaging (two decays)"
