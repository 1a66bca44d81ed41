#!/usr/bin/env bash
# Stage 20 of the CPU results pipeline (issue 12, target 2: >= 99.40 % at <= 3,700 parameters).
#   bash benchmarks/results_3700_geluclean_cpu.sh DATA_ROOT
# 1. search: studies/mnist-3700-geluclean-cpu.toml runs stage 18's winner (stage 13's network and
#    recipe with GELU) with stage 19's winning clean last epochs, all 20 epochs on 50,000
#    training images (no pruning), scored on the validation split (the last 10,000);
# 2. retrain: the best trial by validation accuracy (top 1: no selection on the test set),
#    all 60,000 images, 20 epochs, 3 seeds (stage 18's retrain seeds: that retrain up to the
#    clean epochs), final-epoch test accuracy;
# 3. results/geluclean-3700-cpu.md (target check, learning curves, the winner exported and
#    verified) and the HTML report (ignored).
# About 45 minutes on a 2-core Intel Xeon (one stage-18 candidate took 10 min, its retrain 32). Run it again after an interruption:
# finished steps are skipped (runs/results_3700_geluclean_cpu-steps.tsv, with their wall-clock
# seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:?usage: results_3700_geluclean_cpu.sh DATA_ROOT}"
study=studies/mnist-3700-geluclean-cpu.toml
steps=runs/results_3700_geluclean_cpu-steps.tsv

source benchmarks/pipeline_steps.sh  # step, recipe_pipeline

recipe_pipeline "$data" "$study" results/geluclean-3700-cpu.md "after stage 19 (its validation only: README)" \
  "Stage 18's GELU network with stage 19's clean last epochs"
