"""Hand-made mutants of the harness: each must make its test fail.

A test of a property should fail when the property breaks. Each mutant below is one small,
plausible bug (a flipped comparison, a dropped filter, a check that always passes); the script
applies it to the working tree, runs the one test that pins the property, and puts the file
back (also on Ctrl-C). A mutant that SURVIVES is a test gap. A PATTERN line means the code has
moved on from the mutant's text: update the mutant.

Usage: python3 scripts/mutation_check.py [NAME ...]   (about a minute; run on a clean tree)
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

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
    ("D2", "harness/data.py", "    tr = slice(0, min(cut, train_limit) if train_limit else cut)", "    tr = slice(0, min(n, train_limit) if train_limit else n)", "tests/test_train.py", "validation_is_the_last"),
]


def main(names: list[str]) -> int:
    survived = 0
    for name, file, old, new, test, k in MUTANTS:
        if names and name not in names:
            continue
        path = REPO / file
        src = path.read_text()
        if src.count(old) != 1:
            print(f"{name}: PATTERN found {src.count(old)} times in {file}, not once")
            survived += 1
            continue
        path.write_text(src.replace(old, new))
        try:
            run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", test, "-k", k],
                                 capture_output=True, text=True, cwd=REPO, timeout=900)  # fmt: skip
        finally:
            path.write_text(src)
        lines = run.stdout.strip().splitlines()
        # the named test failed, and nothing else went wrong (a mutant that breaks an import or
        # the collection "fails" every test without testing anything)
        caught = run.returncode == 1 and bool(lines) and re.fullmatch(r"1 failed, \d+ deselected in .*", lines[-1]) is not None
        survived += not caught
        print(f"{name}: {'caught' if caught else 'SURVIVED'} ({file}; {lines[-1] if lines else run.stderr[-200:]})")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
