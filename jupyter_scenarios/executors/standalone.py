"""Standalone mode: run jobs on a pool of worker processes owned by the kernel.

This adapter turns the scheduler's ``TaskRun`` objects into calls of
``jupyter_scenarios.worker.run_task`` on ``WorkerPool`` workers, and the pool's
outcomes back into ``JobOutcome`` objects.
"""

from __future__ import annotations

import threading
from pathlib import Path

from ..worker import TaskResult, TaskRun, run_task_in_worker
from .base import Executor, FinishedCallback, JobOutcome, StartedCallback
from .pool import WorkerPool, WorkOutcome


class StandaloneExecutor(Executor):
    """Run jobs on ``max_workers`` worker processes."""

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers
        # Guards _in_flight: the scheduler thread adds, the pool thread removes.
        self._lock = threading.Lock()
        self._in_flight: set[str] = set()
        self._pool: WorkerPool | None = None

    def start(self, on_started: StartedCallback, on_finished: FinishedCallback) -> None:
        self._on_finished = on_finished

        def started(key: str, pid: int) -> None:
            on_started(key, pid)

        self._pool = WorkerPool(
            self.max_workers,
            on_started=started,
            on_finished=self._finished,
            preload=("jupyter_scenarios.worker",),
        )
        self._pool.start()

    def _finished(self, key: str, outcome: WorkOutcome) -> None:
        with self._lock:
            self._in_flight.discard(key)
        result = outcome.value if outcome.ok else None
        if result is not None and not isinstance(result, TaskResult):
            result = None
        error = None if result is not None else (outcome.error or outcome.reason)
        self._on_finished(
            JobOutcome(
                key,
                result,
                error=error,
                cancelled=outcome.cancelled,
                worker_pid=outcome.pid,
            )
        )

    def free_slots(self) -> int:
        # Each worker may hold one job queued behind the one it runs, so the pool
        # starts the next job as soon as a worker frees up, without waiting for the
        # scheduler thread. At most max_workers jobs still run at once.
        with self._lock:
            return 2 * self.max_workers - len(self._in_flight)

    def execute(self, run: TaskRun, log_path: Path) -> None:
        assert self._pool is not None, "start() was not called"
        with self._lock:
            self._in_flight.add(run.job_id)
        self._pool.submit(run.job_id, run_task_in_worker, (run,), log_path)

    def cancel(self, job_id: str) -> bool:
        if self._pool is None:
            return False
        return self._pool.cancel(job_id)

    def running_pids(self) -> dict[str, int]:
        return self._pool.running() if self._pool is not None else {}

    def shutdown(self, *, cancel_running: bool = True) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_running=cancel_running)

    def describe(self) -> str:
        return f"standalone ({self.max_workers} worker processes)"
