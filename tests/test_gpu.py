"""The CUDA paths, where a GPU is: `pytest -m gpu` (benchmarks/gpu_check.sh runs them).

Every other test pins ``--device cpu``. These train on ``cuda`` on tiny synthetic data:
a study through the CLI, export and verification of the GPU-trained trial, training with
amp off and in bf16, ``torch.compile`` (default and reduce-overhead, i.e. CUDA graphs with
``cudagraph_mark_step_begin``; fused SGD on CUDA), distillation from a .pt2 teacher moved to
the GPU, ``--jobs 2`` sharing one GPU, and several seeds of one candidate in lockstep.
Without CUDA they skip, saying why.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path

import optuna
import pytest
import torch

from harness.cli import main
from harness.config import TrainConfig
from harness.data import load_splits
from harness.model import build
from harness.train import evaluate, fit, precision_settings
from search_spaces import baseline_spec
from tests.conftest import make_synthetic_mnist

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here; run `pytest -m gpu` on one"),
]

STUDY = """
[study]
name = "{name}"
search_space = "compact"
budget = 20000
n_trials = {n}
seed = 4
[sampler]
name = "random"
[pruner]
name = "none"
[data]
dir = "data"
val_size = 100
[train]
epochs = 2
batch_size = 50
"""


@pytest.fixture(scope="module")
def gpu_study(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("gpu")
    make_synthetic_mnist(folder / "data", n_train=600, n_test=300)
    (folder / "g.toml").write_text(STUDY.format(name="g", n=3))
    assert main(["run", str(folder / "g.toml"), "--device", "cuda", "--quiet"]) == 0
    return folder


def test_study_trains_on_the_gpu_and_records_precision(gpu_study):
    study = optuna.load_study(study_name="g", storage=f"sqlite:///{gpu_study / 'g.db'}")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert done
    name = torch.cuda.get_device_name(0)
    for t in done:
        assert t.user_attrs["device"] == name
        assert t.user_attrs["precision"] == {"train_autocast": "off", "train_fp32": "ieee",
                                             "scoring": "float32 (ieee), no autocast"}  # fmt: skip
        assert 0.0 <= t.user_attrs["test_acc"] <= 1.0


def test_export_of_a_gpu_trained_trial_verifies(gpu_study):
    out = gpu_study / "exp"
    assert main(["export", str(gpu_study / "g.toml"), "--out", str(out)]) == 0
    (card_path,) = out.glob("*.json")
    card = json.loads(card_path.read_text())
    assert card["trained_on"] == torch.cuda.get_device_name(0)
    assert card["eager_check"]["passed"]  # CPU float32 reproduces the IEEE-scored GPU record
    assert card["verification"]["pt2"]["predictions_differing_from_pytorch"] == 0
    assert card["verification"]["onnx"]["passed"]
    assert card["versions"]["cuda"] == torch.version.cuda and card["versions"]["cudnn"]


@pytest.mark.parametrize("amp", ["off", "bf16"])
@pytest.mark.parametrize("compile_mode", ["off", "default", "reduce-overhead"])
def test_fit_on_cuda_learns(tmp_path, amp, compile_mode):
    make_synthetic_mnist(tmp_path, n_train=600, n_test=200)
    data = load_splits(tmp_path, torch.device("cuda"), val_size=100)
    # No shifts: the toy classes are bars 2 rows apart, so a shift of up to 2.8 px makes
    # neighbours ambiguous (0.38-0.51 on an H200 with the default shift; 1.0 without, on CPU).
    cfg = TrainConfig(epochs=3, batch_size=50, lr=0.05, amp=amp, compile=compile_mode, translate=0.0)
    model = build(baseline_spec(), seed=1)
    result = fit(model, data, cfg, seed=1)
    assert next(model.parameters()).is_cuda
    assert result.val_acc > 0.9 and evaluate(model, data.test_x, data.test_y) > 0.9
    assert precision_settings(cfg, data.device)["train_autocast"] == amp


@pytest.mark.parametrize("compile_mode", ["off", "reduce-overhead"])
def test_clean_epochs_on_cuda(tmp_path, compile_mode):
    """train.clean_epochs on the GPU: the last epoch's step is a second compiled graph (CUDA
    graphs with reduce-overhead) that trains on the images as they are, and the run learns; the
    epochs before it are the run without clean epochs (the CPU test checks which images)."""
    make_synthetic_mnist(tmp_path, n_train=600, n_test=200)
    data = load_splits(tmp_path, torch.device("cuda"), val_size=100)
    cfg = TrainConfig(epochs=3, batch_size=50, lr=0.05, compile=compile_mode, translate=0.0, rotation=5.0)
    clean = fit(build(baseline_spec(), seed=1), data, dataclasses.replace(cfg, clean_epochs=1), seed=1)
    plain = fit(build(baseline_spec(), seed=1), data, cfg, seed=1)
    assert clean.val_acc > 0.9 and all(math.isfinite(v) for v in clean.train_loss)
    if compile_mode == "off":  # cuDNN's backward need not round alike twice: close, not equal
        assert clean.train_loss[:2] == pytest.approx(plain.train_loss[:2], rel=1e-3)


def test_lockstep_on_cuda_keeps_each_runs_random_streams(tmp_path, monkeypatch):
    """study.repeats' engine on the GPU: augmentation and dropout draw from CUDA's generator,
    which each run saves and restores around the other's epochs, and the batch order from the
    run's own generator, so every step of a run in lockstep gets exactly the batch and starts
    from exactly the random state fit() alone has there with its seed (CUDA's generator is a
    seed and a counter: exact, unlike the losses, which cuDNN need not round alike twice; on an
    H200 they drifted 0.6 % apart by epoch 2, so they are only compared coarsely)."""
    from harness import train
    from harness.objective import repeat_seeds
    from harness.train import fit_lockstep

    make_synthetic_mnist(tmp_path, n_train=600, n_test=200)
    data = load_splits(tmp_path, torch.device("cuda"), val_size=100)
    # no shift: it makes the synthetic bars ambiguous (see test_fit_on_cuda_learns)
    cfg = TrainConfig(epochs=3, batch_size=50, lr=0.05, rotation=10.0, translate=0.0, scale=0.1)
    steps = len(data.train_x) // cfg.batch_size
    states: list[tuple[torch.Tensor, ...]] = []  # each step's batch (per-image sums), torch's CPU and CUDA states
    real_augment = train.augment

    def recording_augment(x, *args):
        states.append((x.sum(dim=(1, 2, 3)), *(s.clone() for s in train._rng_states(x.device) if s is not None)))
        return real_augment(x, *args)

    monkeypatch.setattr(train, "augment", recording_augment)
    seeds = repeat_seeds(7, 2)
    alone, alone_states = [], []
    for s in seeds:
        states.clear()
        alone.append(fit(build(baseline_spec(), seed=s), data, cfg, seed=s))
        alone_states.append(list(states))
    states.clear()
    together = fit_lockstep([build(baseline_spec(), seed=s) for s in seeds], data, cfg, seeds=seeds)
    assert len(states) == len(seeds) * cfg.epochs * steps
    epochs = [states[i : i + steps] for i in range(0, len(states), steps)]  # run 0's epoch 1, run 1's, run 0's epoch 2, ...
    for k, (single, run) in enumerate(zip(alone, together, strict=True)):
        own = [state for epoch in epochs[k :: len(seeds)] for state in epoch]
        assert len(own) == len(alone_states[k])
        for step, (got, want) in enumerate(zip(own, alone_states[k])):
            assert all(torch.equal(a, b) for a, b in zip(got, want)), f"run {k}, step {step}: not fit()'s batch or random state"
        assert run.train_loss == pytest.approx(single.train_loss, rel=5e-2)
        assert run.val_acc > 0.9
    assert together[0].train_loss[1:] != pytest.approx(together[1].train_loss[1:], rel=1e-3)  # two runs


def _cuda_syncs(run) -> int:
    """How many synchronizing CUDA operations ``run()`` made (torch's sync debug mode)."""
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


@pytest.mark.parametrize("compile_mode", ["off", "reduce-overhead"])
def test_weight_averaging_on_cuda(tmp_path, compile_mode):
    """train.ema_decay on the GPU, CUDA graphs included: the averaged weights are exchanged in
    place with the ones the compiled step trains, every epoch; the model ends holding them, not
    the trained ones; and averaging adds no host sync to the training steps (only the trained
    weights' evaluation, one per epoch)."""
    make_synthetic_mnist(tmp_path, n_train=600, n_test=200)
    data = load_splits(tmp_path, torch.device("cuda"), val_size=100)
    cfg = TrainConfig(epochs=4, batch_size=50, lr=0.05, compile=compile_mode, translate=0.0, ema_decay=0.9)
    model = build(baseline_spec(), seed=1)
    trained: dict[str, torch.Tensor] = {}
    keep = lambda _e, _a: trained.update({k: v.clone() for k, v in model.state_dict().items()})  # noqa: E731
    result = fit(model, data, cfg, seed=1, on_raw_epoch=keep)
    assert len(result.raw_history) == len(result.history) == 4
    assert result.raw_history[-1] > 0.9 and result.val_acc > 0.9
    assert evaluate(model, data.val_x, data.val_y) == result.val_acc  # the model holds what was scored
    state = model.state_dict()
    assert any(not torch.equal(state[k], trained[k]) for k in state if state[k].is_floating_point())
    if compile_mode == "off":
        plain = _cuda_syncs(lambda: fit(build(baseline_spec(), seed=1), data, dataclasses.replace(cfg, ema_decay=0.0), seed=1))
        averaged = _cuda_syncs(lambda: fit(build(baseline_spec(), seed=1), data, cfg, seed=1))
        assert averaged - plain == cfg.epochs, (plain, averaged)


def test_fused_adamw_on_cuda_learns(tmp_path):
    make_synthetic_mnist(tmp_path, n_train=600, n_test=200)
    data = load_splits(tmp_path, torch.device("cuda"), val_size=100)
    model = build(baseline_spec(), seed=2)
    cfg = TrainConfig(epochs=5, batch_size=50, optimizer="adamw", lr=0.003, translate=0.0)
    result = fit(model, data, cfg, seed=2)
    assert result.val_acc > 0.7


def test_two_jobs_share_one_gpu(tmp_path):
    make_synthetic_mnist(tmp_path / "data", n_train=600, n_test=200)
    (tmp_path / "j.toml").write_text(STUDY.format(name="j", n=6))
    assert main(["run", str(tmp_path / "j.toml"), "--device", "cuda", "--jobs", "2", "--quiet"]) == 0
    study = optuna.load_study(study_name="j", storage=f"sqlite:///{tmp_path / 'j.db'}")
    sampled = [t for t in study.trials if t.user_attrs.get("origin") == "sampler"]
    assert len({t.user_attrs["sampler_stream"] for t in sampled}) == 2  # one stream per worker
    params = [tuple(sorted(t.params.items())) for t in sampled]
    assert len(params) == len(set(params))  # no proposal twice
    trained = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert trained and all(t.user_attrs["device"] == torch.cuda.get_device_name(0) for t in trained)


@pytest.mark.parametrize("compile_mode", ["off", "default"])
def test_distillation_from_an_exported_teacher_on_cuda(gpu_study, compile_mode):
    """A .pt2 teacher moved to the GPU (weights and graph constants) trains a network there."""
    from harness.teacher import load_teacher

    out = gpu_study / f"teacher-{compile_mode}"
    assert main(["export", str(gpu_study / "g.toml"), "--format", "pt2", "--out", str(out)]) == 0
    (path,) = out.glob("*.pt2")
    teacher = load_teacher(path, torch.device("cuda"))
    assert all(p.is_cuda for p in teacher.parameters())
    data = load_splits(gpu_study / "data", torch.device("cuda"), val_size=100)
    cfg = TrainConfig(epochs=3, batch_size=50, lr=0.05, translate=0.0, compile=compile_mode, teacher=str(path))
    model = build(baseline_spec(), seed=1)
    result = fit(model, data, cfg, seed=1, teacher=teacher)
    assert all(map(torch.isfinite, map(torch.tensor, result.train_loss))) and result.val_acc > 0.5
