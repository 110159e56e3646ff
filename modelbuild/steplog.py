"""What a step log holds: the builder's own lines, warnings that ask the user to act, and errors.

A worker writes its step's log (`store/logs/<key>.log`, `modelbuild log`) through `setup(path)`. The libraries a
builder calls write much that a user reading the log of a fine-tune does not need, and some of it twice; here
it goes to DEBUG, which the log shows only with `MODELBUILD_LOG_LEVEL=DEBUG`:

- progress bars (tqdm: transformers' weight loading and saving, GGUF de-quantisation, datasets, lm-eval): off.
  In a file they are carriage-return redraws; the build view shows the step's progress (`ctx.progress`).
- Lightning's INFO lines ("GPU available", "💡 Tip", "`Trainer.fit` stopped"): DEBUG. Lightning gives its
  loggers a handler of their own when it is imported before logging is set up (a warm zygote imports it
  first), so each line came out through both: its handler is removed and its records go to the root's.
- warnings, one line each as `WARNING <Category>: message`: DeprecationWarning, PendingDeprecationWarning and
  FutureWarning (a library's note to its own users' code) at DEBUG, the others at WARNING.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

LEVEL_ENV = "MODELBUILD_LOG_LEVEL"  # DEBUG shows what is kept out of step logs by default
FORMAT = "%(asctime)s %(levelname)s %(message)s"
QUIET_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")
LIBRARY_NOTES = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


def setup(stream=None) -> None:
    """Log to `stream` (default: stderr, which the worker has pointed at the step log) at INFO, or at the
    level MODELBUILD_LOG_LEVEL names, with the libraries' chatter at DEBUG."""
    debug = os.environ.get(LEVEL_ENV, "").upper() == "DEBUG"
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, stream=stream or sys.stderr,
                        format=FORMAT, force=True)
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(logging.DEBUG if debug else logging.WARNING)
    warnings.showwarning = _log_warning
    if not debug:
        _no_progress_bars()


def _log_warning(message, category, filename, lineno, file=None, line=None) -> None:
    level = logging.DEBUG if issubclass(category, LIBRARY_NOTES) else logging.WARNING
    logging.getLogger("py.warnings").log(level, "%s: %s", category.__name__, str(message).strip())


def _no_progress_bars() -> None:
    """tqdm off, in this process and those it starts. tqdm reads TQDM_DISABLE when it is imported, which a warm
    zygote did before this job forked, so an imported tqdm is switched off where every bar is made."""
    os.environ["TQDM_DISABLE"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    if "tqdm" in sys.modules:
        import functools

        from tqdm import std

        init = std.tqdm.__dict__["__init__"]  # a partialmethod holding TQDM_* settings read at import
        if getattr(init, "keywords", {}).get("disable") is not True:
            std.tqdm.__init__ = functools.partialmethod(init, disable=True)
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
