#!/usr/bin/env bash
# First thing to run on a machine with a CUDA GPU:
#   bash benchmarks/gpu_check.sh DATA_ROOT [STEP...]
# STEPs (default: all four, in this order):
#   tests  the `gpu` tests (a study trained on cuda, export + verification of a GPU-trained
#          trial, amp off and bf16, torch.compile default and reduce-overhead, --jobs 2 on one GPU);
#   bf16   the baseline, 3 seeds x 15 epochs, train.amp bf16 vs off (bf16 first; accuracy and
#          training time in one run), which decides whether amp may ever default to bf16;
#   speed  reference loop vs engine (2 epochs per row, the first a warm-up, 3 repeats), compile
#          modes, and one end-to-end 15-epoch trial through `harness run`;
#   jobs   `harness run --jobs 1,2,4,8` on one GPU, in trials per hour.
# Sized for a 15-minute GPU lease: STEP_LIMIT caps each step in seconds (default 0 = none),
# either one number for all or per step, e.g. STEP_LIMIT=tests=150,speed=240,bf16=150; a step
# stopped at its limit keeps what it finished, and cannot take the others' results with it.
# Writes results/gpu_check-<device>.md from whatever the steps left (results/train_speed-,
# bf16_accuracy- and jobs_speed-<device>.{md,json}; logs in runs/gpu_check-<step>.txt).
# Every step runs even when an earlier one fails; the exit status is the first failure's
# (124 = a step ran out of time). Measured on an H200: tests ~95 s, bf16 ~180 s, speed ~190 s.
set -uo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] && [ -n "$1" ] || { echo "usage: bash benchmarks/gpu_check.sh DATA_ROOT [tests] [bf16] [speed] [jobs]" >&2; exit 2; }
data=$1
[ -d "$data/MNIST/raw" ] || { echo "gpu_check: $data holds no MNIST/raw folder (harness data import DIR --data-dir $data)" >&2; exit 2; }
shift
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(tests bf16 speed jobs)
for step in "${steps[@]}"; do
  case "$step" in tests|bf16|speed|jobs) ;; *) echo "gpu_check: unknown step '$step' (tests, bf16, speed, jobs)" >&2; exit 2 ;; esac
done
limits="${STEP_LIMIT:-0}"
case "$limits" in
  *=*) for pair in ${limits//,/ }; do
         case "$pair" in
           tests=*|bf16=*|speed=*|jobs=*) [[ ${pair#*=} =~ ^[0-9]+$ ]] || { echo "gpu_check: STEP_LIMIT: '$pair' is not step=seconds" >&2; exit 2; } ;;
           *) echo "gpu_check: STEP_LIMIT: bad entry '$pair' (step=seconds; steps: tests, bf16, speed, jobs)" >&2; exit 2 ;;
         esac
       done ;;
  *[!0-9]*|"") echo "gpu_check: STEP_LIMIT must be seconds or step=seconds,..., got '$limits'" >&2; exit 2 ;;
esac
step_limit() {  # seconds for step $1 from STEP_LIMIT ("N" or "step=N,...", 0 = none)
  case "$limits" in
    *=*) local pair; for pair in ${limits//,/ }; do [ "${pair%%=*}" = "$1" ] && { echo "${pair#*=}"; return; }; done; echo 0 ;;
    *) echo "$limits" ;;
  esac
}
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
  || { echo "gpu_check: no CUDA GPU visible to torch; nothing to check" >&2; exit 2; }
device=$(python3 -c "import re, torch; print(re.sub(r'[^a-z0-9]+', '-', torch.cuda.get_device_name(0).lower()).strip('-'))")
versions=$(python3 -c "import torch; print(f'torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, {torch.cuda.get_device_name(0)}')")
mkdir -p results runs
speed=(python3 benchmarks/train_speed.py --data-dir "$data" --device cuda)
touch runs/gpu_check-started  # results files older than this are not from this run
declare -A rc
for step in "${steps[@]}"; do
  log="runs/gpu_check-$step.txt"
  case "$step" in
    tests) cmd=(python3 -m pytest -m gpu -q -rA tests/test_gpu.py) ;;
    speed) cmd=("${speed[@]}" --epochs 2 --compile default,reduce-overhead --e2e-epochs 15
                --out "results/train_speed-$device") ;;
    bf16)  cmd=("${speed[@]}" --only-accuracy --accuracy-seeds 3 --accuracy-epochs 15
                --accuracy-amp bf16,off --out "results/bf16_accuracy-$device") ;;
    jobs)  cmd=("${speed[@]}" --only-accuracy --jobs 1,2,4,8 --jobs-trials 8 --jobs-epochs 2
                --jobs-train-limit 0 --out "results/jobs_speed-$device") ;;
  esac
  limit=$(step_limit "$step")
  echo "gpu_check: $step ($(date -u +%H:%M:%S), limit ${limit}s)"
  start=$SECONDS
  PYTHONUNBUFFERED=1 timeout "$limit" "${cmd[@]}" >"$log" 2>&1
  rc[$step]=$?
  echo "gpu_check: $step exit ${rc[$step]} after $((SECONDS - start)) s"
  echo "# ${cmd[*]}: exit ${rc[$step]} after $((SECONDS - start)) s" >>"$log"
done

status=0
for step in "${steps[@]}"; do [ "$status" -eq 0 ] && status=${rc[$step]}; done
section() {  # title, results file stem, log
  echo "## $1"
  echo
  if [ -f "$2.md" ] && [ "$2.md" -nt "runs/gpu_check-started" ]; then cat "$2.md"; else echo '```'; tail -n 25 "$3"; echo '```'; fi
  echo
}
{
  echo "# GPU check: $device"
  echo
  echo "Generated $(date -u +%Y-%m-%d) by \`STEP_LIMIT=$limits bash benchmarks/gpu_check.sh $data ${steps[*]}\` ($versions)."
  echo
  for step in "${steps[@]}"; do
    case "$step" in
      tests) echo "## \`pytest -m gpu\` (exit ${rc[tests]})"; echo; echo '```'; tail -n 25 runs/gpu_check-tests.txt; echo '```'; echo ;;
      speed) section "Speed (exit ${rc[speed]}): results/train_speed-$device.md" "results/train_speed-$device" runs/gpu_check-speed.txt ;;
      bf16)  section "bf16 against float32 (exit ${rc[bf16]}): results/bf16_accuracy-$device.md" "results/bf16_accuracy-$device" runs/gpu_check-bf16.txt ;;
      jobs)  section "\`--jobs K\` on one GPU (exit ${rc[jobs]}): results/jobs_speed-$device.md" "results/jobs_speed-$device" runs/gpu_check-jobs.txt ;;
    esac
  done
} >"results/gpu_check-$device.md"
echo "gpu_check: wrote results/gpu_check-$device.md (exit $status)"
exit "$status"
