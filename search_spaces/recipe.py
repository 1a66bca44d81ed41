"""Training-recipe choices searched alongside the architecture (``study.search_recipe = true``).

The epoch budget stays fixed by the study file (``train.epochs``); what is searched is what
matters most for small networks at a fixed budget: peak learning rate (log scale, a factor
of 3 around the study's ``train.lr``), batch size, label smoothing, and augmentation strength
(rotation and shift). The baseline trial is not sampled: it trains with the study's recipe.
"""

from __future__ import annotations

import dataclasses

import optuna

from harness.config import TrainConfig

__all__ = ["recipe_params", "suggest_recipe"]

BATCH_SIZES = (64, 128, 256)
LABEL_SMOOTHING = (0.0, 0.05, 0.1)
ROTATIONS = (0.0, 5.0, 10.0, 15.0)
TRANSLATES = (0.0, 0.05, 0.1, 0.15)


def recipe_params(base: TrainConfig) -> dict[str, float | int]:
    """The study's own recipe as recipe parameters (for enqueued architectures that omit them)."""
    return {
        "batch_size": base.batch_size, "lr": base.lr, "label_smoothing": base.label_smoothing,
        "rotation": base.rotation, "translate": base.translate,
    }  # fmt: skip


def suggest_recipe(trial: optuna.trial.BaseTrial, base: TrainConfig) -> TrainConfig:
    """``base`` with the searched fields replaced by sampled values."""
    batch_size = trial.suggest_categorical("batch_size", BATCH_SIZES)
    return dataclasses.replace(
        base,
        # peak lr scales with the batch (linear rule), searched around the study's lr
        lr=trial.suggest_float("lr", base.lr / 3, base.lr * 3, log=True) * batch_size / base.batch_size,
        batch_size=batch_size,
        label_smoothing=trial.suggest_categorical("label_smoothing", LABEL_SMOOTHING),
        rotation=trial.suggest_categorical("rotation", ROTATIONS),
        translate=trial.suggest_categorical("translate", TRANSLATES),
    )
