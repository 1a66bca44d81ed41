"""Distillation teachers: frozen ``.pt2`` networks (``harness export``) whose softened
predictions a study's networks also learn from (``train.teacher``).

A teacher is read the way a user reads an exported model, ``torch.export.load(path).module()``,
and checked before anything is written: it must map (N, 1, 28, 28) normalised images to
(N, 10) logits. In a search it must also not have learned from the study's validation images,
or their labels would reach the candidates through its predictions and the selection would
no longer be honest: the model card beside the file (``<stem>.json``, written by the export)
says which training images it never saw (``held_out_train_images``: the last N of MNIST's
training set). A retrain trains on all training images and is scored on the test set, which
no harness network ever learns from, so any teacher will do there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

__all__ = ["check_search_teacher", "file_sha256", "load_teacher", "teacher_record"]


class _DropRecord(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_teacher(path: Path, device: Any = "cpu") -> Any:
    """The teacher network in ``path`` on ``device``, checked to give (N, 10) logits.

    Raises:
        HarnessError: the file is missing or unreadable, not a torch.export program, or not an
            MNIST classifier.
    """
    import torch
    import torch.export.passes

    if not path.is_file():
        what = "a folder, not a file" if path.is_dir() else "no such file"
        raise HarnessError(f"teacher {path}: {what} (train.teacher names a .pt2 file from `harness export`)")
    if not zipfile.is_zipfile(path):  # torch.export.load would log a traceback before failing
        raise HarnessError(f"teacher {path}: not a torch.export program from `harness export` (not a .pt2 archive)")
    # For a zip that is no export (a torch.save file), torch.export.load logs its first error
    # with a traceback before raising another: that one record is dropped (the message below
    # says it in one line); every other warning, deprecations included, stays visible.
    export_log = logging.getLogger("torch.export")
    drop = _DropRecord("Ran into the following error when deserializing")
    export_log.addFilter(drop)
    try:
        program = torch.export.load(str(path))
    except Exception:  # torch raises many kinds, with messages about its internals
        raise HarnessError(f"teacher {path}: not a torch.export program from `harness export` "
                           "(torch.export.load cannot read it)") from None  # fmt: skip
    finally:
        export_log.removeFilter(drop)
    # The program's own pass also moves device constants baked into its graph, not only weights.
    module = torch.export.passes.move_to_device_pass(program, torch.device(device)).module()
    for n in (3, 5):  # two batch sizes: an export for one fixed batch fails one of them
        try:
            with torch.inference_mode():
                out = module(torch.zeros(n, 1, 28, 28, device=device))
        except Exception as exc:
            reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
            raise HarnessError(f"teacher {path}: does not take (N, 1, 28, 28) images ({reason})") from None
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (n, 10):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise HarnessError(f"teacher {path}: gives {shape} for {n} images, not ({n}, 10) digit logits")
    for p in module.parameters():  # frozen: only the student learns
        p.requires_grad_(False)
    return module


def _card(path: Path) -> dict[str, Any] | None:
    """The model card beside ``path`` (a JSON object), or None when missing or not one."""
    try:
        card = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) else None


def check_search_teacher(path: Path, val_size: int) -> None:
    """Refuse a teacher that may have learned from a search's validation split (the last
    ``val_size`` training images).

    Raises:
        HarnessError: its model card is missing or does not say, or says it saw those images.
    """
    card = _card(path) or {}
    held_out = card.get("held_out_train_images")
    files = card.get("files") if isinstance(card.get("files"), dict) else {}
    described = files.get("pt2") if isinstance(files.get("pt2"), dict) else {}
    if isinstance(held_out, bool):
        held_out = None
    if isinstance(held_out, int) and described.get("sha256") != file_sha256(path):
        raise HarnessError(
            f"teacher {path}: its model card {path.with_suffix('.json').name} "
            + ("describes another file (sha256 differs)" if "pt2" in files else
               f"lists no .pt2 file (it lists {', '.join(sorted(files)) or 'none'})")
            + ", so it cannot say which training images this one never saw: export the teacher again"
        )
    if not isinstance(held_out, int):
        raise HarnessError(
            f"teacher {path}: its model card {path.with_suffix('.json').name} (written by `harness export`) is "
            "missing, not valid JSON, or does not say which training images it never saw; a search cannot use "
            "a teacher that may have learned its validation images: export the teacher again with this harness"
        )
    if held_out == 0:
        raise HarnessError(
            f"teacher {path} was retrained on every training image (held_out_train_images = 0), so it learned "
            f"this study's validation split (the last {val_size:,}): their labels would leak into the selection. "
            f"Use a search trial's export from a study with data.val_size >= {val_size:,}"
        )
    if held_out < val_size:
        raise HarnessError(
            f"teacher {path} learned from all but the last {held_out:,} training images, but this study validates "
            f"on the last {val_size:,}: their labels would leak into the selection. Use a teacher from a study "
            f"with data.val_size >= {val_size:,} (a search trial, not a retrained model)"
        )


def teacher_record(path: Path) -> dict[str, Any]:
    """What a trial records about its teacher: the file, its sha256 and its model card's summary."""
    card = _card(path) or {}
    return {
        "path": str(path), "sha256": file_sha256(path), "study": card.get("study"), "trial": card.get("trial"),
        "params": card.get("params"), "held_out_train_images": card.get("held_out_train_images"),
    }  # fmt: skip
