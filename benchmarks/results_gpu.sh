#!/usr/bin/env bash
# The results pipeline (issue 12) on one CUDA GPU, sized for a short GPU lease:
#   bash benchmarks/results_gpu.sh DATA_ROOT [search] [retrain] [baseline] [results]
# STUDIES  the studies (files studies/<name>.toml), run side by side in each step (default
#          "mnist-20k mnist-3700"; e.g. STUDIES="mnist-3700 mnist-pareto");
# search   the studies at once, each with JOBS worker
#          processes on the one GPU (batch-128 steps are launch-bound there, so processes
#          overlap: results/train_speed-nvidia-h200.md), each stopped from starting trials
#          after SEARCH_SECONDS (the full mnist-20k study is 50 trials, rejections included;
#          mnist-3700's 300 do not fit a lease), and ended a minute later (SIGINT: a trial still
#          running ends FAIL and is retried on resume); recorded either way. A resumed study
#          runs only the trials it lacks (study.n_trials is the study's total);
# retrain  each study's TOP best trials by validation accuracy (a Pareto study: SPREAD points
#          of its front, default 5), all 60,000 images, 20 epochs, 3 seeds, the studies at
#          once and each trial in a process of its own (`harness retrain --trial N`), each cut
#          after RETRAIN_SECONDS (finished runs are kept; a cut step counts as done, with its
#          seconds: `harness retrain --trial N` goes on from the kept runs);
# baseline mnist-20k's seed network (19,290 parameters, its baseline trial) retrained the same
#          way, for comparison on the same device (not selected by the search); only when
#          mnist-20k is in STUDIES;
# results  results/<study>-<device>.md for each study in STUDIES (targets,
#          learning curves, winners exported and verified), and results/<study>-trials.csv, the
#          record of every trial (`harness report --csv`). Runs on any machine holding the
#          studies' databases (the GPU machine's come back as files), with `--device` unused.
# A study whose database is missing while results/<study>-trials.csv exists is restored from
# that record first (`harness restore`), so a search goes on where the last lease stopped even
# when its database did not outlive the checkout (a database is not committed; the record is).
# Default: search, retrain and baseline. Finished steps are skipped when run again
# (runs/results_gpu-steps.tsv, with wall-clock seconds); the device is recorded in
# runs/results_gpu-device.txt by the search step.
set -uo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] && [ -n "$1" ] || { echo "usage: bash benchmarks/results_gpu.sh DATA_ROOT [search] [retrain] [baseline] [results]" >&2; exit 2; }
data=$1
[ -d "$data/MNIST/raw" ] || { echo "results_gpu: $data holds no MNIST/raw folder (harness data import DIR --data-dir $data)" >&2; exit 2; }
shift
todo=("$@")
[ ${#todo[@]} -eq 0 ] && todo=(search retrain baseline)
for s in "${todo[@]}"; do
  case "$s" in search|retrain|baseline|results) ;; *) echo "results_gpu: unknown step '$s' (search, retrain, baseline, results)" >&2; exit 2 ;; esac
done
for n in "${SEARCH_SECONDS:=240}" "${RETRAIN_SECONDS:=240}" "${JOBS:=4}" "${TOP:=2}" "${SPREAD:=5}"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "results_gpu: SEARCH_SECONDS, RETRAIN_SECONDS, JOBS, TOP and SPREAD must be positive integers" >&2; exit 2; }
done
read -r -a studies <<<"${STUDIES:-mnist-20k mnist-3700}"
[ ${#studies[@]} -ge 1 ] || { echo "results_gpu: STUDIES names no study" >&2; exit 2; }
for st in "${studies[@]}"; do
  [ -f "studies/$st.toml" ] || { echo "results_gpu: STUDIES names '$st', but studies/$st.toml does not exist" >&2; exit 2; }
done
device="${DEVICE:-cuda}"
harness=(harness); command -v harness >/dev/null || harness=(python3 -m harness.cli)  # not installed: the checkout
steps=runs/results_gpu-steps.tsv
mkdir -p results
source benchmarks/pipeline_steps.sh  # step NAME COMMAND...: run once, record its seconds (creates $steps)

both() {  # step NAME-<study> COMMAND... for every study in STUDIES at once; the first failure's status
  local name=$1 s pids=() rc=0 p r
  shift
  for s in "${studies[@]}"; do
    step "$name-$s" "$@" "studies/$s.toml" >"runs/results_gpu-$name-$s.txt" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; r=$?; [ $rc -eq 0 ] && rc=$r; done
  for s in "${studies[@]}"; do echo "== $name $s"; tail -n 8 "runs/results_gpu-$name-$s.txt"; done
  return $rc
}
study_mode() {  # STUDY.toml: its mode (single or pareto), from its config
  python3 -c "import sys; from harness.config import load_study_config; print(load_study_config(sys.argv[1]).mode)" "$1"
}
search_until() {  # STUDY.toml: harness run, stopped at the hard limit; that stop is not a failure
  # (a resumed study runs only the trials it lacks: study.n_trials is its total)
  timeout -s INT $((SEARCH_SECONDS + 60)) "${harness[@]}" run --timeout "$SEARCH_SECONDS" \
    --jobs "$JOBS" --quiet --device "$device" --data-dir "$data" "$1"
  local rc=$?
  [ $rc -eq 124 ] && { echo "results_gpu: search stopped at its hard limit ($((SEARCH_SECONDS + 60)) s)"; return 0; }
  return $rc
}
chosen_for_retrain() {  # STUDY.toml: the trial numbers `harness retrain --top TOP` (a Pareto study:
  # --spread SPREAD) would retrain, without the baseline
  python3 - "$1" "$TOP" "$SPREAD" <<'PY'
import sys
from harness.errors import HarnessError
from harness.retrain import select_for_retrain
from harness.study import open_existing_study
try:
    cfg, _, study = open_existing_study(sys.argv[1])
    pareto = cfg.mode == "pareto"
    chosen = select_for_retrain(study, None if pareto else int(sys.argv[2]), include_baseline=False,
                                spread=int(sys.argv[3]) if pareto else None)
except HarnessError as exc:
    sys.exit(f"results_gpu: cannot choose the trials to retrain: {exc}")
print(" ".join(str(t.number) for t in chosen))
PY
}
retrain_until() {  # STUDY.toml: harness retrain of its TOP best (a Pareto study: SPREAD front points),
  # one process per trial, side by side (a small network's steps are launch-bound on a GPU, as in
  # the search), each stopped after RETRAIN_SECONDS (its finished runs are kept)
  local numbers n pids=() rc=0 r p cut=
  numbers=$(chosen_for_retrain "$1") || return 2
  echo "results_gpu: retraining trials $numbers of $1 side by side"
  for n in $numbers; do
    timeout -s INT "$RETRAIN_SECONDS" "${harness[@]}" retrain --trial "$n" --seeds 3 --epochs 20 \
      --device "$device" --data-dir "$data" "$1" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do
    wait "$p"; r=$?
    # cut at RETRAIN_SECONDS (timeout's SIGINT: 124): its finished runs are stored, the results
    # say how many seeds each trial has; not a failure
    [ $r -eq 124 ] && { cut=1; r=0; }
    [ $rc -eq 0 ] && rc=$r
  done
  [ -n "${cut:-}" ] && echo "results_gpu: retrain of $1 cut at RETRAIN_SECONDS ($RETRAIN_SECONDS s); its finished runs are kept"
  return $rc
}
pick_text() {  # STUDY.toml: which trials the retrain step chose, in words
  [ "$(study_mode "$1")" = pareto ] && echo "$SPREAD points of its front" || echo "top $TOP"
}
status=0
for s in "${todo[@]}"; do
  case "$s" in
    search)
      python3 -c "import torch; print(f'{torch.cuda.get_device_name(0)}; torch {torch.__version__}, CUDA {torch.version.cuda}; $(date -u +%Y-%m-%d)')" \
        >runs/results_gpu-device.txt 2>/dev/null || echo "$device" >runs/results_gpu-device.txt
      searched=()
      for st in "${studies[@]}"; do  # a study whose database is gone goes on from its committed trial record
        rm -f "runs/results_gpu-restored-$st.txt"
        db=$(python3 -c "import sys; from harness.config import load_study_config as l; from harness.storage import sqlite_path as p; print(p(l(sys.argv[1]).default_storage()) or '')" "studies/$st.toml")
        if [ -n "$db" ] && [ ! -e "$db" ] && [ -f "results/$st-trials.csv" ]; then
          # a restore that fails leaves that study out: a search from trial 0 would end in a
          # results step writing its record over the committed one
          "${harness[@]}" restore "studies/$st.toml" "results/$st-trials.csv" >"runs/results_gpu-restored-$st.txt" \
            || { status=2; echo "results_gpu: $st left out: its restore failed (above)" >&2; rm -f "runs/results_gpu-restored-$st.txt"; continue; }
          cat "runs/results_gpu-restored-$st.txt"
        fi
        searched+=("$st")
      done
      if [ ${#searched[@]} -gt 0 ]; then
        all=("${studies[@]}"); studies=("${searched[@]}")
        both search search_until || status=$?
        studies=("${all[@]}")
      fi ;;
    retrain)
      both retrain retrain_until || status=$? ;;
    baseline)
      [[ " ${studies[*]} " == *" mnist-20k "* ]] || { echo "results_gpu: baseline: mnist-20k is not in STUDIES; skipped"; continue; }
      step baseline-mnist-20k timeout -s INT "$RETRAIN_SECONDS" "${harness[@]}" retrain --top "$TOP" --seeds 3 \
        --epochs 20 --device "$device" --data-dir "$data" studies/mnist-20k.toml 2>&1 \
        | tee runs/results_gpu-baseline-mnist-20k.txt || status=$? ;;
    results)
      gpu=$(cat runs/results_gpu-device.txt 2>/dev/null || echo "an unrecorded device")
      tag=$(sed 's/;.*//; s/[^A-Za-z0-9]\+/-/g; s/-$//' runs/results_gpu-device.txt 2>/dev/null | tr A-Z a-z)
      sec() { awk -F'\t' -v n="$1" '$1 == n {print $2}' "$steps"; }
      for st in "${studies[@]}"; do
        beside=$(printf '%s\n' "${studies[@]}" | grep -vx "$st" | paste -sd, | sed 's/,/, /g')
        restored=$(head -n 1 "runs/results_gpu-restored-$st.txt" 2>/dev/null | sed 's/ in [^ ]*:/:/')
        "${harness[@]}" results "studies/$st.toml" --out "results/$st-${tag:-gpu}.md" --data-dir "$data" \
          --note "Run on ${gpu}: ${restored:+first ${restored} (the trial record of the leases before, with the device of each trial), then }search $(sec "search-$st") s ($JOBS worker processes on the GPU, stopped from starting trials after ${SEARCH_SECONDS} s${beside:+, next to the search of $beside}), retrain $(sec "retrain-$st") s ($(pick_text "studies/$st.toml"), one process per trial${beside:+, next to the retrain of $beside})$([ "$st" = mnist-20k ] && echo "; the seed baseline's retrain for comparison $(sec baseline-mnist-20k) s"). Command: STUDIES=\"${studies[*]}\" SEARCH_SECONDS=$SEARCH_SECONDS RETRAIN_SECONDS=$RETRAIN_SECONDS JOBS=$JOBS TOP=$TOP SPREAD=$SPREAD bash benchmarks/results_gpu.sh $data; then bash benchmarks/results_gpu.sh $data results" \
          || status=$?
        "${harness[@]}" report "studies/$st.toml" --out "runs/$st-report.html" --csv "results/$st-trials.csv" || status=$?
      done ;;
  esac
done
exit $status
