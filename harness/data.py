"""MNIST: import without internet, load once per process, keep on the training device.

Layout is torchvision's: ``ROOT/MNIST/raw/<name>`` holds the four *uncompressed* IDX files,
which is where ``torchvision.datasets.MNIST(ROOT)`` looks and why it then skips downloading.

The split is fixed and seeded by construction: validation = the LAST ``val_size`` of the 60,000
training images (the search selects on it), training = the images before it, test = the 10,000
test images (scored for the record only).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import secrets
import shutil
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.errors import DataError, one_line
from harness.runner import interrupts_held

__all__ = ["MNIST_FILES", "MnistSplits", "check_mnist_files", "import_mnist", "load_mnist", "load_splits", "raw_folder"]

#: Canonical md5 of each *uncompressed* MNIST file (LeCun et al.; torchvision uses the same).
MNIST_FILES = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

#: What `harness data import DIR` takes, for its messages.
_ACCEPTED = "each as the downloaded *-ubyte.gz or the uncompressed *-ubyte"

_HOWTO = (
    "import the four *-ubyte.gz files with `harness data import DIR`, "
    "or let torchvision download them (data.download = true in the study file, for every command; or "
    "`harness run --download`)"
)


def raw_folder(root: str | os.PathLike[str]) -> Path:
    """Where torchvision keeps the uncompressed MNIST files under ``root``."""
    return Path(root) / "MNIST" / "raw"


def _idx_count(path: Path, magic: int, dims: int) -> int:
    """Items in an IDX file after checking its header and its size; DataError naming it."""
    try:
        with open(path, "rb") as f:
            header = f.read(4 + 4 * dims)
            size = os.fstat(f.fileno()).st_size
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(header) < 4 + 4 * dims or struct.unpack(">I", header[:4])[0] != magic:
        raise DataError(f"{path}: not an MNIST IDX file (bad header; expected magic {magic})")
    shape = struct.unpack(f">{dims}I", header[4:])
    if dims == 3 and shape[1:] != (28, 28):
        raise DataError(f"{path}: images are {shape[1]}x{shape[2]}, expected 28x28")
    expected = len(header) + shape[0] * (784 if dims == 3 else 1)
    if size != expected:
        raise DataError(f"{path}: {size} bytes, but its header promises {expected} ({shape[0]} items); truncated?")
    return shape[0]


def check_mnist_files(root: str | os.PathLike[str]) -> dict[str, int]:
    """Check the four IDX files under ``root`` without loading the images: headers, sizes,
    matching image and label counts, labels 0-9. Cheap enough to run before a study exists.
    Returns the image counts: {"train": ..., "t10k": ...}.

    Raises:
        DataError: a file is missing or malformed (the message names it).
    """
    raw = raw_folder(root)
    missing = [n for n in MNIST_FILES if not (raw / n).is_file()]
    if missing:
        raise DataError(f"MNIST not found: {raw} lacks {', '.join(missing)}; {_HOWTO}")
    counts = {}
    for split in ("train", "t10k"):
        images, labels = raw / f"{split}-images-idx3-ubyte", raw / f"{split}-labels-idx1-ubyte"
        n_images, n_labels = _idx_count(images, 2051, 3), _idx_count(labels, 2049, 1)
        if n_images != n_labels:
            raise DataError(f"{images}: {n_images} images but {labels.name} has {n_labels} labels")
        top = max(labels.read_bytes()[8:], default=0)
        if top > 9:
            raise DataError(f"{labels}: holds label {top}; MNIST labels are 0-9")
        counts[split] = n_images
    return counts


def _read_gz(path: Path) -> bytes:
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise DataError(f"{path}: not a readable gzip file ({exc.__class__.__name__}: {exc})") from None


def import_mnist(source: str | os.PathLike[str], root: str | os.PathLike[str]) -> Path:
    """Check the four MNIST files in ``source`` and install them under ``root``.

    ``source`` holds ``<name>.gz`` (or the uncompressed ``<name>``) for each of the four files
    (the .gz where both are). Every file is decompressed and checked against its canonical md5
    before anything is written; files are then written atomically, so a failure leaves ``root``
    as it was. So does a stop (Ctrl-C; SIGTERM where the caller turns it into a KeyboardInterrupt,
    as the CLI does) part way: what the import wrote (temporary files, backups, the folders it
    made) is removed. The final renames are held against a stop (they take moments): an earlier
    install is left byte for byte or fully replaced, never a mix.

    Returns:
        The raw folder the files were installed in.

    Raises:
        DataError: a file is missing, not valid gzip, truncated or fails its checksum.
        KeyboardInterrupt: stopped (re-raised once the clean-up is done).
    """
    src = Path(source)
    if not src.is_dir():
        raise DataError(f"{src}: not a folder (expected the four MNIST files in it, {_ACCEPTED})")
    contents: dict[str, bytes] = {}
    for name, md5 in MNIST_FILES.items():
        gz, plain = src / f"{name}.gz", src / name
        if gz.is_file():
            data = _read_gz(gz)
            shown = gz
        elif plain.is_file():
            data, shown = plain.read_bytes(), plain
        else:
            raise DataError(f"{src}: missing {name}.gz or {name} (MNIST needs all four files, {_ACCEPTED})")
        digest = hashlib.md5(data).hexdigest()
        if digest != md5:
            raise DataError(f"{shown}: checksum mismatch (md5 of content {digest}, expected {md5}); file corrupted?")
        contents[name] = data
    dest = raw_folder(root)
    for name in contents:  # checked before anything is written: such a target would fail its rename half way
        if (dest / name).exists() and not (dest / name).is_file():
            raise DataError(f"{dest / name}: exists and is not a file; nothing was imported")
    created = _missing_parents(dest)
    temps: dict[str, str] = {}
    backups: dict[str, str] = {}  # name -> a hard link to the file it replaces
    replaced: list[str] = []
    installed = False
    mask = os.umask(0o022)
    os.umask(mask)  # read the umask: mkstemp's files are 0600, installed data is not private
    try:
        dest.mkdir(parents=True, exist_ok=True)
        # All four written beside their targets first, then renamed: a failed write (disk full)
        # or a stop replaces nothing and leaves no temporary file behind. A failed rename (a
        # permission on one target) puts back the files already replaced, from hard links made first.
        for name, data in contents.items():
            with interrupts_held():  # the file made and its name recorded together: a stop never leaves one unknown
                fd, temps[name] = tempfile.mkstemp(dir=dest, prefix=f".{name}.")
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o666 & ~mask)
                f.write(data)
        for name in contents:
            if (dest / name).exists():
                backups[name] = str(dest / f".{name}.old.{secrets.token_hex(6)}")
                try:
                    os.link(dest / name, backups[name])
                except OSError:  # no hard links here (vfat, some network mounts): a copy
                    shutil.copy2(dest / name, backups[name])
        with interrupts_held():  # renames and unlinks only: a stop waits until all four are in place
            for name, tmp in temps.items():
                os.replace(tmp, dest / name)
                replaced.append(name)
            installed = True
            for backup in backups.values():
                with contextlib.suppress(OSError):  # a backup left over is no reason to fail the import
                    Path(backup).unlink(missing_ok=True)
    except BaseException as exc:  # OSError, or a stop (KeyboardInterrupt)
        if installed:  # a stop held during the renames, raised once they were done: all four are new
            raise
        with interrupts_held():  # a second Ctrl-C (no handler of the CLI's) must not cut the clean-up short
            stuck = []  # replaced files that could not be put back: their old content stays in the backup
            for name in reversed(replaced):  # undo, newest first
                try:
                    if name in backups:
                        os.replace(backups[name], dest / name)
                        del backups[name]
                    else:
                        (dest / name).unlink()
                except OSError:
                    stuck.append(name)
            for tmp in [*temps.values(), *(b for n, b in backups.items() if n not in stuck)]:
                with contextlib.suppress(OSError):
                    Path(tmp).unlink(missing_ok=True)
            _remove_if_empty(created)
        if not isinstance(exc, OSError):
            raise
        outcome = ("nothing was imported" if not stuck else "could not put back " + ", ".join(
            f"{n} (old content in {Path(backups[n]).name})" if n in backups else n for n in stuck))  # fmt: skip
        raise DataError(f"{dest}: cannot write MNIST files ({exc.strerror or exc}); {outcome}") from None
    return dest


def _download(root: Path) -> None:
    """Fetch MNIST through torchvision into a temporary folder beside ``root`` and move the files
    into ``root``'s raw folder only once all four arrived: a failed download (offline) leaves
    nothing behind and never touches files another process put there meanwhile."""
    from torchvision.datasets import MNIST

    anchor = next(p for p in [root, *root.parents] if p.exists())  # same filesystem: renames work
    try:
        tmp = Path(tempfile.mkdtemp(dir=anchor, prefix=".mnist-download-"))
    except OSError as exc:  # e.g. the data root is a file, or not writable
        raise DataError(f"{root}: cannot download MNIST there ({exc.strerror or exc})") from None
    try:
        MNIST(str(tmp), train=True, download=True)
        MNIST(str(tmp), train=False, download=True)
        raw = raw_folder(root)
        raw.mkdir(parents=True, exist_ok=True)
        for f in raw_folder(tmp).iterdir():
            os.replace(f, raw / f.name)
    except Exception as exc:  # URLError, RuntimeError ("Error downloading ..."), OSError
        text = one_line(exc)
        raise DataError(f"cannot download MNIST into {raw_folder(root)} ({exc.__class__.__name__}: {text}); "
                        "offline? import the four *-ubyte.gz files with `harness data import DIR`") from None  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _missing_parents(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    for p in [folder, *folder.parents]:
        if p.exists():
            break
        missing.append(p)
    return missing


def _remove_if_empty(folders: list[Path]) -> None:
    """Undo folders this process created (deepest first), where nothing was put in them; one not
    made yet (stopped part way through making them) is passed over."""
    for p in folders:
        try:
            p.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            return


# One copy of the raw uint8 tensors per (root, download) per process: loaded once, shared by
# every trial (and every device copy below is made once per device).
_CPU_CACHE: dict[Path, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def load_mnist(root: str | os.PathLike[str], download: bool = False):
    """(train_x, train_y, test_x, test_y) as uint8 (N, 28, 28) images and int64 labels, on CPU.

    Raises:
        DataError: the files are missing (and download is off or failed) or unreadable.
    """
    root = Path(root).expanduser().resolve()
    if root in _CPU_CACHE:
        return _CPU_CACHE[root]
    raw = raw_folder(root)
    missing = [n for n in MNIST_FILES if not (raw / n).is_file()]
    if missing and not download:
        raise DataError(f"MNIST not found: {raw} lacks {', '.join(missing)}; {_HOWTO}")
    from torchvision.datasets import MNIST  # imported late: torchvision is slow to import

    if missing:  # download is on: fetched elsewhere first, so a failure touches nothing here
        _download(root)
    check_mnist_files(root)  # a damaged file named in our words, before torchvision's own
    try:
        train = MNIST(str(root), train=True, download=False)
        test = MNIST(str(root), train=False, download=False)
    except Exception as exc:  # torchvision raises RuntimeError/ValueError variously
        text = one_line(exc)
        raise DataError(f"cannot load MNIST from {raw} ({exc.__class__.__name__}: {text}); {_HOWTO}") from None
    out = (train.data, train.targets.long(), test.data, test.targets.long())
    if out[0].shape[1:] != (28, 28) or len(out[0]) != len(out[1]) or len(out[2]) != len(out[3]):
        raise DataError(f"{raw}: MNIST files have inconsistent shapes")
    _CPU_CACHE[root] = out
    return out


@dataclass(frozen=True)
class MnistSplits:
    """uint8 images (N, 28, 28) and int64 labels, all on one device."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    @property
    def device(self) -> torch.device:
        return self.train_x.device


_SPLIT_CACHE: dict[tuple, MnistSplits] = {}


def load_splits(
    root: str | os.PathLike[str],
    device: torch.device | str = "cpu",
    *,
    val_size: int = 5000,
    train_limit: int = 0,
    test_limit: int = 0,
    download: bool = False,
) -> MnistSplits:
    """The fixed train/validation/test split, moved to ``device`` once and cached.

    Validation is the last ``val_size`` training images; ``train_limit``/``test_limit`` (0 = all)
    keep only the first N training/test images, for smoke runs.
    """
    device = torch.device(device)
    key = (Path(root).expanduser().resolve(), str(device), val_size, train_limit, test_limit)
    if key in _SPLIT_CACHE:
        return _SPLIT_CACHE[key]
    train_x, train_y, test_x, test_y = load_mnist(root, download)
    n = len(train_x)
    if not 0 <= val_size < n:
        raise DataError(f"val_size {val_size} must be below the {n} training images")
    cut = n - val_size
    tr = slice(0, min(cut, train_limit) if train_limit else cut)
    te = slice(0, min(len(test_x), test_limit) if test_limit else len(test_x))
    splits = MnistSplits(
        train_x=train_x[tr].to(device).contiguous(),
        train_y=train_y[tr].to(device),
        val_x=train_x[cut:].to(device).contiguous(),
        val_y=train_y[cut:].to(device),
        test_x=test_x[te].to(device).contiguous(),
        test_y=test_y[te].to(device),
    )
    _SPLIT_CACHE[key] = splits
    return splits
