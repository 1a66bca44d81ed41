#!/usr/bin/env bash
# One GPU lease's work for issue 12, as the device tool's one command (after
# scripts/gpu_lease_prepare.sh here; carry [".whl", ".mnistgz"]):
#   bash benchmarks/gpu_lease.sh
# Installs the carried wheels into /tmp/site, imports MNIST into .data, runs the `gpu` tests in
# the background beside benchmarks/results_gpu.sh's search and retrain of STUDIES (default
# mnist-pareto), then its results step, and packs runs/, results/, the study databases and
# their artifacts into $OUT/lease.tgz (back here: tar xzf it in the checkout; the results
# files are committed, the databases stay ignored). Each results_gpu.sh variable passes
# through (SEARCH_SECONDS, RETRAIN_SECONDS, JOBS, SPREAD, TOP, STUDIES). A study database
# lives only as long as this checkout, but the trial record results/<study>-trials.csv is
# committed: a study whose database is gone is restored from it (`harness restore`) and its
# search goes on from there. Retrains are not in that record: a lease retrains what it reports.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:?"gpu_lease: OUT (the device tool's output folder) is not set"}
ls .whl/*.whl >/dev/null 2>&1 && [ -d .mnistgz ] || { echo "gpu_lease: run scripts/gpu_lease_prepare.sh first and carry .whl and .mnistgz" >&2; exit 2; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PATH=/tmp/site/bin:$PATH
# defaults sized for one device call (600 s at most): search <= 200 + 60 s (mnist-pareto's last
# 17 trials after its restore: about 200 s with 4 processes at lease 5's pace), retrain <= 220 s
# (5 front points side by side, 3 seeds each), then the results (exports verified) and the
# install before them
export STUDIES=${STUDIES:-mnist-pareto} SEARCH_SECONDS=${SEARCH_SECONDS:-200} RETRAIN_SECONDS=${RETRAIN_SECONDS:-220}
python3 -m harness.cli data import .mnistgz --data-dir .data || exit
mkdir -p runs results
start=$(date +%s)
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; python3 -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"; lscpu | grep 'Model name'; nproc; } >runs/gpu_lease-machine.txt 2>&1
( python3 -m pytest -m gpu -q -rA -W always::DeprecationWarning tests/test_gpu.py >runs/gpu_lease-tests.txt 2>&1
  echo "exit status $?" >>runs/gpu_lease-tests.txt ) &
tests=$!
bash benchmarks/results_gpu.sh .data search retrain; status=$?
wait "$tests"
bash benchmarks/results_gpu.sh .data results || status=$?
echo "gpu_lease: $(( $(date +%s) - start )) s after the data import; exit status $status" | tee -a runs/gpu_lease-machine.txt
tail -n 3 runs/gpu_lease-tests.txt
shopt -s nullglob
tar czf "$out/lease.tgz" runs results studies/*.db studies/*.artifacts
exit $status
