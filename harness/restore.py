"""Rebuild a study from the CSV of its trials (``harness report --csv``).

A study's database is not committed, but its trial CSV may be (a results file): when the
database is gone, the study resumes from that record. What the CSV holds comes back, trial by
trial and under the same numbers: state and outcome (trained, pruned, rejected over the budget
or as invalid, a repeat, failed, interrupted), the parameters with the distributions the
search space draws them from (found by replaying the space on them), objective values, the
parameter count, accuracies, device, seed and start time; the spec, the readable arch and the
recipe are rebuilt from the parameters and checked against the CSV's arch, parameter count
and seed, so a CSV of another study file is refused. Retries and repeats get back the trial
they retry or repeat (the earlier trial with the same parameters).

What a CSV does not hold does not come back: trained weights (export and the results' exports
need a retrain), the validation curves kept for reading (``val_history``, ``raw_val_history``:
with weight averaging a pruned trial's averaged score and the trained weights' scores; the
scores the pruner saw come back from the ``intermediate_values`` column, with the halving
pruner's rung records rebuilt from them; a CSV written before that column restores a study
that prunes with no pruner only), each seed's validation score of a repeated trial beyond the
CSV's 4 decimals, the precision and the torch and harness versions, the sampler stream that proposed each trial,
the end times (a trial ends as it started), retrains (``harness retrain`` again; the columns
that no restore reads back and that hold values are named, see RestoredStudy), and the
distillation teacher's record (a distilled study is refused). Nor does a CSV record the
recipe's fields a study file gives every trial alike (those not searched): they are taken from
the study file as it is now, so restore with the file the trials ran with (its budget, space,
seed, epochs, repeats, weight averaging and data split are checked against the CSV; the
validation split only where the CSV has ``val_images``). Every restored trial names the
CSV in its user attribute ``restored_from``. A trial running when the CSV was written comes
back failed with no reason (as a killed one: the next run retries it); interrupted ones are
retried by the next run as they would have been. Trials still waiting at the CSV's end are
left out: the next run enqueues the baseline, ``[[enqueue]]`` tables and retries again.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import math
import re
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from harness.config import StudyConfig
from harness.errors import HarnessError, StorageError
from harness.spec import InvalidSpecError, count_params

__all__ = ["RESTORED_ATTR", "RestoredStudy", "read_trials_csv", "restore_study"]

#: Trial user attribute: the CSV a restored trial came from.
RESTORED_ATTR = "restored_from"

#: The columns of ``harness report --csv`` a restore reads (``param_*`` besides).
_NEEDED = ("number", "outcome", "state", "origin", "baseline", "params", "val_acc", "test_acc", "test_images",
           "target_met", "epochs_run", "train_seconds", "train_images", "arch", "reject_reason", "fail_reason",
           "device", "seed", "datetime_start", "teacher")  # fmt: skip
#: outcome (harness.study.classify) -> the trial states it is written with
_OUTCOME_STATES = {"complete": ("COMPLETE",), "over_budget": ("PRUNED",), "invalid": ("PRUNED",),
                   "duplicate": ("COMPLETE", "PRUNED"), "pruned": ("PRUNED",), "failed": ("FAIL",),
                   "running": ("RUNNING",), "waiting": ("WAITING",)}  # fmt: skip
_OUTCOMES = tuple(_OUTCOME_STATES)
#: Columns of `harness report --csv` that no restore reads back (the note names those holding values).
_NOT_RESTORED = ("trained_val_acc", "retrain_test_mean", "retrain_test_std", "retrain_seeds", "retrain_epochs",
                 "retrain_train_images")  # fmt: skip
#: Columns read, or checked against what is rebuilt (teacher_sha256: a teacher is refused;
#: ema_decay: the recipe's).
_READ = (*_NEEDED, "teacher_sha256", "ema_decay", "repeats", "repeat_val_accs", "intermediate_values", "val_images")


@dataclasses.dataclass(frozen=True)
class RestoredStudy:
    """What :func:`restore_study` wrote."""

    trials: int  # restored, numbered 0 .. trials - 1
    outcomes: dict[str, int]  # outcome (harness.study.classify) -> count
    left_out: int  # waiting trials at the CSV's end, not restored
    not_restored: list[str]  # the CSV's columns holding values no restore reads back (retrains, ...)


def read_trials_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a ``harness report --csv`` file, as text.

    Raises:
        HarnessError: unreadable, not UTF-8, not a CSV, a column missing, no rows.
    """
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: a spreadsheet's byte-order mark
            reader = csv.DictReader(f)
            columns = list(reader.fieldnames or [])
            rows = []
            for row in reader:
                if None in row:  # DictReader's key for cells past the header's
                    raise HarnessError(f"{path}: line {reader.line_num} has more cells than the header has columns")
                rows.append(row)
    except FileNotFoundError:
        raise HarnessError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise HarnessError(f"{path}: is a folder, not a CSV file") from None
    except OSError as exc:
        raise HarnessError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise HarnessError(f"{path}: not UTF-8 text (a CSV of harness report --csv is)") from None
    except csv.Error as exc:
        raise HarnessError(f"{path}: not a CSV file: {exc}") from None
    twice = [c for c in columns if columns.count(c) > 1]
    if twice:
        raise HarnessError(f"{path}: column {twice[0]!r} is in the header twice")
    if "" in columns:
        raise HarnessError(f"{path}: the header has a column with no name (column {columns.index('') + 1})")
    missing = [c for c in _NEEDED if c not in columns]
    if missing:
        raise HarnessError(f"{path}: not a trial CSV of `harness report --csv`: no column {missing[0]!r}")
    if not rows:
        raise HarnessError(f"{path}: holds no trials")
    return rows


class _ReplayTrial(optuna.trial.FixedTrial):
    """A FixedTrial over a CSV row's parameter cells: each value is read as the type of the
    distribution the space draws it from, and must lie in it."""

    def __init__(self, cells: dict[str, str], where: str):
        super().__init__(dict(cells))
        self.where = where

    def _suggest(self, name: str, distribution: BaseDistribution) -> Any:
        if name not in self._params:
            raise HarnessError(f"{self.where}: the search space draws {name!r}, and column param_{name} is empty")
        self._params[name] = _value(self._params[name], distribution, f"{self.where}: param_{name}")
        return super()._suggest(name, distribution)


def _value(cell: Any, dist: BaseDistribution, where: str) -> Any:
    """The CSV text ``cell`` as a value of ``dist`` (already a value: itself)."""
    if not isinstance(cell, str):
        return cell
    value: Any = None
    if isinstance(dist, CategoricalDistribution):
        for choice in dist.choices:
            if str(choice) == cell or (isinstance(choice, (int, float)) and not isinstance(choice, bool)
                                       and _number(cell) == choice):  # fmt: skip
                value = choice
                break
        if value is None:
            raise HarnessError(f"{where} = {cell!r} is not one of {list(dist.choices)}")
        return value
    number = _number(cell)
    if isinstance(dist, IntDistribution) and number is not None and number.is_integer():
        value = int(number)
    elif isinstance(dist, FloatDistribution):
        value = number
    if value is None or not dist._contains(dist.to_internal_repr(value)):
        raise HarnessError(f"{where} = {cell!r} is not in the search space's {dist}")
    return value


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?", re.ASCII)  # as a CSV writer writes one


def _number(cell: str) -> float | None:
    if not _NUMBER.fullmatch(cell):
        return None
    value = float(cell)
    return value if math.isfinite(value) else None


def _int(row: dict[str, str], column: str, where: str) -> int | None:
    cell = row[column]
    if cell == "":
        return None
    number = _number(cell)
    if number is None or not number.is_integer():
        raise HarnessError(f"{where}: {column} = {cell!r} is not a whole number")
    return int(number)


def _float(row: dict[str, str], column: str, where: str) -> float | None:
    cell = row[column]
    if cell == "":
        return None
    number = _number(cell)
    if number is None:
        raise HarnessError(f"{where}: {column} = {cell!r} is not a number")
    return number


def _curve(row: dict[str, str], where: str) -> dict[int, float]:
    """The ``intermediate_values`` cell (``1:0.91 2:0.95``) as {epoch: score}."""
    curve: dict[int, float] = {}
    for pair in row["intermediate_values"].split():
        step, _, value = pair.partition(":")
        number = _number(value)
        if not (step.isascii() and step.isdigit()) or len(step) > 6 or number is None or int(step) in curve:
            raise HarnessError(f"{where}: intermediate_values: {pair!r} is not epoch:score")
        curve[int(step)] = number
    return curve


def _bool(row: dict[str, str], column: str, where: str) -> bool | None:
    cell = row[column]
    if cell not in ("", "True", "False"):
        raise HarnessError(f"{where}: {column} = {cell!r} is not True or False")
    return None if cell == "" else cell == "True"


class _Row:
    """One CSV row read and checked against the study file; ``trial()`` makes its FrozenTrial."""

    def __init__(self, row: dict[str, str], cfg: StudyConfig, space: Any, csv_path: Path):
        from search_spaces import baseline_spec
        from search_spaces.recipe import suggest_recipe

        self.row, self.cfg = row, cfg
        number = _int(row, "number", f"{csv_path}: a row")
        if number is None or number < 0:
            raise HarnessError(f"{csv_path}: a row has {'no trial number' if number is None else f'trial number {number}'}")
        self.number = number
        self.where = where = f"{csv_path}: trial {number}"
        if row["outcome"] not in _OUTCOMES:
            raise HarnessError(f"{where}: outcome {row['outcome']!r} is not one of {', '.join(_OUTCOMES)}")
        if row["state"] not in TrialState.__members__:
            raise HarnessError(f"{where}: state {row['state']!r} is not an Optuna trial state")
        self.state, self.outcome, self.origin = TrialState[row["state"]], row["outcome"], row["origin"]
        if row["state"] not in _OUTCOME_STATES[self.outcome]:
            raise HarnessError(f"{where}: outcome {self.outcome!r} with state {row['state']!r}: a trial of that outcome "
                               f"is {' or '.join(_OUTCOME_STATES[self.outcome])}")  # fmt: skip
        if self.outcome == "pruned" and cfg.mode == "pareto":
            raise HarnessError(f"{where}: pruned, but study.mode = \"pareto\" never prunes (Optuna has no "
                               "intermediate values with two objectives): a CSV of another study file")  # fmt: skip
        if self.origin not in ("baseline", "enqueued", "retry", "sampler"):
            raise HarnessError(f"{where}: origin {self.origin!r} is not one of baseline, enqueued, retry, sampler")
        if row["teacher"]:
            raise HarnessError(f"{where} was distilled from {row['teacher']}: its teacher's record is not in a CSV, so "
                               "a distilled study cannot be restored")  # fmt: skip
        self.baseline = bool(_bool(row, "baseline", where))
        if (self.origin == "baseline") != self.baseline and not (self.baseline and self.origin == "retry"):
            raise HarnessError(f"{where}: origin {self.origin!r} with baseline = {self.baseline}: only the baseline "
                               "(or a retry of it) is the baseline")  # fmt: skip
        cells = {k[len("param_"):]: v for k, v in row.items() if k and k.startswith("param_") and v not in ("", None)}
        self.spec, self.recipe = None, cfg.train
        replay = _ReplayTrial(cells, where)
        self.retry_history: list[int] = []  # set by trial() for a retry
        self.fixed = False  # set by trial(): enqueued with its parameters
        self.params: dict[str, Any] = {}
        self.distributions: dict[str, BaseDistribution] = {}
        self.count: int | None = None
        self.seed = self.epochs = None
        self.val = self.curve = None
        if self.state == TrialState.WAITING:  # queued, never run: no parameters in the CSV (see restore_study)
            return
        if self.baseline and (space.baseline_params is None or not cells):
            self.spec = baseline_spec()  # built directly, nothing drawn (as the objective does)
        else:
            try:
                self.spec = space.suggest(replay)
            except optuna.TrialPruned:  # the space itself rejected the candidate (invalid): no spec
                pass
            except Exception as exc:
                # A failed (or running) trial may have stopped in the space, part way through its
                # draws: it keeps the parameters drawn before. Any other trial's must all replay.
                partial = self.state in (TrialState.FAIL, TrialState.RUNNING)
                if not partial and isinstance(exc, HarnessError):
                    raise
                if not partial:
                    raise HarnessError(f"{where}: search space {space.name!r} fails on its parameters: "
                                       f"{exc.__class__.__name__}: {exc}") from None  # fmt: skip
            if cfg.search_recipe and not self.baseline and self.spec is not None:
                self.recipe = suggest_recipe(replay, cfg.train, cfg.recipe_fields)
        unused = sorted(set(cells) - set(replay.params))
        if unused and self.spec is not None:
            raise HarnessError(f"{where}: param_{unused[0]} = {cells[unused[0]]!r} is not drawn by search space "
                               f"{space.name!r} for this trial: a CSV of another study's space?")  # fmt: skip
        self.params, self.distributions = dict(replay.params), dict(replay.distributions)
        if self.spec is not None:
            try:
                self.count = count_params(self.spec)
            except InvalidSpecError:
                pass
            arch = self.spec.describe()
            if row["arch"] and row["arch"] != arch:
                raise HarnessError(f"{where}: its parameters make {arch!r} in search space {space.name!r}, but the "
                                   f"CSV says {row['arch']!r}: not a trial of this study file")  # fmt: skip
        counted = _int(row, "params", where)
        if counted is not None and counted != self.count:
            has = f"{self.count:,} parameters" if self.count is not None else "no parameter count (it is not buildable)"
            raise HarnessError(f"{where}: params = {row['params']}, but its architecture has {has}")
        self.seed = _int(row, "seed", where)
        if self.seed is not None and not 0 <= self.seed - number < 2**32:
            raise HarnessError(f"{where}: seed {self.seed} is not a study.seed (0 to 2**32 - 1) + the trial number "
                               f"{number}")  # fmt: skip
        self.curve = _curve(row, where) if "intermediate_values" in row else None  # a CSV before curves: None
        self.epochs = _int(row, "epochs_run", where)
        if self.epochs is not None and not 1 <= self.epochs <= self.recipe.epochs:
            raise HarnessError(f"{where}: epochs_run = {row['epochs_run']}, but the study file trains "
                               f"train.epochs = {self.recipe.epochs}")  # fmt: skip
        self.val = _float(row, "val_acc", where)
        for column in ("val_acc", "test_acc"):
            if (value := _float(row, column, where)) is not None and not 0 <= value <= 1:
                raise HarnessError(f"{where}: {column} = {row[column]} is not an accuracy (0 to 1)")
        for column, most in (("train_images", 60_000), ("test_images", 10_000)):  # MNIST's
            if (value := _int(row, column, where)) is not None and not 0 < value <= most:
                raise HarnessError(f"{where}: {column} = {row[column]} is not a number of MNIST images (1 to {most:,})")
        self._check_split(row, cfg)
        if (value := _float(row, "train_seconds", where)) is not None and value < 0:
            raise HarnessError(f"{where}: train_seconds = {row['train_seconds']} is negative")
        if self.curve is not None:
            self._check_curve(cfg)
        trained = self.state == TrialState.COMPLETE and self.outcome == "complete"
        if trained and (self.val is None or self.epochs is None):
            raise HarnessError(f"{where}: a completed trial without val_acc or epochs_run")
        if trained and self.epochs != self.recipe.epochs:
            raise HarnessError(f"{where}: trained {self.epochs} epochs, but the study file trains "
                               f"train.epochs = {self.recipe.epochs}: a CSV of another study file")  # fmt: skip
        ema = _float(row, "ema_decay", where) if row.get("ema_decay") else None
        if ema is not None and self.count is not None and ema != self.recipe.ema_decay:
            raise HarnessError(f"{where}: ema_decay = {ema}, but the study file trains with train.ema_decay = "
                               f"{self.recipe.ema_decay}: a CSV of another study file")  # fmt: skip
        self.repeat_val_accs: list[float] = []
        if trained and "repeats" in row:
            repeats = _int(row, "repeats", where)
            if repeats != cfg.repeats:
                raise HarnessError(f"{where}: trained with {repeats} seeds, but the study file has study.repeats = "
                                   f"{cfg.repeats}: a CSV of another study file")  # fmt: skip
            for cell in row.get("repeat_val_accs", "").split():
                if _number(cell) is None:
                    raise HarnessError(f"{where}: repeat_val_accs: {cell!r} is not a number")
                self.repeat_val_accs.append(float(cell))
            if repeats > 1 and len(self.repeat_val_accs) != repeats:
                raise HarnessError(f"{where}: repeat_val_accs holds {len(self.repeat_val_accs)} scores for {repeats} seeds")
        if self.outcome == "over_budget" and (self.count is None or self.count <= cfg.budget):
            has = f"its {self.count:,} parameters are" if self.count is not None else "it has no parameter count, so is not"
            raise HarnessError(f"{where}: rejected over the budget, but {has} within study.budget = {cfg.budget:,}")

    def _check_split(self, row: dict[str, str], cfg: StudyConfig) -> None:
        """A trial scored on the study file's validation split (``val_images``, a column CSVs
        before it lack) and, where the file limits them, trained and tested on as many images as
        its limits (MNIST has more than any limit allows): the restored study takes the file's
        data settings, and a changed one ranked old trials, scored on other images, with new
        ones (and refused the file they ran with afterwards)."""
        d, where = cfg.data, self.where
        val_images = _int(row, "val_images", where) if "val_images" in row else None
        if val_images is not None and val_images != d.val_size:
            raise HarnessError(f"{where}: scored on val_images = {val_images:,}, but the study file's data.val_size = "
                               f"{d.val_size:,}: a CSV of another study file")  # fmt: skip
        for column, limit in (("train_images", d.train_limit), ("test_images", d.test_limit)):
            value = _int(row, column, where)
            if limit and value is not None and value != limit:
                raise HarnessError(f"{where}: {column} = {value:,}, but the study file's data."
                                   f"{column.split('_')[0]}_limit = {limit:,}: a CSV of another study file")  # fmt: skip

    def _check_curve(self, cfg: StudyConfig) -> None:
        """The pruner's scores as the objective reports them: none with two objectives or before
        training; else one each epoch from the first (a repeat: its original's), up to epochs_run
        (a failed trial: maybe one less, stopped before its last report)."""
        steps, where = sorted(self.curve or {}), self.where
        bad = ""
        if steps and (cfg.mode == "pareto" or (self.epochs is None and self.outcome != "duplicate")):
            bad = "scores of a trial that reported none (two objectives, or not trained)"
        elif steps and steps != list(range(1, steps[-1] + 1)):
            bad = "not one score each epoch from epoch 1"
        elif cfg.mode == "single" and self.epochs is not None and self.outcome != "duplicate":
            last = steps[-1] if steps else 0
            if not (last == self.epochs or (self.state == TrialState.FAIL and last in (self.epochs - 1, self.epochs))):
                bad = f"scores up to epoch {last}, but epochs_run = {self.epochs}"
        if bad:
            raise HarnessError(f"{where}: intermediate_values: {bad}")

    def trial(self, earlier: list[_Row], csv_name: str) -> FrozenTrial:
        """This row's trial; ``earlier``: the rows before it (for the trial a retry or a repeat
        takes its parameters from)."""
        from harness.objective import BUDGET_CONSTRAINT, INTERRUPTED_REASON, PARAM_COUNT_ATTR, repeat_seeds

        row, cfg, where = self.row, self.cfg, self.where
        ua: dict[str, Any] = {RESTORED_ATTR: csv_name, "baseline": self.baseline, "origin": self.origin}
        system: dict[str, Any] = {}
        constraints: dict[str, float] | None = None
        if self.seed is not None:
            ua["seed"] = self.seed
        if self.spec is not None:
            ua["spec"], ua["arch"] = self.spec.to_json(), self.spec.describe()
            if cfg.search_recipe:
                ua["recipe"] = dataclasses.asdict(self.recipe)
        if self.count is not None:
            ua[PARAM_COUNT_ATTR] = self.count
            ua[BUDGET_CONSTRAINT] = self.count - cfg.budget
            constraints = {BUDGET_CONSTRAINT: float(self.count - cfg.budget)}
        if self.outcome in ("over_budget", "invalid"):
            ua["rejected"], ua["reject_reason"] = self.outcome, row["reject_reason"]
            if self.outcome == "invalid":
                ua[BUDGET_CONSTRAINT], constraints = 1.0, {BUDGET_CONSTRAINT: 1.0}
        if self.origin in ("baseline", "enqueued"):  # Optuna keeps an enqueued trial's parameters (none: {}) so
            system["fixed_params"] = dict(self.params)
        if self.origin == "enqueued":  # as enqueued by the study file (a retry of it keeps the mark)
            ua["enqueued"] = True
        if self.origin == "retry":
            taken = _retried(earlier)
            failed = next((r for r in earlier if r.state == TrialState.FAIL and r.params == self.params
                           and r.baseline == self.baseline and r.number not in taken), None)  # fmt: skip
            if failed is None:
                raise HarnessError(f"{where}: a retry, but no failed trial before it has its parameters")
            system["failed_trial"] = failed.number
            ua["retry_of"] = failed.number
            system["retry_history"] = [*failed.retry_history, failed.number]
            if failed.fixed:
                system["fixed_params"] = dict(self.params)
        self.retry_history, self.fixed = system.get("retry_history", []), "fixed_params" in system
        original = None
        if self.outcome == "duplicate":
            # The earliest trial before it with its parameters that was not rejected nor a repeat
            # itself: completed (then this one has its values), or, for a pruned repeat, pruned
            # or still running when it was proposed (it may have failed since).
            allowed = ("complete",) if self.state == TrialState.COMPLETE else ("complete", "pruned", "running", "failed")
            original = next((r for r in earlier if r.params == self.params and r.outcome in allowed
                             and r.baseline == self.baseline), None)  # fmt: skip
            if original is None:
                raise HarnessError(f"{where}: a repeat, but no trial before it that it can repeat has its parameters")
            ua["duplicate_of"] = original.number
        if self.epochs is not None:
            ua["epochs_run"] = self.epochs
        # a trial stopped before its first epoch ended (interrupted) has its data and device too
        reached_training = self.epochs is not None or self.outcome == "complete" or row["train_images"] != ""
        if reached_training and self.outcome != "duplicate":
            if row["device"]:
                ua["device"] = row["device"]
            train_images = _int(row, "train_images", where)
            if train_images is not None:
                ua["train_images"] = train_images
                ua["held_out_train_images"] = cfg.data.val_size
        values = None
        intermediate: dict[int, float] = {}
        multi = cfg.mode == "pareto"
        if self.state == TrialState.COMPLETE:
            val = original.val if original is not None else self.val
            values = [val, float(self.count)] if multi else [val]
            if self.outcome == "complete":
                test_acc = _float(row, "test_acc", where)
                ua.update(val_acc=self.val, test_acc=test_acc, test_images=_int(row, "test_images", where),
                          target_met=_bool(row, "target_met", where), train_seconds=_float(row, "train_seconds", where))  # fmt: skip
                if cfg.repeats > 1 and self.seed is not None:
                    ua["repeat_seeds"] = repeat_seeds(self.seed, cfg.repeats)
                    ua["repeat_val_accs"] = self.repeat_val_accs
                ua = {k: v for k, v in ua.items() if v is not None}
        elif self.state == TrialState.PRUNED and self.outcome == "pruned":
            ua["pruned_at_epoch"] = self.epochs
        if self.curve is not None:  # the scores the pruner saw, epoch by epoch (a repeat: its original's)
            intermediate.update(self.curve)
        if self.state == TrialState.PRUNED and intermediate:  # Optuna gives a pruned trial its last score
            values = [intermediate[max(intermediate)]]
        state = self.state
        if state == TrialState.FAIL:
            if row["fail_reason"]:
                ua["fail_reason"] = row["fail_reason"]
            if row["fail_reason"] == INTERRUPTED_REASON:
                ua["interrupted"] = True
        elif state == TrialState.RUNNING:  # as a killed trial: failed, no reason; the next run retries it
            state = TrialState.FAIL
        if self.curve and self.outcome != "duplicate":  # a repeat never asks the pruner
            system.update(_rungs(self.cfg, intermediate, self.recipe.epochs))
        trial = optuna.trial.create_trial(state=state, values=values, params=self.params,
                                          distributions=self.distributions, user_attrs=ua, system_attrs=system,
                                          intermediate_values=intermediate, constraints=constraints)  # fmt: skip
        if row["datetime_start"]:
            try:
                start = datetime.datetime.fromisoformat(row["datetime_start"])
            except ValueError:
                raise HarnessError(f"{where}: datetime_start = {row['datetime_start']!r} is not a date and time") from None
            trial.datetime_start = trial.datetime_complete = start  # the end is not in a CSV
        return trial


def _rungs(cfg: StudyConfig, curve: dict[int, float], epochs: int) -> dict[str, float]:
    """The rung records Optuna's successive-halving pruner keeps on a trial (system attributes
    ``completed_rung_<k>``: the trial's score at rung k's epoch), as the pruner wrote them: the
    objective asks it after every epoch but the last, and at rung k's epoch it records the
    score there, whatever it then decides. Later trials are promoted or pruned against these."""
    if cfg.mode == "pareto" or cfg.pruner.name != "halving":
        return {}
    first, factor = cfg.pruner.min_epochs(cfg.train.epochs), cfg.pruner.reduction_factor
    rungs, k = {}, 0
    while (step := first * factor**k) < epochs and step in curve:
        rungs[f"completed_rung_{k}"] = curve[step]
        k += 1
    return rungs


def _undo(name: str, storage: Any, created: bool, files: list[Path], made: list[Path]) -> None:
    """Remove what a restore that did not finish wrote: its study, and the files and folders
    it created (a database that held other studies keeps them)."""
    import contextlib

    if created and storage is not None:
        with contextlib.suppress(Exception):  # the error that brought us here is the one to report
            optuna.delete_study(study_name=name, storage=storage)
    if storage is not None:
        storage.engine.dispose()
    for f in files:
        with contextlib.suppress(OSError):
            f.unlink()
    for folder in made:  # deepest first
        with contextlib.suppress(OSError):
            folder.rmdir()


def _retried(rows: list[_Row]) -> set[int]:
    """The numbers of the failed trials that ``rows`` retry."""
    return {r.retry_history[-1] for r in rows if r.retry_history}


def _check_latest_seed(rows: list[_Row], cfg: StudyConfig) -> None:
    """Each trial trained with seed study.seed + its number, study.seed as it was when it ran:
    the latest trial's is the study file's, earlier ones may be an earlier study.seed's (`run`
    takes a changed study.seed, with a note). A CSV of another study's seed is refused."""
    seeded = [r for r in rows if r.seed is not None]
    if seeded and seeded[-1].seed != cfg.seed + seeded[-1].number:
        last = seeded[-1]
        raise HarnessError(f"{last.where}: seed {last.seed} is not study.seed + the trial number ({cfg.seed} + "
                           f"{last.number}): a CSV of another study's seed (the latest trial ran with the study "
                           "file's study.seed)")  # fmt: skip


def restore_study(cfg: StudyConfig, storage_url: str, csv_path: Path) -> RestoredStudy:
    """Create study ``cfg.name`` in ``storage_url`` from the trials in ``csv_path``; a later
    ``harness run`` resumes it. Everything is read and checked before anything is written; a
    stop (Ctrl-C, SIGTERM) while it is written waits for the write, then undoes it, so the
    storage never holds half a study.

    Raises:
        HarnessError: a bad CSV, or one of another study file (the message names the trial
            and column). StorageError: the storage already holds a study of this name.
    """
    from harness.runner import interrupts_held
    from harness.storage import check_can_write_in, make_storage, safe_url, sqlite_files, sqlite_path, study_lock
    from harness.study import MODES, STREAMS_ATTR, _study_names, classify, make_pruner, make_sampler
    from harness.study import record_settings, stored_study_names
    from search_spaces import get_search_space

    exists = StorageError(f"{cfg.path}: study {cfg.name!r} already exists in {safe_url(storage_url)}; restore makes "
                          "a new study (give another --storage, or remove that study)")  # fmt: skip
    if cfg.name in stored_study_names(storage_url):
        raise exists
    path = sqlite_path(storage_url)
    if path is not None:
        check_can_write_in(path.parent, "storage")
    if cfg.mode == "single" and cfg.pruner.name == "hyperband":
        raise HarnessError(f"{cfg.path}: pruner.name = \"hyperband\": restore rebuilds the records of the \"halving\" "
                           "and \"median\" pruners, not hyperband's brackets")  # fmt: skip
    space = get_search_space(cfg.search_space, cfg.path.parent)
    rows = read_trials_csv(csv_path)
    columns = list(rows[0])
    if cfg.mode == "single" and cfg.pruner.name != "none" and "intermediate_values" not in columns:
        raise HarnessError(f"{csv_path}: no column 'intermediate_values' (a CSV of an older harness), so the scores "
                           f"the {cfg.pruner.name} pruner compares new trials with cannot be restored")  # fmt: skip
    checked = [_Row(row, cfg, space, csv_path) for row in rows]
    checked.sort(key=lambda r: r.number)
    numbers = [r.number for r in checked]
    twice = sorted(n for n in set(numbers) if numbers.count(n) > 1)
    if twice:
        raise HarnessError(f"{csv_path}: trial {twice[0]} is in it twice")
    if numbers != list(range(len(numbers))):
        gap = next(i for i in range(len(numbers) + 1) if i not in set(numbers))
        raise HarnessError(f"{csv_path}: trial numbers run 0, 1, 2, ... in a study; trial {gap} is missing")
    _check_latest_seed(checked, cfg)
    left_out = 0
    while checked and checked[-1].state == TrialState.WAITING:  # queued work: the next run enqueues it again
        checked.pop()
        left_out += 1
    if not checked:
        raise HarnessError(f"{csv_path}: holds only waiting trials: nothing ran to restore")
    waiting = [r.number for r in checked if r.state == TrialState.WAITING]
    if waiting:
        raise HarnessError(f"{csv_path}: trial {waiting[0]} was waiting, with trials after it that ran: restore keeps "
                           "trial numbers, and a waiting trial's parameters are not in a CSV")  # fmt: skip
    trials = [r.trial(checked[:i], str(csv_path)) for i, r in enumerate(checked)]
    not_restored = [c for c in columns if c and any(row.get(c) for row in rows)
                    and (c in _NOT_RESTORED or (c not in _READ and not c.startswith("param_")))]  # fmt: skip
    # What the write may create, to be removed again if it does not finish: the database's
    # missing folders, and its files (database, journal, lock) that are not there yet.
    made = [] if path is None else [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    files = [] if path is None else [p for p in sqlite_files(path) if not p.exists()]
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # no "A new study created" chatter: the CLI says what it did
    storage = None
    created = False
    with interrupts_held() as stops:  # a stop waits, then undoes the write: never half a study
        try:
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
            with study_lock(storage_url, cfg.name):
                storage = make_storage(storage_url, cfg.heartbeat_interval, cfg.grace_period)
                if cfg.name in _study_names(storage, storage_url):  # made since the check
                    raise exists
                study = optuna.create_study(storage=storage, study_name=cfg.name, directions=MODES[cfg.mode][1],
                                            sampler=make_sampler(cfg), pruner=make_pruner(cfg))  # fmt: skip
                created = True
                record_settings(study, cfg, new=True)
                study.add_trials(trials)
                # The random streams that proposed these trials are not in the CSV: later processes
                # start past as many streams as there are trials (more than the processes a study
                # ran in practice), so none replays an old stream's proposals.
                study.set_user_attr(STREAMS_ATTR, len(trials))
                study.set_user_attr(RESTORED_ATTR, str(csv_path))
                outcomes: dict[str, int] = {}
                for t in study.get_trials(deepcopy=False):
                    outcomes[classify(t)] = outcomes.get(classify(t), 0) + 1
                if stops:
                    raise KeyboardInterrupt  # undone below; the held stop then ends the command
        except BaseException:
            _undo(cfg.name, storage, created, files, made)
            if not stops:
                raise
        finally:
            if storage is not None:
                storage.engine.dispose()
    return RestoredStudy(len(trials), outcomes, left_out, not_restored)
