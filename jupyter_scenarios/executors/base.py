"""The interface between the scheduler and the places where jobs run.

An executor receives ``TaskRun`` objects and reports back through two callbacks given
to ``start``: ``on_started(job_id, pid)`` when a worker picks the job up, and
``on_finished(outcome)`` when it is over, successfully or not. Callbacks may come from
any thread; the scheduler only queues them.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from pathlib import Path

from ..worker import TaskResult, TaskRun


@dataclasses.dataclass(frozen=True)
class JobOutcome:
    """Outcome of a job's execution, as the executor saw it."""

    job_id: str
    #: The task's own report; None when the job never returned (death, cancel).
    result: TaskResult | None
    #: Why there is no result: a dead worker, an unpicklable value, a cancel.
    error: str | None = None
    cancelled: bool = False
    worker_pid: int | None = None
    #: time.time() when the job ended, if the executor knows it.
    finished_at: float | None = None
    #: The reason to record for a cancelled job, in place of the scheduler's default
    #: (which assumes a worker was stopped).
    cancel_reason: str | None = None


# on_started(job_id, pid, started_at): started_at is the time.time() when the job
# started, or None to use the time of the call.
StartedCallback = Callable[[str, int | None, float | None], None]
FinishedCallback = Callable[[JobOutcome], None]


class Executor(abc.ABC):
    """Runs jobs somewhere and reports their outcomes."""

    #: Whether data nodes kept in the kernel's memory can be read by the jobs.
    shares_kernel_memory: bool = False

    @abc.abstractmethod
    def start(self, on_started: StartedCallback, on_finished: FinishedCallback) -> None:
        """Get ready to run jobs (start workers, connect to a cluster)."""

    @abc.abstractmethod
    def free_slots(self) -> int:
        """Return how many more jobs can start now."""

    @abc.abstractmethod
    def execute(self, run: TaskRun, log_path: Path) -> None:
        """Start ``run``; its outcome arrives through ``on_finished``."""

    def execute_many(self, runs: list[tuple[TaskRun, Path]]) -> None:
        """Start each ``(run, log_path)`` of ``runs``, in order, as ``execute`` does."""
        for run, log_path in runs:
            self.execute(run, log_path)

    @abc.abstractmethod
    def cancel(self, job_id: str) -> bool:
        """Stop the job if it runs; return whether a running job was stopped."""

    @abc.abstractmethod
    def shutdown(self, *, cancel_running: bool = True) -> None:
        """Stop every worker; running jobs are reported cancelled."""

    def describe(self) -> str:
        return type(self).__name__
