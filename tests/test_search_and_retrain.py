"""Modern search space, recipe search, the Pareto study mode, retrain and the results table.

Real studies on tiny synthetic data (real SQLite storage, real training), through the CLI.
"""

from __future__ import annotations

import csv
import json
import re
import sqlite3
import statistics
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from harness.cli import main
from harness.spec import count_params
from harness.study import _trial_line, counted
from search_spaces import baseline_spec, get_search_space
from tests.conftest import make_synthetic_mnist

STUDY = """
[study]
name = "{name}"
search_space = "modern"
mode = "{mode}"
search_recipe = true
budget = 20000
n_trials = 5
seed = 5
[sampler]
name = "random"
[data]
dir = "data"
val_size = 100
[train]
epochs = 1
batch_size = 64
"""


def _cli(args: list[str]) -> int:
    try:
        return main(args)
    except SystemExit as exc:
        return int(exc.code)


def _write(folder: Path, name: str, mode: str) -> Path:
    if not (folder / "data").exists():
        make_synthetic_mnist(folder / "data", n_train=400, n_test=200)
    path = folder / f"{name}.toml"
    path.write_text(STUDY.format(name=name, mode=mode))
    return path


def _load(folder: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{folder / (name + '.db')}")


def test_modern_space_mostly_within_budget_and_reaches_small_nets():
    space = get_search_space("modern")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    counts = []
    for _ in range(400):
        trial = study.ask()
        counts.append(count_params(space.suggest(trial)))
        study.tell(trial, 0.0)
    assert sum(c <= 20_000 for c in counts) / len(counts) > 0.6  # most candidates are trainable
    assert sum(c <= 3_700 for c in counts) > 0  # the small-network target is inside the space
    assert space.baseline_spec() == baseline_spec() and count_params(baseline_spec()) == 19_290


@pytest.fixture(scope="module")
def pareto_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pareto")
    assert main(["run", str(_write(folder, "par", "pareto")), "--device", "cpu", "--quiet"]) == 0
    return folder


def test_pareto_study_records_two_objectives_and_the_baseline(pareto_dir):
    study = _load(pareto_dir, "par")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.metric_names == ["val_acc", "params"]
    trials = study.get_trials()
    (base,) = [t for t in trials if t.user_attrs.get("baseline")]
    assert base.state == TrialState.COMPLETE and base.params == {}  # seed net: not a point of this space
    assert base.values == [base.user_attrs["val_acc"], 19_290.0]
    assert "recipe" in base.user_attrs and base.user_attrs["recipe"]["lr"] == 0.05  # the study's recipe
    assert study.user_attrs["search_recipe"] is True  # as stored before field lists: old studies resume
    for t in trials:
        if t.state == TrialState.COMPLETE and not t.user_attrs["baseline"]:
            assert t.values[1] == t.user_attrs["trainable_params"] and {"lr", "batch_size", "rotation"} <= set(t.params)
            assert t.user_attrs["recipe"]["batch_size"] == t.params["batch_size"]
        assert not t.intermediate_values  # no per-epoch reports with two objectives
    assert study.best_trials  # Optuna computes the front


def test_retrain_pareto_front_resumes_and_exports(pareto_dir, capsys):
    study_file = str(pareto_dir / "par.toml")
    assert main(["retrain", study_file, "--seeds", "2", "--epochs", "1", "--device", "cpu"]) == 0
    study = _load(pareto_dir, "par")
    records = {k: v for k, v in study.user_attrs.items() if k.startswith("retrain:")}
    assert any(r["baseline"] for r in records.values())
    for r in records.values():
        assert r["seeds"] == 2 and len(r["test_acc"]) == 2 and r["train_images"] == 400  # val_size 0: all
        assert r["mean"] == pytest.approx(sum(r["test_acc"]) / 2)
        for run in r["runs"].values():  # learning curves: one point per epoch, the last is the claim
            assert len(run["train_loss"]) == len(run["test_curve"]) == r["epochs"]
            assert run["test_curve"][-1] == pytest.approx(run["test_acc"], abs=1e-6)
    n_artifacts = len(optuna.artifacts.get_all_artifact_meta(study))
    assert n_artifacts == 2 * len(records)
    capsys.readouterr()

    # Again with 3 seeds: the stored runs are kept, only seed 2 trains.
    assert main(["retrain", study_file, "--seeds", "3", "--epochs", "1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "seed 0:" not in out and out.count("seed 2:") == len(records)
    n = len(records)
    assert f"; {2 * n} of the {3 * n} runs are stored already and kept" in out.splitlines()[0], out
    study = _load(pareto_dir, "par")
    assert len(optuna.artifacts.get_all_artifact_meta(study)) == 3 * len(records)
    # Once more: nothing left to train, and the first line says so (it announced a retraining)
    assert main(["retrain", study_file, "--seeds", "3", "--epochs", "1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].endswith("; every run is stored already, none is trained"), out
    assert not re.search(r"seed \d+:", out), out  # no run trained: only the results
    assert main(["retrain", study_file, "--seeds", "2", "--epochs", "1", "--device", "cpu"]) == 0  # fewer than stored
    out = capsys.readouterr().out
    assert out.splitlines()[0].endswith("; every run is stored already, none is trained"), out
    assert len(optuna.artifacts.get_all_artifact_meta(_load(pareto_dir, "par"))) == 3 * len(records)

    number = next(r["trial"] for r in records.values())
    out_dir = pareto_dir / "exp"
    assert main(["export", study_file, "--trial", str(number), "--seed", "1", "--out", str(out_dir)]) == 0
    card = json.loads((out_dir / f"par-trial{number}-seed1.json").read_text())
    assert card["retrained"]["seed"] == 1 and card["test_images"] == 200
    assert card["test_acc"] == study.user_attrs[f"retrain:trial{number}"]["runs"]["1"]["test_acc"]
    assert all(v["passed"] for v in card["verification"].values())
    record = study.user_attrs[f"retrain:trial{number}"]
    assert card["train"] == record["recipe"] and card["train_recipe_from"] == "harness retrain"
    assert card["precision"] == record["precision"]


def test_model_card_records_the_trials_searched_recipe(pareto_dir):
    """A recipe-searching study: the card's recipe is the trial's, not the study's [train] table."""
    study = _load(pareto_dir, "par")
    trial = next(t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and "batch_size" in t.params)
    out = pareto_dir / "recipe-card"
    assert main(["export", str(pareto_dir / "par.toml"), "--trial", str(trial.number), "--out", str(out)]) == 0
    card = json.loads((out / f"par-trial{trial.number}.json").read_text())
    assert card["train"] == trial.user_attrs["recipe"] and card["train_recipe_from"].startswith("the trial")
    assert card["train"]["batch_size"] == trial.params["batch_size"]
    assert card["train"] != study.user_attrs["train"]


def test_results_table_and_report_show_retrained_accuracy(pareto_dir, tmp_path):
    study_file = str(pareto_dir / "par.toml")
    if not any(k.startswith("retrain:") for k in _load(pareto_dir, "par").user_attrs):
        assert main(["retrain", study_file, "--seeds", "2", "--epochs", "1", "--device", "cpu"]) == 0
    md = tmp_path / "results.md"
    assert main(["results", study_file, "--out", str(md), "--exports", str(tmp_path / "exports"),
                 "--note", "tiny synthetic run"]) == 0  # fmt: skip
    text = md.read_text()
    assert "**tiny synthetic run**" in text and "## Targets" in text and "3: seed baseline" in text
    assert "selected on the validation split (last 100 training images)" in text  # the study's val_size
    # the image counts the retrains recorded (synthetic data here), not MNIST's
    assert "retrained on all 400 training images" in text and "on the 200 test images" in text
    assert "| proposed by |" in text and "| baseline | `" in text  # who proposed each winner
    assert "pt2 ✓" in text and "onnx ✓" in text
    assert list((tmp_path / "exports" / "par").glob("*.pt2"))
    # The front: exactly the retrained architectures that no smaller-or-equal one beats on mean test accuracy.
    records = [r for k, r in _load(pareto_dir, "par").user_attrs.items() if k.startswith("retrain:")]
    expected = sorted(
        (r["params"], f"{r['mean']:.2%}") for r in records
        if not any(o is not r and o["params"] <= r["params"] and o["mean"] > r["mean"] for o in records)
        and not any(o is not r and o["params"] < r["params"] and o["mean"] == r["mean"] for o in records)
    )
    section = text.split("## Pareto front: parameters against mean test accuracy")[1].split("\n## ")[0]
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [(int(c[0][2:].replace(",", "")), c[1].split(" ± ")[0]) for c in rows] == expected
    curves = text.split("## Learning curves (mean over seeds)")[1].split("\n\n")[2].splitlines()[2:]
    assert len(curves) == len(records)  # one row per retrained architecture, 1 epoch each here
    for line, r in zip(curves, sorted(records, key=lambda r: r["params"])):
        assert line.startswith(f"| {r['params']:,} | {r['trial']} | {r['mean']:.2%} |"), line
    html_path = tmp_path / "r.html"
    assert main(["report", study_file, "--out", str(html_path), "--csv", str(tmp_path / "t.csv")]) == 0
    retrained = {str(r["trial"]): str(r["train_images"]) for r in records}  # 400: all of the synthetic set
    rows = list(csv.DictReader((tmp_path / "t.csv").open()))
    assert {r["number"]: r["retrain_train_images"] for r in rows if r["retrain_train_images"]} == retrained
    page = html_path.read_text()
    assert "retrained on all training images" in page and "retrained: mean test accuracy" in page and "retrained front (test)" in page


def test_single_mode_retrain_takes_top_k_plus_baseline(tmp_path, capsys):
    study_file = _write(tmp_path, "single", "single")
    assert main(["run", str(study_file), "--device", "cpu", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["retrain", str(study_file), "--top", "1", "--seeds", "1", "--epochs", "1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    records = [v for k, v in _load(tmp_path, "single").user_attrs.items() if k.startswith("retrain:")]
    best_is_baseline = any(r["baseline"] for r in records) and len(records) == 1
    assert len(records) == 2 or best_is_baseline, out
    before = (tmp_path / "single.db").read_bytes()
    assert _cli(["retrain", str(study_file), "--spread", "2", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "--spread needs a Pareto study" in err and err.count("\n") == 1
    assert (tmp_path / "single.db").read_bytes() == before


def test_recipe_field_list_samples_exactly_those_fields_and_retrain_trains_with_them(tmp_path, capsys):
    """`search_recipe = [...]`: every sampled trial draws exactly the named recipe fields (and its
    space's), records them in its recipe, keeps the study's [train] values for the others, and
    `harness retrain` trains with that recipe; an [[enqueue]] may give the named fields; the field
    list is stored with the study, and a file naming other fields is refused."""
    from search_spaces import get_search_space

    space = get_search_space("modern")
    picker = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
    while True:  # one architecture of the space within budget, to enqueue
        point = picker.ask()
        if count_params(space.suggest(point)) <= 20_000:
            break

    def lit(v):
        return ("true" if v else "false") if isinstance(v, bool) else (f'"{v}"' if isinstance(v, str) else repr(v))

    enqueue = "[[enqueue]]\n" + "".join(f"{k} = {lit(v)}\n" for k, v in point.params.items()) + "weight_decay = 0.0002\n"
    study_file = _write(tmp_path, "fields", "single")
    text = study_file.read_text().replace('search_recipe = true', 'search_recipe = ["weight_decay", "scale"]').replace(
        "batch_size = 64", "batch_size = 64\nweight_decay = 0.0003\nscale = 0.05\nlabel_smoothing = 0.02")  # fmt: skip
    study_file.write_text(text + enqueue)
    assert main(["run", str(study_file), "--device", "cpu", "--quiet"]) == 0
    study = _load(tmp_path, "fields")
    assert study.user_attrs["search_recipe"] == ["scale", "weight_decay"]
    trained = [t for t in study.trials if t.state == TrialState.COMPLETE and not t.user_attrs["baseline"]]
    (queued,) = [t for t in trained if t.user_attrs["origin"] == "enqueued"]
    assert queued.params == {**point.params, "weight_decay": 0.0002, "scale": 0.05}  # scale: from [train]
    assert (queued.user_attrs["recipe"]["scale"], queued.user_attrs["recipe"]["weight_decay"]) == (0.05, 0.0002)
    sampled = [t for t in trained if t is not queued]
    assert sampled
    for t in trained:
        trial = optuna.trial.FixedTrial(t.params)
        space.suggest(trial)  # the space's own parameters
        assert set(t.params) - {"scale", "weight_decay"} == set(trial.params)
        recipe = t.user_attrs["recipe"]
        assert (recipe["scale"], recipe["weight_decay"]) == (t.params["scale"], t.params["weight_decay"])
        assert (recipe["lr"], recipe["batch_size"], recipe["label_smoothing"]) == (0.05, 64, 0.02)  # the study's
    assert len({(t.params["scale"], t.params["weight_decay"]) for t in sampled}) > 1  # really searched
    capsys.readouterr()
    assert main(["retrain", str(study_file), "--top", "6", "--seeds", "1", "--epochs", "1", "--device", "cpu"]) == 0
    records = [v for k, v in _load(tmp_path, "fields").user_attrs.items() if k.startswith("retrain:")]
    assert {r["trial"] for r in records} & {t.number for t in sampled}
    for r in records:  # each trained with its trial's recipe: the sampled fields, the study's others
        assert r["recipe"] == study.trials[r["trial"]].user_attrs["recipe"]

    # The same fields in another order resume; other fields are another search: refused.
    db = tmp_path / "fields.db"
    before = db.read_bytes()
    study_file.write_text(text.replace('["weight_decay", "scale"]', '["scale", "weight_decay"]'))
    assert main(["status", str(study_file)]) == 0
    study_file.write_text(text.replace('["weight_decay", "scale"]', '["scale"]'))
    capsys.readouterr()
    assert _cli(["status", str(study_file)]) == 2
    err = capsys.readouterr().err
    assert "search_recipe" in err and "refusing" in err and err.count("\n") == 1
    assert db.read_bytes() == before


def test_search_recipe_true_and_its_five_fields_are_one_search(pareto_dir, capsys):
    """A study stored with `search_recipe = true` resumes from a file that lists the same five
    fields (the stored value is true either way), and not from one that lists fewer."""
    text = (pareto_dir / "par.toml").read_text()
    five = pareto_dir / "par-five.toml"
    five.write_text(text.replace("search_recipe = true",
                                 'search_recipe = ["translate", "rotation", "label_smoothing", "lr", "batch_size"]'))  # fmt: skip
    before = (pareto_dir / "par.db").read_bytes()
    assert main(["status", str(five)]) == 0
    five.write_text(text.replace("search_recipe = true", 'search_recipe = ["lr", "batch_size"]'))
    capsys.readouterr()
    assert _cli(["status", str(five)]) == 2
    assert "study.search_recipe = true (the study file says [\"batch_size\", \"lr\"])" in capsys.readouterr().err
    assert (pareto_dir / "par.db").read_bytes() == before
    five.unlink()


def test_spread_picks_points_evenly_over_log_params():
    from harness.retrain import spread_over_params

    sizes = [19000, 10000, 9000, 5000, 3000, 2000, 1600, 1500]  # a front, most accurate first
    trials = [optuna.trial.create_trial(value=0.99 - i / 1000, user_attrs={"trainable_params": n}) for i, n in enumerate(sizes)]
    picked = [t.user_attrs["trainable_params"] for t in spread_over_params(trials, 3)]
    assert picked == [19000, 5000, 1500]  # ends, and the one nearest sqrt(1500 * 19000) = 5,339
    picked = [t.user_attrs["trainable_params"] for t in spread_over_params(trials, 5)]
    assert picked == [19000, 10000, 5000, 3000, 1500]  # goals 1,500, 2,830 (3,000 is nearer than 2,000), 5,339, 10,071, 19,000
    assert spread_over_params(trials, 8) == trials and spread_over_params(trials, 20) == trials


def test_pareto_retrain_adds_the_baseline_even_off_the_front():
    from harness.retrain import select_for_retrain

    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("budget", 20000)
    study.set_user_attr("mode", "pareto")
    for acc, n, base in [(0.99, 9000, False), (0.98, 3000, False), (0.985, 19290, True)]:  # baseline dominated
        study.add_trial(optuna.trial.create_trial(values=[acc, n], user_attrs={"trainable_params": n, "baseline": base,
                                                                                "val_acc": acc, "spec": f"s{n}"}))  # fmt: skip
    picked = [t.user_attrs["trainable_params"] for t in select_for_retrain(study, None, spread=2)]
    assert picked == [9000, 3000, 19290]
    assert [t.user_attrs["trainable_params"] for t in select_for_retrain(study, None, include_baseline=False, spread=2)] == [9000, 3000]


def test_param_count_reads_studies_written_before_the_rename():
    from harness.study import feasible_trials, param_count

    old = optuna.trial.create_trial(value=0.99, user_attrs={"params": 3000})  # harness < 0.2 wrote "params"
    new = optuna.trial.create_trial(value=0.98, user_attrs={"trainable_params": 5000})
    assert [param_count(t.user_attrs) for t in (old, new)] == [3000, 5000]
    assert param_count({}, 0) == 0
    study = optuna.create_study(direction="maximize")
    study.set_user_attr("budget", 4000)
    study.add_trials([old, new])
    assert [param_count(t.user_attrs) for t in feasible_trials(study)] == [3000]


def test_retrain_and_export_bad_inputs(pareto_dir, tmp_path, capsys):
    study_file = str(pareto_dir / "par.toml")
    cases = [
        (["retrain", study_file, "--seeds", "0"], "--seeds must be >= 1"),
        (["retrain", study_file, "--top", "0"], "--top must be >= 1"),
        (["retrain", study_file, "--spread", "0"], "--spread must be >= 1"),
        (["retrain", study_file, "--device", "cuda:7"], "cuda:7"),  # no machine here has 8 GPUs
        (["retrain", study_file, "--top", "2", "--spread", "3"], "give one"),
        (["export", study_file, "--seed", "0", "--out", str(tmp_path / "x")], "--seed needs --trial"),
        (["export", study_file, "--trial", "0", "--seed", "99", "--out", str(tmp_path / "x")], "no retrained model"),
        (["results", study_file, "--out", str(tmp_path / "missing" / "r.md")], "does not exist"),
    ]
    for args, words in cases:
        assert _cli(args) == 2, args
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, (args, err)
    assert list(tmp_path.iterdir()) == []


def test_changing_the_mode_of_an_existing_study_is_refused(pareto_dir, capsys):
    other = pareto_dir / "par-single.toml"
    other.write_text(STUDY.format(name="par", mode="single"))
    assert _cli(["run", str(other), "--device", "cpu", "--quiet", "--storage", f"sqlite:///{pareto_dir / 'par.db'}"]) == 2
    assert "mode" in capsys.readouterr().err


def test_small_budget_study_rejects_the_baseline_and_joins_the_results(pareto_dir, tmp_path, capsys):
    """A 3,700-parameter study (studies/mnist-3700.toml's shape): the 19,290-parameter baseline
    is rejected before training, retrain skips it, and in a results table next to a 20k study
    target 1 still speaks of the 20,000 budget while target 2 names the best small network."""
    path = _write(tmp_path, "small", "single")
    path.write_text(path.read_text().replace("budget = 20000", "budget = 3700").replace("n_trials = 5", "n_trials = 40"))
    assert main(["run", str(path), "--device", "cpu", "--quiet"]) == 0
    trials = _load(tmp_path, "small").get_trials()
    (base,) = [t for t in trials if t.user_attrs.get("baseline")]
    assert base.state == TrialState.PRUNED and base.user_attrs["rejected"] == "over_budget"
    trained = [t for t in trials if t.state == TrialState.COMPLETE]
    assert trained and all(t.user_attrs["trainable_params"] <= 3700 for t in trained)
    assert main(["retrain", str(path), "--top", "1", "--seeds", "1", "--epochs", "1", "--device", "cpu"]) == 0
    records = [v for k, v in _load(tmp_path, "small").user_attrs.items() if k.startswith("retrain:")]
    assert len(records) == 1 and not records[0]["baseline"] and records[0]["params"] <= 3700
    if not any(k.startswith("retrain:") for k in _load(pareto_dir, "par").user_attrs):
        assert main(["retrain", str(pareto_dir / "par.toml"), "--seeds", "1", "--epochs", "1", "--device", "cpu"]) == 0
    md = tmp_path / "results.md"
    assert main(["results", str(pareto_dir / "par.toml"), str(path), "--out", str(md),
                 "--exports", str(tmp_path / "exports")]) == 0  # fmt: skip
    text = md.read_text()
    assert "1. Under 20,000 parameters" in text
    # synthetic data: the small study's network is the validation's pick at <= 3,700, and misses
    assert "2. At <= 3,700 parameters, mean test accuracy >= 99.40%: **NOT reached** (validation's pick: " in text


def _retrained_one_seed(folder: Path, name: str) -> tuple[Path, optuna.Study, str]:
    """(study file, study, retrain record key) of a tiny study run and its best trial retrained
    with one seed for one epoch: a stored record whose values a test may then set."""
    path = _write(folder, name, "single")
    assert main(["run", str(path), "--device", "cpu", "--quiet"]) == 0
    assert main(["retrain", str(path), "--top", "1", "--seeds", "1", "--epochs", "1", "--no-baseline",
                 "--device", "cpu", "--data-dir", str(folder / "data")]) == 0  # fmt: skip
    study = _load(folder, name)
    (key,) = [k for k in study.user_attrs if k.startswith("retrain:")]
    return path, study, key


def test_concurrent_retrains_that_differ_only_in_speed_options_keep_each_others_runs(tmp_path, monkeypatch, capsys):
    """Two retrains of one trial start with nothing stored; the other one (its study file sets
    another eval_batch_size: speed only) stores seed 1 while this one trains seed 0. This one's
    read-merge-write under the lock keeps that run: the same protocol, not a rival to replace."""
    import contextlib

    import harness.storage

    path, study, key = _retrained_one_seed(tmp_path, "race")
    other = dict(study.user_attrs[key])
    other["recipe"] = dict(other["recipe"], eval_batch_size=other["recipe"]["eval_batch_size"] + 512)
    other["runs"] = {"1": dict(other["runs"]["0"], test_acc=0.5)}  # the other process's seed 1
    study.set_user_attr(key, None)  # as before either retrain stored anything
    real_lock = harness.storage.study_lock

    @contextlib.contextmanager
    def lock_after_the_other_stored(url, name):
        with real_lock(url, name):
            if study.user_attrs.get(key) is None:
                study.set_user_attr(key, other)  # it got the lock first
            yield

    monkeypatch.setattr(harness.storage, "study_lock", lock_after_the_other_stored)
    assert main(["retrain", str(path), "--top", "1", "--seeds", "1", "--epochs", "1", "--no-baseline",
                 "--device", "cpu", "--data-dir", str(tmp_path / "data")]) == 0  # fmt: skip
    record = _load(tmp_path, "race").user_attrs[key]
    assert sorted(record["runs"]) == ["0", "1"] and record["runs"]["1"]["test_acc"] == 0.5
    assert record["seeds"] == 2 and record["mean"] == statistics.mean(r["test_acc"] for r in record["runs"].values())
    # another protocol (other epochs) stored meanwhile: refused in one line, its runs untouched
    rival = dict(other, epochs=2, recipe=dict(other["recipe"], epochs=2))
    study.set_user_attr(key, None)
    other = rival
    artifact_files = sorted(p for p in tmp_path.rglob("*") if p.is_file() and "artifacts" in str(p))
    artifact_ids = {m.artifact_id for m in optuna.artifacts.get_all_artifact_meta(_load(tmp_path, "race"))}
    assert artifact_files and artifact_ids
    assert _cli(["retrain", str(path), "--top", "1", "--seeds", "1", "--epochs", "1", "--no-baseline",
                 "--device", "cpu", "--data-dir", str(tmp_path / "data")]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another retrain stored runs of another protocol" in err[0], err
    assert _load(tmp_path, "race").user_attrs[key] == rival
    # the refused run's weights were never uploaded: no new file, no artifact the dashboard would list
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file() and "artifacts" in str(p)) == artifact_files
    assert {m.artifact_id for m in optuna.artifacts.get_all_artifact_meta(_load(tmp_path, "race"))} == artifact_ids
    # the same epochs but another learning rate: another protocol too (not only the epochs count)
    rival = dict(rival, epochs=1, recipe=dict(rival["recipe"], epochs=1, lr=rival["recipe"]["lr"] * 2))
    study.set_user_attr(key, None)
    other = rival
    assert _cli(["retrain", str(path), "--top", "1", "--seeds", "1", "--epochs", "1", "--no-baseline",
                 "--device", "cpu", "--data-dir", str(tmp_path / "data")]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another retrain stored runs of another protocol" in err[0], err
    assert _load(tmp_path, "race").user_attrs[key] == rival


def test_results_take_a_study_given_twice_once_and_refuse_two_studies_of_one_name(tmp_path, capsys):
    """The same study file twice: its rows once. Another study of the same name (another folder,
    another database): refused in one line, nothing written (their exports/<name>/ would mix)."""
    import shutil

    path, _, _ = _retrained_one_seed(tmp_path, "twice")
    md = tmp_path / "r.md"
    args = ["--out", str(md), "--exports", str(tmp_path / "exp"), "--data-dir", str(tmp_path / "data")]
    assert main(["results", str(path), str(path), *args]) == 0
    rows = [ln for ln in md.read_text().split("## Every retrained architecture")[1].split("\n## ")[0].splitlines()
            if ln.startswith("|  | twice |")]  # fmt: skip
    assert len(rows) == 1, rows
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(path, other / path.name)
    shutil.copytree(tmp_path / "data", other / "data")
    assert main(["run", str(other / path.name), "--device", "cpu", "--quiet"]) == 0
    before = md.read_bytes(), sorted(p.name for p in (tmp_path / "exp").rglob("*"))
    capsys.readouterr()
    assert main(["results", str(path), str(other / path.name), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "study 'twice' is also the name of another study given" in err[0], err
    assert (md.read_bytes(), sorted(p.name for p in (tmp_path / "exp").rglob("*"))) == before


def test_results_of_a_study_not_retrained_yet_claim_no_verdict(tmp_path, capsys):
    """Nothing retrained: both targets are "not retrained yet", not "NOT reached" (no retrained
    network has missed anything); once retrained, a verdict."""
    path = _write(tmp_path, "fresh", "single")
    assert main(["run", str(path), "--device", "cpu", "--quiet"]) == 0
    md = tmp_path / "r.md"
    args = ["--out", str(md), "--exports", str(tmp_path / "exp"), "--data-dir", str(tmp_path / "data")]
    assert main(["results", str(path), *args]) == 0
    assert "nothing in these studies is retrained yet" in capsys.readouterr().err
    text = md.read_text()
    targets = [ln for ln in text.splitlines() if ln.startswith(("1. ", "2. "))]
    assert len(targets) == 2 and all(ln.endswith("**not retrained yet**") for ln in targets), targets
    assert "Nothing is retrained yet" in text and "0 of the 0" not in text and "|---|" not in text  # no empty tables
    assert main(["retrain", str(path), "--top", "1", "--seeds", "1", "--epochs", "1", "--no-baseline",
                 "--device", "cpu", "--data-dir", str(tmp_path / "data")]) == 0  # fmt: skip
    assert main(["results", str(path), *args]) == 0
    text = md.read_text()
    targets = [ln for ln in text.splitlines() if ln.startswith(("1. ", "2. "))]
    assert len(targets) == 2 and not any("not retrained yet" in ln for ln in targets), targets
    rows = [ln for ln in text.splitlines() if ln.startswith("| 1: validation's pick")]
    assert len(rows) == 1 and "% ± – | 1 |" in rows[0], rows  # one seed: no spread shown, not "± 0.00%"


def test_results_never_round_a_missed_target_up_to_it(tmp_path):
    """A mean just under a target is written with the digits that show it is under: 99.597 %
    "NOT reached", never "NOT reached (validation's pick: 99.60 %)" against a 99.60 % target;
    in the tables too (a row reading 99.60 % beside a verdict of "NOT reached")."""
    from harness.results import _pct_against

    path, study, key = _retrained_one_seed(tmp_path, "near")
    md = tmp_path / "results.md"
    for mean, words, rounded in [(0.995967, "**NOT reached** (validation's pick: 99.597% with", "99.60%"),
                                 (0.99399, "**NOT reached** (validation's pick: 99.399% with", "99.40%"),
                                 (0.9962, "**reached** (validation's pick: 99.62% with", None)]:
        # a stored mean near a target, and the run's final epoch with it (the learning-curve table)
        record = study.user_attrs[key]
        runs = {s: dict(run, test_curve=[*run["test_curve"][:-1], mean]) for s, run in record["runs"].items()}
        study.set_user_attr(key, dict(record, mean=mean, runs=runs))
        assert main(["results", str(path), "--out", str(md), "--exports", str(tmp_path / "exports"),
                     "--data-dir", str(tmp_path / "data")]) == 0  # fmt: skip
        text = md.read_text()
        assert words in text, (mean, [ln for ln in text.splitlines() if ln.startswith("1.")])
        written = words.split(": ")[1].split(" with")[0]
        rows = [ln for ln in text.splitlines() if ln.startswith("| ") and "`" in ln]
        assert rows and all(f"| {written} ± " in ln for ln in rows), rows
        curves = text[text.index("## Learning curves"):].splitlines()
        assert any(ln.startswith("| ") and f"| {written} (" in ln for ln in curves), curves
        if rounded:  # nowhere in the file rounded across its target (the target lines themselves aside)
            assert rounded not in text.replace(">= 99.40%", ""), [ln for ln in text.splitlines() if rounded in ln]
    assert _pct_against(0.99399, 0.994) == "99.399%" and _pct_against(0.994, 0.994) == "99.40%"
    assert _pct_against(0.9939999, 0.994) == "99.39999%" and _pct_against(0.99, 0.994) == "99.00%"


def test_target_1_is_under_20000_parameters_though_a_budget_of_20000_admits_20000(tmp_path):
    """A budget is inclusive (a network of exactly 20,000 parameters is within a 20,000 budget)
    but target 1 is "under 20,000": such a network is no claim for it, however accurate, and the
    line says why; at 19,999 it is."""
    path, study, key = _retrained_one_seed(tmp_path, "edge")
    study.set_user_attr("budget", 20_000)
    md = tmp_path / "results.md"
    args = ["results", str(path), "--out", str(md), "--exports", str(tmp_path / "exports"), "--data-dir", str(tmp_path / "data")]
    for params, verdict in ((20_000, "**NOT reached: no retrained architecture has fewer than 20,000 parameters "
                                     "(smallest: 20,000)**"),
                            (19_999, "**reached** (validation's pick: 99.70% with 19,999 parameters")):
        study.set_user_attr(key, dict(study.user_attrs[key], test_acc=[0.997], mean=0.997, params=params))
        assert main(args) == 0
        (one,) = [ln for ln in md.read_text().splitlines() if ln.startswith("1.")]
        assert one.startswith("1. Under 20,000 parameters, mean test accuracy >= 99.6%: ") and verdict in one, one


def test_results_say_when_a_target_s_candidates_were_scored_under_different_protocols(tmp_path):
    """Two studies' winners ranked against each other on validation: the target lines say when
    their search protocols differ (epochs, training or validation images), since a longer
    protocol's score ranks higher for the protocol itself; not when they are the same."""
    a, study_a, _ = _retrained_one_seed(tmp_path, "pa")
    b, study_b, key_b = _retrained_one_seed(tmp_path, "pb")
    md = tmp_path / "results.md"
    args = ["results", str(a), str(b), "--out", str(md), "--exports", str(tmp_path / "exports"),
            "--data-dir", str(tmp_path / "data")]  # fmt: skip

    def target_lines() -> list[str]:
        assert main(args) == 0
        return [ln for ln in md.read_text().splitlines() if ln.startswith(("1.", "2."))]

    assert not any("protocol" in ln for ln in target_lines())
    trial = study_b.get_trials(deepcopy=False)[study_b.user_attrs[key_b]["trial"]]
    ua = dict(trial.user_attrs)
    epochs, train, val = ua["epochs_run"], ua["train_images"], ua["held_out_train_images"]

    def set_attr(key: str, value) -> None:  # a finished trial's record, as another protocol (or harness) left it
        with sqlite3.connect(tmp_path / "pb.db") as db:
            db.execute("UPDATE trial_user_attributes SET value_json = ? WHERE trial_id = ? AND key = ?",
                       (json.dumps(value), trial._trial_id, key))  # fmt: skip

    # a trial recorded before held_out_train_images was: the study's split stands in, the same protocol
    set_attr("held_out_train_images", None)
    assert not any("protocol" in ln for ln in target_lines())
    for key, value, theirs in (("epochs_run", epochs + 5, f"{counted(epochs + 5, 'epoch')} on {train:,} images, scored on {val:,}"),
                               ("train_images", train - 7, f"{counted(epochs, 'epoch')} on {train - 7:,} images, scored on {val:,}"),
                               ("held_out_train_images", val + 9, f"{counted(epochs, 'epoch')} on {train:,} images, scored on {val + 9:,}")):
        for k, v in (("epochs_run", epochs), ("train_images", train), ("held_out_train_images", val), (key, value)):
            set_attr(k, v)
        one = target_lines()[0]
        mine = f"{counted(epochs, 'epoch')} on {train:,} images, scored on {val:,}"
        assert f"; ranked across 2 search protocols ({'; '.join(sorted([mine, theirs]))}): validation scores of " \
               "different protocols compare the protocols too" in one, (key, one)


def test_a_search_protocol_is_read_from_the_study_where_an_older_trial_lacks_it():
    """A trial recorded before train_images and held_out_train_images were: its protocol is the
    study's split (val_size, train_limit or the rest of MNIST's 60,000), not "?" (which named
    two protocols where there was one); study.repeats says the score is a mean."""
    from harness.results import _Entry, _protocol

    study = optuna.create_study(direction="maximize")
    study.set_user_attr("data", {"val_size": 10_000, "train_limit": 0, "test_limit": 0})
    study.add_trial(optuna.trial.create_trial(value=0.99, user_attrs={"val_acc": 0.99, "epochs_run": 20}))
    study.add_trial(optuna.trial.create_trial(value=0.99, user_attrs={
        "val_acc": 0.99, "epochs_run": 20, "train_images": 50_000, "held_out_train_images": 10_000,
        "repeat_seeds": [1, 2, 3]}))  # fmt: skip
    old, repeated = (_protocol(_Entry(None, "", study, {"trial": n})) for n in (0, 1))
    assert old == "20 epochs on 50,000 images, scored on 10,000"
    assert repeated == "20 epochs on 50,000 images, scored on 10,000, mean of 3 seeds"


def test_results_say_how_many_standard_errors_each_verdict_stands_from_its_target(tmp_path):
    """Each target line gives the winner's distance from the target in pp and in standard errors
    of its mean over seeds (sample stdev / sqrt(seeds)), so a verdict that other seeds could turn
    shows as one; one seed has no spread, and no such clause; nor has a target-2 verdict decided
    by size."""
    from harness.results import _Entry, _margin

    path, study, key = _retrained_one_seed(tmp_path, "se")
    md = tmp_path / "results.md"
    args = ["results", str(path), "--out", str(md), "--exports", str(tmp_path / "exports"), "--data-dir", str(tmp_path / "data")]

    def target_lines(accs: list[float] | None = None, params: int = 3454) -> list[str]:
        if accs:  # the stored record's std stays the one seed's 0.0: the clause must use the accuracies
            study.set_user_attr(key, dict(study.user_attrs[key], test_acc=accs, mean=sum(accs) / len(accs),
                                          seeds=len(accs), params=params))  # fmt: skip
        assert main(args) == 0
        return [ln for ln in md.read_text().splitlines() if ln.startswith(("1.", "2."))]

    assert not any("standard error" in ln or "pp from" in ln for ln in target_lines())  # one seed
    # stage 20's seeds: mean 99.4367 %, stdev 0.0929 pp, standard error 0.0536 pp
    stage20 = [0.9948, 0.9950, 0.9933]
    one, two = target_lines(stage20)
    assert one.endswith("(validation's pick: 99.44% with 3,454 parameters; -0.163 pp from 99.60%: 3.0 standard "
                        "errors of the mean (standard error 0.054 pp, 3 seeds))"), one  # fmt: skip
    assert two.endswith("**reached** (validation's pick: 99.44% with 3,454 parameters; +0.037 pp from 99.40%: "
                        "0.7 standard errors of the mean (standard error 0.054 pp, 3 seeds))"), two  # fmt: skip
    _, two = target_lines([0.9940, 0.9935, 0.9936])  # missed: the clause says by how much
    assert two.endswith("**NOT reached** (validation's pick: 99.37% with 3,454 parameters; -0.030 pp from 99.40%: "
                        "2.0 standard errors of the mean (standard error 0.015 pp, 3 seeds))"), two  # fmt: skip
    _, two = target_lines(stage20, params=5000)  # "NOT reached" for its size: no accuracy margin
    assert two.endswith("**NOT reached: no retrained architecture has <= 3,700 parameters (smallest: 5,000)**"), two

    def margin(accs: list[float], target: float) -> str:
        return _margin(_Entry(None, "", None, {"test_acc": accs, "mean": sum(accs) / len(accs), "params": 1}), target)

    assert margin([0.99597, 0.99597], 0.996) == "; -0.003 pp from 99.60% (no spread over 2 seeds)"
    assert margin([0.994, 0.994], 0.994) == "; +0.000 pp from 99.40% (no spread over 2 seeds)"
    assert margin([0.9940, 0.9940, 0.9941], 0.994) == \
        "; +0.003 pp from 99.40%: 1.0 standard errors of the mean (standard error 0.003 pp, 3 seeds)"
    assert margin([0.994, 0.994002], 0.994) == \
        "; +0.0001 pp from 99.40%: 1.0 standard errors of the mean (standard error 0.0001 pp, 2 seeds)"


def test_results_claim_the_validation_pick_not_the_highest_test_mean(tmp_path):
    """Two retrained networks, the one the search ranked lower on validation with the higher test
    mean: each target's verdict, its table row and its export are the validation's pick's, and the
    higher test mean is named as chosen on test, not claimed. Picking by test would say "reached"."""
    from harness.study import rank_key

    path = _write(tmp_path, "pick", "single")
    assert main(["run", str(path), "--device", "cpu", "--quiet"]) == 0
    assert main(["retrain", str(path), "--top", "2", "--seeds", "1", "--epochs", "1", "--no-baseline",
                 "--device", "cpu"]) == 0  # fmt: skip
    study = _load(tmp_path, "pick")
    keys = sorted(k for k in study.user_attrs if k.startswith("retrain:"))
    assert len(keys) == 2
    trials = {t.number: t for t in study.get_trials()}
    # the search's order of the two, computed here from the trials, not by the code under test
    first, second = sorted(keys, key=lambda k: rank_key(trials[study.user_attrs[k]["trial"]]))
    for key, mean in [(first, 0.9950), (second, 0.9965)]:  # under both targets for the pick, over for the other
        study.set_user_attr(key, dict(study.user_attrs[key], mean=mean, params=3000, test_acc=[mean]))
    md = tmp_path / "results.md"
    assert main(["results", str(path), "--out", str(md), "--exports", str(tmp_path / "exports")]) == 0
    text = md.read_text()
    lines = {ln[:2]: ln for ln in text.splitlines() if ln.startswith(("1.", "2."))}
    pick, other = study.user_attrs[first]["trial"], study.user_attrs[second]["trial"]
    assert "**NOT reached** (validation's pick: 99.50% with 3,000 parameters)" in lines["1."], lines
    assert "**reached** (validation's pick: 99.50% with 3,000 parameters)" in lines["2."], lines
    for ln in lines.values():
        assert ln.endswith(f"; the highest test mean of these 2 retrained, 99.65% (3,000 parameters, trial {other}), "
                           "is chosen on test and is not the claim"), ln  # fmt: skip
    rows = [ln.split(" | ") for ln in text.splitlines() if ln.startswith("| 1: ") or ln.startswith("| 2: ")]
    assert [r[2] for r in rows] == [str(pick), str(pick)]
    assert rows[0][6] == f"{trials[pick].user_attrs['val_acc']:.2%}" and rows[0][7].startswith("99.50%")
    assert [p.name for p in (tmp_path / "exports" / "pick").glob("*.pt2")] == [f"pick-trial{pick}-seed0.pt2"]


def test_results_curves_name_the_study_of_each_trial_when_studies_share_trial_numbers():
    """Two studies' trial 1 in one results file: the learning-curve table and its clean-epochs
    note say which study each row is from; one study keeps the bare trial number."""
    from types import SimpleNamespace

    from harness.results import _curve_lines, _Entry

    def entry(study: str, params: int) -> _Entry:
        run = {"test_curve": [0.9, 0.99], "train_loss": [0.5, 0.3]}
        return _Entry(SimpleNamespace(name=study), "", None, {"trial": 1, "params": params, "epochs": 2,
                      "recipe": {"clean_epochs": 1}, "runs": {"0": run, "1": run}})  # fmt: skip

    text = "\n".join(_curve_lines([entry("small", 3454), entry("large", 17786)]))
    assert "; trial 1 (small): its last epoch on the images as they are (clean_epochs); trial 1 (large): " in text
    assert "| 3,454 | 1 (small) | 90.00% | 99.00% |" in text and "| 17,786 | 1 (large) | 90.00% |" in text, text
    text = "\n".join(_curve_lines([entry("small", 3454)]))
    assert "; trial 1: its last epoch on the images" in text and "| 3,454 | 1 | 90.00% |" in text, text


def test_an_interrupt_while_a_run_is_stored_waits_until_its_record_is_written(tmp_path, monkeypatch, capsys):
    """Ctrl-C arriving as a run's weights are uploaded: the weights and the record naming them
    are written together, then the retrain stops (exit 130); never an artifact no record
    points to (Optuna records an artifact's entry before it writes the file)."""
    import os
    import signal

    import harness.artifacts

    study_file = _write(tmp_path, "int", "single")
    assert main(["run", str(study_file), "--device", "cpu", "--quiet"]) == 0
    real_upload = harness.artifacts.upload_state_dict

    def upload_then_ctrl_c(*args, **kwargs):
        artifact = real_upload(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)  # as if Ctrl-C came right after the upload
        return artifact

    monkeypatch.setattr(harness.artifacts, "upload_state_dict", upload_then_ctrl_c)
    assert main(["retrain", str(study_file), "--top", "1", "--seeds", "2", "--epochs", "1", "--no-baseline",
                 "--device", "cpu", "--data-dir", str(tmp_path / "data")]) == 130  # fmt: skip
    study = _load(tmp_path, "int")
    (key,) = [k for k in study.user_attrs if k.startswith("retrain:")]
    runs = study.user_attrs[key]["runs"]
    assert list(runs) == ["0"] and runs["0"]["weights"], runs  # seed 0 recorded with its weights; seed 1 never began
    assert "interrupted: the finished runs are kept; the same command goes on from them" in capsys.readouterr().err


def test_retrain_with_other_epochs_refuses_to_replace_stored_runs(tmp_path, capsys):
    study_file = _write(tmp_path, "ep", "single")
    assert main(["run", str(study_file), "--device", "cpu", "--quiet"]) == 0
    args = ["retrain", str(study_file), "--top", "1", "--seeds", "1", "--no-baseline", "--device", "cpu",
            "--data-dir", str(tmp_path / "data")]  # fmt: skip
    assert main([*args, "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "± – over 1 seed," in out and "± 0.0000" not in out  # one run has no spread to show
    db = tmp_path / "ep.db"
    before = db.read_bytes()
    capsys.readouterr()
    assert main([*args, "--epochs", "2"]) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert err.count("\n") == 1 and "would replace those runs" in err and "(1 epoch on " in err and "1 seed)" in err, err
    assert captured.out == ""  # refused before "retraining ..." is said
    assert db.read_bytes() == before
    assert main([*args, "--epochs", "1", "--seeds", "2"]) == 0  # the same protocol: adds seed 1 only
    # export --seed takes the retrain's seed number; its torch seed is named for what it is
    from harness.retrain import stored_retrains

    ((number, record),) = stored_retrains(_load(tmp_path, "ep")).items()
    torch_seed = record["runs"]["0"]["seed"]
    assert torch_seed != 0
    capsys.readouterr()
    assert main(["export", str(study_file), "--trial", str(number), "--seed", str(torch_seed),
                 "--out", str(tmp_path / "exp")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and (f"(retrained seeds: 0, 1); {torch_seed} is the torch seed of retrain seed 0: "
                                     "--seed takes that number") in err, err  # fmt: skip
    assert not (tmp_path / "exp").exists()


def test_two_retrains_at_once_lose_no_run(tmp_path, capsys):
    """A second retrain stores runs while the first is mid-way (injected between the first's
    runs, deterministically): the first's later write merges, so every seed survives."""
    from harness.artifacts import open_artifact_store
    from harness.config import load_study_config
    from harness.data import load_splits
    from harness.retrain import retrain_trials, select_for_retrain
    from harness.storage import study_lock

    study_file = _write(tmp_path, "cc", "single")
    assert main(["run", str(study_file), "--device", "cpu", "--quiet"]) == 0
    cfg = load_study_config(study_file)
    url = cfg.default_storage()
    study = _load(tmp_path, "cc")
    (trial,) = select_for_retrain(study, 1, include_baseline=False)
    data = load_splits(tmp_path / "data", val_size=0)
    store = open_artifact_store(cfg.artifact_root(url))
    common = dict(data=data, store=store, device_label="cpu", epochs=1, lock=lambda: study_lock(url, cfg.name))
    injected = []

    def other_process_meanwhile(line: str) -> None:
        if not injected:  # after the first retrain's seed 0: another retrain does seeds 0-2
            injected.append(line)
            retrain_trials(_load(tmp_path, "cc"), [trial], cfg, seeds=3, say=lambda _: None, **common)

    retrain_trials(study, [trial], cfg, seeds=2, say=other_process_meanwhile, **common)
    record = _load(tmp_path, "cc").user_attrs[f"retrain:trial{trial.number}"]
    assert sorted(record["runs"]) == ["0", "1", "2"] and record["seeds"] == 3
    assert record["test_acc"] == [record["runs"][s]["test_acc"] for s in ("0", "1", "2")]


def test_results_names_its_command_shell_quoted_with_the_note_elided():
    import shlex

    from harness.cli import _results_command

    cmd = _results_command(["results", "my studies/a.toml", "--out", "r.md", "--note", "run on 'x'; long"])
    assert shlex.split(cmd) == ["harness", "results", "my studies/a.toml", "--out", "r.md", "--note", "…"]
    assert shlex.split(_results_command(["results", "a.toml", "--note=long text"]))[-1] == "--note=…"
    assert _results_command(["results", "a.toml", "--note", ""]).endswith("--note ''")  # nothing elided
    assert _results_command(["results", "a.toml", "--note="]).endswith("--note=")
    assert _results_command(["run", "a.toml"]) == ""  # only `harness results` names itself
    secret = _results_command(["results", "a.toml", "--storage", "postgresql://u:s3cret@h/db", "--out", "r.md",
                               "--storage=postgresql://u:s3cret@h/db"])  # fmt: skip
    assert "s3cret" not in secret and shlex.split(secret)[4] == "postgresql://u:***@h/db", secret


def test_results_read_the_studies_from_storage_given(tmp_path, capsys):
    """A study run with --storage URL (not its study file's) goes into the results table with
    the same --storage, as into every other reading command."""
    path = _write(tmp_path, "elsewhere", "single")
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    data = ["--data-dir", str(tmp_path / "data")]
    assert main(["run", str(path), "--device", "cpu", "--quiet", "--storage", url]) == 0
    assert main(["retrain", str(path), "--top", "1", "--seeds", "1", "--epochs", "1", "--no-baseline", "--device", "cpu",
                 "--storage", url, *data]) == 0  # fmt: skip
    md = tmp_path / "r.md"
    assert main(["results", str(path), "--out", str(md), "--exports", str(tmp_path / "exp"), *data]) == 2  # its own file: none
    assert "no study database yet" in capsys.readouterr().err and not md.exists()
    assert main(["results", str(path), "--out", str(md), "--exports", str(tmp_path / "exp"), "--storage", url, *data]) == 0
    assert "| 1: validation's pick under 20,000 | elsewhere |" in md.read_text()


def test_results_protocol_names_each_studys_validation_split():
    from types import SimpleNamespace as NS

    from harness.results import _split_text

    def cfg(name, n):
        return NS(name=name, data=NS(val_size=n))

    assert _split_text([(cfg("a", 5000), "", None), (cfg("b", 5000), "", None)]) == "last 5,000 training images"
    assert _split_text([(cfg("a", 5000), "", None), (cfg("b", 10000), "", None), (cfg("c", 5000), "", None)]) == (
        "last 5,000 training images: a, c; last 10,000 training images: b"
    )


def test_a_retrain_seed_that_diverges_stops_in_one_line_and_keeps_finished_runs(pareto_dir, tmp_path, monkeypatch,
                                                                                   capsys):  # fmt: skip
    """A seed whose loss blows up in the retrain (the search's seed did not): one line, exit 2, the
    run finished before it stored, nothing stored for the diverged one."""
    import shutil

    import harness.train
    from harness.retrain import RETRAIN_SEED_BASE
    from harness.train import DivergedError

    folder = tmp_path / "copy"
    shutil.copytree(pareto_dir, folder)
    real_fit, calls = harness.train.fit, []

    def fit_diverging_second(*args, **kwargs):
        calls.append(kwargs["seed"])
        if len(calls) == 2:
            raise DivergedError("training loss became nan in epoch 1")
        return real_fit(*args, **kwargs)

    def stored_runs() -> dict[int, int]:
        return {r["trial"]: len(r["runs"]) for k, r in _load(folder, "par").user_attrs.items() if k.startswith("retrain:")}

    before = stored_runs()
    monkeypatch.setattr(harness.train, "fit", fit_diverging_second)
    capsys.readouterr()
    seeds = max(before.values(), default=0) + 2  # every trial has at least two seeds left to train
    assert _cli(["retrain", str(folder / "par.toml"), "--seeds", str(seeds), "--epochs", "1", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    seed = calls[1] - RETRAIN_SEED_BASE  # >= 1: the first call trained the seed before it
    assert len(err) == 1 and f"seed {seed}: training loss became nan" in err[0], err
    assert "finished runs are kept" in err[0] and f"--seeds {seed} keeps the seeds before it" in err[0]
    after = stored_runs()
    assert sum(after.values()) == sum(before.values()) + 1  # the first run is stored, the diverged one is not


def test_retrain_never_repeats_a_trials_own_search_seed(tmp_path):
    """Study seed 10,000: the baseline (trial 0) searched with seed 10,000, retrain seed 0's torch
    seed. Each retrained run records its seed, which is never one its trial trained with in the
    search; every other run keeps 10,000 + s."""
    from harness.retrain import RETRAIN_SEED_BASE, retrain_seed

    path = _write(tmp_path, "seeds", "single")
    path.write_text(path.read_text().replace("seed = 5", "seed = 10000"))
    assert main(["run", str(path), "--device", "cpu", "--quiet"]) == 0
    assert main(["retrain", str(path), "--top", "1", "--seeds", "2", "--epochs", "1", "--device", "cpu"]) == 0
    study = _load(tmp_path, "seeds")
    trials = {t.number: t for t in study.get_trials()}
    met = 0
    for key, record in study.user_attrs.items():
        if not key.startswith("retrain:"):
            continue
        own = trials[record["trial"]].user_attrs["seed"]
        assert own == 10_000 + record["trial"]
        for s, run in record["runs"].items():
            assert run["seed"] != own and run["seed"] == retrain_seed(trials[record["trial"]], int(s))
            if own == RETRAIN_SEED_BASE + int(s):
                met += 1
            else:
                assert run["seed"] == RETRAIN_SEED_BASE + int(s)
    assert met >= 1  # a collision was there to avoid, or this test shows nothing
    with_repeats = optuna.trial.create_trial(value=0.5, user_attrs={"seed": 10_001, "repeat_seeds": [10_001, 10_002]})
    assert [retrain_seed(with_repeats, s) for s in (0, 3)] == [10_000, 10_003]
    assert {retrain_seed(with_repeats, s) for s in (1, 2)}.isdisjoint({10_001, 10_002})
    assert retrain_seed(with_repeats, 1) == retrain_seed(with_repeats, 1)  # fixed, so a diverged seed stays diverged
    # equal in torch's low 32 bits is the same seed: 2**32 + 10,000 is retrain seed 0's
    wrapped = optuna.trial.create_trial(value=0.5, user_attrs={"seed": 2**32 + 10_000})
    assert retrain_seed(wrapped, 0) % 2**32 != 10_000 and retrain_seed(wrapped, 1) == 10_001
    only_repeats = optuna.trial.create_trial(value=0.5, user_attrs={"repeat_seeds": [10_000, 7]})
    assert retrain_seed(only_repeats, 0) not in (10_000, 7)


def test_results_header_states_the_images_the_retrains_recorded():
    """One count: stated; counts differing between studies: per study; none retrained: no count."""
    from types import SimpleNamespace

    from harness.results import _Entry, _images_text

    def entry(name: str, train: int) -> _Entry:
        return _Entry(SimpleNamespace(name=name), "", None, {"train_images": train, "test_images": 10_000})

    same = [entry("a", 60_000), entry("b", 60_000)]
    assert _images_text(same, "train_images", "training images") == "60,000 training images"
    mixed = [entry("b", 60_000), entry("a", 400), entry("c", 400)]
    assert _images_text(mixed, "train_images", "training images") == "training images (400: a, c; 60,000: b)"
    assert _images_text(mixed, "test_images", "test images") == "10,000 test images"
    assert _images_text([], "train_images", "training images") == "training images"


def _enqueue_entry(recipe_line: str, seed: int = 4) -> str:
    """An [[enqueue]] entry: one architecture of the modern space within the 20,000 budget (the
    first a random sampler with ``seed`` draws), with ``recipe_line`` added."""
    space = get_search_space("modern")
    picker = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    while True:
        point = picker.ask()
        if count_params(space.suggest(point)) <= 20_000:
            break
    lit = {bool: lambda v: "true" if v else "false", str: lambda v: f'"{v}"'}
    return f"[[enqueue]]\n{recipe_line}\n" + "".join(f"{k} = {lit.get(type(v), repr)(v)}\n" for k, v in point.params.items())


def test_clean_epochs_are_searched_recorded_retrained_and_named(tmp_path, capsys):
    """`search_recipe = ["clean_epochs"]`: the header says so, each trial records its value, the
    same network enqueued with 0 and 1 clean epochs is two candidates that are both retrained
    (the retrain tells recipes apart by what changes the weights), and the results file's
    learning curves say which trial trained its last epoch on un-augmented images."""
    study_file = _write(tmp_path, "clean", "single")
    study_file.write_text(study_file.read_text().replace("search_recipe = true", 'search_recipe = ["clean_epochs"]')
                          .replace("epochs = 1", "epochs = 2").replace('name = "random"', 'name = "random"\n'
                          '[pruner]\nname = "none"') + _enqueue_entry("clean_epochs = 0") + _enqueue_entry("clean_epochs = 1"))  # fmt: skip
    assert main(["run", str(study_file), "--device", "cpu", "--quiet"]) == 0
    assert "un-augmented last epochs searched (clean_epochs per trial; the baseline 0)" in capsys.readouterr().out
    study = _load(tmp_path, "clean")
    enqueued = [t for t in study.trials if t.user_attrs.get("origin") == "enqueued"]
    assert [t.user_attrs["recipe"]["clean_epochs"] for t in enqueued] == [0, 1]
    assert len({t.user_attrs["spec"] for t in enqueued}) == 1  # one network, two recipes
    assert all(t.state == TrialState.COMPLETE for t in enqueued)
    assert main(["retrain", str(study_file), "--top", "5", "--seeds", "1", "--epochs", "2", "--device", "cpu"]) == 0
    records = {r["trial"]: r for k, r in _load(tmp_path, "clean").user_attrs.items() if k.startswith("retrain:")}
    assert {t.number for t in enqueued} <= set(records)
    assert [records[t.number]["recipe"]["clean_epochs"] for t in enqueued] == [0, 1]
    md = tmp_path / "results.md"
    assert main(["results", str(study_file), "--out", str(md), "--exports", str(tmp_path / "exports")]) == 0
    caption = md.read_text().split("## Learning curves (mean over seeds)")[1].split("\n\n")[1]
    for n, r in records.items():
        k = r["recipe"]["clean_epochs"]
        said = {1: "its last epoch", 2: "its last 2 epochs"}.get(k)
        assert (f"trial {n}: {said} on the images as they are (clean_epochs)" in caption) == bool(k), n
        assert caption.count(f"trial {n}:") == bool(k), n


def test_weight_averaging_is_searched_recorded_paired_and_reported(tmp_path, capsys):
    """`search_recipe = ["ema_decay"]`: a trial trained with weight averaging records the trained
    weights' validation scores beside the averaged ones and reports them to the pruner (its
    value stays the averaged weights' score), its retrain records their test curve
    in every run, and `harness results` pairs the two run by run; trials without averaging
    record neither."""
    enqueue = _enqueue_entry("ema_decay = 0.999")
    study_file = _write(tmp_path, "ema", "single")
    study_file.write_text(study_file.read_text().replace("search_recipe = true", 'search_recipe = ["ema_decay"]')
                          .replace("epochs = 1", "epochs = 2").replace('name = "random"', 'name = "random"\n'
                          '[pruner]\nname = "none"') + enqueue)  # every trial completes  # fmt: skip
    assert main(["run", str(study_file), "--device", "cpu", "--quiet"]) == 0
    assert "weight averaging searched (ema_decay per trial; the baseline 0.0)" in capsys.readouterr().out
    study = _load(tmp_path, "ema")
    trained = [t for t in study.trials if t.state == TrialState.COMPLETE]
    averaged = [t for t in trained if t.user_attrs["recipe"]["ema_decay"] > 0]
    assert any(t.user_attrs["origin"] == "enqueued" for t in averaged)
    assert any(t.user_attrs["baseline"] for t in trained)  # the seed network: the study's recipe, no averaging
    for t in trained:
        assert ("raw_val_history" in t.user_attrs) == (t in averaged), t.number
        if t in averaged:
            assert len(t.user_attrs["raw_val_history"]) == len(t.user_attrs["val_history"]) == 2
        # the pruner sees the trained weights' scores, averaged or not: like is compared with like
        trained_scores = t.user_attrs.get("raw_val_history", t.user_attrs["val_history"])
        assert t.intermediate_values == dict(enumerate(trained_scores, 1)), t.number
        assert t.value == t.user_attrs["val_history"][-1]  # the selection: the averaged weights' score
    capsys.readouterr()
    assert main(["status", str(study_file)]) == 0  # the best trial's val says which weights scored it
    best = max(trained, key=lambda t: t.value)
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("best:"))
    assert _trial_line(best) in line
    for t in trained:  # the same words for every trial, whichever is best
        if t in averaged:
            assert (f"val {t.value:.4f} (averaged weights, decay {t.user_attrs['recipe']['ema_decay']:g}; trained "
                    f"weights {t.user_attrs['raw_val_history'][-1]:.4f}), test") in _trial_line(t)  # fmt: skip
        else:
            assert f"val {t.value:.4f}, test" in _trial_line(t) and "averaged" not in _trial_line(t)
    assert main(["retrain", str(study_file), "--top", "5", "--seeds", "2", "--epochs", "2", "--device", "cpu"]) == 0
    records = {r["trial"]: r for k, r in _load(tmp_path, "ema").user_attrs.items() if k.startswith("retrain:")}
    paired = {n: r for n, r in records.items() if r["recipe"]["ema_decay"] > 0}
    assert paired and len(records) > len(paired)  # both kinds retrained
    for n, r in records.items():
        for run in r["runs"].values():
            assert ("raw_test_curve" in run) == (n in paired)
            if n in paired:
                assert len(run["raw_test_curve"]) == len(run["test_curve"]) == 2
                assert run["test_curve"][-1] == pytest.approx(run["test_acc"], abs=1e-6)
    md = tmp_path / "results.md"
    assert main(["results", str(study_file), "--out", str(md), "--exports", str(tmp_path / "exports")]) == 0
    section = md.read_text().split("## Weight averaging: averaged against trained weights, same runs")[1].split("\n\n")[2]
    rows = [line.split(" | ") for line in section.splitlines()[2:]]
    assert sorted(int(c[1]) for c in rows) == sorted(paired)  # one row per averaged retrain, none for the others
    for c in rows:
        r = paired[int(c[1])]
        diffs = [(run["test_acc"] - run["raw_test_curve"][-1]) * 100 for _, run in sorted(r["runs"].items())]
        assert c[2] == str(r["recipe"]["ema_decay"])
        means = [sum(v) / len(v) for v in ([run["test_acc"] for run in r["runs"].values()],
                                           [run["raw_test_curve"][-1] for run in r["runs"].values()])]  # fmt: skip
        assert (c[3].split(" ± ")[0], c[4].split(" ± ")[0]) == (f"{means[0]:.2%}", f"{means[1]:.2%}")
        assert c[-1].rstrip(" |") == ", ".join(f"{d:+.2f}" for d in diffs)
        assert c[5] == f"{sum(diffs) / len(diffs):+.3f} pp"


def test_repeats_through_run_status_and_export(tmp_path, capsys):
    """`repeats = 2` as a user meets it: the run says so and prints both seeds' scores, status
    marks val as their mean, and the export reproduces the stored network's test accuracy (the
    first seed's) image for image, its card listing both runs."""
    make_synthetic_mnist(tmp_path / "data", n_train=400, n_test=200)
    study_file = tmp_path / "rep.toml"
    study_file.write_text(STUDY.format(name="rep", mode="single").replace('search_space = "modern"', 'search_space = "seed"')
                          .replace("search_recipe = true", "repeats = 2").replace("n_trials = 5", "n_trials = 2")
                          + '[pruner]\nname = "none"\n')  # fmt: skip
    assert _cli(["run", str(study_file), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "sampler stream 0, 2 seeds per candidate (val: their mean)" in out
    study = _load(tmp_path, "rep")
    trials = [t for t in study.get_trials() if t.state == TrialState.COMPLETE]
    assert len(trials) == 2
    for t in trials:
        a, b = t.user_attrs["repeat_val_accs"]
        assert f"val {t.value:.4f} (seeds {a:.4f} {b:.4f}) test {t.user_attrs['test_acc']:.4f}" in out
    assert _cli(["status", str(study_file)]) == 0
    status = capsys.readouterr().out
    assert "(mean of 2 seeds)" in status and "(first seed)" in status
    assert _cli(["export", str(study_file), "--out", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.count("-> OK") == 3  # the stored network reproduces test_acc, then each file
    best = max(trials, key=lambda t: (t.value, -t.user_attrs["trainable_params"]))
    card = json.loads((tmp_path / "out" / f"rep-trial{best.number}.json").read_text())
    assert card["val_acc"] == best.value and card["test_acc"] == best.user_attrs["test_acc"]
    assert card["search_repeats"] == {"seeds": best.user_attrs["repeat_seeds"],
                                      "val_accs": best.user_attrs["repeat_val_accs"],
                                      "test_accs": best.user_attrs["repeat_test_accs"]}  # fmt: skip
    assert card["search_repeats"]["test_accs"][0] == card["test_acc"] != card["search_repeats"]["test_accs"][1]
    # (the seeds' networks differ on test: the export's check tells them apart)
    assert _cli(["report", str(study_file), "--out", str(tmp_path / "r.html"), "--csv", str(tmp_path / "r.csv")]) == 0
    rows = {int(r["number"]): r for r in csv.DictReader((tmp_path / "r.csv").open())}
    for t in trials:
        a, b = t.user_attrs["repeat_val_accs"]
        assert rows[t.number]["repeats"] == "2" and rows[t.number]["repeat_val_accs"] == f"{a:.4f} {b:.4f}"
    assert "val acc (mean of 2 seeds)" in (tmp_path / "r.html").read_text()


def test_run_retrain_checks_its_options_before_reading_anything(tmp_path):
    """retrain.run_retrain, the command's whole job, refuses a bad choice of trials itself
    (not only through the command line), before it opens a study file or a storage."""
    from harness.errors import HarnessError
    from harness.retrain import run_retrain

    with pytest.raises(HarnessError, match="^--top and --spread choose the trials in two different ways"):
        run_retrain(str(tmp_path / "missing.toml"), top=2, spread=3)
    with pytest.raises(HarnessError, match="^--seeds must be >= 1, got 0$"):
        run_retrain(str(tmp_path / "missing.toml"), seeds=0)
    assert list(tmp_path.iterdir()) == []


def test_resuming_with_another_seed_sampler_or_pruner_says_so(tmp_path, capsys):
    """study.seed, [sampler] and [pruner] steer the search (the proposals, the trials' seeds,
    when to stop one), not how a trial is measured: a resumed study may change them (a switch
    from random to TPE is a normal thing to do), and the run names each change that takes
    effect once, before it runs, even when nothing is left to run; an unchanged resume, or a
    key the pruner in use does not read, says nothing."""
    path = _write(tmp_path, "s", "single")
    assert main(["run", str(path), "--device", "cpu", "--quiet", "--trials", "1"]) == 0
    assert "note:" not in capsys.readouterr().err
    path.write_text(path.read_text() + "[pruner]\nreduction_factor = 4\n")  # halving reads it: a note
    assert main(["run", str(path), "--device", "cpu", "--quiet", "--trials", "1"]) == 0
    assert "note: study 's' resumes with pruner.reduction_factor = 4 (the last run had 3)" in capsys.readouterr().err
    original = path.read_text()
    path.write_text(original.replace("seed = 5", "seed = 6").replace('name = "random"', 'name = "tpe"')
                    .replace("[pruner]\n", '[pruner]\nname = "median"\n'))  # fmt: skip
    said = ["note: study 's' resumes with study.seed = 6 (the last run had 5); sampler.name = \"tpe\" "
            '(the last run had "random"); pruner.name = "median" (the last run had "halving"): '
            "the trials from here on follow the study file"]  # reduction_factor: median does not read it
    for trials in ("0", "1"):  # nothing to run: still said; a run that records them says it too
        assert main(["run", str(path), "--device", "cpu", "--quiet", "--trials", trials]) == 0
        assert [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")] == said
    assert main(["run", str(path), "--device", "cpu", "--quiet", "--trials", "1"]) == 0  # unchanged since: nothing
    assert "note:" not in capsys.readouterr().err
    # back to what the study began with: a change from the last run, said (it was silent)
    path.write_text(original.replace("reduction_factor = 4", "reduction_factor = 2"))
    assert main(["run", str(path), "--device", "cpu", "--quiet", "--trials", "1"]) == 0
    assert [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")] == [
        "note: study 's' resumes with study.seed = 5 (the last run had 6); sampler.name = \"random\" (the last run "
        'had "tpe"); pruner.name = "halving" (the last run had "median"); pruner.reduction_factor = 2 (the last run '
        "had 4; the study began with 3): the trials from here on follow the study file"]  # fmt: skip
    assert len(_load(tmp_path, "s").trials) == 5


def test_a_retrain_says_how_each_run_goes_at_most_once_a_minute(tmp_path, capsys, monkeypatch):
    """A 20-epoch run on a CPU takes minutes: a line with its epoch and test accuracy, at most
    once a minute (here every epoch, the minute shortened), so a log shows it is alive; the
    header marks the baseline when it is among the trials chosen."""
    import harness.retrain

    study_file = _write(tmp_path, "live", "single")
    assert main(["run", str(study_file), "--device", "cpu", "--quiet", "--trials", "1"]) == 0
    capsys.readouterr()
    monkeypatch.setattr(harness.retrain, "EPOCH_LINE_EVERY", 0.0)
    assert main(["retrain", str(study_file), "--top", "1", "--seeds", "1", "--epochs", "2", "--no-baseline",
                 "--device", "cpu", "--data-dir", str(tmp_path / "data")]) == 0  # fmt: skip
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith(": trials 0 (baseline)"), out  # the only trial: the baseline, chosen as the top one
    epochs = [line for line in out if " epoch " in line]
    assert [line.split(", test ")[0] for line in epochs] == ["trial 0 seed 0: epoch 1/2", "trial 0 seed 0: epoch 2/2"]
    monkeypatch.setattr(harness.retrain, "EPOCH_LINE_EVERY", 60.0)
    assert main(["retrain", str(study_file), "--top", "1", "--seeds", "2", "--epochs", "2", "--no-baseline",
                 "--device", "cpu", "--data-dir", str(tmp_path / "data")]) == 0  # fmt: skip
    assert not [line for line in capsys.readouterr().out.splitlines() if " epoch " in line]  # a second's run: none


def test_retrain_of_named_trials_trains_those_only_and_refuses_any_other(tmp_path, capsys):
    """--trial N (repeatable): exactly the trials named, in that order, each once, the baseline
    only if named; a number that is no trial, or a trial that was not trained within the
    budget, is refused in one line before anything trains (nothing written)."""
    from tests.conftest import snapshot

    path = _write(tmp_path, "named", "pareto")
    path.write_text(path.read_text().replace("budget = 20000", "budget = 15000"))  # the baseline: over it
    assert main(["run", str(path), "--device", "cpu", "--quiet", "--trials", "8"]) == 0
    trials = _load(tmp_path, "named").get_trials()
    trained = [t.number for t in trials if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs]
    rejected = [t.number for t in trials if t.user_attrs.get("rejected")]
    assert len(trained) >= 2 and rejected and 0 in rejected, [(t.number, t.state) for t in trials]
    before = snapshot(tmp_path)
    for args, words in [(["--trial", "99"], "--trial 99: study 'named' has no trial 99 (its trials are 0 to 7)"),
                        (["--trial", str(trained[0]), "--trial", "0"],
                         "--trial 0: trial 0 is not a trained trial within the budget (rejected before training (19,290"),
                        (["--trial", str(trained[0]), "--top", "2"], "--top and --trial choose the trials in two different ways"),
                        (["--trial", str(trained[0]), "--no-baseline"], "--trial retrains the trials named and no other")]:  # fmt: skip
        capsys.readouterr()
        assert _cli(["retrain", str(path), *args, "--device", "cpu", "--epochs", "1", "--seeds", "1"]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, (args, err)
    assert snapshot(tmp_path) == before
    named = [trained[1], trained[0], trained[1]]  # out of order, one twice
    assert main(["retrain", str(path), *[a for n in named for a in ("--trial", str(n))], "--device", "cpu",
                 "--epochs", "1", "--seeds", "1"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert out.splitlines()[0].endswith(f"trials {trained[1]}, {trained[0]}"), out  # each once, as named
    assert len(re.findall(r"^trial \d+ seed 0: test", out, re.M)) == 2, out  # two runs trained, no third
    records = {k for k in _load(tmp_path, "named").user_attrs if k.startswith("retrain:")}
    assert records == {f"retrain:trial{trained[1]}", f"retrain:trial{trained[0]}"}  # no baseline, nothing else


def test_a_stop_lost_inside_a_garbage_collector_callback_still_stops_a_retrain(pareto_dir, tmp_path, monkeypatch,
                                                                                capsys):  # fmt: skip
    """Ctrl-C landing while the garbage collector runs a callback: the stop handler's exception
    is lost there and later signals are ignored, so the retrain trained every seed and exited 0.
    Now it stops at the next epoch (exit 130), keeping what finished before it."""
    import os
    import shutil
    import signal
    import weakref

    import harness.train

    folder = tmp_path / "copy"
    shutil.copytree(pareto_dir, folder)
    real_fit, calls = harness.train.fit, []

    class Garbage:
        pass

    def fit_stopped_in_a_callback(*args, **kwargs):
        calls.append(kwargs["seed"])
        garbage = Garbage()
        weakref.finalize(garbage, os.kill, os.getpid(), signal.SIGINT)
        del garbage  # the handler runs inside the finalizer: its KeyboardInterrupt is "ignored"
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(harness.train, "fit", fit_stopped_in_a_callback)
    capsys.readouterr()
    # --epochs 1: the protocol a retrain of the module's study (earlier tests) may have stored
    assert _cli(["retrain", str(folder / "par.toml"), "--seeds", "9", "--epochs", "1", "--device", "cpu"]) == 130
    assert len(calls) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "interrupted: the finished runs are kept; the same command goes on from them"]
