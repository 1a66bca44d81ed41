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

from harness.errors import HarnessError

__all__ = ["WEIGHTS_ATTR", "load_weights", "open_artifact_store", "save_weights", "weights_filename"]

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


def weights_filename(trial_number: int) -> str:
    return f"trial-{trial_number}-weights.pt"


def save_weights(model, trial: optuna.Trial, store: FileSystemArtifactStore) -> str:
    """Upload ``model``'s state dict as an artifact of ``trial``; returns (and records) its id."""
    import torch

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with tempfile.TemporaryDirectory(prefix="harness-weights-") as tmp:
        path = Path(tmp) / weights_filename(trial.number)  # the name the dashboard shows
        torch.save(state, path)
        artifact_id = optuna.artifacts.upload_artifact(
            artifact_store=store, file_path=str(path), study_or_trial=trial, mimetype="application/octet-stream"
        )
    trial.set_user_attr(WEIGHTS_ATTR, artifact_id)
    return artifact_id


def load_weights(trial: FrozenTrial, store: FileSystemArtifactStore) -> dict:
    """The state dict stored by ``trial`` (``torch.load(..., weights_only=True)``).

    Raises:
        HarnessError: the trial stored no weights, or the artifact is missing or unreadable.
    """
    import torch

    artifact_id = trial.user_attrs.get(WEIGHTS_ATTR)
    if not artifact_id:
        raise HarnessError(f"trial {trial.number} has no stored weights (it ran before weights were kept)")
    with tempfile.TemporaryDirectory(prefix="harness-weights-") as tmp:
        path = Path(tmp) / weights_filename(trial.number)
        try:
            optuna.artifacts.download_artifact(artifact_store=store, file_path=str(path), artifact_id=artifact_id)
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # missing file, truncated or foreign pickle
            raise HarnessError(
                f"trial {trial.number}: cannot load weights artifact {artifact_id}: {exc.__class__.__name__}: {exc}"
            ) from None
