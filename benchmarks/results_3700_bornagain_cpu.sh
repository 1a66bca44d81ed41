#!/usr/bin/env bash
# Stage 16 of the CPU results pipeline (issue 12, target 2: >= 99.40 % at <= 3,700 parameters).
#   bash benchmarks/results_3700_bornagain_cpu.sh DATA_ROOT
# 0. the teacher, unless its file exists (a new export would be another teacher file, which a
#    resumed study or retrain refuses): stage 13's study (benchmarks/results_3700_wd_cpu.sh,
#    30 minutes, its finished steps skipped), its validation winner (trial 1, the 3,454-
#    parameter network) exported as a .pt2 file (the search trial: trained on the first 50,000
#    images);
# 1. search: studies/mnist-3700-bornagain-cpu.toml runs the same 3,454-parameter network
#    distilled from that teacher with two weight/temperature pairs (stage 14's 0.5 / 4 and
#    0.9 / 4), each all 20 epochs on 50,000 training images (no pruning); selection on the
#    validation split (the last 10,000);
# 2. retrain: the best trial by validation accuracy (top 1), all 60,000 images, 20 epochs,
#    3 seeds, the same teacher, final-epoch test accuracy;
# 3. results/bornagain-3700-cpu.md (target check, learning curves, the winner exported and
#    verified) and the HTML report (ignored).
# About 40 minutes on 2 cores (estimated: a distilled step ~1.3x as long). Run it again after an
# interruption: finished steps are skipped (runs/results_3700_bornagain_cpu-steps.tsv).
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:?usage: results_3700_bornagain_cpu.sh DATA_ROOT}"
study=studies/mnist-3700-bornagain-cpu.toml
teacher=exports/teachers/mnist-3700-wd-cpu-trial1.pt2  # the study file's train.teacher
steps=runs/results_3700_bornagain_cpu-steps.tsv

source benchmarks/pipeline_steps.sh  # step, recipe_pipeline

if [ ! -f "$teacher" ]; then
  bash benchmarks/results_3700_wd_cpu.sh "$data"  # finished steps are skipped
  harness export studies/mnist-3700-wd-cpu.toml --trial 1 --format pt2 --out "$(dirname "$teacher")" --data-dir "$data"
fi
recipe_pipeline "$data" "$study" results/bornagain-3700-cpu.md "after stage 15 (results/h100front-3700-cpu.md)" \
  "Distillation from the student's own network (stage 13's search trial)"
