"""Standalone mode: run jobs on a pool of worker processes owned by the kernel.

This adapter turns the scheduler's ``TaskRun`` objects into calls of
``jupyter_scenarios.worker.run_task`` on ``WorkerPool`` workers, and the pool's
outcomes back into ``JobOutcome`` objects.
"""

from __future__ import annotations

import collections
import os
import pickle
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle

from .._environment import is_kernel
from ..exceptions import clause
from ..worker import TaskResult, TaskRun, run_pickled_task
from . import _worker_main
from .base import Executor, FinishedCallback, JobOutcome, StartedCallback
from .pool import REASON_PICKLING_FAILED, WorkerPool, WorkOutcome

# Jobs handed to the pool per worker; see free_slots().
IN_FLIGHT_PER_WORKER = 4
# How many (submission, function) pickles to keep; each submission needs one per
# distinct task function while its jobs are dispatched.
_FUNCTION_CACHE_SIZE = 256


class StandaloneExecutor(Executor):
    """Run jobs on ``max_workers`` worker processes."""

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers
        # Guards _in_flight: the scheduler thread adds, the pool thread removes.
        self._lock = threading.Lock()
        self._in_flight: set[str] = set()
        self._pool: WorkerPool | None = None
        # (submission id, id of the function) -> (function, its cloudpickle). The
        # function is kept so that its id is not reused while the entry lives. A
        # function is pickled once per submission: a later submission pickles it
        # again, with the values that its global variables have then.
        self._pickled_functions: collections.OrderedDict[
            tuple[str, int], tuple[Callable[..., Any], bytes]
        ] = collections.OrderedDict()

    def start(self, on_started: StartedCallback, on_finished: FinishedCallback) -> None:
        self._on_finished = on_finished

        def started(key: str, pid: int) -> None:
            assert self._pool is not None
            on_started(key, pid, self._pool.start_time(key))

        self._pool = WorkerPool(
            self.max_workers,
            on_started=started,
            on_finished=self._finished,
            preload=("jupyter_scenarios.worker",),
            # A script shows what its jobs print, as Taipy's workers do. In a
            # kernel it would go to the server's terminal, so only the job table
            # and job.logs show it there.
            echo_output=not is_kernel(),
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
                finished_at=outcome.finished_at,
            )
        )

    def free_slots(self) -> int:
        # Jobs handed to the pool per worker: the one it runs and two sent ahead,
        # which it starts one after the other. One more waits in the pool, so that
        # the pool thread can send it ahead without waiting for this scheduler
        # thread. At most max_workers jobs still run at once.
        with self._lock:
            return IN_FLIGHT_PER_WORKER * self.max_workers - len(self._in_flight)

    def execute(self, run: TaskRun, log_path: Path) -> None:
        self.execute_many([(run, log_path)])

    def execute_many(self, runs: list[tuple[TaskRun, Path]]) -> None:
        # One call of the pool for all the jobs that a scheduler round starts, so
        # that the scheduler thread takes the pool's lock once, not once per job.
        assert self._pool is not None, "start() was not called"
        with self._lock:
            self._in_flight.update(run.job_id for run, _ in runs)
        pickled = []
        for run, log_path in runs:
            try:
                function = self._pickle_function(run)
                light = run.with_function(None)
                payload = _pickle_call(run_pickled_task, (light, function))
            except Exception as exc:  # noqa: BLE001 - pickling raises many types
                self._finished(
                    run.job_id,
                    WorkOutcome(
                        key=run.job_id,
                        ok=False,
                        error=(
                            f"could not pickle the function or the data node "
                            f"properties of task {run.task_config_id!r} for job "
                            f"{run.job_id!r}: {type(exc).__name__}: {clause(exc)}. Worker "
                            "processes receive both through cloudpickle; move what "
                            "cannot be pickled (locks, open files, connections) into "
                            "the function's body."
                        ),
                        reason=REASON_PICKLING_FAILED,
                    ),
                )
                continue
            cwd = run.cwd if run.cwd is not None else os.getcwd()
            sys_path = run.sys_path if run.sys_path is not None else tuple(sys.path)
            pickled.append((run.job_id, payload, log_path, cwd, sys_path))
        try:
            self._pool.submit_pickled_many(pickled)
        except BaseException:
            with self._lock:
                self._in_flight.difference_update(job[0] for job in pickled)
            raise

    def _pickle_function(self, run: TaskRun) -> bytes:
        key = (run.submit_id, id(run.function))
        cached = self._pickled_functions.get(key)
        if cached is not None and cached[0] is run.function:
            self._pickled_functions.move_to_end(key)
            return cached[1]
        data: bytes = cloudpickle.dumps(
            run.function, protocol=_worker_main.PICKLE_PROTOCOL
        )
        self._pickled_functions[key] = (run.function, data)
        if len(self._pickled_functions) > _FUNCTION_CACHE_SIZE:
            self._pickled_functions.popitem(last=False)
        return data

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


def _pickle_call(function: Callable[..., Any], args: tuple[Any, ...]) -> bytes:
    """Pickle ``(function, args)`` for a worker, with the standard pickler if it can.

    The standard pickler is faster than cloudpickle for the plain values of a
    ``TaskRun``. Data node properties may contain objects defined in the notebook,
    which it would pickle by a reference to ``__main__`` that a worker cannot
    resolve. So any pickle that mentions ``__main__`` is redone with cloudpickle,
    and so is everything while modules are registered to be pickled by value.
    """
    call = (function, args)
    if not cloudpickle.list_registry_pickle_by_value():
        try:
            data = pickle.dumps(call, protocol=_worker_main.PICKLE_PROTOCOL)
        except Exception:  # noqa: BLE001, S110 - cloudpickle below handles it
            pass
        else:
            if b"__main__" not in data:
                return data
    result: bytes = cloudpickle.dumps(call, protocol=_worker_main.PICKLE_PROTOCOL)
    return result
