"""Many workers, crashes and interrupts, on SQLite and on a real PostgreSQL server.

Workers are real `harness` processes training on tiny synthetic data; the assertions read the
storage with plain Optuna.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from harness.objective import TRAINING_FAILURES, Objective
from harness.study import open_study, summarize
from harness.train import DivergedError, FitResult

ROOT = Path(__file__).resolve().parents[1]

STUDY = """
[study]
name = "{name}"
search_space = "seed"
budget = 20000
seed = {seed}
heartbeat_interval = 1
grace_period = 3
[sampler]
name = "random"
[pruner]
name = "none"
[data]
val_size = 100
[train]
epochs = {epochs}
batch_size = 100
eval_batch_size = 200
"""


def _study_file(tmp_path: Path, name: str = "w", epochs: int = 1, seed: int = 0) -> Path:
    p = tmp_path / f"{name}.toml"
    p.write_text(STUDY.format(name=name, epochs=epochs, seed=seed))
    return p


def _cmd(*args: str) -> list[str]:
    exe = shutil.which("harness")
    return [exe, *args] if exe else [sys.executable, "-m", "harness.cli", *args]


def _run_workers(n: int, study: Path, url: str, data: Path, trials: int, timeout: float) -> tuple[list, str]:
    """Start n `harness worker` processes together; wait; return (processes, joined logs)."""
    procs = [
        subprocess.Popen(_cmd("worker", str(study), "--storage", url, "--trials", str(trials), "--quiet",
                              "--data-dir", str(data), "--device", "cpu"),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        for _ in range(n)
    ]
    return procs, "".join(p.communicate(timeout=timeout)[0] for p in procs)


def _check_exactly_once(url: str, name: str, n: int, logs: str) -> list[optuna.trial.FrozenTrial]:
    trials = optuna.load_study(study_name=name, storage=url).get_trials()
    assert len(trials) == n, [(t.number, t.state) for t in trials]
    assert sorted(t.number for t in trials) == list(range(n))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert sum(bool(t.user_attrs.get("baseline")) for t in trials) == 1
    assert "database is locked" not in logs and "Traceback" not in logs
    return trials


@pytest.mark.slow
def test_four_sqlite_workers_record_every_trial_once(tmp_path, synthetic_root):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    study = _study_file(tmp_path)
    proc = subprocess.run(_cmd("run", str(study), "--jobs", "4", "--trials", "16", "--storage", url,
                               "--data-dir", str(synthetic_root), "--device", "cpu"),
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    logs = proc.stdout + proc.stderr
    assert proc.returncode == 0, logs
    _check_exactly_once(url, "w", 16, logs)
    assert {f"[w{i}]" for i in range(4)} <= {line.split()[0] for line in proc.stdout.splitlines() if line.startswith("[w")}
    # One view: each trial's line once, the parent's combined status (plain lines: stderr is a
    # pipe here), nothing from Optuna's logger or warnings.
    numbers = [int(m.group(1)) for m in re.finditer(r"^\[w\d\] trial (\d+)[ :(]", proc.stdout, re.M)]
    assert sorted(numbers) == list(range(16)), proc.stdout
    assert re.search(r"^16/16 trials, trained \d+, rejected \d+", proc.stderr, re.M) and "\r" not in proc.stderr, proc.stderr
    assert not re.search(r"^\[[IWE] \d{4}-", logs, re.M) and "Warning" not in logs, logs
    # ... then a resume. Each process proposes from its own stream: no parameter set twice.
    resume = subprocess.run(_cmd("run", str(study), "--trials", "6", "--storage", url, "--quiet",
                                 "--data-dir", str(synthetic_root), "--device", "cpu"),
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert resume.returncode == 0, resume.stderr
    trials = optuna.load_study(study_name="w", storage=url).get_trials()
    proposed = [t for t in trials if t.user_attrs.get("origin") == "sampler"]
    assert len(proposed) == 21  # 22 trials, the first is the baseline; none enqueued or retried
    keys = [json.dumps(t.params, sort_keys=True) for t in proposed]
    assert len(set(keys)) == len(keys), "the same architecture was proposed twice"
    assert not any("duplicate_of" in t.user_attrs for t in trials)  # not even caught and skipped
    assert {t.user_attrs["sampler_stream"] for t in proposed} == {0, 1, 2, 3, 4}
    assert {t.user_attrs["sampler_stream"] for t in proposed if t.number >= 16} == {4}  # the resume
    seeds = {t.user_attrs["sampler_stream"]: t.user_attrs["sampler_seed"] for t in proposed}
    assert len(set(seeds.values())) == 5 and seeds[0] == 0  # stream 0 = the study seed


@pytest.mark.parametrize("jobs", [2, 3], ids=["jobs-2", "jobs-3-for-2-trials"])
def test_cpu_workers_each_train_on_their_share_of_the_cores(tmp_path, synthetic_root, monkeypatch, jobs):
    """`run --jobs K` on a CPU: each worker's torch runs cores // K threads, as each trial's
    device label records (K workers at torch's default, one thread per core, oversubscribe the
    cores K times over: 0.43x the throughput measured); with fewer trials than K, the workers
    that start share the cores. The core count is faked so that the share is one more than
    torch's default here, whatever machine this runs on."""
    import torch

    from harness.cli import main

    share = torch.get_num_threads() + 1
    monkeypatch.setattr(os, "cpu_count", lambda: 2 * share)  # the parent computes the share
    url = f"sqlite:///{tmp_path / 'w.db'}"
    study = _study_file(tmp_path)
    assert main(["run", str(study), "--jobs", str(jobs), "--trials", "2", "--storage", url, "--quiet",
                 "--data-dir", str(synthetic_root), "--device", "cpu"]) == 0  # fmt: skip
    trials = optuna.load_study(study_name="w", storage=url).get_trials()
    labels = [t.user_attrs["device"] for t in trials if t.state == TrialState.COMPLETE]
    assert len(labels) == 2 and all(label.endswith(f", {share} threads)") for label in labels), labels  # share >= 2


@pytest.mark.slow
def test_sigterm_stops_a_retrain_as_ctrl_c_does(tmp_path, synthetic_root):
    """SIGTERM (a job scheduler's stop) during `harness retrain`: one line saying what is kept
    and exit 143 (128 + SIGTERM, as a shell reports a process the signal ended), as `run` does;
    not a process killed by the signal mid-write."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    study = _study_file(tmp_path, "r")
    first = subprocess.run(_cmd("run", str(study), "--trials", "1", "--storage", url, "--quiet",
                                "--data-dir", str(synthetic_root), "--device", "cpu"),
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert first.returncode == 0, first.stderr
    log = tmp_path / "retrain.out"
    with open(log, "w") as out:
        proc = subprocess.Popen(_cmd("retrain", str(study), "--seeds", "1", "--epochs", "5000", "--storage", url,
                                     "--data-dir", str(synthetic_root), "--device", "cpu"),
                                stdout=out, stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            _wait_for(lambda: "retraining 1 architecture" in log.read_text())  # training has begun
            time.sleep(1)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=120)
        finally:
            if proc.returncode is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 143 and err.strip().splitlines() == [
        "interrupted: the finished runs are kept; the same command goes on from them"], (proc.returncode, err)


@pytest.mark.slow
def test_independent_workers_create_study_and_baseline_once(tmp_path, synthetic_root):
    """4 `harness worker` processes started together on an empty database: no creation race."""
    url = f"sqlite:///{tmp_path / 'race.db'}"
    study = _study_file(tmp_path, "race")
    procs, logs = _run_workers(4, study, url, synthetic_root, trials=2, timeout=600)
    assert all(p.returncode == 0 for p in procs), logs
    _check_exactly_once(url, "race", 8, logs)
    assert optuna.load_study(study_name="race", storage=url).user_attrs["budget"] == 20000


def _wait_for(predicate, timeout: float = 120.0, interval: float = 0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError("condition not met in time")


@pytest.mark.slow
def test_sigkill_mid_trial_then_resume_retries_it(tmp_path, synthetic_root):
    url = f"sqlite:///{tmp_path / 'k.db'}"
    # One schedule throughout (a study refuses a file with other [train] settings): 100 epochs
    # of 5 steps, long enough to be killed after its first epoch.
    study = _study_file(tmp_path, "k", epochs=100)
    args = ["--storage", url, "--data-dir", str(synthetic_root), "--device", "cpu", "--quiet"]
    first = subprocess.run(_cmd("run", str(study), "--trials", "3", *args), capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    done_before = {t.number: (t.state, t.params, t.value) for t in optuna.load_study(study_name="k", storage=url).trials}
    n_complete_before = sum(s == TrialState.COMPLETE for s, _, _ in done_before.values())

    victim = subprocess.Popen(_cmd("run", str(study), "--trials", "1", *args),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

    def running_with_an_epoch():
        trials = optuna.load_study(study_name="k", storage=url).get_trials(deepcopy=False)
        return [t for t in trials if t.state == TrialState.RUNNING and t.intermediate_values]

    killed = _wait_for(running_with_an_epoch)[0]
    assert victim.poll() is None, "the trial to kill finished first; make it longer"
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    time.sleep(4)  # past the 3 s grace period: the trial's heartbeat has gone stale
    status = subprocess.run(_cmd("status", str(study), "--storage", url), capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    assert re.search(rf"1 running \(1 stale: trial {killed.number} no heartbeat for \d+ s\)", status.stdout), status.stdout
    report = subprocess.run(_cmd("report", str(study), "--storage", url, "--out", str(tmp_path / "r.html"),
                                 "--csv", str(tmp_path / "t.csv")), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert report.returncode == 0, report.stderr
    assert re.search(rf"1 stale: trial {killed.number} no heartbeat for \d+ s", (tmp_path / "r.html").read_text())

    resume = subprocess.run(_cmd("run", str(study), "--trials", "1", *args), capture_output=True, text=True, timeout=600)
    assert resume.returncode == 0, resume.stderr
    trials = optuna.load_study(study_name="k", storage=url).get_trials()
    by_number = {t.number: t for t in trials}
    assert by_number[killed.number].state == TrialState.FAIL
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retried) == 1 and retried[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retried[0].params == killed.params
    assert retried[0].user_attrs["origin"] == "retry" and retried[0].user_attrs["retry_of"] == killed.number
    assert "duplicate_of" not in retried[0].user_attrs  # a retry is trained, not skipped as a repeat
    for number, (state, params, value) in done_before.items():  # finished trials untouched
        assert (by_number[number].state, by_number[number].params, by_number[number].value) == (state, params, value)
    assert sum(t.state == TrialState.COMPLETE for t in trials) >= n_complete_before
    baseline_done = [t for t in trials if t.user_attrs.get("baseline") and t.state == TrialState.COMPLETE]
    assert len(baseline_done) == 1


@pytest.mark.slow
@pytest.mark.parametrize("signum,jobs,group", [(signal.SIGINT, 1, False), (signal.SIGTERM, 1, False),
                                               (signal.SIGINT, 2, False), (signal.SIGTERM, 2, False),
                                               (signal.SIGTERM, 2, True)],
                         ids=["ctrl-c", "sigterm", "sigint-jobs-2", "sigterm-jobs-2",
                              "sigterm-jobs-2-process-group"])  # fmt: skip
def test_ctrl_c_or_sigterm_marks_trial_failed_prints_summary_exits_128_plus_signal(tmp_path, synthetic_root, signum, jobs, group):
    """Ctrl-C, or SIGTERM (a job scheduler's stop: to the parent alone, which passes it on to
    its --jobs workers, or to the whole process group, as SLURM and systemd do, so each worker
    gets it and then the parent's SIGTERM too): the running trials end FAIL, marked interrupted
    (retried by the next run), the summary prints, exit 128 + the signal's number (130 for
    Ctrl-C, 143 for SIGTERM, as a shell reports a process either signal ended; the parent's
    signal, not the SIGTERM it sends its workers, which is no worker failure); not a trial left
    RUNNING until its heartbeat goes stale."""
    url = f"sqlite:///{tmp_path / 'c.db'}"
    # A trial that cannot end before the Ctrl-C, and a child that sees Ctrl-C as a terminal
    # would send it: a shell starts background commands (`cmd &`) with SIGINT ignored, children
    # inherit that, and Python then installs no KeyboardInterrupt handler (the test run in the
    # background failed: the trial ran on to its end, exit 0).
    study = _study_file(tmp_path, "c", epochs=5_000)  # minutes at least, not days should a kill miss
    proc = subprocess.Popen(_cmd("run", str(study), "--trials", str(jobs), "--jobs", str(jobs), "--storage", url,
                                 "--quiet", "--data-dir", str(synthetic_root), "--device", "cpu"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
                            start_new_session=True)  # fmt: skip

    def epoch_reported():
        try:
            trials = optuna.load_study(study_name="c", storage=url).get_trials(deepcopy=False)
        except KeyError:
            return False
        return sum(t.state == TrialState.RUNNING and bool(t.intermediate_values) for t in trials) == jobs

    try:
        _wait_for(epoch_reported)  # every worker in a trial
        if group:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
    finally:
        # A lost signal: the trials would run for days. The whole group goes (the workers hold
        # the output pipes open, so waiting for the parent alone would wait for them).
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # all ended
            pass
        if proc.returncode is None:
            proc.communicate()
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err and "workers failed" not in err, err
    assert "trials:" in out and "baseline" in out
    trials = optuna.load_study(study_name="c", storage=url).get_trials()
    assert trials and all(t.state == TrialState.FAIL and t.user_attrs.get("interrupted") for t in trials), [
        (t.number, t.state, t.user_attrs.get("fail_reason")) for t in trials]  # retried by the next run
    assert trials[0].user_attrs["baseline"] and len(trials) == jobs


@pytest.mark.parametrize("when", ["proposing", "telling"])
def test_a_stop_while_optuna_creates_or_tells_a_trial_leaves_none_running(tmp_path, synthetic_root, monkeypatch, capsys,
                                                                          when):
    """SIGINT while Optuna creates a trial (the sampler proposing it: TPE can take seconds) or
    tells one (the storage's writes) is held until the trial's objective starts, or the next
    callback: the new trial fails as interrupted, nothing drawn for it, and a resumed run
    proposes anew (a trial stopped before its proposal was whole is not retried); a told one
    keeps its result. Raised where it arrived, it left a trial RUNNING that no heartbeat had recorded:
    never failed as stale, never retried, and a study could lose its baseline for it."""
    from harness.cli import main

    study = _study_file(tmp_path, "g")
    calls = []

    def stop_once(n: int) -> None:
        calls.append(n)
        if len(calls) == 2:  # the second trial of the run: the baseline is trained by then
            os.kill(os.getpid(), signal.SIGINT)  # Python runs the handler before the next line

    if when == "proposing":  # Optuna's Trial() asks the sampler for its relative proposal
        original = optuna.samplers.RandomSampler.infer_relative_search_space

        def infer(self, study, trial):
            stop_once(trial.number)
            return original(self, study, trial)

        monkeypatch.setattr(optuna.samplers.RandomSampler, "infer_relative_search_space", infer)
    else:
        import optuna.study._optimize as optimize

        original = optimize._tell_with_warning

        def tell(**kwargs):
            stop_once(kwargs["trial"].number)
            return original(**kwargs)

        monkeypatch.setattr(optimize, "_tell_with_warning", tell)
    args = ["run", str(study), "--quiet", "--data-dir", str(synthetic_root), "--device", "cpu"]
    assert main([*args, "--trials", "4"]) == 130
    assert "interrupted" in capsys.readouterr().err
    trials = optuna.load_study(study_name="g", storage=f"sqlite:///{tmp_path / 'g.db'}").get_trials()
    assert [t.state for t in trials if t.state == TrialState.RUNNING] == []
    stopped_at = calls[1]  # the trial being created or told when the stop came
    assert stopped_at >= 1 and [t.number for t in trials] == list(range(stopped_at + 1))
    assert all(t.state == TrialState.COMPLETE for t in trials[:stopped_at])
    if when == "proposing":  # failed as interrupted
        assert (trials[-1].state, trials[-1].user_attrs.get("interrupted")) == (TrialState.FAIL, True)
    else:  # keeps its result; no further trial starts
        assert trials[-1].state == TrialState.COMPLETE
    monkeypatch.undo()
    assert main([*args, "--trials", "2"]) == 0
    trials = optuna.load_study(study_name="g", storage=f"sqlite:///{tmp_path / 'g.db'}").get_trials()
    assert all(t.state != TrialState.RUNNING for t in trials)
    if when == "proposing":
        after = trials[stopped_at + 1]  # nothing was proposed for the failed one: the sampler proposes
        assert trials[stopped_at].params == {} and not any(t.system_attrs.get("failed_trial") for t in trials)
        assert after.state == TrialState.COMPLETE and after.params and after.user_attrs["origin"] == "sampler"


def test_a_stop_while_waiting_for_the_study_lock_ends_the_wait(tmp_path, synthetic_root, monkeypatch, capsys):
    """A stop that arrives while Optuna's stale-trial check, before it creates a trial, waits
    for the study lock (to enqueue a dead trial's retry) ends the wait instead of being held
    for as long as another process holds the lock (a hung worker: the stop, and a second
    Ctrl-C, did nothing until then). The run ends as stopped with the lock still held
    elsewhere, and no trial is left RUNNING."""
    import threading

    from harness.cli import main
    from harness.storage import study_lock, waiting_for_study_lock

    study = _study_file(tmp_path, "l")
    url = f"sqlite:///{tmp_path / 'l.db'}"
    args = ["run", str(study), "--quiet", "--data-dir", str(synthetic_root), "--device", "cpu"]
    assert main([*args, "--trials", "1"]) == 0  # the study (its baseline) and its lock file
    real_check, released, holder = optuna.storages.fail_stale_trials, threading.Event(), []

    def release():
        released.set()
        fcntl.flock(holder[0], fcntl.LOCK_UN)

    def check_waiting_for_the_lock(study_):
        holder.append(open(tmp_path / "l.db.lock", "a+"))  # another open file: flock conflicts as across processes
        fcntl.flock(holder[0], fcntl.LOCK_EX)
        timers = [threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)), threading.Timer(60, release)]
        holder.extend(timers)
        for t in timers:
            t.start()
        with study_lock(url, "l"):  # as RetryStaleTrial does for a dead trial
            pass
        return real_check(study_)

    monkeypatch.setattr(optuna.storages, "fail_stale_trials", check_waiting_for_the_lock)
    try:
        assert main([*args, "--trials", "1"]) == 130
        assert not released.is_set(), "the run waited until the lock was released"
    finally:
        for t in holder[1:]:
            t.cancel()
        if holder:
            holder[0].close()
    assert "interrupted" in capsys.readouterr().err
    trials = optuna.load_study(study_name="l", storage=url).get_trials()
    assert len(trials) == 1 and trials[0].state == TrialState.COMPLETE  # none created, none RUNNING
    assert not waiting_for_study_lock()  # the ended wait is not counted any more
    with study_lock(url, "l", wait=False) as held:
        assert held  # and nothing of it holds the lock


def test_a_stop_after_the_last_trial_is_recorded_still_ends_the_run_as_stopped(tmp_path, synthetic_root, monkeypatch,
                                                                                capsys):
    """SIGINT after the last trial's callbacks, while Optuna winds down: nothing is left to
    fail, every trial keeps its result, and the run still ends as stopped (exit 130)."""
    import harness.runner
    from harness.cli import main

    study = _study_file(tmp_path, "l")
    original, told = harness.runner._StopGate.raise_if_stopped, []

    def then_stop(self, study, trial):
        original(self, study, trial)
        told.append(trial.number)
        if len(told) == 2:  # the run's last trial
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(harness.runner._StopGate, "raise_if_stopped", then_stop)
    assert main(["run", str(study), "--quiet", "--data-dir", str(synthetic_root), "--device", "cpu", "--trials", "2"]) == 130
    assert "interrupted" in capsys.readouterr().err
    trials = optuna.load_study(study_name="l", storage=f"sqlite:///{tmp_path / 'l.db'}").get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE]


def test_an_unbounded_run_says_it_goes_on_until_stopped(tmp_path, synthetic_root, monkeypatch, capsys):
    """study.n_trials = 0 and no timeout: nothing but a stop ends the run, and it says so first
    (also with --quiet); bounded by --timeout or --trials, it does not."""
    import harness.runner
    from harness.cli import main

    study = _study_file(tmp_path, "u")  # no n_trials: 0
    original = harness.runner._StopGate.raise_if_stopped

    def stop_after_one(self, study, trial):
        original(self, study, trial)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(harness.runner._StopGate, "raise_if_stopped", stop_after_one)
    args = ["run", str(study), "--quiet", "--data-dir", str(synthetic_root), "--device", "cpu"]
    assert main(args) == 130
    assert "note: study 'u' has study.n_trials = 0 and no timeout: the run goes on until it is stopped" in \
        capsys.readouterr().err
    monkeypatch.undo()
    for bound in (["--trials", "1"], ["--timeout", "1"]):
        assert main([*args, *bound]) == 0
        assert "until it is stopped" not in capsys.readouterr().err, bound


_TWO_SIGNALS_AT_ONCE = """
import os, signal
from harness.runner import stop_on_signals
stop_on_signals()
both = {signal.SIGINT, signal.SIGTERM}
signal.pthread_sigmask(signal.SIG_BLOCK, both)  # both arrive before Python runs either handler,
os.kill(os.getpid(), signal.SIGINT)              # as when a kernel is running: a process group's
os.kill(os.getpid(), signal.SIGTERM)             # Ctrl-C and the parent's SIGTERM to its workers
try:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, both)
    for _ in range(1000):
        pass
    print("not interrupted")
except KeyboardInterrupt:
    total = 0
    for i in range(100_000):  # the trial's clean-up, which the second signal must not break
        total += i
    print("cleaned up")
print("SIG_IGN:", signal.getsignal(signal.SIGINT) is signal.SIG_IGN, signal.getsignal(signal.SIGTERM) is signal.SIG_IGN)
"""


def test_two_signals_arriving_together_interrupt_once_and_leave_the_clean_up_alone():
    """SIGINT and SIGTERM pending together (timeout -s INT signals a --jobs worker's whole
    group, and the parent passes SIGTERM on): the first interrupts, the second is ignored
    without a word. Seen on a GPU lease: under SIG_IGN, Python raised "OSError: Signal 15
    ignored due to race condition" inside the interrupted trial's clean-up, with a traceback."""
    proc = subprocess.run([sys.executable, "-c", _TWO_SIGNALS_AT_ONCE], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).resolve().parent.parent)  # fmt: skip
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "cleaned up\nSIG_IGN: False False\n", "")


def test_joining_the_workers_after_an_interrupt_ignores_signals_with_a_handler_not_sig_ign():
    """The parent waiting for its --jobs workers to finish their interrupted trials ignores
    further signals (they must not leave the workers unjoined), and not by SIG_IGN, for the
    race above; its own handlers come back afterwards."""
    from harness.runner import Progress, _follow

    during = []

    class FinishedWorker:
        pid = None

        def is_alive(self):
            during.append([signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)])
            return False

    before = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]
    _follow([FinishedWorker()], [], Progress(total=1, epochs=1, quiet=True), publisher=None, interruptible=False)
    assert during and all(callable(h) and h not in before for handlers in during for h in handlers), during
    assert [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)] == before


class _InterruptingFit:
    """Ctrl-C (KeyboardInterrupt, as SIGINT raises it) in the calls listed; others 'train' instantly."""

    def __init__(self, interrupt_calls: set[int]):
        self.interrupt_calls, self.calls = interrupt_calls, 0

    def __call__(self, model, data, cfg, *, seed, on_epoch):
        self.calls += 1
        on_epoch(1, 0.5)
        if self.calls in self.interrupt_calls:
            raise KeyboardInterrupt
        return FitResult(val_acc=0.5, epochs_run=1, seconds=0.0)


def test_interrupted_trials_and_the_baseline_are_retried_once_on_resume(tmp_path, synthetic_root):
    from harness.config import DataConfig, PrunerConfig, SamplerConfig, StudyConfig, TrainConfig
    from harness.data import load_splits
    from harness.study import origin_of

    cfg = StudyConfig(name="r", path=tmp_path / "r.toml", search_space="seed", budget=20_000, train=TrainConfig(epochs=1),
                      data=DataConfig(val_size=100), sampler=SamplerConfig(name="random"),
                      pruner=PrunerConfig(name="none"))  # fmt: skip
    url = f"sqlite:///{tmp_path / 'r.db'}"

    def run(fit, n: int) -> None:  # one `harness run`: open (resume) the study, then optimize
        study = open_study(cfg, url)
        objective = Objective(cfg, lambda: load_splits(synthetic_root, val_size=100), device_label="cpu", fit_fn=fit)
        try:
            study.optimize(objective, n_trials=n, catch=TRAINING_FAILURES)
        except KeyboardInterrupt:
            pass

    run(_InterruptingFit({1}), 1)  # Ctrl-C during the baseline
    run(_InterruptingFit({2}), 10)  # resume: the baseline retry trains; the next trained trial is interrupted
    run(_InterruptingFit({1}), 2)  # resume: that trial's retry is interrupted too -> not retried again
    run(_InterruptingFit(set()), 2)
    trials = optuna.load_study(study_name="r", storage=url).get_trials()
    baselines = [t for t in trials if t.user_attrs.get("baseline")]
    assert [(t.number, t.state) for t in baselines] == [(0, TrialState.FAIL), (1, TrialState.COMPLETE)]
    assert origin_of(trials[1]) == "retry" and trials[1].user_attrs["retry_of"] == 0
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert all(t.user_attrs.get("interrupted") for t in failed)
    retries = [t for t in trials if origin_of(t) == "retry"]
    # every interrupted trial retried exactly once, with its own parameters; no retry of a retry
    assert sorted(t.system_attrs["failed_trial"] for t in retries) == sorted(
        t.number for t in failed if not t.system_attrs.get("retry_history"))
    for r in retries:
        assert r.params == trials[r.system_attrs["failed_trial"]].params
    assert any(t.system_attrs.get("retry_history") and t.state == TrialState.FAIL for t in trials)
    assert len(retries) == 2


def test_a_baseline_interrupted_again_and_again_is_retried_until_it_completes(tmp_path, synthetic_root):
    """Ctrl-C during the baseline, then during its retry, then during that retry's retry: each
    resumed run trains the baseline first again, so the study still gets its reference."""
    from harness.config import DataConfig, PrunerConfig, SamplerConfig, StudyConfig, TrainConfig
    from harness.data import load_splits

    cfg = StudyConfig(name="b", path=tmp_path / "b.toml", search_space="seed", budget=20_000, train=TrainConfig(epochs=1),
                      data=DataConfig(val_size=100), sampler=SamplerConfig(name="random"),
                      pruner=PrunerConfig(name="none"))  # fmt: skip
    url = f"sqlite:///{tmp_path / 'b.db'}"
    for interrupts in ({1}, {1}, {1}, set()):
        study = open_study(cfg, url)
        objective = Objective(cfg, lambda: load_splits(synthetic_root, val_size=100), device_label="cpu",
                              fit_fn=_InterruptingFit(interrupts))  # fmt: skip
        try:
            study.optimize(objective, n_trials=2, catch=TRAINING_FAILURES)
        except KeyboardInterrupt:
            pass
    trials = optuna.load_study(study_name="b", storage=url).get_trials()
    baselines = [(t.number, t.state, t.system_attrs.get("failed_trial")) for t in trials if t.user_attrs.get("baseline")]
    assert baselines == [(0, TrialState.FAIL, None), (1, TrialState.FAIL, 0), (2, TrialState.FAIL, 1),
                         (3, TrialState.COMPLETE, 2)]  # fmt: skip
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2  # then the run goes on with the search
    assert open_study(cfg, url) and len(optuna.load_study(study_name="b", storage=url).trials) == len(trials)  # done


def test_a_baseline_killed_again_and_again_is_retried_at_every_start(tmp_path, synthetic_root):
    """A baseline attempt that dies with no reason recorded (SIGKILL, a crash: what the heartbeat
    callback retries at most 3 times) is retried at each start as well, until one completes, or
    until BASELINE_KILLED_ATTEMPTS attempts have died (one that kills every run is given up)."""
    from harness.study import BASELINE_KILLED_ATTEMPTS
    from harness.config import DataConfig, PrunerConfig, SamplerConfig, StudyConfig, TrainConfig
    from harness.data import load_splits

    cfg = StudyConfig(name="k", path=tmp_path / "k.toml", search_space="seed", budget=20_000, train=TrainConfig(epochs=1),
                      data=DataConfig(val_size=100), sampler=SamplerConfig(name="random"),
                      pruner=PrunerConfig(name="none"))  # fmt: skip
    url = f"sqlite:///{tmp_path / 'k.db'}"
    for _ in range(4):  # four starts, each killed in the baseline: FAIL, no fail_reason
        study = open_study(cfg, url)
        trial = study.ask()
        assert trial.user_attrs.get("baseline")
        study.tell(trial, state=TrialState.FAIL)
    study = open_study(cfg, url)
    objective = Objective(cfg, lambda: load_splits(synthetic_root, val_size=100), device_label="cpu",
                          fit_fn=_InterruptingFit(set()))  # fmt: skip
    study.optimize(objective, n_trials=1, catch=TRAINING_FAILURES)
    trials = optuna.load_study(study_name="k", storage=url).get_trials()
    assert [(t.number, t.state) for t in trials] == [(n, TrialState.FAIL) for n in range(4)] + [(4, TrialState.COMPLETE)]
    assert all(t.user_attrs.get("baseline") for t in trials)

    url = f"sqlite:///{tmp_path / 'k2.db'}"  # every attempt killed: retried up to the cap, then not
    for _ in range(BASELINE_KILLED_ATTEMPTS):
        study = open_study(cfg, url)
        trial = study.ask()
        assert trial.user_attrs.get("baseline")
        study.tell(trial, state=TrialState.FAIL)
    study = open_study(cfg, url)
    trials = study.get_trials()
    assert len(trials) == BASELINE_KILLED_ATTEMPTS and all(t.state == TrialState.FAIL for t in trials)


# ---- injected failures: the study goes on ---------------------------------------------------


class _FailingFit:
    """Fails the second trained trial with the given exception; others 'train' instantly."""

    def __init__(self, exc: Exception):
        self.exc, self.calls = exc, 0

    def __call__(self, model, data, cfg, *, seed, on_epoch):
        self.calls += 1
        if self.calls == 2:
            raise self.exc
        on_epoch(1, 0.5)
        return FitResult(val_acc=0.5, epochs_run=1, seconds=0.0)


@pytest.mark.parametrize(
    "exc,reason",
    [(DivergedError("training loss became nan in epoch 1"), "DivergedError"),
     (__import__("torch").OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "OutOfMemoryError")],
)  # fmt: skip
def test_nan_or_oom_fails_one_trial_and_study_completes(tmp_path, synthetic_root, exc, reason):
    from harness.config import DataConfig, PrunerConfig, SamplerConfig, StudyConfig, TrainConfig
    from harness.data import load_splits

    cfg = StudyConfig(name="f", path=tmp_path / "f.toml", search_space="seed", budget=20_000, train=TrainConfig(epochs=1),
                      data=DataConfig(val_size=100), sampler=SamplerConfig(name="random"),
                      pruner=PrunerConfig(name="none"))  # fmt: skip
    study = open_study(cfg, f"sqlite:///{tmp_path / 'f.db'}")
    fit = _FailingFit(exc)
    objective = Objective(cfg, lambda: load_splits(synthetic_root, val_size=100), device_label="cpu", fit_fn=fit)
    study.optimize(objective, n_trials=8, catch=TRAINING_FAILURES)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(failed) == 1 and failed[0].user_attrs["fail_reason"].startswith(reason)
    assert len(study.trials) == 8 and summarize(study).counts["failed"] == 1
    assert fit.calls >= 3  # trials after the failure still trained


OOM_SPACE = """
from harness.spec import ArchSpec, BlockSpec, ConvSpec


def suggest(trial):
    # wide: 1,024 channels at 28x28, ~320 MB per activation at batch 100 with ~21k parameters
    width = 1024 if trial.suggest_categorical("wide", [False, True]) else 8
    return ArchSpec(blocks=(BlockSpec(convs=(ConvSpec(width),), pool=False),), head="gap")
"""

OOM_STUDY = """
[study]
name = "{name}"
search_space = "space.py:suggest"
budget = 50000
n_trials = {n}
[sampler]
name = "random"
[pruner]
name = "none"
[data]
val_size = 100
[train]
epochs = 1
batch_size = 100
{enqueue}
"""

# Runs `harness run` with the address space capped 200 MB above what the process already maps
# (after a warm-up run, so every lazy import is in): a real allocation of the CPU allocator
# fails, not a fake fit function.
OOM_DRIVER = """
import resource, sys
from harness.cli import main
study, warm, data = sys.argv[1:4]
assert main(["run", warm, "--data-dir", data, "--quiet", "--device", "cpu"]) == 0
vm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmSize:")) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + 200 * 2**20, resource.RLIM_INFINITY))
sys.exit(main(["run", study, "--data-dir", data, "--quiet", "--device", "cpu"]))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc and RLIMIT_AS")
def test_cpu_out_of_memory_fails_that_trial_and_the_study_goes_on(tmp_path, synthetic_root):
    (tmp_path / "space.py").write_text(OOM_SPACE)
    wide, narrow = "[[enqueue]]\nwide = true\n", "[[enqueue]]\nwide = false\n"
    (tmp_path / "warm.toml").write_text(OOM_STUDY.format(name="warm", n=2, enqueue=narrow))
    (tmp_path / "oom.toml").write_text(OOM_STUDY.format(name="oom", n=3, enqueue=wide + narrow))
    (tmp_path / "driver.py").write_text(OOM_DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "oom.toml"),
                           str(tmp_path / "warm.toml"), str(synthetic_root)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=Path(__file__).parent.parent)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    trials = optuna.load_study(study_name="oom", storage=f"sqlite:///{tmp_path / 'oom.db'}").trials
    by_wide = {t.params.get("wide"): t for t in trials if not t.user_attrs.get("baseline")}
    failed = by_wide[True]
    assert failed.state == TrialState.FAIL
    assert failed.user_attrs["fail_reason"].startswith("CpuOutOfMemoryError: CPU out of memory: ")
    assert "can't allocate memory" in failed.user_attrs["fail_reason"]
    # the study went on: the narrow trial after it trained and completed
    assert by_wide[False].state == TrialState.COMPLETE and by_wide[False].number > failed.number
    assert not any(t.user_attrs.get("retry_of") == failed.number for t in trials)  # a result, not retried


# ---- PostgreSQL ---------------------------------------------------------------------------


def _pg_bin() -> Path | None:
    base = Path("/usr/lib/postgresql")
    versions = sorted(base.glob("*/bin/initdb")) if base.is_dir() else []
    return versions[-1].parent if versions else None


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL server on 127.0.0.1 (initdb + pg_ctl in a temp dir)."""
    bindir = _pg_bin()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed (.ci/run installs the Debian package)")
        pytest.skip("PostgreSQL is not installed")
    pytest.importorskip("psycopg2")
    import tempfile

    # Not under pytest's tmp dir: that is private to root, and the server runs as postgres.
    base = Path(tempfile.mkdtemp(prefix="harness-pg-"))
    data = base / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root: use the package's postgres user
        as_user = ["runuser", "-u", "postgres", "--"]
        os.chmod(base, 0o777)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = lambda *a: subprocess.run([*as_user, *a], check=True, capture_output=True, text=True)  # noqa: E731
    run(str(bindir / "initdb"), "-D", str(data), "-U", "harness", "--auth=trust", "-E", "UTF8")
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w", "-o",
        f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c max_connections=100", "start")  # fmt: skip
    try:
        yield f"postgresql+psycopg2://harness@127.0.0.1:{port}/postgres"
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_eight_postgres_workers_record_every_trial_once(tmp_path, synthetic_root, postgres_url):
    study = _study_file(tmp_path, "pg8")
    procs, logs = _run_workers(8, study, postgres_url, synthetic_root, trials=2, timeout=900)
    assert all(p.returncode == 0 for p in procs), logs
    _check_exactly_once(postgres_url, "pg8", 16, logs)


def test_read_only_postgres_storage_refuses_writes(postgres_url):
    """The read-only commands' PostgreSQL sessions are read-only at the server: a write through
    them (what optuna-dashboard's delete button sends) fails and leaves the study as it was."""
    from harness.storage import make_storage

    study = optuna.create_study(study_name="pg-ro", storage=postgres_url)
    study.set_user_attr("kept", 1)
    sep = "&" if "?" in postgres_url else "?"  # the URL's own libpq options are kept, not replaced
    storage = make_storage(f"{postgres_url}{sep}options=-csearch_path%3Dpublic", read_only=True)
    try:
        with storage.engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW search_path").scalar() == "public"
        read = optuna.load_study(study_name="pg-ro", storage=storage)
        assert read.user_attrs == {"kept": 1}
        for write in (lambda: read.set_user_attr("x", 2), lambda: storage.delete_study(read._study_id)):
            with pytest.raises(Exception) as refused:
                write()
            assert "read-only transaction" in f"{refused.value} {refused.value.__cause__}"
    finally:
        storage.engine.dispose()
    assert optuna.load_study(study_name="pg-ro", storage=postgres_url).user_attrs == {"kept": 1}


def test_read_only_sqlite_storage_refuses_writes(tmp_path):
    """The read-only commands' SQLite connections are read-only at the file (``mode=ro``): a
    write through them fails and the database stays byte for byte as it was."""
    from harness.storage import make_storage

    db = tmp_path / "ro.db"
    study = optuna.create_study(study_name="ro", storage=f"sqlite:///{db}")
    study.set_user_attr("kept", 1)
    del study
    before = db.read_bytes()
    storage = make_storage(f"sqlite:///{db}", read_only=True)
    try:
        read = optuna.load_study(study_name="ro", storage=storage)
        assert read.user_attrs == {"kept": 1}
        for write in (lambda: read.set_user_attr("x", 2), lambda: storage.delete_study(read._study_id)):
            with pytest.raises(Exception) as refused:
                write()
            assert "readonly" in f"{refused.value} {refused.value.__cause__}".replace("read-only", "readonly")
    finally:
        storage.engine.dispose()
    assert db.read_bytes() == before


def test_unreachable_postgres_is_a_one_line_error(tmp_path, capsys, synthetic_root):
    pytest.importorskip("psycopg2")
    from harness.cli import main

    study = _study_file(tmp_path, "down")
    url = "postgresql+psycopg2://nobody@127.0.0.1:9/none"  # port 9 (discard): nothing listens
    assert main(["run", str(study), "--storage", url, "--data-dir", str(synthetic_root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "127.0.0.1" in err[0] and "Traceback" not in err[0]


def test_storage_check_waits_for_another_process_creating_the_tables(tmp_path):
    """SQLite commits each of Optuna's CREATE TABLEs alone, so a worker that checks the file
    while another creates it (under the study lock) sees some of Optuna's tables: it must wait
    for the lock and check again, not refuse the file as someone else's database."""
    import threading

    from optuna.storages._rdb import models

    from harness.errors import StorageError
    from harness.storage import check_optuna_sqlite

    path = tmp_path / "s.db"
    url = f"sqlite:///{path}"
    engine = sqlalchemy.create_engine(url)
    for name in ("studies", "study_directions"):  # the first tables, as a creator leaves them mid-way
        models.BaseModel.metadata.tables[name].create(engine)
    with pytest.raises(StorageError, match="other tables"):  # no lock file: not a harness creation
        check_optuna_sqlite(url, for_writing=True)

    lock = open(path.with_name(path.name + ".lock"), "a+")
    fcntl.flock(lock, fcntl.LOCK_EX)  # the creator holds the study lock ...

    def finish_creation():
        time.sleep(0.5)
        optuna.storages.RDBStorage(url)  # ... creates the remaining tables, then lets go
        fcntl.flock(lock, fcntl.LOCK_UN)

    creator = threading.Thread(target=finish_creation)
    creator.start()
    try:
        check_optuna_sqlite(url, for_writing=True)  # waits for the lock, then sees a whole storage
        check_optuna_sqlite(url, for_writing=False)
    finally:
        creator.join()
        lock.close()
        engine.dispose()


def _finished(url: str, name: str) -> list:
    return [t for t in optuna.load_study(study_name=name, storage=url).get_trials() if t.state in
            (TrialState.COMPLETE, TrialState.PRUNED)]  # fmt: skip


def test_n_trials_is_the_studys_total_so_a_resumed_run_runs_only_what_is_missing(tmp_path, synthetic_root):
    """study.n_trials = 4: a run stopped after 1 (here --trials 1), plus an interrupted trial (FAIL,
    not counted: retried), resumes with exactly the 3 missing; then a run has nothing to do and
    writes nothing (the database byte-identical); --trials N still runs N more."""
    study = _study_file(tmp_path, "t")
    study.write_text(study.read_text().replace("budget = 20000", "budget = 20000\nn_trials = 4"))
    url = f"sqlite:///{tmp_path / 't.db'}"
    args = ["--storage", url, "--data-dir", str(synthetic_root), "--device", "cpu", "--quiet"]
    first = subprocess.run(_cmd("run", str(study), "--trials", "1", *args), capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    crashed = optuna.load_study(study_name="t", storage=url)
    crashed.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, params={"dropout": 0.1},
                                                distributions={"dropout": optuna.distributions.FloatDistribution(0.0, 0.5, step=0.05)}))  # fmt: skip
    assert len(_finished(url, "t")) == 1
    resume = subprocess.run(_cmd("run", str(study), *args), capture_output=True, text=True, timeout=600)
    assert resume.returncode == 0, resume.stderr
    assert len(_finished(url, "t")) == 4  # 3 more, not n_trials more
    status = subprocess.run(_cmd("status", str(study), "--storage", url), capture_output=True, text=True, timeout=120)
    assert "1 failed; 4 of study.n_trials = 4 finished" in status.stdout, status.stdout  # the FAIL is not counted
    before = (tmp_path / "t.db").read_bytes()
    full = subprocess.run(_cmd("run", str(study), *args), capture_output=True, text=True, timeout=600)
    assert full.returncode == 0, full.stderr
    assert "study 't' holds 4 finished trials, study.n_trials = 4: nothing to run" in full.stdout
    assert "trials: 4 complete" in full.stdout and "; 4 of study.n_trials = 4 finished" in full.stdout  # the summary
    assert (tmp_path / "t.db").read_bytes() == before and not (tmp_path / "t.db-journal").exists()
    for extra in (["--trials", "0"], ["--timeout", "0"], ["--jobs", "2"]):  # nothing to run either: nothing written
        nothing = subprocess.run(_cmd("run", str(study), *extra, *args), capture_output=True, text=True, timeout=600)
        assert nothing.returncode == 0 and "nothing to run" in nothing.stdout, (extra, nothing.stdout, nothing.stderr)
        assert (tmp_path / "t.db").read_bytes() == before, extra
    # a full study needs no data to say so (data moved away, or another machine's data dir)
    no_data = subprocess.run(_cmd("run", str(study), *args, "--data-dir", str(tmp_path / "no-data")),
                             capture_output=True, text=True, timeout=600)  # fmt: skip
    assert no_data.returncode == 0 and "nothing to run" in no_data.stdout, no_data.stderr
    assert (tmp_path / "t.db").read_bytes() == before
    more = subprocess.run(_cmd("run", str(study), "--trials", "2", *args), capture_output=True, text=True, timeout=600)
    assert more.returncode == 0, more.stderr
    assert len(_finished(url, "t")) == 6
    # A new study with --trials 0: nothing created (no database, no artifact folder, not even
    # the results_dir the database would go in)
    (tmp_path / "fresh").mkdir()
    fresh = _study_file(tmp_path / "fresh", "f")
    fresh.write_text(fresh.read_text().replace("budget = 20000", 'budget = 20000\nresults_dir = "out/db"'))
    made = subprocess.run(_cmd("run", str(fresh), "--trials", "0", "--data-dir", str(synthetic_root), "--device", "cpu"),
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert made.returncode == 0 and "no study 'f'" in made.stdout and "none created" in made.stdout, made.stdout
    assert sorted(p.name for p in (tmp_path / "fresh").iterdir()) == ["f.toml"]
    # --timeout 0 on a new study of n_trials = 3: the timeout is the reason, not "None finished trials"
    fresh.write_text(fresh.read_text().replace("budget = 20000", "budget = 20000\nn_trials = 3"))
    made = subprocess.run(_cmd("run", str(fresh), "--timeout", "0", "--data-dir", str(synthetic_root), "--device", "cpu"),
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert made.returncode == 0 and made.stdout.startswith("a timeout of 0 s: nothing to run"), made.stdout
    assert "None" not in made.stdout and sorted(p.name for p in (tmp_path / "fresh").iterdir()) == ["f.toml"]


def test_two_runs_at_once_stop_at_the_studys_n_trials(tmp_path, synthetic_root):
    """Two processes started together each plan the 6 trials missing from n_trials = 7; they stop
    when the study holds 7 finished trials, each overshooting by its one trial in flight at most (9
    or more would mean each ran its own 6)."""
    study = _study_file(tmp_path, "c")
    study.write_text(study.read_text().replace("budget = 20000", "budget = 20000\nn_trials = 7"))
    url = f"sqlite:///{tmp_path / 'c.db'}"
    args = ["--storage", url, "--data-dir", str(synthetic_root), "--device", "cpu", "--quiet"]
    first = subprocess.run(_cmd("run", str(study), "--trials", "1", *args), capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr  # the study exists: the two below only join it
    procs = [subprocess.Popen(_cmd("run", str(study), *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    assert 7 <= len(_finished(url, "c")) <= 8


def test_a_killed_retry_is_retried_again_as_the_heartbeat_would(tmp_path):
    """Optuna's stale-trial check fails a dead trial, then enqueues its retry in a callback; a
    stop that ends the callback's wait for the study lock, or a kill, comes between the two. A
    dead retry left so is retried by the next run's start, as the callback would have, up to
    STALE_RETRIES retries in all; an interrupted retry is not retried again (the run that
    stopped it said so)."""
    from harness.storage import STALE_RETRIES, make_storage
    from harness.study import retry_interrupted

    study = optuna.create_study(study_name="k", storage=make_storage(f"sqlite:///{tmp_path / 'k.db'}", 1, 2))
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    study.add_trial(optuna.create_trial(state=TrialState.FAIL, params={"x": 0.5}, distributions=dist))  # 0: killed
    assert retry_interrupted(study) == [0]
    chain = [0]
    for _ in range(STALE_RETRIES):  # each retry dies too, its own retry not enqueued by the callback
        trial = study.ask()  # pops the retry
        frozen = study._storage.get_trial(trial._trial_id)
        assert frozen.params == {"x": 0.5} and frozen.system_attrs["retry_history"] == chain
        study.tell(trial, state=TrialState.FAIL)
        chain.append(trial.number)
        retried = retry_interrupted(study)
        assert retried == ([trial.number] if len(chain) <= STALE_RETRIES else []), (retried, chain)
    assert len(study.trials) == 1 + STALE_RETRIES  # the first attempt and its 3 retries, no more
    # an interrupted retry is not retried again
    study.add_trial(optuna.create_trial(state=TrialState.FAIL, params={"x": 0.1}, distributions=dist,
                                        user_attrs={"interrupted": True, "fail_reason": "interrupted"},
                                        system_attrs={"failed_trial": 0, "retry_history": [0]}))  # fmt: skip
    assert retry_interrupted(study) == []


def test_a_stale_trial_failed_meanwhile_is_retried_once_whoever_gets_there_first(tmp_path):
    """Optuna marks a stale trial FAIL, then calls the heartbeat callback. A run that starts in
    between retries the same trial under the study lock (retry_interrupted). The callback then
    finds that retry and adds none; and it waits for the lock while another process holds it."""
    import threading

    from harness.storage import make_storage, study_lock, waiting_for_study_lock
    from harness.study import retry_interrupted

    url = f"sqlite:///{tmp_path / 'r.db'}"
    storage = make_storage(url, heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(study_name="r", storage=storage)
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    number = trial.number
    study.tell(trial, state=TrialState.FAIL)  # what fail_stale_trials writes first: FAIL, no reason
    callback = storage.heartbeat_stale_trial_callback  # what it calls next

    def retries() -> list:
        return [t for t in study.get_trials() if t.system_attrs.get("failed_trial") == number]

    # the callback waits while another holder (a thread here: flock is per open file) has the lock
    frozen = study.get_trials()[number]
    with study_lock(url, "r"):
        waiter = threading.Thread(target=callback, args=(study, frozen))
        waiter.start()
        waiter.join(timeout=1.0)
        assert waiter.is_alive() and retries() == []  # blocked on the lock, nothing enqueued
        assert not waiting_for_study_lock()  # a thread's wait: a stop must not be raised in the main thread for it
        assert retry_interrupted(study) == [number]  # the starting run retries it first
    waiter.join(timeout=60)
    assert not waiter.is_alive()
    (retry,) = retries()  # one retry, not two
    assert retry.params == frozen.params and retry.state == TrialState.WAITING
    callback(study, frozen)  # called again: still one
    assert retry_interrupted(study) == [] and len(retries()) == 1


_STOP_IN_A_GC_CALLBACK = """
import os
import signal
import weakref

import optuna
from harness.spec import ArchSpec, BlockSpec, ConvSpec


class _Garbage:
    pass


def suggest(trial):
    w = trial.suggest_int("w", 4, 8, step=4)
    if isinstance(trial, optuna.Trial) and trial.number == 1:
        # a Ctrl-C that lands while the garbage collector runs a callback: the handler's exception is lost there
        garbage = _Garbage()
        weakref.finalize(garbage, os.kill, os.getpid(), signal.SIGINT)
        del garbage
    return ArchSpec(blocks=(BlockSpec(convs=(ConvSpec(w),)),), head="gap")
"""


def test_a_stop_lost_inside_a_garbage_collector_callback_still_stops_the_run(tmp_path, synthetic_root):
    """The stop handler's KeyboardInterrupt raised inside a weakref callback is swallowed by
    Python ("Exception ignored"), and the handler ignores every later signal: the run trained
    all its trials and exited 0, and no Ctrl-C or SIGTERM could stop it. Now the trial it
    landed in stops at its next epoch, marked interrupted, the run exits 130 and says so once."""
    (tmp_path / "space.py").write_text(_STOP_IN_A_GC_CALLBACK)
    study = tmp_path / "lost.toml"
    study.write_text('[study]\nname = "lost"\nsearch_space = "space.py:suggest"\nbudget = 20000\nn_trials = 4\n'
                     'seed = 3\n[sampler]\nname = "random"\n[pruner]\nname = "none"\n[data]\nval_size = 100\n'
                     '[train]\nepochs = 3\nbatch_size = 50\n')  # fmt: skip
    done = subprocess.run(_cmd("run", str(study), "--quiet", "--data-dir", str(synthetic_root), "--device", "cpu"),
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 130, (done.returncode, done.stderr)
    assert done.stderr.splitlines() == ["interrupted: a trial still running is marked FAIL (interrupted) and retried "
                                        "when the study resumes; run again to resume"], done.stderr  # fmt: skip
    trials = optuna.load_study(study_name="lost", storage=f"sqlite:///{tmp_path / 'lost.db'}").get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL]
    assert trials[1].user_attrs["interrupted"] is True and "epochs_run" not in trials[1].user_attrs


def test_a_stop_lost_after_a_trials_last_epoch_starts_no_further_trial(tmp_path, synthetic_root, monkeypatch, capsys):
    """A stop lost inside a garbage-collector callback after the baseline's last epoch (no epoch
    check left in that trial): the next trial is not started, the run ends as stopped (exit
    130). It ran every remaining trial and exited 0."""
    import weakref

    import harness.train
    from harness.cli import main

    real_fit = harness.train.fit

    class Garbage:
        pass

    def fit_then_stop_lost(*args, **kwargs):
        result = real_fit(*args, **kwargs)
        garbage = Garbage()
        weakref.finalize(garbage, os.kill, os.getpid(), signal.SIGINT)
        del garbage  # the handler runs inside the finalizer: its KeyboardInterrupt is "ignored"
        return result

    monkeypatch.setattr(harness.train, "fit", fit_then_stop_lost)
    study = _study_file(tmp_path, "after")
    url = f"sqlite:///{tmp_path / 'after.db'}"
    assert main(["run", str(study), "--trials", "3", "--storage", url, "--quiet", "--data-dir", str(synthetic_root),
                 "--device", "cpu"]) == 130  # fmt: skip
    trials = optuna.load_study(study_name="after", storage=url).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] and trials[0].user_attrs["baseline"]
    assert "interrupted" in capsys.readouterr().err
