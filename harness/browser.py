"""Headless Chromium, for pictures of reports and dashboards (docs, browser tests).

Uses the ``chromium`` binary (Debian packages ``chromium`` and ``chromium-driver``) in
headless mode with a virtual-time budget, so pages that render from JavaScript (plotly,
optuna-dashboard's React app fetching its API) are finished before the capture.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from harness.errors import HarnessError

__all__ = ["chromium_binary", "rendered_dom", "screenshot"]

_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_binary() -> str:
    """Path of a Chromium/Chrome binary ($HARNESS_CHROMIUM first). Raises HarnessError if none."""
    for name in (os.environ.get("HARNESS_CHROMIUM", ""), *_CANDIDATES):
        if name and (found := shutil.which(name)):
            return found
    raise HarnessError("no Chromium found: install Debian's chromium (apt-get install chromium) or set $HARNESS_CHROMIUM")


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="harness-chromium-") as profile:
        cmd = [
            chromium_binary(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={profile}", *args,
        ]  # fmt: skip
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def screenshot(url: str, png: Path, width: int = 1400, height: int = 900, wait_ms: int = 8000) -> Path:
    """Render ``url`` for ``wait_ms`` of virtual time and save a ``width`` x ``height`` PNG."""
    png = Path(png).resolve()
    proc = _run([f"--window-size={width},{height}", f"--virtual-time-budget={wait_ms}", f"--screenshot={png}", url],
                timeout=60 + wait_ms / 1000)  # fmt: skip
    if not png.is_file():
        raise HarnessError(f"chromium wrote no screenshot of {url}: {proc.stderr.strip().splitlines()[-1:]}")
    return png


def rendered_dom(url: str, wait_ms: int = 8000) -> str:
    """The page's DOM (HTML) after ``wait_ms`` of virtual time, JavaScript applied."""
    proc = _run([f"--virtual-time-budget={wait_ms}", "--dump-dom", url], timeout=60 + wait_ms / 1000)
    return proc.stdout
