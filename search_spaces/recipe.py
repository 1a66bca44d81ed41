"""Training-recipe choices searched alongside the architecture (``study.search_recipe``).

The epoch budget stays fixed by the study file (``train.epochs``); what is searched is what
matters most for small networks at a fixed budget. ``search_recipe = true`` searches the five
:data:`DEFAULT_FIELDS`: peak learning rate (log scale, a factor of 3 around the study's
``train.lr``), batch size, label smoothing, and augmentation strength (rotation and shift).
A list names the fields to search instead, out of :data:`RECIPE_FIELDS`, which adds the zoom
(``scale``), ``weight_decay``, the weight averaging ``ema_decay``, ``clean_epochs`` (the last
epochs without augmentation) and, for a study with a
``train.teacher``, the distillation weight and temperature; the fields left out keep the
study's ``[train]`` values, except that a searched batch size always scales the peak lr
(``train.lr`` is the rate for ``train.batch_size``).
The baseline trial is not sampled: it trains with the study's recipe.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import optuna

from harness.config import TrainConfig

__all__ = ["DEFAULT_FIELDS", "RECIPE_FIELDS", "recipe_fields", "recipe_params", "suggest_recipe"]

BATCH_SIZES = (64, 128, 256)
LABEL_SMOOTHING = (0.0, 0.05, 0.1)
ROTATIONS = (0.0, 5.0, 10.0, 15.0)
TRANSLATES = (0.0, 0.05, 0.1, 0.15)
SCALES = (0.0, 0.05, 0.1, 0.15)
WEIGHT_DECAYS = (0.0, 1e-4, 2e-4, 5e-4, 1e-3)
DISTILL_WEIGHTS = (0.25, 0.5, 0.75, 0.9)  # only with a train.teacher
DISTILL_TEMPERATURES = (1.0, 2.0, 4.0, 8.0)
# 0 = off; the average spans about 1 / (1 - decay) steps: 1,000 and 5,000, i.e. 1.3 and 6.4
# epochs at batch 64 on 50,000 images (5 and 26 at batch 256)
EMA_DECAYS = (0.0, 0.999, 0.9998)
# the last N epochs on the images as they are (those up to train.epochs are offered)
CLEAN_EPOCHS = (0, 1, 2, 4)

#: Every recipe field a study may search, in the order they are suggested.
RECIPE_FIELDS = ("batch_size", "lr", "label_smoothing", "rotation", "translate", "scale", "weight_decay",
                 "distill_weight", "distill_temperature", "ema_decay", "clean_epochs")  # fmt: skip
#: What ``search_recipe = true`` searches (the fields of the first recipe studies).
DEFAULT_FIELDS = ("batch_size", "lr", "label_smoothing", "rotation", "translate")


def recipe_fields(search_recipe: bool | Sequence[str]) -> tuple[str, ...]:
    """The fields a study searches: true = DEFAULT_FIELDS, false = none, a list = those
    (in RECIPE_FIELDS order). Unknown names are the config's to refuse."""
    if isinstance(search_recipe, bool):
        return DEFAULT_FIELDS if search_recipe else ()
    return tuple(f for f in RECIPE_FIELDS if f in search_recipe)


def recipe_params(base: TrainConfig, fields: Sequence[str] = DEFAULT_FIELDS) -> dict[str, float | int]:
    """The study's own recipe as recipe parameters (for enqueued architectures that omit them)."""
    return {f: getattr(base, f) for f in RECIPE_FIELDS if f in fields}


def suggest_recipe(trial: optuna.trial.BaseTrial, base: TrainConfig, fields: Sequence[str] = DEFAULT_FIELDS) -> TrainConfig:
    """``base`` with the searched ``fields`` replaced by sampled values."""
    chosen: dict[str, float | int] = {}
    if "batch_size" in fields:
        chosen["batch_size"] = trial.suggest_categorical("batch_size", BATCH_SIZES)
    if "lr" in fields:  # searched around the study's lr
        chosen["lr"] = trial.suggest_float("lr", base.lr / 3, base.lr * 3, log=True)
    if "batch_size" in chosen:  # the peak lr scales with the batch (linear rule)
        chosen["lr"] = chosen.get("lr", base.lr) * chosen["batch_size"] / base.batch_size
    choices = {"label_smoothing": LABEL_SMOOTHING, "rotation": ROTATIONS, "translate": TRANSLATES,
               "scale": SCALES, "weight_decay": WEIGHT_DECAYS, "distill_weight": DISTILL_WEIGHTS,
               "distill_temperature": DISTILL_TEMPERATURES, "ema_decay": EMA_DECAYS,
               "clean_epochs": tuple(n for n in CLEAN_EPOCHS if n <= base.epochs)}  # fmt: skip
    for name, values in choices.items():
        if name in fields:
            chosen[name] = trial.suggest_categorical(name, values)
    return dataclasses.replace(base, **chosen)
