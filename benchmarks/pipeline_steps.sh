# Sourced by the results pipelines (results_cpu.sh, results_3700_cpu.sh): resumable steps.
# Set `steps` to a TSV file first; `step NAME COMMAND...` runs COMMAND once and records NAME,
# its wall-clock seconds and the time it finished, so a re-run skips it. A failed COMMAND is
# not recorded, and step returns its status.
step() {
  local name=$1 t0
  shift
  if cut -f1 "$steps" | grep -qx "$name"; then
    echo "$(basename "$0" .sh): step '$name' already done, skipped"
    return
  fi
  t0=$(date +%s)
  "$@" || return $?
  printf '%s\t%s\t%s\n' "$name" "$(($(date +%s) - t0))" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >>"$steps"
}
