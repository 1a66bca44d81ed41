#!/usr/bin/env bash
# Before a GPU lease (the device tool, issue 12): what the lease machine lacks, into ignored
# folders of this checkout that the device call carries.
#   bash scripts/gpu_lease_prepare.sh [MNIST_DIR]     (default ../shared/data/mnist)
# .whl/      wheels of the packages the device's Python 3.12 lacks (its torch, numpy, pandas,
#            onnx, onnxruntime, tqdm and pytest are there), at the versions installed here;
#            greenlet, which sqlalchemy needs there, at a lease's version where not here;
#            pip reads them from this machine's package index, no internet needed where it
#            is a local mirror
# .mnistgz/  the four MNIST *-ubyte.gz files (the device reaches no network)
# Then one device call: carry [".whl", ".mnistgz"], command `bash benchmarks/gpu_lease.sh`.
# Nothing here is committed (.gitignore: *.whl, *-ubyte.gz); a new checkout prepares again.
set -euo pipefail
cd "$(dirname "$0")/.."
mnist=${1:-../shared/data/mnist}
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  [ -f "$mnist/$f.gz" ] || { echo "gpu_lease_prepare: $mnist/$f.gz not found" >&2; exit 2; }
done
mkdir -p .mnistgz .whl
cp "$mnist"/*-ubyte.gz .mnistgz/
pkgs=()
# the version installed here (what the tests here ran with), else the one a lease ran with
for pin in optuna==5.0.0 alembic==1.20.1 sqlalchemy==2.1.9 greenlet==3.5.6 mako==1.4.3 colorlog==6.12.0 \
           plotly==7.1.0 optuna-dashboard==0.21.0 bottle==0.13.4 typing_extensions==4.16.0; do
  p=${pin%%==*}
  v=$(python3 -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$p" 2>/dev/null) || v=${pin#*==}
  pkgs+=("$p==$v")
done
rm -f .whl/*.whl  # one version of each: two stop the install there
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d .whl "${pkgs[@]}" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
ls .whl
du -sh .whl .mnistgz
