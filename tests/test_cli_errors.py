"""Bad input: one line on stderr naming the problem, exit 2, no traceback, nothing written."""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from harness.cli import main
from harness.errors import StorageError
from tests.conftest import snapshot as _snapshot

GOOD = """
[study]
name = "bad-input"
budget = 20000
[data]
val_size = 100
[train]
epochs = 1
"""


def _replace(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new)


SEED_GOOD = _replace(GOOD, "budget = 20000", 'search_space = "seed"\nbudget = 20000')


def _enqueue(drop: str = "", **changes) -> str:
    """One [[enqueue]] table: the seed network's parameters, with changes (TOML literals) or one left out."""
    from search_spaces.seed import REFERENCE_PARAMS

    def lit(v):
        return ("true" if v else "false") if isinstance(v, bool) else (f'"{v}"' if isinstance(v, str) else str(v))

    rows = {k: lit(v) for k, v in REFERENCE_PARAMS.items() if k != drop}
    rows.update({k: str(v) for k, v in changes.items()})
    return "[[enqueue]]\n" + "".join(f"{k} = {v}\n" for k, v in rows.items())


# (id, study-file text, extra CLI args, words the message must contain)
CASES = [
    ("malformed-toml", "[study\nname = 1", [], ["malformed TOML"]),
    ("empty-file", "", [], ["bad.toml: the study file holds no settings", "endless search"]),  # not an endless all-defaults search
    ("only-comments", "# to do: a budget\n\n", [], ["bad.toml: the study file holds no settings"]),
    ("unknown-key", _replace(GOOD, "epochs = 1", "epoch = 1"), [], ["unknown key", "train.epoch"]),
    ("unknown-section", GOOD + "\n[trainer]\nx = 1\n", [], ["trainer"]),
    ("wrong-type", _replace(GOOD, "epochs = 1", 'epochs = "ten"'), [], ["train.epochs", "integer"]),
    ("budget-zero", _replace(GOOD, "budget = 20000", "budget = 0"), [], ["study.budget"]),
    ("budget-negative", _replace(GOOD, "budget = 20000", "budget = -5"), [], ["study.budget"]),
    # a budget past 64 bits used to pass, train, then crash storing the study's figure
    ("budget-huge", _replace(GOOD, "budget = 20000", "budget = 99999999999999999999"), [], ["study.budget", "1,000,000,000"]),
    ("target-above-one", GOOD.replace("[data]", "target = 1.5\n[data]"), [], ["study.target"]),
    ("target-zero", GOOD.replace("[data]", "target = 0\n[data]"), [], ["study.target"]),
    ("epochs-zero", _replace(GOOD, "epochs = 1", "epochs = 0"), [], ["train.epochs"]),
    ("unknown-space", GOOD.replace("budget", 'search_space = "huge"\nbudget'), [], ["unknown search space", "huge", "seed"]),
    ("empty-space", GOOD.replace("budget", 'search_space = ""\nbudget'), [], ["search space"]),
    ("bad-optimizer", _replace(GOOD, "epochs = 1", 'epochs = 1\noptimizer = "lbfgs"'), [], ["train.optimizer"]),
    ("name-escapes-folder", _replace(GOOD, 'name = "bad-input"', 'name = "../escaped"'), [], ["study.name", 'got "../escaped"']),
    ("name-absolute-path", _replace(GOOD, 'name = "bad-input"', 'name = "/tmp/abs"'), [], ["study.name"]),
    ("name-huge", _replace(GOOD, 'name = "bad-input"', f'name = "{"n" * 10_000}"'), [], ["study.name", "1-100"]),
    ("name-nul", _replace(GOOD, 'name = "bad-input"', 'name = "a\\u0000b"'), [], ["study.name"]),
    ("heartbeat-huge", GOOD.replace("[data]", "heartbeat_interval = 9223372036854775807\n[data]"), [],
     ["study.heartbeat_interval", "3600"]),
    ("grace-not-above-heartbeat", GOOD.replace("[data]", "heartbeat_interval = 30\ngrace_period = 30\n[data]"), [],
     ["study.grace_period", "exceed"]),
    ("results-dir-is-a-file", GOOD.replace("[data]", 'results_dir = "bad.toml"\n[data]'), [], ["study.results_dir", "is a file"]),
    ("timeout-nan", GOOD, ["--timeout", "nan"], ["--timeout", "nan"]),
    ("timeout-inf", GOOD, ["--timeout", "inf"], ["--timeout"]),
    ("device-mps-missing", GOOD, ["--device", "mps"], ["mps", "not available"]),
    ("device-cpu-index", GOOD, ["--device", "cpu:5"], ["'cpu:5'", "must be auto, cpu, cuda, cuda:N or mps"]),
    ("study-device-cuda-letters", GOOD.replace("[data]", 'device = "cuda:abc"\n[data]'), [], ["study.device", "cuda:abc"]),
    ("device-cuda-missing", GOOD, ["--device", "cuda:3"], ["cuda:3"]),
    ("device-unknown", GOOD, ["--device", "tpu"], ["tpu"]),
    ("bad-fp32-precision", _replace(GOOD, "epochs = 1", 'epochs = 1\nfp32_precision = "half"'), [],
     ["train.fp32_precision", "ieee or tf32"]),
    ("bad-compile", _replace(GOOD, "epochs = 1", 'epochs = 1\ncompile = "fast"'), [], ["train.compile", "reduce-overhead"]),
    ("val-size-too-big", _replace(GOOD, "val_size = 100", "val_size = 60000"), [], ["data.val_size"]),
    ("val-size-zero", _replace(GOOD, "val_size = 100", "val_size = 0"), [], ["data.val_size", "[1, 60000)"]),
    ("val-size-above-the-data", _replace(GOOD, "val_size = 100", "val_size = 600"), [], ["data.val_size", "600 training images"]),
    ("train-limit-above-mnist", _replace(GOOD, "val_size = 100", "val_size = 100\ntrain_limit = 59950"), [],
     ["data.train_limit", "59,900 training images", "59950"]),
    ("test-limit-above-mnist", _replace(GOOD, "val_size = 100", "val_size = 100\ntest_limit = 10001"), [],
     ["data.test_limit", "10,000 test images", "10001"]),
    ("storage-in-memory", GOOD, ["--storage", "sqlite://"], ["in-memory", "keeps nothing"]),
    # a bad URL written in the study file names the file and its key (as --storage's names the flag's value)
    ("storage-in-file-garbage", _replace(GOOD, "budget = 20000", 'storage = "notaurl"\nbudget = 20000'), [],
     ["bad.toml: study.storage: storage URL 'notaurl' is not a valid database URL"]),
    ("storage-unknown-scheme", GOOD, ["--storage", "foodb://x/y"], ["foodb"]),
    ("storage-garbage", GOOD, ["--storage", "not a url"], ["storage URL"]),
    ("storage-missing-folder", GOOD, ["--storage", "sqlite:////nonexistent/dir/x.db"], ["does not exist"]),
    ("missing-data", GOOD, ["--data-dir", "{tmp}/no-data-here"], ["MNIST not found", "harness data import"]),
    ("negative-trials", GOOD, ["--trials", "-1"], ["--trials"]),
    ("jobs-in-memory", GOOD, ["--jobs", "2", "--storage", "sqlite:///:memory:"], ["--jobs", "in-memory"]),
    ("seed-negative", GOOD.replace("[data]", "seed = -1\n[data]"), [], ["study.seed"]),
    ("seed-too-big", GOOD.replace("[data]", "seed = 4294967296\n[data]"), [], ["study.seed"]),
    ("repeats-zero", GOOD.replace("[data]", "repeats = 0\n[data]"), [], ["study.repeats", "1 to 10"]),
    ("repeats-too-many", GOOD.replace("[data]", "repeats = 11\n[data]"), [], ["study.repeats", "1 to 10"]),
    ("repeats-compiled", GOOD.replace("[data]", "repeats = 2\n[data]") + 'compile = "default"\n', [],
     ["study.repeats", 'train.compile = "default"']),
    ("bad-pruner", GOOD + '[pruner]\nname = "asha"\n', [], ["pruner.name", "halving"]),
    ("rung-past-schedule", _replace(GOOD, "epochs = 1", "epochs = 4") + "[pruner]\nmin_resource = 4\n", [],
     ["pruner.min_resource", "[1, 4)"]),
    ("reduction-factor-one", GOOD + "[pruner]\nreduction_factor = 1\n", [], ["pruner.reduction_factor"]),
    ("multivariate-type", GOOD + '[sampler]\nmultivariate = "yes"\n', [], ["sampler.multivariate", "true or false"]),
    ("recipe-unknown-field", GOOD.replace("[data]", 'search_recipe = ["lr", "momentum"]\n[data]'), [],
     ["study.search_recipe", 'field "momentum"', "weight_decay"]),
    ("recipe-empty-list", GOOD.replace("[data]", "search_recipe = []\n[data]"), [], ["study.search_recipe", "non-empty"]),
    ("recipe-field-twice", GOOD.replace("[data]", 'search_recipe = ["lr", "lr"]\n[data]'), [], ["study.search_recipe", "twice"]),
    ("recipe-not-a-list", GOOD.replace("[data]", 'search_recipe = "lr"\n[data]'), [], ["study.search_recipe", "true, false"]),
    ("enqueue-recipe-field-not-searched",
     _replace(SEED_GOOD, "budget = 20000", 'search_recipe = ["lr"]\nbudget = 20000') + _enqueue(scale=0.0), [],
     ["enqueue #1", "'scale'", "not searched", "study.search_recipe: lr"]),
    ("enqueue-recipe-field-without-recipe-search", SEED_GOOD + _enqueue(lr=0.01), [],
     ["enqueue #1", "'lr'", "study.search_recipe: false"]),
    ("recipe-a-number", GOOD.replace("[data]", "search_recipe = 1\n[data]"), [], ["study.search_recipe", "true, false"]),
    ("recipe-list-of-numbers", GOOD.replace("[data]", 'search_recipe = ["lr", 3]\n[data]'), [],
     ["study.search_recipe", "list of recipe fields"]),
    ("distill-weight-zero", _replace(GOOD, "epochs = 1", 'epochs = 1\nteacher = "t.pt2"\ndistill_weight = 0'), [],
     ["train.distill_weight", "(0, 1]"]),
    ("distill-weight-above-one", _replace(GOOD, "epochs = 1", 'epochs = 1\nteacher = "t.pt2"\ndistill_weight = 1.5'), [],
     ["train.distill_weight"]),
    ("distill-temperature-zero", _replace(GOOD, "epochs = 1", 'epochs = 1\nteacher = "t.pt2"\ndistill_temperature = 0'), [],
     ["train.distill_temperature", "[0.1, 100]"]),
    ("distill-temperature-huge", _replace(GOOD, "epochs = 1", 'epochs = 1\nteacher = "t.pt2"\ndistill_temperature = 1e20'), [],
     ["train.distill_temperature", "[0.1, 100]"]),
    ("distill-weight-without-teacher", _replace(GOOD, "epochs = 1", "epochs = 1\ndistill_weight = 0.7"), [],
     ["train.distill_weight", "no train.teacher"]),
    ("teacher-not-pt2", _replace(GOOD, "epochs = 1", 'epochs = 1\nteacher = "t.onnx"'), [], ["train.teacher", ".pt2", "t.onnx"]),
    ("teacher-missing-file", _replace(GOOD, "epochs = 1", 'epochs = 1\nteacher = "nope.pt2"'), [], ["teacher", "nope.pt2", "no such file"]),
    ("distill-searched-without-teacher", GOOD.replace("[data]", 'search_recipe = ["distill_weight"]\n[data]'), [],
     ["study.search_recipe", "distill_weight", "no train.teacher"]),
    ("pruner-in-a-pareto-study",  # Optuna prunes single-objective studies only: set for nothing
     _replace(GOOD, "budget = 20000", 'budget = 20000\nmode = "pareto"') + '[pruner]\nname = "median"\n', [],
     ["[pruner] is set", 'study.mode = "pareto"', 'pruner.name = "none"']),
    ("enqueue-not-tables", "enqueue = [1, 2]\n" + GOOD, [], ["enqueue", "array of tables"]),
    ("not-utf8", GOOD.replace('name = "', 'name = "caf\xe9').encode("latin-1"), [],  # a file saved as Latin-1
     ["bad.toml: not a study file: not UTF-8 text", "(byte 0xe9 at line 3, column 12, file offset 20)"]),  # after '\n[study]\nname = "caf'
    # columns count characters from 1 without the mark, as TOML's errors do; the offset counts bytes
    ("not-utf8-after-a-byte-order-mark", b"\xef\xbb\xbf# d\xc3\xa9j\xe0\n" + GOOD.encode(), [],
     ["bad.toml: not a study file: not UTF-8 text", "(byte 0xe0 at line 1, column 6, file offset 9)"]),  # after '# d\u00e9j'
    ("n-trials-below-the-enqueued",  # n_trials is the study's total: two enqueued ones would never run
     _replace(SEED_GOOD, "budget = 20000", "budget = 20000\nn_trials = 2") + _enqueue(dropout=0.1) + _enqueue(dropout=0.2), [],
     ["study.n_trials", "at least 3", "2 [[enqueue]]", "got 2"]),
    ("enqueue-unknown-param", SEED_GOOD + _enqueue(width=8), [], ["enqueue #1", "'width'"]),
    ("enqueue-missing-param", SEED_GOOD + _enqueue(drop="dropout"), [], ["enqueue #1", "missing parameter", "'dropout'"]),
    ("enqueue-bad-value", SEED_GOOD + _enqueue(b1_c1_width=7), [], ["enqueue #1", "'b1_c1_width'", "7"]),
    ("enqueue-bad-second", SEED_GOOD + _enqueue(dropout=0.1) + _enqueue(head='"softmax"'), [], ["enqueue #2", "'head'", '= "softmax" is not one of ["']),
    # the baseline, or an entry given twice, would be dropped without a word
    ("enqueue-the-baseline", SEED_GOOD + _enqueue(), [], ["enqueue #1", "seed network", "baseline", "once"]),
    ("enqueue-the-baseline-recipe-filled",  # its recipe left out: the study's, the baseline's too
     _replace(SEED_GOOD, "budget = 20000", "search_recipe = true\nbudget = 20000") + _enqueue(), [],
     ["enqueue #1", "the baseline's", "once"]),
    ("enqueue-twice", SEED_GOOD + _enqueue(dropout=0.1) + _enqueue(dropout=0.2) + _enqueue(dropout=0.1), [],
     ["enqueue #3", "those of enqueue #1", "once"]),
]


@pytest.mark.parametrize("case_id,text,extra,words", CASES, ids=[c[0] for c in CASES])
def test_bad_study_input(tmp_path, capsys, monkeypatch, synthetic_root, case_id, text, extra, words):
    study = tmp_path / "bad.toml"
    study.write_bytes(text) if isinstance(text, bytes) else study.write_text(text)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # a default output relative to the working directory counts too
    before = _snapshot(tmp_path)
    # --trials 1 first (a case's own --trials comes later and wins): were a bad input let
    # through, this run would train one trial and fail the test, not train forever
    args = ["run", str(study), "--data-dir", str(synthetic_root), "--trials", "1"] + [a.format(tmp=tmp_path) for a in extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("value", [True, False, 0, -3, 0.1, 1e-05, 2.5e20, "tpe", 'a "quoted" \\ path\nand more', "caf\u00e9",
                                   [1, 2], ["lr", "scale"], [True, 0.5, "x"], {"a": 1, "b": [False]}])
def test_values_in_messages_are_spelled_as_a_study_file_writes_them(value):
    """What a message quotes from a study file reads back, as TOML, to the same value (Python's
    True or 'tpe' would not parse)."""
    from harness.config import toml_value, tomllib

    assert tomllib.loads(f"key = {toml_value(value)}")["key"] == value


@pytest.mark.parametrize("ending", [b"\r\n", b"\r", b"\n"])
def test_a_non_utf8_byte_is_placed_on_its_line_whatever_the_line_endings(tmp_path, ending):
    """Lines end as the text is read: \r\n (Windows), a lone \r (old Mac) or \n."""
    from harness.config import load_study_config
    from harness.errors import ConfigError

    text = ending.join([b"# a", b"# b", b"[study]", 'name = "caf\xe9"'.encode("latin-1"), b""])
    (tmp_path / "s.toml").write_bytes(text)
    at = text.index(b"\xe9")
    with pytest.raises(ConfigError, match=rf"\(byte 0xe9 at line 4, column 12, file offset {at}\)$"):
        load_study_config(tmp_path / "s.toml")


def test_the_seed_network_with_another_recipe_may_be_enqueued(tmp_path):
    """In a study that searches the recipe, the baseline's architecture with a recipe of its
    own is another candidate, not a repeat of the baseline."""
    from harness.config import check_enqueued_once, load_study_config

    study = tmp_path / "s.toml"
    study.write_text(_replace(SEED_GOOD, "budget = 20000", "search_recipe = true\nbudget = 20000") + _enqueue(rotation=5.0))
    config = load_study_config(study)
    assert config.enqueue[0]["rotation"] == 5.0 != config.train.rotation
    check_enqueued_once(config)  # the check a run makes: not refused


def test_a_repeated_enqueue_stops_a_run_but_not_the_reading_commands(tmp_path, capsys, synthetic_root):
    """A study whose file gained a table equal to the baseline can still be inspected (the
    reading commands enqueue nothing); a run refuses it in one line, the database unchanged."""
    study = tmp_path / "s.toml"
    study.write_text(SEED_GOOD)
    assert main(["run", str(study), "--data-dir", str(synthetic_root), "--trials", "1", "--quiet"]) == 0
    study.write_text(SEED_GOOD + _enqueue())
    capsys.readouterr()
    assert main(["status", str(study)]) == 0 and "baseline: trial 0" in capsys.readouterr().out
    before = _snapshot(tmp_path)
    assert main(["run", str(study), "--data-dir", str(synthetic_root), "--trials", "1", "--quiet"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "enqueue #1: its parameters are the baseline's" in lines[0], lines
    assert _snapshot(tmp_path) == before


def test_a_study_name_not_in_the_database_names_the_file_and_the_likeliest_names(tmp_path, capsys):
    """A typo in study.name (or a storage shared by several studies): the line names the study
    file and its key, and lists the stored names most like it first."""
    import optuna

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    for name in ("alpha", "beta", "mnist_20k", "mnist-20k"):
        optuna.create_study(study_name=name, storage=url)
    study = tmp_path / "typo.toml"
    study.write_text(_replace(GOOD, 'name = "bad-input"', 'name = "mnist-20K"'))
    before = _snapshot(tmp_path)
    assert main(["status", str(study), "--storage", url]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"harness: error: {study}: study.name: no study named 'mnist-20K' in {url} (it holds 'mnist-20k', "
                     "'mnist_20k', 'alpha', 'beta'; did you mean 'mnist-20k'?)"]  # fmt: skip
    assert _snapshot(tmp_path) == before


def test_a_study_file_with_a_byte_order_mark_reads_as_without(tmp_path):
    """Notepad and other Windows editors may begin a UTF-8 file with a byte-order mark, which
    TOML does not allow ("Invalid statement" at line 1): it is skipped."""
    from harness.config import load_study_config

    plain, marked = tmp_path / "plain.toml", tmp_path / "marked.toml"
    plain.write_text(GOOD, encoding="utf-8")
    marked.write_text(GOOD, encoding="utf-8-sig")
    assert marked.read_bytes().startswith(b"\xef\xbb\xbf")
    assert dataclasses.replace(load_study_config(marked), path=plain) == load_study_config(plain)


@pytest.mark.parametrize("command", ["run", "status", "report", "export", "retrain", "dashboard"])
def test_a_bad_storage_in_the_study_file_is_named_by_every_command(tmp_path, capsys, command):
    study = tmp_path / "bad.toml"
    study.write_text(_replace(GOOD, "budget = 20000", 'storage = "foodb://x/y"\nbudget = 20000'))
    before = _snapshot(tmp_path)
    assert main([command, str(study)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"{study}: study.storage: storage URL 'foodb://x/y'" in lines[0], lines
    assert _snapshot(tmp_path) == before
    # --storage given: its own value is the one at fault, not the study file's key
    assert main([command, str(study), "--storage", "foodb://q/r"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "storage URL 'foodb://q/r'" in lines[0] and "study.storage" not in lines[0], lines
    assert _snapshot(tmp_path) == before


def test_the_largest_budget_is_accepted_and_one_more_refused(tmp_path):
    from harness.config import MAX_BUDGET, load_study_config
    from harness.errors import ConfigError

    path = tmp_path / "b.toml"
    path.write_text(_replace(GOOD, "budget = 20000", f"budget = {10**9}"))
    assert MAX_BUDGET == 10**9 and load_study_config(path).budget == 10**9
    path.write_text(_replace(GOOD, "budget = 20000", f"budget = {10**9 + 1}"))
    with pytest.raises(ConfigError, match=r"study.budget must be a number of parameters in \[1, 1,000,000,000\]"):
        load_study_config(path)


def test_the_data_limits_themselves_are_accepted(tmp_path):
    """The bounds of data.train_limit and data.test_limit are inside them: every training image
    left beside val_size, and all of MNIST's 10,000 test images."""
    from harness.config import load_study_config

    path = tmp_path / "edge.toml"
    path.write_text(_replace(GOOD, "val_size = 100", "val_size = 100\ntrain_limit = 59900\ntest_limit = 10000"))
    cfg = load_study_config(path)
    assert (cfg.data.train_limit, cfg.data.test_limit) == (59_900, 10_000)


def test_run_exits_1_when_workers_failed(tmp_path, capsys, monkeypatch, synthetic_root):
    """`run --jobs K` whose workers failed (a crash, not bad input): exit status 1 and one line
    saying how many of how many, with their exit codes; not the 0 of a finished run."""
    import harness.runner
    from harness.runner import RunOutcome

    study = tmp_path / "w.toml"
    study.write_text(GOOD)
    monkeypatch.setattr(harness.runner, "run_study", lambda plan: RunOutcome(interrupted=False, workers=2, bad_codes=(1,)))
    assert main(["run", str(study), "--data-dir", str(synthetic_root), "--jobs", "2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["harness: error: 1 of 2 workers failed (exit codes (1,))"], err


# Bad arguments to every other command, against one small trained study ({study}; {tmp} is its
# folder, {data} the synthetic MNIST root): one line naming the problem, exit 2, nothing changed.
COMMAND_CASES = [
    ("status-missing-file", ["status", "{tmp}/nope.toml"], ["study file not found"]),
    ("status-bad-storage", ["status", "{study}", "--storage", "foodb://x/y"], ["foodb"]),
    ("run-sqlite-query-argument",  # a misspelt timeout would be ignored, the URL's file created
     ["run", "{study}", "--storage", "sqlite:///{tmp}/new.db?timout=30", "--data-dir", "{data}", "--device", "cpu"],
     ["sqlite:///", "no query arguments", "timout"]),
    ("status-in-memory", ["status", "{study}", "--storage", "sqlite://"], ["in-memory", "holds no study"]),
    ("report-in-memory", ["report", "{study}", "--storage", "sqlite:///:memory:"], ["in-memory", "holds no study"]),
    ("status-unknown-option", ["status", "{study}", "--bogus"], ["unrecognized arguments", "--bogus", "(see harness status --help)"]),
    ("report-top-zero", ["report", "{study}", "--top", "0"], ["--top"]),
    ("report-top-not-int", ["report", "{study}", "--top", "abc"], ["--top", "invalid int"]),
    ("report-missing-study", ["report", "{tmp}/nope.toml"], ["study file not found"]),
    ("export-no-such-trial", ["export", "{study}", "--trial", "999", "--out", "{tmp}/exp"], ["999"]),
    ("export-bad-format", ["export", "{study}", "--format", "zip"], ["--format", "zip"]),
    ("export-trial-and-best", ["export", "{study}", "--trial", "0", "--best"], ["not allowed with"]),
    ("export-seed-not-retrained", ["export", "{study}", "--trial", "0", "--seed", "5", "--out", "{tmp}/exp"],
     ["seed 5"]),
    ("retrain-seeds-zero", ["retrain", "{study}", "--seeds", "0"], ["--seeds"]),
    ("retrain-epochs-zero", ["retrain", "{study}", "--epochs", "0"], ["--epochs"]),
    ("retrain-top-zero", ["retrain", "{study}", "--top", "0"], ["--top"]),
    ("retrain-top-and-spread", ["retrain", "{study}", "--top", "1", "--spread", "2"], ["--top and --spread"]),
    ("retrain-device-unknown", ["retrain", "{study}", "--device", "tpu"], ["tpu"]),
    ("retrain-device-cuda-missing", ["retrain", "{study}", "--device", "cuda:5"], ["cuda:5"]),
    ("retrain-missing-data", ["retrain", "{study}", "--data-dir", "{tmp}/no-data", "--device", "cpu"],
     ["MNIST not found"]),
    ("results-no-out", ["results", "{study}"], ["--out"]),
    ("results-missing-study", ["results", "{tmp}/nope.toml", "--out", "{tmp}/r.md"], ["study file not found"]),
    ("results-out-is-study-file", ["results", "{study}", "--out", "{study}"], ["--out", "overwrite"]),
    ("results-out-is-folder", ["results", "{study}", "--out", "{tmp}"], ["--out", "is a folder"]),
    ("dashboard-port-too-big", ["dashboard", "{study}", "--port", "70000"], ["--port"]),
    ("dashboard-port-zero", ["dashboard", "{study}", "--port", "0"], ["--port"]),
    ("dashboard-not-read-only-here", ["dashboard", "{study}", "--storage", "mysql://u@127.0.0.1:9/x"],
     ["read-only", "not mysql"]),
    ("import-missing-folder", ["data", "import", "{tmp}/nope", "--data-dir", "{tmp}/root"], ["not a folder"]),
    ("import-a-file", ["data", "import", "{study}", "--data-dir", "{tmp}/root"], ["not a folder"]),
    ("run-jobs-zero", ["run", "{study}", "--jobs", "0", "--data-dir", "{data}"], ["--jobs"]),
    ("run-jobs-not-int", ["run", "{study}", "--jobs", "two"], ["--jobs", "invalid int"]),
    ("run-trials-not-int", ["run", "{study}", "--trials", "1.5"], ["--trials", "invalid int"]),
    ("worker-missing-file", ["worker", "{tmp}/nope.toml", "--storage", "sqlite:///{tmp}/w.db"], ["study file not found"]),
    ("worker-no-storage", ["worker", "{study}"], ["--storage"]),
    # an empty path would silently mean the default (exports/, ~/.cache/harness/data, ...)
    ("empty-run-data-dir", ["run", "{study}", "--data-dir", ""], ["--data-dir", "must not be empty"]),
    ("empty-report-csv", ["report", "{study}", "--csv", ""], ["--csv", "must not be empty"]),
    ("empty-report-out", ["report", "{study}", "--out", " "], ["--out", "must not be empty"]),
    ("empty-export-out", ["export", "{study}", "--out", ""], ["--out", "must not be empty"]),
    ("empty-results-exports", ["results", "{study}", "--out", "{tmp}/r.md", "--exports", ""], ["--exports", "must not be empty"]),
    ("empty-status-study", ["status", ""], ["STUDY.toml", "must not be empty"]),
    ("empty-retrain-storage", ["retrain", "{study}", "--storage", ""], ["--storage", "must not be empty"]),
    ("empty-import-data-dir", ["data", "import", "{tmp}", "--data-dir", ""], ["--data-dir", "must not be empty"]),
    ("nul-run-device", ["run", "{study}", "--device", "cpu\0"], ["--device", "NUL"]),
]


# argparse itself rejects these (SystemExit 2, after the one-line message)
_ARGPARSE_CASES = {"status-unknown-option", "report-top-not-int", "export-bad-format", "export-trial-and-best",
                   "results-no-out", "run-jobs-not-int", "run-trials-not-int", "worker-no-storage",
                   *(c[0] for c in COMMAND_CASES if c[0].startswith(("empty-", "nul-")))}  # fmt: skip


def _one_trained_trial(tmp_path_factory, folder: str) -> tuple[Path, Path]:
    """A study of GOOD in a new folder with one trained trial (the baseline), and its data."""
    from tests.conftest import make_synthetic_mnist

    folder = tmp_path_factory.mktemp(folder)
    data = make_synthetic_mnist(tmp_path_factory.mktemp("data"))
    (folder / "s.toml").write_text(GOOD)
    assert main(["run", str(folder / "s.toml"), "--trials", "1", "--data-dir", str(data), "--quiet", "--device", "cpu"]) == 0
    return folder / "s.toml", data


@pytest.fixture(scope="module")
def trained_study(tmp_path_factory) -> tuple[Path, Path]:
    return _one_trained_trial(tmp_path_factory, "trained")


@pytest.mark.parametrize("case_id,argv,words", COMMAND_CASES, ids=[c[0] for c in COMMAND_CASES])
def test_bad_command_input(trained_study, tmp_path, capsys, monkeypatch, case_id, argv, words):
    study, data = trained_study
    monkeypatch.chdir(tmp_path)  # where report's and export's default outputs would go
    before = _snapshot(study.parent), _snapshot(tmp_path)
    args = [a.format(study=study, tmp=study.parent, data=data) for a in argv]
    with pytest.raises(SystemExit) if case_id in _ARGPARSE_CASES else contextlib.nullcontext() as exited:
        assert main(args) == 2
    if exited is not None:
        assert exited.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    # one prefix for every error, argparse's own included (it wrote "harness retrain: error:")
    assert lines[0].startswith("harness: error: "), lines[0]
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert (_snapshot(study.parent), _snapshot(tmp_path)) == before


@pytest.mark.parametrize("argv", [["report", "{study}", "--csv", "{other}"], ["report", "{study}", "--out", "{other}"],
                                  ["results", "{study}", "--out", "{other}"]])
def test_an_output_never_overwrites_another_studys_file(trained_study, tmp_path, capsys, argv):
    """report --csv, report --out and results --out given another study's file (a slip of the
    shell's completion): refused in one line, that file byte-identical."""
    study, data = trained_study
    other = tmp_path / "other.toml"
    other.write_text(GOOD.replace('name = "bad-input"', 'name = "other"'))
    before = _snapshot(study.parent), _snapshot(tmp_path)
    assert main([a.format(study=study, other=other) for a in argv] + ["--data-dir", str(data)] * (argv[0] == "results")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{other}: refusing to overwrite an existing study file (.toml)" in err[0], err
    assert (_snapshot(study.parent), _snapshot(tmp_path)) == before


@pytest.mark.parametrize("name,kind", [("train-images-idx3-ubyte", "MNIST file (train-images-idx3-ubyte)"),
                                       ("model.pt2", "model file (.pt2)"), ("model.onnx", "model file (.onnx)"),
                                       ("M.PT2", "model file (.pt2)"), ("notes.TOML", "study file (.toml)"),
                                       ("model.json", "model card (.json) of the exported model beside it")])
@pytest.mark.parametrize("command", ["report", "results"])
def test_a_report_or_table_never_overwrites_mnist_or_a_model(trained_study, tmp_path, capsys, name, kind, command):
    """An installed MNIST file or an exported model given to report --csv or results --out:
    refused in one line, every file byte-identical (the MNIST file was overwritten)."""
    study, data = trained_study
    (tmp_path / name).write_bytes(b"\x00\x00\x08\x03 not a table")
    if name == "model.json":  # a card: the export's model beside it (another study's teacher, say)
        (tmp_path / "model.pt2").write_bytes(b"PK model")
    before = _snapshot(study.parent), _snapshot(tmp_path)
    flag = "--csv" if command == "report" else "--out"
    assert main([command, str(study), flag, str(tmp_path / name)] + ["--data-dir", str(data)] * (command == "results")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{tmp_path / name}: refusing to overwrite an existing {kind}" in err[0], err
    assert (_snapshot(study.parent), _snapshot(tmp_path)) == before


@pytest.fixture(scope="module")
def distilled_study(trained_study, tmp_path_factory) -> tuple[Path, Path, Path]:
    """A study distilled from trial 0 of ``trained_study``, exported as its teacher; one trial run."""
    study, data = trained_study
    folder = tmp_path_factory.mktemp("distilled")
    assert main(["export", str(study), "--trial", "0", "--out", str(folder / "teacher"), "--data-dir", str(data)]) == 0
    teacher = folder / "teacher" / "bad-input-trial0.pt2"
    (folder / "d.toml").write_text(_replace(_replace(GOOD, 'name = "bad-input"', 'name = "distilled"'),
                                            "[train]", f'[train]\nteacher = "{teacher}"'))  # fmt: skip
    assert main(["run", str(folder / "d.toml"), "--trials", "1", "--data-dir", str(data), "--quiet", "--device", "cpu"]) == 0
    return folder / "d.toml", teacher, data


@pytest.mark.parametrize("suffix", [".pt2", ".json"])
def test_an_output_never_overwrites_the_studys_teacher_or_its_card(distilled_study, capsys, suffix):
    """A study's distillation teacher and its model card are the study's own files: report
    --csv given either is refused in one line (the table overwrote the teacher, and the next
    run refused the study for its changed teacher); every file byte-identical."""
    study, teacher, _ = distilled_study
    target = teacher.with_suffix(suffix)
    before = _snapshot(study.parent)
    assert main(["report", str(study), "--csv", str(target), "--out", str(study.parent / "r.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--csv {target} would overwrite the study's file {target}" in err[0], err
    assert _snapshot(study.parent) == before


@pytest.mark.parametrize("name,there", [("studydb", True), ("other.csv", True), ("studydb.lock", True),
                                        ("other.csv-wal", True), ("other.db-journal", False), ("studydb-shm", False),
                                        ("studydb-wal", False), ("other.db.lock", False)])  # fmt: skip
def test_an_output_never_overwrites_a_database_whatever_its_name(trained_study, tmp_path, capsys, name, there):
    """A SQLite database is known by its header, not its name (a study file may say
    `storage = "sqlite:///studydb"`), and so are its lock, journal, WAL and shared-memory files,
    there or not yet (an idle database has no journal: a table written there would be taken for
    one, and deleted or rolled back by SQLite's next write): report --csv given one is refused
    in one line, every file byte-identical and none made."""
    study, _ = trained_study
    base = re.sub(r"(\.lock|-journal|-wal|-shm)$", "", name)
    shutil.copyfile(study.parent / "bad-input.db", tmp_path / base)
    if name != base and there:
        (tmp_path / name).write_bytes(b"")  # as study_lock's flock leaves it
    before = _snapshot(study.parent), _snapshot(tmp_path)
    assert main(["report", str(study), "--csv", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    said = ("overwrite an existing SQLite database" if name == base
            else f"write over the {name[len(base):]} file of the database {tmp_path / base}")  # fmt: skip
    assert len(err) == 1 and f"{tmp_path / name}: refusing to {said}" in err[0], err
    assert (_snapshot(study.parent), _snapshot(tmp_path)) == before


def test_a_lock_file_beside_what_is_no_database_is_an_output_like_any_other(tmp_path):
    """Only a database's siblings are guarded: notes.toml.lock is no database's lock file."""
    from harness.storage import check_outputs

    (tmp_path / "notes.toml").write_text("x = 1\n")
    (tmp_path / "notes.toml.lock").write_bytes(b"")
    check_outputs({"--csv": tmp_path / "notes.toml.lock"}, [])  # not refused


def test_a_named_pipe_among_the_study_files_is_never_read_by_the_output_check(tmp_path):
    """The header sniff opens regular files only: a named pipe (a study file given as a FIFO)
    would block the read until a writer came (the check hung)."""
    import signal

    from harness.storage import check_outputs

    fifo = tmp_path / "s.toml"
    os.mkfifo(fifo)

    class Hung(Exception):  # not an OSError, which the sniff would take for an unreadable file
        pass

    def hung(signum, frame):
        raise Hung("check_outputs blocked on the named pipe")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    try:
        check_outputs({"--csv": tmp_path / "t.csv"}, [fifo, tmp_path / "s.db"])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_an_output_never_overwrites_the_studys_own_database_files_whatever_their_name(trained_study, tmp_path, capsys):
    """The study's own database named without a database suffix: its lock file is the study's too."""
    study, data = trained_study
    shutil.copyfile(study.parent / "bad-input.db", tmp_path / "studydb")
    url = f"sqlite:///{tmp_path / 'studydb'}"
    assert main(["status", str(study), "--storage", url]) == 0
    before = _snapshot(study.parent), _snapshot(tmp_path)
    capsys.readouterr()
    lock = tmp_path / "studydb.lock"
    assert main(["report", str(study), "--storage", url, "--csv", str(lock), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--csv {lock} would overwrite the study's file {lock}" in err[0], err
    assert (_snapshot(study.parent), _snapshot(tmp_path)) == before


@pytest.mark.parametrize("command", ["status", "report", "export", "retrain", "results", "dashboard"])
def test_a_study_never_run_is_named_so_when_its_results_folder_is_missing_too(tmp_path, capsys, command):
    """A reading command on a study whose study.results_dir the first run has not made yet says
    there is no database yet, as it does when only the file is missing (it named a storage URL
    the user never wrote, with "folder ... does not exist"); nothing is made."""
    study = tmp_path / "s.toml"
    study.write_text(_replace(GOOD, "budget = 20000", 'budget = 20000\nresults_dir = "nores/deeper"'))
    before = _snapshot(tmp_path)
    assert main([command, str(study), *(["--out", str(tmp_path / "r.md")] if command == "results" else [])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    db = tmp_path / "nores" / "deeper" / "bad-input.db"
    assert err == [f"harness: error: {study}: no study database yet at {db} (run `harness run` first)"], err
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("table,value,said", [
    ("[sampler]\nn_startup_trials = -5", None, "sampler.n_startup_trials must be >= 0, got -5"),
    ('[pruner]\nname = "median"\nn_startup_trials = -1', None, "pruner.n_startup_trials must be >= 0, got -1"),
    ('[pruner]\nname = "median"\nn_warmup_steps = -2', None, "pruner.n_warmup_steps must be >= 0, got -2"),
    ("", ["--workers", "0"], "--jobs (--workers) must be >= 1, got 0"),
], ids=["sampler-startup", "pruner-startup", "pruner-warmup", "workers-zero"])  # fmt: skip
def test_a_value_out_of_range_is_named_with_the_value_given(tmp_path, capsys, table, value, said):
    """Every range refusal says what it got; --workers, the alias of --jobs, is named too."""
    study = tmp_path / "s.toml"
    study.write_text(GOOD + table + "\n")
    before = _snapshot(tmp_path)
    assert main(["run", str(study), "--trials", "1", *(value or [])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"harness: error: {f'{study}: ' if table else ''}{said}"], err
    assert _snapshot(tmp_path) == before


def test_missing_data_leaves_the_artifact_folder_untouched(trained_study, tmp_path, capsys):
    """A run refused for its data has not probed the artifact folder yet (the probe makes and
    removes a folder there, which changes the folder's modification time)."""
    study, _ = trained_study
    artifacts = study.parent / "bad-input.artifacts"
    assert artifacts.is_dir()
    stamp = artifacts.stat().st_mtime_ns
    assert main(["run", str(study), "--trials", "1", "--data-dir", str(tmp_path / "no-data"), "--device", "cpu"]) == 2
    assert "MNIST not found" in capsys.readouterr().err
    assert artifacts.stat().st_mtime_ns == stamp


@pytest.mark.parametrize("option", ["--sto", "--stor", "--no"])
def test_options_are_spelled_in_full(trained_study, tmp_path, capsys, option):
    """argparse would take --sto for --storage (its password then escaped the masking of the
    command `results` writes into its file) and --no for --note: only full names are options."""
    study, data = trained_study
    before = _snapshot(study.parent), _snapshot(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(["results", str(study), "--out", str(tmp_path / "r.md"), option, "postgresql://u:s3cret@h/db"])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"harness: error: unrecognized arguments: {option} "), err
    assert "s3cret" not in err[0] and "postgresql://u:***@h/db" in err[0]
    assert (_snapshot(study.parent), _snapshot(tmp_path)) == before


def test_retrain_names_the_study_files_device_when_that_is_missing(trained_study, tmp_path, capsys):
    """No --device: the device the study file asks for is the one named (not "device None")."""
    study, data = trained_study
    before = _snapshot(study.parent)
    on_gpu = tmp_path / "s.toml"
    on_gpu.write_text(_replace(GOOD, "budget = 20000", 'budget = 20000\ndevice = "cuda:7"'))
    assert main(["retrain", str(on_gpu), "--storage", f"sqlite:///{study.parent / 'bad-input.db'}",
                 "--data-dir", str(data)]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "device 'cuda:7'" in err and "None" not in err, err
    assert _snapshot(study.parent) == before


def test_export_never_writes_over_the_study_through_its_file_names(trained_study, tmp_path, capsys):
    """The files written inside --out are checked too: a link named like an export that points
    at the database, or a folder in an export's place, is refused before anything is written."""
    study, data = trained_study
    before = _snapshot(study.parent)
    out = tmp_path / "exp"
    out.mkdir()
    (out / "bad-input-trial0.onnx").symlink_to(study.parent / "bad-input.db")
    assert main(["export", str(study), "--trial", "0", "--out", str(out), "--data-dir", str(data)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad-input-trial0.onnx" in err and "would overwrite" in err, err
    (out / "bad-input-trial0.onnx").unlink()
    (out / "bad-input-trial0.pt2").mkdir()
    assert main(["export", str(study), "--trial", "0", "--out", str(out), "--data-dir", str(data)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a folder" in err, err
    assert _snapshot(study.parent) == before and sorted(p.name for p in out.iterdir()) == ["bad-input-trial0.pt2"]


def test_storage_whose_driver_is_missing_is_one_line(trained_study, capsys):
    import importlib.util

    drivers = {"mysql://u@h/d": "MySQLdb", "postgresql+asyncpg://u@h/d": "asyncpg", "mssql+pymssql://u@h/d": "pymssql"}
    absent = [url for url, module in drivers.items() if importlib.util.find_spec(module) is None]
    if not absent:
        pytest.skip("every probed database driver is installed here")
    study, _ = trained_study
    before = _snapshot(study.parent)
    for command in ("status", "report", "export", "retrain"):
        assert main([command, str(study), "--storage", absent[0]]) == 2, command
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "driver not installed" in err and "Traceback" not in err, err
    assert _snapshot(study.parent) == before


def test_amp_auto_study_refuses_a_run_in_another_precision(tmp_path, capsys, synthetic_root):
    """amp "auto" is not compared as a word (it resolves per device), but what the trials
    trained in is: an "auto" study trained on a CPU (no autocast) refuses a bf16 run; the
    same precision, said explicitly ("off"), resumes."""
    pytest.importorskip("torch").zeros(1, dtype=__import__("torch").bfloat16)
    study = tmp_path / "s.toml"
    run = ["run", str(study), "--trials", "1", "--data-dir", str(synthetic_root), "--device", "cpu", "--quiet"]
    study.write_text(_replace(GOOD, "epochs = 1", 'epochs = 1\namp = "auto"'))
    assert main(run) == 0  # the baseline trains, with no autocast on a CPU
    study.write_text(_replace(GOOD, "epochs = 1", 'epochs = 1\namp = "bf16"'))
    before = _snapshot(tmp_path)
    capsys.readouterr()
    assert main(run) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "autocast off" in err[0] and "train.amp = 'bf16'" in err[0] and "refusing" in err[0], err
    assert captured.out == "" and _snapshot(tmp_path) == before
    study.write_text(_replace(GOOD, "epochs = 1", 'epochs = 1\namp = "off"'))  # the same precision, said explicitly
    assert main([*run[:3], "0", *run[4:]]) == 0


SECRET = "Zq7s3cretPW"


@pytest.mark.parametrize("url", [
    f"postgresql+psycopg2://alice:{SECRET}@127.0.0.1:1/db",  # the server refuses the connection
    f"postgresql+psycopg2://alice:pre@{SECRET}@127.0.0.1:1/db",  # unescaped "@": a driver would name a piece as host
    f"postgresql+psycopg2://alice:{SECRET}%2F@127.0.0.1:1/db",  # percent-encoded
    f"postgresql+asyncpg://alice:{SECRET}@h/db",  # driver not installed here (or refused)
    f"foodb://alice:{SECRET}@h/db",  # unknown scheme
])  # fmt: skip
def test_storage_password_never_printed(trained_study, capsys, url):
    """A storage URL's password appears in no message of any command, whatever goes wrong."""
    if "psycopg2" in url:
        pytest.importorskip("psycopg2")
    study, data = trained_study
    before = _snapshot(study.parent)
    for argv in (["status", str(study)], ["report", str(study)], ["export", str(study), "--best"],
                 ["retrain", str(study), "--data-dir", str(data)], ["run", str(study), "--data-dir", str(data)]):  # fmt: skip
        assert main([*argv, "--storage", url]) == 2, argv
        out, err = capsys.readouterr()
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert SECRET not in err + out and SECRET[:6] not in err + out, (argv, err, out)
    assert _snapshot(study.parent) == before


def test_safe_url_and_redact_mask_every_form_of_password():
    from harness.storage import _remember_password, redact, safe_url

    cases = {  # URL -> what a message shows
        "postgresql://alice:pa/ss1@db.example/x": "postgresql://alice:***@db.example/x",  # "/": SQLAlchemy's parse
        "postgresql://alice:pre@fix9@db.example/x": "postgresql://alice:***@db.example/x",  # unescaped "@"
        "postgresql://alice:s3cr%40t@db.example/x": "postgresql://alice:***@db.example/x",
        "postgresql://alice@db.example/x?password=qwerty7&sslmode=require":
            "postgresql://alice@db.example/x?password=***&sslmode=require",
        "sqlite:////tmp/a:b@c/x.db": "sqlite:////tmp/a:b@c/x.db",  # a path, not a password
        "postgresql://db.example/x": "postgresql://db.example/x",
    }  # fmt: skip
    for url, shown in cases.items():
        assert safe_url(url) == shown, url
        _remember_password(url)
    # what a driver might say, after the URLs above were seen (the worker processes see them too)
    said = 'could not translate host name "fix9@db.example"; password pa/ss1 s3cr@t qwerty7 rejected for harness'
    assert redact(said) == 'could not translate host name "***@db.example"; password *** *** *** rejected for harness'


def test_missing_study_file(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.toml")]) == 2
    assert "study file not found" in capsys.readouterr().err


def test_status_without_database_writes_nothing(tmp_path, capsys):
    study = tmp_path / "s.toml"
    study.write_text(GOOD)
    assert main(["status", str(study)]) == 2
    assert "no study database" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["s.toml"]


def _foreign_sqlite(path: Path) -> Path:
    import sqlite3

    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (id INTEGER, name TEXT)")
    conn.execute("INSERT INTO users VALUES (1, 'ada')")
    conn.commit()
    conn.close()
    return path


@pytest.mark.parametrize("kind", ["empty", "foreign", "not-sqlite"])
def test_no_command_turns_a_non_optuna_file_into_a_storage(tmp_path, capsys, synthetic_root, kind):
    """Every command, read-only or not, given a file that is not an Optuna storage: one line,
    exit 2, and the folder byte for byte as it was (no tables added, no lock file)."""
    study = tmp_path / "s.toml"
    study.write_text(GOOD)
    db = tmp_path / "x.db"
    if kind == "empty":
        db.write_bytes(b"")
    elif kind == "foreign":
        _foreign_sqlite(db)
    else:
        db.write_text("id,name\n1,ada\n")
    url = f"sqlite:///{db}"
    before = _snapshot(tmp_path)
    commands = [["status"], ["report", "--out", str(tmp_path / "r.html"), "--csv", str(tmp_path / "t.csv")],
                ["export", "--out", str(tmp_path / "exp")], ["retrain", "--device", "cpu"],
                ["dashboard", "--port", "8999"]]  # fmt: skip
    if kind != "empty":  # `run` may make an empty file its storage; nothing else
        commands.append(["run", "--data-dir", str(synthetic_root), "--trials", "1"])
    for cmd in commands:
        assert main([cmd[0], str(study), "--storage", url, *cmd[1:]]) == 2, cmd
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err and str(db) in err, (cmd, err)
        assert _snapshot(tmp_path) == before, cmd
    capsys.readouterr()
    assert main(["results", str(study), "--out", str(tmp_path / "r.md")]) == 2  # default storage: none yet
    assert _snapshot(tmp_path) == before


def test_read_only_commands_leave_an_existing_study_byte_identical(tmp_path, tmp_path_factory, capsys, synthetic_root):
    study = tmp_path / "s.toml"
    study.write_text(_replace(GOOD, "budget = 20000", "budget = 3000"))
    assert main(["run", str(study), "--trials", "2", "--data-dir", str(synthetic_root), "--quiet"]) == 0
    (tmp_path / "bad-input.db.lock").unlink()  # a read must not create it again
    before = _snapshot(tmp_path)
    assert main(["status", str(study)]) == 0
    assert _snapshot(tmp_path) == before
    elsewhere = tmp_path_factory.mktemp("outputs")  # a report that succeeds writes only its outputs
    assert main(["report", str(study), "--out", str(elsewhere / "r.html"), "--csv", str(elsewhere / "t.csv")]) == 0
    assert _snapshot(tmp_path) == before and (elsewhere / "r.html").stat().st_size > 0
    # No output path may be one of the study's own files, or another output of the same command.
    db, art, x = tmp_path / "bad-input.db", tmp_path / "bad-input.artifacts", tmp_path / "x.html"
    cases = [
        (["report", str(study), "--out", str(x), "--csv", str(db)], "--csv"),
        (["report", str(study), "--out", str(study), "--csv", str(tmp_path / "t.csv")], "--out"),
        (["report", str(study), "--out", str(x), "--csv", str(x)], "also given to"),
        (["report", str(study), "--out", str(tmp_path / "bad-input.db-journal"), "--csv", str(x)], "--out"),
        (["report", str(study), "--out", str(art / "r.html"), "--csv", str(x)], "folder"),
        (["export", str(study), "--out", str(art)], "--out"),
        (["results", str(study), "--out", str(db)], "--out"),
        (["results", str(study), "--out", str(x), "--exports", str(art)], "--exports"),
        (["results", str(study), "--out", str(elsewhere / "m.md"), "--exports", str(elsewhere)], "inside --exports"),
    ]
    capsys.readouterr()
    for args, words in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err and "overwrite" in err, (args, err)
        assert _snapshot(tmp_path) == before, args


def test_budget_differs_from_existing_study_is_refused_and_db_unchanged(tmp_path, capsys, synthetic_root):
    study = tmp_path / "s.toml"
    study.write_text(_replace(GOOD, "budget = 20000", "budget = 3000"))  # every candidate rejected fast
    assert main(["run", str(study), "--trials", "1", "--data-dir", str(synthetic_root), "--quiet"]) == 0
    db = tmp_path / "bad-input.db"
    before = db.read_bytes()
    capsys.readouterr()
    study.write_text(_replace(GOOD, "budget = 20000", "budget = 4000"))
    assert main(["run", str(study), "--data-dir", str(synthetic_root)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "budget" in err[0] and "refusing" in err[0]
    assert captured.out == ""  # refused before the run prints anything (its time estimate, progress)
    assert db.read_bytes() == before


@pytest.mark.parametrize(
    "old, new, key",
    [("epochs = 1", "epochs = 2", "train.epochs"),
     ("val_size = 100", "val_size = 120", "data.val_size"),
     ("epochs = 1", "epochs = 1\namp = \"bf16\"", "train.amp"),
     ("epochs = 1", "epochs = 1\nrotation = 0.0", "train.rotation"),
     ("budget = 3000", 'budget = 3000\nsearch_recipe = ["lr", "scale"]', "study.search_recipe")],
)  # fmt: skip
def test_measured_settings_differ_from_existing_study_are_refused(tmp_path, capsys, synthetic_root, old, new, key):
    """[train]/[data] settings that change what a trial measures must match the stored study;
    speed-only ones (eval batch, memory format, compile) may change, and amp "auto" (which
    resolves per device) is compared with neither "off" nor "bf16"."""
    study = tmp_path / "s.toml"
    study.write_text(_replace(GOOD, "budget = 20000", "budget = 3000"))
    assert main(["run", str(study), "--trials", "1", "--data-dir", str(synthetic_root), "--quiet"]) == 0
    before = _snapshot(tmp_path)
    capsys.readouterr()
    study.write_text(_replace(_replace(GOOD, "budget = 20000", "budget = 3000"), old, new))
    for command in (["run", str(study), "--data-dir", str(synthetic_root)], ["status", str(study)]):
        assert main(command) == 2, command
        captured = capsys.readouterr()
        err = captured.err.strip().splitlines()
        assert len(err) == 1 and f"study file's: {key} = " in err[0] and "refusing" in err[0], err
        assert captured.out == "", command  # nothing printed before the refusal
        assert _snapshot(tmp_path) == {**before, "s.toml": study.read_bytes()}
    study.write_text(_replace(GOOD, "budget = 20000", "budget = 3000").replace(
        "epochs = 1", "epochs = 1\neval_batch_size = 64\nchannels_last = false\namp = \"auto\""))
    assert main(["status", str(study)]) == 0


# ---- data import ----------------------------------------------------------------------------


def _copy_source(src: Path, dest: Path) -> Path:
    dest.mkdir()
    for f in src.glob("*.gz"):
        shutil.copy(f, dest / f.name)
    return dest


def test_import_installs_checked_files(tmp_path, real_mnist_source, capsys):
    root = tmp_path / "root"
    assert main(["data", "import", str(real_mnist_source), "--data-dir", str(root)]) == 0
    assert sorted(p.name for p in (root / "MNIST" / "raw").iterdir()) == sorted(
        ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", "train-images-idx3-ubyte", "train-labels-idx1-ubyte"]
    )
    from harness.data import load_mnist

    train_x, train_y, test_x, test_y = load_mnist(root)
    assert tuple(train_x.shape) == (60000, 28, 28) and tuple(test_x.shape) == (10000, 28, 28)
    assert int(train_y.max()) == 9
    mask = os.umask(0o022)
    os.umask(mask)
    for f in (root / "MNIST" / "raw").iterdir():  # readable as the umask allows, not private temp files
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~mask, (f, oct(f.stat().st_mode))


@pytest.mark.parametrize("damage", ["corrupted", "truncated", "missing"])
def test_import_rejects_damaged_files_and_writes_nothing(tmp_path, real_mnist_source, capsys, damage):
    src = _copy_source(real_mnist_source, tmp_path / "src")
    target = src / "t10k-labels-idx1-ubyte.gz"
    if damage == "corrupted":  # valid gzip, one label changed: only the md5 can tell
        data = bytearray(gzip.decompress(target.read_bytes()))
        data[100] = (data[100] + 1) % 10
        target.write_bytes(gzip.compress(bytes(data)))
    elif damage == "truncated":
        target.write_bytes(target.read_bytes()[:2000])
    else:
        target.unlink()
    root = tmp_path / "root"
    assert main(["data", "import", str(src), "--data-dir", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "t10k-labels-idx1-ubyte" in err[0]
    assert {"corrupted": "checksum mismatch", "truncated": "gzip", "missing": "missing"}[damage] in err[0]
    assert not root.exists()


def test_import_says_it_takes_gzipped_or_uncompressed_files(tmp_path, real_mnist_source, capsys):
    """What the message and --help say is what is accepted: each file as `<name>.gz` or as the
    uncompressed `<name>` (so an empty folder's message names both), mixed freely."""
    src = tmp_path / "src"
    src.mkdir()
    root = tmp_path / "root"
    assert main(["data", "import", str(src), "--data-dir", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing train-images-idx3-ubyte.gz or train-images-idx3-ubyte" in err[0], err
    assert "*-ubyte.gz" in err[0] and "uncompressed" in err[0], err
    assert list(tmp_path.iterdir()) == [src] and not any(src.iterdir())
    for command in (["data", "--help"], ["data", "import", "--help"]):
        with pytest.raises(SystemExit) as exit_:
            main(command)
        assert exit_.value.code == 0
        help_text = " ".join(capsys.readouterr().out.split())
        assert "*-ubyte.gz" in help_text and "uncompressed *-ubyte" in help_text, (command, help_text)
    # accepted as said: three uncompressed files and one gzipped (the message names only what is missing)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
        (src / name).write_bytes(gzip.decompress((real_mnist_source / f"{name}.gz").read_bytes()))
    assert main(["data", "import", str(src), "--data-dir", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing t10k-labels-idx1-ubyte.gz or t10k-labels-idx1-ubyte" in err[0], err
    assert not root.exists()
    shutil.copy(real_mnist_source / "t10k-labels-idx1-ubyte.gz", src)
    assert main(["data", "import", str(src), "--data-dir", str(root)]) == 0
    installed = sorted(p.name for p in (root / "MNIST" / "raw").iterdir())
    assert installed == sorted(f.name.removesuffix(".gz") for f in src.iterdir())


def _old_install(tmp_path: Path) -> Path:
    """A data root holding four stale 'MNIST' files (any bytes): what a failed import must keep."""
    root = tmp_path / "root"
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
        (raw / name).write_bytes(b"old " + name.encode())
    return root


def test_import_that_cannot_write_every_file_replaces_none(tmp_path, real_mnist_source, capsys):
    root = _old_install(tmp_path)
    (root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").mkdir()  # the last file cannot be put in place
    before = _snapshot(root)
    assert main(["data", "import", str(real_mnist_source), "--data-dir", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "t10k-labels-idx1-ubyte" in err[0] and "nothing was imported" in err[0]
    assert _snapshot(root) == before and sorted(p.name for p in (root / "MNIST" / "raw").iterdir()) == sorted(
        ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])


@pytest.mark.parametrize("hard_links", [True, False])
def test_import_whose_rename_fails_half_way_puts_the_old_files_back(tmp_path, real_mnist_source, capsys, monkeypatch,
                                                                    hard_links):  # fmt: skip
    """The third file's rename refused (as EPERM on a protected target would): the two files
    already replaced are put back, so the folder is byte-identical, with no stray file; also
    where the filesystem makes no hard links (the backups are then copies)."""
    import harness.data

    if not hard_links:
        def no_link(src, dst):
            raise PermissionError(1, "Operation not permitted", str(dst))

        monkeypatch.setattr(harness.data.os, "link", no_link)
    root = _old_install(tmp_path)
    before = _snapshot(root)
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(Path(dst).name)
        if len([c for c in calls if not c.startswith(".")]) == 3 and not Path(dst).name.startswith("."):
            raise PermissionError(1, "Operation not permitted", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(harness.data.os, "replace", replace)
    assert main(["data", "import", str(real_mnist_source), "--data-dir", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Operation not permitted" in err[0] and "nothing was imported" in err[0], err
    assert _snapshot(root) == before  # names and bytes: the two replaced files restored, no temporary left
    assert len([c for c in calls if not c.startswith(".")]) >= 3  # the failure did come after two replacements


def test_import_that_runs_out_of_space_leaves_no_temporary_file(tmp_path, real_mnist_source):
    """A write that fails part way (here the file-size limit, as a full disk would): the old
    files stay byte-identical and no temporary file is left."""
    root = _old_install(tmp_path)
    before = _snapshot(root)
    driver = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (20 * 2**20, resource.RLIM_INFINITY))\n"
        "from harness.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", driver, "data", "import", str(real_mnist_source), "--data-dir", str(root)],
                          capture_output=True, text=True, timeout=300, cwd=Path(__file__).parent.parent)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "cannot write MNIST files" in proc.stderr
    assert _snapshot(root) == before  # nothing replaced, no temporary file


@pytest.mark.parametrize("damage", ["truncated", "label"])
def test_run_refuses_damaged_installed_data_before_creating_the_study(tmp_path, synthetic_root, capsys, damage):
    raw = synthetic_root / "MNIST" / "raw"
    if damage == "truncated":
        target = raw / "train-images-idx3-ubyte"
        target.write_bytes(target.read_bytes()[:-500])
    else:
        target = raw / "t10k-labels-idx1-ubyte"
        data = bytearray(target.read_bytes())
        data[8 + 17] = 200
        target.write_bytes(bytes(data))
    study = tmp_path / "s.toml"
    study.write_text(GOOD)
    before = _snapshot(tmp_path)
    assert main(["run", str(study), "--data-dir", str(synthetic_root), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and target.name in err[0]
    assert {"truncated": "truncated?", "label": "label 200"}[damage] in err[0]
    assert _snapshot(tmp_path) == before  # no study database, lock or artifacts


@pytest.mark.parametrize("command", [
    ["export", "{study}", "--best", "--out", "{tmp}/exp"],
    ["retrain", "{study}", "--device", "cpu", "--seeds", "1"],
    ["results", "{study}", "--out", "{tmp}/r.md", "--exports", "{tmp}/exp"],  # after the retrain below
    ["run", "{study}", "--download", "--quiet"],  # present but damaged: no download, the same check
])  # fmt: skip
def test_every_command_that_reads_data_names_a_damaged_file(trained_study, tmp_path, capsys, command):
    study, data = trained_study
    if command[0] == "results":  # it reads data only to verify retrained winners: a retrained copy
        shutil.copytree(study.parent, tmp_path / "study")
        study = tmp_path / "study" / study.name
        assert main(["retrain", str(study), "--top", "1", "--no-baseline", "--seeds", "1", "--epochs", "1",
                     "--device", "cpu", "--data-dir", str(data)]) == 0  # fmt: skip
    damaged = tmp_path / "data"
    shutil.copytree(data, damaged)
    target = damaged / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    target.write_bytes(target.read_bytes()[:-300])
    before = _snapshot(study.parent)
    args = [a.format(study=study, tmp=tmp_path) for a in command] + ["--data-dir", str(damaged)]
    assert main(args) == 2, args
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "t10k-images-idx3-ubyte" in err and "truncated?" in err, err
    assert _snapshot(study.parent) == before and not (tmp_path / "exp").exists() and not (tmp_path / "r.md").exists()


def test_download_through_torchvision_installs_checked_files(tmp_path, real_mnist_source, monkeypatch):
    """Online users download through torchvision: served here by a real local HTTP server."""
    import functools
    import http.server
    import threading

    from torchvision.datasets import MNIST

    from harness.data import MNIST_FILES, check_mnist_files, load_mnist

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(real_mnist_source))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(MNIST, "mirrors", [f"http://127.0.0.1:{server.server_address[1]}/"])
        # Our copies are the canonical IDX bytes gzipped anew: torchvision checks the .gz bytes.
        monkeypatch.setattr(MNIST, "resources", [
            (name, hashlib.md5((real_mnist_source / name).read_bytes()).hexdigest()) for name, _ in MNIST.resources])
        root = tmp_path / "data"
        train_x, train_y, test_x, _ = load_mnist(root, download=True)
    finally:
        server.shutdown()
    assert tuple(train_x.shape) == (60000, 28, 28) and tuple(test_x.shape) == (10000, 28, 28)
    check_mnist_files(root)
    for name, md5 in MNIST_FILES.items():  # the canonical bytes, where torchvision and the harness look
        assert hashlib.md5((root / "MNIST" / "raw" / name).read_bytes()).hexdigest() == md5
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".mnist-download-")]  # temp folder gone


def test_download_that_fails_leaves_no_data_folder(tmp_path, capsys, monkeypatch):
    from torchvision.datasets import MNIST

    monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/"])  # refused at once: offline, for real
    study = tmp_path / "s.toml"
    study.write_text(GOOD)
    before = _snapshot(tmp_path)
    assert main(["run", str(study), "--data-dir", str(tmp_path / "data"), "--download", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot download MNIST" in err[0] and "harness data import" in err[0]
    assert _snapshot(tmp_path) == before and not (tmp_path / "data").exists()


def test_bad_input_is_refused_before_any_download(tmp_path, capsys, monkeypatch):
    """--download with a missing teacher file or an artifact path that is a file: refused first,
    so nothing is fetched (the mirror here would refuse at once, and is never asked)."""
    from torchvision.datasets import MNIST

    import harness.data

    fetched = []
    monkeypatch.setattr(MNIST, "mirrors", ["http://127.0.0.1:9/"])
    monkeypatch.setattr(harness.data, "load_mnist", lambda *a, **k: fetched.append(a))
    bad = [(_replace(GOOD, "epochs = 1", 'epochs = 1\nteacher = "missing.pt2"'), "missing.pt2"),
           (_replace(GOOD, "budget = 20000", 'budget = 20000\nartifact_dir = "art"'), "art")]
    for n, (text, named) in enumerate(bad):
        study = tmp_path / f"s{n}.toml"
        study.write_text(text)
        if named == "art":
            (tmp_path / "art").write_text("a file where the artifact folder goes")
        before = _snapshot(tmp_path)
        assert main(["run", str(study), "--data-dir", str(tmp_path / "data"), "--download", "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and named in err[0] and "download" not in err[0], err
        assert _snapshot(tmp_path) == before and fetched == []


def test_a_storage_of_another_optuna_schema_is_one_line_for_every_command(tmp_path, capsys):
    """Optuna refuses tables of another schema version with a RuntimeError: every command turns
    it into one line that says how to upgrade, exit 2, and the database stays byte-identical."""
    import sqlite3

    db = tmp_path / "old.db"
    optuna.create_study(study_name="bad-input", storage=f"sqlite:///{db}")
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE alembic_version SET version_num = 'v1.3.0.a'")  # an Optuna 1.3 database
    url = f"sqlite:///{db}"
    study = tmp_path / "s.toml"
    study.write_text(_replace(GOOD, "budget = 20000", f'budget = 20000\nstorage = "{url}"'))
    before = _snapshot(tmp_path)
    for argv in (["status", str(study)], ["report", str(study), "--out", str(tmp_path / "r.html")],
                 ["run", str(study), "--trials", "1"], ["export", str(study), "--best", "--out", str(tmp_path / "e")],
                 ["retrain", str(study)], ["results", str(study), "--out", str(tmp_path / "r.md")],
                 ["status", str(study), "--storage", url]):  # fmt: skip
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "optuna storage upgrade" in err[0] and "Traceback" not in err[0], (argv, err)
        assert _snapshot(tmp_path) == before, argv


def test_a_leftover_journal_does_not_let_run_take_over_a_foreign_database(tmp_path, capsys):
    """A SQLite file of someone else's with a -journal or -wal beside it that is not hot (nothing
    to roll back): still refused as not an Optuna storage, byte for byte untouched. A hot journal
    (a writer killed mid-transaction) on a study's database is what `run` may roll back."""
    import sqlite3

    from harness.storage import check_optuna_sqlite

    db = tmp_path / "mine.db"
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("CREATE TABLE accounts (id INTEGER)")
    study = tmp_path / "s.toml"
    study.write_text(GOOD)
    for leftover in ("mine.db-journal", "mine.db-wal"):
        (tmp_path / leftover).write_bytes(b"")
        before = _snapshot(tmp_path)
        assert main(["run", str(study), "--storage", f"sqlite:///{db}", "--trials", "1"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "other tables (accounts)" in err[0], err
        assert _snapshot(tmp_path) == before
        (tmp_path / leftover).unlink()

    hot = tmp_path / "h.db"
    optuna.create_study(study_name="h", storage=f"sqlite:///{hot}")
    crash = ("import os, sqlite3\nc = sqlite3.connect(%r, isolation_level=None)\nc.execute('PRAGMA cache_size=1')\n"
             "c.execute('BEGIN IMMEDIATE')\nc.execute('CREATE TABLE junk (x BLOB)')\n"
             "for _ in range(200): c.execute('INSERT INTO junk VALUES (?)', (os.urandom(4000),))\nos._exit(0)\n") % str(hot)
    subprocess.run([sys.executable, "-c", crash], check=True)  # killed mid-transaction: a hot journal
    assert (tmp_path / "h.db-journal").stat().st_size > 0
    with pytest.raises(StorageError, match="crashed writer"):
        check_optuna_sqlite(f"sqlite:///{hot}", for_writing=False)  # reading cannot roll it back
    check_optuna_sqlite(f"sqlite:///{hot}", for_writing=True)  # run's read-write open rolls it back


def _damaged_study(folder: Path) -> tuple[Path, Path]:
    """A study file whose SQLite database (30 trials) has bytes overwritten in its middle."""
    db = folder / "d.db"
    study = optuna.create_study(study_name="bad-input", storage=f"sqlite:///{db}")
    study.optimize(lambda t: t.suggest_float("a", 0, 1), n_trials=30)
    damaged = bytearray(db.read_bytes())
    damaged[5000:9000] = b"\xff" * 4000
    db.write_bytes(bytes(damaged))
    path = folder / "s.toml"
    path.write_text(_replace(GOOD, "budget = 20000", f'budget = 20000\nstorage = "sqlite:///{db}"'))
    return path, db


def test_a_damaged_database_is_one_line_and_left_as_it_is(tmp_path, capsys):
    """Bytes overwritten in the middle of a study's SQLite file: every command says the database
    is malformed in one line naming it, exit 2 (no traceback), and the file stays as it was."""
    path, db = _damaged_study(tmp_path)
    before = _snapshot(tmp_path)
    for argv in (["status", str(path)], ["report", str(path), "--out", str(tmp_path / "r.html")],
                 ["run", str(path), "--trials", "1"]):  # fmt: skip
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"harness: error: storage {db}: database disk image is malformed"], (argv, err)
        assert _snapshot(tmp_path) == before, argv


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc: a folder nothing can be created in")
def test_outputs_that_cannot_be_written_are_one_line_and_write_nothing(trained_study, tmp_path, capsys):
    """Paths in /proc (no file can be made there, even by root): report writes neither of its
    two files when one cannot be written; results refuses an --exports that is a file; an
    artifact folder that cannot be made is refused before the study's database exists."""
    study, data = trained_study
    before = _snapshot(study.parent), _snapshot(tmp_path)
    cases = [
        (["report", str(study), "--out", "/proc/x.html", "--csv", str(tmp_path / "t.csv")], "/proc/x.html"),
        (["report", str(study), "--out", str(tmp_path / "r.html"), "--csv", "/proc/t.csv"], "/proc/t.csv"),
        (["results", str(study), "--out", str(tmp_path / "r.md"), "--exports", str(study)], "--exports"),
        (["results", str(study), "--out", "/proc/r.md", "--exports", "/proc/exp"], "/proc/r.md"),
    ]
    for argv, named in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and named in err[0] and "Traceback" not in err[0], (argv, err)
        assert (_snapshot(study.parent), _snapshot(tmp_path)) == before, argv
    fresh = tmp_path / "fresh.toml"
    fresh.write_text(_replace(GOOD, "budget = 20000", 'budget = 20000\nartifact_dir = "/proc/harness-weights"'))
    before = _snapshot(tmp_path)
    assert main(["run", str(fresh), "--data-dir", str(data), "--trials", "1", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "artifact folder /proc/harness-weights" in err[0], err
    assert _snapshot(tmp_path) == before  # no database, no lock file


def test_console_script_error_has_no_traceback(tmp_path):
    study = tmp_path / "s.toml"
    study.write_text(_replace(GOOD, "epochs = 1", "epochz = 1"))
    exe = shutil.which("harness") or sys.executable
    cmd = [exe, "run", str(study)] if exe != sys.executable else [exe, "-m", "harness.cli", "run", str(study)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "train.epochz" in proc.stderr
    assert "Traceback" not in proc.stderr


# The seed network with its dropout rate sampled: a user space that has the seed network as a point.
SEED_DROPOUT_SPACE = (
    "import optuna\n"
    "from search_spaces.seed import REFERENCE_PARAMS, suggest as seed_suggest\n"
    "def suggest(trial):\n"
    "    dropout = trial.suggest_float('dropout', 0.0, 0.25, step=0.05)\n"
    "    return seed_suggest(optuna.trial.FixedTrial(dict(REFERENCE_PARAMS, dropout=dropout)))\n"
)


def _space_returning(**fields) -> str:
    """A user space: the seed network with its dropout sampled, with ``fields`` of its spec replaced."""
    changes = ", ".join(f"{k}={v!r}" for k, v in fields.items())
    return ("import dataclasses\n" + SEED_DROPOUT_SPACE.replace("def suggest(", "def _seed(")
            + f"def suggest(trial):\n    return dataclasses.replace(_seed(trial), {changes})\n")  # fmt: skip


USER_SPACES = [
    ("missing-file", None, "nope.py:suggest", ["study.search_space", "nope.py", "not found"]),
    ("syntax-error", "def suggest(trial)\n", "space.py:suggest", ["study.search_space", "space.py", "SyntaxError"]),
    ("no-function", "x = 1\n", "space.py:suggest", ["study.search_space", "no function 'suggest'"]),
    ("raises", "def suggest(trial):\n    raise RuntimeError('boom')\n", "space.py:suggest",
     ["study.search_space", "suggest(trial) failed", "boom"]),
    # sys.exit in a user's space ended harness with its code and no word (a SystemExit is no Exception)
    ("exits-on-import", "import sys\nsys.exit(3)\n", "space.py:suggest", ["study.search_space", "import failed", "SystemExit: 3"]),
    ("exits", "import sys\ndef suggest(trial):\n    sys.exit(3)\n", "space.py:suggest",
     ["study.search_space", "suggest(trial) failed", "SystemExit: 3"]),
    ("returns-dict", "def suggest(trial):\n    return {'w': trial.suggest_int('w', 1, 4)}\n", "space.py:suggest",
     ["study.search_space", "must return a harness.spec.ArchSpec", "dict"]),
    ("unknown-activation", _space_returning(activation="tanh"), "space.py:suggest",
     ["study.search_space", "unknown activation 'tanh'", "valid: relu, silu, gelu"]),
    ("unknown-bn", _space_returning(bn="after"), "space.py:suggest",
     ["study.search_space", "unknown bn placement 'after'", "valid: after_relu, before_relu, none"]),
    ("unknown-head", _space_returning(head="softmax"), "space.py:suggest",
     ["study.search_space", "unknown head 'softmax'", "valid: flatten, gap"]),
    ("baseline-not-a-dict", SEED_DROPOUT_SPACE + "BASELINE_PARAMS = [0.25]\n", "space.py:suggest",
     ["study.search_space", "BASELINE_PARAMS must be a dict", "list"]),
    ("baseline-missing-param", SEED_DROPOUT_SPACE + "BASELINE_PARAMS = {}\n", "space.py:suggest",
     ["study.search_space", "BASELINE_PARAMS", "missing parameter 'dropout'"]),
    ("baseline-not-the-seed", SEED_DROPOUT_SPACE + "BASELINE_PARAMS = {'dropout': 0.1}\n", "space.py:suggest",
     ["study.search_space", "BASELINE_PARAMS do not build the seed network"]),
]


def test_a_user_space_exiting_during_a_trial_fails_that_trial_loudly(tmp_path, capsys, synthetic_root):
    """A user's space that calls sys.exit only on some proposal (past the check-time draw):
    one line naming the space and the trial, exit 2, the trial FAIL; not a silent exit with
    the space's code and the trial left RUNNING until its heartbeat goes stale (more such
    failures: tests/test_user_space_errors.py)."""
    (tmp_path / "space.py").write_text(SEED_DROPOUT_SPACE.replace(
        "def suggest(trial):\n", "def suggest(trial):\n    if trial.number >= 1:\n        import sys\n        sys.exit(3)\n"))
    study = tmp_path / "x.toml"
    study.write_text(_replace(GOOD, "budget = 20000", 'search_space = "space.py:suggest"\nbudget = 20000'))
    assert main(["run", str(study), "--data-dir", str(synthetic_root), "--trials", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(r"harness: error: .*study\.search_space: trial 1: .*space\.py: suggest\(trial\) failed: "
                        r"SystemExit: 3 \(.*\)\n", err), err  # fmt: skip
    trials = optuna.load_study(study_name="bad-input", storage=f"sqlite:///{tmp_path / 'bad-input.db'}").get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL"], [(t.number, t.state) for t in trials]


def test_a_user_space_exiting_on_an_enqueued_point_is_a_one_line_error(tmp_path, capsys, synthetic_root):
    """An [[enqueue]] entry is checked against the space before the study exists: a space that
    calls sys.exit there is one line naming the entry, exit 2, nothing written."""
    (tmp_path / "space.py").write_text(SEED_DROPOUT_SPACE.replace(  # exits only when an entry is checked
        "def suggest(trial):\n", "def suggest(trial):\n    if type(trial).__name__ == '_CheckingTrial':\n"
        "        import sys\n        sys.exit(3)\n"))  # fmt: skip
    study = tmp_path / "x.toml"
    study.write_text(_replace(GOOD, "budget = 20000", 'search_space = "space.py:suggest"\nbudget = 20000')
                     + "[[enqueue]]\ndropout = 0.1\n")  # fmt: skip
    before = _snapshot(tmp_path)
    assert main(["run", str(study), "--data-dir", str(synthetic_root), "--trials", "1"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "enqueue #1: search space" in lines[0] and "failed on these parameters: SystemExit: 3" in lines[0], lines
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("case_id,code,ref,words", USER_SPACES, ids=[c[0] for c in USER_SPACES])
def test_bad_user_search_space(tmp_path, capsys, synthetic_root, case_id, code, ref, words):
    if code is not None:
        (tmp_path / "space.py").write_text(code)
    study = tmp_path / "bad.toml"
    study.write_text(_replace(GOOD, "budget = 20000", f'search_space = "{ref}"\nbudget = 20000'))
    before = _snapshot(tmp_path)
    assert main(["run", str(study), "--data-dir", str(synthetic_root)]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert str(study) in lines[0]
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert _snapshot(tmp_path) == before


def test_user_space_baseline_params_enqueue_the_control_as_a_point_of_the_space(tmp_path, synthetic_root):
    """A user space that declares BASELINE_PARAMS: the baseline trial carries those parameters
    (so the sampler learns from it) and trains the seed network itself."""
    import optuna

    from harness.spec import ArchSpec
    from search_spaces import baseline_spec

    (tmp_path / "space.py").write_text(SEED_DROPOUT_SPACE + "BASELINE_PARAMS = {'dropout': 0.25}\n")
    study = tmp_path / "mine.toml"
    study.write_text(_replace(GOOD, "budget = 20000", 'search_space = "space.py:suggest"\nbudget = 20000\nn_trials = 2'))
    assert main(["run", str(study), "--data-dir", str(synthetic_root), "--device", "cpu", "--quiet"]) == 0
    trials = optuna.load_study(study_name="bad-input", storage=f"sqlite:///{tmp_path / 'bad-input.db'}").get_trials()
    (base,) = [t for t in trials if t.user_attrs["baseline"]]
    assert base.params == {"dropout": 0.25} and base.state == optuna.trial.TrialState.COMPLETE
    assert ArchSpec.from_json(base.user_attrs["spec"]) == baseline_spec()
    assert base.user_attrs["trainable_params"] == 19_290


def test_baseline_enqueued_before_the_space_declared_it_stays_the_seed_network(tmp_path, synthetic_root, monkeypatch):
    """A study made when its space had no BASELINE_PARAMS holds a baseline without parameters;
    a retry of it after the space declares them must still train the seed network, not a
    sampled point recorded as the baseline."""
    import sys

    import optuna

    from harness.spec import ArchSpec
    from search_spaces import baseline_spec

    (tmp_path / "space.py").write_text(SEED_DROPOUT_SPACE)
    study = tmp_path / "mine.toml"
    study.write_text(_replace(GOOD, "budget = 20000", 'search_space = "space.py:suggest"\nbudget = 20000\nn_trials = 1'))
    assert main(["run", str(study), "--data-dir", str(synthetic_root), "--device", "cpu", "--quiet"]) == 0
    storage = f"sqlite:///{tmp_path / 'bad-input.db'}"
    optuna.load_study(study_name="bad-input", storage=storage).enqueue_trial({}, user_attrs={"baseline": True})  # as a retry is
    (tmp_path / "space.py").write_text(SEED_DROPOUT_SPACE + "BASELINE_PARAMS = {'dropout': 0.25}\n")
    for name in [m for m in sys.modules if m.startswith("_harness_user_space_")]:
        monkeypatch.delitem(sys.modules, name)  # the space file changed: load it again
    # n_trials = 1 is met already: --trials 1 runs the waiting retry
    assert main(["run", str(study), "--data-dir", str(synthetic_root), "--device", "cpu", "--quiet", "--trials", "1"]) == 0
    trials = optuna.load_study(study_name="bad-input", storage=storage).get_trials()
    bases = [t for t in trials if t.user_attrs.get("baseline")]
    assert len(bases) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in bases)
    for t in bases:
        assert t.params == {} and ArchSpec.from_json(t.user_attrs["spec"]) == baseline_spec()


def test_user_search_space_and_enqueue_run_and_are_recorded(tmp_path, synthetic_root):
    """A user's own space (path relative to the study file) with a known architecture enqueued."""
    import optuna

    (tmp_path / "spaces").mkdir()
    (tmp_path / "spaces" / "mine.py").write_text(
        "from harness.spec import ArchSpec, BlockSpec, ConvSpec\n"
        "def suggest(trial):\n"
        "    '''Two conv stages of one width.'''\n"
        "    w = trial.suggest_categorical('width', [4, 8, 12])\n"
        "    return ArchSpec(blocks=(BlockSpec(convs=(ConvSpec(w),)), BlockSpec(convs=(ConvSpec(w),))), head='gap')\n"
    )
    study = tmp_path / "mine.toml"
    study.write_text(
        _replace(GOOD, "budget = 20000", 'search_space = "spaces/mine.py:suggest"\nbudget = 20000\nn_trials = 3')
        + "[[enqueue]]\nwidth = 12\n"
    )
    assert main(["run", str(study), "--data-dir", str(synthetic_root), "--device", "cpu", "--quiet"]) == 0
    trials = optuna.load_study(study_name="bad-input", storage=f"sqlite:///{tmp_path / 'bad-input.db'}").get_trials()
    assert [t.user_attrs["origin"] for t in trials] == ["baseline", "enqueued", "sampler"]
    assert trials[1].params == {"width": 12} and trials[1].user_attrs["arch"] == "[12] M | [12] M | gap"
    assert trials[2].user_attrs["sampler_stream"] == 0


def test_status_does_not_wait_for_a_held_write_lock(tmp_path, capsys, synthetic_root):
    """Another process holds SQLite's write lock (a worker mid-write): status reads at once.
    Only an exclusive lock (a commit in progress) makes it wait, and then only seconds."""
    import sqlite3
    import time

    from harness.storage import SQLITE_READ_TIMEOUT_S

    study = tmp_path / "s.toml"
    study.write_text(_replace(GOOD, "budget = 20000", "budget = 3000"))
    assert main(["run", str(study), "--trials", "1", "--data-dir", str(synthetic_root), "--quiet"]) == 0
    capsys.readouterr()
    writer = sqlite3.connect(tmp_path / "bad-input.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # what every harness write transaction takes
    start = time.monotonic()
    assert main(["status", str(study)]) == 0
    assert time.monotonic() - start < SQLITE_READ_TIMEOUT_S
    assert "budget 3,000" in capsys.readouterr().out
    writer.execute("ROLLBACK")
    writer.execute("BEGIN EXCLUSIVE")
    start = time.monotonic()
    assert main(["status", str(study)]) == 2
    waited = time.monotonic() - start
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "locked" in err and "Traceback" not in err, err
    assert SQLITE_READ_TIMEOUT_S * 0.9 <= waited < 60  # seconds, not the 600 s a worker waits
    writer.execute("ROLLBACK")
    writer.close()


def test_a_relative_sqlite_storage_in_a_study_file_is_beside_the_study_file(tmp_path, monkeypatch, capsys):
    """study.storage = "sqlite:///sub/s.db" is relative to the study file like every other path
    in it, whatever the working directory: status from two folders reads one study."""
    from harness.config import load_study_config

    folder = tmp_path / "studies"
    folder.mkdir()
    path = folder / "s.toml"
    path.write_text(_replace(GOOD, "budget = 20000", 'budget = 20000\nstorage = "sqlite:///sub/s.db"'))
    assert load_study_config(path).storage == f"sqlite:///{folder / 'sub' / 's.db'}"
    (folder / "sub").mkdir()
    from harness.study import open_study

    open_study(load_study_config(path), load_study_config(path).storage)  # created as `run` creates it
    for cwd in (tmp_path, folder):
        monkeypatch.chdir(cwd)
        assert main(["status", str(path)]) == 0, capsys.readouterr().err
        assert "bad-input" in capsys.readouterr().out
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob("*.db")] == [Path("studies/sub/s.db")]


def test_status_into_a_closed_pipe_is_not_an_error(trained_study, monkeypatch):
    """`harness status ... | head -1`: the reader leaves, the next write raises BrokenPipeError
    (an OSError): exit 0, no traceback, and no second error when Python flushes at exit."""
    study, _ = trained_study
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone
    closed = os.fdopen(write_end, "w", buffering=1)
    monkeypatch.setattr(sys, "stdout", closed)
    try:
        assert main(["status", str(study)]) == 0
    finally:
        closed.close()


def test_run_puts_back_the_signal_handlers_it_replaced(tmp_path, synthetic_root):
    """`run` turns SIGTERM into an interrupt while it runs; afterwards (a program or a test that
    calls main() goes on) SIGTERM and SIGINT mean what they meant before."""
    import signal

    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    study = tmp_path / "s.toml"
    study.write_text(GOOD)
    assert main(["run", str(study), "--trials", "1", "--data-dir", str(synthetic_root), "--quiet", "--device", "cpu"]) == 0
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_database_errors_wrapped_by_optuna_are_sorted_by_what_is_inside(trained_study, monkeypatch, capsys):
    """Optuna wraps SQLAlchemy's errors (StorageInternalError): a lock wait that ran out is one
    line saying another process may be writing; an error that is not the database's state (an
    IntegrityError: a bug) is not hidden behind a one-line 'bad input'."""
    import sqlalchemy

    import harness.cli

    study, _ = trained_study

    def wrapped(error):
        def command(args):
            try:
                raise error
            except sqlalchemy.exc.SQLAlchemyError as exc:
                raise optuna.exceptions.StorageInternalError("An exception is raised during the commit.") from exc
        return command

    locked = sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("database is locked"))
    monkeypatch.setattr(harness.cli, "_cmd_status", wrapped(locked))
    assert main(["status", str(study)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["harness: error: storage: database is locked (another process may be writing; try again)"], err
    clash = sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed"))
    monkeypatch.setattr(harness.cli, "_cmd_status", wrapped(clash))
    with pytest.raises(optuna.exceptions.StorageInternalError):
        main(["status", str(study)])


@pytest.fixture(scope="module")
def retrained_study(tmp_path_factory) -> tuple[Path, Path]:
    """One trained trial (the baseline), retrained with one seed: what `results` exports."""
    study, data = _one_trained_trial(tmp_path_factory, "retrained")
    assert main(["retrain", str(study), "--seeds", "1", "--epochs", "1", "--data-dir", str(data), "--device", "cpu"]) == 0
    return study, data


def test_results_refuses_an_out_it_cannot_write_before_exporting(retrained_study, tmp_path, capsys):
    """An --out that cannot be written (here a file in /proc) is refused in one line before the
    winners are exported: no --exports folder, nothing in the study's folder changed (the
    exports were written and verified, then the table failed)."""
    study, data = retrained_study
    before = _snapshot(study.parent), _snapshot(tmp_path)
    assert main(["results", str(study), "--out", "/proc/harness-results.md", "--exports", str(tmp_path / "exports"),
                 "--data-dir", str(data)]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("harness: error: /proc/harness-results.md: cannot write: "), err
    assert (_snapshot(study.parent), _snapshot(tmp_path)) == before
    assert not (tmp_path / "exports").exists()


@pytest.mark.parametrize("note,said", [("line one\n# a heading\nline two", "--note must be one line"),
                                       (os.fsdecode(b"caf\xe9"), "--note is not UTF-8 text")])
def test_results_refuses_a_note_it_cannot_show_and_keeps_the_old_file(trained_study, tmp_path, capsys, note, said):
    """A note of several lines (the bold ran across paragraphs and headings) or of bytes that are
    no UTF-8 text (the file was emptied by a traceback): one line, exit 2, the earlier results
    file byte-identical."""
    study, data = trained_study
    out = tmp_path / "results.md"
    assert main(["results", str(study), "--out", str(out), "--data-dir", str(data)]) == 0
    capsys.readouterr()
    before = _snapshot(study.parent), _snapshot(tmp_path)
    assert main(["results", str(study), "--out", str(out), "--data-dir", str(data), "--note", note]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"harness: error: {said}"], err
    assert (_snapshot(study.parent), _snapshot(tmp_path)) == before


def test_results_records_an_out_name_that_is_no_utf8_escaped(trained_study, tmp_path):
    """A results file whose name holds bytes that are no UTF-8 is written (it was a traceback
    and an empty file): its recorded command line shows those bytes escaped (the file is UTF-8
    text), and the command prints the name as given, byte for byte."""
    study, data = trained_study
    out = bytes(tmp_path) + b"/r\xff.md"
    done = subprocess.run([sys.executable, "-m", "harness.cli", "results", str(study), "--out", os.fsdecode(out),
                           "--data-dir", str(data)], capture_output=True, timeout=300)  # fmt: skip
    assert done.returncode == 0 and done.stdout == b"results: " + out + b"\n", done
    text = Path(os.fsdecode(out)).read_bytes().decode("utf-8")  # raises if the file is not UTF-8
    assert "r\\xff.md" in text and "Nothing is retrained yet" in text
    assert sorted(os.listdir(bytes(tmp_path))) == [b"r\xff.md"]  # no temporary file left


def test_an_output_write_that_fails_leaves_no_temporary_file_and_one_line(monkeypatch, tmp_path):
    """When the temporary file cannot be written and its clean-up fails too (a read-only file
    system refuses the unlink as well), the error is the write's, in one line (the clean-up's
    OSError escaped as a traceback)."""
    import errno

    from harness.errors import HarnessError
    from harness.report import write_whole

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr(Path, "write_text", read_only)
    monkeypatch.setattr(Path, "unlink", read_only)
    with pytest.raises(HarnessError, match=r"r\.html: cannot write: Read-only file system"):
        write_whole({tmp_path / "r.html": "<html>"})


def test_a_resumed_retrain_counts_one_stored_run_in_the_singular(retrained_study, capsys):
    """The first line of a retrain that keeps one stored run says "1 of the 2 runs is"."""
    study, data = retrained_study
    capsys.readouterr()
    assert main(["retrain", str(study), "--seeds", "2", "--epochs", "1", "--data-dir", str(data), "--device", "cpu"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.endswith("; 1 of the 2 runs is stored already and kept"), first


@pytest.mark.parametrize("jobs,merged", [("1", False), ("2", False), ("1", True)])
def test_a_run_whose_output_reader_leaves_goes_on_to_the_end(tmp_path, synthetic_root, jobs, merged):
    """`harness run ... | head -1` (and `2>&1 | head -1`, stderr's reader gone too): the study
    still runs every trial (it ended after the first trial's line, exit status 0, nothing
    said), with one note on stderr where stderr is still read; exit status 0."""
    study = tmp_path / "p.toml"
    study.write_text(_replace(GOOD, "budget = 20000", "budget = 20000\nn_trials = 4"))
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(study), "--data-dir", str(synthetic_root),
                             "--device", "cpu", "--jobs", jobs], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT if merged else subprocess.PIPE)  # fmt: skip
    proc.stdout.readline()  # the reader takes one line and leaves, as head -1 does
    proc.stdout.close()
    err = "" if merged else proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0, err
    notes = [line for line in err.splitlines() if "standard output was closed" in line]
    assert notes == ([] if merged else ["harness: note: standard output was closed (its reader left); going on without it"]), err
    trials = optuna.load_study(study_name="bad-input", storage=f"sqlite:///{tmp_path / 'bad-input.db'}").get_trials()
    assert len(trials) == 4 and all(t.state.is_finished() and t.state.name != "FAIL" for t in trials), trials


def test_a_retrain_whose_output_reader_leaves_goes_on_to_the_end(tmp_path, synthetic_root):
    """`harness retrain ... | head -1`: every seed is still retrained, one note on stderr, exit 0."""
    from harness.retrain import stored_retrains

    study = tmp_path / "s.toml"
    study.write_text(GOOD)
    assert main(["run", str(study), "--trials", "1", "--data-dir", str(synthetic_root), "--quiet", "--device", "cpu"]) == 0
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "retrain", str(study), "--seeds", "3", "--epochs", "1",
                             "--data-dir", str(synthetic_root), "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0, err
    assert err.count("standard output was closed (its reader left)") == 1, err
    records = stored_retrains(optuna.load_study(study_name="bad-input", storage=f"sqlite:///{tmp_path / 'bad-input.db'}"))
    assert [r["seeds"] for r in records.values()] == [3], records


def test_a_full_study_says_which_enqueued_architectures_wait(tmp_path, synthetic_root, capsys):
    """[[enqueue]] tables added to a study whose study.n_trials is reached: the run has nothing
    to do (nothing written), and says how many tables wait and that --trials N runs them (it
    said only "nothing to run"); that run runs them first."""
    study = tmp_path / "s.toml"
    study.write_text(_replace(SEED_GOOD, "budget = 20000", "budget = 20000\nn_trials = 3"))
    args = ["--data-dir", str(synthetic_root), "--device", "cpu", "--quiet"]
    assert main(["run", str(study), *args]) == 0
    study.write_text(study.read_text() + _enqueue(dropout=0.1) + _enqueue(dropout=0.15))
    capsys.readouterr()
    before = _snapshot(tmp_path)
    assert main(["run", str(study), *args]) == 0
    out, err = capsys.readouterr()
    assert "nothing to run" in out and _snapshot(tmp_path) == before
    assert ("note: 2 trials wait to run (2 of the study file's [[enqueue]] not in it yet): --trials 2 runs them "
            "first") in err.splitlines(), err  # fmt: skip
    assert main(["run", str(study), "--trials", "1", *args]) == 0  # both enqueued, one run: the other waits in it
    capsys.readouterr()
    assert main(["run", str(study), *args]) == 0
    assert "note: 1 trial waits to run (1 enqueued in it): --trials 1 runs it first" in capsys.readouterr().err
    assert main(["run", str(study), "--trials", "1", *args]) == 0
    trials = optuna.load_study(study_name="bad-input", storage=f"sqlite:///{tmp_path / 'bad-input.db'}").get_trials()
    assert [t.params.get("dropout") for t in trials[3:]] == [0.1, 0.15] and all(t.user_attrs.get("enqueued") for t in trials[3:])
    capsys.readouterr()
    assert main(["run", str(study), *args]) == 0  # none waits now: no note
    assert "[[enqueue]]" not in capsys.readouterr().err


def test_an_enqueued_value_within_rounding_of_the_grid_is_the_grids_value(tmp_path, synthetic_root, capsys):
    """dropout = 0.25000000001 is accepted as on the 0.05 grid, and so is the seed network's
    0.25: the table repeats the baseline and is refused as such (it was stored unrounded,
    passed the repeat check, and the seed network trained twice); nothing written."""
    study = tmp_path / "s.toml"
    study.write_text(SEED_GOOD + _enqueue(dropout="0.25000000001"))
    before = _snapshot(tmp_path)
    assert main(["run", str(study), "--trials", "2", "--data-dir", str(synthetic_root), "--device", "cpu", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "enqueue #1: its parameters are the baseline's" in err[0], err
    assert _snapshot(tmp_path) == before


def test_a_misspelt_enqueue_key_is_named_beside_the_missing_one(tmp_path, capsys):
    """`Dropout = 0.1` for `dropout`: the message names the missing parameter and the given key
    that reads like it (it named only the missing one)."""
    from search_spaces.seed import REFERENCE_PARAMS

    study = tmp_path / "s.toml"
    study.write_text(SEED_GOOD + _enqueue(drop="dropout", Dropout=0.1))
    before = _snapshot(tmp_path)
    assert "dropout" in REFERENCE_PARAMS
    assert main(["status", str(study)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ("enqueue #1: missing parameter 'dropout' (given: 'Dropout', which the space does not "
                              "read: a misspelling?)") in err[0], err  # fmt: skip
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("command", ["export", "results"])
def test_an_export_folder_whose_name_is_no_utf8_is_refused_in_one_line(retrained_study, tmp_path, command):
    """export --out or results --exports naming a folder whose bytes are no UTF-8: torch's
    writer aborted the process (exit 134, a C++ terminate); now one line, exit 2, nothing written."""
    study, data = retrained_study
    folder = os.fsdecode(bytes(tmp_path) + b"/ex\xff")
    args = (["export", str(study), "--trial", "0", "--out", folder] if command == "export" else
            ["results", str(study), "--out", str(tmp_path / "r.md"), "--exports", folder])  # fmt: skip
    before = _snapshot(study.parent), sorted(os.listdir(bytes(tmp_path)))
    done = subprocess.run([sys.executable, "-m", "harness.cli", *args, "--data-dir", str(data)], capture_output=True,
                          timeout=300)  # fmt: skip
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(err) == 1, (done.returncode, done.stderr)
    assert err[0].endswith(b"ex\xff: its path holds bytes that are no UTF-8 text, which torch.export and onnxruntime "
                           b"cannot write to; choose another folder"), err  # fmt: skip
    assert (_snapshot(study.parent), sorted(os.listdir(bytes(tmp_path)))) == before


def test_an_error_naming_a_file_the_console_cannot_encode_is_still_one_line(tmp_path):
    """On an ASCII console a study file named josé.toml is named with \\xe9 in the one-line
    error (exit 2), as Python's stderr escapes; a name's bytes that are no UTF-8 are written as
    they are (ls's way). Neither may turn the error into a traceback."""
    for name, env, shown in ((b"jos\xc3\xa9.toml", {"PYTHONIOENCODING": "ascii"}, b"jos\\xe9.toml"),
                             (b"jos\xe9.toml", {}, b"jos\xe9.toml")):  # fmt: skip
        path = os.fsdecode(bytes(tmp_path) + b"/" + name)
        done = subprocess.run([sys.executable, "-m", "harness.cli", "status", path], capture_output=True, timeout=120,
                              env={**os.environ, **env})  # fmt: skip
        assert done.returncode == 2 and done.stdout == b"", done
        assert done.stderr == b"harness: error: " + bytes(tmp_path) + b"/" + shown + b": study file not found\n", done


def test_a_misspelling_hint_names_only_a_key_spelt_like_the_missing_one():
    """A compact point without s2_width: s3_width (read by the space later in the same draw) is
    no misspelling of it, so the message offers none (it offered s3_width)."""
    from search_spaces import enqueue_params, get_search_space

    space = get_search_space("compact")
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    space.suggest(trial)
    params = dict(trial.params)
    assert {"s2_width", "s3_width"} <= params.keys()
    for missing in ("s2_width", "s1_convs"):
        with pytest.raises(ValueError, match=rf"^missing parameter '{missing}' \(search space 'compact'\)$"):
            enqueue_params(space, {k: v for k, v in params.items() if k != missing})


def test_a_table_enqueued_off_grid_before_the_grid_rounding_is_not_enqueued_again(tmp_path):
    """A study that stored an [[enqueue]] table's dropout as 0.10000000001 (before such values
    were stored as their grid's 0.1): the same table is held, not listed as waiting (it would
    have been enqueued and trained a second time)."""
    from harness.config import load_study_config
    from harness.study import not_yet_enqueued
    from search_spaces import get_search_space
    from search_spaces.seed import REFERENCE_PARAMS

    study_file = tmp_path / "s.toml"
    study_file.write_text(SEED_GOOD + _enqueue(dropout="0.10000000001"))
    cfg = load_study_config(study_file)
    study = optuna.create_study()
    study.enqueue_trial({**REFERENCE_PARAMS, "dropout": 0.10000000001}, user_attrs={"enqueued": True})  # as stored then
    assert not_yet_enqueued(study, cfg, get_search_space("seed")) == []
    study_file.write_text(SEED_GOOD + _enqueue(dropout="0.15"))  # another point: waits
    assert [p["dropout"] for p in not_yet_enqueued(study, load_study_config(study_file), get_search_space("seed"))] == [0.15]


def test_a_json_without_a_model_beside_it_is_an_output_like_any_other(tmp_path):
    """Only an export's card is guarded: notes.json with no .pt2 or .onnx of its stem is not."""
    from harness.storage import check_outputs

    (tmp_path / "notes.json").write_text("{}")
    check_outputs({"--csv": tmp_path / "notes.json"}, [])  # not refused


def test_results_on_a_damaged_database_names_it(tmp_path, capsys):
    """results given one study file whose database is damaged: the one line names the file (it
    said "storage:" only, as every command did before)."""
    path, db = _damaged_study(tmp_path)
    assert main(["results", str(path), "--out", str(tmp_path / "r.md")]) == 2
    assert capsys.readouterr().err.splitlines() == [f"harness: error: storage {db}: database disk image is malformed"]


@pytest.mark.parametrize("redirect", [">&-", pytest.param(">/dev/full", marks=pytest.mark.skipif(
    not Path("/dev/full").exists(), reason="no /dev/full here"))])  # fmt: skip
def test_a_run_whose_output_is_closed_or_full_goes_on(tmp_path, synthetic_root, redirect):
    """stdout closed from the start (`>&-`: sys.stdout is None) or unwritable (/dev/full): the
    run goes on to the end, exit 0 (an AttributeError or OSError traceback, exit 1)."""
    study = tmp_path / "p.toml"
    study.write_text(_replace(GOOD, "budget = 20000", "budget = 20000\nn_trials = 2"))
    command = shlex.join([sys.executable, "-m", "harness.cli", "run", str(study), "--data-dir", str(synthetic_root),
                          "--device", "cpu"])  # fmt: skip
    done = subprocess.run(f"{command} {redirect}", shell=True, capture_output=False, stderr=subprocess.PIPE, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    said = [line for line in done.stderr.splitlines() if line.startswith("harness: note: standard output")]
    assert said == ([] if redirect == ">&-" else
                    ["harness: note: standard output cannot be written (No space left on device); going on without it"])
    trials = optuna.load_study(study_name="bad-input", storage=f"sqlite:///{tmp_path / 'bad-input.db'}").get_trials()
    assert len(trials) == 2 and all(t.state.name == "COMPLETE" for t in trials), trials


def test_an_enqueued_value_just_outside_the_range_at_a_grid_end_is_that_end():
    """dropout = 0.30000000001 or -0.0000000001 on a [0, 0.3] grid in steps of 0.05: within
    rounding of its ends, stored as 0.3 and 0.0 (refused as out of range, while 0.25000000001
    was taken as 0.25); 0.3001 is still refused."""
    from search_spaces import _CheckingTrial

    assert _CheckingTrial({"x": 0.30000000001}).suggest_float("x", 0.0, 0.3, step=0.05) == 0.3
    assert _CheckingTrial({"x": -0.0000000001}).suggest_float("x", 0.0, 0.3, step=0.05) == 0.0
    with pytest.raises(ValueError, match=r"must be a number in \[0.0, 0.3\] in steps of 0.05"):
        _CheckingTrial({"x": 0.3001}).suggest_float("x", 0.0, 0.3, step=0.05)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
@pytest.mark.parametrize("command", ["status", "report", "run"])
def test_a_command_whose_output_is_full_does_its_work_and_says_so_in_one_line(trained_study, tmp_path, synthetic_root,
                                                                              command):  # fmt: skip
    """`harness status > /dev/full`: one line naming standard output and why, exit 1 (it was an
    OSError traceback from print). report writes its files all the same (what failed is the line
    saying so); `run --quiet`, whose few lines failed only in Python's flush at exit (a
    traceback), goes on with its note as run does, exit 0."""
    study, _ = trained_study
    folder = tmp_path / "study"
    shutil.copytree(study.parent, folder)
    argv = {"status": ["status", str(folder / study.name)],
            "report": ["report", str(folder / study.name), "--out", str(tmp_path / "r.html"), "--csv", str(tmp_path / "t.csv")],
            "run": ["run", str(folder / study.name), "--trials", "1", "--quiet", "--data-dir", str(synthetic_root),
                    "--device", "cpu"]}[command]  # fmt: skip
    done = subprocess.run(f"{shlex.join([sys.executable, '-m', 'harness.cli', *argv])} >/dev/full", shell=True,
                          stderr=subprocess.PIPE, text=True, timeout=300)  # fmt: skip
    if command == "run":
        assert done.returncode == 0 and done.stderr.splitlines() == [
            "harness: note: standard output cannot be written (No space left on device); going on without it"], done.stderr
        return
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == ["harness: error: standard output: cannot write: No space left on device"]
    assert command != "report" or ((tmp_path / "r.html").stat().st_size > 0 and (tmp_path / "t.csv").stat().st_size > 0)


def test_report_writes_into_a_named_pipe_and_through_a_link_without_replacing_them(trained_study, tmp_path, capsys):
    """--csv a named pipe (or a device: /dev/stdout) is written into, and stays a pipe: the
    report's rename put a plain file in its place (the reader waited for ever; run as root
    with --csv /dev/stdout it replaced the system's /dev/stdout). --out a link writes the file
    it points to and the link stays a link (it was replaced by a plain file)."""
    import stat
    import threading

    study, _ = trained_study
    assert main(["report", str(study), "--out", str(tmp_path / "plain.html"), "--csv", str(tmp_path / "plain.csv")]) == 0
    fifo, target, link = tmp_path / "pipe.csv", tmp_path / "real.html", tmp_path / "link.html"
    os.mkfifo(fifo)
    link.symlink_to(target.name)
    read = []
    reader = threading.Thread(target=lambda: read.append(fifo.read_bytes()), daemon=True)
    reader.start()
    assert main(["report", str(study), "--out", str(link), "--csv", str(fifo)]) == 0, capsys.readouterr().err
    reader.join(timeout=60)
    assert stat.S_ISFIFO(fifo.lstat().st_mode), "the named pipe was replaced"
    assert read == [(tmp_path / "plain.csv").read_bytes()]
    assert link.is_symlink() and os.readlink(link) == target.name
    plotly_ids = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")  # drawn anew each time
    assert plotly_ids.sub("", target.read_text()) == plotly_ids.sub("", (tmp_path / "plain.html").read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.html", "pipe.csv", "plain.csv", "plain.html", "real.html"]


@pytest.mark.parametrize("argv,words", [
    (["retrain", "{study}", "--trial", "３"], ["argument --trial: invalid int value: '３'"]),  # a full-width digit
    (["retrain", "{study}", "--top", "1_0"], ["argument --top: invalid int value: '1_0'"]),
    (["retrain", "{study}", "--epochs", str(10**20)], ["argument --epochs", "out of range"]),
    (["run", "{study}", "--trials", str(-(2**63))], ["argument --trials", "out of range"]),
    (["export", "{study}", "--trial", "٣"], ["argument --trial: invalid int value"]),  # an Arabic-Indic digit
])  # fmt: skip
def test_whole_number_options_take_ascii_digits_within_64_bits_only(trained_study, tmp_path, capsys, monkeypatch, argv,
                                                                    words):  # fmt: skip
    """Python's int() took other scripts' digits, underscores and numbers of any size: --epochs
    10**20 trained for ever, --trial ３ retrained trial 3. Now one line, exit 2, nothing written."""
    study, _ = trained_study
    monkeypatch.chdir(tmp_path)
    before = _snapshot(study.parent), _snapshot(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main([a.format(study=study) for a in argv])
    assert exited.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and all(w in lines[0] for w in words), lines
    assert (_snapshot(study.parent), _snapshot(tmp_path)) == before


@pytest.mark.parametrize("argv,line", [
    (["report", "{study}", "--out", ".", "--csv", "t.csv"], "--out . is a folder, not a file"),  # a traceback
    (["report", "{study}", "--csv", "/", "--out", "r.html"], "--csv / is a folder, not a file"),
    (["report", "{study}", "--out", "r.html/", "--csv", "t.csv"], "--out r.html/ names a folder (it ends in /), not a file"),
    (["results", "{study}", "--out", "r.md/"], "--out r.md/ names a folder (it ends in /), not a file"),
    (["report", "{study}", "--out", "r.html/.", "--csv", "t.csv"], "--out r.html/. names a folder (it ends in /.), not a file"),
    (["report", "{study}", "--csv", "nowhere/t.csv"], "--csv nowhere/t.csv: folder nowhere does not exist"),
])  # fmt: skip
def test_an_output_file_option_naming_a_folder_is_refused_in_one_line(trained_study, tmp_path, capsys, monkeypatch,
                                                                      argv, line):  # fmt: skip
    """`--out .` raised ValueError from the temporary file's name (a traceback); `--out r.html/`
    (a trailing slash: a folder) wrote a file r.html. One line, exit 2, nothing written."""
    study, _ = trained_study
    monkeypatch.chdir(tmp_path)
    before = _snapshot(study.parent), _snapshot(tmp_path)
    assert main([a.format(study=study) for a in argv]) == 2
    assert capsys.readouterr().err.splitlines() == [f"harness: error: {line}"]
    assert (_snapshot(study.parent), _snapshot(tmp_path)) == before


@pytest.mark.skipif(not Path("/dev/stdout").exists(), reason="no /dev/stdout here")
@pytest.mark.parametrize("name", ["/dev/stdout", "/dev/fd/1"])
def test_report_into_dev_stdout_appends_to_the_log_it_is_redirected_to(trained_study, tmp_path, name):
    """`harness report ... --csv /dev/stdout >> run.log`: the CSV goes where the shell sends
    stdout, after the log's earlier lines and before the "report:" line. /dev/stdout resolves to
    the log file itself, which the report replaced by rename (the earlier lines, and the line
    after, were lost)."""
    study, _ = trained_study
    log = tmp_path / "run.log"
    log.write_text("before\n")
    plain = tmp_path / "plain.csv"
    assert subprocess.run([sys.executable, "-m", "harness.cli", "report", str(study), "--out", str(tmp_path / "a.html"),
                           "--csv", str(plain)], capture_output=True, timeout=300).returncode == 0  # fmt: skip
    command = shlex.join([sys.executable, "-m", "harness.cli", "report", str(study), "--out", str(tmp_path / "r.html"),
                          "--csv", name])  # fmt: skip
    done = subprocess.run(f"{command} >> {shlex.quote(str(log))}", shell=True, stderr=subprocess.PIPE, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert log.read_text() == f"before\n{plain.read_text()}report: {tmp_path / 'r.html'} (1 trial); table: {name}\n"


@pytest.mark.parametrize("option", ["--trial", "--seed"])
def test_export_refuses_an_option_naming_one_thing_given_twice(tmp_path, capsys, option):
    """`export --trial 2 --trial 0` exported trial 0 alone (argparse keeps the last), with no
    word about trial 2, though `retrain --trial` repeats: a one-line error, exit 2."""
    study = tmp_path / "s.toml"
    study.write_text('[study]\nname = "s"\n')
    before = _snapshot(tmp_path)
    extra = ["--trial", "1"] if option == "--seed" else []
    with pytest.raises(SystemExit) as exited:  # argparse's exit, after the one line
        main(["export", str(study), *extra, option, "2", option, "0"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err == (f"harness: error: argument {option}: given twice (2, then 0): harness export takes one; "
                   "run it once for each (see harness export --help)\n"), err
    assert _snapshot(tmp_path) == before


def test_a_study_file_name_that_is_no_study_name_is_said_to_come_from_the_file_name(tmp_path, capsys):
    """No study.name: the file's name is the study's. One that is no valid name (`münchen.toml`)
    was refused as "study.name must be ..., got "münchen"", a key the user never wrote."""
    study = tmp_path / "münchen.toml"
    study.write_text("[study]\nbudget = 20000\n")
    before = _snapshot(tmp_path)
    assert main(["status", str(study)]) == 2
    err = capsys.readouterr().err
    assert err == (f'harness: error: {study}: the file name "münchen", the study\'s name when study.name is not set, '
                   "is no valid name: set study.name to 1-100 characters of letters, digits, '.', '_' or '-', "
                   "starting with a letter or digit\n"), err
    assert _snapshot(tmp_path) == before
    study.write_text('[study]\nname = "munich"\nbudget = 20000\n')  # a name given: the file's own is no matter
    assert main(["status", str(study)]) == 2
    assert "no study database yet" in capsys.readouterr().err


def test_a_computed_float_range_is_written_to_six_digits_in_its_message():
    """The learning rate's range is the study's lr / 3 to lr * 3: an enqueued lr outside it was
    told "must be a number in [0.016666666666666666, 0.15000000000000002]"; never rounded onto
    the value it refuses."""
    from search_spaces import _CheckingTrial

    with pytest.raises(ValueError, match=r"^parameter 'lr' = 100.0 must be a number in \[0.0166667, 0.15\]$"):
        _CheckingTrial({"lr": 100.0}).suggest_float("lr", 0.05 / 3, 0.05 * 3, log=True)
    # rounded to 6 digits the end would be the value itself: the digits it takes to stay past it
    with pytest.raises(ValueError, match=r"^parameter 'lr' = 0.0333333 must be a number in \[0.03333333, 0.3\]$"):
        _CheckingTrial({"lr": 0.0333333}).suggest_float("lr", 0.1 / 3, 0.3, log=True)
