"""Make the pictures in docs/: a real smoke study, its report and its dashboard, in headless Chromium.

    python docs/make_pictures.py --data-dir .data [--study studies/smoke.toml]

Runs the study in a temporary folder (real training on the real MNIST files), writes its
report, starts ``harness dashboard`` on a free port, and saves ``docs/report.png``,
``docs/dashboard.png`` (study overview) and ``docs/dashboard-trial.png`` (the baseline
trial: user attributes and the weights artifact).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.browser import screenshot  # noqa: E402


def _harness(*args: str, cwd: Path) -> None:
    subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=cwd, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True, help="MNIST root (torchvision layout)")
    ap.add_argument("--study", default=str(ROOT / "studies" / "smoke.toml"))
    ap.add_argument("--out", default=str(ROOT / "docs"))
    args = ap.parse_args()
    out = Path(args.out).resolve()
    data = str(Path(args.data_dir).resolve())
    with tempfile.TemporaryDirectory(prefix="harness-pictures-") as tmp:
        work = Path(tmp)
        study = work / Path(args.study).name
        shutil.copy(args.study, study)
        _harness("run", study.name, "--data-dir", data, "--device", "cpu", "--quiet", cwd=work)
        _harness("report", study.name, "--out", "report.html", "--csv", "trials.csv", cwd=work)
        screenshot((work / "report.html").as_uri(), out / "report.png", 1400, 2300, wait_ms=8000)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen([sys.executable, "-m", "harness.cli", "dashboard", study.name, "--port", str(port)],
                                  cwd=work)  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(150):
                try:
                    urllib.request.urlopen(f"{base}/api/studies", timeout=5).read()
                    break
                except OSError:
                    time.sleep(0.2)
            screenshot(f"{base}/dashboard/studies/1", out / "dashboard.png", 1400, 900, wait_ms=10_000)
            screenshot(f"{base}/dashboard/studies/1/trials", out / "dashboard-trial.png", 1400, 1100, wait_ms=10_000)
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"wrote {out / 'report.png'}, {out / 'dashboard.png'}, {out / 'dashboard-trial.png'}")


if __name__ == "__main__":
    main()
