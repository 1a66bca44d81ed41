# Sourced by the results pipelines (benchmarks/results_cpu.sh, results_3700_cpu.sh,
# results_20k_cpu.sh, one script per later CPU stage, results_{3700,20k}_<stage>_cpu.sh, and
# results_gpu.sh): resumable steps.
# Set `steps` to a TSV file first; `step NAME COMMAND...` runs COMMAND once and records NAME,
# its wall-clock seconds and the time it finished, so a re-run skips it. A failed COMMAND is
# not recorded, and step returns its status. While COMMAND runs, its seconds so far are appended
# to "$steps.partial" every STEP_TICK seconds (default 30; NAME, start time, seconds), so a run
# that was stopped (Ctrl-C, a killed session, a failure) still counts: the seconds recorded
# when the step finishes add the last tick of each earlier run of it not yet recorded (a
# "recorded" line closes them, so a step redone after its row is deleted starts afresh).
mkdir -p "$(dirname "$steps")"
touch "$steps"

step() {
  local name=$1 t0 ticker rc=0 earlier
  shift
  if cut -f1 "$steps" | grep -qx "$name"; then
    echo "$(basename "$0" .sh): step '$name' already done, skipped"
    return
  fi
  [[ ${STEP_TICK:-30} =~ ^[1-9][0-9]*$ ]] || { echo "$(basename "$0" .sh): STEP_TICK must be a whole number of seconds >= 1, not '$STEP_TICK'" >&2; return 2; }
  t0=$(date +%s)
  # The ticker ends with the step, or within a tick of the death of the shell running it. Its
  # output goes nowhere: a pipe from the step (step ... | tee) must close when the step ends,
  # not when the ticker's last sleep does.
  local shell_pid=$BASHPID
  ( while sleep "${STEP_TICK:-30}" && kill -0 "$shell_pid" 2>/dev/null; do
      printf '%s\t%s\t%s\n' "$name" "$t0" "$(($(date +%s) - t0))" >>"$steps.partial"
    done ) >/dev/null 2>&1 &
  ticker=$!
  "$@" || rc=$?  # not a bare "$@": under set -e a failure would leave the ticker running
  kill "$ticker" 2>/dev/null || true  # it may have ended already (a failed write)
  wait "$ticker" 2>/dev/null || true  # its status is the SIGTERM (143): not the step's
  [ "$rc" -eq 0 ] || return "$rc"
  earlier=$(awk -F'\t' -v n="$name" -v t="$t0" '$1 != n {next} $3 == "recorded" {split("", last); next}
    $2 != t && $3 + 0 > last[$2] {last[$2] = $3 + 0} END {for (r in last) s += last[r]; print s + 0}' \
    "$steps.partial" 2>/dev/null || echo 0)
  printf '%s\t%s\t%s\n' "$name" "$(($(date +%s) - t0 + earlier))" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >>"$steps"
  printf '%s\t%s\trecorded\n' "$name" "$t0" >>"$steps.partial"
}

# recipe_pipeline DATA_ROOT STUDY.toml RESULTS.md CONTEXT [WHAT]: a recipe stage (see above), or
# any one-study stage (WHAT names its search in the note; default "Recipe search"): search the
# study until its timeout, retrain its validation winner (top 1: no selection on the test set;
# 20 epochs, all 60,000 images, 3 seeds), write RESULTS.md with the wall-clock time of both
# steps (an interrupted run's seconds included, see step), and the study's HTML report and
# trials CSV under runs/. A search with a timeout interrupted and run again runs a full
# timeout again.
recipe_pipeline() {
  local data=$1 study=$2 out=$3 context=$4 what=${5:-Recipe search} name cpu
  name=$(basename "$study" .toml)
  step search harness run "$study" --data-dir "$data" --device cpu --quiet
  step retrain harness retrain "$study" --top 1 --seeds 3 --epochs 20 --no-baseline --data-dir "$data" --device cpu
  cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
  harness results "$study" --out "$out" --data-dir "$data" \
    --note "$what + retrain wall clock: $(step_minutes search retrain) min on a $(nproc)-core ${cpu:-CPU} (search $(step_minutes search) min, retrain $(step_minutes retrain) min), $context. Command: bash benchmarks/$(basename "$0") .data"
  harness report "$study" --out "runs/$name-report.html" --csv "runs/$name-trials.csv"
}

# step_minutes NAME...: the recorded seconds of the named steps together, in whole minutes (rounded)
step_minutes() { awk -F'\t' -v names=" $* " 'index(names, " " $1 " ") {s += $2} END {printf "%d\n", s / 60 + 0.5}' "$steps"; }
