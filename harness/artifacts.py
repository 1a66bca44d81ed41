"""Trained weights as Optuna artifacts: saved by every completed trial, loaded by export.

The store is an ``optuna.artifacts.FileSystemArtifactStore`` in the study's artifact folder
(:meth:`harness.config.StudyConfig.artifact_root`), so optuna-dashboard lists each trial's
weights next to its attributes. A checkpoint is a plain ``state_dict`` (CPU, contiguous,
float32) written by ``torch.save``; it is read back with ``torch.load(weights_only=True)``,
which unpickles tensors and containers only, never code.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import FrozenTrial

from harness.errors import HarnessError, one_line

__all__ = [
    "WEIGHTS_ATTR",
    "ReadOnlyArtifactStore",
    "load_state_dict",
    "load_weights",
    "open_artifact_store",
    "save_weights",
    "upload_state_dict",
    "weights_filename",
    "weights_id",
]

#: Trial user attribute holding the artifact id of the trial's trained weights.
WEIGHTS_ATTR = "weights_artifact"


def open_artifact_store(root: Path, create: bool = True) -> FileSystemArtifactStore:
    """The artifact store in folder ``root`` (created when ``create``).

    Raises:
        HarnessError: ``root`` exists but is not a folder, or (``create=False``) is missing.
    """
    if root.exists() and not root.is_dir():
        raise HarnessError(f"artifact folder {root} exists but is not a folder")
    if not root.exists():
        if not create:
            raise HarnessError(f"artifact folder {root} does not exist (no trial has saved weights)")
        root.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(root))


class ReadOnlyArtifactStore:
    """An artifact store that serves reads and refuses writes and removals: what `harness
    dashboard` hands optuna-dashboard, whose delete buttons would otherwise remove weights
    files (the study's storage refuses its writes itself, opened read-only)."""

    def __init__(self, store: FileSystemArtifactStore):
        self._store = store

    def open_reader(self, artifact_id: str):
        return self._store.open_reader(artifact_id)

    def write(self, artifact_id: str, content_body) -> None:
        raise PermissionError(f"artifact {artifact_id}: harness dashboard is read-only")

    def remove(self, artifact_id: str) -> None:
        raise PermissionError(f"artifact {artifact_id}: harness dashboard is read-only")


def weights_filename(trial_number: int) -> str:
    return f"trial-{trial_number}-weights.pt"


def upload_state_dict(model, study_or_trial, store: FileSystemArtifactStore, filename: str) -> str:
    """Upload ``model``'s state dict (CPU, contiguous) as an artifact named ``filename``; its id."""
    import torch

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with tempfile.TemporaryDirectory(prefix="harness-weights-") as tmp:
        path = Path(tmp) / filename  # the name the dashboard shows
        torch.save(state, path)
        return optuna.artifacts.upload_artifact(
            artifact_store=store, file_path=str(path), study_or_trial=study_or_trial,
            mimetype="application/octet-stream",
        )  # fmt: skip


def save_weights(model, trial: optuna.Trial, store: FileSystemArtifactStore) -> str:
    """Upload ``model``'s state dict as an artifact of ``trial``; returns (and records) its id."""
    artifact_id = upload_state_dict(model, trial, store, weights_filename(trial.number))
    trial.set_user_attr(WEIGHTS_ATTR, artifact_id)
    return artifact_id


def load_state_dict(store: FileSystemArtifactStore, artifact_id: str, what: str) -> dict:
    """The state dict in artifact ``artifact_id`` (``torch.load(..., weights_only=True)``).

    Raises:
        HarnessError: the artifact is missing or not a readable checkpoint (``what`` names it).
    """
    import torch

    with tempfile.TemporaryDirectory(prefix="harness-weights-") as tmp:
        path = Path(tmp) / "weights.pt"
        try:
            optuna.artifacts.download_artifact(artifact_store=store, file_path=str(path), artifact_id=artifact_id)
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # missing file, truncated or foreign pickle
            raise HarnessError(
                f"{what}: cannot load weights artifact {artifact_id}: {exc.__class__.__name__}: {one_line(exc)}"
            ) from None
    if not isinstance(state, dict):
        raise HarnessError(f"{what}: weights artifact {artifact_id} holds a {type(state).__name__}, not a state dict")
    return state


def weights_id(trial: FrozenTrial) -> str:
    """The artifact id of the weights ``trial`` stored.

    Raises:
        HarnessError: it stored none (and why: a study restored from a CSV, or one older than
            stored weights).
    """
    artifact_id = trial.user_attrs.get(WEIGHTS_ATTR)
    if not artifact_id:
        restored = trial.user_attrs.get("restored_from")  # harness.restore: a CSV holds no weights
        why = (f"the study was restored from {restored}, which holds none: `harness retrain --trial {trial.number}`, "
               f"then export it with --seed" if restored else "it ran before weights were kept")
        raise HarnessError(f"trial {trial.number} has no stored weights ({why})")
    return artifact_id


def load_weights(trial: FrozenTrial, store: FileSystemArtifactStore) -> dict:
    """The state dict stored by ``trial``.

    Raises:
        HarnessError: the trial stored no weights, or the artifact is missing or unreadable.
    """
    artifact_id = weights_id(trial)
    return load_state_dict(store, artifact_id, f"trial {trial.number}")
