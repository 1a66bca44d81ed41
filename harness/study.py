"""Optuna study: storage, per-process sampler streams, pruner, baseline and enqueued trials, summary.

The per-trial pipeline and what each trial outcome means are in :mod:`harness.objective`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState

from harness.config import StudyConfig, toml_value
from harness.errors import MissingStudyError, StorageError, innermost_message
from harness.objective import OUTSIDE_SPACE, PARAM_COUNT_ATTR, SamplerStream
from harness.storage import STALE_RETRIES, RetryStaleTrial, check_optuna_sqlite, make_storage, redact, safe_url, sqlite_path, study_lock
from search_spaces import SearchSpace, changed_distributions, enqueue_params, get_search_space

__all__ = [
    "StoredStudy",
    "StudySummary",
    "changed_search_settings",
    "claim_sampler_stream",
    "classify",
    "counted",
    "enqueue_baseline",
    "feasible_trials",
    "make_pruner",
    "make_sampler",
    "open_existing_study",
    "open_study",
    "origin_of",
    "outcome_text",
    "param_count",
    "pareto_front",
    "pct_against",
    "rank_key",
    "record_settings",
    "search_settings",
    "storage_to_write",
    "stored_study_names",
    "stream_seed",
    "summarize",
    "val_acc",
]

STREAMS_ATTR = "sampler_streams"  # study user attr: random streams handed out so far


def _stored_search_recipe(cfg: StudyConfig) -> bool | list[str]:
    """The recipe search as stored with a study: true for the five fields of `true` however the
    file names them (studies stored before field lists existed hold true), false for none,
    else the field list in one order."""
    from search_spaces.recipe import DEFAULT_FIELDS

    fields = cfg.recipe_fields
    return True if fields == DEFAULT_FIELDS else list(fields) if fields else False


def _study_attrs(cfg: StudyConfig) -> dict[str, Any]:
    return {
        "budget": cfg.budget, "target": cfg.target, "search_space": cfg.search_space, "mode": cfg.mode,
        "search_recipe": _stored_search_recipe(cfg), "repeats": cfg.repeats,
        "dataset": "MNIST",
    }  # fmt: skip


#: Study attributes added after studies existed, with the value a study made before them had.
_LATER_STUDY_ATTRS = {"repeats": 1}

#: The study attribute holding the settings that steer the search (which candidates, which
#: seeds, when to stop one), not how a trial is measured: a resumed study may change them, and
#: the run says so (:func:`check_resumable`).
SEARCH_SETTINGS_ATTR = "search_settings"
LAST_SEARCH_SETTINGS_ATTR = "last_search_settings"  # the latest run's: a change is said once, against it


def search_settings(cfg: StudyConfig) -> dict[str, Any]:
    """``{"study.seed": ..., "sampler.name": ..., "pruner.name": ..., ...}``: the study file's
    seed, [sampler] and [pruner], by their keys in the file."""
    return {"study.seed": cfg.seed,
            **{f"sampler.{k}": v for k, v in dataclasses.asdict(cfg.sampler).items()},
            **{f"pruner.{k}": v for k, v in dataclasses.asdict(cfg.pruner).items()}}  # fmt: skip


def changed_search_settings(cfg: StudyConfig, first: Mapping[str, Any] | None,
                            last: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    """``key = now (the last run had then)`` for each search setting of ``cfg`` in effect that
    differs from the ``last`` run's (``first``'s, the study's start, where none is recorded),
    naming the start's value too where it is a third one. None stored: a study made before
    they were recorded, nothing to compare."""
    if not isinstance(first, Mapping):
        return ()
    last = last if isinstance(last, Mapping) else first
    in_effect = {"study.seed", "sampler.name", "pruner.name",
                 *_SAMPLER_KEYS.get(cfg.sampler.name, ()), *_PRUNER_KEYS.get(cfg.pruner.name, ())}  # fmt: skip
    changed = []
    for key, now in search_settings(cfg).items():
        if key not in in_effect or key not in last or last[key] == now:
            continue
        began = first.get(key, last[key])
        also = f"; the study began with {toml_value(began)}" if began not in (last[key], now) else ""
        changed.append(f"{key} = {toml_value(now)} (the last run had {toml_value(last[key])}{also})")
    return tuple(changed)


#: The [sampler] and [pruner] keys each sampler or pruner reads (the others change nothing).
_SAMPLER_KEYS = {"tpe": ("sampler.n_startup_trials", "sampler.multivariate")}
_PRUNER_KEYS = {"halving": ("pruner.min_resource", "pruner.reduction_factor"),
                "hyperband": ("pruner.min_resource", "pruner.reduction_factor"),
                "median": ("pruner.n_startup_trials", "pruner.n_warmup_steps")}  # fmt: skip


#: [train] keys that change only how fast a trial runs, not what it measures: a resumed study
#: may change them. Every other [train] key, and these [data] keys, must match the stored study.
_SPEED_ONLY_TRAIN_KEYS = ("eval_batch_size", "channels_last", "compile")
_MEASURED_DATA_KEYS = ("val_size", "train_limit", "test_limit")


#: [train] keys added after studies existed, with the value a study made before them had.
_LATER_TRAIN_KEYS = {"teacher": "", "ema_decay": 0.0, "clean_epochs": 0}
_DISTILL_KEYS = ("distill_weight", "distill_temperature")  # measured only with a teacher


def _measured_settings(cfg: StudyConfig) -> dict[str, dict[str, Any]]:
    """The study file's settings that decide what a trial measures, by section."""
    skip = _SPEED_ONLY_TRAIN_KEYS + (() if cfg.train.teacher else _DISTILL_KEYS)
    train = {k: v for k, v in dataclasses.asdict(cfg.train).items() if k not in skip}
    return {"train": train, "data": {k: getattr(cfg.data, k) for k in _MEASURED_DATA_KEYS}}


#: Objective names and directions per study mode (what optuna-dashboard shows).
MODES = {
    "single": (["val_acc"], ["maximize"]),
    "pareto": (["val_acc", "params"], ["maximize", "minimize"]),
}


def stream_seed(study_seed: int, index: int) -> int:
    """Sampler seed of random stream ``index``: the study seed itself for stream 0 (a study run
    by one process is reproducible from its seed), then independent streams derived from
    (study seed, index) with NumPy's SeedSequence."""
    if index == 0:
        return study_seed
    return int(np.random.SeedSequence([study_seed, index]).generate_state(1)[0])


def make_sampler(cfg: StudyConfig, seed: int | None = None) -> optuna.samplers.BaseSampler:
    """The study's sampler, seeded with ``seed`` (default: the study seed)."""
    seed = cfg.seed if seed is None else seed
    if cfg.sampler.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if not cfg.sampler.multivariate:  # Optuna's textbook TPE (the harness's earlier default)
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=cfg.sampler.n_startup_trials, multivariate=False, constant_liar=False
        )
    # multivariate + group: one joint density per set of parameters that occur together, so
    # conditional parameters (a stage's residual only with 2+ convs) are modelled jointly and
    # never imputed. constant_liar: running trials count as bad, so parallel workers do not
    # all propose the current optimum. The budget constraint reaches TPE through
    # trial.set_constraint (the objective's gate), Optuna 5's successor of constraints_func.
    with warnings.catch_warnings():  # multivariate/group are experimental in Optuna, used knowingly; not deprecations
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=cfg.sampler.n_startup_trials, multivariate=True, group=True, constant_liar=True
        )


def make_pruner(cfg: StudyConfig) -> optuna.pruners.BasePruner:
    """The study's pruner over epochs (see :class:`harness.config.PrunerConfig`)."""
    p = cfg.pruner
    if p.name == "none":
        return optuna.pruners.NopPruner()
    if p.name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=p.min_epochs(cfg.train.epochs), reduction_factor=p.reduction_factor
        )
    if p.name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=p.min_epochs(cfg.train.epochs), max_resource=cfg.train.epochs, reduction_factor=p.reduction_factor
        )
    return optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps)


def open_study(cfg: StudyConfig, storage_url: str, *, create: bool = True, writable: bool = False) -> optuna.Study:
    """Create the study (with its attributes, baseline and enqueued trials) or resume it.

    Creation and the enqueues happen under an inter-process lock, so any number of workers
    may call this at once: the study, its baseline and each ``[[enqueue]]`` architecture are
    created exactly once. With ``create=False`` the study must already exist and is opened for
    reading (``harness status``), or with ``writable`` for writing results (``harness retrain``).

    Raises:
        StorageError: bad or unreachable storage, missing study (``create=False``), or an
            existing study whose budget/target/search space differ from ``cfg`` (refused
            rather than mixing trials of two settings).
    """
    if not (create or writable):
        check_optuna_sqlite(storage_url, for_writing=False)  # reading never creates a storage
    # Optuna's table creation races too. Reading needs no lock (and must not create its file).
    with study_lock(storage_url, cfg.name) if create else contextlib.nullcontext():
        storage = make_storage(storage_url, cfg.heartbeat_interval, cfg.grace_period,
                               read_only=not (create or writable))  # fmt: skip
        names = _study_names(storage, storage_url)
        if cfg.name not in names and not create:
            raise MissingStudyError(f"no study named {cfg.name!r} in {safe_url(storage_url)} ({_held(cfg.name, names)})")
        if cfg.name in names:
            _check_study_attrs(cfg, storage_url, optuna.load_study(study_name=cfg.name, storage=storage).user_attrs)
        if not create:  # reading: load, never "create unless present" (that tries an INSERT first)
            return optuna.load_study(study_name=cfg.name, storage=storage, sampler=make_sampler(cfg),
                                     pruner=make_pruner(cfg))  # fmt: skip
        study = optuna.create_study(
            storage=storage,
            study_name=cfg.name,
            directions=MODES[cfg.mode][1],
            sampler=make_sampler(cfg),
            pruner=make_pruner(cfg),
            load_if_exists=True,
        )
        record_settings(study, cfg, new=cfg.name not in names)
        space = get_search_space(cfg.search_space, cfg.path.parent)
        enqueue_baseline(study, space)
        _enqueue_known(study, cfg, space)
        retry_interrupted(study)
    return study


def record_settings(study: optuna.Study, cfg: StudyConfig, *, new: bool) -> None:
    """Record ``cfg``'s settings with ``study``: all of them in a ``new`` study (budget, target,
    space, recipe, objectives' names), else those an older study lacks and the latest search
    settings."""
    if new:
        for key, value in _study_attrs(cfg).items():
            study.set_user_attr(key, value)
        study.set_user_attr("train", dataclasses.asdict(cfg.train))  # the recipe: record and fingerprint
        study.set_metric_names(MODES[cfg.mode][0])  # what optuna-dashboard labels the objectives
    settings = search_settings(cfg)
    if SEARCH_SETTINGS_ATTR not in study.user_attrs:  # a study made before they were recorded adopts these
        study.set_user_attr(SEARCH_SETTINGS_ATTR, settings)
    if study.user_attrs.get(LAST_SEARCH_SETTINGS_ATTR) != settings:
        study.set_user_attr(LAST_SEARCH_SETTINGS_ATTR, settings)
    if "data" not in study.user_attrs:  # a study made before the data fingerprint adopts this file's
        study.set_user_attr("data", _measured_settings(cfg)["data"])


def storage_to_write(study_file: str | Path, cfg: StudyConfig, storage: str | None) -> str:
    """The storage URL a command that writes a study uses: ``storage`` (--storage), else the study
    file's ``study.storage``, else its default SQLite file; checked before anything is written
    (the URL, and an existing SQLite file must be an Optuna storage)."""
    from harness.storage import check_study_storage

    url = storage or cfg.storage
    if url:
        check_study_storage(url, study_file, from_study_file=not storage)
    else:  # the default file: its folder is made once there is something to write
        url = cfg.default_storage()
    check_optuna_sqlite(url, for_writing=True)
    return url


def open_existing_study(study_file: str | Path, storage: str | None = None, *, writable: bool = False,
                        cfg: StudyConfig | None = None) -> tuple[StudyConfig, str, optuna.Study]:
    """(config, storage URL, study) of an existing study, for the commands that read one
    (``writable``: retrain, which records its runs, with the workers' locking and patience);
    creates nothing. ``storage``: --storage, else the study file's. ``cfg``: the study file's
    configuration where the caller has already read it.

    Raises:
        ConfigError: a bad study file. StorageError: a bad storage, no database, no such study.
    """
    from harness.config import load_study_config
    from harness.storage import check_study_storage

    cfg = cfg or load_study_config(study_file)
    url = storage or cfg.default_storage()
    path = sqlite_path(url)
    no_database = StorageError(f"{study_file}: no study database yet at {path} (run `harness run` first)")
    if path is not None and not path.exists() and not storage and not cfg.storage:
        raise no_database  # the default database, in study.results_dir, which the first run makes
    check_study_storage(url, study_file, from_study_file=not storage and bool(cfg.storage))
    if path is not None and not path.exists():
        raise no_database
    check_optuna_sqlite(url, for_writing=False)  # an empty or foreign file is not turned into a storage
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # no "Using an existing study" chatter
    try:
        return cfg, url, open_study(cfg, url, create=False, writable=writable)
    except MissingStudyError as exc:  # the file's study.name is what does not match
        raise MissingStudyError(f"{study_file}: study.name: {exc}") from None


def _held(name: str, names: set[str]) -> str:
    """What a storage without study ``name`` holds, the names most like it first: the one a user
    may have meant (a typo, or a study file renamed after its study was made)."""
    import difflib

    if not names:
        return "it holds no study"
    close = difflib.get_close_matches(name, names, n=len(names), cutoff=0.6)  # the most alike first
    ordered = close + sorted(names - set(close))
    shown = ", ".join(repr(n) for n in ordered[:10]) + (f", and {len(ordered) - 10:,} more" if len(ordered) > 10 else "")
    return f"it holds {shown}" + (f"; did you mean {close[0]!r}?" if close else "")


def _study_names(storage, storage_url: str) -> set[str]:
    try:
        return {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    except sqlalchemy.exc.SQLAlchemyError as exc:
        text = innermost_message(exc)
        if "locked" in text:
            text += " (another process is writing; try again in a moment)"
        raise StorageError(redact(f"cannot read storage {safe_url(storage_url)!r}: {text}")) from None


#: The trial states ``study.n_trials`` counts: trained, pruned, or rejected before training.
#: A failed trial does not count: an interrupted one is retried, and one that failed for a
#: reason of its own (diverged, out of memory) leaves its place to another candidate (in the
#: next run: a run attempts as many trials as are missing when it starts).
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class StoredStudy:
    """What a run needs to know of the study it resumes."""

    finished: int  # trials in FINISHED_STATES
    changed: tuple[str, ...] = ()  # changed_search_settings(): the study file's seed, sampler or pruner since


def stored_study_names(storage_url: str) -> set[str]:
    """The names of the studies ``storage_url`` holds, reading only: none where its SQLite file
    does not exist yet or is empty, or its database has no Optuna tables yet."""
    path = sqlite_path(storage_url)
    if path is not None and (not path.exists() or path.stat().st_size == 0):
        return set()
    engine = sqlalchemy.create_engine(storage_url, poolclass=sqlalchemy.pool.NullPool)
    try:  # a database without Optuna's tables yet (a fresh PostgreSQL one) holds no study
        with engine.connect() as conn:
            if not sqlalchemy.inspect(conn).has_table("studies"):
                return set()
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise StorageError(redact(f"cannot open storage {safe_url(storage_url)!r}: {innermost_message(exc)}")) from None
    finally:
        engine.dispose()
    storage = make_storage(storage_url, read_only=True)
    try:
        return _study_names(storage, storage_url)
    finally:
        storage.engine.dispose()


def check_resumable(cfg: StudyConfig, storage_url: str, device=None) -> StoredStudy | None:
    """Refuse, reading only, a study file that the stored study of its name would refuse
    (budget, target, space, measured settings), so that a run says so before it prints or
    creates anything. With the run's ``device``, also refuse training in another autocast
    precision than the study's trials recorded (``train.amp = "auto"`` resolves per device).
    A storage that does not exist yet, or holds no such study, passes (None).

    Raises:
        StorageError: as :func:`open_study` would for this study file, a user's search space
            that now draws a parameter from a distribution Optuna will not mix with the stored
            trials' (another kind, say), a precision mismatch, or trials distilled from another
            teacher file than ``train.teacher`` holds now.
    """
    from harness.train import precision_settings

    if cfg.name not in stored_study_names(storage_url):
        return None  # a new study: nothing stored to differ from
    storage = make_storage(storage_url, read_only=True)
    try:
        study = optuna.load_study(study_name=cfg.name, storage=storage)
        _check_study_attrs(cfg, storage_url, study.user_attrs)
        trials = study.get_trials(deepcopy=False)
    finally:
        storage.engine.dispose()
    _check_space_distributions(cfg, storage_url, trials)
    stored = StoredStudy(sum(t.state in FINISHED_STATES for t in trials),
                         changed_search_settings(cfg, study.user_attrs.get(SEARCH_SETTINGS_ATTR),
                                                 study.user_attrs.get(LAST_SEARCH_SETTINGS_ATTR)))  # fmt: skip
    if device is None:
        return stored
    # The same file name may hold another network by now (a missing file is refused next,
    # by the run's own teacher check, in its words).
    if cfg.train.teacher and cfg.teacher_path().is_file():
        from harness.teacher import file_sha256

        now_sha = file_sha256(cfg.teacher_path())
        taught = _recorded(trials, "teacher", "sha256")
        if taught - {now_sha}:
            raise StorageError(
                f"{cfg.path}: the trials of study {cfg.name!r} in {safe_url(storage_url)} were distilled from "
                f"another teacher file than {cfg.teacher_path()} holds now (sha256 {now_sha[:12]}...); refusing "
                "to mix them (restore that file, or use another study name)"
            )
    now = precision_settings(cfg.train, device)["train_autocast"]
    trained = _recorded(trials, "precision", "train_autocast")
    if trained - {now}:
        raise StorageError(
            f"{cfg.path}: the trials of study {cfg.name!r} in {safe_url(storage_url)} trained with autocast "
            f"{', '.join(sorted(map(str, trained)))}, but train.amp = {cfg.train.amp!r} on {device} trains with "
            f"{now}; refusing to mix them (set train.amp to match, or use another study name)"
        )
    return stored


def _check_space_distributions(cfg: StudyConfig, storage_url: str, trials: list[FrozenTrial]) -> None:
    """Refuse a user's search space whose read-time draw takes a parameter from a distribution
    Optuna will not mix with the one the stored trials drew it from (another kind, another log
    setting, other categorical choices): the first trial drawing it would fail. A parameter
    that draw does not reach is caught when a trial draws it (the objective stops the run)."""
    space = get_search_space(cfg.search_space, cfg.path.parent)
    changed = changed_distributions(space.probe_distributions, trials)
    if changed:
        raise StorageError(
            f"{cfg.path}: study.search_space: {space.where}: {'; '.join(changed)}: study {cfg.name!r} in "
            f"{safe_url(storage_url)} cannot mix them (keep the parameter's distribution, draw the new one under "
            "another name, or use another study name)"
        )


def _recorded(trials: list[FrozenTrial], attr: str, key: str) -> set[Any]:
    """The values of ``key`` in the trials' ``attr`` user attribute (a dict), where recorded."""
    return {t.user_attrs[attr].get(key) for t in trials if isinstance(t.user_attrs.get(attr), dict)}


#: A baseline whose attempts die with no reason (SIGKILL, a crash) is retried until this many
#: attempts have run; an interrupted one (Ctrl-C, SIGTERM) always.
BASELINE_KILLED_ATTEMPTS = 6


def _baseline_again(t: FrozenTrial) -> bool:
    """Whether a failed baseline attempt is retried even though it may be a retry itself."""
    ua = t.user_attrs
    if ua.get("interrupted"):
        return True
    attempts = len(t.system_attrs.get("retry_history", [])) + 1
    return "fail_reason" not in ua and attempts < BASELINE_KILLED_ATTEMPTS


def retry_interrupted(study: optuna.Study) -> list[int]:
    """Enqueue, once, a retry of every failed trial that was interrupted (Ctrl-C, or a crash
    that left no reason) and of a failed baseline whatever its reason, the baseline first.

    A trial is retried at most once: not if a retry of it exists already (heartbeat retries
    included), nor if it is itself an interrupted retry, except a baseline while the study has
    no completed one: interrupted, at every start; killed, up to BASELINE_KILLED_ATTEMPTS
    attempts. A killed retry is retried as the heartbeat's check does (up to STALE_RETRIES in
    its history): that check fails a dead trial before it enqueues the retry, and a stop or a
    kill between the two leaves the retry to this. A trial that failed for a reason of its own
    (diverged, out of memory) is a result and stays failed. Returns the retried numbers.
    Called under the study lock, so concurrent runs enqueue each retry once.
    """
    trials = study.get_trials(deepcopy=False)
    retried = {t.system_attrs.get("failed_trial") for t in trials}
    done_baseline = any(t.user_attrs.get("baseline") and t.state == TrialState.COMPLETE for t in trials)
    todo = []
    for t in trials:
        ua = t.user_attrs
        baseline = bool(ua.get("baseline"))
        # The baseline is the study's reference: an attempt interrupted (Ctrl-C, SIGTERM) is
        # retried again at each start, however often, until one completes; one killed (a crash
        # leaves no reason) too, up to BASELINE_KILLED_ATTEMPTS attempts in all (one that kills
        # its process every time must not take every run down with it). A killed retry has
        # the heartbeat's retries; other retries are not retried, nor a baseline that failed
        # for a reason of its own.
        again = baseline and not done_baseline and _baseline_again(t)
        killed = "fail_reason" not in ua and not ua.get("interrupted")
        if t.state != TrialState.FAIL or t.number in retried:
            continue
        if t.system_attrs.get("retry_history") and not again and not killed:
            continue
        if (baseline and not done_baseline) or ua.get("interrupted") or killed:
            todo.append((t, math.inf if again else STALE_RETRIES if killed else 1))
    todo.sort(key=lambda item: (not item[0].user_attrs.get("baseline"), item[0].number))
    # no lock_url: the caller holds the study lock
    return [t.number for t, limit in todo if RetryStaleTrial(max_retry=limit).enqueue_once(study, t)]


def claim_sampler_stream(study: optuna.Study, cfg: StudyConfig, storage_url: str) -> SamplerStream:
    """Give this process the study's next random stream and seed ``study.sampler`` from it.

    Streams are handed out in start order under the study lock: 0 to the first process that
    proposes trials, then 1, 2, ... to every further ``--jobs`` worker, ``harness worker``
    and resumed ``run``. So no two processes replay the same proposals, and a study run by
    one process stays reproducible from its seed (stream 0 is the study seed itself).
    """
    with study_lock(storage_url, cfg.name):
        index = int(study.user_attrs.get(STREAMS_ATTR, 0))
        study.set_user_attr(STREAMS_ATTR, index + 1)
    stream = SamplerStream(index, stream_seed(cfg.seed, index))
    study.sampler = make_sampler(cfg, stream.seed)
    return stream


def _enqueue_known(study: optuna.Study, cfg: StudyConfig, space: SearchSpace) -> None:
    """Enqueue the study file's ``[[enqueue]]`` architectures not yet in the study (any state)."""
    for params in not_yet_enqueued(study, cfg, space):
        study.enqueue_trial(params, user_attrs={"enqueued": True})


def not_yet_enqueued(study: optuna.Study, cfg: StudyConfig, space: SearchSpace | None = None) -> list[dict[str, Any]]:
    """The full parameters of the study file's ``[[enqueue]]`` tables that the study does not
    hold yet (in any state), each once, in the file's order. Reads only."""
    space = space or get_search_space(cfg.search_space, cfg.path.parent)
    # What was enqueued (baseline included), as enqueued: a running trial's params may be partial.
    have = [t.system_attrs["fixed_params"] for t in study.get_trials(deepcopy=False) if "fixed_params" in t.system_attrs]
    pending = []
    for entry in cfg.enqueue:
        params = enqueue_params(space, entry, *cfg.recipe_search)
        if not any(_same_params(params, other) for other in have):
            pending.append(params)
            have.append(params)
    return pending


def _same_params(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """One point of the space: the same names, and values equal or numbers within float noise
    (a table enqueued as 0.10000000001 before such values were stored as their grid's 0.1)."""

    def same(x: Any, y: Any) -> bool:
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (x, y))
        return x == y or (numbers and math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9))

    return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)


def _check_study_attrs(cfg: StudyConfig, storage_url: str, attrs: dict[str, Any]) -> None:
    """Refuse a study file whose budget, target, space, mode, recipe search, repeats, or measured
    [train] and [data] settings differ from the stored study's: its trials would not be
    comparable (different epochs or data sizes would feed one pruner). A study stored before
    ``repeats`` existed ran 1; a [train] key a study stored before it existed had its value of
    then; other keys it did not store are not compared, nor is ``train.amp`` when either side
    is "auto": that resolves per device (bf16 on CUDA only; studies made before the default
    became "off" stored it); a run compares the precision its trials recorded instead
    (:func:`check_resumable`)."""
    # "key = the stored value (the file's)" for each differing key, as a study file spells them
    stored_attrs = {**_LATER_STUDY_ATTRS, **attrs}
    assumed = {k for k in _LATER_STUDY_ATTRS if k not in attrs}
    differ = [_differs(key if key == "dataset" else f"study.{key}", stored_attrs.get(key), value, key in assumed)
              for key, value in _study_attrs(cfg).items() if stored_attrs.get(key) != value]  # fmt: skip
    for section, settings in _measured_settings(cfg).items():
        stored = attrs.get(section) or {}
        if section == "train":  # a study made before a key existed had its value of then
            stored = {**_LATER_TRAIN_KEYS, **stored}
        differ += [_differs(f"{section}.{k}", stored[k], v, section == "train" and k not in (attrs.get(section) or {}))
                   for k, v in settings.items()
                   if k in stored and stored[k] != v and not (k == "amp" and "auto" in (stored[k], v))
                   # the teacher's identity is its sha256 (check_resumable), not how a path spells it
                   and not (k == "teacher" and bool(stored[k]) == bool(v))]  # fmt: skip
    if differ:  # all of them: a fix of one, a rerun, then the next would be a slow way to learn them
        raise StorageError(
            f"{cfg.path}: study {cfg.name!r} in {safe_url(storage_url)} was made with other settings than the "
            f"study file's: {'; '.join(differ)}; refusing to mix them (use another study name)"
        )


def _differs(key: str, stored: Any, now: Any, assumed: bool) -> str:
    """``key = stored (the file says now)``, marking a value assumed for a study made before
    the key existed."""
    before = "made before the key existed; " if assumed else ""
    return f"{key} = {toml_value(stored)} ({before}the study file says {toml_value(now)})"


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


# ---- summary ------------------------------------------------------------------------------


def param_count(attrs: Mapping[str, Any], default: Any = None) -> Any:
    """The trainable parameter count in a trial's user attributes (``trainable_params``, or
    ``params`` in studies written before the rename), else ``default``."""
    return attrs.get(PARAM_COUNT_ATTR, attrs.get("params", default))


def val_acc(t: FrozenTrial) -> float:
    """Validation accuracy of a finished trial, in single- and multi-objective studies alike."""
    if "val_acc" in t.user_attrs:
        return float(t.user_attrs["val_acc"])
    return t.values[0] if t.values else float("nan")


def origin_of(t: FrozenTrial) -> str:
    """Where a trial's parameters came from: baseline, enqueued, retry or sampler."""
    ua = t.user_attrs
    if t.system_attrs.get("failed_trial") is not None:
        return "retry"
    if "origin" in ua:
        return ua["origin"]
    return "baseline" if ua.get("baseline") else ("enqueued" if ua.get("enqueued") else "sampler")


def classify(t: FrozenTrial) -> str:
    """One of: complete, over_budget, invalid, duplicate, pruned, failed, running, waiting."""
    if "duplicate_of" in t.user_attrs and t.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return "duplicate"
    if t.state == TrialState.COMPLETE:
        return "complete"
    if t.state == TrialState.PRUNED:
        return {"over_budget": "over_budget", "invalid": "invalid"}.get(t.user_attrs.get("rejected"), "pruned")
    if t.state == TrialState.FAIL:
        return "failed"
    return t.state.name.lower()


def outcome_text(t: FrozenTrial) -> str:
    """:func:`classify` in words, for a message saying why a trial has no result (the run's
    per-trial lines say the same)."""
    kind = classify(t)
    if kind == "over_budget":
        return f"rejected before training ({t.user_attrs.get('reject_reason', 'over the budget')})"
    if kind == "invalid":
        reason = t.user_attrs.get("reject_reason", "unbuildable")
        return f"rejected before training ({'' if reason.startswith(OUTSIDE_SPACE) else 'invalid layout: '}{reason})"
    if kind == "duplicate":
        return f"a repeat of trial {t.user_attrs['duplicate_of']}, not trained again"
    if kind == "pruned":
        return f"pruned after epoch {t.user_attrs.get('epochs_run', '?')}"
    return kind


@dataclass
class StudySummary:
    study_name: str
    budget: int
    target: float
    counts: dict[str, int]
    baseline: FrozenTrial | None
    best: FrozenTrial | None  # best feasible COMPLETE trial by validation accuracy
    # feasible trials other than the best whose one search run scored the target on the test set:
    # counted for the record, never a verdict (a maximum over many test scores is test selection)
    others_at_target: list[int]
    stale: dict[int, float] = dataclasses.field(default_factory=dict)  # RUNNING trial -> seconds since heartbeat
    n_trials: int = 0  # study.n_trials, the total the study is filled up to (0: none given)
    finished: int = 0  # the trials study.n_trials counts (FINISHED_STATES)
    study_recipe: dict[str, Any] = dataclasses.field(default_factory=dict)  # the stored [train]: trials without their own recipe
    best_retrain: dict[str, Any] | None = None  # the best trial's `harness retrain` record (mean over seeds), if any

    def lines(self) -> list[str]:
        c = self.counts
        out = [
            f"study {self.study_name!r}: budget {self.budget:,} params, target test acc {self.target:.2%}",
            f"trials: {c['complete']} complete, {c['pruned']} pruned by pruner, "
            f"{c['over_budget']} rejected over budget, {c['invalid']} invalid, {c['failed']} failed"
            + (f", {c['duplicate']} duplicate proposals not retrained" if c.get("duplicate") else "")
            + (f", {c['running']} running" if c.get("running") else "")
            + (f" ({len(self.stale)} stale: " + ", ".join(f"trial {n} no heartbeat for {format_duration(a)}"
                                                          for n, a in sorted(self.stale.items())) + ")"
               if self.stale else "")
            + (f", {c['waiting']} waiting" if c.get("waiting") else "")
            + (f"; {self.finished} of study.n_trials = {self.n_trials} finished" if self.n_trials else ""),
        ]
        b = self.baseline
        if b is None:
            out.append("baseline: not run yet")
        elif b.state == TrialState.COMPLETE:
            out.append(f"baseline: trial {b.number}, {_trial_line(b, self.study_recipe)}")
        else:
            out.append(f"baseline: trial {b.number}, {outcome_text(b)}")
        if self.best is None:
            out.append("best: no completed trial within the budget yet")
        else:
            out.append(f"best: trial {self.best.number}, {_trial_line(self.best, self.study_recipe)}")
            out.append(f"      {self.best.user_attrs.get('arch', '')}")
            teacher = self.best.user_attrs.get("teacher")
            if isinstance(teacher, dict):  # its accuracy owes something to that network
                recipe = self.best.user_attrs.get("recipe") or {}
                how = (f"; weight {recipe['distill_weight']}, temperature {recipe['distill_temperature']}"
                       if "distill_weight" in recipe else "")  # fmt: skip
                out.append(f"      distilled from {Path(str(teacher.get('path'))).name} ({teacher.get('study')} "
                           f"trial {teacher.get('trial')}, sha256 {str(teacher.get('sha256'))[:12]}...{how})")  # fmt: skip
        out.append(self.verdict())
        if self.others_at_target:
            nums = ", ".join(str(n) for n in self.others_at_target[:10]) + (", ..." if len(self.others_at_target) > 10 else "")
            out.append(f"      {counted(len(self.others_at_target), 'other trial')} scored {self.target:.2%} or more on the "
                       f"test set in a single search run (trials {nums}): not chosen on validation, no claim")  # fmt: skip
        return out

    def verdict(self) -> str:
        """Whether the target is met, judged on the trial the search chose (the best by validation
        accuracy within the budget): by its retrain's mean over seeds where it has one, else by its
        one search run's test accuracy. Never by the highest test score among trials, which would
        select on the test set."""
        head = f"target {self.target:.2%}"
        if self.best is None:
            return f"{head}: no completed trial within the budget to judge yet"
        r = self.best_retrain
        if r and r.get("seeds"):
            met = "met" if r["mean"] >= self.target else "not met"
            images = f", {r['train_images']:,} training images" if isinstance(r.get("train_images"), int) else ""
            return (f"{head}: {met} by the best trial's retrain, test {pct_against(r['mean'], self.target)} "
                    f"{plus_minus(r['std'], r['seeds'])} "
                    f"(mean over {counted(r['seeds'], 'seed')}, {counted(r['epochs'], 'epoch')}{images})")  # fmt: skip
        ua = self.best.user_attrs
        runs = [a for a in ua.get("repeat_test_accs") or [] if isinstance(a, (int, float))]
        if len(runs) > 1:  # study.repeats: the k search runs' mean, not the first seed's alone
            test, what = sum(runs) / len(runs), f"{len(runs)} search runs (mean test {{}})"
        else:
            test, what = ua.get("test_acc"), "one search run (test {})"
        if not isinstance(test, (int, float)) or math.isnan(test):
            return f"{head}: the best trial has no test accuracy"
        met = "met" if test >= self.target else "not met"
        return (f"{head}: {met} by the best trial's {what.format(pct_against(test, self.target))}; "
                f"`harness retrain` measures it as a mean over seeds")


def _trial_line(t: FrozenTrial, study_recipe: Mapping[str, Any] | None = None) -> str:
    """Size and scores of a finished trial; ``study_recipe`` (the stored [train]) is the recipe
    of a trial that stores none of its own (a study that searches no recipe)."""
    ua = t.user_attrs
    test = ua.get("test_acc")
    test_s = f"{test:.4f}" if isinstance(test, (int, float)) and not math.isnan(test) else "n/a"
    decay = (ua.get("recipe") or study_recipe or {}).get("ema_decay") or 0.0
    trained = ua.get("raw_val_history") or []
    # with weight averaging, val (what selects) is the average's score: say so, beside the trained weights'
    averaged = f" (averaged weights, decay {decay:g}; trained weights {trained[-1]:.4f})" if decay and trained else ""
    n = len(ua.get("repeat_seeds") or [])
    # with repeats, val is the seeds' mean and test the stored network's (the first seed's)
    mean, test_of = (f" (mean of {n} seeds)", " (first seed)") if n > 1 else ("", "")
    return (f"{param_count(ua, 0):,} params, val {val_acc(t):.4f}{mean}{averaged}, test {test_s}{test_of}, "
            f"{counted(ua.get('epochs_run', 0), 'epoch')}")


def feasible_trials(study: optuna.Study) -> list[FrozenTrial]:
    """COMPLETE trials within the study's budget (what export, retrain and the summary rank)."""
    budget = int(study.user_attrs.get("budget", 0))
    return [
        t
        for t in study.get_trials(deepcopy=False)
        if classify(t) == "complete" and param_count(t.user_attrs, math.inf) <= budget
    ]


def rank_key(t: FrozenTrial) -> tuple[float, int]:
    """Sort key, best first: highest validation accuracy, then fewer parameters."""
    return (-val_acc(t), param_count(t.user_attrs, 0))


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


def counted(n: int, noun: str) -> str:
    """``1 epoch``, ``3 epochs``: ``n`` and ``noun``, plural when n != 1."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def plus_minus(std: float, seeds: int, spec: str = ".2%") -> str:
    """``± 0.05%`` for a spread over ``seeds`` runs; ``± –`` for one run, which has none (its
    stored std of 0 is no measurement)."""
    return f"± {std:{spec}}" if seeds > 1 else "± –"


def pct_against(value: float, target: float) -> str:
    """``value`` as a percentage with 2 decimals, or with as many more as it takes for the text
    to fall on the same side of ``target`` as the value: a mean of 99.5967 % against 99.60 % is
    written 99.597 %, never a "99.60 %" that is "NOT reached"."""
    for digits in range(2, 7):
        text = f"{value:.{digits}%}"
        if (round(value * 100, digits) >= round(target * 100, 6)) == (value >= target):
            return text
    # closer than 6 decimals below the target: cut, never round, up to it
    return f"{math.floor(value * 10**8) / 10**8:.6%}" if value < target else text


def format_duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3.2 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def summarize(study: optuna.Study, stale_after: float | None = None, n_trials: int = 0) -> StudySummary:
    """The study in a few lines. With ``stale_after`` (seconds; the study's grace period), a
    RUNNING trial whose last heartbeat is older is reported as stale, with its age: its worker
    is most likely dead, and the next run will fail and retry it. With ``n_trials`` (the study
    file's), how many of them the study holds."""
    from harness.storage import heartbeat_ages

    attrs = study.user_attrs
    budget, target = int(attrs.get("budget", 0)), float(attrs.get("target", 1.0))
    trials = study.get_trials(deepcopy=False)
    counts = dict.fromkeys(
        ["complete", "pruned", "over_budget", "invalid", "duplicate", "failed", "running", "waiting"], 0
    )
    for t in trials:
        counts[classify(t)] = counts.get(classify(t), 0) + 1
    # A retried baseline (after a crash) carries the flag too: report the one that finished.
    baselines = sorted((t for t in trials if t.user_attrs.get("baseline")), key=lambda t: t.state != TrialState.COMPLETE)
    feasible = feasible_trials(study)
    best = min(feasible, key=rank_key, default=None)
    others = [t.number for t in feasible if t.user_attrs.get("target_met") and (best is None or t.number != best.number)]
    from harness.retrain import retrain_key  # here: harness.retrain imports this module

    retrain = study.user_attrs.get(retrain_key(best.number)) if best is not None else None
    stale = {}
    if stale_after is not None and counts["running"]:
        stale = {n: age for n, age in heartbeat_ages(study).items() if age > stale_after}
    return StudySummary(study.study_name, budget, target, counts, baselines[0] if baselines else None, best, others,
                        stale, n_trials, sum(t.state in FINISHED_STATES for t in trials),
                        attrs.get("train") or {}, retrain if isinstance(retrain, dict) else None)  # fmt: skip

