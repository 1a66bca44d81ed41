"""Reliability figures: many workers, SIGKILLs, bad input; counts every trial afterwards.

Runs real `harness` processes on the real MNIST files (tiny training per trial, so the run
takes minutes on a CPU) and checks the storage with plain Optuna:

1. SQLite: `harness run --jobs 4` for --sqlite-trials trials;
2. SIGKILL: --kills rounds of "start a run, SIGKILL it mid-trial, resume": every trial that
   had finished before a kill must be unchanged after it, and every killed trial must be
   FAIL with its parameters retried;
3. PostgreSQL (when the server binaries are installed): 8 `harness worker` processes
   against a throwaway server;
4. bad input: the table-driven test of malformed inputs (`tests/test_cli_errors.py`).

Usage: python benchmarks/reliability.py --data-dir DIR [--out results/reliability]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from harness.train import cpu_model  # noqa: E402

STUDY = """
[study]
name = "{name}"
budget = 20000
seed = {seed}
heartbeat_interval = 1
grace_period = 3
[sampler]
name = "random"
[pruner]
name = "none"
[data]
val_size = 500
train_limit = 1024
test_limit = 500
[train]
epochs = {epochs}
batch_size = 128
"""


def _harness(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness.cli", *args]


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=url).get_trials()


def _exactly_once(trials, n: int) -> bool:
    return len(trials) == n and sorted(t.number for t in trials) == list(range(n)) and sum(
        bool(t.user_attrs.get("baseline")) and t.state == TrialState.COMPLETE for t in trials
    ) == 1


def sqlite_workers(tmp: Path, data: str, trials: int) -> dict:
    study = tmp / "sq.toml"
    study.write_text(STUDY.format(name="sq", seed=1, epochs=1))
    url = f"sqlite:///{tmp / 'sq.db'}"
    p = subprocess.run(_harness("run", str(study), "--jobs", "4", "--trials", str(trials), "--storage", url,
                                "--data-dir", data, "--device", "cpu", "--quiet"),
                       capture_output=True, text=True, cwd=REPO)  # fmt: skip
    ts = _trials(url, "sq")
    logs = p.stdout + p.stderr
    return {"scenario": "SQLite, `run --jobs 4`", "workers": 4, "trials": len(ts), "exit": p.returncode,
            "exactly_once": _exactly_once(ts, trials), "locked_errors": logs.count("database is locked"),
            "lost": 0 if len(ts) == trials else trials - len(ts)}  # fmt: skip


def kills(tmp: Path, data: str, rounds: int) -> dict:
    study = tmp / "k.toml"
    url = f"sqlite:///{tmp / 'k.db'}"
    args = ["--storage", url, "--data-dir", data, "--device", "cpu", "--quiet"]
    # One schedule throughout (a study refuses a file with other [train] settings): 60 epochs
    # of 8 steps, long enough to be killed after its first epoch.
    study.write_text(STUDY.format(name="k", seed=2, epochs=60))
    subprocess.run(_harness("run", str(study), "--trials", "3", *args), check=True, capture_output=True, cwd=REPO)
    lost, killed_numbers, retried = 0, [], 0
    for _ in range(rounds):
        finished = {t.number: (t.state, t.params, t.value) for t in _trials(url, "k") if t.state.is_finished()}
        victim = subprocess.Popen(_harness("run", str(study), "--trials", "1", *args), cwd=REPO,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 300
        running = []
        while time.monotonic() < deadline and not running:
            time.sleep(0.3)
            running = [t for t in _trials(url, "k") if t.state == TrialState.RUNNING and t.intermediate_values]
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        killed_numbers.append(running[0].number)
        time.sleep(4)  # past the grace period
        subprocess.run(_harness("run", str(study), "--trials", "2", *args), check=True, capture_output=True, cwd=REPO)
        after = {t.number: t for t in _trials(url, "k")}
        lost += sum((after[n].state, after[n].params, after[n].value) != v for n, v in finished.items())
        retried += sum(1 for t in after.values() if t.system_attrs.get("failed_trial") == running[0].number
                       and t.state.is_finished())  # fmt: skip
    ts = _trials(url, "k")
    failed_ok = all(next(t for t in ts if t.number == n).state == TrialState.FAIL for n in killed_numbers)
    return {"scenario": "SQLite, SIGKILL mid-trial then resume", "workers": 1, "trials": len(ts),
            "kills": rounds, "killed_marked_fail": failed_ok, "killed_retried": retried, "lost": lost,
            "baselines_complete": sum(bool(t.user_attrs.get("baseline")) and t.state == TrialState.COMPLETE for t in ts)}  # fmt: skip


def postgres_workers(tmp: Path, data: str, per_worker: int) -> dict | None:
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not bins:
        return None
    bindir = bins[-1].parent
    base = Path(tempfile.mkdtemp(prefix="harness-pg-"))
    os.chmod(base, 0o777)
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    port = 54000 + os.getpid() % 1000
    run = lambda *a: subprocess.run([*as_user, *a], check=True, capture_output=True)  # noqa: E731
    run(str(bindir / "initdb"), "-D", str(base / "data"), "-U", "harness", "--auth=trust")
    run(str(bindir / "pg_ctl"), "-D", str(base / "data"), "-l", str(base / "log"), "-w", "-o",
        f"-p {port} -k {base} -c listen_addresses=127.0.0.1", "start")  # fmt: skip
    try:
        url = f"postgresql+psycopg2://harness@127.0.0.1:{port}/postgres"
        study = tmp / "pg.toml"
        study.write_text(STUDY.format(name="pg", seed=3, epochs=1))
        procs = [subprocess.Popen(_harness("worker", str(study), "--storage", url, "--trials", str(per_worker),
                                           "--data-dir", data, "--device", "cpu", "--quiet"), cwd=REPO,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
                 for _ in range(8)]
        logs = "".join(p.communicate()[0] for p in procs)
        ts = _trials(url, "pg")
        n = 8 * per_worker
        return {"scenario": "PostgreSQL, 8 `harness worker` processes", "workers": 8, "trials": len(ts),
                "exit": max(p.returncode for p in procs), "exactly_once": _exactly_once(ts, n),
                "errors_in_logs": logs.count("Traceback") + logs.count("error:"), "lost": max(0, n - len(ts))}  # fmt: skip
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(base / "data"), "-m", "immediate", "stop")
        shutil.rmtree(base, ignore_errors=True)


def bad_inputs() -> dict:
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_cli_errors.py",
                        "-k", "bad_study_input or bad_command_input"],  # the two tables: one bad input per case
                       capture_output=True, text=True, cwd=REPO)  # fmt: skip
    m = re.search(r"(\d+) passed", p.stdout)
    failed = re.search(r"(\d+) failed", p.stdout)
    return {"scenario": "bad input (the two tables of tests/test_cli_errors.py, every command)", "inputs_tried": int(m.group(1)) if m else 0,
            "failed": int(failed.group(1)) if failed else 0}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("HARNESS_DATA_DIR", ""))
    ap.add_argument("--sqlite-trials", type=int, default=24)
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--pg-trials-per-worker", type=int, default=3)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    data = str(Path(args.data_dir).resolve())
    rows = []
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        rows.append(sqlite_workers(tmp, data, args.sqlite_trials))
        rows.append(kills(tmp, data, args.kills))
        pg = postgres_workers(tmp, data, args.pg_trials_per_worker)
        if pg:
            rows.append(pg)
    rows.append(bad_inputs())
    total_lost = sum(r.get("lost", 0) for r in rows)
    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__, "optuna": optuna.__version__,
               "date": dt.date.today().isoformat(), "command": "python benchmarks/reliability.py " + " ".join(sys.argv[1:])}
    lines = [f"# Reliability ({machine['date']}, {machine['cpu']}, {machine['cores']} cores; torch {machine['torch']}, "
             f"optuna {machine['optuna']}; `{machine['command'].strip()}`)", "",
             "| scenario | workers | trials | kills | bad inputs | trials lost | checks |", "|---|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for r in rows:
        checks = ", ".join(f"{k}={v}" for k, v in r.items() if k not in ("scenario", "workers", "trials", "kills", "lost", "inputs_tried"))
        lines.append(f"| {r['scenario']} | {r.get('workers', '')} | {r.get('trials', '')} | {r.get('kills', '')} "
                     f"| {r.get('inputs_tried', '')} | {r.get('lost', '')} | {checks} |")  # fmt: skip
    lines += ["", f"Trials lost in total: {total_lost}."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".md").write_text(text)
        out.with_suffix(".json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
