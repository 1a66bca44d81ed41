"""Optuna study: storage, sampler, pruner, the baseline trial, the objective, the summary.

Trial outcomes, as recorded in the storage:

* COMPLETE: trained; value = validation accuracy; test accuracy etc. in user attrs.
* PRUNED with user attr ``rejected = "over_budget"``: counted over the budget, never built
  or trained; ``params`` and ``reject_reason`` recorded, and the constraint
  ``params_over_budget > 0`` tells the sampler the region is infeasible.
* PRUNED with ``rejected = "invalid"``: the sampled layout is not buildable (feature map
  shrinks to nothing); also infeasible, also never built.
* PRUNED without ``rejected``: stopped by the pruner after ``epochs_run`` epochs.
* FAIL: an error during training (``fail_reason`` recorded).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

import harness
from harness.config import StudyConfig
from harness.data import MnistSplits
from harness.errors import StorageError
from harness.storage import make_storage, study_lock
from harness.spec import ArchSpec, InvalidSpecError, count_params
from search_spaces import SearchSpace, baseline_spec, get_search_space
from search_spaces.recipe import suggest_recipe

__all__ = [
    "BUDGET_CONSTRAINT",
    "TRAINING_FAILURES",
    "Objective",
    "StudySummary",
    "classify",
    "enqueue_baseline",
    "feasible_trials",
    "pareto_front",
    "rank_key",
    "open_study",
    "summarize",
    "val_acc",
]

def _training_failures() -> tuple[type[BaseException], ...]:
    import torch

    from harness.train import DivergedError

    return (DivergedError, torch.OutOfMemoryError)


#: Failures that end one trial as FAIL (reason recorded) while the study goes on.
TRAINING_FAILURES = _training_failures()
BUDGET_CONSTRAINT = "params_over_budget"  # constraint value = params - budget (feasible <= 0)


def _study_attrs(cfg: StudyConfig) -> dict[str, Any]:
    return {
        "budget": cfg.budget, "target": cfg.target, "search_space": cfg.search_space, "mode": cfg.mode,
        "search_recipe": cfg.search_recipe, "dataset": "MNIST",
    }  # fmt: skip


#: Objective names and directions per study mode (what optuna-dashboard shows).
MODES = {
    "single": (["val_acc"], ["maximize"]),
    "pareto": (["val_acc", "params"], ["maximize", "minimize"]),
}


def _sampler(cfg: StudyConfig) -> optuna.samplers.BaseSampler:
    if cfg.sampler.name == "random":
        return optuna.samplers.RandomSampler(seed=cfg.seed)
    return optuna.samplers.TPESampler(seed=cfg.seed, n_startup_trials=cfg.sampler.n_startup_trials)


def _pruner(cfg: StudyConfig) -> optuna.pruners.BasePruner:
    if cfg.pruner.name == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=cfg.pruner.n_startup_trials, n_warmup_steps=cfg.pruner.n_warmup_steps
    )


def open_study(cfg: StudyConfig, storage_url: str, *, create: bool = True) -> optuna.Study:
    """Create the study (with its attributes and baseline trial) or resume it.

    Creation and the baseline enqueue happen under an inter-process lock, so any number of
    workers may call this at once: the study and its baseline are created exactly once.
    With ``create=False`` the study must already exist (``harness status``).

    Raises:
        StorageError: bad or unreachable storage, missing study (``create=False``), or an
            existing study whose budget/target/search space differ from ``cfg`` (refused
            rather than mixing trials of two settings).
    """
    with study_lock(storage_url, cfg.name):  # Optuna's table creation races too
        storage = make_storage(storage_url, cfg.heartbeat_interval, cfg.grace_period)
        try:
            names = {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
        except sqlalchemy.exc.SQLAlchemyError as exc:
            raise StorageError(f"cannot read storage {storage_url!r}: {str(exc).splitlines()[0]}") from None
        if cfg.name not in names and not create:
            raise StorageError(f"no study named {cfg.name!r} in {storage_url}")
        if cfg.name in names:
            _check_study_attrs(cfg, storage_url, optuna.load_study(study_name=cfg.name, storage=storage).user_attrs)
        study = optuna.create_study(
            storage=storage,
            study_name=cfg.name,
            directions=MODES[cfg.mode][1],
            sampler=_sampler(cfg),
            pruner=_pruner(cfg),
            load_if_exists=True,
        )
        if cfg.name not in names:
            for key, value in _study_attrs(cfg).items():
                study.set_user_attr(key, value)
            study.set_user_attr("train", dataclasses.asdict(cfg.train))  # the recipe, for the record
            study.set_metric_names(MODES[cfg.mode][0])  # what optuna-dashboard labels the objectives
        if create:
            enqueue_baseline(study, get_search_space(cfg.search_space))
    return study


def _check_study_attrs(cfg: StudyConfig, storage_url: str, attrs: dict[str, Any]) -> None:
    for key, value in _study_attrs(cfg).items():
        if attrs.get(key) != value:
            raise StorageError(
                f"{cfg.path}: study {cfg.name!r} in {storage_url} has {key} = {attrs.get(key)!r}, "
                f"but the study file says {value!r}; refusing to mix them (use another study name)"
            )


def enqueue_baseline(study: optuna.Study, space: SearchSpace) -> bool:
    """Enqueue the seed network as a trial unless the study already has one. True if enqueued.

    In the seed space the baseline is a point of the space (its parameters are enqueued, so
    the sampler learns from it); in other spaces it is enqueued without parameters and the
    objective builds the seed network itself (:func:`search_spaces.baseline_spec`).
    """
    trials = study.get_trials(deepcopy=False)
    if any(t.user_attrs.get("baseline") for t in trials):
        return False
    study.enqueue_trial(dict(space.baseline_params or {}), user_attrs={"baseline": True})
    return True


class Objective:
    """The per-trial pipeline: suggest -> budget gate -> build -> fit -> score -> record.

    ``load_data`` is called only for trials that pass the budget gate, so a study whose every
    candidate is over budget never touches the data or the device.
    """

    def __init__(
        self,
        cfg: StudyConfig,
        load_data: Callable[[], MnistSplits],
        *,
        device_label: str,
        fit_fn: Callable[..., Any] | None = None,
        on_epoch: Callable[[FrozenTrial | optuna.Trial, int, float], None] | None = None,
        artifact_store: Any = None,
    ):
        self.cfg = cfg
        self.artifact_store = artifact_store  # where trained weights go (None: not kept)
        self.space = get_search_space(cfg.search_space)
        self.load_data = load_data
        self.device_label = device_label
        self.on_epoch = on_epoch
        if fit_fn is None:
            from harness.train import fit as fit_fn
        self.fit_fn = fit_fn
        self.trained = 0  # trials that reached training (for tests: rejections never count)

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        import torch

        from harness.model import build
        from harness.train import evaluate

        is_baseline = bool(trial.user_attrs.get("baseline", False))
        if is_baseline and self.space.baseline_params is None:
            spec = baseline_spec()  # the seed network is not a point of this space
        else:
            spec = self.space.suggest(trial)
        train_cfg = self.cfg.train
        if self.cfg.search_recipe and not is_baseline:  # the baseline keeps the study's recipe
            train_cfg = suggest_recipe(trial, train_cfg)
        seed = self.cfg.seed + trial.number
        trial.set_user_attr("spec", spec.to_json())
        trial.set_user_attr("arch", spec.describe())
        trial.set_user_attr("baseline", is_baseline)
        trial.set_user_attr("seed", seed)
        if self.cfg.search_recipe:
            trial.set_user_attr("recipe", dataclasses.asdict(train_cfg))
        params = self._gate(trial, spec)  # raises TrialPruned when over budget / invalid
        multi = self.cfg.mode == "pareto"

        data = self.load_data()
        model = build(spec, seed=seed)
        self.trained += 1

        def report(epoch: int, val_acc: float) -> None:
            trial.set_user_attr("epochs_run", epoch)
            if self.on_epoch is not None:
                self.on_epoch(trial, epoch, val_acc)
            if multi:  # Optuna has no intermediate values (so no pruning) for several objectives
                return
            trial.report(val_acc, epoch)
            if trial.should_prune():
                trial.set_user_attr("pruned_at_epoch", epoch)
                raise optuna.TrialPruned(f"pruned by the pruner after epoch {epoch} (val {val_acc:.4f})")

        trial.set_user_attr("device", self.device_label)
        trial.set_user_attr("torch_version", torch.__version__)
        trial.set_user_attr("harness_version", harness.__version__)
        try:
            result = self.fit_fn(model, data, train_cfg, seed=seed, on_epoch=report)
        except Exception as exc:
            if not isinstance(exc, optuna.TrialPruned):
                trial.set_user_attr("fail_reason", f"{exc.__class__.__name__}: {exc}"[:500])
            raise
        # Scored in float32 whatever the training precision: the exported files run in float32,
        # and export checks them against this number image for image.
        test_acc = evaluate(model, data.test_x, data.test_y, self.cfg.train.eval_batch_size, "off")
        trial.set_user_attr("val_acc", result.val_acc)
        trial.set_user_attr("test_acc", test_acc)
        trial.set_user_attr("test_images", len(data.test_x))
        trial.set_user_attr("target_met", bool(test_acc >= self.cfg.target))
        trial.set_user_attr("epochs_run", result.epochs_run)
        trial.set_user_attr("train_seconds", round(result.seconds, 3))
        trial.set_user_attr("val_history", result.history)
        if self.artifact_store is not None:
            from harness.artifacts import save_weights

            save_weights(model, trial, self.artifact_store)
        return (result.val_acc, float(params)) if multi else result.val_acc

    def _gate(self, trial: optuna.Trial, spec: ArchSpec) -> int:
        """Count parameters; reject (PRUNED, infeasible) over budget or unbuildable specs."""
        try:
            params = count_params(spec)
        except InvalidSpecError as exc:
            trial.set_user_attr("rejected", "invalid")
            trial.set_user_attr("reject_reason", str(exc))
            trial.set_constraint(BUDGET_CONSTRAINT, 1.0)
            raise optuna.TrialPruned(f"invalid architecture: {exc}") from None
        trial.set_user_attr("params", params)
        trial.set_constraint(BUDGET_CONSTRAINT, float(params - self.cfg.budget))
        if params > self.cfg.budget:
            reason = f"{params:,} parameters > budget {self.cfg.budget:,}"
            trial.set_user_attr("rejected", "over_budget")
            trial.set_user_attr("reject_reason", reason)
            raise optuna.TrialPruned(f"rejected before training: {reason}")
        return params


# ---- summary ------------------------------------------------------------------------------


def val_acc(t: FrozenTrial) -> float:
    """Validation accuracy of a finished trial, in single- and multi-objective studies alike."""
    if "val_acc" in t.user_attrs:
        return float(t.user_attrs["val_acc"])
    return t.values[0] if t.values else float("nan")


def classify(t: FrozenTrial) -> str:
    """One of: complete, over_budget, invalid, pruned, failed, running, waiting."""
    if t.state == TrialState.COMPLETE:
        return "complete"
    if t.state == TrialState.PRUNED:
        return {"over_budget": "over_budget", "invalid": "invalid"}.get(t.user_attrs.get("rejected"), "pruned")
    if t.state == TrialState.FAIL:
        return "failed"
    return t.state.name.lower()


@dataclass
class StudySummary:
    study_name: str
    budget: int
    target: float
    counts: dict[str, int]
    baseline: FrozenTrial | None
    best: FrozenTrial | None  # best feasible COMPLETE trial by validation accuracy
    target_met_under_budget: list[int]  # trial numbers

    def lines(self) -> list[str]:
        c = self.counts
        out = [
            f"study {self.study_name!r}: budget {self.budget:,} params, target test acc {self.target:.2%}",
            f"trials: {c['complete']} complete, {c['pruned']} pruned by pruner, "
            f"{c['over_budget']} rejected over budget, {c['invalid']} invalid, {c['failed']} failed"
            + (f", {c['running']} running" if c.get("running") else "")
            + (f", {c['waiting']} waiting" if c.get("waiting") else ""),
        ]
        b = self.baseline
        if b is None:
            out.append("baseline: not run yet")
        elif b.state == TrialState.COMPLETE:
            out.append(f"baseline: trial {b.number}, {_trial_line(b)}")
        else:
            out.append(f"baseline: trial {b.number}, {classify(b)}")
        if self.best is None:
            out.append("best: no completed trial within the budget yet")
        else:
            out.append(f"best: trial {self.best.number}, {_trial_line(self.best)}")
            out.append(f"      {self.best.user_attrs.get('arch', '')}")
        if self.target_met_under_budget:
            nums = ", ".join(str(n) for n in self.target_met_under_budget[:10])
            out.append(f"target {self.target:.2%} met under budget: YES (trials {nums})")
        else:
            out.append(f"target {self.target:.2%} met under budget: no")
        return out


def _trial_line(t: FrozenTrial) -> str:
    ua = t.user_attrs
    test = ua.get("test_acc")
    test_s = f"{test:.4f}" if isinstance(test, (int, float)) and not math.isnan(test) else "n/a"
    return f"{ua.get('params', 0):,} params, val {val_acc(t):.4f}, test {test_s}, {ua.get('epochs_run', 0)} epochs"


def feasible_trials(study: optuna.Study) -> list[FrozenTrial]:
    """COMPLETE trials within the study's budget (what export, retrain and the summary rank)."""
    budget = int(study.user_attrs.get("budget", 0))
    return [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state == TrialState.COMPLETE and t.user_attrs.get("params", math.inf) <= budget
    ]


def rank_key(t: FrozenTrial) -> tuple[float, int]:
    """Sort key, best first: highest validation accuracy, then fewer parameters."""
    return (-val_acc(t), t.user_attrs.get("params", 0))


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the (params, accuracy) points not dominated by fewer params AND higher
    accuracy, ordered by parameter count."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def summarize(study: optuna.Study) -> StudySummary:
    attrs = study.user_attrs
    budget, target = int(attrs.get("budget", 0)), float(attrs.get("target", 1.0))
    trials = study.get_trials(deepcopy=False)
    counts = dict.fromkeys(["complete", "pruned", "over_budget", "invalid", "failed", "running", "waiting"], 0)
    for t in trials:
        counts[classify(t)] = counts.get(classify(t), 0) + 1
    # A retried baseline (after a crash) carries the flag too: report the one that finished.
    baselines = sorted((t for t in trials if t.user_attrs.get("baseline")), key=lambda t: t.state != TrialState.COMPLETE)
    feasible = feasible_trials(study)
    best = min(feasible, key=rank_key, default=None)
    met = [t.number for t in feasible if t.user_attrs.get("target_met")]
    return StudySummary(study.study_name, budget, target, counts, baselines[0] if baselines else None, best, met)

