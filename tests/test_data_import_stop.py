"""`harness data import` stopped by Ctrl-C (SIGINT) or SIGTERM part way: nothing the import made
is left (temporary files, backups, folders it created), and an existing install stays byte for
byte as it was or is fully replaced, never a mix; exit 130 / 143 with "harness: interrupted"."""

from __future__ import annotations

import gzip
import hashlib
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

# The signal is a real one, sent by the process to itself at a chosen point of the import (an
# outside `kill` at a random moment rarely lands in the short window where files are written):
#   write:  right after the second temporary file is created (the first is written whole)
#   backup: right after the second hard link to an existing file is made
#   rename: right after the second file is renamed into place
DRIVER = """
import os, signal, sys
import harness.data
from harness.cli import main

point, signum = sys.argv[1], int(sys.argv[2])
os_ = harness.data.os
calls = []

def hooked(name, real, when):
    def call(*args, **kwargs):
        out = real(*args, **kwargs)
        if when(*args):
            calls.append(name)
            if calls.count(name) == 2:
                os_.kill(os_.getpid(), signum)
        return out
    return call

if point == "write":
    os_.fchmod = hooked("write", os_.fchmod, lambda *a: True)
elif point == "backup":
    os_.link = hooked("backup", os_.link, lambda *a: True)
elif point == "rename":
    os_.replace = hooked("rename", os_.replace, lambda src, dst: not os_.path.basename(dst).startswith("."))
sys.exit(main(sys.argv[3:]))
"""


def _tree(folder: Path) -> dict[str, str | None]:
    """Every file below ``folder`` with its sha256, and every folder (None): what `find` and
    `sha256sum` would list."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
            for p in sorted(folder.rglob("*"))}  # fmt: skip


def _new_content(source: Path) -> dict[str, bytes]:
    return {n: gzip.decompress((source / f"{n}.gz").read_bytes()) for n in NAMES}


def _existing_install(root: Path) -> None:
    """Four stale 'MNIST' files (any bytes) and a file of the user's beside them."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in NAMES:
        (raw / name).write_bytes(b"old " + name.encode())
    (raw / "notes.txt").write_bytes(b"mine")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("target,point", [
    ("fresh", "write"), ("fresh", "rename"),
    ("existing", "write"), ("existing", "backup"), ("existing", "rename"),
])  # fmt: skip
def test_a_stopped_import_leaves_nothing_new_and_never_a_mix(tmp_path, real_mnist_source, target, point, signum):
    root = tmp_path / "data" / "root"  # fresh: neither folder exists yet
    if target == "existing":
        _existing_install(root)
    before = _tree(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, point, str(int(signum)), "data", "import", str(real_mnist_source),
         "--data-dir", str(root)],
        capture_output=True, text=True, timeout=300, cwd=ROOT)  # fmt: skip
    expected_status = {signal.SIGINT: 130, signal.SIGTERM: 143}[signum]
    assert proc.returncode == expected_status, (proc.returncode, proc.stderr)
    assert proc.stderr.strip().splitlines() == ["harness: interrupted"], proc.stderr
    after = _tree(tmp_path)
    if point != "rename":  # stopped before any file was put in place: exactly as before, nothing new
        assert after == before
        return
    # stopped between the renames: they are finished first (all four new files: the stop waits
    # them out, as the README says), no backup or temporary file left, never some old beside
    # some new, and not rolled back either
    raw = "data/root/MNIST/raw"
    new = {f"{raw}/{n}": hashlib.sha256(data).hexdigest() for n, data in _new_content(real_mnist_source).items()}
    folders = {f: None for f in ("data", "data/root", "data/root/MNIST", raw)}
    assert after == {**before, **folders, **new}, sorted(
        (k, "same" if before.get(k) == v else "new" if new.get(k) == v else "other") for k, v in after.items())


def test_an_import_that_is_not_stopped_still_installs_over_an_old_one(tmp_path, real_mnist_source):
    """The same driver with no signal sent: the import replaces every file, keeps the user's file."""
    root = tmp_path / "root"
    _existing_install(root)
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, "none", "0", "data", "import", str(real_mnist_source), "--data-dir", str(root)],
        capture_output=True, text=True, timeout=300, cwd=ROOT)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    raw = root / "MNIST" / "raw"
    assert {p.name: p.read_bytes() for p in raw.iterdir()} == {**_new_content(real_mnist_source), "notes.txt": b"mine"}
