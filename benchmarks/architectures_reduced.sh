#!/usr/bin/env bash
# The REDUCED architecture search (issue 6) on a CPU: both studies, retrain, results table.
#   bash benchmarks/architectures_reduced.sh DATA_ROOT [DEVICE]
# 12 trials of 3 epochs on 10,000 images per study; retrain on all 60,000 images, 3 epochs,
# 3 seeds, best trial(s) + baseline. Proves the pipeline; the full run (studies/mnist-20k.toml,
# studies/mnist-pareto.toml, 15 epochs, retrain --seeds 3) needs a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:?usage: architectures_reduced.sh DATA_ROOT [DEVICE]}"
device="${2:-auto}"
common=(--data-dir "$data" --device "$device")
harness run studies/mnist-20k-reduced.toml "${common[@]}" --quiet
harness retrain studies/mnist-20k-reduced.toml --top 1 --seeds 3 --epochs 3 "${common[@]}"
harness run studies/mnist-pareto-reduced.toml "${common[@]}" --quiet
harness retrain studies/mnist-pareto-reduced.toml --top 2 --seeds 3 --epochs 3 "${common[@]}"
harness results studies/mnist-20k-reduced.toml studies/mnist-pareto-reduced.toml \
  --out "results/architectures-reduced-${device}.md" --data-dir "$data" \
  --note "REDUCED RUN on a 2-core CPU (12 trials x 3 epochs on 10,000 images per study; retrain 3 epochs): proves the pipeline only. The full studies (15 epochs, 50/80 trials, retrain --seeds 3) need a GPU and are still open; these numbers are NOT the targets' answers. Command: bash benchmarks/architectures_reduced.sh .data cpu"
