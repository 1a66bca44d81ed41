"""Export a trial's network as frozen files that run without the harness, and verify them.

For a chosen trial: rebuild the architecture from its stored spec, load its stored weights
(:mod:`harness.artifacts`), and write (:func:`write_frozen`)

* ``<study>-trial<N>.pt2``: a ``torch.export`` program (``torch.export.save``), dynamic batch
  dimension; load with plain ``torch.export.load(path).module()``. The primary format;
* ``<study>-trial<N>.onnx``: ONNX (torch.export-based exporter), dynamic batch dimension;
* ``<study>-trial<N>.pt``, only when asked (``--format torchscript``): frozen TorchScript
  for older runtimes. TorchScript is deprecated upstream and this torch says so when the
  file is written and loaded; the warning is left visible;
* ``<study>-trial<N>.json``: the model card (:func:`model_card`: accuracies, spec, the
  trial's real training recipe and precision, normalisation, versions, git commit, sha256
  of each file, and the verification below).

Every file is then loaded the way a user would load it and run on the test images
(:func:`verify_file`). Its per-image predictions are compared with the eager PyTorch
model's on the same images: identical for ``.pt2`` and TorchScript (same float32 kernels),
at most ``ONNX_TOLERANCE`` of the images different for ONNX (other kernels). The eager
model must also reproduce the recorded test accuracy on the images the trial was scored on:
exactly for a model trained and scored on a CPU, within ``ONNX_TOLERANCE`` for one scored on
a GPU (scoring pins IEEE float32 there, but the kernels are not the CPU's).

Inputs are float32 (N, 1, 28, 28) normalised as ``(pixels / 255 - MNIST_MEAN) / MNIST_STD``;
outputs are (N, 10) logits.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

import harness
from harness.errors import HarnessError, one_line
from harness.runner import interrupts_held
from harness.study import param_count

__all__ = [
    "DEFAULT_FORMATS", "EXPORT_FORMATS", "ONNX_TOLERANCE", "ExportResult", "export_trial", "model_card",
    "output_paths", "select_trial", "verify_file", "write_frozen",
]  # fmt: skip

EXPORT_FORMATS = ("pt2", "onnx", "torchscript")
DEFAULT_FORMATS = ("pt2", "onnx")  # TorchScript only on request: deprecated upstream
ONNX_TOLERANCE = 0.0005  # fraction of test images whose ONNX prediction may differ (5 of 10,000)
_SUFFIX = {"pt2": ".pt2", "onnx": ".onnx", "torchscript": ".pt"}
_EXACT = ("pt2", "torchscript")  # the eager model's float32 kernels: image for image


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
        if trial.state != TrialState.COMPLETE and "duplicate_of" not in trial.user_attrs:
            from harness.study import outcome_text

            raise HarnessError(f"trial {number}: {outcome_text(trial)}, not COMPLETE: it has no trained weights")
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
                f"ONNX export needs {', '.join(missing)}: pip install onnx onnxscript onnxruntime (or --format pt2)"
            )


def check_out_dir(out: Path) -> None:
    """The output folder must be (or become) a writable folder whose path is text; checked by
    writing a probe."""
    try:
        os.fsencode(out.absolute()).decode("utf-8")
    except UnicodeDecodeError:  # torch.export's writer aborted the process on one (exit 134)
        raise HarnessError(f"output folder {out}: its path holds bytes that are no UTF-8 text, which torch.export "
                           "and onnxruntime cannot write to; choose another folder") from None  # fmt: skip
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


def _example():
    import torch

    return torch.zeros(2, 1, 28, 28)


def _batch_dim() -> tuple[dict[int, Any]]:
    import torch

    return ({0: torch.export.Dim("batch")},)


def output_paths(out_dir: Path, study_name: str, trial: int, seed: int | None, formats) -> dict[str, Path]:
    """Every file an export writes (format or "card" -> path), so they can be checked first."""
    stem = f"{study_name}-trial{trial}" + (f"-seed{seed}" if seed is not None else "")
    paths = {fmt: out_dir / (stem + _SUFFIX[fmt]) for fmt in formats}
    # (each is written first into a fresh temporary folder inside out_dir, under its own name,
    # then moved here: see export_trial)
    return {**paths, "card": out_dir / f"{stem}.json"}


def write_frozen(model, fmt: str, path: Path) -> None:
    """Write the eval-mode ``model`` to ``path`` in ``fmt`` (one of ``EXPORT_FORMATS``)."""
    import torch

    model.eval()
    if fmt == "pt2":
        program = torch.export.export(model, (_example(),), dynamic_shapes=_batch_dim())
        torch.export.save(program, str(path))
    elif fmt == "onnx":
        program = torch.onnx.export(model, (_example(),), dynamo=True, input_names=["images"],
                                    output_names=["logits"], dynamic_shapes=_batch_dim(), verbose=False)  # fmt: skip
        program.save(str(path))
    else:  # torchscript: deprecated upstream, and torch says so here; only written on request
        torch.jit.freeze(torch.jit.script(model)).save(str(path))


def _predict(fmt: str, path: Path, x) -> Any:
    """Labels predicted by the file at ``path``, loaded the way a user loads it."""
    import torch

    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        outs = [session.run(None, {name: x[i : i + 2000].numpy()})[0] for i in range(0, len(x), 2000)]
        return torch.cat([torch.from_numpy(o).argmax(1) for o in outs])
    loaded = torch.export.load(str(path)).module() if fmt == "pt2" else torch.jit.load(str(path), map_location="cpu")
    with torch.inference_mode():
        return torch.cat([loaded(x[i : i + 2000]).argmax(1) for i in range(0, len(x), 2000)])


def _eager_predict(model, x) -> Any:
    import torch

    from harness.train import fp32_precision

    with torch.inference_mode(), fp32_precision("ieee"):
        return torch.cat([model(x[i : i + 2000]).argmax(1) for i in range(0, len(x), 2000)])


def verify_file(fmt: str, path: Path, x, y, eager_pred) -> dict[str, Any]:
    """Per-image check of the file at ``path`` against the eager model's predictions ``eager_pred``
    on the same normalised images ``x`` (labels ``y``)."""
    pred = _predict(fmt, path, x)
    differ = int((pred != eager_pred).sum())
    allowed = 0 if fmt in _EXACT else int(ONNX_TOLERANCE * len(x))
    return {
        "images": len(x),
        "predictions_differing_from_pytorch": differ,
        "allowed_differences": allowed,
        "test_acc_all_images": (pred == y).float().mean().item(),
        "passed": differ <= allowed,
    }


def _earlier_formats(card_path: Path, formats: list[str]) -> tuple[dict[str, Path], dict[str, Any]]:
    """(format -> file, the earlier card) for the formats the model card already at
    ``card_path`` lists that this export does not write, where the file beside it is still the
    one the card describes (same name and sha256). An export in another format replaces that
    card: these are checked again against the network being exported and, if they are its
    files, kept in the new card rather than left on disk described by nothing."""
    try:
        earlier = json.loads(card_path.read_text(encoding="utf-8"))
        listed = earlier["files"]
    except (OSError, ValueError, KeyError, TypeError):  # no card yet, or not one of ours
        return {}, {}
    found = {}
    for fmt, entry in listed.items() if isinstance(listed, dict) else ():
        if fmt in formats or fmt not in _SUFFIX or not isinstance(entry, dict):
            continue
        path = card_path.with_name(card_path.stem + _SUFFIX[fmt])
        if entry.get("path") != path.name:
            continue
        if path.is_file() and entry.get("sha256") == _sha256(path):
            found[fmt] = path
    return found, earlier


def _git_commit() -> dict[str, Any] | None:
    """The checkout the harness runs from (commit, uncommitted changes), or None if not one."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        run = lambda *a: subprocess.run(["git", "-C", str(root), *a], capture_output=True, text=True, timeout=10)  # noqa: E731
        head = run("--no-optional-locks", "rev-parse", "HEAD")
        if head.returncode != 0:
            return None
        dirty = run("--no-optional-locks", "status", "--porcelain", "--untracked-files=no").stdout.strip() != ""
        return {"commit": head.stdout.strip(), "uncommitted_changes": dirty}
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict[str, Any]:
    import torch

    return {
        "harness": harness.__version__,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "git": _git_commit(),
    }


def _recipe_of(study: optuna.Study, trial: FrozenTrial, retrained: dict[str, Any] | None) -> tuple[dict, str]:
    """The recipe the weights were trained with, and where it was found."""
    if retrained and retrained.get("recipe"):
        return retrained["recipe"], "harness retrain"
    if trial.user_attrs.get("recipe"):
        return trial.user_attrs["recipe"], "the trial (searched recipe)"
    return study.user_attrs.get("train") or {}, "the study's [train] table"


def model_card(study: optuna.Study, trial: FrozenTrial, spec, record: dict[str, Any], files: dict[str, Path],
               verification: dict[str, Any], storage_label: str = "",
               retrained: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """The JSON model card: what the files are, how they were trained and how they were checked.

    ``record`` is the accuracy check of the eager model (:func:`export_trial`). The recipe is the
    one the weights were trained with: the retrain's, else the trial's own (recipe-searching
    studies), else the study's.
    """
    from harness.train import MNIST_MEAN, MNIST_STD

    ua = trial.user_attrs
    recipe, source = _recipe_of(study, trial, retrained)
    return {
        "format_version": 4,  # 3: held_out_train_images, teacher; 4: search_repeats
        "study": study.study_name,
        "trial": trial.number,
        "storage": storage_label,
        "baseline": bool(ua.get("baseline")),
        "params": param_count(ua),
        "budget": study.user_attrs.get("budget"),
        "target": study.user_attrs.get("target"),
        "val_acc": ua.get("val_acc"),
        # study.repeats: val_acc is the mean of these runs; the files are the first one's network
        "search_repeats": {"seeds": ua["repeat_seeds"], "val_accs": ua.get("repeat_val_accs"),
                           "test_accs": ua.get("repeat_test_accs")} if ua.get("repeat_seeds") else None,
        "test_acc": record["recorded"],
        "test_images": record["recorded_images"],
        "target_met": ua.get("target_met"),
        "epochs": retrained["epochs"] if retrained else ua.get("epochs_run"),
        # The last N of MNIST's training images the weights never learned from (a search
        # trial's validation split; 0 once retrained on all): what a distillation teacher
        # must hold out of a search (harness.teacher).
        "held_out_train_images": 0 if retrained else ua.get("held_out_train_images",
                                                             (study.user_attrs.get("data") or {}).get("val_size")),
        "seed": ua.get("seed"),
        "retrained": retrained,
        "arch": spec.describe(),
        "spec": spec.to_dict(),
        "train": recipe,
        "train_recipe_from": source,
        "teacher": (retrained or ua).get("teacher"),  # the distillation teacher's file and sha256, if any
        "precision": (retrained or {}).get("precision") or ua.get("precision"),
        "trained_on": (retrained or {}).get("device") or ua.get("device"),
        "input": {
            "name": "images",
            "shape": ["N", 1, 28, 28],
            "dtype": "float32",
            "normalize": {"mean": MNIST_MEAN, "std": MNIST_STD},
            "preprocess": "x = (pixels / 255 - mean) / std, pixels uint8 28x28, white digit on black",
        },
        "output": {"name": "logits", "shape": ["N", 10], "meaning": "class scores for digits 0-9 (argmax = label)"},
        "load": {"pt2": "torch.export.load(path).module()", "onnx": "onnxruntime.InferenceSession(path)",
                 "torchscript": "torch.jit.load(path) (deprecated upstream)"},  # fmt: skip
        "files": {fmt: {"path": p.name, "sha256": _sha256(p), "bytes": p.stat().st_size} for fmt, p in files.items()},
        "eager_check": record,
        "verification": verification,
        "versions": _versions(),
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


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
    and labels (CPU). ``retrained`` (:func:`harness.retrain.retrained_weights`) marks weights
    from ``harness retrain`` instead of the trial's own; its accuracy is the record.
    """
    from harness.model import build
    from harness.spec import ArchSpec
    from harness.train import normalize

    import torch

    spec = ArchSpec.from_json(trial.user_attrs["spec"])
    model = build(spec)
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError) as exc:  # missing, unexpected or mis-shaped tensors
        raise HarnessError(f"trial {trial.number}: its stored weights do not fit its architecture "
                           f"({spec.describe()}): {one_line(exc)}") from None  # fmt: skip
    model.eval()
    # The record is checked in the memory format the trial was scored in (kernels differ per
    # format in the last bits, enough to flip a near-tie); the files are written from, and
    # compared with, the model in the default format (torch.export.save warns on
    # channels_last weights).
    scored = copy.deepcopy(model)
    if _recipe_of(study, trial, retrained)[0].get("channels_last", True):
        scored.to(memory_format=torch.channels_last)
    x = normalize(test_x).contiguous()  # (N, 1, 28, 28) float32
    ua = trial.user_attrs
    source = retrained or ua
    n_rec = int(source.get("test_images", len(test_x)))
    recorded = source.get("test_acc")
    eager_pred = _eager_predict(model, x)
    scored_pred = _eager_predict(scored, x[:n_rec])
    eager_acc = (scored_pred == test_y[:n_rec]).float().mean().item()
    on_cpu = str(source.get("device", "cpu")).startswith("cpu")
    allowed = 0 if on_cpu else int(ONNX_TOLERANCE * n_rec)
    record = {
        "recorded": recorded,
        "recorded_images": n_rec,
        "eager_test_acc": eager_acc,
        "images_apart": None if recorded is None else abs(round(eager_acc * n_rec) - round(recorded * n_rec)),
        "allowed_images_apart": allowed,
    }
    record["passed"] = recorded is None or record["images_apart"] <= allowed

    made = [d for d in (out_dir, *out_dir.parents) if not d.exists()]  # removed again if nothing lands in them
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HarnessError(f"{out_dir}: cannot make the export folder: {exc.strerror or exc}") from None
    paths = output_paths(out_dir, study.study_name, trial.number, retrained["seed"] if retrained else None, formats)
    rec_s = f"{recorded:.4%}" if recorded is not None else "n/a"
    lines = [
        f"trial {trial.number}: {spec.describe()}, {param_count(ua, 0):,} params",
        f"  pytorch     eager float32: test acc {eager_acc:.4%} on the {n_rec:,} scored images (recorded {rec_s}) -> "
        + ("OK" if record["passed"] else f"MISMATCH ({record['images_apart']} images apart)"),
    ]
    # Written and verified in a fresh temporary folder inside out_dir, under their own names
    # (torch.export warns about a package not named *.pt2, and names the archive's inside after
    # the file), then all moved into place: an export stopped while writing or verifying (Ctrl-C,
    # a full disk) leaves the earlier files as they were and no temporary file (a SIGKILL leaves
    # only its own hidden folder). A stop during the final renames waits until they are done:
    # never new model files beside the earlier card.
    try:
        partial = Path(tempfile.mkdtemp(dir=out_dir, prefix=f".{paths['card'].stem}.", suffix=".partial"))
    except OSError as exc:
        raise HarnessError(f"{out_dir}: cannot write the export: {exc.strerror or exc}") from None
    verification: dict[str, Any] = {}
    try:
        written = {fmt: partial / paths[fmt].name for fmt in formats}
        for fmt in formats:
            write_frozen(model, fmt, written[fmt])
            v = verification[fmt] = verify_file(fmt, written[fmt], x, test_y, eager_pred)
            lines.append(
                f"  {fmt:<11} {paths[fmt]}: {v['predictions_differing_from_pytorch']} of {v['images']:,} predictions "
                f"differ from PyTorch (allowed {v['allowed_differences']}), test acc {v['test_acc_all_images']:.4%} -> "
                + ("OK" if v["passed"] else "MISMATCH")
            )
        described = dict(written)
        kept, earlier = _earlier_formats(paths["card"], formats)
        for fmt, path in kept.items():
            try:
                v = verify_file(fmt, path, x, test_y, eager_pred)
            except Exception:  # no runtime for it here, or one that cannot load it: not checkable, so not listed
                v = {"passed": False}
            if v["passed"]:  # this network's file from an earlier export: listed again, checked again
                verification[fmt], described[fmt] = v, path
                lines.append(f"  {fmt:<11} {path}: kept from an earlier export, {v['predictions_differing_from_pytorch']} "
                             f"of {v['images']:,} predictions differ from PyTorch -> OK")  # fmt: skip
            else:
                lines.append(f"  {fmt:<11} {path}: from an earlier export, not this network's (or not checkable "
                             "here): left as it is, no longer described by the model card")  # fmt: skip
        ok = record["passed"] and all(v["passed"] for v in verification.values())
        card = model_card(study, trial, spec, record, described, verification, storage_label, retrained)
        for fmt in described.keys() - written.keys():  # written by an earlier export's harness and torch, not this one's
            first = earlier["files"][fmt].get("written_by_earlier_export")  # kept once already: by the export before it
            card["files"][fmt]["written_by_earlier_export"] = first if isinstance(first, dict) else \
                {key: earlier.get(key) for key in ("exported_at", "versions")}  # fmt: skip
        (partial / paths["card"].name).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        with interrupts_held():
            for fmt in formats:
                os.replace(written[fmt], paths[fmt])
            os.replace(partial / paths["card"].name, paths["card"])
    except OSError as exc:  # a full disk, a folder that cannot be written
        raise HarnessError(f"{out_dir}: cannot write the export: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)
        if not paths["card"].exists():  # stopped or failed: the folders made for it go too, if empty
            for d in made:
                try:
                    d.rmdir()
                except OSError:  # not empty (another export's files) or gone
                    break
    files = {fmt: paths[fmt] for fmt in formats}
    return ExportResult(files, paths["card"], card, ok, lines)
