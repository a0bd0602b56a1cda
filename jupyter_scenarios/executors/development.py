"""Development mode: run each job synchronously in the submitting thread.

The task's standard output and error still reach the notebook cell (development mode
is for following a run step by step) and are also kept in the job's log file.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path
from typing import TextIO

from ..worker import TaskRun, run_task
from .base import Executor, FinishedCallback, JobOutcome, StartedCallback

#: Reason of a job that a kernel interrupt stopped in development mode.
INTERRUPTED_REASON = "cancelled: the kernel was interrupted while the job ran"


class _LazyLog:
    """A log file opened on the first write, so silent jobs create no file."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._file: TextIO | None = None

    def write(self, text: str) -> None:
        if self._file is None:
            self._file = open(self._path, "a", encoding="utf-8")  # noqa: SIM115
        self._file.write(text)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class _Tee(io.TextIOBase):
    """Write to the original stream and to a log file."""

    def __init__(self, original: TextIO, log: _LazyLog) -> None:
        self._original = original
        self._log = log

    def write(self, text: str) -> int:
        self._log.write(text)
        return self._original.write(text)

    def flush(self) -> None:
        self._log.flush()
        self._original.flush()


class DevelopmentExecutor(Executor):
    """Run jobs one at a time, in the calling thread."""

    shares_kernel_memory = True

    def start(self, on_started: StartedCallback, on_finished: FinishedCallback) -> None:
        self._on_started = on_started
        self._on_finished = on_finished

    def free_slots(self) -> int:
        return 1

    def execute(self, run: TaskRun, log_path: Path) -> None:
        self._on_started(run.job_id, os.getpid(), None)
        log = _LazyLog(log_path)
        try:
            tee_out = _Tee(sys.stdout, log)
            tee_err = _Tee(sys.stderr, log)
            with (
                contextlib.redirect_stdout(tee_out),
                contextlib.redirect_stderr(tee_err),
            ):
                result = run_task(run)
        except KeyboardInterrupt:
            # The user interrupted the kernel while the task ran. Report the job
            # cancelled before the interrupt goes on, or it stays RUNNING for good.
            self._on_finished(
                JobOutcome(
                    run.job_id,
                    None,
                    cancelled=True,
                    worker_pid=os.getpid(),
                    cancel_reason=INTERRUPTED_REASON,
                )
            )
            raise
        finally:
            log.close()
        self._on_finished(JobOutcome(run.job_id, result, worker_pid=os.getpid()))

    def cancel(self, job_id: str) -> bool:
        # A job running in the calling thread cannot be interrupted from outside.
        return False

    def shutdown(self, *, cancel_running: bool = True) -> None:
        return None

    def describe(self) -> str:
        return "development (synchronous, in the kernel)"
