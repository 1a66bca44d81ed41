"""studies/smoke.toml on the real MNIST, then what users do with it: export, report, dashboard.

The dashboard is the real optuna-dashboard server on a free local port, queried over HTTP
and opened in headless Chromium (Debian's chromium; .ci/run installs it).
"""

from __future__ import annotations

import json
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _harness(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)  # fmt: skip


@pytest.fixture(scope="module")
def smoke_dir(real_mnist_root, tmp_path_factory) -> Path:
    """A copy of studies/smoke.toml that has been run once (smoke.db + smoke.artifacts beside it)."""
    folder = tmp_path_factory.mktemp("smoke-outputs")
    shutil.copy(ROOT / "studies" / "smoke.toml", folder / "smoke.toml")
    proc = _harness("run", "smoke.toml", "--data-dir", str(real_mnist_root), "--device", "cpu", "--quiet",
                    cwd=folder)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return folder


@pytest.mark.slow
def test_smoke_export_all_formats_verified(smoke_dir, real_mnist_root):
    db = {p.name: p.read_bytes() for p in smoke_dir.glob("smoke.db*")}
    proc = _harness("export", "smoke.toml", "--best", "--out", "exported", "--data-dir", str(real_mnist_root),
                    cwd=smoke_dir)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {p.name: p.read_bytes() for p in smoke_dir.glob("smoke.db*")} == db  # export only reads the study
    (card_path,) = (smoke_dir / "exported").glob("smoke-trial*.json")
    card = json.loads(card_path.read_text())
    assert card["test_images"] == 2000  # the smoke study scores 2,000 test images
    assert card["eager_check"]["passed"] and card["eager_check"]["recorded_images"] == 2000
    for fmt in ("pt2", "onnx"):
        v = card["verification"][fmt]
        assert v["passed"] and v["images"] == 10_000
        assert (smoke_dir / "exported" / card["files"][fmt]["path"]).stat().st_size > 10_000
    assert card["verification"]["pt2"]["predictions_differing_from_pytorch"] == 0
    assert proc.stdout.count("-> OK") == 3


@pytest.mark.slow
def test_smoke_report(smoke_dir):
    proc = _harness("report", "smoke.toml", "--out", "report.html", "--csv", "trials.csv", cwd=smoke_dir)
    assert proc.returncode == 0, proc.stderr
    page = (smoke_dir / "report.html").read_text()
    assert page.count('class="plotly-graph-div"') >= 5  # accuracy, Pareto, history, intermediate, importances
    assert "rejected over budget (not trained)" in page
    lines = (smoke_dir / "trials.csv").read_text().splitlines()
    assert len(lines) == 1 + 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(method: str, url: str, body: dict | None) -> int:
    """The HTTP status of a ``method`` request with a JSON ``body``."""
    import urllib.error
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def _png_size_and_colours(path: Path) -> tuple[int, int, int]:
    """(width, height, distinct byte values in the pixel data): enough to tell a blank page."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    idat, pos = b"", 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    return width, height, len(set(zlib.decompress(idat)))


@pytest.mark.slow
def test_dashboard_api_and_browser(smoke_dir, tmp_path):
    from harness.browser import rendered_dom, screenshot

    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "dashboard", "smoke.toml", "--port", str(port)],
        cwd=smoke_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(150):
            try:
                studies = _get_json(f"{base}/api/studies")
                break
            except OSError:
                assert server.poll() is None, server.stdout.read()
                time.sleep(0.2)
        else:
            pytest.fail("dashboard did not answer within 30 s")
        (summary,) = studies["study_summaries"]
        assert summary["study_name"] == "smoke"
        study = _get_json(f"{base}/api/studies/{summary['study_id']}")
        assert len(study["trials"]) == 6
        by_number = {t["number"]: t for t in study["trials"]}
        baseline = by_number[0]
        attrs = {a["key"]: a["value"] for a in baseline["user_attrs"]}
        assert attrs["baseline"] == "True" and attrs["trainable_params"] == "19290"
        assert "params" not in attrs  # no user attribute named like Optuna's own (hyper)parameters
        assert attrs["params_over_budget"] == str(19290 - 20000)  # the budget constraint, visible
        assert {"test_acc", "target_met", "val_acc"} <= set(attrs)
        for t in study["trials"]:
            names = [a["filename"] for a in t["artifacts"]]
            assert names == ([f"trial-{t['number']}-weights.pt"] if t["state"] == "Complete" else []), t["number"]
        # What the harness attaches: the summary note, the figure, a note on each rejection.
        assert "harness: budget and target" in study["note"]["body"] and "budget 20,000 params" in study["note"]["body"]
        (figure,) = [g for g in study["plotly_graph_objects"] if g["id"] == "accuracy-vs-parameters"]
        fig = json.loads(figure["graph_object"])
        names = {trace.get("name") for trace in fig["data"]}
        assert {"baseline (seed network)", "rejected over budget (not trained)"} <= names, names
        assert fig["layout"]["title"]["text"].startswith("Accuracy against parameter count")
        rejected = [t for t in study["trials"] if any(a["key"] == "rejected" for a in t["user_attrs"])]
        assert rejected and all(t["note"]["body"].startswith("**Rejected before training**: ") for t in rejected)
        trained = [t for t in study["trials"] if t not in rejected]
        assert all(not t["note"]["body"] for t in trained)

        page = f"{base}/dashboard/studies/{summary['study_id']}/trials"
        dom = rendered_dom(page, wait_ms=10_000)
        assert "smoke" in dom and "trial-0-weights.pt" in dom and "19290" in dom
        png = screenshot(page, tmp_path / "dashboard.png", 1400, 1000, wait_ms=10_000)
        width, height, colours = _png_size_and_colours(png)
        assert (width, height) == (1400, 1000) and colours > 50  # a rendered page, not a blank one
        home = f"{base}/dashboard/studies/{summary['study_id']}"
        dom = rendered_dom(home, wait_ms=10_000)  # the study page draws the attached figure
        assert 'id="user-defined-plot:accuracy-vs-parameters"' in dom and "Accuracy against parameter count" in dom
        assert "budget 20,000" in dom and "baseline (seed network)" in dom
        png = screenshot(home, tmp_path / "dashboard-study.png", 1400, 1400, wait_ms=10_000)
        assert _png_size_and_colours(png)[2] > 50
        dom = rendered_dom(f"{home}/note", wait_ms=10_000)  # the study note, rendered from markdown
        assert "harness: budget and target" in dom and "rejected over budget" in dom

        # Read-only: the dashboard's own delete and edit calls change nothing, byte for byte.
        before = {str(p.relative_to(smoke_dir)): p.read_bytes() for p in sorted(smoke_dir.rglob("*")) if p.is_file()}
        artifact = baseline["artifacts"][0]["artifact_id"]
        sid, tid = summary["study_id"], baseline["trial_id"]
        for method, path, body in [
            ("DELETE", f"/api/artifacts/{sid}/{tid}/{artifact}", None),
            ("PUT", f"/api/studies/{sid}/note", {"version": study["note"]["version"] + 1, "body": "edited"}),
            ("PUT", f"/api/studies/{sid}/{tid}/note", {"version": baseline["note"]["version"] + 1, "body": "edited"}),
            ("DELETE", f"/api/studies/{sid}", {"remove_associated_artifacts": False}),  # the database alone
            ("DELETE", f"/api/studies/{sid}", {"remove_associated_artifacts": True}),
        ]:
            status = _request(method, base + path, body)
            assert status == 403, (method, path, status)  # refused as forbidden, not a server error
        after = {str(p.relative_to(smoke_dir)): p.read_bytes() for p in sorted(smoke_dir.rglob("*")) if p.is_file()}
        assert after == before
        assert len(_get_json(f"{base}/api/studies/{sid}")["trials"]) == 6  # and it still serves the study
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert "Traceback" not in server.stdout.read()  # the refused writes were answered, not crashed on
