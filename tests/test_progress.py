"""The run's progress view: trained trials and rejections counted apart, an ETA from trained trials."""

from __future__ import annotations

import re

import pytest

from harness.runner import Progress, ProgressEvent


def _done(trial: int, outcome: str, seconds: float, tag: str = "") -> ProgressEvent:
    return ProgressEvent(tag, trial, seconds=seconds, outcome=outcome, line=f"{tag}trial {trial}: {outcome}")


def test_counts_trained_and_rejected_apart_and_estimates_from_trained_time(capsys):
    p = Progress(total=10, epochs=4, quiet=False, workers=1)
    p.bar = None  # lines only: the status is checked directly
    for i, (outcome, secs) in enumerate([("over_budget", 0.01), ("complete", 10.0), ("invalid", 0.0), ("pruned", 10.0)]):
        p.show(_done(i, outcome, secs))
    assert p.status().startswith("trained 2, rejected 2")
    # 6 trials left, half of the proposals so far trained, 10 s each: 30 s
    assert p.eta_seconds() == pytest.approx(30.0)
    p.show(ProgressEvent("", 4, epoch=1, val_acc=0.9, seconds=3.0))  # a running trial: 3 s per epoch
    assert "trial 4 epoch 1/4 val 0.9000, ~9 s left" in p.status()
    # weight averaging: the averaged score, and the trained weights' one the pruner compares
    p.show(ProgressEvent("", 4, epoch=2, val_acc=0.5, seconds=6.0, trained_val=0.97))
    assert "trial 4 epoch 2/4 val 0.5000 (averaged; trained weights 0.9700), ~6 s left" in p.status()
    out = capsys.readouterr().out.splitlines()
    assert out == ["trial 0: over_budget", "trial 1: complete", "trial 2: invalid", "trial 3: pruned"]


def test_eta_before_any_trained_trial_uses_a_running_trials_epochs_and_the_timeout():
    p = Progress(total=5, epochs=10, quiet=True, workers=2)
    assert p.eta_seconds() is None  # nothing to go on yet
    p.show(ProgressEvent("[w0] ", 0, epoch=2, val_acc=0.5, seconds=20.0))  # 10 s/epoch -> 100 s per trial
    assert p.eta_seconds() == pytest.approx((4 * 100 + 80) / 2)  # 4 to start, and the running one's 80 s left
    p.show(_done(1, "duplicate", 0.0, "[w1] "))
    assert "repeats 1" in p.status()
    capped = Progress(total=None, epochs=10, quiet=True, timeout=60.0)
    assert 59.0 < capped.eta_seconds() <= 60.0  # no trial count: the timeout bounds it
    assert re.search(r"ETA ~(59|60) s$", capped.status())


def test_off_a_terminal_the_bar_is_one_plain_line_per_finished_trial(capsys, monkeypatch):
    """A log file or a pipe (nohup, a scheduler) gets the bar's text on stderr once per
    finished trial, and at an epoch at most once a minute (a CPU trial can take an hour): no
    redraws, no carriage returns."""
    import harness.runner

    clock = [1000.0]
    monkeypatch.setattr(harness.runner.time, "monotonic", lambda: clock[0])
    p = Progress(total=3, epochs=2, quiet=False)  # capsys's stderr is no terminal
    assert p.bar is None and p.plain
    p.show(ProgressEvent("", 0, epoch=1, val_acc=0.5, seconds=1.0))
    clock[0] += 59.0
    p.show(ProgressEvent("", 0, epoch=2, val_acc=0.6, seconds=2.0))  # within the minute: no line
    clock[0] += 1.0
    p.show(ProgressEvent("", 0, epoch=2, val_acc=0.6, seconds=2.0))  # a minute on: a line
    p.show(_done(0, "complete", 2.0))
    p.show(_done(1, "over_budget", 0.0))
    p.close()
    out, err = capsys.readouterr()
    assert out.splitlines() == ["trial 0: complete", "trial 1: over_budget"]
    assert "\r" not in err
    assert err.splitlines() == [
        "0/3 trials, trained 0, rejected 0 | trial 0 epoch 1/2 val 0.5000, ~1 s left | ETA ~5 s",
        "0/3 trials, trained 0, rejected 0 | trial 0 epoch 2/2 val 0.6000, ~0 s left | ETA ~4 s",
        "1/3 trials, trained 1, rejected 0 | ETA ~4 s",
        "2/3 trials, trained 1, rejected 1 | ETA ~1 s",
    ]
    endless = Progress(total=None, epochs=2, quiet=False)  # n_trials = 0: no total to show
    endless.show(_done(0, "complete", 2.0))
    assert capsys.readouterr().err == "1 trial, trained 1, rejected 0\n"
    endless.show(_done(1, "over_budget", 0.0))
    assert capsys.readouterr().err == "2 trials, trained 1, rejected 1\n"
    assert Progress(total=3, epochs=2, quiet=True).plain is False  # --quiet: no bar of either kind


def test_on_a_terminal_the_bar_is_drawn_live(monkeypatch):
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    p = Progress(total=3, epochs=2, quiet=False)
    assert p.bar is not None and not p.plain
    p.show(ProgressEvent("", 0, epoch=1, val_acc=0.5, seconds=1.0))
    p.close()
    assert "\r" in terminal.getvalue() and "trial 0 epoch 1/2 val 0.5000" in terminal.getvalue()
    endless = Progress(total=None, epochs=2, quiet=False)  # n_trials = 0: the count in words
    assert "0 trials, trained 0, rejected 0" in terminal.getvalue()  # from the start, not a blank line
    endless.show(_done(0, "complete", 2.0))
    endless.close()
    assert "1 trial, trained 1, rejected 0" in terminal.getvalue() and "1 trials" not in terminal.getvalue()


def test_eta_counts_what_the_running_trial_has_left_and_ends_without_one():
    """A trial at epoch 27 of 30 with 7 s left, the last of the run: ~7 s, not a whole trial's
    time (helper-39 saw 73 s); once every trial finished, no ETA at all (not "~0 s")."""
    p = Progress(total=1, epochs=30, quiet=True)
    p.show(ProgressEvent("", 0, epoch=27, val_acc=0.9, seconds=63.0))  # 63 s / 27 epochs x the 3 left = 7 s
    assert p.eta_seconds() == pytest.approx(7.0)
    p.show(_done(0, "complete", 70.0))
    assert "ETA" not in p.status()


def test_worker_progress_goes_to_the_queue_not_the_screen(capsys):
    sent = []

    class Queue:
        put = sent.append

    p = Progress(total=3, epochs=2, quiet=False, tag="[w1] ", forward=Queue())
    assert p.bar is None
    p.note("[w1] study 's' on cpu")
    p.show = lambda e: pytest.fail("a worker never draws")  # noqa: E731
    p._emit(_done(0, "complete", 1.0, "[w1] "))
    assert [e.outcome for e in sent] == ["note", "complete"] and capsys.readouterr() == ("", "")


def test_cpu_estimate_is_timed_here_and_points_to_the_cpu_sized_study(tmp_path, synthetic_root):
    from harness.config import load_study_config
    from harness.runner import cpu_time_estimate, plan_run

    body = f'[study]\nname = "big"\nbudget = 20000\nn_trials = {{n}}\n[data]\ndir = "{synthetic_root}"\nval_size = 100\n' \
           '[train]\nepochs = 15\nbatch_size = 50\n'  # fmt: skip
    (tmp_path / "big.toml").write_text(body.format(n=100_000))
    (tmp_path / "big-cpu.toml").write_text(body.format(n=2))
    plan = plan_run(str(tmp_path / "big.toml"), device="cpu")
    text = cpu_time_estimate(load_study_config(plan.study_file), plan)
    assert text.startswith("estimate on this CPU: ~") and "per 15-epoch trial" in text and "on 500 images" in text
    assert "100,000 trials: ~" in text and "of training (rejections and pruning make it less; start-up" in text and f"For a CPU-sized search: harness run {tmp_path / 'big-cpu.toml'}" in text
    small = plan_run(str(tmp_path / "big-cpu.toml"), device="cpu")
    assert "CPU-sized" not in cpu_time_estimate(load_study_config(small.study_file), small)
    assert not (tmp_path / "big.db").exists()  # planning and estimating create no study


def test_the_step_time_behind_the_estimate_is_not_set_by_a_moments_load(monkeypatch):
    """Another process's burst during one timed epoch (helper-42 saw "~5 min" for a 31 s trial):
    the step time is the fastest timed epoch's, not the slowed one's."""
    import dataclasses

    import torch

    import harness.train
    from harness.config import TrainConfig
    from search_spaces import baseline_spec

    real_fit, timed = harness.train.fit, []

    def fit_slowed_once(model, data, cfg, **kwargs):
        result = real_fit(model, data, cfg, **kwargs)
        if len(data.train_x) == 2 * cfg.batch_size:  # the warm-up epoch
            return result
        timed.append(result.seconds * (100 if not timed else 1))  # the first timed epoch ran under load
        return dataclasses.replace(result, seconds=timed[-1])

    monkeypatch.setattr(harness.train, "fit", fit_slowed_once)
    step = harness.train.seconds_per_step(baseline_spec(), TrainConfig(batch_size=32), torch.device("cpu"), steps=4)
    assert len(timed) >= 2 and step == pytest.approx(min(timed) / 4) and step < timed[0] / 4 / 10, (step, timed)


def test_cpu_estimate_counts_every_seed_of_a_repeated_candidate(tmp_path, synthetic_root, monkeypatch):
    """study.repeats = 3 trains each candidate three times: the estimate per trial is three
    times one run's (the step time pinned here, so the arithmetic is what is checked)."""
    import harness.train
    from harness.config import load_study_config
    from harness.runner import cpu_time_estimate, plan_run

    monkeypatch.setattr(harness.train, "seconds_per_step", lambda *a, **k: 0.4)  # 10 steps x 15 epochs: 60 s a run
    for repeats, said in ((1, "~60 s per 15-epoch trial of"), (3, "~3 min per 15-epoch trial with 3 seeds of")):
        (tmp_path / "r.toml").write_text(f'[study]\nname = "r"\nrepeats = {repeats}\nn_trials = 2\n[data]\n'
                                         f'dir = "{synthetic_root}"\nval_size = 100\n[train]\nepochs = 15\nbatch_size = 50\n')  # fmt: skip
        plan = plan_run(str(tmp_path / "r.toml"), device="cpu")
        assert said in cpu_time_estimate(load_study_config(plan.study_file), plan)


def test_cpu_estimate_times_the_batch_training_uses_not_a_batch_larger_than_the_training_set(
        tmp_path, synthetic_root, monkeypatch):  # fmt: skip
    """train.batch_size over the training images: training takes one batch of all of them per
    epoch, and the estimate times that batch (it built 100,000-image batches of random images
    and was killed for memory, 24 GB, before the run printed a line); a batch over
    ESTIMATE_BATCH_CAP is timed at the cap and scaled per image."""
    import harness.runner
    import harness.train
    from harness.config import load_study_config
    from harness.runner import cpu_time_estimate, plan_run

    timed = []
    monkeypatch.setattr(harness.train, "seconds_per_step", lambda spec, cfg, *a, **k: timed.append(cfg.batch_size) or 0.4)
    (tmp_path / "b.toml").write_text(f'[study]\nname = "b"\nn_trials = 2\n[data]\ndir = "{synthetic_root}"\n'
                                     'val_size = 100\n[train]\nepochs = 15\nbatch_size = 100000\n')  # fmt: skip
    plan = plan_run(str(tmp_path / "b.toml"), device="cpu")
    text = cpu_time_estimate(load_study_config(plan.study_file), plan)
    assert timed == [500], timed  # the 500 training images: one step an epoch
    assert "~6 s per 15-epoch trial of the 500-image-batch baseline on 500 images" in text, text
    # a batch over the cap is timed at the cap and counted per image (5 times a 100-image step)
    monkeypatch.setattr(harness.runner, "ESTIMATE_BATCH_CAP", 100)
    text = cpu_time_estimate(load_study_config(plan.study_file), plan)
    assert timed == [500, 100], timed
    assert "~30 s per 15-epoch trial of the 500-image-batch baseline on 500 images" in text, text


def test_cpu_estimate_with_jobs_is_timed_with_a_workers_share_of_the_cores(tmp_path, synthetic_root, monkeypatch):
    """--jobs K on a CPU: each worker trains with cores // K threads, so the estimate times a
    step with that many (helper-39: timed with all of them, then divided by K, it came out
    several times too low)."""
    import os

    import harness.train
    from harness.config import load_study_config
    from harness.runner import cpu_time_estimate, plan_run

    timed_with = []
    monkeypatch.setattr(harness.train, "seconds_per_step", lambda *a, threads=0, **k: timed_with.append(threads) or 0.4)
    monkeypatch.setattr(os, "cpu_count", lambda: 12)
    (tmp_path / "j.toml").write_text(f'[study]\nname = "j"\nn_trials = 12\n[data]\ndir = "{synthetic_root}"\n'
                                     'val_size = 100\n[train]\nepochs = 15\nbatch_size = 50\n')  # fmt: skip
    for jobs in (3, 4):
        plan = plan_run(str(tmp_path / "j.toml"), device="cpu", jobs=jobs)
        cpu_time_estimate(load_study_config(plan.study_file), plan)
    assert timed_with == [4, 3]
    # 2 trials start 2 of 3 or 4 workers, which share the cores between them (6 threads each)
    (tmp_path / "j.toml").write_text((tmp_path / "j.toml").read_text().replace("n_trials = 12", "n_trials = 2"))
    said = []
    for jobs in (3, 4):
        plan = plan_run(str(tmp_path / "j.toml"), device="cpu", jobs=jobs)
        said.append(cpu_time_estimate(load_study_config(plan.study_file), plan))
    assert timed_with[2:] == [6, 6]
    # 60 s a trial: 2 trials on 3 or 4 workers take one trial's time, not 2/3 or 2/4 of it
    assert all("2 trials: ~60 s of training" in text for text in said), said
    (tmp_path / "j.toml").write_text((tmp_path / "j.toml").read_text().replace("n_trials = 2", "n_trials = 5"))
    plan = plan_run(str(tmp_path / "j.toml"), device="cpu", jobs=2)
    assert "5 trials: ~3 min of training" in cpu_time_estimate(load_study_config(plan.study_file), plan)  # 3 rounds


def test_a_trials_line_says_why_it_has_no_result_in_the_words_status_and_export_use(capsys):
    """The run's per-trial line for a rejection, a repeat proposal and a pruned trial is
    study.outcome_text's, the wording of `status` and `export`: one outcome, one wording."""
    import optuna

    from harness.study import outcome_text

    p = Progress(total=3, epochs=4, quiet=False)
    p.bar = None
    trials = [
        optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, user_attrs={
            "rejected": "over_budget", "reject_reason": "46,712 parameters > budget 20,000", "trainable_params": 46_712}),
        optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, user_attrs={"duplicate_of": 0}),
        optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, user_attrs={"epochs_run": 2, "trainable_params": 9_000}),
    ]  # fmt: skip
    for number, t in enumerate(trials):
        t.number = number
        p.trial_done(None, t)
    assert capsys.readouterr().out.splitlines() == [
        "trial 0: rejected before training (46,712 parameters > budget 20,000)",
        "trial 1: a repeat of trial 0, not trained again",
        "trial 2: pruned after epoch 2 (9,000 params)",
    ]
    assert [outcome_text(t) for t in trials[1:]] == ["a repeat of trial 0, not trained again", "pruned after epoch 2"]


def test_a_retrys_line_names_the_trial_it_retries(capsys):
    import optuna

    p = Progress(total=1, epochs=4, quiet=False)
    p.bar = None
    t = optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, user_attrs={
        "origin": "retry", "retry_of": 3, "epochs_run": 2, "trainable_params": 9_000})  # fmt: skip
    t.number = 7
    p.trial_done(None, t)
    assert capsys.readouterr().out == "trial 7 (retry of trial 3): pruned after epoch 2 (9,000 params)\n"
