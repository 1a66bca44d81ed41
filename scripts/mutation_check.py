"""Hand-made mutants of the harness: each must make its test fail.

A test of a property should fail when the property breaks. Each mutant below is one small,
plausible bug (a flipped comparison, a dropped filter, a check that always passes). The script
copies the checkout's tracked files, as they are now, into a temporary folder beside it (so
that ../shared is where the tests look for it), runs each mutant's test there unmutated (it
must pass: a failing or flaky test would "catch" anything), then with the mutant (it must
fail), and puts the file back. The working tree is never touched. A mutant that SURVIVES is
a test gap; a PATTERN line means the code has moved on from the mutant's text: update it.

Usage: python3 scripts/mutation_check.py [MUTANT ...]   (all of them by default: about 10 minutes
on a 2-core CPU; a MUTANT is a name in the first column of MUTANTS, e.g. M01)
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEST_TIMEOUT_S = 600

# (name, file, text, its mutant, test file, -k expression of the test that must fail)
MUTANTS = [
    ("M01", "harness/objective.py", "        if params > self.cfg.budget:", "        if params >= self.cfg.budget:", "tests/test_study.py", "exactly_at_the_budget"),
    ("M11", "harness/study.py", "param_count(t.user_attrs, math.inf) <= budget", "param_count(t.user_attrs, math.inf) < budget", "tests/test_study.py", "exactly_at_the_budget"),
    ("M06", "harness/objective.py", "            if t.number >= trial.number:\n                break", "            if t.number == trial.number:\n                continue", "tests/test_study.py", "the_earlier_of_two_trials"),
    ("M08", "harness/objective.py", 'bool(test_acc >= self.cfg.target)', 'bool(val >= self.cfg.target)', "tests/test_study.py", "target_met_is_judged"),
    ("S1", "harness/storage.py", 'f"{path.as_uri()}?mode=ro", uri=True, timeout=timeout', 'f"{path.as_uri()}", uri=True, timeout=timeout', "tests/test_workers.py", "read_only_sqlite"),
    ("E1", "harness/export.py", 'record["passed"] = recorded is None or record["images_apart"] <= allowed', 'record["passed"] = True', "tests/test_export_report.py", "no_longer_score"),
    ("E2", "harness/export.py", '"passed": differ <= allowed,', '"passed": True,', "tests/test_export_report.py", "predicts_otherwise"),
    ("E3", "harness/export.py", "    return min(feasible, key=rank_key)", "    return max(feasible, key=lambda t: t.user_attrs['test_acc'])", "tests/test_export_report.py", "chosen_on_validation"),
    ("R2b", "harness/retrain.py", "                    and _learning_recipe(record.get(\"recipe\") or dataclasses.asdict(recipe)) == _learning_recipe(recipe)\n", "", "tests/test_search_and_retrain.py", "concurrent_retrains"),
    ("Q1", "harness/report.py", '    done = frame[(frame["outcome"] == "complete") & frame["val_acc"].notna()]\n    front = front_of', '    done = frame[frame["val_acc"].notna()]\n    front = front_of', "tests/test_export_report.py", "pareto_front_keeps"),
    ("Q2", "harness/report.py", 'ascending=[False, True]).head(top)', 'ascending=[True, True]).head(top)', "tests/test_export_report.py", "every_trial_and_the_figures"),
    ("D1", "harness/data.py", "        val_x=train_x[cut:].to(device).contiguous(),", "        val_x=train_x[:val_size].to(device).contiguous(),", "tests/test_train.py", "validation_is_the_last"),
    ("C1", "harness/config.py", "_check(where, 1 <= d.val_size < 60_000", "_check(where, 0 <= d.val_size < 60_000", "tests/test_cli_errors.py", "val-size-zero"),
    ("M08b", "harness/objective.py", 'bool(test_acc >= self.cfg.target)', 'False', "tests/test_study.py", "target_met_is_judged"),
    ("P3", "harness/results.py", "for t in (TOP_TARGET_ACC, SMALL_TARGET_ACC)]", "for t in (TOP_TARGET_ACC,)]", "tests/test_search_and_retrain.py", "never_round"),
    ("C2", "harness/config.py", "0 <= d.train_limit <= 60_000 - d.val_size", "0 <= d.train_limit < 60_000 - d.val_size", "tests/test_cli_errors.py", "limits_themselves"),
    # second round (helper-33)
    ("A", "harness/spec.py", "            if new_size < 1:", "            if new_size < 0:", "tests/test_spec_and_spaces.py", "invalid_specs"),
    ("C", "harness/spec.py", "if conv.residual and (new_size != size or conv.out_channels != channels):", "if conv.residual and conv.out_channels != channels:", "tests/test_spec_and_spaces.py", "invalid_specs"),
    ("D", "harness/spec.py", "if not 0.0 <= block.dropout < 1.0:", "if not block.dropout < 1.0:", "tests/test_spec_and_spaces.py", "invalid_specs"),
    ("E", "harness/spec.py", " or conv.stride < 1 or conv.padding < 0:", " or conv.padding < 0:", "tests/test_spec_and_spaces.py", "invalid_specs"),
    ("G", "harness/model.py", "layers.append(nn.Dropout(block.dropout))", "pass", "tests/test_spec_and_spaces.py", "layers_match"),
    ("K", "harness/train.py", "u[:, 0] * math.radians(rotation)", "u[:, 0] * rotation", "tests/test_train.py", "rotation_is_in_degrees"),
    ("L", "harness/train.py", "u[:, 2] * 2 * translate], 1), torch.stack([sin, cos, u[:, 3] * 2 * translate]", "u[:, 2] * translate], 1), torch.stack([sin, cos, u[:, 3] * translate]", "tests/test_train.py", "full_range"),
    ("N", "harness/train.py", "                sched.step()\n", "", "tests/test_train.py", "follows_the_schedule"),
    ("R", "harness/train.py", "if not math.isfinite(mean_loss):", "if math.isnan(mean_loss):", "tests/test_train.py", "infinite_loss"),
    ("S", "harness/train.py", "    model.train(was_training)\n    return correct", "    return correct", "tests/test_train.py", "back_in_training"),
    ("T", "search_spaces/compact.py", "separable=separable and not (s == 1 and j == 0),", "separable=separable,", "tests/test_spec_and_spaces.py", "never_propose"),
    ("U", "search_spaces/compact.py", "stride=2 if (j == 0 and strided) else 1,", "stride=2 if strided else 1,", "tests/test_spec_and_spaces.py", "never_propose"),
    ("V", "search_spaces/modern.py", "residual=residual and channels == width", "residual=residual", "tests/test_spec_and_spaces.py", "never_propose"),
    ("Y", "harness/runner.py", "[total // parts + (1 if i < total % parts else 0) for i in range(parts)]", "[total // parts for i in range(parts)]", "tests/test_study.py", "evenly"),
    ("AF", "harness/study.py", "key=lambda t: t.state != TrialState.COMPLETE)", "key=lambda t: t.number)", "tests/test_study.py", "baseline_that_finished"),
    ("AG", "harness/study.py", "        if points[i][1] > best:", "        if points[i][1] >= best:", "tests/test_study.py", "ties_go"),
    ("AH", "harness/study.py", "return (-val_acc(t), param_count(t.user_attrs, 0))", "return (-val_acc(t), 0)", "tests/test_study.py", "ties_go"),
    ("AI", "harness/cli.py", "              f\"(exit codes {outcome.bad_codes})\", file=sys.stderr)  # fmt: skip\n        return 1", "              f\"(exit codes {outcome.bad_codes})\", file=sys.stderr)  # fmt: skip\n        return 0", "tests/test_cli_errors.py", "workers_failed"),
    ("AA", "harness/runner.py", "os.kill(p.pid, signal.SIGTERM)", "pass", "tests/test_workers.py", "ctrl_c_or_sigterm_marks and sigterm-jobs-2 and not group"),
    ("Z", "harness/runner.py", "threads = 0 if gpus else _worker_threads(_workers_started(plan))", "threads = 0", "tests/test_workers.py", "share_of_the_cores"),
    ("D3", "harness/spec.py", "if not (block.dropout >= 0.0 and block.dropout < 1.0):", "if False:", "tests/test_user_space_errors.py", "nan-dropout"),
    ("V1", "harness/study.py", "and (best is None or t.number != best.number)]", "]", "tests/test_study.py", "target_met_is_judged"),
    ("V2", "harness/study.py", 'retrain = study.user_attrs.get(retrain_key(best.number)) if best is not None else None',
     'retrain = max((v for k, v in study.user_attrs.items() if k.startswith("retrain:")), key=lambda v: v["mean"], default=None)',
     "tests/test_study.py", "retrain_of_the_best_trial_not"),
    ("V3", "harness/objective.py", '            if t.user_attrs.get("spec") is None or t.user_attrs["spec"] != trial.user_attrs.get("spec"):',
     "            if False:", "tests/test_study.py", "same_network_not_just"),
    ("D2", "harness/data.py", "    tr = slice(0, min(cut, train_limit) if train_limit else cut)", "    tr = slice(0, min(n, train_limit) if train_limit else n)", "tests/test_train.py", "validation_is_the_last"),
]


def _copy_of_checkout() -> Path:
    """The tracked files of the checkout, with their uncommitted changes, in a new folder beside it."""
    dest = Path(tempfile.mkdtemp(dir=REPO.parent, prefix=f".{REPO.name}-mutants-"))
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for rel in filter(None, listed.decode().split("\0")):
        if (REPO / rel).is_file():  # a tracked file deleted in the tree stays deleted
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    return dest


def _stop(proc: subprocess.Popen) -> None:
    """Ctrl-C to pytest's process group first, so the tests' own clean-up runs (a SIGTERM
    test kills its harness workers, which live in a session of their own), then SIGKILL."""
    for sig, wait in ((signal.SIGINT, 60), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.communicate(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue


def _pytest(tree: Path, test: str, k: str) -> tuple[int | None, str]:
    """Run one test selection in ``tree``: (exit status, None on a timeout; its last line)."""
    env = dict(os.environ, PYTHONPATH=str(tree))  # the copy's harness, in subprocesses too
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", test, "-k", k],
                            cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True,
                            # Ctrl-C must reach it even when this script runs in the background
                            # (a shell starts `cmd &` with SIGINT ignored, and children inherit that)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=TEST_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _stop(proc)
        return None, f"no result in {TEST_TIMEOUT_S} s"
    finally:
        if proc.returncode is None:  # this script was stopped: its tests stop too
            _stop(proc)
    lines = out.strip().splitlines()
    return proc.returncode, lines[-1] if lines else ""


def main(names: list[str]) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped from outside: the finally below
    tree = _copy_of_checkout()
    bad = 0
    passing: dict[tuple[str, str], str] = {}  # the unmutated result of each selection
    try:
        for name, file, old, new, test, k in MUTANTS:
            if names and name not in names:
                continue
            path = tree / file
            src = path.read_text()
            if src.count(old) != 1:
                print(f"{name}: PATTERN found {src.count(old)} times in {file}, not once")
                bad += 1
                continue
            if (test, k) not in passing:
                code, last = _pytest(tree, test, k)
                passing[(test, k)] = last if code == 0 else ""
            if not passing[(test, k)]:
                print(f"{name}: its test does not pass unmutated ({test} -k {k!r}): fix that first")
                bad += 1
                continue
            path.write_text(src.replace(old, new))
            try:
                code, last = _pytest(tree, test, k)
            finally:
                path.write_text(src)
            # exactly the named test failed: not a collection error, not a timeout
            caught = code == 1 and re.match(r"1 failed(,| in )", last) is not None and "error" not in last
            bad += not caught
            print(f"{name}: {'caught' if caught else 'SURVIVED'} ({file}; {last})", flush=True)
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    return 1 if bad else 0


def _names(args: list[str]) -> list[str]:
    """The mutants named on the command line (none: all); --help prints the usage, an unknown
    name is a one-line error (exit 2) before anything is copied."""
    if {"-h", "--help"} & set(args):
        print(__doc__.strip())
        sys.exit(0)
    known = [m[0] for m in MUTANTS]
    unknown = [a for a in args if a not in known]
    if unknown:
        print(f"mutation_check: error: no mutant named {', '.join(unknown)} (known: {' '.join(known)})", file=sys.stderr)
        sys.exit(2)
    return args


if __name__ == "__main__":
    sys.exit(main(_names(sys.argv[1:])))
