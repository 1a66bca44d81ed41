"""End to end on the real MNIST files: `harness run studies/smoke.toml`, twice, then status."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]


def _harness(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    exe = shutil.which("harness")
    cmd = [exe, *args] if exe else [sys.executable, "-m", "harness.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.slow
def test_smoke_study_runs_rejects_resumes(tmp_path, real_mnist_root):
    url = f"sqlite:///{tmp_path / 'smoke.db'}"
    common = ["--storage", url, "--data-dir", str(real_mnist_root), "--device", "cpu"]
    first = _harness("run", "studies/smoke.toml", *common)
    assert first.returncode == 0, first.stderr
    assert "rejected over budget" in first.stdout

    study = optuna.load_study(study_name="smoke", storage=url)  # plain Optuna can read it
    trials = study.get_trials()
    assert len(trials) == 6
    rejected = [t for t in trials if t.user_attrs.get("rejected") == "over_budget"]
    trained = [t for t in trials if "train_seconds" in t.user_attrs]
    assert rejected, "the smoke study must reject at least one over-budget candidate"
    for t in rejected:
        assert t.state == TrialState.PRUNED and t.user_attrs["trainable_params"] > 20_000
        assert "train_seconds" not in t.user_attrs and "epochs_run" not in t.user_attrs
        assert not t.intermediate_values  # never trained, never reported
    assert any(t.state == TrialState.COMPLETE for t in trials)
    assert all(t.user_attrs["trainable_params"] <= 20_000 for t in trained)
    baseline = [t for t in trials if t.user_attrs.get("baseline")]
    assert len(baseline) == 1 and baseline[0].number == 0
    assert baseline[0].state == TrialState.COMPLETE and baseline[0].user_attrs["trainable_params"] == 19_290
    assert baseline[0].user_attrs["test_images"] == 2000
    assert study.user_attrs["budget"] == 20_000 and study.user_attrs["target"] == 0.994

    before = {t.number: (t.state, t.params, t.value, t.user_attrs) for t in trials}
    second = _harness("run", "studies/smoke.toml", *common, "--trials", "2")
    assert second.returncode == 0, second.stderr
    trials2 = optuna.load_study(study_name="smoke", storage=url).get_trials()
    assert len(trials2) == 8
    assert {t.number: (t.state, t.params, t.value, t.user_attrs) for t in trials2[:6]} == before
    assert sum(bool(t.user_attrs.get("baseline")) for t in trials2) == 1

    status = _harness("status", "studies/smoke.toml", "--storage", url)
    assert status.returncode == 0, status.stderr
    assert "baseline: trial 0, 19,290 params" in status.stdout
    assert "best: trial" in status.stdout
    # the verdict is the validation pick's one search run, its test accuracy written beside it
    best = max((t for t in trials2 if t.state == optuna.trial.TrialState.COMPLETE and "duplicate_of" not in t.user_attrs
                and t.user_attrs["trainable_params"] <= 20_000),
               key=lambda t: (t.user_attrs["val_acc"], -t.user_attrs["trainable_params"]))  # fmt: skip
    test = best.user_attrs["test_acc"]
    word = "met" if test >= 0.994 else "not met"
    assert f"target 99.40%: {word} by the best trial's one search run (test " in status.stdout, status.stdout
    assert f"best: trial {best.number}," in status.stdout, status.stdout
