#!/usr/bin/env bash
# First thing to run on a machine with a CUDA GPU:
#   bash benchmarks/gpu_check.sh DATA_ROOT
# 1. the `gpu` tests (a study trained on cuda, export + verification of a GPU-trained trial,
#    amp off and bf16, torch.compile default and reduce-overhead, --jobs 2 on one GPU);
# 2. the speed benchmark on the GPU: reference loop vs engine, compile modes, one end-to-end
#    trial, and `harness run --jobs 1,2,4,8` in trials per hour;
# 3. the bf16 question: the baseline, 3 seeds x 15 epochs, train.amp off vs bf16 (accuracy
#    and training time in one run), which decides whether amp may ever default to bf16;
# then writes results/gpu_check-<device>.md (and results/train_speed-<device>.{md,json}).
# Every step runs even when an earlier one fails; the exit status is the first failure's.
set -uo pipefail
cd "$(dirname "$0")/.."
data="${1:?usage: gpu_check.sh DATA_ROOT}"
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
  || { echo "gpu_check: no CUDA GPU visible to torch; nothing to check" >&2; exit 2; }
device=$(python3 -c "import re, torch; print(re.sub(r'[^a-z0-9]+', '-', torch.cuda.get_device_name(0).lower()).strip('-'))")
versions=$(python3 -c "import torch; print(f'torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, {torch.cuda.get_device_name(0)}')")
mkdir -p results runs
status=0

python3 -m pytest -m gpu -q -rA tests/test_gpu.py >"runs/gpu_check-pytest.txt" 2>&1
tests_rc=$?
python3 benchmarks/train_speed.py --data-dir "$data" --device cuda --epochs 3 --compile default,reduce-overhead \
  --e2e-epochs 15 --jobs 1,2,4,8 --jobs-trials 16 --jobs-epochs 4 --jobs-train-limit 0 \
  --out "results/train_speed-$device" >"runs/gpu_check-speed.txt" 2>&1
speed_rc=$?
python3 benchmarks/train_speed.py --data-dir "$data" --device cuda --only-accuracy --accuracy-seeds 3 \
  --accuracy-epochs 15 --accuracy-amp off,bf16 --out "results/bf16_accuracy-$device" >"runs/gpu_check-bf16.txt" 2>&1
bf16_rc=$?
for rc in "$tests_rc" "$speed_rc" "$bf16_rc"; do [ "$status" -eq 0 ] && status=$rc; done

{
  echo "# GPU check: $device"
  echo
  echo "Generated $(date -u +%Y-%m-%d) by \`bash benchmarks/gpu_check.sh $data\` ($versions)."
  echo
  echo "## 1. \`pytest -m gpu\` (exit $tests_rc)"
  echo
  echo '```'
  tail -n 25 runs/gpu_check-pytest.txt
  echo '```'
  echo
  echo "## 2. Speed (exit $speed_rc): results/train_speed-$device.md"
  echo
  [ -f "results/train_speed-$device.md" ] && cat "results/train_speed-$device.md" || tail -n 25 runs/gpu_check-speed.txt
  echo
  echo "## 3. bf16 against float32 (exit $bf16_rc): results/bf16_accuracy-$device.md"
  echo
  [ -f "results/bf16_accuracy-$device.md" ] && cat "results/bf16_accuracy-$device.md" || tail -n 25 runs/gpu_check-bf16.txt
} >"results/gpu_check-$device.md"
echo "gpu_check: wrote results/gpu_check-$device.md (exit $status)"
exit "$status"
