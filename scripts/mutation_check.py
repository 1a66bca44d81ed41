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
import signal
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
    ("AA", "harness/runner.py", "os.kill(p.pid, signal.SIGTERM)", "pass", "tests/test_workers.py", "ctrl_c_marks and sigterm-jobs-2 and not group"),
    ("D2", "harness/data.py", "    tr = slice(0, min(cut, train_limit) if train_limit else cut)", "    tr = slice(0, min(n, train_limit) if train_limit else n)", "tests/test_train.py", "validation_is_the_last"),
]


def main(names: list[str]) -> int:
    # stopped from outside (timeout, a scheduler): leave through the finally that restores the file
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
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
        caught = run.returncode == 1 and bool(lines) and re.match(r"1 failed, ", lines[-1]) is not None \
            and "error" not in lines[-1]
        survived += not caught
        print(f"{name}: {'caught' if caught else 'SURVIVED'} ({file}; {lines[-1] if lines else run.stderr[-200:]})")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
