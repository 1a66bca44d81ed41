"""The compact space with the activation as one more choice (`relu`, `silu` or `gelu`).

`activation` is suggested after the compact space's own parameters, so a compact study's
enqueued parameters plus `activation = "silu"` give the same network with another activation:
the same parameter count and, for the same trial seed, the same initial weights and batches.
"""

import dataclasses

import optuna

from harness.spec import ACTIVATIONS
from search_spaces.compact import suggest as compact_suggest


def suggest(trial: optuna.trial.BaseTrial):
    """A compact-space network whose convs use the suggested activation."""
    spec = compact_suggest(trial)
    return dataclasses.replace(spec, activation=trial.suggest_categorical("activation", ACTIVATIONS))
