"""A user's search space (``study.search_space = "space.py:suggest"``) that goes wrong.

At read time (one probe draw): a wrong return value or wrongly typed fields are a one-line
error naming the file, exit 2, nothing written. At trial time (a later proposal the probe did
not reach): that trial FAILs with a one-line ``fail_reason``, the run stops with one line
naming the space, the trial and the error, exit 2, no trial left RUNNING, and the failed
trial is not retried on resume. A parameter whose distribution kind changed between runs is
refused before anything is written where the probe draws it, else like a trial-time error.
"""

from __future__ import annotations

import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from harness.cli import main
from tests.conftest import snapshot

STUDY = """
[study]
name = "space-errors"
search_space = "space.py:suggest"
budget = 20000
[data]
val_size = 100
[train]
epochs = 1
"""

HEADER = "import optuna\nfrom harness.spec import ArchSpec, BlockSpec, ConvSpec\n"


def _space(body: str) -> str:
    """A space file: ``suggest(trial)`` drawing a width ``w``, then ``body`` (which may return)."""
    return (HEADER + "def suggest(trial):\n    w = trial.suggest_int('w', 4, 16)\n" + body
            + "    return ArchSpec(blocks=(BlockSpec(convs=(ConvSpec(w),)),), head='gap')\n")  # fmt: skip


def _write(tmp_path: Path, space: str, study: str = STUDY) -> Path:
    (tmp_path / "space.py").write_text(space)
    path = tmp_path / "base.toml"
    path.write_text(study)
    return path


def _reload_spaces(monkeypatch) -> None:
    """The space file changed on disk: have the next read load it again (a new process would)."""
    for name in [m for m in sys.modules if m.startswith("_harness_user_space_")]:
        monkeypatch.delitem(sys.modules, name)


def _trials(tmp_path: Path) -> list[optuna.trial.FrozenTrial]:
    storage = f"sqlite:///{tmp_path / 'space-errors.db'}"
    return optuna.load_study(study_name="space-errors", storage=storage).get_trials(deepcopy=False)


def _run(study: Path, data: Path, *extra: str) -> int:
    return main(["run", str(study), "--data-dir", str(data), "--device", "cpu", "--quiet", *extra])


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("harness: error: "), lines[0]
    return lines[0]


# ---- read time: the probe draw's result is checked field by field --------------------------

READ_TIME = [
    ("block-not-a-BlockSpec", HEADER + "def suggest(trial):\n    trial.suggest_int('w', 4, 16)\n"
     "    return ArchSpec(blocks=('a',))\n", "space.py:suggest", ["blocks[0] must be a BlockSpec, got str"]),
    ("float-width", HEADER + "def suggest(trial):\n    trial.suggest_int('w', 4, 16)\n"
     "    return ArchSpec(blocks=(BlockSpec(convs=(ConvSpec(8.5),)),), head='gap')\n", "space.py:suggest",
     ["blocks[0].convs[0].out_channels must be an integer, got float 8.5"]),
    ("three-channels", _space("").replace("head='gap')", "head='gap', in_channels=3)"), "space.py:suggest",
     ["in_channels = 3", "in_channels must be 1"]),
    # values no layout makes valid: the space's mistake, not a candidate to reject as invalid every trial
    ("negative-width", HEADER + "def suggest(trial):\n    w = trial.suggest_int('w', -4, -1)\n"
     "    return ArchSpec(blocks=(BlockSpec(convs=(ConvSpec(w),)),), head='gap')\n", "space.py:suggest",
     ["blocks[0].convs[0].out_channels must be >= 1, got -"]),
    ("nan-dropout", _space("").replace("(ConvSpec(w),)", "(ConvSpec(w),), dropout=float('nan')"), "space.py:suggest",
     ["blocks[0].dropout must be in [0, 1), got nan"]),
    ("no-blocks", HEADER + "def suggest(trial):\n    trial.suggest_int('w', 4, 16)\n    return ArchSpec(blocks=())\n",
     "space.py:suggest", ["blocks must hold at least one BlockSpec, got none"]),
    ("a-class", _space(""), "space.py:ArchSpec", ["'ArchSpec' is a class, not a function"]),
    ("not-callable", "suggest = 5\n", "space.py:suggest", ["'suggest' is not a function (int)"]),
]


@pytest.mark.parametrize("case_id,code,ref,words", READ_TIME, ids=[c[0] for c in READ_TIME])
def test_a_wrong_spec_from_the_probe_draw_is_refused_when_the_file_is_read(tmp_path, capsys, synthetic_root,
                                                                          case_id, code, ref, words):  # fmt: skip
    study = _write(tmp_path, code, STUDY.replace("space.py:suggest", ref))
    before = snapshot(tmp_path)
    for command in (["status", str(study)], ["run", str(study), "--data-dir", str(synthetic_root)]):
        assert main(command) == 2
        line = _one_line(capsys)
        for w in [str(study), "study.search_space", str(tmp_path / "space.py"), *words]:
            assert w in line, (w, line)
    assert snapshot(tmp_path) == before


def test_the_probe_draw_tries_again_when_the_space_rejects_a_candidate(tmp_path):
    """optuna.TrialPruned is how a space rejects a candidate: the read-time check draws again
    rather than refusing the space."""
    from search_spaces import get_search_space

    (tmp_path / "space.py").write_text(_space(
        "    calls.append(w)\n    if len(calls) == 1:\n        raise optuna.TrialPruned('not this one')\n"
    ).replace("def suggest", "calls = []\ndef suggest"))  # fmt: skip
    space = get_search_space("space.py:suggest", tmp_path)
    assert space.name == "space.py:suggest"


# ---- trial time: the proposals the probe did not reach ------------------------------------

LATER = [
    ("raises", "        raise RuntimeError(f'w={w} not supported')\n", ["RuntimeError: w=", "not supported"]),
    ("returns-junk", "        return 'junk'\n", ["must return a harness.spec.ArchSpec, got str"]),
    ("block-not-a-BlockSpec", "        return ArchSpec(blocks=('a',))\n", ["blocks[0] must be a BlockSpec, got str"]),
    ("float-width", "        return ArchSpec(blocks=(BlockSpec(convs=(ConvSpec(8.5),)),), head='gap')\n",
     ["out_channels must be an integer, got float 8.5"]),
    ("three-channels", "        return ArchSpec(blocks=(BlockSpec(convs=(ConvSpec(w),)),), head='gap', in_channels=3)\n",
     ["in_channels = 3"]),
    ("exits", "        import sys\n        sys.exit(3)\n", ["SystemExit: 3"]),
]


@pytest.mark.parametrize("case_id,body,words", LATER, ids=[c[0] for c in LATER])
def test_a_space_failing_on_a_later_trial_fails_it_and_stops_the_run_in_one_line(tmp_path, capsys, synthetic_root,
                                                                                 case_id, body, words):  # fmt: skip
    """Trial 0 is the baseline (built without the space), trial 1 the first proposal."""
    study = _write(tmp_path, _space("    if trial.number > 0:\n" + body))
    assert _run(study, synthetic_root, "--trials", "3") == 2
    line = _one_line(capsys)
    for w in [str(study), "study.search_space", str(tmp_path / "space.py"), "trial 1", *words]:
        assert w in line, (w, line)
    trials = _trials(tmp_path)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL]  # stopped at the first failure
    reason = trials[1].user_attrs["fail_reason"]
    assert "\n" not in reason and str(tmp_path / "space.py") in reason, reason
    for w in words:
        assert w in reason, (w, reason)


def test_a_trial_the_space_failed_is_not_retried_on_resume(tmp_path, capsys, synthetic_root, monkeypatch):
    """It failed for a reason of its own (like a diverged trial): the fixed space's next run
    proposes a new candidate instead of retrying it."""
    study = _write(tmp_path, _space("    if trial.number == 1:\n        raise RuntimeError('no')\n"))
    assert _run(study, synthetic_root, "--trials", "2") == 2
    capsys.readouterr()
    (tmp_path / "space.py").write_text(_space(""))
    _reload_spaces(monkeypatch)
    assert _run(study, synthetic_root, "--trials", "1") == 0, capsys.readouterr().err
    trials = _trials(tmp_path)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert trials[2].user_attrs["origin"] == "sampler" and "failed_trial" not in trials[2].system_attrs


def test_a_space_rejecting_a_candidate_with_trial_pruned_prunes_that_trial(tmp_path, capsys, synthetic_root):
    """optuna.TrialPruned from the space: the candidate is rejected before training (PRUNED,
    ``rejected = "invalid"`` with the space's reason, infeasible for the sampler); the run goes on."""
    study = _write(tmp_path, _space("    if trial.number == 1:\n        raise optuna.TrialPruned(f'w={w} is odd')\n"))
    assert _run(study, synthetic_root, "--trials", "3") == 0, capsys.readouterr().err
    trials = _trials(tmp_path)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.COMPLETE]
    ua = trials[1].user_attrs
    assert ua["rejected"] == "invalid" and ua["reject_reason"].startswith("the search space rejected it"), ua
    assert "is odd" in ua["reject_reason"] and ua["params_over_budget"] == 1.0


# ---- a parameter's distribution kind changed between runs ---------------------------------


def test_a_changed_distribution_kind_is_refused_before_anything_is_written(tmp_path, capsys, synthetic_root,
                                                                           monkeypatch):  # fmt: skip
    study = _write(tmp_path, _space(""))
    assert _run(study, synthetic_root, "--trials", "2") == 0, capsys.readouterr().err
    (tmp_path / "space.py").write_text(_space("").replace("trial.suggest_int('w', 4, 16)",
                                                          "trial.suggest_categorical('w', [4, 8])"))  # fmt: skip
    _reload_spaces(monkeypatch)
    before = snapshot(tmp_path)
    assert _run(study, synthetic_root, "--trials", "2") == 2
    line = _one_line(capsys)
    for w in [str(study), "study.search_space", str(tmp_path / "space.py"), "parameter 'w'",
              "suggest_categorical([4, 8])", "suggest_int(4, 16)"]:  # fmt: skip
        assert w in line, (w, line)
    assert snapshot(tmp_path) == before


def test_a_changed_distribution_the_probe_does_not_draw_stops_the_run_at_its_trial(tmp_path, capsys, synthetic_root,
                                                                                   monkeypatch):  # fmt: skip
    conditional = "    if trial.number > 0:\n        trial.suggest_int('k', 3, 5, step=2)\n"
    study = _write(tmp_path, _space(conditional))
    assert _run(study, synthetic_root, "--trials", "2") == 0, capsys.readouterr().err
    (tmp_path / "space.py").write_text(_space(conditional.replace("suggest_int('k', 3, 5, step=2)",
                                                                  "suggest_categorical('k', [3, 5])")))  # fmt: skip
    _reload_spaces(monkeypatch)
    assert _run(study, synthetic_root, "--trials", "2") == 2
    line = _one_line(capsys)
    for w in [str(study), "study.search_space", str(tmp_path / "space.py"), "trial 2",
              "Cannot set different distribution kind", "parameter 'k'"]:  # fmt: skip
        assert w in line, (w, line)
    trials = _trials(tmp_path)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL]
    assert "distribution kind" in trials[2].user_attrs["fail_reason"]


def test_with_jobs_a_space_failing_in_every_worker_is_bad_input_said_once_by_each(tmp_path):
    """--jobs 2, a space that fails on every proposal after the baseline: each worker stops with
    its one line, and the run's exit status is 2, as with one process (it added "2 of 2 workers
    failed", exit 1, as for a crash); no trial left RUNNING."""
    import subprocess

    from tests.conftest import make_synthetic_mnist

    data = make_synthetic_mnist(tmp_path / "data")
    study = _write(tmp_path, _space("    if trial.number >= 1:\n        raise RuntimeError('not this one')\n"),
                   STUDY.replace("budget = 20000", "budget = 20000\nn_trials = 6"))
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(study), "--data-dir", str(data), "--jobs", "2",
                           "--device", "cpu", "--quiet"], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 2, (done.returncode, done.stderr)
    errors = [line for line in done.stderr.splitlines() if line.startswith("harness: error:")]
    assert sorted(line[:21] for line in errors) == ["harness: error: [w0] ", "harness: error: [w1] "], done.stderr
    assert all("suggest(trial) failed: RuntimeError: not this one" in line for line in errors), errors
    assert not [t.number for t in _trials(tmp_path) if t.state == TrialState.RUNNING]


@pytest.mark.parametrize("codes,interrupted,status,line", [
    ((2, 2), False, 2, None),  # every failed worker stopped on bad input and said so: nothing more
    ((2, 1), False, 1, "harness: error: 2 of 3 workers failed (exit codes (2, 1))"),  # a crash is not hidden
    ((1,), False, 1, "harness: error: 1 of 3 workers failed (exit codes (1,))"),
    ((2,), True, 130, "interrupted: "),  # stopped: the stop's status, as without the bad input
    ((), False, 0, None),
])  # fmt: skip
def test_a_jobs_runs_exit_status_from_its_workers(capsys, codes, interrupted, status, line):
    """The run's status and last line from its workers' exit codes: bad input (2) alone is 2;
    with any other failure it is 1 and says how many workers failed; a stop takes precedence
    over bad input."""
    from harness.cli import _run_exit_status
    from harness.runner import RunOutcome, forget_stop

    forget_stop()
    assert _run_exit_status(RunOutcome(interrupted=interrupted, workers=3, bad_codes=codes)) == status
    err = capsys.readouterr().err.splitlines()
    assert (err == []) if line is None else (len(err) == 1 and err[0].startswith(line)), err
