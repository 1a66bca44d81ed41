#!/usr/bin/env bash
# Stage 15 of the CPU results pipeline (issue 12, target 2: >= 99.40 % at <= 3,700 parameters).
#   bash benchmarks/results_3700_h100front_cpu.sh DATA_ROOT
# 1. search: studies/mnist-3700-h100front-cpu.toml runs three hand-widened versions of the
#    H100 mnist-pareto study's 3,074-parameter front point (trial 9) with stage 13's recipe,
#    each all 20 epochs on 50,000 training images (no pruning); selection on the validation
#    split (the last 10,000);
# 2. retrain: the best trial by validation accuracy (top 1: no selection on the test set),
#    all 60,000 images, 20 epochs, 3 seeds, final-epoch test accuracy;
# 3. results/h100front-3700-cpu.md (target check, learning curves, the winner exported and
#    verified) and the HTML report (ignored).
# About 40 minutes on 2 cores (estimated from a few timed steps). Run it again after an
# interruption: finished steps are skipped (runs/results_3700_h100front_cpu-steps.tsv, with
# their wall-clock seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:?usage: results_3700_h100front_cpu.sh DATA_ROOT}"
study=studies/mnist-3700-h100front-cpu.toml
steps=runs/results_3700_h100front_cpu-steps.tsv

source benchmarks/pipeline_steps.sh  # step, recipe_pipeline

recipe_pipeline "$data" "$study" results/h100front-3700-cpu.md "after stage 14 (results/distill-3700-cpu.md) and the H100 lease that started mnist-pareto (results/mnist-pareto-nvidia-h100.md)" \
  "Stage 13's recipe on three widenings of the H100 front's 3,074-parameter network"
