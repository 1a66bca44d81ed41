"""The per-trial pipeline: suggest -> budget gate -> duplicate check -> build -> fit -> score -> record.

Trial outcomes, as recorded in the storage:

* COMPLETE: trained; value = validation accuracy; test accuracy etc. in user attrs. With
  ``study.repeats`` = k > 1 the candidate trains with k seeds in lockstep (``repeat_seeds``):
  the value, ``val_acc``, ``val_history`` and what the pruner sees are the k runs' means,
  ``repeat_val_accs`` and ``repeat_test_accs`` hold each run's, and the stored network,
  ``test_acc`` and ``target_met`` are the first seed's (the network a single run would have
  trained: export reproduces its test accuracy); ``train_seconds`` is the k runs' total.
* PRUNED with user attr ``rejected = "over_budget"``: counted over the budget, never built
  or trained; ``trainable_params`` and ``reject_reason`` recorded, and the constraint
  ``params_over_budget > 0`` tells the sampler the region is infeasible.
* PRUNED with ``rejected = "invalid"``: the sampled layout is not buildable (feature map
  shrinks to nothing), or the search space rejected the candidate itself (a user's space
  raising ``optuna.TrialPruned``); also infeasible, also never built.
* ``duplicate_of = N``: the sampler proposed exactly the parameters of an earlier trial N,
  and they built the same architecture, which was already trained (or is training); not
  trained again. COMPLETE with trial N's value when N completed, else PRUNED with N's
  validation curve, so the sampler still learns what that point scored; never counted as a
  trained result.
* PRUNED without ``rejected``: stopped by the pruner after ``epochs_run`` epochs.
* FAIL: an error during training (``fail_reason`` recorded). Or a user's search space
  failed on the trial's proposal (raised, or returned no valid ArchSpec): ``fail_reason``
  names the space's file and the error, and the run stops with :class:`SearchSpaceFailure`
  (a failure of its own: not retried on resume).

Every trial records where its parameters came from in ``origin``: ``baseline`` (the seed
network), ``enqueued`` (a study file's ``[[enqueue]]``), ``retry`` (re-run of a dead
trial, ``retry_of`` = its number) or ``sampler`` (with ``sampler_stream`` and
``sampler_seed``: the process's random stream).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import optuna
from optuna.trial import FrozenTrial, TrialState

import harness
from harness.config import StudyConfig
from harness.dashboard import note_rejection
from harness.data import MnistSplits
from harness.errors import HarnessError, one_line
from harness.runner import raise_if_stop_was_lost
from harness.spec import ArchSpec, InvalidSpecError, count_params
from search_spaces import SpaceResultError, baseline_spec, changed_distributions, get_search_space, outside_space
from search_spaces.recipe import suggest_recipe

__all__ = ["BUDGET_CONSTRAINT", "INTERRUPTED_REASON", "PARAM_COUNT_ATTR", "TRAINING_FAILURES", "Objective", "SamplerStream",
           "SearchSpaceFailure", "repeat_seeds"]


class SearchSpaceFailure(HarnessError):
    """A user's search space failed on a trial's proposal: the trial is FAIL, the run stops."""


def repeat_seeds(seed: int, repeats: int) -> list[int]:
    """The seeds of a trial trained ``repeats`` times: its own ``seed`` first (the network a
    single run trains), then seeds derived from (seed, i) with NumPy's SeedSequence. Derived,
    not seed + i * stride: torch's CPU generator keeps only the low 32 bits of a seed, and
    seed + i would be the next trial's seed."""
    import numpy as np

    return [seed] + [int(np.random.SeedSequence([seed, i]).generate_state(1)[0]) for i in range(1, repeats)]


#: The ``fail_reason`` of a trial a stop ended (with user attr ``interrupted``).
INTERRUPTED_REASON = "interrupted (Ctrl-C or SIGTERM)"
BUDGET_CONSTRAINT = "params_over_budget"  # constraint value = params - budget (feasible <= 0)
#: Trial user attribute holding the trainable parameter count (read it with
#: harness.study.param_count). Not "params": optuna-dashboard lists Optuna's own trial.params
#: (the hyperparameters) right beside the user attributes.
PARAM_COUNT_ATTR = "trainable_params"


def _training_failures() -> tuple[type[BaseException], ...]:
    import torch

    from harness.train import CpuOutOfMemoryError, DivergedError

    return (DivergedError, torch.OutOfMemoryError, CpuOutOfMemoryError)


#: Failures that end one trial as FAIL (reason recorded) while the study goes on.
TRAINING_FAILURES = _training_failures()


#: The reject_reason of a retry whose parameters the search space no longer allows begins so.
OUTSIDE_SPACE = "outside the search space"


@dataclasses.dataclass(frozen=True)
class SamplerStream:
    """The random stream of the process proposing trials (see :func:`harness.study.open_study`)."""

    index: int  # 0 for the first proposing process of a study, then 1, 2, ... in start order
    seed: int  # the sampler's seed: study.seed for stream 0, derived from (study.seed, index) after


class TrialOrigin(NamedTuple):
    """Where a trial came from (see :func:`harness.study.origin_of`)."""

    kind: str  # "baseline" | "enqueued" | "retry" | "sampler"
    retry_of: int | None  # number of the failed trial this one retries
    has_params: bool  # enqueued with its parameters fixed


def _origin(trial: optuna.Trial) -> TrialOrigin:
    """Where ``trial`` came from, read from its stored copy."""
    from harness.study import origin_of  # study imports this module

    frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
    # The retry callback marks the re-enqueued trial with the failed one's number; Optuna keeps
    # an enqueued trial's parameters in its "fixed_params" system attribute.
    attrs = frozen.system_attrs
    return TrialOrigin(origin_of(frozen), attrs.get("failed_trial"), bool(attrs.get("fixed_params")))


def _drawing(exc: BaseException) -> dict[str, optuna.distributions.BaseDistribution]:
    """The parameter (name: distribution) a trial was drawing when ``exc`` was raised, read from
    the traceback's innermost ``Trial._suggest`` frame; empty where there is none."""
    drawing: dict[str, optuna.distributions.BaseDistribution] = {}
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        name, dist = frame.f_locals.get("name"), frame.f_locals.get("distribution")
        if (frame.f_code.co_name == "_suggest" and isinstance(name, str)
                and isinstance(dist, optuna.distributions.BaseDistribution)):  # fmt: skip
            drawing = {name: dist}
        tb = tb.tb_next
    return drawing


def _mean_curve(curves: list[list[float]]) -> list[float]:
    """Epoch by epoch, the mean of several runs' curves (one run's: itself)."""
    return [sum(values) / len(values) for values in zip(*curves, strict=True)]


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
        on_epoch: Callable[[FrozenTrial | optuna.Trial, int, float, float], None] | None = None,
        artifact_store: Any = None,
        stream: SamplerStream | None = None,
    ):
        self.cfg = cfg
        self.artifact_store = artifact_store  # where trained weights go (None: not kept)
        self.space = get_search_space(cfg.search_space, cfg.path.parent)
        self.load_data = load_data
        self.device_label = device_label
        self.on_epoch = on_epoch
        self.stream = stream
        if fit_fn is not None and cfg.repeats > 1:
            raise ValueError(f"study.repeats = {cfg.repeats} trains with harness.train.fit_lockstep, not a custom fit_fn")
        if fit_fn is None:
            from harness.train import fit as fit_fn
        self.fit_fn = fit_fn
        self.trained = 0  # trials that reached training (for tests: rejections never count)
        self._teacher: tuple[Any, dict[str, Any]] | None = None  # (network, record), loaded once per process

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        try:
            return self._run(trial)
        except KeyboardInterrupt:  # Optuna marks it FAIL; the next run retries it once
            self.mark_interrupted(trial)
            raise

    @staticmethod
    def mark_interrupted(trial: optuna.Trial) -> None:
        """Record that a stop (Ctrl-C, SIGTERM) ended ``trial``: a resumed run retries it."""
        trial.set_user_attr("interrupted", True)
        trial.set_user_attr("fail_reason", INTERRUPTED_REASON)

    def _run(self, trial: optuna.Trial) -> float | tuple[float, float]:
        import torch

        from harness.model import build
        from harness.train import cpu_out_of_memory, evaluate, precision_settings

        origin = _origin(trial)
        is_baseline = bool(trial.user_attrs.get("baseline", False))
        # recorded before the space draws: a trial stopped while drawing is told apart (it has
        # an origin and no spec) and not retried (storage.RetryStaleTrial.proposal_whole)
        trial.set_user_attr("origin", origin.kind)
        if origin.retry_of is not None:
            trial.set_user_attr("retry_of", origin.retry_of)
        outside = self._retry_outside_space(trial, origin)
        if is_baseline and (self.space.baseline_params is None or not origin.has_params or outside):
            # the seed network is not a point of this space, (a retry of) a baseline enqueued
            # before the space declared it one, or a baseline retry whose parameters an edited
            # space no longer allows: built directly, nothing sampled
            spec = baseline_spec()
        else:
            if outside:
                raise self._reject_invalid(trial, f"{OUTSIDE_SPACE}, changed since trial {origin.retry_of} was "
                                                  f"proposed: {outside}", kind=None)  # fmt: skip
            spec = self._suggest(trial)
        train_cfg = self.cfg.train
        if self.cfg.search_recipe and not is_baseline:  # the baseline keeps the study's recipe
            train_cfg = suggest_recipe(trial, train_cfg, self.cfg.recipe_fields)
        seed = self.cfg.seed + trial.number
        trial.set_user_attr("spec", spec.to_json())
        trial.set_user_attr("arch", spec.describe())
        trial.set_user_attr("baseline", is_baseline)
        if origin.kind == "sampler" and self.stream is not None:
            trial.set_user_attr("sampler_stream", self.stream.index)
            trial.set_user_attr("sampler_seed", self.stream.seed)
        trial.set_user_attr("seed", seed)
        if self.cfg.search_recipe:
            trial.set_user_attr("recipe", dataclasses.asdict(train_cfg))
        params = self._gate(trial, spec)  # raises TrialPruned when over budget / invalid
        multi = self.cfg.mode == "pareto"
        if origin.kind == "sampler":
            repeat = self._repeat_of(trial, multi)  # raises TrialPruned for a repeat of an unfinished trial
            if repeat is not None:
                return repeat

        data = self.load_data()
        seeds = repeat_seeds(seed, self.cfg.repeats)
        models = [build(spec, seed=s) for s in seeds]
        model = models[0]  # the network stored and exported: the one a single run would train
        self.trained += 1
        if len(seeds) > 1:
            trial.set_user_attr("repeat_seeds", seeds)

        trained_scores: dict[int, float] = {}  # with weight averaging: the trained weights' score per epoch
        averaged_scores: list[float] = []

        def report(epoch: int, val_acc: float) -> None:
            raise_if_stop_was_lost()
            trial.set_user_attr("epochs_run", epoch)
            averaged_scores.append(val_acc)
            if self.on_epoch is not None:
                self.on_epoch(trial, epoch, val_acc, trained_scores.get(epoch, math.nan))
            if multi:  # Optuna has no intermediate values (so no pruning) for several objectives
                return
            # With weight averaging the pruner still compares the trained weights' scores: what
            # every trial without averaging reports, and what the rungs were calibrated on. The
            # average lags early (stage 17: 0.32 against 0.97 at epoch 5 of 20, decay 0.9998).
            trial.report(trained_scores.get(epoch, val_acc), epoch)
            # A rung can fall on the last epoch (8 epochs, rungs 2/4/8): a finished model is a
            # result, not a candidate to stop, so the last epoch is never pruned. Nor is the
            # baseline: it is the study's reference (and retrain's), so it runs its whole
            # schedule; it still asks, so its scores join the rungs' competition.
            if epoch < train_cfg.epochs and trial.should_prune() and not is_baseline:
                trial.set_user_attr("pruned_at_epoch", epoch)
                if trained_scores:  # both scores kept: intermediate values hold only the trained ones
                    trial.set_user_attr("val_history", averaged_scores)
                    trial.set_user_attr("raw_val_history", [trained_scores[e] for e in sorted(trained_scores)])
                raise optuna.TrialPruned(f"pruned by the pruner after epoch {epoch} (val {val_acc:.4f})")

        trial.set_user_attr("device", self.device_label)
        trial.set_user_attr("torch_version", torch.__version__)
        trial.set_user_attr("harness_version", harness.__version__)
        trial.set_user_attr("precision", precision_settings(train_cfg, data.device))
        trial.set_user_attr("train_images", len(data.train_x))
        # the last len(val) training images (at least) never trained it: a distillation
        # teacher exported from this trial must not be used by a search validating on more
        trial.set_user_attr("held_out_train_images", len(data.val_x))
        # fit()'s optional arguments, passed only when used (custom fit_fns need not take them):
        # the teacher, and with weight averaging where the trained weights' scores go
        fit_extras: dict[str, Any] = {}
        if train_cfg.ema_decay > 0:
            fit_extras["on_raw_epoch"] = trained_scores.__setitem__
        try:
            if train_cfg.teacher:
                fit_extras["teacher"], record = self._load_teacher(data.device)
                trial.set_user_attr("teacher", record)
            if len(models) == 1:
                results = [self.fit_fn(model, data, train_cfg, seed=seed, on_epoch=report, **fit_extras)]
            else:
                from harness.train import fit_lockstep

                results = fit_lockstep(models, data, train_cfg, seeds=seeds, on_epoch=report, **fit_extras)
            # Scored in float32 whatever the training precision: the exported files run in
            # float32, and export checks them against the first number image for image.
            test_accs = [evaluate(m, data.test_x, data.test_y, train_cfg.eval_batch_size) for m in models]
        except Exception as exc:
            if isinstance(exc, optuna.TrialPruned):
                raise
            oom = cpu_out_of_memory(exc)  # a plain RuntimeError: made one of TRAINING_FAILURES
            reason = oom or exc
            trial.set_user_attr("fail_reason", f"{reason.__class__.__name__}: {reason}"[:500])
            if oom is not None:
                raise oom from exc
            raise
        result, val = results[0], sum(r.val_acc for r in results) / len(results)
        test_acc = test_accs[0]
        trial.set_user_attr("val_acc", val)
        trial.set_user_attr("test_acc", test_acc)
        trial.set_user_attr("test_images", len(data.test_x))
        trial.set_user_attr("target_met", bool(test_acc >= self.cfg.target))
        trial.set_user_attr("epochs_run", result.epochs_run)
        trial.set_user_attr("train_seconds", round(sum(r.seconds for r in results), 3))
        trial.set_user_attr("val_history", _mean_curve([r.history for r in results]))
        if result.raw_history:  # weight averaging: the trained weights' scores, the paired comparison
            trial.set_user_attr("raw_val_history", _mean_curve([r.raw_history for r in results]))
        if len(results) > 1:
            trial.set_user_attr("repeat_val_accs", [r.val_acc for r in results])
            trial.set_user_attr("repeat_test_accs", test_accs)
        if self.artifact_store is not None:
            from harness.artifacts import save_weights

            save_weights(model, trial, self.artifact_store)
        return (val, float(params)) if multi else val

    def _load_teacher(self, device) -> tuple[Any, dict[str, Any]]:
        """The study's distillation teacher on ``device`` and its record, loaded once.

        ``harness run`` checked it before the study was opened (:func:`harness.runner.plan_run`);
        checked again here for objectives built directly.
        """
        if self._teacher is None:
            from harness.teacher import check_search_teacher, load_teacher, teacher_record

            path = self.cfg.teacher_path()
            teacher = load_teacher(path, device)
            check_search_teacher(path, self.cfg.data.val_size)
            self._teacher = (teacher, teacher_record(path))
        return self._teacher

    def _suggest(self, trial: optuna.Trial) -> ArchSpec:
        """The space's architecture for ``trial``. A user's space that rejects the candidate
        (``optuna.TrialPruned``) prunes it as invalid; one that fails (raises, calls sys.exit,
        returns no valid ArchSpec) fails the trial and stops the run (SearchSpaceFailure):
        every later proposal would likely fail alike, and it is the space's to fix."""
        import sqlalchemy

        try:
            return self.space.suggest(trial)
        except optuna.TrialPruned as exc:
            raise self._reject_invalid(trial, "the search space rejected it" + (f": {exc}" if str(exc) else "")) from None
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError):
            raise  # the storage's, not the space's
        except (Exception, SystemExit) as exc:  # SystemExit: Optuna would let it end the process, the trial RUNNING
            if not self.space.where and not isinstance(exc, SystemExit):
                raise  # a registered space's bug: in full
            raise self._space_failed(trial, exc) from None

    def _retry_outside_space(self, trial: optuna.Trial, origin: TrialOrigin) -> str | None:
        """Why a retry's parameters (those of the trial it retries) are no point of the space as
        it is now (a user's file edited since), else None. Such a retry is rejected as invalid,
        not trained (it trained a network outside the space, under the old distribution), and
        a baseline's is built directly (the seed network it stands for)."""
        if origin.retry_of is None or not trial.params:
            return None
        recipe = self.cfg.train if self.cfg.search_recipe else None
        return outside_space(self.space, trial.params, recipe, self.cfg.recipe_fields)

    def _space_failed(self, trial: optuna.Trial, exc: BaseException) -> SearchSpaceFailure:
        """Record why the space failed on ``trial`` (its ``fail_reason``) and say it in one line."""
        where = self.space.where or f"search space {self.space.name!r}"
        if isinstance(exc, SpaceResultError):
            what = f"{where} {exc}"
        else:
            what = f"{where} failed: {exc.__class__.__name__}: {exc}"
            drawing = _drawing(exc)
            if drawing:  # Optuna's "Cannot set different distribution kind ..." names no parameter: say which
                earlier = [t for t in trial.study.get_trials(deepcopy=False) if t.number != trial.number]
                what += "".join(f"; {c}" for c in changed_distributions(drawing, earlier))
        what = one_line(what, limit=1000)
        trial.set_user_attr("fail_reason", f"search space: {what}"[:500])
        return SearchSpaceFailure(
            f"{self.cfg.path}: study.search_space: trial {trial.number}: {what} (trial {trial.number} is marked "
            "failed and is not retried; fix the space and run again)"
        )

    def _reject_invalid(self, trial: optuna.Trial, reason: str, kind: str | None = "invalid layout") -> optuna.TrialPruned:
        """Record ``trial`` as rejected before anything is built (``invalid``, infeasible for
        the sampler); the caller raises what this returns, which makes it PRUNED. ``kind``:
        what the dashboard's note calls it before the reason (None: the reason says)."""
        trial.set_user_attr("rejected", "invalid")
        trial.set_user_attr("reject_reason", reason)
        note_rejection(trial, f"{kind}: {reason}" if kind else reason)
        trial.set_constraint(BUDGET_CONSTRAINT, 1.0)
        trial.set_user_attr(BUDGET_CONSTRAINT, 1.0)  # mirrored for optuna-dashboard (see _gate)
        return optuna.TrialPruned(f"invalid architecture: {reason}")

    def _gate(self, trial: optuna.Trial, spec: ArchSpec) -> int:
        """Count parameters; reject (PRUNED, infeasible) over budget or unbuildable specs."""
        try:
            params = count_params(spec)
        except InvalidSpecError as exc:
            raise self._reject_invalid(trial, str(exc)) from None
        trial.set_user_attr(PARAM_COUNT_ATTR, params)
        trial.set_constraint(BUDGET_CONSTRAINT, float(params - self.cfg.budget))
        # The same value as a user attribute: optuna-dashboard 0.21 shows "constraints: []" for
        # Optuna 5's set_constraint (it reads only the pre-5 list, which would make Optuna see
        # the constraint twice), so this is where the dashboard shows it.
        trial.set_user_attr(BUDGET_CONSTRAINT, params - self.cfg.budget)
        if params > self.cfg.budget:
            reason = f"{params:,} parameters > budget {self.cfg.budget:,}"
            trial.set_user_attr("rejected", "over_budget")
            trial.set_user_attr("reject_reason", reason)
            note_rejection(trial, reason)
            raise optuna.TrialPruned(f"rejected before training: {reason}")
        return params

    def _repeat_of(self, trial: optuna.Trial, multi: bool) -> float | tuple[float, ...] | None:
        """The earlier result when this sampler proposal repeats an earlier trial: its parameters,
        and the architecture they built (a user's space may draw without Optuna, or draw
        nothing: equal parameters alone do not make the same network).

        Training the same point again would only add seed noise to the ranking. Only earlier
        trials count (two workers proposing one point at once: the later one yields, once the
        earlier has built its architecture; one still drawing is no original yet), and only
        trained or training ones (a FAILed original is tried again). The repeat is marked
        ``duplicate_of`` and:

        * original COMPLETE: completes with the original's value(s), as Optuna's FAQ
          recommends, so the sampler sees the point's score (a PRUNED trial would rank below
          every completed one in TPE and push the search away from a good point);
        * original PRUNED by the pruner or still RUNNING: pruned, with the original's
          validation curve copied, so it ranks where the original does.

        Duplicates never count as trained results (:func:`harness.study.classify`).
        """
        for t in sorted(trial.study.get_trials(deepcopy=False), key=lambda t: t.number):
            if t.number >= trial.number:
                break
            if t.params != trial.params or "rejected" in t.user_attrs or "duplicate_of" in t.user_attrs:
                continue
            if t.user_attrs.get("spec") is None or t.user_attrs["spec"] != trial.user_attrs.get("spec"):
                # the same parameters, another network (or none built yet, still drawing): a space that
                # draws some of its choices outside Optuna, or none at all, the seed network built
                # outside the space. (Equal parameters give equal recipes: the study's [train] is fixed.)
                continue
            if t.state not in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.PRUNED):
                continue
            trial.set_user_attr("duplicate_of", t.number)
            if t.state == TrialState.COMPLETE:
                return tuple(t.values) if multi else t.values[0]
            if not multi:
                for step, value in sorted(t.intermediate_values.items()):
                    trial.report(value, step)
            raise optuna.TrialPruned(f"repeats trial {t.number}: not trained again")
        return None
