"""benchmarks/pipeline_steps.sh: resumable steps whose recorded seconds survive an interrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS_SH = ROOT / "benchmarks" / "pipeline_steps.sh"


def _script(steps: Path, body: str) -> list[str]:
    return ["bash", "-c", f'set -euo pipefail; steps={steps}; source {STEPS_SH}; {body}']


def _rows(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()] if path.exists() else []


# Every run has a timeout: a ticker that is never stopped makes `step` wait for it forever.


def _wait_for(cond, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_killed_run_seconds_are_added_when_the_step_finishes(tmp_path):
    steps = tmp_path / "steps.tsv"
    partial = Path(f"{steps}.partial")
    env = dict(os.environ, STEP_TICK="1")
    # First run: killed (SIGKILL, as a session's end would) while the step runs.
    proc = subprocess.Popen(_script(steps, "step work sleep 60"), env=env, start_new_session=True)
    try:
        _wait_for(lambda: any(int(r[2]) >= 3 for r in _rows(partial)))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert [r for r in _rows(steps) if r[0] == "work"] == []  # unfinished: not recorded as done
    first_run = max(int(r[2]) for r in _rows(partial))
    assert {r[0] for r in _rows(partial)} == {"work"} and len({r[1] for r in _rows(partial)}) == 1

    # Second run finishes: its own seconds (ticked too, not to be counted twice) plus the first
    # run's last tick.
    t0 = time.monotonic()
    out = subprocess.run(_script(steps, "step work sleep 4.5"), env=env, capture_output=True, text=True, timeout=60)
    second_run = time.monotonic() - t0
    assert out.returncode == 0, out.stderr
    assert len({r[1] for r in _rows(partial)}) == 2  # the second run ticked as well
    (row,) = [r for r in _rows(steps) if r[0] == "work"]
    assert first_run + 4 <= int(row[1]) <= first_run + second_run + 1  # whole seconds: +1

    # A third run skips it and records nothing.
    out = subprocess.run(_script(steps, "step work false"), env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "already done, skipped" in out.stdout
    assert len(_rows(steps)) == 1


def test_ticker_stops_when_its_shell_is_killed_alone(tmp_path):
    steps = tmp_path / "steps.tsv"
    partial = Path(f"{steps}.partial")
    env = dict(os.environ, STEP_TICK="1")
    proc = subprocess.Popen(_script(steps, "step work sleep 60"), env=env, start_new_session=True)
    try:
        _wait_for(lambda: len(_rows(partial)) >= 1)
        os.kill(proc.pid, signal.SIGKILL)  # the shell only: its command and ticker live on
        proc.wait()
        time.sleep(2.5)  # the ticker notices within a tick
        ticks = len(_rows(partial))
        time.sleep(2.5)
        assert len(_rows(partial)) == ticks
    finally:
        os.killpg(proc.pid, signal.SIGKILL)


def test_failed_step_is_not_recorded_and_its_ticker_stops(tmp_path):
    steps = tmp_path / "steps.tsv"
    partial = Path(f"{steps}.partial")
    env = dict(os.environ, STEP_TICK="1")
    out = subprocess.run(_script(steps, "step broken bash -c 'sleep 2.5; exit 7'"), env=env, capture_output=True, timeout=60)
    assert out.returncode == 7  # set -e in the caller: the step's status ends the script
    assert _rows(steps) == []
    ticks = len(_rows(partial))
    assert ticks >= 1  # it ran past a tick, so its seconds are kept for a later run
    time.sleep(2.5)  # a ticker left running would append a line every second
    assert len(_rows(partial)) == ticks
    out = subprocess.run(_script(steps, "step broken true"), env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    (row,) = _rows(steps)
    assert row[0] == "broken" and int(row[1]) >= max(int(r[2]) for r in _rows(partial) if r[2] != "recorded")


def test_other_steps_ticks_do_not_count(tmp_path):
    steps = tmp_path / "steps.tsv"
    Path(f"{steps}.partial").write_text("search\t100\t500\nretrain\t200\t40\nretrain\t200\t90\nretrain\t300\t7\n")
    out = subprocess.run(_script(steps, "step retrain true"), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    (row,) = _rows(steps)
    assert row[0] == "retrain" and int(row[1]) in (97, 98)  # last tick of each earlier run: 90 + 7


def test_redone_step_does_not_count_recorded_runs_again(tmp_path):
    steps = tmp_path / "steps.tsv"
    partial = Path(f"{steps}.partial")
    # An earlier unfinished run (100 s) and a finished one that counted it (ticked to 30 s).
    partial.write_text("search\t1\t100\nsearch\t2\t30\nsearch\t2\trecorded\n")
    out = subprocess.run(_script(steps, "step search true"), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    (row,) = _rows(steps)
    assert row[0] == "search" and int(row[1]) in (0, 1)  # only this run's own seconds
    assert _rows(partial)[-1][0::2] == ["search", "recorded"]


def test_bad_step_tick_is_refused_before_the_command_runs(tmp_path):
    steps = tmp_path / "steps.tsv"
    ran = tmp_path / "ran"
    for tick in ("abc", "0", "-5", "1.5"):
        out = subprocess.run(_script(steps, f"step work touch {ran}"), env=dict(os.environ, STEP_TICK=tick),
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        assert out.returncode == 2, (tick, out.stderr)
        assert f"STEP_TICK must be a whole number of seconds >= 1, not '{tick}'" in out.stderr
        assert not ran.exists() and _rows(steps) == [] and not Path(f"{steps}.partial").exists()


def test_piped_step_ends_when_its_command_does(tmp_path):
    # With the default 30 s tick the ticker is asleep when the command ends (it had a second to
    # start its sleep); a ticker holding the pipe would keep `cat` (and this run) waiting for
    # the rest of that sleep.
    steps = tmp_path / "steps.tsv"
    env = {k: v for k, v in os.environ.items() if k != "STEP_TICK"}
    out = subprocess.run(_script(steps, "step work bash -c 'sleep 1; echo hello' | cat"), env=env, capture_output=True, text=True,
                         timeout=15)  # fmt: skip
    assert out.returncode == 0 and out.stdout == "hello\n", out.stderr
    assert [r[0] for r in _rows(steps)] == ["work"]
