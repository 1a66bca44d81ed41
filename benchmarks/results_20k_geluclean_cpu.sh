#!/usr/bin/env bash
# Stage 21 of the CPU results pipeline (issue 12, target 1: >= 99.60 % under 20,000 parameters).
#   bash benchmarks/results_20k_geluclean_cpu.sh DATA_ROOT
# 1. search: studies/mnist-20k-geluclean-cpu.toml runs stage 9's winner (the H100 lease's
#    17,786-parameter network with stage 7's recipe, dropout 0.15) with target 2's levers: GELU
#    (stage 18) and the last 4 epochs un-augmented (stage 19); all 20 epochs on 50,000 training
#    images (no pruning), scored on the validation split (the last 10,000);
# 2. retrain: the best trial by validation accuracy (top 1: no selection on the test set),
#    all 60,000 images, 20 epochs, 3 seeds (stage 9's retrain seeds), final-epoch test accuracy;
# 3. results/geluclean-20k-cpu.md (target check, learning curves, the winner exported and
#    verified) and the HTML report (ignored).
# About 55 minutes on a 2-core Intel Xeon (search 12, retrain 42; a 20-epoch run of this network
# with GELU took 820-860 s here on 60,000 images, stage 9's with ReLU 469 s on a 2-core AMD EPYC). Run it again after an interruption:
# finished steps are skipped (runs/results_20k_geluclean_cpu-steps.tsv, with their wall-clock
# seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:?usage: results_20k_geluclean_cpu.sh DATA_ROOT}"
study=studies/mnist-20k-geluclean-cpu.toml
steps=runs/results_20k_geluclean_cpu-steps.tsv

source benchmarks/pipeline_steps.sh  # step, recipe_pipeline

recipe_pipeline "$data" "$study" results/geluclean-20k-cpu.md "after stage 20 (results/geluclean-3700-cpu.md)" \
  "Stage 9's winner with GELU and 4 clean last epochs"
