"""User-facing errors: the CLI prints their message on one line and exits with status 2."""

from __future__ import annotations

__all__ = ["ConfigError", "DataError", "HarnessError", "StorageError"]


class HarnessError(Exception):
    """A problem the user can fix (bad input, missing data, unreachable storage)."""


class ConfigError(HarnessError):
    """A study file is malformed or holds an invalid value."""


class DataError(HarnessError):
    """MNIST is missing, incomplete or corrupted."""


class StorageError(HarnessError):
    """The study storage URL is invalid, unreachable, or holds an incompatible study."""
