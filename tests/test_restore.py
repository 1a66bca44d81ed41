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
from harness.config import load_study_config
from harness.study import make_pruner, open_study
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
[[enqueue]]
w = 2
k = 3
drop = 0.0
label_smoothing = 0.1
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
    assert any(len(t.intermediate_values) > 1 for t in _trials(study.parent, "kept"))  # curves, not last scores
    home = _new_home(tmp_path, study)
    (tmp_path / "trials.csv").write_bytes(csv)
    capsys.readouterr()
    assert main(["restore", str(home), str(tmp_path / "trials.csv")]) == 0
    said = capsys.readouterr()
    assert "restored study 'kept'" in said.out and "16 trials" in said.out and said.err == "", said
    assert _csv(home, tmp_path / "again.csv") == csv  # byte for byte
    old, new = _trials(study.parent, "kept"), _trials(tmp_path, "kept")
    for a, b in zip(old, new, strict=True):
        assert (a.number, a.state, a.values, a.params, a.distributions, a.intermediate_values) == (
            b.number, b.state, b.values, b.params, b.distributions, b.intermediate_values)
        for key in ("spec", "arch", "recipe", "duplicate_of", "rejected", "trainable_params", "seed"):
            assert a.user_attrs.get(key) == b.user_attrs.get(key), (a.number, key)
        kept = ("constraints:params_over_budget", "failed_trial", "fixed_params")
        rungs = {k: v for k, v in a.system_attrs.items() if k.startswith("completed_rung_")}
        assert {k: a.system_attrs.get(k) for k in kept} == {k: b.system_attrs.get(k) for k in kept}
        assert rungs == {k: v for k, v in b.system_attrs.items() if k.startswith("completed_rung_")}, a.number
        assert b.user_attrs["restored_from"] == str(tmp_path / "trials.csv")
    assert any("completed_rung_0" in t.system_attrs for t in old)  # the halving pruner's record, rebuilt
    assert any(t.user_attrs.get("origin") == "enqueued" for t in new)
    # The pruner judges a new trial alike in both (it ranks a new score among the rung records)
    cfg = load_study_config(home)
    shutil.copy(study.parent / "kept.db", tmp_path / "original-copy.db")
    shutil.copy(tmp_path / "kept.db", tmp_path / "restored-copy.db")
    decisions = []
    for url in (f"sqlite:///{tmp_path / 'original-copy.db'}", f"sqlite:///{tmp_path / 'restored-copy.db'}"):
        pruning = optuna.load_study(study_name="kept", storage=url, pruner=make_pruner(cfg))
        said = []
        for score in sorted({v for t in old for v in t.intermediate_values.values()}):
            trial = pruning.ask()
            trial.report(score, 1)
            said.append(trial.should_prune())
            pruning.tell(trial, state=TrialState.FAIL)
        decisions.append(said)
    assert decisions[0] == decisions[1] and True in decisions[0] and False in decisions[0]
    # what a run does first adds nothing: no [[enqueue]] table or baseline again, nothing to retry
    before = len(_trials(tmp_path, "kept"))
    open_study(cfg, f"sqlite:///{tmp_path / 'kept.db'}")
    assert len(_trials(tmp_path, "kept")) == before
    # and it resumes: the next trials are new numbers, trained and recorded as a run's are
    assert main(["run", str(home), "--trials", "2", "--data-dir", str(data), "--device", "cpu", "--quiet"]) == 0
    resumed = _trials(tmp_path, "kept")
    assert [t.number for t in resumed] == list(range(before + 2))
    assert all("restored_from" not in t.user_attrs for t in resumed[before:])


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
    assert len(back) == len(committed) > 0
    # a record written before a column existed (intermediate_values, val_images) lacks it; nothing else differs
    assert [c for c in back.columns if c in committed.columns] == list(committed.columns)
    assert set(back.columns) - set(committed.columns) <= {"intermediate_values", "val_images"}
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
    best = next(t.number for t in trials if t.state == TrialState.COMPLETE)  # export says why it cannot
    capsys.readouterr()
    assert main(["export", str(home), "--trial", str(best), "--out", str(tmp_path / "exports")]) == 2
    assert f"(the study was restored from {GPU_CSV}, which holds none: `harness retrain --trial {best}`" in capsys.readouterr().err
    assert not (tmp_path / "exports").exists()
    for failed, retry in list(retried.items())[:1]:  # retrain --trial of a retried trial names its retry
        capsys.readouterr()
        assert main(["retrain", str(home), "--trial", str(failed), "--device", "cpu"]) == 2
        assert f"(failed; it was retried as trial {retry})" in capsys.readouterr().err
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


def _rows(csv: bytes) -> list[dict[str, str]]:
    import csv as csvlib

    return list(csvlib.DictReader(io.StringIO(csv.decode())))


def _written(rows: list[dict[str, str]]) -> str:
    import csv as csvlib

    out = io.StringIO()
    writer = csvlib.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _waiting(number: int, fields: list[str]) -> dict[str, str]:
    """A trial waiting to run, as report --csv writes one (no parameters, no results)."""
    row = dict.fromkeys(fields, "")
    row.update(number=str(number), outcome="waiting", state="WAITING", origin="sampler", baseline="False")
    return row


def test_running_and_waiting_trials_come_back_as_a_run_would_find_them(kept_study, tmp_path, capsys):
    """A trial running when the CSV was written comes back failed with no reason (as a killed
    trial), and the next run retries it with its parameters; a trial waiting at the CSV's end
    is left out (said), one waiting before trials that ran is refused (nothing written)."""
    study, _, csv = kept_study
    n = _first_trained(csv)
    rows = _rows(csv)
    rows[n].update(state="RUNNING", outcome="running")
    home = _new_home(tmp_path, study)
    (tmp_path / "trials.csv").write_text(_written([*rows, _waiting(len(rows), list(rows[0]))]))
    capsys.readouterr()
    assert main(["restore", str(home), str(tmp_path / "trials.csv")]) == 0
    out = capsys.readouterr().out
    assert f"{len(rows)} trials" in out and "note: 1 waiting trial at the CSV's end left out" in out, out
    trials = _trials(tmp_path, "kept")
    assert len(trials) == len(rows) and trials[n].state == TrialState.FAIL and "fail_reason" not in trials[n].user_attrs
    study_now = open_study(load_study_config(home), f"sqlite:///{tmp_path / 'kept.db'}")
    (retry,) = [t for t in study_now.get_trials() if t.state == TrialState.WAITING]
    assert retry.system_attrs["failed_trial"] == n and retry.params == trials[n].params

    middle = tmp_path / "middle"
    middle.mkdir()
    home = _new_home(middle, study)
    last = dict(rows[-1], number=str(len(rows)), seed=str(int(float(rows[-1]["seed"])) + 1) if rows[-1]["seed"] else "")
    (middle / "trials.csv").write_text(_written([*rows[:-1], _waiting(len(rows) - 1, list(rows[0])), last]))
    before = snapshot(middle)
    assert main(["restore", str(home), str(middle / "trials.csv")]) == 2
    assert f"trial {len(rows) - 1} was waiting, with trials after it that ran" in capsys.readouterr().err
    assert snapshot(middle) == before


def test_a_stop_while_restoring_writes_nothing_and_a_byte_order_mark_is_read(kept_study, tmp_path, monkeypatch, capsys):
    """Ctrl-C (twice, even) while the trials are written: the restore finishes its write, then
    undoes it: no database, no lock file, exit 130; into a database that holds another study,
    that study is untouched. A CSV saved with a byte-order mark (a spreadsheet's) restores."""
    import os
    import signal

    study, _, csv = kept_study
    home = _new_home(tmp_path, study)
    (tmp_path / "trials.csv").write_bytes(b"\xef\xbb\xbf" + csv)  # UTF-8 with a byte-order mark
    before = snapshot(tmp_path)
    add_trials = optuna.Study.add_trials

    def stopped_part_way(self, trials):
        add_trials(self, trials[: len(trials) // 2])
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C, during the undo's turn
        add_trials(self, trials[len(trials) // 2 :])

    monkeypatch.setattr(optuna.Study, "add_trials", stopped_part_way)
    assert main(["restore", str(home), str(tmp_path / "trials.csv")]) == 130
    assert "harness: interrupted" in capsys.readouterr().err
    assert snapshot(tmp_path) == before  # nothing left: no half study, no database or lock file

    other = tmp_path / "other"  # a database holding another study keeps it whole
    other.mkdir()
    home_b = _new_home(other, study)
    home_b.write_text(home_b.read_text().replace('name = "kept"', 'name = "kept-b"'))
    monkeypatch.setattr(optuna.Study, "add_trials", add_trials)
    assert main(["restore", str(home_b), str(tmp_path / "trials.csv"), "--storage", f"sqlite:///{tmp_path / 'both.db'}"]) == 0
    monkeypatch.setattr(optuna.Study, "add_trials", stopped_part_way)
    assert main(["restore", str(home), str(tmp_path / "trials.csv"), "--storage", f"sqlite:///{tmp_path / 'both.db'}"]) == 130
    names = {s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{tmp_path / 'both.db'}")}
    assert names == {"kept-b"} and len(_trials_at(tmp_path / "both.db", "kept-b")) == len(_rows(csv))
    monkeypatch.setattr(optuna.Study, "add_trials", add_trials)
    assert main(["restore", str(home), str(tmp_path / "trials.csv")]) == 0  # the BOM: read as the CSV it is
    assert len(_trials(tmp_path, "kept")) == len(_rows(csv))


def _trials_at(db: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}").get_trials()


def _first_trained(csv: bytes) -> int:
    """The number of the CSV's first trained trial (its cells name an architecture)."""
    return int(pd.read_csv(io.BytesIO(csv)).query("outcome == 'complete'")["number"].iloc[0])


def _edited(csv: bytes, column: str, value: str) -> bytes:
    """``csv`` with ``column`` of its first trained trial set to ``value``."""
    rows = _rows(csv)
    rows[_first_trained(csv)][column] = value
    return _written(rows).encode()


def _last_seeded(csv: bytes) -> int:
    """The number of the CSV's last trial with a seed (the latest run's)."""
    return int(pd.read_csv(io.BytesIO(csv)).dropna(subset=["seed"])["number"].iloc[-1])


def _edited_last(csv: bytes, column: str, value: str) -> bytes:
    """``csv`` with ``column`` of its last trial with a seed set to ``value``."""
    rows = _rows(csv)
    rows[_last_seeded(csv)][column] = value
    return _written(rows).encode()


def _damaged(csv: bytes, case: str) -> bytes:
    lines = csv.decode().splitlines(keepends=True)
    return {
        "no-number-column": "".join(lines).replace("number,", "nummer,", 1).encode(),
        "a-trial-missing": "".join(lines[:3] + lines[4:]).encode(),
        "a-trial-twice": "".join(lines[:3] + lines[2:]).encode(),
        "not-utf8": b"\xff\xfe" + csv,
        "no-rows": lines[0].encode(),
        "another-seed": _edited_last(csv, "seed", "99"),
        "another-arch": _edited(csv, "arch", "[8] | gap"),
        "another-space": _edited(csv, "param_w", "3"),
        "wrong-param-count": _edited(csv, "params", "12345"),
        "distilled": _edited(csv, "teacher", "teacher.pt2"),
        "bad-curve": _edited(csv, "intermediate_values", "1:0.5 1:0.6"),
        "state-not-outcome": _edited(csv, "state", "PRUNED"),
        "curve-gap": _edited(csv, "intermediate_values", "1:0.5 3:0.6"),
        "curve-huge-epoch": _edited(csv, "intermediate_values", "99999999999999999999999:0.1"),
        "accuracy-above-1": _edited(csv, "val_acc", "5.0"),
        "too-many-images": _edited(csv, "test_images", "1e30"),
        "epochs-run-huge": _edited(csv, "epochs_run", "999999999999"),
        "origin-not-baseline": _edited(csv, "origin", "baseline"),
        "extra-cell": csv.replace(b"\n", b",surplus\n", 2).replace(b",surplus\n", b"\n", 1),
        "column-twice": csv.replace(b"number,", b"number,number,", 1),
        "other-repeats": _edited(csv, "repeats", "2"),
        "other-ema": _edited(csv, "ema_decay", "0.5"),
    }[case]


@pytest.mark.parametrize("case,words", [
    ("no-number-column", ["not a trial CSV", "'number'"]),
    ("a-trial-missing", ["trial 2 is missing"]),
    ("a-trial-twice", ["trial 1 is in it twice"]),
    ("bad-curve", ["trial {n}", "intermediate_values: '1:0.6' is not epoch:score"]),
    ("state-not-outcome", ["trial {n}", "outcome 'complete' with state 'PRUNED'"]),
    ("curve-gap", ["trial {n}", "intermediate_values: not one score each epoch from epoch 1"]),
    ("curve-huge-epoch", ["trial {n}", "'99999999999999999999999:0.1' is not epoch:score"]),
    ("accuracy-above-1", ["trial {n}", "val_acc = 5.0 is not an accuracy"]),
    ("too-many-images", ["trial {n}", "test_images = 1e30 is not a number of MNIST images"]),
    ("epochs-run-huge", ["trial {n}", "epochs_run = 999999999999, but the study file trains train.epochs = 3"]),
    ("origin-not-baseline", ["trial {n}", "origin 'baseline' with baseline = False"]),
    ("extra-cell", ["line 2 has more cells than the header has columns"]),
    ("column-twice", ["column 'number' is in the header twice"]),
    ("other-repeats", ["trial {n}", "trained with 2 seeds", "study.repeats = 1"]),
    ("other-ema", ["trial {n}", "ema_decay = 0.5", "train.ema_decay = 0.0"]),
    ("not-utf8", ["not UTF-8"]),
    ("no-rows", ["holds no trials"]),
    ("another-seed", ["trial {last}", "seed 99", "another study's seed"]),
    ("another-arch", ["trial {n}", "'[8] | gap'", "not a trial of this study file"]),
    ("another-space", ["trial {n}", "param_w = '3'", "not one of"]),
    ("wrong-param-count", ["trial {n}", "params = 12345, but its architecture has"]),
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
        w = w.format(n=_first_trained(csv), last=_last_seeded(csv))
        assert w in lines[0], (w, lines[0])
    assert snapshot(tmp_path) == before  # byte for byte: no database made, none changed


@pytest.mark.parametrize("edit,words", [
    (("val_size = 100", "val_size = 150"), ["val_images = 100", "data.val_size = 150"]),
    (("[data]", "[data]\ntrain_limit = 150"), ["train_images = 200", "data.train_limit = 150"]),
    (("[data]", "[data]\ntest_limit = 50"), ["test_images = 100", "data.test_limit = 50"]),
    (("[data]", "[data]\ntest_limit = 150"), ["test_images = 100", "data.test_limit = 150"]),
])  # fmt: skip
def test_a_study_file_whose_data_split_changed_is_refused(kept_study, tmp_path, capsys, edit, words):
    """The CSV's trials were scored on a validation split of 100 images (its val_images column)
    and trained and tested on 200 and 100: a study file that now carves another split, or
    limits training or testing to another count, is not theirs (the restored study took the
    file's data settings, ranked old trials with new ones scored on other images, and refused
    the file they ran with afterwards)."""
    study, _, csv = kept_study
    home = _new_home(tmp_path, study)
    home.write_text(home.read_text().replace(*edit))
    (tmp_path / "trials.csv").write_bytes(csv)
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert main(["restore", str(home), str(tmp_path / "trials.csv")]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and all(w in lines[0] for w in [f"trial {_first_trained(csv)}", *words]), lines
    assert snapshot(tmp_path) == before


def test_a_trial_interrupted_in_its_first_epoch_keeps_its_data_and_device(kept_study, tmp_path):
    """A trial stopped before its first epoch ended has no epochs_run but did load its data on
    its device: the restore kept neither (train_images, val_images and device came back empty)."""
    study, _, csv = kept_study
    rows = _rows(csv)
    row = rows[_first_trained(csv)]
    for column in ("val_acc", "test_acc", "test_images", "target_met", "epochs_run", "train_seconds", "trained_val_acc",
                   "repeats", "repeat_val_accs", "intermediate_values"):  # fmt: skip
        row[column] = ""  # as report --csv writes such a trial
    row.update(outcome="failed", state="FAIL", fail_reason="interrupted (Ctrl-C or SIGTERM)")
    assert row["train_images"] and row["val_images"] and row["device"]
    given = tmp_path / "given.csv"
    given.write_text(_written(rows))
    home = _new_home(tmp_path, study)
    assert main(["restore", str(home), str(given)]) == 0
    back = _rows(_csv(home, tmp_path / "back.csv"))
    assert back[int(row["number"])] == row


def test_a_study_whose_seed_was_changed_between_runs_restores_with_its_latest_seed(kept_study, tmp_path):
    """`run` takes a changed study.seed (with a note): the trials before the change trained with
    the old seed + their number. Restore takes that CSV with the study file the study last ran
    with (it refused every study file: the earlier trials' seeds and the later ones' differ),
    and writes it back byte for byte; the file of the old seed is refused at the latest trial."""
    study, data, _ = kept_study
    ran = tmp_path / "ran"
    shutil.copytree(study.parent, ran)
    (ran / study.name).write_text(STUDY.replace("seed = 5", "seed = 9"))
    assert main(["run", str(ran / study.name), "--trials", "1", "--data-dir", str(data), "--device", "cpu", "--quiet"]) == 0
    csv = _csv(ran / study.name, tmp_path / "ran.csv")
    rows = _rows(csv)
    assert rows[-1]["seed"] == str(9 + len(rows) - 1) and rows[1]["seed"] == str(5 + 1)
    home = tmp_path / "home"
    home.mkdir()
    new = _new_home(home, ran / study.name)
    assert main(["restore", str(new), str(tmp_path / "ran.csv")]) == 0
    assert _csv(new, tmp_path / "back.csv") == csv
    old = tmp_path / "old"
    old.mkdir()
    old_file = _new_home(old, study)  # seed = 5
    before = snapshot(old)
    assert main(["restore", str(old_file), str(tmp_path / "ran.csv")]) == 2
    assert snapshot(old) == before  # no database made
