"""Shared fixtures: tiny synthetic MNIST in IDX format, and the real files from ../shared."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_MNIST = ROOT.parent / "shared" / "data" / "mnist"


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file's bytes and every folder (None) below ``folder``: what "nothing written" is
    checked against (an empty folder made counts too)."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def write_idx_images(path: Path, images: np.ndarray) -> None:
    """IDX3 file (magic 2051), big-endian header, uint8 pixels."""
    n, h, w = images.shape
    path.write_bytes(struct.pack(">IIII", 2051, n, h, w) + images.astype(np.uint8).tobytes())


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    """IDX1 file (magic 2049)."""
    path.write_bytes(struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes())


def make_synthetic_mnist(root: Path, n_train: int = 600, n_test: int = 200, seed: int = 0) -> Path:
    """Write a learnable toy MNIST under ``root/MNIST/raw``: class k is a bright bar at row 2k+4.

    Returns ``root`` (what torchvision and the harness take as the data root).
    """
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        images = rng.integers(0, 40, size=(n, 28, 28))
        for i, k in enumerate(labels):
            images[i, 2 * k + 4 : 2 * k + 6, 4:24] = 255
        write_idx_images(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx_labels(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


@pytest.fixture
def synthetic_root(tmp_path: Path) -> Path:
    return make_synthetic_mnist(tmp_path / "data")


@pytest.fixture(scope="session")
def real_mnist_source() -> Path:
    """The folder holding the four real *-ubyte.gz files (../shared/data/mnist)."""
    if not all((SHARED_MNIST / f"{n}.gz").is_file() for n in _names()):
        if os.environ.get("CI"):
            pytest.fail(f"real MNIST files missing at {SHARED_MNIST} (CI must have them)")
        pytest.skip(f"real MNIST files not found at {SHARED_MNIST}")
    return SHARED_MNIST


@pytest.fixture(scope="session")
def real_mnist_root(real_mnist_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root with the real MNIST installed through `harness data import` logic."""
    from harness.data import import_mnist

    root = tmp_path_factory.mktemp("mnist-root")
    import_mnist(real_mnist_source, root)
    return root


def _names():
    from harness.data import MNIST_FILES

    return list(MNIST_FILES)
