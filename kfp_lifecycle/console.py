"""What a person sees in a terminal: the project's own log lines, as plain text.

Library modules, steps and the model server log through `logging.getLogger(__name__)`; an
entry point (the `lifecycle` CLI, the model server's `main`) calls `show_logs` once to decide
what reaches the terminal. No KFP import here: the model server uses it too.

- The project's INFO lines (`kfp_lifecycle.*`) go to stdout as bare messages, as the step
  and result lines always read; its warnings and errors go to stderr.
- Framework internals (kfp, kserve, urllib3, ...) only with `verbose`, to stderr, with their
  logger's name; without it they stay at their own defaults (warnings only).

Inside a pipeline step KFP's executor configures logging itself (INFO to the step's log).
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

PROJECT = "kfp_lifecycle"


class _Current(logging.StreamHandler):
    """A stream handler that writes to sys.stdout or sys.stderr as they are when a record is
    emitted (a redirected or captured stream included), not as they were at setup."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self._name = name

    @property
    def stream(self) -> TextIO:
        return getattr(sys, self._name)

    @stream.setter
    def stream(self, value: TextIO) -> None:  # StreamHandler.__init__ sets it: ignored
        pass


class _Below(logging.Filter):
    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self.level


class _NotProject(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(PROJECT)


def _ours(handler: logging.Handler) -> bool:
    return getattr(handler, "_kfp_lifecycle_console", False)


def show_logs(verbose: bool = False) -> None:
    """Route log records to the terminal as described above; calling it again replaces the
    previous setup (never two copies of a line)."""
    project, root = logging.getLogger(PROJECT), logging.getLogger()
    for logger in (project, root):
        for handler in [h for h in logger.handlers if _ours(h)]:
            logger.removeHandler(handler)
    info = _Current("stdout")
    info.addFilter(_Below(logging.WARNING))
    problems = _Current("stderr")
    problems.setLevel(logging.WARNING)
    handlers: list[tuple[logging.Logger, logging.Handler]] = [(project, info), (project, problems)]
    if verbose:
        internals = _Current("stderr")
        internals.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        internals.addFilter(_NotProject())  # the project's lines have their handlers above
        handlers.append((root, internals))
        root.setLevel(logging.INFO)
    for logger, handler in handlers:
        handler._kfp_lifecycle_console = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    project.setLevel(logging.INFO)
