#!/usr/bin/env bash
# Stage 24 of the CPU results pipeline (issue 12, target 2: >= 99.40 % at <= 3,700 parameters):
# target 2 without the GPU's search.
#   bash benchmarks/results_3700_cpuarch_cpu.sh DATA_ROOT
# Stage 20 met target 2 with a network the sampler proposed on an H100 lease. This stage gives its
# levers and recipe (GELU, the last 4 epochs un-augmented, stage 13's recipe) to the best network a
# CPU search proposed at <= 3,700 parameters (the CPU front's 3,590-parameter point, stage 1), and
# runs the same network without the levers as a paired control (same study seed, same retrain
# seeds):
# 1. search: studies/mnist-3700-cpuarch-cpu.toml, then studies/mnist-3700-cpuarch-control-cpu.toml,
#    each one fixed candidate run all 20 epochs on 50,000 training images (no pruning), scored on
#    the validation split (the last 10,000);
# 2. retrain: each study's best trial by validation accuracy (top 1: no selection on the test
#    set; its only candidate), all 60,000 images, 20 epochs, 3 seeds, final-epoch test accuracy;
# 3. retrain seeds 3-5 for both studies on top of the stored 0-2 (`--seeds 6` keeps stored
#    runs): the verdicts and the paired difference over 6 seeds, as stage 23 gave stage 20's
#    (added after steps 1-2 had run: the control's seeds 0-1 matched the levers').
# 4. results/cpuarch-3700-cpu.md: both studies (target check, learning curves, the winner exported
#    and verified), and each study's HTML report and trials CSV under runs/ (ignored).
# The levers' study runs first: with it alone (search and retrain), the question of this stage
# is answered. About 2.5 hours on a 2-core Intel Xeon (each study's search 6 min, a retrain run
# 8-10 min). Run it again after an interruption: finished steps are skipped
# (runs/results_3700_cpuarch_cpu-steps.tsv, with their wall-clock seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:?usage: results_3700_cpuarch_cpu.sh DATA_ROOT}"
levers=studies/mnist-3700-cpuarch-cpu.toml
control=studies/mnist-3700-cpuarch-control-cpu.toml
steps=runs/results_3700_cpuarch_cpu-steps.tsv

source benchmarks/pipeline_steps.sh  # step, step_minutes

for study in "$levers" "$control"; do
  kind=$([ "$study" = "$levers" ] && echo levers || echo control)
  step "search-$kind" harness run "$study" --data-dir "$data" --device cpu --quiet
  step "retrain-$kind" harness retrain "$study" --top 1 --seeds 3 --epochs 20 --no-baseline --data-dir "$data" --device cpu
done
for study in "$levers" "$control"; do
  kind=$([ "$study" = "$levers" ] && echo levers || echo control)
  step "retrain-$kind-6" harness retrain "$study" --top 1 --seeds 6 --epochs 20 --no-baseline --data-dir "$data" --device cpu
done
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
harness results "$levers" "$control" --out results/cpuarch-3700-cpu.md --data-dir "$data" \
  --note "Stage 24: the CPU front's 3,590-parameter network with stage 20's levers (GELU, 4 clean last epochs) and without them (the control), stage 13's recipe, paired seeds 0-5. Search + retrain wall clock: $(step_minutes search-levers retrain-levers search-control retrain-control retrain-levers-6 retrain-control-6) min on a $(nproc)-core ${cpu:-CPU} (with the levers: search $(step_minutes search-levers) min, retrain $(step_minutes retrain-levers) min, seeds 3-5 $(step_minutes retrain-levers-6) min; the control: search $(step_minutes search-control) min, retrain $(step_minutes retrain-control) min, seeds 3-5 $(step_minutes retrain-control-6) min), after stage 23 (results/seeds6-cpu.md). Command: bash benchmarks/$(basename "$0") .data"
for study in "$levers" "$control"; do
  name=$(basename "$study" .toml)
  harness report "$study" --out "runs/$name-report.html" --csv "runs/$name-trials.csv"
done
