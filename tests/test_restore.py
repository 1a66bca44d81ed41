"""`harness restore`: a study rebuilt from the CSV of its trials (`harness report --csv`).

The property: what the CSV says of every trial comes back, so the restored study's own CSV is
the same file, and a run resumes it as it would have resumed the lost database (the trials it
lacks, the interrupted ones retried). A CSV of another study file, a damaged CSV or a study
that exists already: one line, exit 2, nothing written.
"""

from __future__ import annotations

import io
import math
import shutil
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from harness.cli import main
from tests.conftest import ROOT, make_synthetic_mnist, snapshot

GPU_CSV = ROOT / "results" / "mnist-pareto-trials.csv"

SPACE = """
import optuna
from harness.spec import ArchSpec, BlockSpec, ConvSpec

def suggest(trial):
    w = trial.suggest_categorical("w", [2, 4, 64])  # 64: over the budget
    k = trial.suggest_int("k", 3, 5, step=2)
    drop = trial.suggest_float("drop", 0.0, 0.1, step=0.1)
    if w == 4 and k == 5:
        raise optuna.TrialPruned("4 channels of 5x5: not this one")  # rejected as invalid
    return ArchSpec(blocks=(BlockSpec(convs=(ConvSpec(w, kernel=k),), dropout=drop),), head="gap")
"""

STUDY = """
[study]
name = "kept"
search_space = "space.py:suggest"
search_recipe = ["label_smoothing"]
budget = 600
n_trials = 16
seed = 5
[sampler]
name = "random"
[pruner]
name = "halving"
min_resource = 1
reduction_factor = 2
[data]
val_size = 100
[train]
epochs = 3
batch_size = 50
rotation = 0.0
translate = 0.0
scale = 0.0
"""


def _csv(study: Path, out: Path) -> bytes:
    assert main(["report", str(study), "--out", str(out.with_suffix(".html")), "--csv", str(out)]) == 0
    return out.read_bytes()


def _trials(folder: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{folder / (name + '.db')}").get_trials()


@pytest.fixture(scope="module")
def kept_study(tmp_path_factory) -> tuple[Path, Path, bytes]:
    """A finished tiny study of many outcomes, its data, and its trial CSV."""
    folder = tmp_path_factory.mktemp("kept")
    data = make_synthetic_mnist(folder / "data", n_train=300, n_test=100)
    (folder / "space.py").write_text(SPACE)
    (folder / "kept.toml").write_text(STUDY)
    assert main(["run", str(folder / "kept.toml"), "--data-dir", str(data), "--device", "cpu", "--quiet"]) == 0
    return folder / "kept.toml", data, _csv(folder / "kept.toml", folder / "kept.csv")


def _new_home(tmp_path: Path, study: Path) -> Path:
    """The study file (and its space) in a folder with no database: the lost-database case."""
    for f in study.parent.glob("*.py"):
        shutil.copy(f, tmp_path / f.name)
    shutil.copy(study, tmp_path / study.name)
    return tmp_path / study.name


def test_a_restored_study_writes_the_same_csv_for_every_outcome(kept_study, tmp_path, capsys):
    study, data, csv = kept_study
    outcomes = set(pd.read_csv(study.parent / "kept.csv")["outcome"])
    # the study whose record is restored holds what a restore must bring back
    assert {"complete", "over_budget", "invalid", "pruned", "duplicate"} <= outcomes, outcomes
    home = _new_home(tmp_path, study)
    (tmp_path / "trials.csv").write_bytes(csv)
    capsys.readouterr()
    assert main(["restore", str(home), str(tmp_path / "trials.csv")]) == 0
    said = capsys.readouterr()
    assert "restored study 'kept'" in said.out and "16 trials" in said.out and said.err == "", said
    assert _csv(home, tmp_path / "again.csv") == csv  # byte for byte
    old, new = _trials(study.parent, "kept"), _trials(tmp_path, "kept")
    for a, b in zip(old, new, strict=True):
        assert (a.number, a.state, a.values, a.params, a.distributions) == (b.number, b.state, b.values, b.params, b.distributions)
        for key in ("spec", "arch", "recipe", "duplicate_of", "rejected", "trainable_params", "seed"):
            assert a.user_attrs.get(key) == b.user_attrs.get(key), (a.number, key)
        assert a.system_attrs.get("constraints:params_over_budget") == b.system_attrs.get("constraints:params_over_budget")
        assert b.user_attrs["restored_from"] == str(tmp_path / "trials.csv")
    # and it resumes: the next trials are new numbers, trained and recorded as a run's are
    assert main(["run", str(home), "--trials", "2", "--data-dir", str(data), "--device", "cpu", "--quiet"]) == 0
    resumed = _trials(tmp_path, "kept")
    assert [t.number for t in resumed] == list(range(18))
    assert all("restored_from" not in t.user_attrs for t in resumed[16:])


def test_the_gpu_leases_trial_record_restores_to_the_study_it_recorded(tmp_path, capsys):
    """The committed record of the GPU leases' mnist-pareto study (the next lease restores it)
    comes back as the study it was: the same values in its CSV (a file written before integer
    parameter columns holds 6.0 where 6 is written now), each retry tied to the failed trial
    with its parameters, and a run that resumes it runs the trials the study lacks, retrying
    first every interrupted trial that had no retry."""
    from harness.config import load_study_config
    from harness.study import STREAMS_ATTR, check_resumable, open_study

    home = _new_home(tmp_path, ROOT / "studies" / "mnist-pareto.toml")
    assert main(["restore", str(home), str(GPU_CSV)]) == 0
    back = pd.read_csv(io.BytesIO(_csv(home, tmp_path / "back.csv")))
    committed = pd.read_csv(GPU_CSV)
    assert list(back.columns) == list(committed.columns) and len(back) == len(committed) > 0
    for column in committed.columns:
        for a, b in zip(committed[column], back[column], strict=True):
            same = (a == b) or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))
            assert same, (column, a, b)
    trials = _trials(tmp_path, "mnist-pareto")
    retried = {}
    for t in trials:
        if t.user_attrs["origin"] == "retry":
            failed = trials[t.system_attrs["failed_trial"]]
            assert failed.number < t.number and failed.state == TrialState.FAIL and failed.params == t.params
            retried[failed.number] = t.number
    assert len(retried) == (committed["origin"] == "retry").sum()  # each retry of its own failed trial
    cfg = load_study_config(home)
    url = f"sqlite:///{tmp_path / 'mnist-pareto.db'}"
    finished = committed["state"].isin(["COMPLETE", "PRUNED"]).sum()
    assert check_resumable(cfg, url).finished == finished  # a run runs the n_trials - finished it lacks
    study = open_study(cfg, url)  # what every run does first: a retry of each interrupted trial left
    waiting = [t for t in study.get_trials() if t.state == TrialState.WAITING]
    interrupted = [t.number for t in trials if t.user_attrs.get("interrupted") and t.number not in retried]
    assert [t.system_attrs["failed_trial"] for t in waiting] == interrupted
    assert [t.params for t in waiting] == [trials[n].params for n in interrupted]
    assert study.user_attrs[STREAMS_ATTR] >= len(trials)  # new processes draw from streams none of these used


def _first_trained(csv: bytes) -> int:
    """The number of the CSV's first trained trial (its cells name an architecture)."""
    return int(pd.read_csv(io.BytesIO(csv)).query("outcome == 'complete'")["number"].iloc[0])


def _edited(csv: bytes, column: str, value: str) -> bytes:
    """``csv`` with ``column`` of its first trained trial set to ``value``."""
    import csv as csvlib

    rows = list(csvlib.DictReader(io.StringIO(csv.decode())))
    rows[_first_trained(csv)][column] = value
    out = io.StringIO()
    writer = csvlib.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def _damaged(csv: bytes, case: str) -> bytes:
    lines = csv.decode().splitlines(keepends=True)
    return {
        "no-number-column": "".join(lines).replace("number,", "nummer,", 1).encode(),
        "a-trial-missing": "".join(lines[:3] + lines[4:]).encode(),
        "not-utf8": b"\xff\xfe" + csv,
        "no-rows": lines[0].encode(),
        "another-seed": _edited(csv, "seed", "99"),
        "another-arch": _edited(csv, "arch", "[8] | gap"),
        "another-space": _edited(csv, "param_w", "3"),
        "wrong-param-count": _edited(csv, "params", "12345"),
        "distilled": _edited(csv, "teacher", "teacher.pt2"),
    }[case]


@pytest.mark.parametrize("case,words", [
    ("no-number-column", ["not a trial CSV", "'number'"]),
    ("a-trial-missing", ["trial 2 is missing"]),
    ("not-utf8", ["not UTF-8"]),
    ("no-rows", ["holds no trials"]),
    ("another-seed", ["trial {n}", "seed 99", "another study"]),
    ("another-arch", ["trial {n}", "'[8] | gap'", "not a trial of this study file"]),
    ("another-space", ["trial {n}", "param_w = '3'", "not one of"]),
    ("wrong-param-count", ["trial {n}", "params = 12,345"]),
    ("distilled", ["trial {n}", "teacher.pt2", "distilled"]),
    ("missing-file", ["nothing.csv", "no such file"]),
    ("study-exists", ["already exists"]),
])  # fmt: skip
def test_a_bad_csv_or_an_existing_study_is_refused_and_nothing_is_written(kept_study, tmp_path, capsys, case, words):
    study, _, csv = kept_study
    home = _new_home(tmp_path, study)
    given = tmp_path / "trials.csv"
    if case == "study-exists":
        given.write_bytes(csv)
        assert main(["restore", str(home), str(given)]) == 0
    elif case == "missing-file":
        given = tmp_path / "nothing.csv"
    else:
        given.write_bytes(_damaged(csv, case))
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert main(["restore", str(home), str(given)]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("harness: error: ") and "Traceback" not in err, err
    for w in words:
        w = w.format(n=_first_trained(csv))
        assert w in lines[0], (w, lines[0])
    assert snapshot(tmp_path) == before  # byte for byte: no database made, none changed
