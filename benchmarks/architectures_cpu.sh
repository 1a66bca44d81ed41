#!/usr/bin/env bash
# The architecture search (issue 6) sized for a 2-core CPU, with the full retrain protocol.
#   bash benchmarks/architectures_cpu.sh DATA_ROOT
# Search: studies/mnist-20k-cpu.toml and studies/mnist-3700-cpu.toml, 15 minutes each, 4-epoch
# trials on 20,000 images, selected on the 5,000-image validation split. Retrain: the best
# (top 1 of each, and the baseline) on all 60,000 images, 15 epochs, 3 seeds, scored
# on the 10,000 test images at the final epoch. About an hour on 2 cores (a 15-epoch retrain run of even a 3,000-parameter network takes ~3 minutes here).
# The full studies (15-epoch trials, 50/80/300 trials) need a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:?usage: architectures_cpu.sh DATA_ROOT}"
common=(--data-dir "$data" --device cpu)
harness run studies/mnist-20k-cpu.toml "${common[@]}" --quiet
harness run studies/mnist-3700-cpu.toml "${common[@]}" --quiet
harness retrain studies/mnist-3700-cpu.toml --top 1 --seeds 3 --epochs 15 "${common[@]}"
harness retrain studies/mnist-20k-cpu.toml --top 1 --seeds 3 --epochs 15 "${common[@]}"
harness results studies/mnist-20k-cpu.toml studies/mnist-3700-cpu.toml \
  --out results/architectures-cpu.md --data-dir "$data" \
  --note "CPU-SIZED SEARCH on a 2-core CPU: 15 minutes per study of 4-epoch trials on 20,000 images (selection on the validation split), then the full retrain protocol (15 epochs, all 60,000 images, 3 seeds, final-epoch test accuracy). The full studies (studies/mnist-20k.toml, mnist-pareto.toml, mnist-3700.toml: 15-epoch trials) need a GPU and are still open. Command: bash benchmarks/architectures_cpu.sh .data"
