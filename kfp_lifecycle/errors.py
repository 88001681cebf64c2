"""Why a pipeline step failed, in one line (the error classes live in kfp_lifecycle.core.errors).

A step of a pipeline runs in its own process, so an error raised there reaches the local
runner only as "task failed". To still show its reason in one line, a step records why it
failed in STEP_FAILURE_FILE beside its outputs (see record_step_failures), and the runner
reads that record (kfp_lifecycle.local_run).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from types import TracebackType

from kfp_lifecycle.core.errors import LifecycleError

STEP_FAILURE_FILE = "step-failure.json"


class StepFailed(LifecycleError):
    """A pipeline step stopped on a LifecycleError; the message names the step and why."""


class StepCrashed(RuntimeError):
    """A pipeline step failed on an unexpected exception (a bug); its log has the traceback."""


def step_directory(argv: list[str]) -> Path | None:
    """The directory of the running step's outputs, from the executor input kfp passes it."""
    for position, argument in enumerate(argv):
        if argument == "--executor_input" and position + 1 < len(argv):
            text = argv[position + 1]
        elif argument.startswith("--executor_input="):
            text = argument.partition("=")[2]
        else:
            continue
        try:
            return Path(json.loads(text)["outputs"]["outputFile"]).parent
        except (ValueError, KeyError, TypeError):
            return None
    return None


def write_step_failure(directory: Path, error: BaseException) -> Path:
    """Record why the step failed: the step's name, the error's type and message."""
    record = {
        "step": directory.name,
        "error": type(error).__name__,
        "message": str(error),
        "user_error": isinstance(error, LifecycleError),
        "time": time.time(),
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / STEP_FAILURE_FILE
    path.write_text(json.dumps(record, indent=2))
    return path


def record_step_failures() -> None:
    """Have an uncaught exception in this step process leave a record before it exits.

    KFP lightweight components embed the step function's source text, so a decorator around
    it is lost at run time; an exception hook set when the step imports this module is not.
    The default hook still prints the traceback into the step's log.
    """
    previous = sys.excepthook

    def hook(kind: type[BaseException], error: BaseException, trace: TracebackType | None):
        directory = step_directory(sys.argv)
        if directory is not None:
            # The record is a convenience: the log keeps the traceback regardless.
            with contextlib.suppress(OSError):
                write_step_failure(directory, error)
        previous(kind, error, trace)

    sys.excepthook = hook


# kfp's executor sets _KFP_RUNTIME while a step runs. Any step that can raise a
# LifecycleError imports this module, so every such failure gets recorded.
if os.environ.get("_KFP_RUNTIME") == "true":
    record_step_failures()
