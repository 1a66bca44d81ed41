"""Weights as artifacts, export (torch.export .pt2 + ONNX + card; TorchScript on request), report: on tiny synthetic data.

A real study (real Optuna SQLite storage, real training on a synthetic MNIST that a small
net learns in one epoch) is run once per module through the CLI; export and report then
work on it exactly as a user would.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch

from harness.artifacts import WEIGHTS_ATTR, load_weights, open_artifact_store
from harness.cli import main
from tests.conftest import make_synthetic_mnist, snapshot

STUDY = """
[study]
name = "tiny"
search_space = "seed"
budget = 20000
n_trials = 4
seed = 3
[sampler]
name = "random"
[pruner]
name = "none"
[data]
dir = "data"
val_size = 100
[train]
epochs = 1
batch_size = 50
rotation = 0.0
translate = 0.0
scale = 0.0
"""


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory) -> Path:
    """A folder holding tiny.toml, its data, and a finished study (tiny.db + tiny.artifacts)."""
    folder = tmp_path_factory.mktemp("tiny")
    make_synthetic_mnist(folder / "data", n_train=500, n_test=300)
    (folder / "tiny.toml").write_text(STUDY)
    assert main(["run", str(folder / "tiny.toml"), "--device", "cpu", "--quiet"]) == 0
    return folder


def _study(folder: Path) -> optuna.Study:
    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{folder / 'tiny.db'}")


def test_every_completed_trial_stores_loadable_weights(tiny_study):
    from harness.model import build
    from harness.spec import ArchSpec

    study = _study(tiny_study)
    store = open_artifact_store(tiny_study / "tiny.artifacts", create=False)
    complete = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete
    for t in study.get_trials():
        metas = optuna.artifacts.get_all_artifact_meta(t, storage=study._storage)
        if t in complete:
            assert [m.filename for m in metas] == [f"trial-{t.number}-weights.pt"]
            assert metas[0].artifact_id == t.user_attrs[WEIGHTS_ATTR]
            weights = load_weights(t, store)
            assert all(isinstance(v, torch.Tensor) for v in weights.values())
            model = build(ArchSpec.from_json(t.user_attrs["spec"]))
            model.load_state_dict(weights)  # strict: every key matches
            size = (tiny_study / "tiny.artifacts" / metas[0].artifact_id).stat().st_size
            assert size < 100_000
        else:
            assert metas == [] and WEIGHTS_ATTR not in t.user_attrs


def test_export_writes_verified_files_and_card(tiny_study):
    """The default export, run as a user runs it: .pt2 + ONNX + card, verified, no warning printed."""
    out = tiny_study / "out"
    proc = subprocess.run([sys.executable, "-c", "from harness.cli import main; raise SystemExit(main())", "export",
                           str(tiny_study / "tiny.toml"), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == "", proc.stderr  # no warning of any kind (torch's log lines included)
    study = _study(tiny_study)
    best = max(
        (t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE),
        key=lambda t: (t.value, -t.user_attrs["trainable_params"]),
    )
    card = json.loads((out / f"tiny-trial{best.number}.json").read_text())
    assert card["trial"] == best.number and card["params"] == best.user_attrs["trainable_params"]
    assert card["test_acc"] == best.user_attrs["test_acc"] and card["val_acc"] == best.value
    assert card["input"]["normalize"] == {"mean": 0.1307, "std": 0.3081}
    assert card["versions"]["torch"] == torch.__version__ and card["versions"]["cuda"] == torch.version.cuda
    assert card["versions"]["git"] is None or len(card["versions"]["git"]["commit"]) == 40
    assert card["precision"] == best.user_attrs["precision"] and card["precision"]["scoring"].startswith("float32")
    assert card["eager_check"]["passed"] and card["eager_check"]["images_apart"] == 0  # trained on a CPU: exact
    assert sorted(card["files"]) == ["onnx", "pt2"] and not list(out.glob("*.pt"))
    for fmt, suffix in (("pt2", ".pt2"), ("onnx", ".onnx")):
        path = out / f"tiny-trial{best.number}{suffix}"
        assert card["files"][fmt]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        v = card["verification"][fmt]
        assert v["passed"] is True and v["images"] == 300  # every test image
        assert v["predictions_differing_from_pytorch"] <= v["allowed_differences"]
    assert card["verification"]["pt2"]["allowed_differences"] == 0  # image for image
    assert proc.stdout.count("-> OK") == 3  # the eager model against the record, then each file


def test_an_export_in_another_format_keeps_the_earlier_files_of_that_network_in_the_card(tiny_study, capsys):
    """`export --format pt2`, then `--format onnx` of the same trial: the second card lists both
    files (the .pt2 checked again against the network), not the ONNX file alone with the .pt2
    left on disk described by nothing (and refused as a distillation teacher for that). A file of
    another network under the same name is not listed."""
    from harness.teacher import check_search_teacher

    out = tiny_study / "two-formats"
    study = tiny_study / "tiny.toml"
    trial = _study(tiny_study).best_trial.number
    assert main(["export", str(study), "--trial", str(trial), "--out", str(out), "--format", "pt2"]) == 0
    pt2 = out / f"tiny-trial{trial}.pt2"
    pt2_bytes = pt2.read_bytes()
    pt2_card = json.loads((out / f"tiny-trial{trial}.json").read_text())
    capsys.readouterr()
    assert main(["export", str(study), "--trial", str(trial), "--out", str(out), "--format", "onnx"]) == 0
    assert f"pt2         {pt2}: kept from an earlier export, 0 of 300 predictions differ from PyTorch -> OK" \
        in capsys.readouterr().out
    card = json.loads((out / f"tiny-trial{trial}.json").read_text())
    assert sorted(card["files"]) == ["onnx", "pt2"] and pt2.read_bytes() == pt2_bytes
    assert card["files"]["pt2"]["sha256"] == hashlib.sha256(pt2_bytes).hexdigest()
    assert card["verification"]["pt2"]["passed"] and card["verification"]["pt2"]["predictions_differing_from_pytorch"] == 0
    assert card["files"]["pt2"]["written_by_earlier_export"] == {  # whose harness and torch wrote it
        "exported_at": pt2_card["exported_at"], "versions": pt2_card["versions"]}
    assert "written_by_earlier_export" not in card["files"]["onnx"]
    # kept again by a third export: still the export that wrote it, not the one that kept it
    (out / f"tiny-trial{trial}.json").write_text(json.dumps(dict(card, exported_at="2000-01-01T00:00:00+00:00")))
    assert main(["export", str(study), "--trial", str(trial), "--out", str(out), "--format", "onnx"]) == 0
    again = json.loads((out / f"tiny-trial{trial}.json").read_text())
    assert again["files"]["pt2"]["written_by_earlier_export"]["exported_at"] == pt2_card["exported_at"]
    check_search_teacher(pt2, 100)  # described by its card again: no "describes another file"
    other = next(t.number for t in _study(tiny_study).get_trials()
                 if t.state == optuna.trial.TrialState.COMPLETE and t.number != trial
                 and "duplicate_of" not in t.user_attrs)  # fmt: skip
    assert main(["export", str(study), "--trial", str(other), "--out", str(out), "--format", "pt2"]) == 0
    (out / f"tiny-trial{other}.pt2").replace(out / f"tiny-trial{trial}.pt2")  # another network's file, and
    card["files"]["pt2"]["sha256"] = hashlib.sha256(pt2.read_bytes()).hexdigest()  # a card that lists it
    (out / f"tiny-trial{trial}.json").write_text(json.dumps(card))
    capsys.readouterr()
    assert main(["export", str(study), "--trial", str(trial), "--out", str(out), "--format", "onnx"]) == 0
    assert "no longer described by the model card" in capsys.readouterr().out
    assert sorted(json.loads((out / f"tiny-trial{trial}.json").read_text())["files"]) == ["onnx"]
    # a file the card lists that no runtime here can load: not listed again, and the export goes on
    pt2.write_bytes(b"PK\x03\x04 not a program")
    card = json.loads((out / f"tiny-trial{trial}.json").read_text())
    card["files"]["pt2"] = {"path": pt2.name, "sha256": hashlib.sha256(pt2.read_bytes()).hexdigest(), "bytes": 1}
    (out / f"tiny-trial{trial}.json").write_text(json.dumps(card))
    assert main(["export", str(study), "--trial", str(trial), "--out", str(out), "--format", "onnx"]) == 0
    assert "no longer described by the model card" in capsys.readouterr().out
    assert sorted(json.loads((out / f"tiny-trial{trial}.json").read_text())["files"]) == ["onnx"]


_USER_SCRIPT = """
import sys
sys.modules["harness"] = None  # any import of the harness now fails
import json, struct, numpy as np, torch
card = json.load(open({card!r}))
raw = {raw!r}
data = open(raw + "/t10k-images-idx3-ubyte", "rb").read()
n = struct.unpack(">I", data[4:8])[0]
x = np.frombuffer(data[16:], dtype=np.uint8).reshape(n, 1, 28, 28).astype(np.float32) / 255
x = (x - card["input"]["normalize"]["mean"]) / card["input"]["normalize"]["std"]
y = np.frombuffer(open(raw + "/t10k-labels-idx1-ubyte", "rb").read()[8:], dtype=np.uint8)
model = {load}
pred = model(torch.from_numpy(x)).argmax(1).numpy()
assert model(torch.from_numpy(x[:3])).shape == (3, 10)  # any batch size
print((pred == y).mean())
"""


@pytest.mark.parametrize("fmt", ["pt2", "torchscript"])
def test_frozen_file_runs_without_the_harness(tiny_study, fmt):
    """A user's process: plain torch + numpy, harness made unimportable, its own preprocessing."""
    out = tiny_study / f"only-{fmt}"
    assert main(["export", str(tiny_study / "tiny.toml"), "--out", str(out), "--format", fmt]) == 0
    card_path = next(out.glob("*.json"))
    card = json.loads(card_path.read_text())
    assert list(card["files"]) == [fmt] and not list(out.glob("*.onnx"))
    path = str(out / card["files"][fmt]["path"])
    load = f"torch.export.load({path!r}).module()" if fmt == "pt2" else f"torch.jit.load({path!r})"
    script = _USER_SCRIPT.format(card=str(card_path), raw=str(tiny_study / "data" / "MNIST" / "raw"), load=load)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout.strip()) == pytest.approx(card["test_acc"], abs=1e-9)
    if fmt == "pt2":  # the modern format loads without any deprecation notice
        assert "Warning" not in proc.stderr, proc.stderr


def _cli(args: list[str]) -> int:
    """main(), with argparse's exit (usage errors) turned into the return code."""
    try:
        return main(args)
    except SystemExit as exc:
        return int(exc.code)


def test_sigterm_stops_an_export_as_ctrl_c_does(tiny_study, tmp_path, monkeypatch, capsys):
    """SIGTERM (a scheduler's stop, `kill`) while an export verifies its files: the export's
    clean-up runs as for Ctrl-C (no temporary folder, no folder made for it left), exit 143;
    SIGTERM's default ended the process without it. Then a Ctrl-C in a later command of the
    same process ends it with 130: no stop of an earlier command is carried over."""
    import harness.report
    from harness.runner import _workers_outcome

    out = tmp_path / "new" / "exp"
    code = ("import os, signal, sys\n"
            "import harness.export\n"
            "from harness.cli import main\n"
            "real = harness.export.verify_file\n"
            "harness.export.verify_file = lambda *a, **k: os.kill(os.getpid(), signal.SIGTERM) or real(*a, **k)\n"
            f"sys.exit(main(['export', {str(tiny_study / 'tiny.toml')!r}, '--out', {str(out)!r}]))\n")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 143 and proc.stderr.strip().splitlines()[-1] == "harness: interrupted", (
        proc.returncode, proc.stderr)
    assert not (tmp_path / "new").exists()  # neither the temporary folder nor the folders made for it

    _workers_outcome([143, 0], stopped_here=False)  # as a --jobs run whose worker was sent SIGTERM records it

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(harness.report, "write_report", ctrl_c)  # a command that installs no handler of its own
    assert main(["report", str(tiny_study / "tiny.toml"), "--out", str(tmp_path / "r.html"),
                 "--csv", str(tmp_path / "r.csv")]) == 130  # fmt: skip
    capsys.readouterr()


def test_the_run_of_k_workers_is_stopped_not_failed_by_what_its_signal_did_to_them():
    """The --jobs parent's outcome from its workers' exit codes. Stopped here: workers that
    exited 130 or 143, that the signal ended before their handler was installed (-2, -15), or
    that never started (None) were stopped, not failed; a worker's own failure still counts.
    Not stopped here: a worker stopped by a `kill` of its own stops the run with its status."""
    import signal

    from harness.runner import _workers_outcome, exit_status_after_stop, forget_stop

    forget_stop()
    stopped = _workers_outcome([130, 143, -signal.SIGTERM, -signal.SIGINT, None], stopped_here=True)
    assert (stopped.interrupted, stopped.bad_codes) == (True, ())
    assert _workers_outcome([143, 1], stopped_here=True).bad_codes == (1,)
    assert exit_status_after_stop() == 130  # the parent's own signal sets its status (none recorded here)
    killed = _workers_outcome([143, 0], stopped_here=False)
    assert (killed.interrupted, killed.bad_codes, exit_status_after_stop()) == (True, (), 143)
    forget_stop()
    interrupted = _workers_outcome([130, 0], stopped_here=False)
    assert (interrupted.interrupted, exit_status_after_stop()) == (True, 130)
    forget_stop()
    died = _workers_outcome([-signal.SIGTERM, None, 0], stopped_here=False)  # no handler ran: a failure
    assert (died.interrupted, died.bad_codes) == (False, (-signal.SIGTERM, None))
    assert _workers_outcome([0, 0], stopped_here=False) == type(died)(interrupted=False, workers=2)


def test_an_export_stopped_half_way_leaves_the_previous_files_as_they_were(tiny_study, tmp_path, monkeypatch, capsys):
    """Ctrl-C while the second format is verified: no new file and no temporary file is left,
    and an earlier export of the same trial stays byte for byte (never a model without its
    card, or a card that describes other files)."""
    import harness.export

    out = tmp_path / "exp"
    assert main(["export", str(tiny_study / "tiny.toml"), "--out", str(out)]) == 0
    for f in out.iterdir():  # an earlier export's files, told apart from what this one would write
        f.write_bytes(f.read_bytes() + b"\n# earlier export\n")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(Path(n).suffix for n in before) == [".json", ".onnx", ".pt2"]
    real_verify, calls = harness.export.verify_file, []

    def interrupted_second(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_verify(*args, **kwargs)

    monkeypatch.setattr(harness.export, "verify_file", interrupted_second)
    assert main(["export", str(tiny_study / "tiny.toml"), "--out", str(out)]) == 130  # "harness: interrupted"
    assert calls == ["pt2", "onnx"]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # into a folder that did not exist: the folders made for it go too (no empty --out left)
    calls.clear()
    assert main(["export", str(tiny_study / "tiny.toml"), "--out", str(tmp_path / "new" / "exp")]) == 130
    assert calls == ["pt2", "onnx"] and not (tmp_path / "new").exists()
    capsys.readouterr()

    # Ctrl-C between the final renames (the first model file moved into place): it waits until
    # the card is in place too, then stops; every file is this export's, none the earlier one's
    import os
    import signal

    real_replace, moved = os.replace, []

    def replace_then_ctrl_c(src, dst):
        real_replace(src, dst)
        moved.append(Path(dst).name)
        if len(moved) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # as if Ctrl-C came right after the first rename

    monkeypatch.setattr(harness.export.os, "replace", replace_then_ctrl_c)
    assert main(["export", str(tiny_study / "tiny.toml"), "--out", str(out)]) == 130
    monkeypatch.setattr(harness.export.os, "replace", real_replace)
    assert len(moved) == 3 and moved[-1].endswith(".json"), moved
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert after.keys() == before.keys() and all(after[n] != before[n] for n in after), "files of two exports mixed"
    card = json.loads(after[moved[-1]])
    for name in moved[:2]:  # the card describes the model files beside it
        assert hashlib.sha256(after[name]).hexdigest() in json.dumps(card), name
    for f in out.iterdir():
        f.write_bytes(before[f.name])
    capsys.readouterr()

    # A full disk while writing (an OSError with no file name, as ENOSPC is): one line, exit 2,
    # the earlier files as they were, no temporary folder left
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(harness.export, "write_frozen", disk_full)
    assert main(["export", str(tiny_study / "tiny.toml"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0], err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    # What a SIGKILL half way leaves (its own hidden temporary folder) does not stop the next export
    monkeypatch.undo()
    leftover = out / ".tiny-trial1.x.partial"
    leftover.mkdir()
    (leftover / "tiny-trial1.pt2").write_bytes(b"half written")
    assert main(["export", str(tiny_study / "tiny.toml"), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([*before, leftover.name])


def test_export_bad_inputs_write_nothing(tiny_study, tmp_path, capsys):
    study_file = str(tiny_study / "tiny.toml")
    study = _study(tiny_study)
    not_complete = [t.number for t in study.get_trials() if t.state != optuna.trial.TrialState.COMPLETE]
    assert not_complete, "the tiny study is expected to reject at least one candidate"
    rejected = [t for t in study.get_trials() if "rejected" in t.user_attrs]
    assert rejected, "the tiny study is expected to reject a candidate before training"
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    out = ["--out", str(tmp_path / "x")]
    cases = [
        (["--trial", "999", *out], "has no trial 999"),
        (["--trial", str(not_complete[0]), *out], "not COMPLETE"),
        # says why, in the words the run used, not as an Optuna state ("PRUNED")
        (["--trial", str(rejected[0].number), *out], f"trial {rejected[0].number}: rejected before training ("),
        (["--out", str(a_file / "sub")], "is not a folder"),
        (["--trial", "1", "--best", *out], "not allowed with"),
        (["--format", "pdf", *out], "invalid choice"),
        (["--storage", f"sqlite:///{tmp_path / 'nope.db'}", *out], "no study database yet"),
    ]
    before = sorted(p.name for p in tmp_path.iterdir())
    for extra, words in cases:
        assert _cli(["export", study_file, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, (extra, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def _damage(path: Path, how: str) -> None:
    if how == "missing":
        path.unlink()
    elif how == "random-bytes":
        path.write_bytes(bytes(range(256)) * 4)
    elif how == "a-list":
        torch.save([1, 2], path)
    else:
        state = torch.load(path, weights_only=True)
        first = next(iter(state))
        if how == "other-keys":
            state = {"foo": torch.zeros(3)}
        elif how == "extra-key":
            state["extra"] = torch.zeros(1)
        elif how == "wrong-shape":
            state[first] = torch.zeros(1)
        torch.save(state, path)


@pytest.mark.parametrize("how, words", [
    ("missing", "ArtifactNotFound"), ("random-bytes", "UnpicklingError"), ("a-list", "holds a list, not a state dict"),
    ("other-keys", "Missing key(s)"), ("extra-key", 'Unexpected key(s) in state_dict: "extra"'),
    ("wrong-shape", "size mismatch for"),
])  # fmt: skip
def test_export_of_damaged_weights_is_a_one_line_error_that_writes_nothing(tiny_study, tmp_path, capsys, how, words):
    """A weights artifact that is gone, not a checkpoint, or not the trial's architecture's
    tensors: one line naming the trial, exit 2, and the study folder and --out untouched."""
    import shutil

    folder = tmp_path / "study"
    shutil.copytree(tiny_study, folder)
    trial = _study(folder).best_trial
    _damage(folder / "tiny.artifacts" / trial.user_attrs[WEIGHTS_ATTR], how)
    before = snapshot(tmp_path)
    assert _cli(["export", str(folder / "tiny.toml"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"harness: error: trial {trial.number}") and words in err, err
    assert "Traceback" not in err
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "out").exists()


def test_export_flags_weights_that_no_longer_score_the_recorded_accuracy(tiny_study, tmp_path, capsys):
    """Stored weights changed since the trial scored them (the classifier negated): the eager
    model misses the recorded test accuracy, so the export says MISMATCH, its card records the
    failed check, and the exit status is 1; the files themselves still match that model."""
    import shutil

    folder = tmp_path / "study"
    shutil.copytree(tiny_study, folder)
    trial = _study(folder).best_trial
    path = folder / "tiny.artifacts" / trial.user_attrs[WEIGHTS_ATTR]
    state = torch.load(path, weights_only=True)
    state["classifier.weight"] = -state["classifier.weight"]
    torch.save(state, path)
    out = tmp_path / "out"
    assert _cli(["export", str(folder / "tiny.toml"), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "MISMATCH (" in captured.out and "does not reproduce the recorded accuracy" in captured.err
    card = json.loads((out / f"tiny-trial{trial.number}.json").read_text())
    assert card["eager_check"]["passed"] is False and card["eager_check"]["images_apart"] > 0
    assert all(v["passed"] for v in card["verification"].values())


def test_export_flags_a_frozen_file_that_predicts_otherwise(tiny_study, tmp_path, monkeypatch, capsys):
    """A .pt2 file whose network is not the eager model's (here one class's bias raised, so it
    answers 3 for every image) fails its per-image check: MISMATCH, exit 1, the card's pt2
    verification failed while ONNX's passed."""
    import copy

    import harness.export

    real_write = harness.export.write_frozen

    def write_a_different_pt2(model, fmt, path):
        if fmt == "pt2":
            model = copy.deepcopy(model)
            with torch.no_grad():
                model.classifier.bias[3] += 1000.0
        real_write(model, fmt, path)

    monkeypatch.setattr(harness.export, "write_frozen", write_a_different_pt2)
    out = tmp_path / "out"
    assert _cli(["export", str(tiny_study / "tiny.toml"), "--out", str(out)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines if ln.endswith("MISMATCH")] == ["pt2"], lines
    (card_path,) = out.glob("*.json")
    card = json.loads(card_path.read_text())
    assert card["eager_check"]["passed"] is True
    assert card["verification"]["pt2"]["passed"] is False and card["verification"]["onnx"]["passed"] is True
    assert card["verification"]["pt2"]["predictions_differing_from_pytorch"] > 0


def test_best_trial_for_export_is_chosen_on_validation_never_on_test():
    """``--best``: the highest validation accuracy (ties: fewer parameters) among COMPLETE trials
    within the budget, whatever their test accuracies say; over-budget ones never."""
    from harness.export import select_trial

    study = optuna.create_study(direction="maximize")
    study.set_user_attr("budget", 10_000)

    def add(val: float, test: float, params: int) -> None:
        study.add_trial(optuna.trial.create_trial(
            value=val, user_attrs={"val_acc": val, "test_acc": test, "trainable_params": params}))  # fmt: skip

    add(0.990, 0.980, 5_000)  # best on validation
    add(0.985, 0.995, 4_000)  # best on test
    add(0.995, 0.999, 12_000)  # over the budget
    add(0.990, 0.970, 6_000)  # ties the first on validation, larger
    assert select_trial(study).number == 0


def test_export_with_no_feasible_trial(tmp_path, capsys):
    """Every candidate over a tiny budget: nothing trained, export says so, exit 2."""
    make_synthetic_mnist(tmp_path / "data", n_train=200, n_test=50)
    study_file = tmp_path / "none.toml"
    study_file.write_text(STUDY.replace('name = "tiny"', 'name = "none"').replace("budget = 20000", "budget = 50"))
    assert main(["run", str(study_file), "--device", "cpu", "--quiet", "--trials", "2"]) == 0
    capsys.readouterr()
    assert main(["export", str(study_file), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no completed trial within the budget of 50 params" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_report_has_every_trial_and_the_figures(tiny_study, tmp_path):
    html_path, csv_path = tmp_path / "r.html", tmp_path / "t.csv"
    assert main(["report", str(tiny_study / "tiny.toml"), "--out", str(html_path), "--csv", str(csv_path)]) == 0
    import pandas as pd

    frame = pd.read_csv(csv_path)
    study = _study(tiny_study)
    assert sorted(frame["number"]) == [t.number for t in study.get_trials()]
    assert frame.loc[frame["baseline"], "params"].tolist() == [19290]
    origins = dict(zip(frame["number"], frame["origin"]))
    assert origins == {t.number: ("baseline" if t.number == 0 else "sampler") for t in study.get_trials()}
    page = html_path.read_text()
    for title in ("Accuracy against parameter count", "Pareto front", "Optimisation history",
                  "Parameter importances", "Top ", "budget 20,000", "target 99.40%", "baseline (seed network)"):  # fmt: skip
        assert title in page, title
    assert "<script" in page and not re.search(r"<script[^>]*\ssrc=", page)  # self-contained: plotly.js inlined
    import csv

    rows = list(csv.DictReader(csv_path.open()))
    for col in ("params", "test_images", "epochs_run", "train_images"):  # counts as ints: 19290, not 19290.0
        assert all(re.fullmatch(r"\d*", r[col]) for r in rows), [r[col] for r in rows]
    assert rows[0]["params"] == "19290"
    # integer parameters as integers too (a width of 32, not 32.0), others as they are
    kinds = {n: d for t in study.get_trials() for n, d in t.distributions.items()}
    ints = [n for n, d in kinds.items() if isinstance(d, optuna.distributions.IntDistribution)
            or (isinstance(d, optuna.distributions.CategoricalDistribution)
                and all(type(c) is int for c in d.choices))]  # fmt: skip
    assert ints and all(re.fullmatch(r"-?\d*", r[f"param_{n}"]) for n in ints for r in rows), ints
    floats = [n for n, d in kinds.items() if isinstance(d, optuna.distributions.FloatDistribution)]
    assert floats and any("." in r[f"param_{n}"] for n in floats for r in rows)
    # what each trial trained on, exactly as recorded; empty where none was (a rejection trains nothing)
    recorded = {str(t.number): str(t.user_attrs["train_images"]) for t in study.get_trials() if "train_images" in t.user_attrs}
    assert recorded and {r["number"]: r["train_images"] for r in rows if r["train_images"]} == recorded
    assert {r["teacher"] for r in rows} == {""}  # no teacher in this study (test_distill checks one)
    # the top-trials table: every completed trial, best validation first (ties: fewer parameters)
    table = page[page.index("<table"):page.index("</table>")]
    ranked = [int(n) for n in re.findall(r"<tr><td>\d+</td><td>(\d+)", table)]
    done = frame[frame["outcome"] == "complete"].sort_values(["val_acc", "params"], ascending=[False, True])
    assert len(ranked) >= 2 and ranked == done["number"].tolist()
    assert frame.set_index("number").loc[ranked, "val_acc"].is_monotonic_decreasing


def test_accuracy_figure_scales_to_trained_points_and_marks_far_rejections():
    import pandas as pd

    from harness.report import _accuracy_figure, trials_frame

    frame = trials_frame(optuna.create_study())
    rows = [
        dict(number=0, outcome="complete", baseline=True, params=19290, val_acc=0.99, test_acc=0.99),
        dict(number=1, outcome="complete", baseline=False, params=8000, val_acc=0.985, test_acc=0.984),
        dict(number=2, outcome="over_budget", baseline=False, params=86000, val_acc=float("nan"), test_acc=float("nan")),
        dict(number=3, outcome="over_budget", baseline=False, params=21000, val_acc=float("nan"), test_acc=float("nan")),
    ]
    frame = pd.DataFrame([{**{c: "" for c in frame.columns}, **r} for r in rows])
    fig = _accuracy_figure(frame, budget=20000, target=0.994)
    lo, hi = fig.layout.xaxis.range
    assert lo == 0 and 20000 < hi < 25000  # the trained points and the budget fill the width
    far = [t for t in fig.data if t.name == "rejected far over budget (drawn at the edge)"]
    near = [t for t in fig.data if t.name == "rejected over budget (not trained)"]
    assert far and list(far[0].x) == [pytest.approx(hi / 1.03)] and "86000" in far[0].hovertext[0].replace(",", "")
    assert list(near[0].x) == [21000]


def test_report_bad_output_folder(tiny_study, tmp_path, capsys):
    rc = main(["report", str(tiny_study / "tiny.toml"), "--out", str(tmp_path / "missing" / "r.html")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "missing").exists()


def test_pareto_front_keeps_only_undominated():
    import math

    import pandas as pd

    from harness.report import pareto_front

    frame = pd.DataFrame({
        "number": [0, 1, 2, 3, 4, 5, 6], "outcome": ["complete"] * 4 + ["over_budget", "pruned", "duplicate"],
        "params": [1000, 2000, 1500, 3000, 50_000, 500, 400], "val_acc": [0.97, 0.99, 0.96, 0.985, math.nan, 0.995, 0.999],
    })  # fmt: skip
    # a pruned trial's score is an early epoch's and a duplicate trained nothing: neither is on the front
    assert pareto_front(frame)["number"].tolist() == [0, 1]


def test_cli_export_help_says_best_means_validation():
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "export", "--help"], capture_output=True, text=True)
    text = " ".join(proc.stdout.split())  # argparse wraps lines
    assert "VALIDATION accuracy" in text and "within the budget" in text


def test_dashboard_bad_inputs(tiny_study, tmp_path, capsys):
    import socket

    study_file = str(tiny_study / "tiny.toml")
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        assert _cli(["dashboard", study_file, "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and err.count("\n") == 1
    assert _cli(["dashboard", study_file, "--port", "70000"]) == 2
    assert "--port must be in 1..65535" in capsys.readouterr().err
    missing = f"sqlite:///{tmp_path / 'none.db'}"
    assert _cli(["dashboard", study_file, "--storage", missing]) == 2
    assert "no study database yet" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()


def test_export_of_a_repeat_proposal_names_the_trial_it_repeats():
    """A repeat proposal of a trial still training is PRUNED with ``duplicate_of``: export points
    at the original (as for a COMPLETE repeat), not at the state of the repeat."""
    from harness.errors import HarnessError
    from harness.export import select_trial

    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.99, user_attrs={"trainable_params": 5_000}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, user_attrs={"duplicate_of": 0}))
    with pytest.raises(HarnessError, match="trial 1 repeats trial 0 and was not trained itself: export trial 0"):
        select_trial(study, 1)


def test_sigterm_stops_a_report_as_ctrl_c_does_and_leaves_no_temporary_file(tiny_study, tmp_path):
    """SIGTERM while report writes its files: the temporary files are removed, the outputs not
    made, "harness: interrupted", exit 143 (SIGTERM's default ended the process with r.html.tmp
    left beside the output)."""
    out = tmp_path / "out"
    out.mkdir()
    code = ("import os, pathlib, signal, sys\n"
            "from harness.cli import main\n"
            "real = pathlib.Path.write_text\n"
            "def write_then_stop(self, *a, **k):\n"
            "    written = real(self, *a, **k)\n"
            "    if self.name.endswith('.tmp'):\n"
            "        os.kill(os.getpid(), signal.SIGTERM)\n"
            "    return written\n"
            "pathlib.Path.write_text = write_then_stop\n"
            f"sys.exit(main(['report', {str(tiny_study / 'tiny.toml')!r}, '--out', {str(out / 'r.html')!r}, "
            f"'--csv', {str(out / 't.csv')!r}]))\n")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 143 and proc.stderr.strip().splitlines() == ["harness: interrupted"], (
        proc.returncode, proc.stderr)
    assert list(out.iterdir()) == []


def test_a_stop_lost_during_a_report_still_ends_it_as_stopped(tiny_study, tmp_path, monkeypatch, capsys):
    """Ctrl-C whose KeyboardInterrupt is lost inside a garbage-collector callback while report
    writes: the handler ignores later signals, so the command could not be stopped and ended
    0 as if no stop came. Now it ends as stopped (130), its files whole."""
    import os
    import signal
    import weakref

    import harness.report

    real = harness.report.write_report

    class Garbage:
        pass

    def write_with_a_stop_lost(*args, **kwargs):
        garbage = Garbage()
        weakref.finalize(garbage, os.kill, os.getpid(), signal.SIGINT)
        del garbage
        return real(*args, **kwargs)

    monkeypatch.setattr(harness.report, "write_report", write_with_a_stop_lost)
    assert main(["report", str(tiny_study / "tiny.toml"), "--out", str(tmp_path / "r.html"),
                 "--csv", str(tmp_path / "r.csv")]) == 130  # fmt: skip
    assert capsys.readouterr().err.strip().splitlines() == ["harness: interrupted"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv", "r.html"]
