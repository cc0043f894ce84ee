"""The library's log messages on the terminal: ``-q`` errors only, ``-v`` INFO, ``-vv`` DEBUG.

Library code logs to the ``onnx_prune`` logger and prints nothing. The CLI gives that logger one
``RichHandler`` writing to standard error through a rich Console, so that a message logged while
a progress bar is live is printed above the bar instead of tearing it. Each record is one line
(``warning: ...``), never padded to the terminal width, control characters escaped.
"""

from __future__ import annotations

import logging

from rich.console import Console
from rich.logging import RichHandler
from rich.text import Text

LOGGER = "onnx_prune"
_STYLES = {"debug": "dim", "info": "cyan", "warning": "yellow", "error": "bold red"}


class LineHandler(RichHandler):
    """A RichHandler that prints each record as one soft-wrapped line: ``level: message``."""

    def emit(self, record: logging.LogRecord) -> None:
        """Print ``record`` on the handler's console (standard error)."""
        try:
            level = record.levelname.lower()
            text = Text.assemble((f"{level}:", _STYLES.get(level, "")), " ", self.format(record))
            self.console.print(text, soft_wrap=True, highlight=False)
        except Exception:  # a failing log line must not end the run; logging reports it
            self.handleError(record)


def log_level(verbosity: int, *, quiet: bool) -> int:
    """ERROR with ``--quiet``; WARNING by default; INFO with ``-v``; DEBUG with ``-vv``."""
    if quiet:
        return logging.ERROR
    return {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)


def configure_logging(level: int, console: Console) -> LineHandler:
    """Send the library's records at ``level`` and above to ``console`` (replacing the handler a
    previous call installed, so that running ``main`` twice never prints a line twice)."""
    logger = logging.getLogger(LOGGER)
    for old in [handler for handler in logger.handlers if isinstance(handler, LineHandler)]:
        logger.removeHandler(old)
    handler = LineHandler(level, console=console, show_time=False, show_path=False)
    logger.addHandler(handler)
    # Below WARNING the logger must let the records through; otherwise it inherits the root's
    # level (WARNING unless an embedding application or a test's caplog asks for more).
    logger.setLevel(level if level < logging.WARNING else logging.NOTSET)
    return handler
