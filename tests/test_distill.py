"""Knowledge distillation (``train.teacher``): the loss, the teacher file's checks, and a
teacher used end to end by `harness run`, `retrain` and `export` (synthetic MNIST)."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import optuna
import pytest
import torch
from torch import nn

from harness.cli import main
from harness.config import TrainConfig
from harness.data import load_splits
from harness.model import build
from harness.train import fit, normalize
from search_spaces import get_search_space
from tests.test_cli_errors import _snapshot

CFG = TrainConfig(epochs=2, batch_size=50, lr=0.05, rotation=0, translate=0, scale=0)


def _teacher() -> nn.Module:
    torch.manual_seed(7)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _train(data, cfg: TrainConfig, teacher: nn.Module | None) -> dict[str, torch.Tensor]:
    model = build(get_search_space("seed").baseline_spec(), seed=3)
    fit(model, data, cfg, seed=1, teacher=teacher)
    return _weights(model)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class _Recording(nn.Module):
    """Wraps a network and keeps its last input and output."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        self.x, self.out = x.detach().clone(), self.net(x)
        return self.out


def test_step_loss_is_the_weighted_sum_of_cross_entropy_and_softened_kl(synthetic_root):
    """(1 - w) * CE(labels, smoothed) + w * T^2 * KL(teacher || network), KL of the softmaxes at
    temperature T, averaged over the batch; the teacher sees the very augmented images."""
    from harness.train import _step_loss, normalize

    data = load_splits(synthetic_root, val_size=100)
    torch.manual_seed(0)
    model = _Recording(build(get_search_space("seed").baseline_spec(), seed=3))
    teacher = _Recording(_teacher())
    w, t, ls = 0.3, 2.5, 0.1
    cfg = dataclasses.replace(CFG, rotation=10.0, translate=0.1, teacher="t.pt2", distill_weight=w,
                              distill_temperature=t, label_smoothing=ls)  # fmt: skip
    idx = torch.arange(0, 40)
    loss = _step_loss(model, data, cfg, teacher)(idx)
    assert torch.equal(model.x, teacher.x)  # augmented once, seen by both
    assert not torch.equal(model.x, normalize(data.train_x[idx]))  # augmented, not the raw images
    s, q = model.out.detach().double(), teacher.out.detach().double()
    p_teacher = torch.softmax(q / t, 1)
    kl = (p_teacher * (p_teacher.log() - torch.log_softmax(s / t, 1))).sum(1).mean()
    onehot = torch.nn.functional.one_hot(data.train_y[idx], 10).double() * (1 - ls) + ls / 10
    ce = -(onehot * torch.log_softmax(s, 1)).sum(1).mean()
    assert loss.item() == pytest.approx(((1 - w) * ce + w * t * t * kl).item(), rel=1e-5)


def test_full_distillation_weight_learns_from_the_teacher_only(synthetic_root):
    """At distill_weight 1 the labels play no part: permuting them changes no weight. At 0.5 they
    do, and the teacher does too (training without it ends elsewhere)."""
    data = load_splits(synthetic_root, val_size=100)
    shuffled = dataclasses.replace(data, train_y=data.train_y[torch.randperm(len(data.train_y))])
    teacher = _teacher()
    only = dataclasses.replace(CFG, teacher="t.pt2", distill_weight=1.0)
    assert _same(_train(data, only, teacher), _train(shuffled, only, teacher))
    half = dataclasses.replace(CFG, teacher="t.pt2", distill_weight=0.5)
    assert not _same(_train(data, half, teacher), _train(shuffled, half, teacher))
    assert not _same(_train(data, half, teacher), _train(data, CFG, None))


def test_distillation_pulls_predictions_towards_the_teacher(synthetic_root):
    """Trained on the teacher alone, the network agrees with it on unseen images (the teacher, an
    untrained linear map, spreads its answers over the classes: its most common one is 1 in 6);
    trained on the labels alone, it does not."""
    from harness.train import normalize

    data = load_splits(synthetic_root, val_size=100)
    teacher = _teacher()
    x = normalize(data.test_x)
    agreement = {}
    for name, tch in (("teacher", teacher), ("labels", None)):
        model = build(get_search_space("seed").baseline_spec(), seed=3)
        cfg = dataclasses.replace(CFG, epochs=8, lr=0.2, teacher="t.pt2" if tch else "", distill_weight=1.0)
        fit(model, data, cfg, seed=1, teacher=tch)
        with torch.no_grad():
            agreement[name] = (model.eval()(x).argmax(1) == teacher(x).argmax(1)).float().mean().item()
    assert agreement["teacher"] > 0.5 and agreement["labels"] < 0.2, agreement


def test_clean_epochs_keep_the_teacher_on_the_images_the_network_sees(synthetic_root):
    """With train.clean_epochs the clean step is distilled too: in every epoch the teacher sees
    exactly the network's training images, augmented first, as stored in the last epoch."""
    data = load_splits(synthetic_root, val_size=100)
    as_stored = {normalize(data.train_x[i : i + 1])[0].numpy().tobytes() for i in range(len(data.train_x))}
    cfg = dataclasses.replace(CFG, rotation=10.0, translate=0.1, teacher="t.pt2", clean_epochs=1)
    inputs: dict[str, dict[int, list[bytes]]] = {"network": {}, "teacher": {}}
    epoch = [1]

    def recorder(who):
        def record(module, args):
            if who == "teacher" or module.training:  # not the network's validation passes
                inputs[who].setdefault(epoch[0], []).extend(x.numpy().tobytes() for x in args[0])
        return record

    model = build(get_search_space("seed").baseline_spec(), seed=3)
    model.register_forward_pre_hook(recorder("network"))
    teacher = _teacher()
    teacher.register_forward_pre_hook(recorder("teacher"))
    fit(model, data, cfg, seed=1, teacher=teacher, on_epoch=lambda e, acc: epoch.__setitem__(0, e + 1))
    assert inputs["teacher"] == inputs["network"] and sorted(inputs["network"]) == [1, 2]
    assert not any(x in as_stored for x in inputs["network"][1])
    assert all(x in as_stored for x in inputs["network"][2])


def test_fit_refuses_a_teacher_it_was_not_told_of_and_the_reverse(synthetic_root):
    data = load_splits(synthetic_root, val_size=100)
    model = build(get_search_space("seed").baseline_spec())
    with pytest.raises(ValueError, match="no teacher network"):
        fit(model, data, dataclasses.replace(CFG, teacher="t.pt2"))
    with pytest.raises(ValueError, match="a teacher network"):
        fit(model, data, CFG, teacher=_teacher())


# ---- end to end through the command line ---------------------------------------------------

STUDY = """
[study]
name = "{name}"
budget = 20000
n_trials = {n}
{extra}
[data]
val_size = {val}
[train]
epochs = 1
batch_size = 100
rotation = 0.0
translate = 0.0
scale = 0.0
{train}
"""


def _study(folder: Path, name: str, *, val: int = 100, n: int = 2, extra: str = "", train: str = "") -> Path:
    path = folder / f"{name}.toml"
    path.write_text(STUDY.format(name=name, val=val, n=n, extra=extra, train=train))
    return path


def _run(path: Path, data: Path, *extra: str) -> int:
    return main(["run", str(path), "--data-dir", str(data), "--device", "cpu", "--quiet", *extra])


@pytest.fixture(scope="module")
def teacher_files(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(data root, a search trial's .pt2 (held out: the last 100 images), a retrained one's (none))."""
    from tests.conftest import make_synthetic_mnist

    folder = tmp_path_factory.mktemp("teacher")
    data = make_synthetic_mnist(tmp_path_factory.mktemp("data"))
    study = _study(folder, "teach", n=1)
    assert _run(study, data) == 0
    out = folder / "exports"
    assert main(["export", str(study), "--trial", "0", "--format", "pt2", "--out", str(out), "--data-dir", str(data)]) == 0
    assert main(["retrain", str(study), "--top", "1", "--seeds", "1", "--data-dir", str(data), "--device", "cpu"]) == 0
    assert main(["export", str(study), "--trial", "0", "--seed", "0", "--format", "pt2", "--out", str(out),
                 "--data-dir", str(data)]) == 0  # fmt: skip
    return data, out / "teach-trial0.pt2", out / "teach-trial0-seed0.pt2"


def test_export_cards_say_which_training_images_the_weights_never_saw(teacher_files):
    _, searched, retrained = teacher_files
    assert json.loads(searched.with_suffix(".json").read_text())["held_out_train_images"] == 100
    assert json.loads(retrained.with_suffix(".json").read_text())["held_out_train_images"] == 0


def test_run_and_retrain_distil_from_the_teacher_and_record_its_file(teacher_files, tmp_path, capsys):
    data, searched, _ = teacher_files
    teacher = tmp_path / "t" / "teacher.pt2"
    teacher.parent.mkdir()
    shutil.copy(searched, teacher)
    shutil.copy(searched.with_suffix(".json"), teacher.with_suffix(".json"))
    sha = hashlib.sha256(teacher.read_bytes()).hexdigest()
    path = _study(tmp_path, "student", extra='search_recipe = ["distill_weight", "distill_temperature"]',
                  train='teacher = "t/teacher.pt2"')  # fmt: skip
    capsys.readouterr()
    assert _run(path, data) == 0
    assert f"sampler stream 0, distilling from {teacher}\n" in capsys.readouterr().out  # the file, wherever run from
    study = optuna.load_study(study_name="student", storage=f"sqlite:///{tmp_path / 'student.db'}")
    trained = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(trained) == 2
    for t in trained:
        assert t.user_attrs["teacher"]["sha256"] == sha and t.user_attrs["teacher"]["held_out_train_images"] == 100
        recipe = t.user_attrs["recipe"]
        assert recipe["teacher"] == "t/teacher.pt2"
        # the sampled weight and temperature trained the network (the baseline keeps the study's)
        sampled = (0.5, 4.0) if t.user_attrs["baseline"] else (t.params["distill_weight"], t.params["distill_temperature"])
        assert (recipe["distill_weight"], recipe["distill_temperature"]) == sampled
    retrain = ["retrain", str(path), "--top", "1", "--no-baseline", "--data-dir", str(data), "--device", "cpu"]
    teacher.with_suffix(".json").unlink()  # a retrain needs no card: what the search recorded names the teacher
    assert main([*retrain, "--seeds", "1"]) == 0
    record = next(v for k, v in optuna.load_study(study_name="student", storage=f"sqlite:///{tmp_path / 'student.db'}")
                  .user_attrs.items() if k.startswith("retrain"))  # fmt: skip
    assert record["teacher"]["sha256"] == sha and record["recipe"]["teacher"] == "t/teacher.pt2"
    assert (record["teacher"]["study"], record["teacher"]["trial"], record["teacher"]["held_out_train_images"]) == ("teach", 0, 100)
    out = tmp_path / "exp"
    assert main(["export", str(path), "--trial", str(record["trial"]), "--seed", "0", "--format", "pt2", "--out", str(out),
                 "--data-dir", str(data)]) == 0  # fmt: skip
    card = json.loads(next(out.glob("*.json")).read_text())
    assert card["teacher"]["sha256"] == sha and card["held_out_train_images"] == 0
    assert main(["results", str(path), "--out", str(tmp_path / "r.md"), "--exports", str(tmp_path / "rexp"),
                 "--data-dir", str(data)]) == 0  # fmt: skip
    assert "distilled from teacher.pt2 (teach trial 0, " in (tmp_path / "r.md").read_text()
    assert main(["report", str(path), "--out", str(tmp_path / "r.html"), "--csv", str(tmp_path / "t.csv")]) == 0
    rows = [r for r in csv.DictReader((tmp_path / "t.csv").open()) if r["outcome"] == "complete"]
    assert len(rows) == 2 and all(Path(r["teacher"]) == teacher and r["teacher_sha256"] == sha for r in rows), rows

    # The same file spelled another way (absolute) is the same teacher: the study opens
    absolute = path.read_text().replace('teacher = "t/teacher.pt2"', f'teacher = "{teacher}"')
    path.write_text(absolute)
    capsys.readouterr()
    assert main(["status", str(path)]) == 0
    assert f"distilled from teacher.pt2 (teach trial 0, sha256 {sha[:12]}..." in capsys.readouterr().out
    path.write_text(absolute.replace(f'teacher = "{teacher}"', 'teacher = "t/teacher.pt2"'))

    # Another teacher file under the same name: neither a resumed search nor a retrain mixes it in
    teacher.write_bytes(teacher_files[2].read_bytes())
    before = _snapshot(tmp_path)
    capsys.readouterr()
    for argv, words in ((["run", str(path), "--data-dir", str(data), "--device", "cpu", "--trials", "1"],
                         ["another teacher file", "t/teacher.pt2"]),
                        ([*retrain, "--seeds", "2"], [f"trial {record['trial']}", "trained in the search", sha[:12]])):  # fmt: skip
        assert main(argv) == 2
        captured = capsys.readouterr()
        err = captured.err.strip().splitlines()
        assert len(err) == 1 and all(w in err[0] for w in words), (words, err)
        assert captured.out == ""
    assert _snapshot(tmp_path) == before
    # No teacher file at all: a resumed run says so in one line, before anything is written
    teacher.unlink()
    before = _snapshot(tmp_path)
    assert main(["run", str(path), "--data-dir", str(data), "--device", "cpu", "--trials", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "teacher.pt2: no such file" in err[0], err
    assert _snapshot(tmp_path) == before


def _bad_teacher(folder: Path, kind: str, files) -> Path:
    data, searched, retrained = files
    target = folder / "bad.pt2"
    if kind == "not-an-export":
        target.write_bytes(b"PK\x03\x04 not a program")
    elif kind == "state-dict":  # torch.save's format is a zip archive too
        torch.save(nn.Linear(784, 10).state_dict(), target)
    elif kind == "five-classes":
        program = torch.export.export(nn.Sequential(nn.Flatten(), nn.Linear(784, 5)).eval(), (torch.zeros(2, 1, 28, 28),),
                                      dynamic_shapes=({0: torch.export.Dim("batch")},))  # fmt: skip
        torch.export.save(program, str(target))
    elif kind == "fixed-batch":  # exported for batches of 3 only: the first probe's size
        program = torch.export.export(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval(), (torch.zeros(3, 1, 28, 28),))
        torch.export.save(program, str(target))
    elif kind == "card-of-another-file":  # a retrained model beside a search trial's card
        shutil.copy(retrained, target)
    elif kind == "folder":
        target.mkdir()
        return target
    elif kind == "card-without-pt2":  # the card of an ONNX-only export of the same trial
        shutil.copy(searched, target)
        card = json.loads(searched.with_suffix(".json").read_text())
        card["files"] = {"onnx": {"path": "bad.onnx", "sha256": "0" * 64, "bytes": 1}}
        target.with_suffix(".json").write_text(json.dumps(card))
        return target
    elif kind == "card-not-an-object":  # valid JSON, but no model card
        shutil.copy(searched, target)
        target.with_suffix(".json").write_text("[1, 2]")
        return target
    elif kind == "no-card":
        shutil.copy(searched, target)
        return target
    else:  # "saw-validation": the retrained model learned every training image
        shutil.copy(retrained, target)
        shutil.copy(retrained.with_suffix(".json"), target.with_suffix(".json"))
        return target
    shutil.copy(searched.with_suffix(".json"), target.with_suffix(".json"))  # a card that would pass
    return target


@pytest.mark.parametrize("kind,val,words", [
    ("not-an-export", 100, ["bad.pt2", "not a torch.export program"]),
    ("state-dict", 100, ["bad.pt2", "not a torch.export program"]),
    ("five-classes", 100, ["bad.pt2", "(3, 5)", "(3, 10)"]),
    ("fixed-batch", 100, ["bad.pt2", "does not take (N, 1, 28, 28) images"]),
    ("folder", 100, ["bad.pt2", "a folder, not a file"]),
    ("card-not-an-object", 100, ["bad.pt2", "not valid JSON"]),
    ("card-of-another-file", 100, ["bad.pt2", "describes another file"]),
    ("card-without-pt2", 100, ["bad.pt2", "bad.json lists no .pt2 file (it lists onnx)"]),
    ("no-card", 100, ["bad.pt2", "model card", "bad.json", "missing"]),
    ("saw-validation", 100, ["bad.pt2", "retrained on every training image", "last 100", "leak"]),
    ("held-out-too-few", 200, ["all but the last 100", "last 200", "val_size >= 200"]),
])  # fmt: skip
def test_run_refuses_a_bad_or_leaking_teacher_and_writes_nothing(teacher_files, tmp_path, capsys, kind, val, words):
    if kind == "held-out-too-few":
        shutil.copy(teacher_files[1], tmp_path / "bad.pt2")
        shutil.copy(teacher_files[1].with_suffix(".json"), tmp_path / "bad.json")
    else:
        _bad_teacher(tmp_path, kind, teacher_files)
    path = _study(tmp_path, "student", val=val, train='teacher = "bad.pt2"')
    before = _snapshot(tmp_path)
    assert _run(path, teacher_files[0]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert _snapshot(tmp_path) == before
