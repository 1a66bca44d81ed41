"""The study layer: budget gate, baseline, resume, attributes, summary (synthetic data)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from harness.config import DataConfig, PrunerConfig, SamplerConfig, StudyConfig, TrainConfig
from harness.data import load_splits
from harness.errors import StorageError
from harness.spec import ArchSpec
from harness.study import BUDGET_CONSTRAINT, Objective, open_study, summarize
from harness.train import FitResult

optuna.logging.set_verbosity(optuna.logging.ERROR)


@pytest.fixture(params=["memory", "file"])
def storage_url(request, tmp_path: Path) -> str:
    """Optuna's STORAGE_MODES, for RDB: in-memory sqlite and a sqlite file."""
    return "sqlite:///:memory:" if request.param == "memory" else f"sqlite:///{tmp_path / 'study.db'}"


def _cfg(tmp_path: Path, **study) -> StudyConfig:
    base = dict(
        name="t",
        path=tmp_path / "t.toml",
        budget=20_000,
        seed=3,
        train=TrainConfig(epochs=2, batch_size=64, eval_batch_size=256),
        data=DataConfig(val_size=100),
        sampler=SamplerConfig(name="random"),
        pruner=PrunerConfig(name="none"),
    )
    base.update(study)
    return StudyConfig(**base)


class CountingFit:
    """Records every call; returns a fixed result without training (budget-gate tests only)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, model, data, cfg, *, seed, on_epoch):
        self.calls += 1
        for epoch in range(1, cfg.epochs + 1):
            on_epoch(epoch, 0.5)
        return FitResult(val_acc=0.5, epochs_run=cfg.epochs, seconds=0.0, history=[0.5] * cfg.epochs)


def test_over_budget_candidate_is_rejected_without_data_model_or_training(tmp_path, storage_url):
    cfg = _cfg(tmp_path, budget=5_000)  # the 19,290-param baseline is over this budget
    study = open_study(cfg, storage_url)
    loads, fit = [], CountingFit()
    objective = Objective(cfg, lambda: loads.append(1), device_label="cpu", fit_fn=fit)
    trial = study.ask()
    assert trial.user_attrs.get("baseline") is True
    with pytest.raises(optuna.TrialPruned):
        objective(trial)
    study.tell(trial, state=TrialState.PRUNED)
    frozen = study.trials[0]
    assert frozen.state == TrialState.PRUNED
    assert frozen.user_attrs["params"] == 19_290
    assert frozen.user_attrs["rejected"] == "over_budget"
    assert "19,290 parameters > budget 5,000" in frozen.user_attrs["reject_reason"]
    assert frozen.constraints == {BUDGET_CONSTRAINT: 19_290 - 5_000}
    assert (fit.calls, len(loads), objective.trained) == (0, 0, 0)


def test_gate_counts_every_rejection_and_trains_only_survivors(tmp_path, storage_url, synthetic_root):
    cfg = _cfg(tmp_path, budget=8_000)
    study = open_study(cfg, storage_url)
    fit = CountingFit()
    objective = Objective(cfg, lambda: load_splits(synthetic_root, val_size=100), device_label="cpu", fit_fn=fit)
    study.optimize(objective, n_trials=40)
    trials = study.get_trials()
    rejected = [t for t in trials if t.user_attrs.get("rejected")]
    trained = [t for t in trials if t.state == TrialState.COMPLETE]
    assert rejected and trained
    assert fit.calls == len(trained) == objective.trained
    assert all(t.user_attrs["params"] <= 8_000 for t in trained)
    assert all(t.constraints[BUDGET_CONSTRAINT] <= 0 for t in trained)
    assert all(max(t.constraints.values()) > 0 for t in rejected)
    s = summarize(study)
    assert s.counts["over_budget"] + s.counts["invalid"] == len(rejected)
    assert s.best is not None and s.best.user_attrs["params"] <= 8_000


def test_baseline_enqueued_once_and_study_resumes(tmp_path, synthetic_root):
    url = f"sqlite:///{tmp_path / 's.db'}"
    cfg = _cfg(tmp_path)
    study = open_study(cfg, url)
    study.optimize(Objective(cfg, lambda: load_splits(synthetic_root, val_size=100), device_label="cpu", fit_fn=CountingFit()), n_trials=3)
    before = [(t.number, t.state, t.params) for t in study.get_trials()]
    again = open_study(cfg, url)  # resume: same name, same storage
    assert [(t.number, t.state, t.params) for t in again.get_trials()] == before
    again.optimize(Objective(cfg, lambda: load_splits(synthetic_root, val_size=100), device_label="cpu", fit_fn=CountingFit()), n_trials=2)
    trials = optuna.load_study(study_name="t", storage=url).get_trials()
    assert len(trials) == 5
    assert sum(bool(t.user_attrs.get("baseline")) for t in trials) == 1
    assert trials[0].user_attrs["baseline"] and trials[0].user_attrs["params"] == 19_290


def test_existing_study_with_other_budget_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    open_study(_cfg(tmp_path), url)
    with pytest.raises(StorageError, match="budget"):
        open_study(_cfg(tmp_path, budget=10_000), url)


def test_status_of_missing_study_is_an_error(tmp_path):
    with pytest.raises(StorageError, match="no study named"):
        open_study(_cfg(tmp_path), f"sqlite:///{tmp_path / 'empty.db'}", create=False)


def test_real_training_records_every_attribute(tmp_path, synthetic_root):
    cfg = _cfg(tmp_path, train=TrainConfig(epochs=2, batch_size=50, lr=0.05, eval_batch_size=100))
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = open_study(cfg, url)
    objective = Objective(cfg, lambda: load_splits(synthetic_root, val_size=100), device_label="cpu (test)")
    study.optimize(objective, n_trials=1)  # the baseline
    t = optuna.load_study(study_name="t", storage=url).trials[0]
    assert t.state == TrialState.COMPLETE
    ua = t.user_attrs
    for key in ("params", "val_acc", "test_acc", "target_met", "epochs_run", "train_seconds", "device",
                "spec", "baseline", "seed", "torch_version", "harness_version", "test_images"):  # fmt: skip
        assert key in ua, key
    assert ua["baseline"] is True and ua["params"] == 19_290 and ua["epochs_run"] == 2
    assert ua["seed"] == cfg.seed + t.number and ua["test_images"] == 200
    assert ua["val_acc"] == t.value and 0.0 <= ua["test_acc"] <= 1.0
    assert ua["target_met"] == (ua["test_acc"] >= cfg.target)
    assert ArchSpec.from_json(ua["spec"]).to_json() == ua["spec"]
    assert sorted(t.intermediate_values) == [1, 2]
    sattrs = optuna.load_study(study_name="t", storage=url).user_attrs
    assert sattrs["budget"] == 20_000 and sattrs["target"] == 0.994
    assert sattrs["search_space"] == "seed" and sattrs["dataset"] == "MNIST"
    assert json.dumps(sattrs["train"])  # recipe recorded


def test_pruner_prunes_with_real_reports(tmp_path, synthetic_root):
    cfg = _cfg(tmp_path, pruner=PrunerConfig(name="median", n_startup_trials=1, n_warmup_steps=0))
    study = open_study(cfg, "sqlite:///:memory:")

    class Declining(CountingFit):
        def __call__(self, model, data, cfg, *, seed, on_epoch):
            self.calls += 1
            acc = 0.9 if self.calls == 1 else 0.1
            for epoch in range(1, cfg.epochs + 1):
                on_epoch(epoch, acc)
            return FitResult(val_acc=acc, epochs_run=cfg.epochs, seconds=0.0)

    study.optimize(Objective(cfg, lambda: load_splits(synthetic_root, val_size=100), device_label="cpu", fit_fn=Declining()), n_trials=12)
    s = summarize(study)
    assert s.counts["pruned"] >= 1
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED and not t.user_attrs.get("rejected")]
    assert all(t.user_attrs["pruned_at_epoch"] == 1 for t in pruned)


def test_summary_lines_mention_every_outcome(tmp_path, synthetic_root):
    cfg = _cfg(tmp_path, budget=8_000)
    study = open_study(cfg, "sqlite:///:memory:")
    study.optimize(Objective(cfg, lambda: load_splits(synthetic_root, val_size=100), device_label="cpu", fit_fn=CountingFit()), n_trials=10)
    text = "\n".join(summarize(study).lines())
    for word in ("complete", "pruned by pruner", "rejected over budget", "failed", "baseline", "best", "target"):
        assert word in text
    assert dataclasses.is_dataclass(summarize(study))
