#!/usr/bin/env bash
# Stage 22 of the CPU results pipeline (issue 12, target 1: >= 99.60 % under 20,000 parameters).
#   bash benchmarks/results_20k_rerun_cpu.sh DATA_ROOT
# 1. search: studies/mnist-20k-rerun-cpu.toml runs stage 9's winner as it was (the H100 lease's
#    17,786-parameter network with stage 7's recipe, dropout 0.15, ReLU, every epoch augmented):
#    stage 21's control on this machine, with its seeds; all 20 epochs on 50,000 training
#    images (no pruning), scored on the validation split (the last 10,000);
# 2. retrain: the best trial by validation accuracy (top 1: no selection on the test set),
#    all 60,000 images, 20 epochs, 3 seeds (stage 9's and stage 21's retrain seeds), final-epoch
#    test accuracy;
# 3. results/rerun-20k-cpu.md (target check, learning curves, the winner exported and
#    verified) and the HTML report (ignored).
# About 50 minutes on a 2-core Intel Xeon (search 11, retrain 38; 750-775 s per retrain run). Run it again after an interruption:
# finished steps are skipped (runs/results_20k_rerun_cpu-steps.tsv, with their wall-clock
# seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:?usage: results_20k_rerun_cpu.sh DATA_ROOT}"
study=studies/mnist-20k-rerun-cpu.toml
steps=runs/results_20k_rerun_cpu-steps.tsv

source benchmarks/pipeline_steps.sh  # step, recipe_pipeline

recipe_pipeline "$data" "$study" results/rerun-20k-cpu.md "after stage 21 (results/geluclean-20k-cpu.md)" \
  "Stage 9's winner rerun as it was (stage 21's control)"
