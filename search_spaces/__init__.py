"""Search spaces: named ``suggest(trial) -> ArchSpec`` functions, chosen by the study file.

A space samples an architecture and nothing else: it never touches ``torch.nn``, so it can be
tested with ``optuna.trial.FixedTrial`` and counted without building a model. Each space also
names the fixed parameters of its baseline network (the seed's 19,290-parameter reference),
which every study enqueues as its first trial.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import inspect
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from harness.config import toml_value
from harness.spec import ArchSpec, InvalidSpecError, check_fields, check_names, check_values
from search_spaces import compact, modern, seed

__all__ = [
    "DEFAULT_SPACE",
    "SEARCH_SPACES",
    "SearchSpace",
    "SpaceResultError",
    "UnknownSearchSpaceError",
    "baseline_spec",
    "changed_distributions",
    "checked_spec",
    "enqueue_params",
    "get_search_space",
    "is_user_space",
    "outside_space",
]


@dataclass(frozen=True)
class SearchSpace:
    """A search space: how to sample a spec, and the baseline as fixed parameters of it."""

    name: str
    suggest: Callable[[optuna.trial.BaseTrial], ArchSpec]
    baseline_params: Mapping[str, Any] | None  # params giving the seed network; None: not in this space
    description: str
    # A user's space: "/path/to/space.py: suggest(trial)", what its errors are said of ("": registered)
    where: str = ""
    # A user's space: the distributions its read-time probe draw used, by parameter name
    probe_distributions: Mapping[str, optuna.distributions.BaseDistribution] = dataclasses.field(
        default_factory=dict, compare=False)  # fmt: skip

    def baseline_spec(self) -> ArchSpec:
        """The seed network (a point of this space, or built directly)."""
        if self.baseline_params is None:
            return baseline_spec()
        return self.suggest(optuna.trial.FixedTrial(dict(self.baseline_params)))


class UnknownSearchSpaceError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; this reads as a sentence
        return str(self.args[0])


class SpaceResultError(ValueError):
    """A user's space returned something other than a valid ArchSpec (the message says what,
    after the space's ``where``: "must return a harness.spec.ArchSpec, got str")."""


def baseline_spec() -> ArchSpec:
    """The seed's hand-made 19,290-parameter reference network, the baseline of every study."""
    return seed.suggest(optuna.trial.FixedTrial(dict(seed.REFERENCE_PARAMS)))


SEARCH_SPACES: dict[str, SearchSpace] = {
    "seed": SearchSpace("seed", seed.suggest, seed.REFERENCE_PARAMS, seed.__doc__.strip().splitlines()[0]),
    "modern": SearchSpace("modern", modern.suggest, None, modern.__doc__.strip().splitlines()[0]),
    "compact": SearchSpace("compact", compact.suggest, None, compact.__doc__.strip().splitlines()[0]),
}
DEFAULT_SPACE = "compact"  # what a study file without study.search_space searches


def is_user_space(name: str) -> bool:
    """True for a user's space given as ``path/to/space.py:function``."""
    return ":" in name and name.rsplit(":", 1)[0].endswith(".py")


def get_search_space(name: str, base_dir: str | Path = ".") -> SearchSpace:
    """The registered space called ``name``, or a user's ``path/to/space.py:function``.

    A user's path is relative to ``base_dir`` (the study file's folder). Its function takes
    an Optuna trial and returns an :class:`~harness.spec.ArchSpec`; it is checked by drawing
    one architecture from it with a throw-away in-memory study.

    A user's function is wrapped so that every architecture it returns, at trial time too,
    is checked (:func:`checked_spec`: SpaceResultError otherwise).

    Raises:
        UnknownSearchSpaceError: no such registered space (the message lists the valid names),
            or a user's file that is missing, does not import, lacks the function (or names a
            class or a non-callable), or whose function fails or does not return a valid
            ArchSpec (fields of the wrong type, unknown names, images other than MNIST's).
    """
    if not is_user_space(name):
        try:
            return SEARCH_SPACES[name]
        except KeyError:
            raise UnknownSearchSpaceError(
                f"unknown search space {name!r}; valid: {', '.join(sorted(SEARCH_SPACES))}, "
                "or path/to/space.py:function"
            ) from None
    return _load_user_space(name, Path(base_dir))


def _load_user_space(name: str, base_dir: Path) -> SearchSpace:
    file_part, func_name = name.rsplit(":", 1)
    path = Path(file_part).expanduser()
    path = (path if path.is_absolute() else base_dir / path).resolve()
    if not path.is_file():
        raise UnknownSearchSpaceError(f"search space file {path} not found")
    if not func_name.isidentifier():
        raise UnknownSearchSpaceError(f"{path}: {func_name!r} is not a function name")
    module_name = f"_harness_user_space_{abs(hash(str(path)))}"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise UnknownSearchSpaceError(f"{path}: cannot be loaded as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # before running it: dataclasses look their module up
        no_bytecode = sys.dont_write_bytecode
        sys.dont_write_bytecode = True  # reading a study file writes nothing (no __pycache__ beside it)
        try:
            spec.loader.exec_module(module)
        except (Exception, SystemExit) as exc:  # a user's file: any error (a sys.exit too) is theirs, in one line
            del sys.modules[module_name]
            raise UnknownSearchSpaceError(f"{path}: import failed: {exc.__class__.__name__}: {exc}") from None
        finally:
            sys.dont_write_bytecode = no_bytecode
    if not hasattr(module, func_name):
        raise UnknownSearchSpaceError(f"{path}: no function {func_name!r}")
    func = getattr(module, func_name)
    if inspect.isclass(func):  # ArchSpec(trial) would "return an ArchSpec" whose blocks are the trial
        raise UnknownSearchSpaceError(f"{path}: {func_name!r} is a class, not a function (suggest(trial) -> ArchSpec)")
    if not callable(func):
        raise UnknownSearchSpaceError(f"{path}: {func_name!r} is not a function ({type(func).__name__})")
    where = f"{path}: {func_name}(trial)"
    suggest = _checked_results(func)
    doc = (getattr(func, "__doc__", None) or f"user space {func_name} in {path.name}").strip().splitlines()[0]
    space = SearchSpace(name, suggest, None, doc, where)
    space = dataclasses.replace(space, probe_distributions=_check_suggest(space))
    if not hasattr(module, "BASELINE_PARAMS"):
        return space
    return dataclasses.replace(space, baseline_params=_check_baseline_params(path, space, module.BASELINE_PARAMS))


def _check_baseline_params(path: Path, space: SearchSpace, params: Any) -> dict[str, Any]:
    """A user space's ``BASELINE_PARAMS``: a full point of the space that builds the seed network."""
    where = f"{path}: BASELINE_PARAMS"
    if not isinstance(params, Mapping):
        raise UnknownSearchSpaceError(f"{where} must be a dict of the space's parameters, got {type(params).__name__}")
    try:
        full = enqueue_params(space, params)
    except ValueError as exc:
        raise UnknownSearchSpaceError(f"{where}: {exc}") from None
    if space.suggest(optuna.trial.FixedTrial(full)) != baseline_spec():
        raise UnknownSearchSpaceError(f"{where} do not build the seed network ({baseline_spec().describe()})")
    return full


def _checked_results(func: Callable[[optuna.trial.BaseTrial], Any]) -> Callable[[optuna.trial.BaseTrial], ArchSpec]:
    """A user's ``suggest`` whose every result is checked: an ArchSpec, its fields of the types
    they declare, its names known (:func:`checked_spec`); lists made tuples."""

    @functools.wraps(func)
    def suggest(trial: optuna.trial.BaseTrial) -> ArchSpec:
        return checked_spec(func(trial))

    return suggest


def _bound(x: float, value: Any, low: bool) -> str:
    """A float range's end for a message about ``value`` outside it: 6 significant digits, or as
    many more as keep ``value`` outside the end as written (a range computed from a recipe, the
    learning rate's lr / 3 to lr * 3, read [0.016666666666666666, 0.15000000000000002]; rounded
    alone, 0.0333333 "must be a number in [0.0333333, 0.3]")."""
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
    outside = numeric and (value < x if low else value > x)  # the end the value is past
    for digits in range(6, 18):
        text = f"{x:.{digits}g}"
        if not outside or ((value < float(text)) if low else (value > float(text))):
            break
    return text if any(c in text for c in ".eninf") else text + ".0"


def checked_spec(result: Any) -> ArchSpec:
    """``result`` if it is a valid ArchSpec (lists of blocks or convs made tuples), else
    SpaceResultError saying what is wrong. A misspelt name is the space's mistake, not a
    layout to reject trial after trial as invalid."""
    if not isinstance(result, ArchSpec):
        raise SpaceResultError(f"must return a harness.spec.ArchSpec, got {type(result).__name__}")
    try:
        check_fields(result)
        check_names(result)
    except InvalidSpecError as exc:
        raise SpaceResultError(f"returned an invalid ArchSpec: {exc}") from None
    blocks = tuple(dataclasses.replace(b, convs=tuple(b.convs)) for b in result.blocks)
    return result if blocks == result.blocks else dataclasses.replace(result, blocks=blocks)


#: Random draws the read-time check makes while the space rejects them (optuna.TrialPruned).
PROBE_DRAWS = 20


def _check_suggest(space: SearchSpace) -> dict[str, optuna.distributions.BaseDistribution]:
    """Draw one architecture from a user's space in a throw-away study: it must return a valid
    ArchSpec (:func:`checked_spec`). A draw the space rejects (optuna.TrialPruned, its way to
    refuse a candidate) is drawn again. Returns the distributions the draws used."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    drawn: dict[str, optuna.distributions.BaseDistribution] = {}
    try:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        for _ in range(PROBE_DRAWS):
            trial = study.ask()
            try:
                spec = space.suggest(trial)
            except optuna.TrialPruned:
                drawn.update(trial.distributions)
                continue
            except SpaceResultError as exc:
                raise UnknownSearchSpaceError(f"{space.where} {exc}") from None
            except (Exception, SystemExit) as exc:
                raise UnknownSearchSpaceError(f"{space.where} failed: {exc.__class__.__name__}: {exc}") from None
            # A value no layout builds (a width under 1, a dropout of NaN, no blocks) in the probe's
            # draw is a mistake in the space, refused now: at trial time such a draw is rejected as
            # invalid and the run goes on, and a space that always draws one would spend every
            # trial so (a range that only sometimes reaches one is not refused, unless this draw does).
            try:
                check_values(spec)
            except InvalidSpecError as exc:
                raise UnknownSearchSpaceError(f"{space.where} returned an ArchSpec no layout can build: {exc}") from None
            return {**drawn, **trial.distributions}
    finally:
        optuna.logging.set_verbosity(verbosity)
    raise UnknownSearchSpaceError(f"{space.where} rejected (optuna.TrialPruned) each of {PROBE_DRAWS} random draws")


def _call(dist: optuna.distributions.BaseDistribution) -> str:
    """The ``trial.suggest_*`` call drawing from ``dist``: ``suggest_int(4, 16)``."""
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return f"suggest_categorical({list(dist.choices)!r})"
    if isinstance(dist, (optuna.distributions.IntDistribution, optuna.distributions.FloatDistribution)):
        kind = "int" if isinstance(dist, optuna.distributions.IntDistribution) else "float"
        step = f", step={dist.step}" if dist.step not in (None, 1) else ""
        return f"suggest_{kind}({dist.low}, {dist.high}{step}{', log=True' if dist.log else ''})"
    return repr(dist)


def changed_distributions(drawn: Mapping[str, optuna.distributions.BaseDistribution],
                          trials: Iterable[optuna.trial.FrozenTrial]) -> list[str]:
    """``parameter 'w' is suggest_categorical([4, 8]) now, suggest_int(4, 16) in the study's trials
    (...)`` for each parameter of ``drawn`` that the stored ``trials`` drew from a distribution
    Optuna refuses to mix it with (another kind, another log setting, other categorical
    choices; a new range is allowed). Compared with the first trial that drew it, as Optuna's
    storage does."""
    stored: dict[str, optuna.distributions.BaseDistribution] = {}
    for t in sorted(trials, key=lambda t: t.number):
        for name, dist in t.distributions.items():
            stored.setdefault(name, dist)
    changed = []
    for name, dist in drawn.items():
        if name not in stored:
            continue
        try:
            optuna.distributions.check_distribution_compatibility(stored[name], dist)
        except ValueError as exc:
            changed.append(f"parameter {name!r} is {_call(dist)} now, {_call(stored[name])} in the study's trials "
                           f"(Optuna: {exc})")  # fmt: skip
    return changed


class _BadParam(ValueError):
    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name = name


def _grid_value(x: float) -> float:
    """``x`` (a grid point computed as index * step + low, 0.15000000000000002) as it is written:
    the shortest decimal that is ``x`` within float rounding (0.15); never another grid point."""
    for digits in range(1, 18):
        short = float(f"{x:.{digits}g}")
        if abs(short - x) <= sys.float_info.epsilon * abs(x):
            return short
    return x


def _spelling(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


class _CheckingTrial(optuna.trial.FixedTrial):
    """A FixedTrial that names the parameter whose given value the space does not allow."""

    def _given(self, name: str) -> Any:
        if name not in self.params_given:
            # a key given that is this name but for case, dashes or underscores: a misspelling
            # (a merely similar key may be a parameter the space reads later: s3_width for s2_width)
            like = [k for k in self.params_given if _spelling(k) == _spelling(name)]
            hint = f" (given: {like[0]!r}, which the space does not read: a misspelling?)" if like else ""
            raise _BadParam(name, f"missing parameter {name!r}{hint}")
        self.used.add(name)
        return self.params_given[name]

    def __init__(self, params: Mapping[str, Any]):
        super().__init__(dict(params))
        self.params_given, self.used = dict(params), set()

    def suggest_categorical(self, name, choices):  # type: ignore[override]
        value = self._given(name)
        # Equal and of the same kind: 1 is not True, but TOML's 10 may stand for the choice 10.0.
        same = [c for c in choices if c == value and (type(c) is type(value) or
                (isinstance(c, float) and type(value) is int))]  # fmt: skip
        if not same:
            raise _BadParam(name, f"parameter {name!r} = {toml_value(value)} is not one of {toml_value(list(choices))}")
        self.params_given[name] = self._params[name] = same[0]
        return super().suggest_categorical(name, choices)

    def suggest_int(self, name, low, high, *, step=1, log=False):  # type: ignore[override]
        value = self._given(name)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high or (value - low) % step:
            raise _BadParam(name, f"parameter {name!r} = {toml_value(value)} must be an integer in [{low}, {high}] in steps of {step}")
        return super().suggest_int(name, low, high, step=step, log=log)

    def suggest_float(self, name, low, high, *, step=None, log=False):  # type: ignore[override]
        value = self._given(name)
        slack = 1e-6 * step if step is not None else 0.0  # the grid's rounding, at its ends too
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and low - slack <= value <= high + slack
        if ok and step is not None:
            k = (value - low) / step
            ok = abs(k - round(k)) < 1e-6
            if ok:  # on the grid within rounding: stored as the grid's value, as a table giving it would be
                # (0.25000000001 and 0.25 are one architecture: the check for repeats compares values)
                value = _grid_value(round(k) * step + low)
                self.params_given[name] = self._params[name] = value
        if not ok:
            grid = f" in steps of {step}" if step is not None else ""
            raise _BadParam(name, f"parameter {name!r} = {toml_value(value)} must be a number in "
                                  f"[{_bound(low, value, True)}, {_bound(high, value, False)}]{grid}")  # fmt: skip
        return super().suggest_float(name, low, high, step=step, log=log)


def enqueue_params(
    space: SearchSpace, params: Mapping[str, Any], recipe_base: Any = None, recipe_fields: Sequence[str] | None = None
) -> dict[str, Any]:
    """Check a known architecture given as parameters of ``space``; return the full set to enqueue.

    Every parameter the space suggests for it must be given, with a value the space allows,
    and nothing else. With ``recipe_base`` (a TrainConfig: the study also searches the
    recipe; ``recipe_fields`` the fields it searches, by default the five of
    ``search_recipe = true``), those recipe parameters may be given too; the ones left out
    take the study's own recipe values (``lr`` is the peak rate for the study's batch size,
    as in the study file).

    Raises:
        ValueError: a missing, unknown or out-of-range parameter (the message names it).
    """
    from search_spaces.recipe import DEFAULT_FIELDS, RECIPE_FIELDS, recipe_params, suggest_recipe

    fields = DEFAULT_FIELDS if recipe_fields is None else recipe_fields
    params = dict(params)
    filled = set()
    if recipe_base is not None:
        for key, value in recipe_params(recipe_base, fields).items():
            if key not in params:
                params[key] = value
                filled.add(key)
    trial = _CheckingTrial(params)
    try:
        space.suggest(trial)
        if recipe_base is not None:
            suggest_recipe(trial, recipe_base, fields)
    except _BadParam as exc:
        if exc.name in filled:
            raise ValueError(f"{exc}: taken from the study's train.{exc.name}; give {exc.name} in the table") from None
        raise ValueError(f"{exc} (search space {space.name!r})") from None
    except SpaceResultError as exc:
        raise ValueError(f"search space {space.name!r} {exc} for these parameters") from None
    except (Exception, SystemExit) as exc:  # a user's space may fail its own way on a given value
        raise ValueError(f"search space {space.name!r} failed on these parameters: "
                         f"{exc.__class__.__name__}: {exc}") from None  # fmt: skip
    unknown = sorted(set(params) - trial.used)
    if unknown and unknown[0] in RECIPE_FIELDS:
        searched = ", ".join(fields) if recipe_base is not None else "false"
        raise ValueError(f"recipe parameter {unknown[0]!r} is not searched by this study (study.search_recipe: {searched})")
    if unknown:
        raise ValueError(
            f"parameter {unknown[0]!r} is not used by search space {space.name!r} for this architecture "
            f"(its parameters: {', '.join(sorted(trial.used))})"
        )
    return trial.params_given


def outside_space(
    space: SearchSpace, params: Mapping[str, Any], recipe_base: Any = None, recipe_fields: Sequence[str] | None = None
) -> str | None:
    """Why ``params`` (drawn for a trial before) are no point of ``space`` as it is now: the
    first value it no longer allows ("parameter 'w' = 4 must be an integer in [8, 16] in steps
    of 4"). None where it allows every value it draws or fails its own way (said when the trial
    runs). A parameter ``params`` lack (added to the space since; the trial draws it anew) is
    taken at its range's low end or first choice, so the ones drawn after it are checked too.
    ``recipe_base``/``recipe_fields``: as for :func:`enqueue_params`, the searched recipe."""
    from search_spaces.recipe import DEFAULT_FIELDS, suggest_recipe

    trial = _FillingTrial(params)
    try:
        space.suggest(trial)
        if recipe_base is not None:
            suggest_recipe(trial, recipe_base, DEFAULT_FIELDS if recipe_fields is None else recipe_fields)
    except _BadParam as exc:
        return str(exc) if exc.name in params else None
    except (Exception, SystemExit):
        return None
    return None


class _FillingTrial(_CheckingTrial):
    """A :class:`_CheckingTrial` that takes a parameter it was not given at its range's low end
    or first choice (see :func:`outside_space`)."""

    def _fill(self, name: str, value: Any) -> None:
        if name not in self.params_given:
            self.params_given[name] = self._params[name] = value

    def suggest_categorical(self, name, choices):  # type: ignore[override]
        self._fill(name, choices[0])
        return super().suggest_categorical(name, choices)

    def suggest_int(self, name, low, high, *, step=1, log=False):  # type: ignore[override]
        self._fill(name, low)
        return super().suggest_int(name, low, high, step=step, log=log)

    def suggest_float(self, name, low, high, *, step=None, log=False):  # type: ignore[override]
        self._fill(name, low)
        return super().suggest_float(name, low, high, step=step, log=log)
