"""User-facing errors: the CLI prints their message on one line and exits with status 2."""

from __future__ import annotations

__all__ = [
    "EXIT_INTERRUPTED", "EXIT_TERMINATED", "EXIT_USAGE", "ConfigError", "DataError", "HarnessError", "MissingStudyError", "StorageError", "exception_chain",
    "innermost_message", "one_line",
]

EXIT_USAGE = 2  # exit status of a bad input (one line on stderr)
EXIT_INTERRUPTED = 130  # exit status after Ctrl-C (128 + SIGINT)
EXIT_TERMINATED = 143  # exit status after SIGTERM (128 + SIGTERM), as shells report a process it ended


class HarnessError(Exception):
    """A problem the user can fix (bad input, missing data, unreachable storage)."""


class ConfigError(HarnessError):
    """A study file is malformed or holds an invalid value."""


class DataError(HarnessError):
    """MNIST is missing, incomplete or corrupted."""


class StorageError(HarnessError):
    """The study storage URL is invalid, unreachable, or holds an incompatible study."""


class MissingStudyError(StorageError):
    """The storage holds no study of the name asked for."""


def one_line(exc: BaseException, limit: int = 300) -> str:
    """A library's multi-line error text on one line, shortened to ``limit`` characters."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def exception_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps, outermost first: Optuna wraps SQLAlchemy's errors (a
    ``__cause__``), which wrap the database driver's (``orig``)."""
    chain = [exc]
    while len(chain) < 5:
        inner = getattr(chain[-1], "orig", None) or chain[-1].__cause__
        if inner is None or inner in chain:
            break
        chain.append(inner)
    return chain


def innermost_message(exc: BaseException) -> str:
    """The first line of what the innermost wrapped error says (a database driver's own words),
    else the outer error's class name."""
    lines = str(exception_chain(exc)[-1]).strip().splitlines()
    return lines[0] if lines else exc.__class__.__name__
