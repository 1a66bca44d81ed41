#!/usr/bin/env bash
# Everything a fresh machine needs, installed only when missing (quiet when all is there).
#   bash scripts/setup.sh          the harness: a torch + torchvision pair that import together,
#                                  then this package (editable) with its dependencies
#   bash scripts/setup.sh --test   also what the tests use for real: a PostgreSQL server and
#                                  headless Chromium (Debian packages), and the test extras
# The README's two commands start with it; .ci/run runs the README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  "") extras="" ;;
  --test) extras="[test]" ;;
  *) echo "usage: bash scripts/setup.sh [--test]" >&2; exit 2 ;;
esac
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

# torchvision's Linux wheels on PyPI are built against the CUDA build of the same torch
# release (that build runs on a CPU too). A CPU-only torch makes `import torchvision` fail,
# so pin a matching pair when the machine has none that imports.
if ! python3 -c "import torchvision" 2>/dev/null; then
  echo "setup: installing torch 2.14.1 + torchvision 0.29.1"
  python3 -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
fi

if [ -n "$extras" ]; then
  # The multi-worker tests start a throwaway PostgreSQL server; the dashboard test drives
  # headless Chromium.
  need=()
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
  if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${need[*]}"
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo -n)
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq && "${sudo[@]}" apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi

# This checkout, installed editable with its dependencies, unless it already is.
if ! python3 - "$extras" <<'PY' 2>/dev/null
import importlib, pathlib, shutil, sys
import harness
assert pathlib.Path(harness.__file__).resolve().parent.parent == pathlib.Path.cwd().resolve()
assert shutil.which("harness")
mods = ["optuna", "sqlalchemy", "pandas", "plotly", "tqdm", "optuna_dashboard", "onnx", "onnxscript", "onnxruntime"]
if sys.argv[1]:
    mods += ["pytest", "psycopg2"]
for m in mods:
    importlib.import_module(m)
PY
then
  echo "setup: installing the harness from $(pwd) (pip install -e \".$extras\")"
  python3 -m pip install -q -e ".$extras"
fi
