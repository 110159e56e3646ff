"""User-facing errors: each carries its exit code and a one-paragraph message (what, where, how to fix).

The CLI prints `error: <message>` and exits with `exit_code`; no traceback unless MODELBUILD_FULL_ERROR=1.
"""

from __future__ import annotations

import difflib

OK = 0
BUILD_FAILED = 1
USAGE = 2
DATA_INVALID = 3
GATE_FAILED = 4
CORRUPT = 5
NOT_REPRODUCIBLE = 6
STORE_UNAVAILABLE = 7  # no space left, a read-only store, no permission to write it, not a store directory
NOT_CACHED = 8  # `build --require-cached` / `pull`: a step is in no cache and would have to be built
INTERRUPTED = 130


class ModelbuildError(Exception):
    """Base of every error meant for a user; `str()` is the whole message.

    Raised from a builder's `build()` with `keep_artifact=True`, it is a *committed failure*: the output
    written so far is committed as the step's artifact (a fact worth keeping, e.g. an evaluation whose gate
    failed), the failure is recorded with it, and the step fails; a later build of the same key finds the
    recorded failure and fails the same way without building again, and nothing downstream builds."""

    exit_code = BUILD_FAILED

    def __init__(self, *args, keep_artifact: bool = False):
        super().__init__(*args)
        self.keep_artifact = keep_artifact


class UsageError(ModelbuildError):
    """A bad command line: unknown artifact, bad flag value, missing file."""

    exit_code = USAGE


class RecipeError(ModelbuildError):
    """A recipe that cannot be built as written; found before anything runs."""

    exit_code = USAGE

    def __init__(self, message: str, *, file: str | None = None, step: str | None = None, key: str | None = None):
        where = ", ".join(p for p in (file and f"file {file}", step and f"step '{step}'", key and f"key '{key}'") if p)
        super().__init__(f"{where}: {message}" if where else message)
        self.file, self.step, self.key = file, step, key


class BuildError(ModelbuildError):
    """A builder failed while building; the store is left as it was."""

    exit_code = BUILD_FAILED


class DataValidationError(ModelbuildError):
    """Data did not pass its schema or quality checks."""

    exit_code = DATA_INVALID


class GateFailed(ModelbuildError):
    """An evaluation gate did not pass."""

    exit_code = GATE_FAILED


class HashMismatch(ModelbuildError):
    """Content does not match its recorded or pinned hash (tampering, corruption, a moved source)."""

    exit_code = CORRUPT


class NotReproducible(ModelbuildError):
    """`build --check` rebuilt a step and got different content."""

    exit_code = NOT_REPRODUCIBLE


class StoreUnavailable(ModelbuildError):
    """The store cannot be used as asked: no space left, read-only, no permission, or not a store directory.

    Not a fault of the recipe or of the store's content: the same command works once the store is usable."""

    exit_code = STORE_UNAVAILABLE


class NotCached(ModelbuildError):
    """`build --require-cached` (or `pull`) found a step that no cache has: it would have to be built.

    The CI check that a merge built nothing new; not a fault of the step, which builds fine without the flag."""

    exit_code = NOT_CACHED


EXIT_CLASSES = {cls.__name__: cls for cls in (
    ModelbuildError, UsageError, RecipeError, BuildError, DataValidationError, GateFailed, HashMismatch,
    NotReproducible, StoreUnavailable, NotCached)}


def did_you_mean(name: str, choices) -> str:
    """A ' (did you mean X?)' hint, or '' when nothing is close."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
