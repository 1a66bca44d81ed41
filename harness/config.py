"""Study files (TOML) -> frozen config values, validated in one place.

Every field of every section is declared once, in a frozen dataclass, with its unit or meaning.
:func:`load_study_config` rejects unknown keys, wrong types and out-of-range values with a
:class:`~harness.errors.ConfigError` whose message names the file and the key.
"""

from __future__ import annotations

import codecs
import dataclasses
import datetime
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from harness.errors import ConfigError

__all__ = [
    "DataConfig",
    "PrunerConfig",
    "SamplerConfig",
    "StudyConfig",
    "TrainConfig",
    "load_study_config",
]

DATA_DIR_ENV = "HARNESS_DATA_DIR"
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")  # train.compile values
MAX_REPEATS = 10  # study.repeats: a trial keeps this many networks in memory at once
MAX_BUDGET = 10**9  # study.budget: far above any MNIST network, far below 64-bit storage


DEVICE_NAME = re.compile(r"auto|cpu|mps|cuda(:\d+)?")  # what study.device and --device accept


def toml_value(value: Any) -> str:
    """``value`` as a study file spells it (``true``, ``"tpe"``, ``[1, 2]``), for messages about
    what a file holds: Python's spelling (``True``, ``'tpe'``) is not what the user wrote."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):  # TOML's basic strings escape as JSON does
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(toml_value, value)) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if value is None:  # TOML has no null: a key that was not recorded
        return "(not recorded)"
    return str(value)  # numbers: Python writes them as TOML does (1e-05, inf, nan)


def default_data_root(override: str | None = None) -> Path:
    """``override``, else $HARNESS_DATA_DIR, else ~/.cache/harness/data."""
    chosen = override or os.environ.get(DATA_DIR_ENV, "")
    return Path(chosen).expanduser() if chosen else Path.home() / ".cache" / "harness" / "data"


@dataclass(frozen=True)
class TrainConfig:
    """How one candidate is trained."""

    epochs: int = 15  # passes over the training split
    batch_size: int = 128  # images per optimiser step
    optimizer: str = "sgd"  # "sgd" (Nesterov momentum) or "adamw"
    lr: float = 0.05  # peak learning rate
    momentum: float = 0.9  # SGD momentum / AdamW beta1
    weight_decay: float = 5e-4  # L2 penalty (decoupled for AdamW)
    schedule: str = "onecycle"  # "onecycle", "cosine" or "constant"
    label_smoothing: float = 0.0  # cross-entropy label smoothing, [0, 1)
    rotation: float = 10.0  # augmentation: random rotation, +- degrees
    translate: float = 0.1  # augmentation: random shift, +- fraction of the image side
    scale: float = 0.1  # augmentation: random zoom, +- fraction
    eval_batch_size: int = 0  # images per evaluation batch (no gradients); 0 = auto: 256 on CPU, 2000 on a GPU
    channels_last: bool = True  # NHWC memory format: 1.4-1.5x on a 2-core Intel Xeon (results/raw_options-cpu.md)
    amp: str = "off"  # bf16 autocast in training: "off", "bf16", "auto" (bf16 on CUDA only). Off: bf16 cost 0.07 pp on a CPU and 0.10 pp on an H200 for at most ~8 % speed (results/bf16_accuracy-*.md)
    fp32_precision: str = "ieee"  # float32 matmuls/convolutions in training on CUDA: "ieee" or "tf32" (scoring is always ieee)
    compile: str = "off"  # torch.compile the training step: "off", "default", "reduce-overhead" (CUDA graphs on CUDA), "max-autotune"
    teacher: str = ""  # knowledge distillation: a .pt2 file written by `harness export` (path relative to the study file); "" = none
    distill_weight: float = 0.5  # with a teacher: share of the loss from matching the teacher's softened predictions, (0, 1]
    distill_temperature: float = 4.0  # with a teacher: softmax temperature of both networks' predictions in that loss
    ema_decay: float = 0.0  # weight averaging: score and keep an exponential moving average of the weights and BN statistics, updated every step with this decay, [0, 1); 0 = off
    clean_epochs: int = 0  # the last N epochs train on the images as they are (no rotation, shift or zoom), [0, epochs]; 0 = augmented throughout


@dataclass(frozen=True)
class DataConfig:
    """Where MNIST lives and how it is split."""

    dir: str = ""  # data root (torchvision layout DIR/MNIST/raw); "" = $HARNESS_DATA_DIR or ~/.cache/harness/data
    download: bool = False  # let torchvision download MNIST when it is missing
    val_size: int = 5000  # validation images carved from the END of the 60,000 training images
    train_limit: int = 0  # train on only the first N training images (0 = all); for smoke runs
    test_limit: int = 0  # score only the first N test images (0 = all 10,000); for smoke runs


@dataclass(frozen=True)
class SamplerConfig:
    name: str = "tpe"  # "tpe" or "random"
    n_startup_trials: int = 10  # TPE: random trials before the model kicks in
    multivariate: bool = True  # TPE: joint density over co-occurring parameters (group=True too)


PRUNERS = ("halving", "hyperband", "median", "none")  # pruner.name values
# pruner.min_resource = 0: the first rung after this share of the epochs, i.e. at the one-cycle
# learning-rate peak (pct_start 0.25), never inside the warm-up: results/rank_fidelity-cpu.md
# measured Spearman 0.55-0.56 between epochs 1-2 of 15 and the final validation accuracy (halving
# at epoch 1 drops the final best), 0.78 at epoch 4 (the final best kept at r = 2, 3 and 4), and
# 0.90 at epoch 8.
AUTO_FIRST_RUNG = 0.25


@dataclass(frozen=True)
class PrunerConfig:
    """Early stopping over epochs. "halving" (the default; chosen by results/rank_fidelity-cpu.md):
    successive halving with rungs at min_resource * reduction_factor**k epochs, where only the
    best 1/reduction_factor of the trials that reached a rung go on. "hyperband": several such
    brackets. "median": stop below the median of earlier trials at the same epoch."""

    name: str = "halving"  # one of PRUNERS
    min_resource: int = 0  # halving/hyperband: epochs before the first rung; 0 = auto (see min_epochs)
    reduction_factor: int = 3  # halving/hyperband: keep the best 1/reduction_factor at each rung (rungs at min * 3**k)
    n_startup_trials: int = 5  # median: completed trials before pruning starts
    n_warmup_steps: int = 3  # median: epochs a trial always runs before it can be pruned

    def min_epochs(self, epochs: int) -> int:
        """Epochs before the first rung for a schedule of ``epochs``: min_resource, or for 0
        AUTO_FIRST_RUNG of the schedule rounded up (at least 1 epoch), so the rung never falls
        inside the warm-up (round() put 10 epochs' rung at epoch 2, before the peak at 2.5)."""
        return self.min_resource or max(1, math.ceil(epochs * AUTO_FIRST_RUNG))


@dataclass(frozen=True)
class StudyConfig:
    """A whole study file. ``path`` is the file it came from (for messages and defaults)."""

    name: str  # Optuna study name
    path: Path = Path(".")  # the study file
    search_space: str = "compact"  # a name in search_spaces.SEARCH_SPACES, or "path/to/space.py:function"
    mode: str = "single"  # "single": maximise val acc; "pareto": maximise val acc AND minimise params
    # also search the training recipe: true = lr, batch size, label smoothing, rotation, shift; or a
    # list of the fields to search (adds scale and weight_decay): search_spaces/recipe.py
    search_recipe: bool | tuple[str, ...] = False
    budget: int = 20_000  # hard limit on trainable parameters
    target: float = 0.994  # test accuracy reported against, (0, 1]
    n_trials: int = 0  # the study's total of finished trials; a run without --trials fills it up (0 = until timeout)
    timeout: float = 0.0  # seconds per `harness run` (0 = no limit)
    seed: int = 0  # base seed; trial k trains with seed + k
    repeats: int = 1  # seeds per candidate in the search, trained in lockstep: the trial's value (and what the pruner compares each epoch) is their mean validation accuracy
    device: str = "auto"  # "auto" (CUDA if available), "cpu", "cuda", "cuda:1", ...
    storage: str = ""  # Optuna storage URL; "" = sqlite file in results_dir
    results_dir: str = "."  # folder of the default sqlite file, relative to the study file
    artifact_dir: str = ""  # trained weights (Optuna artifacts); "" = <db name>.artifacts beside the sqlite file
    heartbeat_interval: int = 20  # seconds between a running trial's heartbeats (0 = off)
    grace_period: int = 60  # seconds without heartbeat before a RUNNING trial counts as dead
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    pruner: PrunerConfig = field(default_factory=PrunerConfig)
    enqueue: tuple[dict[str, Any], ...] = ()  # [[enqueue]] tables: known architectures run first, as parameters

    @property
    def recipe_fields(self) -> tuple[str, ...]:
        """The [train] fields each sampled trial draws (empty: none; the recipe is the study's)."""
        from search_spaces.recipe import recipe_fields  # the recipe search lives with the spaces

        return recipe_fields(self.search_recipe)

    @property
    def recipe_search(self) -> tuple[TrainConfig | None, tuple[str, ...]]:
        """(the recipe the searched fields vary, or None when the recipe is not searched; those
        fields): the last two arguments of :func:`search_spaces.enqueue_params`."""
        return (self.train if self.search_recipe else None), self.recipe_fields

    @property
    def stale_after(self) -> float | None:
        """Seconds without a heartbeat after which a RUNNING trial is shown as stale (its worker
        is gone): the grace period, else twice the heartbeat interval (None if both are 0)."""
        return self.grace_period or 2 * self.heartbeat_interval or None

    def default_storage(self) -> str:
        """The storage URL used when neither the file nor the command line names one."""
        if self.storage:
            return self.storage
        folder = (self.path.parent / self.results_dir).resolve()
        return f"sqlite:///{folder / (self.name + '.db')}"

    def artifact_root(self, storage_url: str | None = None) -> Path:
        """Folder of the study's artifact store (trained weights).

        ``study.artifact_dir`` if set (relative to the study file; on a shared storage every
        worker must see the same folder, e.g. a network file system); otherwise beside the
        SQLite database as ``<db name>.artifacts``, or ``results_dir/<study name>.artifacts``
        for other storages.
        """
        if self.artifact_dir:
            p = Path(self.artifact_dir).expanduser()
            return p if p.is_absolute() else (self.path.parent / p).resolve()
        from harness.storage import sqlite_path  # storage owns URL parsing

        db = sqlite_path(storage_url or self.default_storage())
        if db is not None:
            return db.with_name(db.name.removesuffix(".db") + ".artifacts")
        return (self.path.parent / self.results_dir).resolve() / f"{self.name}.artifacts"

    def data_root(self, override: str | None = None) -> Path:
        """Data root: --data-dir, then the study file's data.dir, then $HARNESS_DATA_DIR."""
        if override or not self.data.dir:
            return default_data_root(override)
        p = Path(self.data.dir).expanduser()
        return p if p.is_absolute() else self.path.parent / p  # relative to the study file

    def teacher_path(self, teacher: str | None = None) -> Path | None:
        """The distillation teacher file (``teacher``, else ``train.teacher``; relative to the
        study file), links resolved; None without one."""
        name = self.train.teacher if teacher is None else teacher
        if not name:
            return None
        p = Path(name).expanduser()
        # resolved: a link's model card is the one beside the file it points to
        return (p if p.is_absolute() else self.path.parent / p).resolve()

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["path"] = str(self.path)
        return d


_SECTIONS = {"train": TrainConfig, "data": DataConfig, "sampler": SamplerConfig, "pruner": PrunerConfig}
_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _convert(where: str, key: str, value: Any, typ: type) -> Any:
    """Check one TOML value against a field type; ints are accepted where floats are."""
    ok = (
        isinstance(value, bool)
        if typ is bool
        else isinstance(value, typ) and not isinstance(value, bool)
        or (typ is float and isinstance(value, int) and not isinstance(value, bool))
    )
    if not ok:
        raise ConfigError(f"{where}: {key} must be {_TYPE_NAMES[typ]}, got {toml_value(value)}")
    if typ is float:
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{where}: {key} must be finite, got {value}")
    return value


def _convert_search_recipe(where: str, key: str, value: Any) -> bool | tuple[str, ...]:
    """true/false, or a non-empty list of distinct recipe field names."""
    from search_spaces.recipe import RECIPE_FIELDS

    if isinstance(value, bool):
        return value
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: {key} must be true, false or a non-empty list of recipe fields "
                          f"({', '.join(RECIPE_FIELDS)}), got {toml_value(value)}")  # fmt: skip
    for name in value:
        if name not in RECIPE_FIELDS:
            raise ConfigError(f"{where}: {key} names unknown recipe field {toml_value(name)} (valid: {', '.join(RECIPE_FIELDS)})")
    if len(set(value)) != len(value):
        raise ConfigError(f"{where}: {key} names a recipe field twice, got {toml_value(value)}")
    return tuple(f for f in RECIPE_FIELDS if f in value)  # one order: the same search compares equal


def _build(where: str, prefix: str, cls: type, table: dict[str, Any], extra: dict[str, Any]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in ("path", "enqueue") and f.name not in _SECTIONS}
    kwargs = dict(extra)
    for key, value in table.items():
        full = f"{prefix}{key}"
        if key not in fields:
            valid = ", ".join(sorted(prefix + k for k in fields))
            raise ConfigError(f"{where}: unknown key {full!r} (valid keys: {valid})")
        if full == "study.search_recipe":
            kwargs[key] = _convert_search_recipe(where, full, value)
            continue
        typ = {"int": int, "float": float, "str": str, "bool": bool}[str(fields[key].type)]
        kwargs[key] = _convert(where, full, value, typ)
    return cls(**kwargs)


_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}"  # a study name: it becomes file names (<name>.db, exports/<name>/)


def _check(where: str, cond: bool, key: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"{where}: {key} {message}")


def _validate(where: str, c: StudyConfig) -> None:
    t, d = c.train, c.data
    # The name becomes file names (<name>.db, <name>.artifacts, exports/<name>/): a safe set.
    _check(where, re.fullmatch(_NAME, c.name) is not None, "study.name",
           f"must be 1-100 characters of letters, digits, '.', '_' or '-', starting with a letter or digit, "
           f"got {toml_value(c.name[:40])}{'...' if len(c.name) > 40 else ''}")  # fmt: skip
    _check(where, c.mode in ("single", "pareto"), "study.mode", f"must be single or pareto, got {toml_value(c.mode)}")
    # bounded: the budget is stored in the study's attributes and figures (64-bit at most)
    _check(where, 0 < c.budget <= MAX_BUDGET, "study.budget",
           f"must be a number of parameters in [1, {MAX_BUDGET:,}], got {c.budget}")  # fmt: skip
    _check(where, 0 < c.target <= 1, "study.target", f"must be an accuracy in (0, 1], got {c.target}")
    _check(where, 0 <= c.seed < 2**32, "study.seed", f"must be in [0, 2**32), got {c.seed}")
    _check(where, 1 <= c.repeats <= MAX_REPEATS, "study.repeats",
           f"must be 1 to {MAX_REPEATS} seeds per candidate, got {c.repeats}")  # fmt: skip
    # each lockstep run builds its own compiled step, resetting torch.compile's caches: the runs
    # would discard each other's graphs
    _check(where, c.repeats == 1 or c.train.compile == "off", "study.repeats",
           f"> 1 trains its seeds in lockstep, which train.compile = {toml_value(c.train.compile)} does not support; set train.compile = \"off\"")  # fmt: skip
    _check(where, c.n_trials >= 0, "study.n_trials", f"must be >= 0, got {c.n_trials}")
    # n_trials is the study's total: fewer than the baseline and the enqueued architectures
    # would leave some of those never run, silently
    _check(where, c.n_trials == 0 or c.n_trials > len(c.enqueue), "study.n_trials",
           f"must be 0 or at least {len(c.enqueue) + 1} (the baseline and the {len(c.enqueue)} [[enqueue]] "
           f"architectures, all run first), got {c.n_trials}")  # fmt: skip
    _check(where, math.isfinite(c.timeout) and c.timeout >= 0, "study.timeout", f"must be >= 0 seconds, got {c.timeout}")
    # A heartbeat thread sleeps heartbeat_interval seconds: past a day it is crash recovery
    # switched off in effect (and past ~292 years the thread dies), so it must be said with 0.
    _check(where, 0 <= c.heartbeat_interval <= 3600, "study.heartbeat_interval",
           f"must be 0 (off) to 3600 seconds, got {c.heartbeat_interval}")  # fmt: skip
    _check(where, 0 <= c.grace_period <= 86400, "study.grace_period", f"must be 0 to 86400 seconds, got {c.grace_period}")
    _check(where, c.grace_period == 0 or c.grace_period > c.heartbeat_interval, "study.grace_period",
           f"must exceed heartbeat_interval ({c.heartbeat_interval} s), got {c.grace_period}")  # fmt: skip
    results = c.path.parent / c.results_dir
    _check(where, not results.exists() or results.is_dir(), "study.results_dir",
           f"{toml_value(c.results_dir)} is a file, not a folder")  # fmt: skip
    _check(where, DEVICE_NAME.fullmatch(c.device) is not None,
           "study.device", f"must be auto, cpu, cuda, cuda:N or mps, got {toml_value(c.device)}")  # fmt: skip
    _check(where, t.epochs >= 1, "train.epochs", f"must be >= 1, got {t.epochs}")
    _check(where, t.batch_size >= 1, "train.batch_size", f"must be >= 1, got {t.batch_size}")
    _check(where, t.eval_batch_size >= 0, "train.eval_batch_size", f"must be >= 0 (0 = auto), got {t.eval_batch_size}")
    _check(where, t.optimizer in ("sgd", "adamw"), "train.optimizer", f"must be sgd or adamw, got {toml_value(t.optimizer)}")
    _check(where, t.schedule in ("onecycle", "cosine", "constant"), "train.schedule",
           f"must be onecycle, cosine or constant, got {toml_value(t.schedule)}")  # fmt: skip
    _check(where, t.amp in ("auto", "bf16", "off"), "train.amp", f"must be auto, bf16 or off, got {toml_value(t.amp)}")
    _check(where, t.fp32_precision in ("ieee", "tf32"), "train.fp32_precision",
           f"must be ieee or tf32, got {toml_value(t.fp32_precision)}")  # fmt: skip
    _check(where, t.compile in COMPILE_MODES, "train.compile",
           f"must be one of {', '.join(COMPILE_MODES)}, got {toml_value(t.compile)}")  # fmt: skip
    _check(where, t.lr > 0, "train.lr", f"must be > 0, got {t.lr}")
    _check(where, 0 <= t.momentum < 1, "train.momentum", f"must be in [0, 1), got {t.momentum}")
    _check(where, t.weight_decay >= 0, "train.weight_decay", f"must be >= 0, got {t.weight_decay}")
    _check(where, 0 <= t.label_smoothing < 1, "train.label_smoothing", f"must be in [0, 1), got {t.label_smoothing}")
    _check(where, 0 <= t.rotation <= 180, "train.rotation", f"must be in [0, 180] degrees, got {t.rotation}")
    _check(where, 0 <= t.translate < 1, "train.translate", f"must be in [0, 1), got {t.translate}")
    _check(where, 0 <= t.scale < 1, "train.scale", f"must be in [0, 1), got {t.scale}")
    _check(where, 0 < t.distill_weight <= 1, "train.distill_weight", f"must be in (0, 1], got {t.distill_weight}")
    _check(where, 0.1 <= t.distill_temperature <= 100, "train.distill_temperature",
           f"must be in [0.1, 100], got {t.distill_temperature}")  # fmt: skip
    _check(where, 0 <= t.ema_decay < 1, "train.ema_decay", f"must be in [0, 1) (0 = off), got {t.ema_decay}")
    _check(where, 0 <= t.clean_epochs <= t.epochs, "train.clean_epochs",
           f"must be 0 (off) to train.epochs = {t.epochs}, got {t.clean_epochs}")  # fmt: skip
    distill_searched = [f for f in c.recipe_fields if f.startswith("distill_")]
    _check(where, t.teacher or not distill_searched, "study.search_recipe",
           f"searches {distill_searched[0] if distill_searched else ''} but there is no train.teacher to distil from")  # fmt: skip
    _check(where, not t.teacher or t.teacher.endswith(".pt2"), "train.teacher",
           f"must name a .pt2 file written by `harness export`, got {toml_value(t.teacher)}")  # fmt: skip
    _check(where, 1 <= d.val_size < 60_000, "data.val_size", f"must be in [1, 60000): the search selects on it, got {d.val_size}")
    # MNIST's own sizes: a larger limit would be cut to what there is without a word
    _check(where, 0 <= d.train_limit <= 60_000 - d.val_size, "data.train_limit",
           f"must be 0 (all) to the {60_000 - d.val_size:,} training images left beside data.val_size = "
           f"{d.val_size:,}, got {d.train_limit}")  # fmt: skip
    _check(where, 0 <= d.test_limit <= 10_000, "data.test_limit",
           f"must be 0 (all) to MNIST's 10,000 test images, got {d.test_limit}")  # fmt: skip
    _check(where, c.sampler.name in ("tpe", "random"), "sampler.name", f"must be tpe or random, got {toml_value(c.sampler.name)}")
    _check(where, c.sampler.n_startup_trials >= 0, "sampler.n_startup_trials", f"must be >= 0, got {c.sampler.n_startup_trials}")
    _check(where, c.pruner.name in PRUNERS, "pruner.name", f"must be one of {', '.join(PRUNERS)}, got {toml_value(c.pruner.name)}")
    if c.pruner.name in ("halving", "hyperband"):
        _check(where, c.pruner.min_resource == 0 or 1 <= c.pruner.min_resource < t.epochs, "pruner.min_resource",
               f"must be 0 (auto) or in [1, train.epochs) = [1, {t.epochs}) epochs, got {c.pruner.min_resource}")  # fmt: skip
        _check(where, c.pruner.reduction_factor >= 2, "pruner.reduction_factor",
               f"must be >= 2, got {c.pruner.reduction_factor}")  # fmt: skip
    _check(where, c.pruner.n_startup_trials >= 0, "pruner.n_startup_trials", f"must be >= 0, got {c.pruner.n_startup_trials}")
    _check(where, c.pruner.n_warmup_steps >= 0, "pruner.n_warmup_steps", f"must be >= 0, got {c.pruner.n_warmup_steps}")


def parse_study_config(doc: dict[str, Any], path: Path, where: str | None = None) -> StudyConfig:
    """Validate a parsed TOML document. Raises ConfigError naming ``where`` and the key."""
    where = where or str(path)
    doc = dict(doc)
    unknown = sorted(set(doc) - {"study", "enqueue", *_SECTIONS})
    if unknown:
        valid = ", ".join(["study", *_SECTIONS, "enqueue"])
        raise ConfigError(f"{where}: unknown section or key {unknown[0]!r} (valid sections: {valid})")
    tables = {}
    for name in ["study", *_SECTIONS]:
        table = doc.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: {name!r} must be a table ([{name}])")
        tables[name] = table
    sections = {name: _build(where, f"{name}.", cls, tables[name], {}) for name, cls in _SECTIONS.items()}
    distill_set = [k for k in ("distill_weight", "distill_temperature") if k in tables["train"]]
    if distill_set and not tables["train"].get("teacher"):  # set for nothing: a forgotten teacher?
        raise ConfigError(f"{where}: train.{distill_set[0]} is set but there is no train.teacher to distil from")
    study_table = dict(tables["study"])
    if "name" not in study_table:
        study_table["name"] = path.stem
        if re.fullmatch(_NAME, path.stem) is None:  # the user wrote no study.name: say where this one came from
            raise ConfigError(f"{where}: the file name {toml_value(path.stem[:40])}{'...' if len(path.stem) > 40 else ''}, "
                              "the study's name when study.name is not set, is no valid name: set study.name to "
                              "1-100 characters of letters, digits, '.', '_' or '-', starting with a letter or digit")  # fmt: skip
    enqueue = doc.get("enqueue", [])
    if not isinstance(enqueue, list) or not all(isinstance(e, dict) for e in enqueue):
        raise ConfigError(f"{where}: enqueue must be an array of tables ([[enqueue]] with parameter = value lines)")
    config = _build(where, "study.", StudyConfig, study_table, {"path": path, "enqueue": tuple(enqueue), **sections})
    _validate(where, config)
    if config.mode == "pareto" and tables["pruner"] and config.pruner.name != "none":  # set for nothing
        raise ConfigError(f"{where}: [pruner] is set, but a study.mode = \"pareto\" study trains every trial to the "
                          "end (Optuna prunes single-objective studies only): remove [pruner], or set "
                          "pruner.name = \"none\"")  # fmt: skip
    from harness.storage import storage_beside  # storage owns URL parsing

    config = dataclasses.replace(config, storage=storage_beside(config.storage, path.parent))
    from search_spaces import UnknownSearchSpaceError, enqueue_params, get_search_space  # registry lives with the spaces

    try:
        space = get_search_space(config.search_space, path.parent)
    except UnknownSearchSpaceError as exc:
        raise ConfigError(f"{where}: study.search_space: {exc}") from None
    for i, params in enumerate(config.enqueue, 1):
        try:
            enqueue_params(space, params, *config.recipe_search)
        except ValueError as exc:
            raise ConfigError(f"{where}: enqueue #{i}: {exc}") from None
    return config


def check_enqueued_once(config: StudyConfig) -> None:
    """Refuse, for a run, an ``[[enqueue]]`` table equal to the baseline (the seed network
    with the study's recipe, which every study runs) or to another table: a study enqueues an
    architecture it holds once, so the table would be dropped without a word. The reading
    commands accept such a file (they enqueue nothing), so a study whose file gained one can
    still be inspected.

    Raises:
        ConfigError: names the table and what it repeats.
    """
    from search_spaces import enqueue_params, get_search_space
    from search_spaces.recipe import recipe_params

    where = str(config.path)
    space = get_search_space(config.search_space, config.path.parent)  # checked when the file was read
    given: list[tuple[str, dict[str, Any]]] = []
    if space.baseline_params is not None:  # the baseline trains with the study's own recipe
        recipe_base, recipe_fields = config.recipe_search
        baseline = {**space.baseline_params, **(recipe_params(recipe_base, recipe_fields) if recipe_base else {})}
        given.append(("the baseline's (the seed network with the study's recipe, which every study runs)", baseline))
    for i, params in enumerate(config.enqueue, 1):
        full = enqueue_params(space, params, *config.recipe_search)  # checked when the file was read
        same = next((label for label, other in given if other == full), None)
        if same is not None:
            raise ConfigError(f"{where}: enqueue #{i}: its parameters are {same}; give each architecture once")
        given.append((f"those of enqueue #{i}", full))


def load_study_config(path: str | os.PathLike[str]) -> StudyConfig:
    """Read and validate a study file.

    Raises:
        ConfigError: the file is missing, unreadable, not valid TOML, or holds a bad key/value.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{p}: study file not found") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read study file ({exc.__class__.__name__}: {exc})") from None
    bom = codecs.BOM_UTF8 if raw.startswith(codecs.BOM_UTF8) else b""  # some Windows editors write one; TOML has none
    try:
        text = raw[len(bom):].decode("utf-8")
    except UnicodeDecodeError as exc:
        at = len(bom) + exc.start  # in the file, the mark included
        # line and column as TOML's own errors count them (from 1, in characters, without the
        # mark), with any line ending (\r\n, \n, a lone \r) ending a line, as the text is read
        lines = re.split(rb"\r\n|\r|\n", raw[len(bom):at])
        line, column = len(lines), len(lines[-1].decode("utf-8")) + 1
        raise ConfigError(f"{p}: not a study file: not UTF-8 text (byte 0x{raw[at]:02x} at line {line}, "
                          f"column {column}, file offset {at:,})") from None  # fmt: skip
    text = text.replace("\r\n", "\n").replace("\r", "\n")  # as a text-mode read gives it
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: malformed TOML: {exc}") from None
    if not doc:  # every default would make an endless search (n_trials = 0) named after the file
        raise ConfigError(f"{p}: the study file holds no settings: every one would be a default, an endless search "
                          "named after the file (start from studies/smoke.toml)")  # fmt: skip
    return parse_study_config(doc, p)


def with_overrides(config: StudyConfig, **changes: Any) -> StudyConfig:
    """A copy with the given top-level fields replaced (None values are ignored)."""
    return dataclasses.replace(config, **{k: v for k, v in changes.items() if v is not None})
