#!/usr/bin/env bash
# Stage 7 of the CPU results pipeline (issue 12, target 1: >= 99.60 % under 20,000 parameters).
#   bash benchmarks/results_20k_zoom_cpu.sh DATA_ROOT        (after results_20k_recipe2_cpu.sh)
# 1. search: studies/mnist-20k-zoom-cpu.toml runs stage 3's winner with zoom 0, 0.05 and 0.1
#    and the seed network as the control, each all 20 epochs on 50,000 training images (no
#    pruning); selection on the validation split (the last 10,000 training images);
# 2. retrain: the best trial by validation accuracy (top 1: no selection on the test set),
#    all 60,000 images, 20 epochs, 3 seeds, final-epoch test accuracy;
# 3. results/zoom-20k-cpu.md (target check, learning curves, the winner exported and
#    verified) and the HTML report (ignored).
# About 25 minutes on 2 cores. Run it again after an interruption: finished steps are skipped
# (runs/results_20k_zoom_cpu-steps.tsv, with their wall-clock seconds). Its first run
# (2026-11-26) was stopped for time during trial 3 (zoom 0.1), before the retrain: a re-run
# retried trial 3 and, as study.n_trials then counted per run, ran three sampled candidates
# too (dropout, BN position and zoom drawn by TPE) before selecting and retraining (now
# study.n_trials is the study's total: a re-run runs only the missing trials).
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:?usage: results_20k_zoom_cpu.sh DATA_ROOT}"
study=studies/mnist-20k-zoom-cpu.toml
steps=runs/results_20k_zoom_cpu-steps.tsv

source benchmarks/pipeline_steps.sh  # step, recipe_pipeline

recipe_pipeline "$data" "$study" results/zoom-20k-cpu.md "after stage 5 (results/recipe2-20k-cpu.md)" "Zoom comparison"
