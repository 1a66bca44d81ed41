"""Export a trial's network as frozen files that run without the harness, and verify them.

For a chosen trial: rebuild the architecture from its stored spec, load its stored weights
(:mod:`harness.artifacts`), and write

* ``<study>-trial<N>.pt``: frozen TorchScript (``torch.jit.freeze`` of the scripted eval-mode
  model); load with plain ``torch.jit.load``;
* ``<study>-trial<N>.onnx``: ONNX (torch.export-based exporter), dynamic batch dimension;
* ``<study>-trial<N>.json``: the model card (accuracies, spec, normalisation, versions,
  sha256 of each file, and the verification below).

Every file is then loaded the way a user would load it and run on the test images. Its
predictions must reproduce the recorded test accuracy on the images the trial was scored on:
exactly (image for image) for TorchScript, within ``ONNX_TOLERANCE`` for ONNX.

Inputs are float32 (N, 1, 28, 28) normalised as ``(pixels / 255 - MNIST_MEAN) / MNIST_STD``;
outputs are (N, 10) logits.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

import harness
from harness.errors import HarnessError

__all__ = ["EXPORT_FORMATS", "ONNX_TOLERANCE", "ExportResult", "export_trial", "select_trial"]

EXPORT_FORMATS = ("torchscript", "onnx")
ONNX_TOLERANCE = 0.0005  # |ONNX accuracy - recorded accuracy| allowed (0.05 %, float kernels differ)
_SUFFIX = {"torchscript": ".pt", "onnx": ".onnx"}


@dataclass
class ExportResult:
    files: dict[str, Path]  # format -> file
    card_path: Path
    card: dict[str, Any]
    ok: bool  # every verification passed
    lines: list[str] = field(default_factory=list)  # human-readable verification report


def select_trial(study: optuna.Study, number: int | None = None) -> FrozenTrial:
    """Trial ``number``, or (None) the best feasible trial: COMPLETE, within the study's
    budget, highest validation accuracy (ties: fewer parameters).

    Raises:
        HarnessError: no such trial, the trial did not complete, or no feasible trial exists.
    """
    trials = study.get_trials(deepcopy=False)
    if number is not None:
        found = [t for t in trials if t.number == number]
        if not found:
            raise HarnessError(f"study {study.study_name!r} has no trial {number} (trials 0..{len(trials) - 1})")
        trial = found[0]
        if trial.state != TrialState.COMPLETE:
            raise HarnessError(f"trial {number} is {trial.state.name}, not COMPLETE: it has no trained weights")
        if "duplicate_of" in trial.user_attrs:
            raise HarnessError(f"trial {number} repeats trial {trial.user_attrs['duplicate_of']} and was not "
                               f"trained itself: export trial {trial.user_attrs['duplicate_of']}")  # fmt: skip
        return trial
    from harness.study import feasible_trials, rank_key

    feasible = feasible_trials(study)
    if not feasible:
        budget = int(study.user_attrs.get("budget", 0))
        raise HarnessError(f"study {study.study_name!r} has no completed trial within the budget of {budget:,} params")
    return min(feasible, key=rank_key)


def check_formats(formats: list[str]) -> None:
    """Fail early (before anything is written) when a format's packages are missing."""
    if "onnx" in formats:
        missing = []
        for mod in ("onnx", "onnxscript", "onnxruntime"):
            try:
                __import__(mod)
            except ImportError:
                missing.append(mod)
        if missing:
            raise HarnessError(
                f"ONNX export needs {', '.join(missing)}: pip install 'harness[export]' (or --format torchscript)"
            )


def check_out_dir(out: Path) -> None:
    """The output folder must be (or become) a writable folder; checked by writing a probe."""
    probe_dir = out
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise HarnessError(f"output folder {out}: {probe_dir} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=probe_dir):
            pass
    except OSError as exc:
        raise HarnessError(f"output folder {out} is not writable ({exc.strerror})") from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_torchscript(model, path: Path) -> None:
    import torch

    with warnings.catch_warnings():  # TorchScript is deprecated upstream, still what users load
        warnings.simplefilter("ignore", FutureWarning)
        frozen = torch.jit.freeze(torch.jit.script(model.eval()))
        frozen.save(str(path))


def _write_onnx(model, path: Path) -> None:
    import torch

    example = torch.zeros(2, 1, 28, 28)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model.eval(), (example,), dynamo=True, input_names=["images"], output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False,
        )  # fmt: skip
        program.save(str(path))


def _predict_torchscript(path: Path, x) -> Any:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.inference_mode():
        return torch.cat([loaded(x[i : i + 2000]).argmax(1) for i in range(0, len(x), 2000)])


def _predict_onnx(path: Path, x) -> Any:
    import onnxruntime
    import torch

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    outs = [session.run(None, {name: x[i : i + 2000].numpy()})[0] for i in range(0, len(x), 2000)]
    return torch.cat([torch.from_numpy(o).argmax(1) for o in outs])


def export_trial(
    study: optuna.Study,
    trial: FrozenTrial,
    weights: dict,
    test_x,
    test_y,
    out_dir: Path,
    formats: list[str],
    storage_label: str = "",
    retrained: dict[str, Any] | None = None,
) -> ExportResult:
    """Write ``formats`` + the model card for ``trial`` into ``out_dir`` and verify them.

    ``weights`` is the trial's state dict; ``test_x``/``test_y`` the 10,000 uint8 test images
    and labels (CPU). Verification compares against the recorded accuracy on the first
    ``test_images`` images (what the trial was scored on) and also reports all images.
    ``retrained`` (``{"seed", "test_acc", "test_images", "epochs", "train_images"}``) marks
    weights from ``harness retrain`` instead of the trial's own; its accuracy is the record.
    """
    import torch

    from harness.model import build
    from harness.spec import ArchSpec
    from harness.train import MNIST_MEAN, MNIST_STD, normalize

    spec = ArchSpec.from_json(trial.user_attrs["spec"])
    model = build(spec)
    model.load_state_dict(weights)
    model.eval()
    x = normalize(test_x).contiguous()  # (N, 1, 28, 28) float32
    ua = trial.user_attrs
    n_rec = int((retrained or ua).get("test_images", len(test_x)))
    recorded = (retrained or ua).get("test_acc")
    with torch.inference_mode():
        eager_pred = torch.cat([model(x[i : i + 2000]).argmax(1) for i in range(0, len(x), 2000)])

    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{study.study_name}-trial{trial.number}" + (f"-seed{retrained['seed']}" if retrained else "")
    writers = {"torchscript": _write_torchscript, "onnx": _write_onnx}
    readers = {"torchscript": _predict_torchscript, "onnx": _predict_onnx}
    files: dict[str, Path] = {}
    verification: dict[str, Any] = {}
    lines = [f"trial {trial.number}: {spec.describe()}, {ua.get('params', 0):,} params"]
    ok = True
    for fmt in formats:
        path = out_dir / (stem + _SUFFIX[fmt])
        writers[fmt](model, path)
        files[fmt] = path
        pred = readers[fmt](path, x)  # loaded the way a user loads it
        acc_rec = (pred[:n_rec] == test_y[:n_rec]).float().mean().item()
        acc_all = (pred == test_y).float().mean().item()
        differ = int((pred != eager_pred).sum())
        if recorded is None:
            passed = differ == 0 if fmt == "torchscript" else differ <= ONNX_TOLERANCE * len(x)
        elif fmt == "torchscript":
            passed = round(acc_rec * n_rec) == round(recorded * n_rec)
        else:
            passed = abs(acc_rec - recorded) <= ONNX_TOLERANCE
        ok = ok and passed
        verification[fmt] = {
            "test_acc_recorded_images": acc_rec,
            "recorded_images": n_rec,
            "test_acc_all_images": acc_all,
            "all_images": len(x),
            "predictions_differing_from_pytorch": differ,
            "passed": passed,
        }
        rec_s = f"{recorded:.4%}" if recorded is not None else "n/a"
        lines.append(
            f"  {fmt:<11} {path}: test acc {acc_rec:.4%} on the {n_rec:,} scored images (recorded {rec_s}), "
            f"{acc_all:.4%} on all {len(x):,}; {differ} predictions differ from PyTorch -> "
            + ("OK" if passed else "MISMATCH")
        )
    card = {
        "format_version": 1,
        "study": study.study_name,
        "trial": trial.number,
        "storage": storage_label,
        "baseline": bool(ua.get("baseline")),
        "params": ua.get("params"),
        "budget": study.user_attrs.get("budget"),
        "target": study.user_attrs.get("target"),
        "val_acc": ua.get("val_acc"),
        "test_acc": recorded,
        "test_images": n_rec,
        "target_met": ua.get("target_met"),
        "epochs": retrained["epochs"] if retrained else ua.get("epochs_run"),
        "seed": ua.get("seed"),
        "retrained": retrained,
        "arch": spec.describe(),
        "spec": spec.to_dict(),
        "train": study.user_attrs.get("train"),
        "trained_on": ua.get("device"),
        "input": {
            "name": "images",
            "shape": ["N", 1, 28, 28],
            "dtype": "float32",
            "normalize": {"mean": MNIST_MEAN, "std": MNIST_STD},
            "preprocess": "x = (pixels / 255 - mean) / std, pixels uint8 28x28, white digit on black",
        },
        "output": {"name": "logits", "shape": ["N", 10], "meaning": "class scores for digits 0-9 (argmax = label)"},
        "files": {fmt: {"path": p.name, "sha256": _sha256(p), "bytes": p.stat().st_size} for fmt, p in files.items()},
        "verification": verification,
        "harness_version": harness.__version__,
        "torch_version": torch.__version__,
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    card_path = out_dir / f"{stem}.json"
    tmp = card_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, card_path)
    return ExportResult(files, card_path, card, ok, lines)
