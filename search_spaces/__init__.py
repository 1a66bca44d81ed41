"""Search spaces: named ``suggest(trial) -> ArchSpec`` functions, chosen by the study file.

A space samples an architecture and nothing else: it never touches ``torch.nn``, so it can be
tested with ``optuna.trial.FixedTrial`` and counted without building a model. Each space also
names the fixed parameters of its baseline network (the seed's 19,290-parameter reference),
which every study enqueues as its first trial.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import optuna

from harness.spec import ArchSpec
from search_spaces import modern, seed

__all__ = ["SEARCH_SPACES", "SearchSpace", "UnknownSearchSpaceError", "baseline_spec", "get_search_space"]


@dataclass(frozen=True)
class SearchSpace:
    """A search space: how to sample a spec, and the baseline as fixed parameters of it."""

    name: str
    suggest: Callable[[optuna.trial.BaseTrial], ArchSpec]
    baseline_params: Mapping[str, Any] | None  # params giving the seed network; None: not in this space
    description: str

    def baseline_spec(self) -> ArchSpec:
        """The seed network (a point of this space, or built directly)."""
        if self.baseline_params is None:
            return baseline_spec()
        return self.suggest(optuna.trial.FixedTrial(dict(self.baseline_params)))


class UnknownSearchSpaceError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; this reads as a sentence
        return str(self.args[0])


def baseline_spec() -> ArchSpec:
    """The seed's hand-made 19,290-parameter reference network, the baseline of every study."""
    return seed.suggest(optuna.trial.FixedTrial(dict(seed.REFERENCE_PARAMS)))


SEARCH_SPACES: dict[str, SearchSpace] = {
    "seed": SearchSpace("seed", seed.suggest, seed.REFERENCE_PARAMS, seed.__doc__.strip().splitlines()[0]),
    "modern": SearchSpace("modern", modern.suggest, None, modern.__doc__.strip().splitlines()[0]),
}


def get_search_space(name: str) -> SearchSpace:
    """The registered space called ``name``.

    Raises:
        UnknownSearchSpaceError: no such space; the message lists the valid names.
    """
    try:
        return SEARCH_SPACES[name]
    except KeyError:
        raise UnknownSearchSpaceError(
            f"unknown search space {name!r}; valid: {', '.join(sorted(SEARCH_SPACES))}"
        ) from None
