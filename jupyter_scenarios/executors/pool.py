"""Pool of worker processes that runs task functions outside the kernel.

The scheduler hands :class:`WorkerPool` one call at a time with :meth:`WorkerPool.submit`
and learns what happened through two callbacks. Unlike
``concurrent.futures.ProcessPoolExecutor``, which is broken for good once one worker
dies, this pool reports a dead worker as a failed job and starts a replacement.

Processes and threads
    Each worker is a process started by ``multiprocessing`` with the forkserver (the
    default) or spawn start method, never a plain ``fork`` of the kernel, because
    forking a threaded process can deadlock the child. Each worker calls ``setsid()``,
    so its pid is also its process group id. Cancelling a job kills that group, which
    takes the worker and every child process of the job with it. On Linux each
    worker also adopts its orphaned descendants (``PR_SET_CHILD_SUBREAPER``), so that
    children that started their own session or group are found and killed too.
    Workers run under Linux's SCHED_BATCH policy, which keeps their share of the
    CPU but stops them from preempting the kernel's threads when they wake up.

    One daemon thread per pool, named ``jupyter-scenarios-pool``, starts replacement
    workers, sends jobs, reads results and calls the callbacks. It blocks in
    ``poll`` on the worker connections, the worker process sentinels and a wake-up
    pipe that submit, cancel and shutdown write to. It never polls on a timer: its
    only timeouts are deadlines, such as the kill of a worker that ignores CANCEL.

Jobs sent ahead
    A worker that runs a job may also hold the next two, which it starts one after
    the other as soon as the job before ends, without waiting for the pool thread.
    The worker reports which job it started in its DONE message. Once the job
    before them has run for 50 ms, or when another worker becomes idle, the pool
    takes the jobs sent ahead back (STEAL) and queues them again in the order of
    their submits, so a job does not wait behind a long one while another worker
    could run it.
    A cancelled job that was sent ahead is withdrawn (SKIP). Should the worker have
    started it already, the pool sends CANCEL for it, as for a running job: the
    worker kills itself only if it still runs that job, so the jobs sent after it
    never die half-way. ``_worker_main`` describes the messages.

Cancel
    To stop a running job the pool thread sends CANCEL, on which the worker kills
    itself, its process group and its descendants if it still runs that job. A
    worker that has moved on to the next job ignores it, so a cancel that comes as
    the job ends leaves the next job alone. A worker that does not exit within 0.5 s
    (a job holding the interpreter lock in C code) is killed by the pool thread.

Output
    Each worker sends a job's output (file descriptors 1 and 2) to a spill file it
    reuses, and appends it to the job's log file at the end only if the job wrote
    something, or after 0.2 s for a long job, so that it can be followed. When a
    worker dies, the pool thread moves what is left in its spill file to the log of
    the job it ran.

No orphans
    A worker kills its own process group when the kernel dies, through two
    mechanisms. The worker watches a lifeline pipe whose write end only the kernel
    holds, so the pipe reaches end of file when the kernel exits, even by SIGKILL.
    On Linux a forkserver worker also requests SIGTERM when its parent dies
    (``PR_SET_PDEATHSIG``). That parent is the forkserver, which exits once the
    kernel and every worker have closed the forkserver's "alive" pipe, so each worker
    closes the copy it inherits. Both paths run Python code in the worker, so a job
    stuck in C code that holds the GIL delays them until that code returns.

Start method
    forkserver is the default because a replacement worker, needed after every cancel
    and every crash, starts about 8 times faster than with spawn. The round trip of a
    call does not depend on the start method. One run of ``benchmarks/bench_pool.py``
    on a shared 2-core Linux machine with Python 3.11, in milliseconds (start() is a
    single sample, the other rows are medians). Other runs on the same machine varied
    by up to 2 times under load, but forkserver kept its lead on replacements:

    ====================================  ==========  =====
    measurement                           forkserver  spawn
    ====================================  ==========  =====
    start(), forkserver not yet running   203         196
    start(), forkserver already running   25          196
    replacement, cancel() to next result  24          189
    round trip of one tiny call           0.32        0.29
    ====================================  ==========  =====

    The first forkserver start launches the forkserver and imports
    ``jupyter_scenarios`` there once. In a script, as in the benchmark, each new
    worker also imports the script again as ``__mp_main__``, which a kernel does not
    do. Timing a worker from start to ready with and without the script's imports
    preloaded gave 16 ms and 6 ms, so about 10 ms of a scripted replacement is that
    import (an estimate from one machine).

Serialization
    ``fn`` and ``args`` are pickled with cloudpickle at submit time, so functions and
    classes defined in a notebook cell, lambdas and closures travel by value, and
    redefining a cell's function changes what the next submit runs. Importable
    functions travel by reference. A worker keeps the version of a module that it
    imported first, so after editing such a module restart the pool or register the
    module with ``cloudpickle.register_pickle_by_value``. Return values come back as
    pickle protocol 5.

The pool uses only POSIX calls (``setsid``, ``killpg``) and does not run on Windows.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import dataclasses
import enum
import logging
import math
import multiprocessing
import os
import pickle
import select
import signal
import struct
import sys
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext, SpawnContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import cloudpickle

from jupyter_scenarios._environment import is_kernel
from jupyter_scenarios.executors import _worker_main
from jupyter_scenarios.executors._worker_main import (
    REASON_COMPLETED,
    REASON_EXCEPTION,
    REASON_LOG_OPEN_FAILED,
    REASON_RESULT_PICKLING_FAILED,
    REASON_UNPICKLING_FAILED,
)

__all__ = [
    "REASON_CANCELLED",
    "REASON_COMPLETED",
    "REASON_EXCEPTION",
    "REASON_LOG_OPEN_FAILED",
    "REASON_PICKLING_FAILED",
    "REASON_RESULT_PICKLING_FAILED",
    "REASON_RESULT_UNPICKLING_FAILED",
    "REASON_SHUTDOWN",
    "REASON_UNPICKLING_FAILED",
    "REASON_WORKER_DIED",
    "REASON_WORKER_START_FAILED",
    "WorkOutcome",
    "WorkerPool",
]

logger = logging.getLogger(__name__)

REASON_CANCELLED = "cancelled"
REASON_SHUTDOWN = "shutdown"
REASON_WORKER_DIED = "worker_died"
REASON_PICKLING_FAILED = "pickling_failed"
REASON_RESULT_UNPICKLING_FAILED = "result_unpickling_failed"
REASON_WORKER_START_FAILED = "worker_start_failed"

POOL_THREAD_NAME = "jupyter-scenarios-pool"
WORKER_PROCESS_NAME = "jupyter-scenarios-worker"
START_METHODS = ("forkserver", "spawn")

# start() raises if a worker has not reported ready after this many seconds. The
# first forkserver start also launches the forkserver and imports the preloads.
_READY_TIMEOUT = 60.0
# After this many workers in a row die before they are ready, the pool stops
# starting workers and fails the queued jobs. The next submit() tries again.
_MAX_START_FAILURES = 3
# How long shutdown waits for SIGKILLed workers to be reported dead, in seconds.
_KILL_WAIT = 5.0
# Reading a worker's messages: bytes per read, and the sizes that frame them.
_READ_CHUNK = 64 * 1024
_SIZE = struct.Struct("!i")
_LONG_SIZE = struct.Struct("!Q")

# A job is sent ahead only to a worker whose job has run for less than this many
# seconds. Sending ahead saves a round trip per job, which matters for short jobs,
# and a worker busy for long would only make the job wait to be taken back.
_AHEAD_MAX_RUNNING = 0.05
# Jobs sent ahead to one worker at most. With one, a worker that ends a tiny job
# before the pool thread has read the previous DONE waits for the next job, then
# reports that it started it, which is one more message per job. Two keep it busy.
_AHEAD_DEPTH = 2
# Seconds after sending CANCEL when the pool thread kills a worker that still runs
# the job; the worker itself normally acts within milliseconds.
_CANCEL_FORCE_AFTER = 0.5
# How long the pool thread waits for a worker killed by cancel() to exit before it
# reports the cancel without the job's last output, in seconds.
_CANCEL_OUTPUT_WAIT = 1.0


@dataclasses.dataclass(frozen=True, slots=True)
class WorkOutcome:
    """Result of one job submitted to a :class:`WorkerPool`.

    Attributes
    ----------
    key
        The key that was passed to :meth:`WorkerPool.submit`.
    ok
        Whether ``fn`` returned and its value reached the kernel.
    value
        The return value of ``fn`` when ``ok`` is true, else None.
    error
        Formatted traceback of the exception raised by ``fn``, or a sentence that
        names the key and states what failed. None when ``ok`` is true.
    exit_code
        Exit code of the worker process when it exited while running the job.
    signal
        Number of the signal that killed the worker while it ran the job. Both
        ``exit_code`` and ``signal`` stay None for a cancelled job.
    cancelled
        Whether :meth:`WorkerPool.cancel` or :meth:`WorkerPool.shutdown` stopped the
        job.
    pid
        Process id of the worker that ran the job, or None if it never started.
    started_at, finished_at
        ``time.time()`` when ``fn`` started and when the job ended. ``started_at`` is
        None for a job that never started.
    reason
        Short machine-readable cause, one of the ``REASON_*`` constants of this
        module: ``completed``, ``exception``, ``cancelled``, ``shutdown``,
        ``worker_died``, ``pickling_failed``, ``unpickling_failed``,
        ``result_pickling_failed``, ``result_unpickling_failed``,
        ``log_open_failed`` or ``worker_start_failed``.
    """

    key: str
    ok: bool
    value: Any = None
    error: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    cancelled: bool = False
    pid: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    reason: str = REASON_COMPLETED


class _WorkerState(enum.Enum):
    STARTING = "starting"  # started, READY not received yet
    IDLE = "idle"
    BUSY = "busy"  # runs a job, or has one sent ahead
    # Killed or sent STOP. Its results are ignored, and the pool thread removes it
    # from _workers once its sentinel reports the exit.
    RETIRING = "retiring"


@dataclasses.dataclass(eq=False)
class _Job:
    key: str
    payload: bytes  # pickle of (fn, args)
    log_path: str | None
    cwd: str
    sys_path: tuple[str, ...]
    started_at: float | None = None  # kernel clock at dispatch
    worker: _Worker | None = None  # set on dispatch, so cancel() finds it at once
    stealing: bool = False  # sent ahead, and STEAL sent to get it back
    sent: int = 0  # number of the dispatch, increasing over the pool's life
    order: int = 0  # number of the submit, increasing, by which the queue is sorted


@dataclasses.dataclass(eq=False)
class _Worker:
    process: BaseProcess
    pid: int
    conn: Connection  # duplex connection to the worker
    lifeline: Connection  # write end of the worker's lifeline pipe, never written
    conn_fd: int  # conn's descriptor and the process sentinel, for the pool's poll
    sentinel: int
    state: _WorkerState = _WorkerState.STARTING
    pgid: int | None = None  # process group id reported in READY
    job: _Job | None = None  # the job it runs, while BUSY
    # Jobs sent while the worker runs ``job``, at most _AHEAD_DEPTH, in the order
    # sent, which is the order the worker starts them in unless SKIP withdraws one
    # first. Not empty, with ``job`` None, between the DONE that reports that the
    # worker did not start the first one yet and the STARTED that reports it did.
    ahead: list[_Job] = dataclasses.field(default_factory=list)
    # Jobs sent ahead and then cancelled, by key: their log file and their number
    # in the order of sending (_Job.sent). The worker may not have read their SKIP
    # yet. An entry goes once the worker starts a job sent after it.
    withdrawn: dict[str, tuple[str | None, int]] = dataclasses.field(
        default_factory=dict
    )
    # Log file of the job it runs, which receives what is left in the worker's
    # spill file if the worker dies (see _worker_main.PROMOTE_SECONDS).
    log_path: str | None = None
    # Folder of the worker's spill file: that of the last job with a log file.
    spill_folder: str | None = None
    # The running job that cancel() requested to stop, until it ends or the worker
    # dies, with the time.monotonic() when CANCEL was sent; see _carry_out_cancel.
    cancel_requested: _Job | None = None
    cancel_sent_at: float | None = None
    # The running job that the worker was killed for, until the pool thread settles
    # it, with the time.monotonic() of the kill; see _settle_cancel_locked.
    cancelled: _Job | None = None
    cancelled_at: float = 0.0
    # What the worker reported before it died: the DONE outcome of ``cancelled``
    # and the job it started next, or a STARTED for the job sent ahead.
    cancelled_outcome: WorkOutcome | None = None
    started_after_cancel: str | None = None
    # Jobs it was given but had not reported started when it was killed for
    # starting a withdrawn job, and the time.monotonic() of that kill. It may have
    # run some of them meanwhile: those whose DONE arrives before it exits count,
    # and the others go back to the queue when it is reaped (see _reap).
    unsettled: list[_Job] = dataclasses.field(default_factory=list)
    retired_at: float = 0.0
    # Key of a withdrawn job that the worker started, whose cancel was reported
    # already. It is kept until the job's DONE arrives or the worker dies. The
    # time.monotonic() when CANCEL was sent for it is None until then.
    # See _started_ahead.
    withdrawn_running: str | None = None
    withdrawn_cancel_at: float | None = None
    conn_open: bool = True  # False once the connection reached end of file


# Events for the pool thread to deliver to the callbacks, in order: (key, pid) for
# on_started, or a WorkOutcome for on_finished.
_Event = tuple[str, int] | WorkOutcome


class WorkerPool:
    """Pool of worker processes that runs one call per worker at a time.

    Every submitted key gets exactly one ``on_finished`` call, even when it was
    cancelled, could not be pickled or the pool shut down. ``on_started`` comes
    first for jobs that reached a worker. Both callbacks run in the pool thread, one
    at a time, and should return quickly. An exception raised by a callback is logged
    and ignored.

    Parameters
    ----------
    max_workers
        Number of worker processes, and so the maximum number of jobs running at once.
    on_started
        Called with ``(key, worker_pid)`` when a job is sent to a worker.
    on_finished
        Called with ``(key, outcome)`` when a job ends for any reason.
    start_method
        ``"forkserver"`` or ``"spawn"``. Plain ``"fork"`` is rejected because forking
        the threaded kernel can deadlock the child.
    preload
        Modules that each worker imports before it reports ready. With forkserver,
        the forkserver also imports them once, so that workers start with them loaded,
        unless this process already runs a forkserver started with other preloads.
    echo_output
        Whether workers also copy what each job prints, as it comes, to the
        standard output that they inherited from this process. Each job's log
        gets it either way.

    Raises
    ------
    TypeError
        If ``max_workers`` is not an int.
    ValueError
        If ``max_workers`` is below 1 or ``start_method`` is not supported.

    Examples
    --------
    >>> pool = WorkerPool(2, on_started=print, on_finished=print)  # doctest: +SKIP
    >>> pool.start()  # doctest: +SKIP
    >>> pool.submit("job-1", pow, (2, 10), None)  # doctest: +SKIP
    >>> pool.shutdown()  # doctest: +SKIP
    """

    def __init__(
        self,
        max_workers: int,
        *,
        on_started: Callable[[str, int], None],
        on_finished: Callable[[str, WorkOutcome], None],
        start_method: str = "forkserver",
        preload: Sequence[str] = (),
        echo_output: bool = False,
    ) -> None:
        if isinstance(max_workers, bool) or not isinstance(max_workers, int):
            raise TypeError(f"max_workers must be an int, got {max_workers!r}")
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers}")
        if start_method not in START_METHODS:
            raise ValueError(
                f"start_method must be one of {', '.join(START_METHODS)}, got "
                f"{start_method!r}; plain fork is unsafe in the threaded kernel"
            )
        self._max_workers = max_workers
        self._on_started = on_started
        self._on_finished = on_finished
        self._start_method = start_method
        self._preload = [_worker_main.__name__, *preload]
        self._echo_output = echo_output
        self._context: ForkServerContext | SpawnContext
        if start_method == "forkserver":
            self._context = multiprocessing.get_context("forkserver")
        else:
            self._context = multiprocessing.get_context("spawn")
        self._owner_pid = os.getpid()

        # _lock guards every attribute below up to the end of __init__. The threads
        # that take it are callers of the public methods and the pool thread. No
        # thread calls a callback, starts a process or unpickles a result while
        # holding it.
        self._lock = threading.Lock()
        self._started = False
        self._closing = False  # shutdown() was called
        self._cancel_on_shutdown = True
        self._shutdown_deadline = 0.0  # time.monotonic() when shutdown kills workers
        self._kill_deadline: float | None = None  # time.monotonic() to give up
        self._workers: dict[int, _Worker] = {}  # pid -> worker, until its exit is seen
        # Jobs not yet sent to a worker, in submit order.
        self._queue: collections.deque[_Job] = collections.deque()
        # SKIP messages for the pool thread to send, before any new job.
        self._skips: list[tuple[_Worker, str]] = []
        # Workers whose running job cancel() requested to stop.
        self._cancel_requests: list[_Worker] = []
        self._jobs: dict[str, _Job] = {}  # key -> queued or running job
        # Events for the pool thread to deliver. Producers: callers of submit, cancel
        # and shutdown, and the pool thread. Consumer: the pool thread.
        self._events: collections.deque[_Event] = collections.deque()
        self._start_failures = 0  # workers in a row that died before READY
        # Wake-up pipe: any thread writes a byte while holding _lock, and the pool
        # thread drains the read end. Both ends are closed under _lock, so a write
        # never reaches a reused descriptor number.
        self._wake_r: int | None = None
        self._wake_w: int | None = None
        # True from a write to the wake-up pipe until the pool thread drains it, so
        # that a burst of submits writes one byte, not one per job.
        self._wake_pending = False

        self._sent = 0  # jobs dispatched so far; see _Job.sent
        self._submitted = 0  # jobs submitted so far; see _Job.order
        self._thread: threading.Thread | None = None
        # Poll object of the pool thread and the descriptors it watches; see _poll.
        self._poller: select.poll | None = None
        self._polled_fds: tuple[int, ...] = ()

    # Public API

    def start(self) -> None:
        """Start all worker processes and the pool thread.

        Returns once every worker has reported that it is ready, so the start-up
        cost is paid here once and not by the first jobs.

        Raises
        ------
        RuntimeError
            If the pool was already started or shut down, or a worker did not
            become ready within 60 seconds. After a failed start the pool is shut
            down.
        """
        with self._lock:
            if self._closing:
                raise RuntimeError("WorkerPool.start() was called after shutdown()")
            if self._started:
                raise RuntimeError("WorkerPool.start() was called twice")
            self._started = True

        if self._start_method == "forkserver":
            # Only takes effect if this process has not started its forkserver yet.
            self._context.set_forkserver_preload(list(self._preload))
        began = time.perf_counter()
        workers: list[_Worker] = []
        try:
            for _ in range(self._max_workers):
                workers.append(self._start_worker())
            deadline = time.monotonic() + _READY_TIMEOUT
            for worker in workers:
                self._wait_ready(worker, deadline)
        except BaseException:
            for worker in workers:
                self._kill_group(worker)
                self._release(worker)
            with self._lock:
                self._closing = True
            raise

        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        with self._lock:
            self._wake_r, self._wake_w = wake_r, wake_w
            self._workers = {worker.pid: worker for worker in workers}
            # Jobs submitted while start() ran found no pipe to wake the thread.
            self._wake_locked()
        logger.debug(
            "started %d %s workers in %.3f s: pids %s",
            len(workers),
            self._start_method,
            time.perf_counter() - began,
            [worker.pid for worker in workers],
        )
        self._thread = threading.Thread(
            target=self._run, name=POOL_THREAD_NAME, daemon=True
        )
        self._thread.start()
        _live_pools.add(self)

    def submit(
        self,
        key: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        log_path: Path | None,
    ) -> None:
        """Queue the call ``fn(*args)`` under ``key``.

        ``fn`` and ``args`` are pickled now, so later changes to them do not affect
        the job. A pickling error does not raise here: it becomes an ``on_finished``
        outcome with reason ``pickling_failed``.

        Parameters
        ----------
        key
            Identifier of the job, unique among the jobs queued or running in this
            pool.
        fn
            The function to call in a worker.
        args
            Positional arguments for ``fn``.
        log_path
            File that receives, in append mode, everything the job writes to file
            descriptors 1 and 2, its child processes' output included. None leaves
            the output on the worker's own stdout and stderr.

        Raises
        ------
        RuntimeError
            If the pool was not started or was shut down.
        ValueError
            If a job with the same key is queued or running.
        """
        try:
            payload = cloudpickle.dumps(
                (fn, args), protocol=_worker_main.PICKLE_PROTOCOL
            )
        except Exception as exc:  # noqa: BLE001 - pickling raises many types
            failure = WorkOutcome(
                key=key,
                ok=False,
                error=(
                    f"could not pickle the function or arguments of job {key!r}: "
                    f"{type(exc).__name__}: {exc}"
                ),
                finished_at=time.time(),
                reason=REASON_PICKLING_FAILED,
            )
            self._report_failure(key, failure)
            return
        self.submit_pickled(key, payload, log_path, os.getcwd(), tuple(sys.path))

    def submit_pickled(
        self,
        key: str,
        payload: bytes,
        log_path: Path | None,
        cwd: str,
        sys_path: tuple[str, ...],
    ) -> None:
        """Queue a call already pickled as ``(fn, args)`` under ``key``.

        For callers that pickle faster than ``submit`` can, for example by reusing
        the pickle of a function for many jobs. The worker loads ``payload`` with
        :func:`pickle.loads` and runs the job in folder ``cwd`` with ``sys_path``
        as its import path. Raises as ``submit`` does.
        """
        self.submit_pickled_many([(key, payload, log_path, cwd, sys_path)])

    def submit_pickled_many(
        self,
        jobs: Sequence[tuple[str, bytes, Path | None, str, tuple[str, ...]]],
    ) -> None:
        """Queue several ``submit_pickled`` calls ``(key, payload, log_path, cwd,
        sys_path)`` at once: either all of them or, when this raises, none."""
        queued = [
            _Job(
                key=key,
                payload=payload,
                log_path=None if log_path is None else os.path.abspath(log_path),
                cwd=cwd,
                sys_path=sys_path,
            )
            for key, payload, log_path, cwd, sys_path in jobs
        ]
        with self._lock:
            for job in queued:
                self._check_submit_locked(job.key)
            keys = [job.key for job in queued]
            if len(set(keys)) != len(keys):
                raise ValueError(f"a key appears twice in one call: {keys}")
            for job in queued:
                self._submitted += 1
                job.order = self._submitted
                self._jobs[job.key] = job
                self._queue.append(job)
            if queued and self._start_failures >= _MAX_START_FAILURES:
                self._start_failures = 0  # try starting workers again
            self._wake_locked()

    def _report_failure(self, key: str, failure: WorkOutcome) -> None:
        """Deliver ``failure`` as the outcome of ``key``, which never reached a worker."""
        with self._lock:
            self._check_submit_locked(key)
            logger.warning("%s", failure.error)
            self._events.append(failure)
            self._wake_locked()

    def _check_submit_locked(self, key: str) -> None:
        if not self._started:
            raise RuntimeError("WorkerPool.submit() was called before start()")
        if self._closing:
            raise RuntimeError(
                f"cannot submit job {key!r}: the worker pool was shut down"
            )
        if key in self._jobs:
            raise ValueError(
                f"job {key!r} is already queued or running in the worker pool; "
                "wait for its on_finished call or cancel it first"
            )

    def free_slots(self) -> int:
        """Return how many more jobs could start now without waiting in the queue.

        Workers being replaced after a cancel or a crash count as free, because a
        job submitted now runs as soon as the replacement is ready.
        """
        with self._lock:
            if not self._started or self._closing:
                return 0
            busy = sum(w.state is _WorkerState.BUSY for w in self._workers.values())
            return max(0, self._max_workers - busy - len(self._queue))

    def cancel(self, key: str) -> bool:
        """Cancel the job ``key`` if it is queued or running.

        A queued job, or one sent ahead that its worker has not started, is dropped.
        For a running job, the pool thread kills the worker's process group, that
        is the worker and the job's child processes, with SIGKILL within
        milliseconds, and starts a replacement worker. It reads the worker's last
        messages first: a job that ended before the kill gets its real outcome,
        since it is no longer running. Otherwise the job's ``on_finished`` outcome
        has ``cancelled=True``; for a running job it comes once the worker has
        exited and what the job printed is in its log.

        Parameters
        ----------
        key
            Key of the job to cancel.

        Returns
        -------
        bool
            Whether a queued or running job was cancelled.
        """
        with self._lock:
            job = self._jobs.get(key)
            if job is None:
                return False
            worker = job.worker
            if worker is None:
                self._queue.remove(job)
                logger.debug("cancelled queued job %r", key)
            elif job in worker.unsettled:
                # Its worker is being killed, and its last messages are not read yet.
                worker.unsettled.remove(job)
                worker = None
                logger.debug("cancelled job %r of a worker being killed", key)
            elif job in worker.ahead:
                # Sent ahead, and not started according to the worker's last message.
                worker.ahead.remove(job)
                worker.withdrawn[key] = (job.log_path, job.sent)
                self._skips.append((worker, key))
                if worker.job is None and not worker.ahead:
                    worker.state = _WorkerState.IDLE
                job.started_at = None
                worker = None
                logger.debug("cancelled job %r, which was sent ahead", key)
            else:
                # The pool thread kills the worker: it reads the worker's messages
                # first, since the job may have ended already.
                if worker.cancel_requested is not job:
                    worker.cancel_requested = job
                    self._cancel_requests.append(worker)
                    self._wake_locked()
                return True
            del self._jobs[key]
            self._events.append(
                WorkOutcome(
                    key=key,
                    ok=False,
                    error=f"job {key!r} was cancelled",
                    cancelled=True,
                    started_at=job.started_at,
                    finished_at=time.time(),
                    reason=REASON_CANCELLED,
                )
            )
            self._wake_locked()
            return True

    def start_time(self, key: str) -> float | None:
        """Return the time.time() when job ``key`` started, or None if unknown.

        A job sent ahead starts when its worker ends the job before it, which can
        be well before ``on_started`` is called.
        """
        with self._lock:
            job = self._jobs.get(key)
            return None if job is None else job.started_at

    def running(self) -> dict[str, int]:
        """Return the keys of the running jobs mapped to their worker's pid."""
        with self._lock:
            return {
                worker.job.key: worker.pid
                for worker in self._workers.values()
                if worker.state is _WorkerState.BUSY and worker.job is not None
            }

    def shutdown(self, *, cancel_running: bool = True, timeout: float = 5.0) -> None:
        """Stop the pool and wait until its processes and its thread are gone.

        Calling it again does nothing. Jobs that do not finish get an ``on_finished``
        outcome with ``cancelled=True`` and reason ``shutdown``. The forkserver
        process, shared by every forkserver user in this process, stays until this
        process exits.

        Parameters
        ----------
        cancel_running
            True kills running jobs and drops queued ones at once. False lets queued
            and running jobs finish until ``timeout`` runs out, and then kills them.
        timeout
            Seconds to wait for workers to exit before they are killed with SIGKILL.

        Raises
        ------
        RuntimeError
            If called from an ``on_started`` or ``on_finished`` callback, which runs
            in the pool thread that this method waits for.
        """
        if os.getpid() != self._owner_pid:
            return  # a fork of the owner process, whose workers are not ours
        if threading.current_thread() is self._thread:
            raise RuntimeError(
                "WorkerPool.shutdown() cannot be called from an on_started or "
                "on_finished callback; call it from another thread"
            )
        with self._lock:
            if not self._closing:
                self._closing = True
                self._cancel_on_shutdown = cancel_running
                self._shutdown_deadline = time.monotonic() + max(0.0, timeout)
                if cancel_running:
                    self._cancel_all_locked("the worker pool was shut down")
                self._wake_locked()
            thread = self._thread
        if thread is not None:
            thread.join(max(0.0, timeout) + 2 * _KILL_WAIT)
            if thread.is_alive():
                logger.error(
                    "the worker pool thread did not stop within %.1f s", timeout
                )
        _live_pools.discard(self)

    # Worker processes

    def _start_worker(self) -> _Worker:
        """Start one worker process; the caller adds it to ``_workers``."""
        conn, child_conn = self._context.Pipe(duplex=True)
        lifeline_r, lifeline_w = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_worker_main.run_worker,
            args=(
                child_conn,
                lifeline_r,
                self._preload,
                self._start_method == "forkserver",
                self._echo_output,
            ),
            name=WORKER_PROCESS_NAME,
        )
        try:
            process.start()
        finally:
            # The worker has its own copies now. The kernel must not keep the read
            # end of the lifeline, or the pipe would never reach end of file.
            child_conn.close()
            lifeline_r.close()
        assert process.pid is not None
        return _Worker(
            process=process,
            pid=process.pid,
            conn=conn,
            lifeline=lifeline_w,
            conn_fd=conn.fileno(),
            sentinel=process.sentinel,
        )

    def _wait_ready(self, worker: _Worker, deadline: float) -> None:
        """Receive the READY message of a worker started by start()."""
        remaining = max(0.0, deadline - time.monotonic())
        try:
            if not worker.conn.poll(remaining):
                raise RuntimeError(
                    f"worker process {worker.pid} did not become ready within "
                    f"{_READY_TIMEOUT:.0f} s; see this process's stderr for its output"
                )
            message = pickle.loads(worker.conn.recv_bytes())
        except (EOFError, OSError):
            worker.process.join(_KILL_WAIT)
            raise RuntimeError(
                f"worker process {worker.pid} {_describe_exit(worker.process.exitcode)} "
                "before it became ready; see this process's stderr for its error "
                f"output.{_script_hint()}"
            ) from None
        self._apply_ready(worker, message)

    def _apply_ready(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        _, pid, pgid, preload_errors = message
        worker.pgid = pgid
        worker.state = _WorkerState.IDLE
        for error in preload_errors:
            logger.warning("worker process %d could not preload %s", pid, error)
        if pgid != pid:
            logger.warning(
                "worker process %d is not a process group leader; cancelling its "
                "jobs kills the worker but not the job's children",
                pid,
            )

    def _kill_group(self, worker: _Worker) -> None:
        """Send SIGKILL to the worker, its process group and its descendants.

        The worker may already be dead: the group id stays taken while any child
        of the job lives, so the kill still reaches those children. Descendants in
        another group or session are found first, while the worker, which adopts
        its orphans, still lives (Linux only).
        """
        # NOTE: the forkserver reaps a dead worker before the pool thread reads its
        # sentinel. In that window a new process could reuse the pid or group id,
        # which needs a pid wraparound within milliseconds and is not guarded. The
        # same holds for a descendant that exits between the listing and its kill.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(worker.pid, signal.SIGSTOP)  # so that the job starts no process
        others = _worker_main.stop_descendants(worker.pid, root_stopped=True)
        try:
            if worker.pgid == worker.pid:
                os.killpg(worker.pid, signal.SIGKILL)
            else:
                os.kill(worker.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for pid in others:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def _release(self, worker: _Worker) -> None:
        """Close the kernel's ends of a worker's pipes and reap the process."""
        worker.conn.close()
        worker.lifeline.close()
        worker.process.join(_KILL_WAIT)
        if worker.process.exitcode is not None:
            worker.process.close()
        else:
            logger.error("worker process %d did not exit after SIGKILL", worker.pid)

    # Pool thread

    def _run(self) -> None:
        try:
            while self._run_once():
                pass
        except BaseException:
            logger.exception("the worker pool thread failed; killing all workers")
            self._abort()
            raise

    def _run_once(self) -> bool:
        """Wait for one round of events and handle it.

        Returns False once the pool is closed and the thread should exit.
        """
        with self._lock:
            assert self._wake_r is not None
            wake_r = self._wake_r
            # Descriptor -> (worker, True for its connection, False for its sentinel).
            owners: dict[int, tuple[_Worker, bool]] = {}
            for worker in self._workers.values():
                if worker.conn_open:
                    owners[worker.conn_fd] = (worker, True)
                owners[worker.sentinel] = (worker, False)
            timeout = self._wait_timeout_locked()

        ready = self._poll(wake_r, owners, timeout)

        if wake_r in ready:
            with self._lock:
                # Clear the flag before this round reads the queue, so that a
                # submit after this point writes a new byte and is not missed.
                _drain(wake_r)
                self._wake_pending = False
        # Read messages before reaping, so a result sent just before the worker
        # died still counts.
        for fd in ready:
            owner = owners.get(fd)
            if owner is not None and owner[1]:
                self._receive(owner[0])
        for fd in ready:
            owner = owners.get(fd)
            if owner is not None and not owner[1]:
                self._reap(owner[0])
        with self._lock:
            requests, self._cancel_requests = self._cancel_requests, []
        for worker in requests:
            self._carry_out_cancel(worker)

        self._start_replacements()
        with self._lock:
            # SKIPs go out before new jobs, so that a worker reads the SKIP of a
            # withdrawn job before any job sent in its place.
            skips, self._skips = self._skips, []
            self._force_cancels_locked()
            self._expire_cancels_locked()
            steals = self._steal_jobs_locked()
            sends = self._assign_jobs_locked()
            stops = self._stop_idle_workers_locked()
            self._enforce_shutdown_deadline_locked()
            if self._closing and not self._workers and self._queue:
                # No worker is left to run them, and none could be started.
                self._cancel_all_locked("no worker was left to run it at shutdown")
            events = list(self._events)
            self._events.clear()
            finished = self._closing and not self._workers
            if (
                self._kill_deadline is not None
                and time.monotonic() > self._kill_deadline
            ):
                for worker in self._workers.values():
                    logger.error(
                        "worker process %d did not exit after SIGKILL; leaving it",
                        worker.pid,
                    )
                finished = True

        for worker, key in skips:
            self._send_control(worker, _worker_main.SKIP, key)
        for worker, job, ahead in sends:
            self._send_job(worker, job, ahead)
        for worker, key in steals:
            self._send_control(worker, _worker_main.STEAL, key)
        for worker in stops:
            self._send_stop(worker)
        self._deliver(events)

        if finished:
            self._close()
            return False
        return True

    def _wait_timeout_locked(self) -> float | None:
        deadlines = []
        for w in self._workers.values():
            if w.cancelled:
                deadlines.append(w.cancelled_at + _CANCEL_OUTPUT_WAIT)
            if w.unsettled:
                deadlines.append(w.retired_at + _CANCEL_OUTPUT_WAIT)
            if w.cancel_sent_at is not None:
                deadlines.append(w.cancel_sent_at + _CANCEL_FORCE_AFTER)
            if w.withdrawn_cancel_at is not None:
                deadlines.append(w.withdrawn_cancel_at + _CANCEL_FORCE_AFTER)
            # When a job with jobs sent ahead behind it has run for
            # _AHEAD_MAX_RUNNING, this thread wakes to take them back (see
            # _steal_jobs_locked), even if no message comes meanwhile.
            running = w.job
            if (
                w.ahead
                and not self._closing
                and len(self._workers) > 1
                and running is not None
                and running.started_at is not None
                and w.state is _WorkerState.BUSY
                and any(not job.stealing for job in w.ahead)
            ):
                wall_to_monotonic = time.monotonic() - time.time()
                deadlines.append(
                    running.started_at + _AHEAD_MAX_RUNNING + wall_to_monotonic
                )
        if deadlines:
            return max(0.0, min(deadlines) - time.monotonic())
        if not self._closing:
            return None
        now = time.monotonic()
        if self._kill_deadline is not None:
            return max(0.0, self._kill_deadline - now)
        return max(0.0, self._shutdown_deadline - now)

    def _poll(
        self,
        wake_r: int,
        owners: dict[int, tuple[_Worker, bool]],
        timeout: float | None,
    ) -> list[int]:
        """Wait until ``wake_r`` or a descriptor of ``owners`` is ready; return them.

        The poll object is kept between rounds and built again only when the set of
        descriptors changes, which costs far less per round than
        ``multiprocessing.connection.wait``.
        """
        fds = (wake_r, *owners)
        if fds != self._polled_fds:
            poller = select.poll()
            for fd in fds:
                poller.register(fd, select.POLLIN)
            self._poller, self._polled_fds = poller, fds
        assert self._poller is not None
        # poll() takes whole milliseconds: round up, so that a timeout below one
        # millisecond does not turn into a busy loop.
        milliseconds = None if timeout is None else math.ceil(max(timeout, 0) * 1000)
        while True:
            try:
                return [fd for fd, _ in self._poller.poll(milliseconds)]
            except InterruptedError:  # pragma: no cover - PEP 475 retries it
                continue

    def _receive(self, worker: _Worker) -> None:
        """Read the messages that a worker sent and apply them in order.

        Messages that arrived whole are applied even when the worker died after
        them, in the middle of a later one: a DONE read before a death counts.
        """
        try:
            frames, ended = _read_frames(worker.conn_fd)
        except OSError:
            frames, ended = collections.deque(), True
        while frames:
            message = pickle.loads(frames.popleft())
            value_bytes = None
            if message[0] == _worker_main.DONE:
                value_bytes = message[7]
                if message[8]:
                    # The value follows as the next frame, maybe not read yet.
                    if not frames and not ended:
                        try:
                            frames, ended = _read_frames(worker.conn_fd)
                        except OSError:
                            ended = True
                    if not frames:
                        break  # the worker died while sending the value
                    value_bytes = frames.popleft()
            self._apply_message(worker, message, value_bytes)
        if ended:
            # The worker is exiting. Its sentinel reports how.
            with self._lock:
                worker.conn_open = False

    def _apply_message(
        self, worker: _Worker, message: tuple[Any, ...], value_bytes: bytes | None
    ) -> None:
        if message[0] == _worker_main.READY:
            with self._lock:
                if worker.state is _WorkerState.STARTING:
                    self._apply_ready(worker, message)
                    self._start_failures = 0
            logger.debug("worker process %d is ready", worker.pid)
            return
        if message[0] == _worker_main.STARTED:
            with self._lock:
                if worker.state is not _WorkerState.RETIRING:
                    self._started_ahead(worker, message[1], time.time())
                else:
                    worker.started_after_cancel = message[1]
                    self._leave_unsettled_output_locked(worker, message[1])
                    self._stop_withdrawn_locked(worker, message[1])
            return
        if message[0] == _worker_main.RETURNED:
            with self._lock:
                for returned in worker.ahead:
                    if returned.key == message[1]:
                        worker.ahead.remove(returned)
                        self._requeue_locked(returned)
                        break
                if (
                    worker.job is None
                    and not worker.ahead
                    and worker.state is _WorkerState.BUSY
                ):
                    worker.state = _WorkerState.IDLE
            return

        _, key, ok, error, reason, started_at, finished_at, _, _, next_key = message
        del message
        value = None
        if value_bytes is not None:
            try:
                value = pickle.loads(value_bytes)
            except Exception as exc:  # noqa: BLE001 - any error of the value's code
                ok = False
                reason = REASON_RESULT_UNPICKLING_FAILED
                error = (
                    f"the return value of job {key!r} could not be unpickled in the "
                    f"kernel: {type(exc).__name__}: {exc}"
                )
            del value_bytes
        outcome = WorkOutcome(
            key=key,
            ok=ok,
            value=value,
            error=error,
            pid=worker.pid,
            started_at=started_at,
            finished_at=finished_at,
            reason=reason,
        )
        with self._lock:
            job = worker.job
            if worker.withdrawn_running == key and worker.state is _WorkerState.BUSY:
                # Its cancel was reported when it was withdrawn. A job sent without
                # "ahead" (worker.job) runs next, and its own DONE reports it.
                worker.withdrawn_running = worker.withdrawn_cancel_at = None
                if job is not None:
                    return
                if next_key is not None:
                    self._started_ahead(worker, next_key, finished_at)
                elif not worker.ahead:
                    worker.state = _WorkerState.IDLE
                return
            if worker.state is not _WorkerState.BUSY or job is None or job.key != key:
                self._settle_unsettled_locked(worker, outcome)
                self._leave_unsettled_output_locked(worker, next_key)
                # Cancelled after the worker sent its result, or retiring.
                cancelled = worker.cancelled
                if cancelled is not None and cancelled.key == key:
                    worker.cancelled_outcome = outcome
                    worker.started_after_cancel = next_key
                if next_key is not None:
                    self._stop_withdrawn_locked(worker, next_key)
                return
            worker.job = None
            if worker.cancel_requested is job:
                worker.cancel_requested = worker.cancel_sent_at = None
            del self._jobs[key]
            self._events.append(outcome)
            if next_key is not None:
                self._started_ahead(worker, next_key, finished_at)
            elif not worker.ahead:
                worker.state = _WorkerState.IDLE
            # Otherwise the jobs sent ahead reached the worker after it looked for
            # one, so a STARTED message follows.
        logger.debug(
            "job %r finished on worker process %d: %s", key, worker.pid, reason
        )

    def _started_ahead(self, worker: _Worker, key: str, started_at: float) -> None:
        """Apply the news that ``worker`` started ``key``, a job sent ahead."""
        # The worker starts the jobs sent ahead in order. It may skip one only if
        # a STEAL took it back, and the RETURNED for it follows, so such jobs stay.
        job = None
        for index, candidate in enumerate(worker.ahead):
            if candidate.key == key:
                job = candidate
                break
            if not candidate.stealing:
                break
        if job is not None and worker.job is None:
            del worker.ahead[index]
            # The worker has read the SKIP of every job withdrawn before this one
            # was sent: it started those or dropped them before taking this one.
            for withdrawn_key, (_, sent) in list(worker.withdrawn.items()):
                if sent < job.sent:
                    del worker.withdrawn[withdrawn_key]
            job.stealing = False  # too late: it runs here
            worker.job = job
            self._set_log_locked(worker, job.log_path)
            job.started_at = started_at
            self._events.append((key, worker.pid))
            return
        # The worker started a job that was cancelled before its SKIP arrived. The
        # cancel was reported already, so the job must stop: CANCEL makes the worker
        # kill itself only if it still runs that job. A kill from here could hit a
        # job sent after it, which may have run to its end without reporting it,
        # and would then run twice.
        # worker.job, if set, was sent after it and waits in the worker behind it.
        if key in worker.withdrawn:
            self._set_log_locked(worker, worker.withdrawn[key][0])
            worker.withdrawn_running = key
            worker.withdrawn_cancel_at = None
            self._cancel_requests.append(worker)
            self._wake_locked()
            logger.debug(
                "worker process %d started withdrawn job %r; sending CANCEL",
                worker.pid,
                key,
            )
            return
        logger.error(
            "worker process %d reported starting job %r, which it was not given; "
            "killing it",
            worker.pid,
            key,
        )
        self._retire_and_kill_locked(worker)

    def _retire_and_kill_locked(self, worker: _Worker) -> None:
        """Kill ``worker``; the jobs it was given wait for its last messages."""
        worker.state = _WorkerState.RETIRING
        self._kill_group(worker)
        if worker.job is not None:
            worker.unsettled.append(worker.job)
        worker.unsettled.extend(worker.ahead)
        worker.retired_at = time.monotonic()
        worker.job = None
        worker.ahead = []

    def _settle_unsettled_locked(self, worker: _Worker, outcome: WorkOutcome) -> None:
        """Deliver ``outcome`` if it ends an unsettled job of a killed worker.

        Such a job ran to its end before the kill, so it must not run again.
        """
        for index, job in enumerate(worker.unsettled):
            if job.key == outcome.key:
                del worker.unsettled[index]
                del self._jobs[job.key]
                if job.started_at is None:  # sent ahead, never reported started
                    job.started_at = outcome.started_at
                    self._events.append((job.key, worker.pid))
                self._events.append(outcome)
                return

    def _leave_unsettled_output_locked(self, worker: _Worker, key: str | None) -> None:
        """Forget the log of a killed ``worker`` that has started ``key``, if unsettled.

        What its spill file then contains is that job's output. The job either runs
        again, and that run writes the whole of it, or its DONE arrives, which the
        worker sent after it wrote the output to the job's log.
        """
        if key is not None and any(job.key == key for job in worker.unsettled):
            worker.log_path = None

    def _carry_out_cancel(self, worker: _Worker) -> None:
        """Send CANCEL for the job that cancel() requested to stop, if it still runs.

        The worker kills itself if it still runs that job, and ignores the message
        if it has moved on, so a job sent ahead that it started goes on. The pool
        thread kills a worker that has not exited _CANCEL_FORCE_AFTER later
        (see _force_cancels_locked).
        """
        with self._lock:
            withdrawn = worker.withdrawn_running
            if withdrawn is not None and worker.withdrawn_cancel_at is None:
                worker.withdrawn_cancel_at = time.monotonic()
                key = withdrawn
            else:
                job = worker.cancel_requested
                if job is None or worker.job is not job:
                    worker.cancel_requested = None
                    return  # it ended, and its DONE reported how
                worker.cancel_sent_at = time.monotonic()
                key = job.key
        self._send_control(worker, _worker_main.CANCEL, key)
        logger.debug("sent CANCEL of job %r to worker process %d", key, worker.pid)

    def _force_cancels_locked(self) -> None:
        """Kill workers that have not acted on a CANCEL within _CANCEL_FORCE_AFTER.

        A job that holds the interpreter lock in C code keeps the worker's reader
        thread from running. A DONE that the worker sent just before the kill is
        handled when the worker is reaped (see _settle_cancel_locked).
        """
        now = time.monotonic()
        for worker in self._workers.values():
            withdrawn_at = worker.withdrawn_cancel_at
            if (
                worker.withdrawn_running is not None
                and withdrawn_at is not None
                and now - withdrawn_at >= _CANCEL_FORCE_AFTER
                and worker.state is _WorkerState.BUSY
            ):
                logger.debug(
                    "worker process %d did not stop withdrawn job %r; killing it",
                    worker.pid,
                    worker.withdrawn_running,
                )
                worker.withdrawn_running = worker.withdrawn_cancel_at = None
                self._retire_and_kill_locked(worker)
            job, sent_at = worker.cancel_requested, worker.cancel_sent_at
            if job is None or sent_at is None or now - sent_at < _CANCEL_FORCE_AFTER:
                continue
            worker.cancel_requested = worker.cancel_sent_at = None
            if worker.job is not job or worker.state is not _WorkerState.BUSY:
                continue
            worker.state = _WorkerState.RETIRING
            worker.job = None
            worker.cancelled = job
            worker.cancelled_at = now
            self._kill_group(worker)
            del self._jobs[job.key]
            logger.debug(
                "cancelled job %r: killed worker process %d", job.key, worker.pid
            )

    def _settle_cancel_locked(self, worker: _Worker) -> None:
        """Decide, from what a worker killed by cancel() sent, what each job became.

        If its DONE for the cancelled job arrived, that job had finished: its real
        outcome is delivered, and a job sent ahead that it had started was killed
        with the worker, so it runs again. Otherwise the cancelled job was running,
        and the job sent ahead never started.
        """
        cancelled, ahead = worker.cancelled, worker.ahead
        if cancelled is None:
            return
        worker.ahead = []
        if ahead and worker.started_after_cancel == ahead[0].key:
            # Its partial output is dropped with the spill file; the next run
            # writes the whole of it.
            worker.log_path = None
        self._requeue_all_locked(ahead)
        if worker.cancelled_outcome is None:
            worker.log_path = cancelled.log_path  # its output is in the spill file

    def _expire_cancels_locked(self) -> None:
        """Report cancels whose worker has not exited _CANCEL_OUTPUT_WAIT after the kill.

        A process killed with SIGKILL exits within milliseconds unless it is stuck
        in the operating system. Its job is then reported cancelled without its
        last output, and a job sent ahead to it goes back to the queue. So do the
        jobs of a worker killed for starting a withdrawn job.
        """
        now = time.monotonic()
        for worker in self._workers.values():
            if worker.unsettled and now - worker.retired_at >= _CANCEL_OUTPUT_WAIT:
                logger.warning(
                    "worker process %d has not exited %.1f s after SIGKILL; queuing "
                    "its jobs %s again",
                    worker.pid,
                    _CANCEL_OUTPUT_WAIT,
                    ", ".join(repr(job.key) for job in worker.unsettled),
                )
                self._requeue_all_locked(worker.unsettled)
                worker.unsettled = []
            if worker.cancelled and now - worker.cancelled_at >= _CANCEL_OUTPUT_WAIT:
                logger.warning(
                    "worker process %d has not exited %.1f s after SIGKILL; reporting "
                    "job %r cancelled",
                    worker.pid,
                    _CANCEL_OUTPUT_WAIT,
                    worker.cancelled.key,
                )
                self._requeue_all_locked(worker.ahead)
                worker.ahead = []
                worker.cancelled_outcome = None
                self._deliver_cancel_locked(worker)

    def _deliver_cancel_locked(self, worker: _Worker) -> None:
        cancelled = worker.cancelled
        if cancelled is None:
            return
        worker.cancelled = None
        outcome = worker.cancelled_outcome
        if outcome is None:
            outcome = WorkOutcome(
                key=cancelled.key,
                ok=False,
                error=f"job {cancelled.key!r} was cancelled",
                cancelled=True,
                pid=worker.pid,
                started_at=cancelled.started_at,
                finished_at=time.time(),
                reason=REASON_CANCELLED,
            )
        self._events.append(outcome)

    def _stop_withdrawn_locked(self, worker: _Worker, key: str) -> None:
        """Kill a retiring ``worker`` that started ``key``, a withdrawn job."""
        if key in worker.withdrawn:
            self._set_log_locked(worker, worker.withdrawn.pop(key)[0])
            logger.debug(
                "retiring worker process %d started withdrawn job %r; killing it",
                worker.pid,
                key,
            )
            worker.state = _WorkerState.RETIRING
            self._kill_group(worker)

    def _set_log_locked(self, worker: _Worker, log_path: str | None) -> None:
        """Record that ``worker`` runs a job whose output goes to ``log_path``."""
        worker.log_path = log_path
        if log_path is not None:
            worker.spill_folder = os.path.dirname(log_path)

    def _move_output(self, worker: _Worker) -> None:
        """Move the content of a dead ``worker``'s spill file to its job's log.

        Removes the spill file in any case. Called without ``_lock``: it reads and
        writes files.
        """
        with self._lock:
            log_path, folder = worker.log_path, worker.spill_folder
            worker.log_path = None
        try:
            if log_path is not None:
                _worker_main.move_spill(log_path, worker.pid)
            elif folder is not None:
                _worker_main.remove_spill(folder, worker.pid)
        except OSError as exc:
            logger.warning(
                "could not move the output of worker process %d to %s: %s",
                worker.pid,
                log_path,
                exc,
            )

    def _requeue_locked(self, job: _Job) -> None:
        """Put a job that a worker was given but never started back in the queue.

        It goes where its submit put it, before the jobs submitted after it, so
        that jobs taken back from several workers keep their order.
        """
        job.worker = None
        job.started_at = None
        job.stealing = False
        index = 0
        while index < len(self._queue) and self._queue[index].order < job.order:
            index += 1
        self._queue.insert(index, job)

    def _requeue_all_locked(self, jobs: list[_Job]) -> None:
        """Put ``jobs`` back in the queue (see _requeue_locked)."""
        for job in jobs:
            self._requeue_locked(job)

    def _reap(self, worker: _Worker) -> None:
        """Remove a worker whose sentinel reported its exit, and fail its job."""
        if worker.pgid == worker.pid:
            # Kills children that the job left behind in the worker's group. The
            # worker itself is not signalled by pid, because the forkserver may have
            # reaped it and freed the pid already.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(worker.pid, signal.SIGKILL)
        worker.process.join(_KILL_WAIT)
        exitcode = worker.process.exitcode
        # Messages that the worker sent before it died: a DONE may name the job
        # sent ahead that it had started, which then must not run again elsewhere.
        while worker.conn_open and worker.conn.poll(0):
            self._receive(worker)
        self._release(worker)
        with self._lock:
            requested = worker.cancel_requested
            if requested is not None and requested is worker.job:
                # It killed itself on CANCEL, or died on its own meanwhile.
                worker.cancel_requested = worker.job = None
                worker.cancel_sent_at = None
                worker.cancelled = requested
                worker.cancelled_at = time.monotonic()
                del self._jobs[requested.key]
            self._settle_cancel_locked(worker)
        # Before the job's outcome is delivered, so that its log is complete.
        self._move_output(worker)
        with self._lock:
            self._deliver_cancel_locked(worker)
            del self._workers[worker.pid]
            state, job, ahead = worker.state, worker.job, worker.ahead
            if worker.withdrawn_running is not None and job is not None:
                # It died in a withdrawn job (see _started_ahead), which it ran
                # before this one: this one never started.
                ahead, job = [job, *ahead], None
            worker.job = None
            worker.ahead = []
            self._requeue_all_locked(ahead)  # they never started
            # The worker did not report their end before it exited.
            self._requeue_all_locked(worker.unsettled)
            worker.unsettled = []
            if state is _WorkerState.BUSY and job is not None:
                self._fail_job_locked(worker, job, exitcode)
            elif state is _WorkerState.STARTING and not self._closing:
                self._count_start_failure_locked(
                    f"worker process {worker.pid} {_describe_exit(exitcode)} before "
                    "it became ready; see this process's stderr for its error output"
                )
            else:
                logger.debug(
                    "worker process %d %s", worker.pid, _describe_exit(exitcode)
                )

    def _fail_job_locked(
        self, worker: _Worker, job: _Job, exitcode: int | None
    ) -> None:
        error = (
            f"worker process {worker.pid} {_describe_exit(exitcode)} while running "
            f"job {job.key!r}"
        )
        logger.warning("%s; starting a replacement", error)
        del self._jobs[job.key]
        self._events.append(
            WorkOutcome(
                key=job.key,
                ok=False,
                error=error,
                exit_code=exitcode if exitcode is not None and exitcode >= 0 else None,
                signal=-exitcode if exitcode is not None and exitcode < 0 else None,
                pid=worker.pid,
                started_at=job.started_at,
                finished_at=time.time(),
                reason=REASON_WORKER_DIED,
            )
        )

    def _count_start_failure_locked(self, failure: str) -> None:
        """Record a worker that failed to start, and fail the queue after too many."""
        self._start_failures += 1
        logger.error("%s (failure %d in a row)", failure, self._start_failures)
        if self._start_failures < _MAX_START_FAILURES:
            return
        serving = (_WorkerState.IDLE, _WorkerState.BUSY)
        if any(w.state in serving for w in self._workers.values()):
            return  # the workers that did start still serve the queue
        error = (
            f"{_MAX_START_FAILURES} worker processes in a row failed to start, the "
            f"last one because: {failure}. The pool starts workers again on the next "
            "submit"
        )
        while self._queue:
            job = self._queue.popleft()
            del self._jobs[job.key]
            self._events.append(
                WorkOutcome(
                    key=job.key,
                    ok=False,
                    error=f"job {job.key!r} could not start: {error}",
                    finished_at=time.time(),
                    reason=REASON_WORKER_START_FAILED,
                )
            )

    def _start_replacements(self) -> None:
        with self._lock:
            # A shutdown that lets jobs finish still replaces a worker that died
            # while jobs wait in the queue.
            finishing = self._closing and not self._cancel_on_shutdown and self._queue
            if self._closing and not finishing:
                return
            if self._start_failures >= _MAX_START_FAILURES:
                return
            live = sum(
                w.state is not _WorkerState.RETIRING for w in self._workers.values()
            )
            missing = self._max_workers - live
        while missing > 0:
            try:
                worker = self._start_worker()
            except Exception as exc:  # noqa: BLE001 - fork, pipe and pickling errors
                with self._lock:
                    self._count_start_failure_locked(
                        f"could not start a worker process: {type(exc).__name__}: {exc}"
                    )
                    if self._start_failures >= _MAX_START_FAILURES:
                        return
                continue
            logger.debug("started replacement worker process %d", worker.pid)
            with self._lock:
                self._workers[worker.pid] = worker
            missing -= 1

    def _assign_jobs_locked(self) -> list[tuple[_Worker, _Job, bool]]:
        """Pair queued jobs with workers in FIFO order: ``(worker, job, ahead)``.

        Idle workers get a job to run now. Then each worker that runs a job gets
        up to _AHEAD_DEPTH more sent ahead, so that it starts the next one as soon
        as it finishes, without waiting for this thread. At most one job runs per
        worker.
        """
        if self._closing and self._cancel_on_shutdown:
            return []
        sends: list[tuple[_Worker, _Job, bool]] = []
        now = time.time()
        for worker in self._workers.values():
            if not self._queue:
                break
            if worker.state is _WorkerState.IDLE:
                job = self._queue.popleft()
                job.started_at = time.time()
                job.worker = worker
                worker.state = _WorkerState.BUSY
                worker.job = job
                self._set_log_locked(worker, job.log_path)
                self._events.append((job.key, worker.pid))
                sends.append((worker, job, False))
        # Level by level, so that each worker gets one job ahead before any gets two.
        for depth in range(_AHEAD_DEPTH):
            for worker in self._workers.values():
                if not self._queue:
                    break
                if (
                    worker.state is _WorkerState.BUSY
                    and worker.job is not None
                    and len(worker.ahead) == depth
                    and now - (worker.job.started_at or now) < _AHEAD_MAX_RUNNING
                ):
                    job = self._queue.popleft()
                    job.worker = worker
                    worker.ahead.append(job)
                    sends.append((worker, job, True))
        for _, job, _ in sends:
            self._sent += 1
            job.sent = self._sent
        return sends

    def _steal_jobs_locked(self) -> list[tuple[_Worker, str]]:
        """Ask for jobs sent ahead back from workers busy for long, or for idle ones.

        A job sent ahead waits until its worker finishes the job it runs, which can
        take long while other workers run jobs queued after it. So a job sent ahead
        is taken back once the job before it has run for _AHEAD_MAX_RUNNING, unless
        no other worker could take it, and one is taken back for each idle worker.
        A worker that gives a job back replies RETURNED, and the job goes back to
        the queue in the order of its submit.
        """
        if self._closing:
            return []
        alone = len(self._workers) < 2
        idle = sum(w.state is _WorkerState.IDLE for w in self._workers.values())
        now = time.time()
        steals: list[tuple[_Worker, str]] = []
        for worker in self._workers.values():
            if worker.state is not _WorkerState.BUSY:
                continue
            running = worker.job
            started = running.started_at if running is not None else None
            slow = (
                not alone
                and started is not None
                and now - started >= _AHEAD_MAX_RUNNING
            )
            # The last job sent is the last the worker would start.
            for job in reversed(worker.ahead):
                if job.stealing:
                    continue
                if not slow and len(steals) >= idle:
                    break
                job.stealing = True
                steals.append((worker, job.key))
        return steals

    def _send_job(self, worker: _Worker, job: _Job, ahead: bool) -> None:
        # The payload stays with the job until it ends: a job given to a worker
        # that is killed before starting it goes back to the queue.
        payload = job.payload
        inline = len(payload) < _worker_main.INLINE_LIMIT
        message = (
            _worker_main.RUN,
            job.key,
            ahead,
            job.log_path,
            job.cwd,
            job.sys_path,
            payload if inline else None,
        )
        try:
            worker.conn.send_bytes(
                pickle.dumps(message, protocol=_worker_main.PICKLE_PROTOCOL)
            )
            if not inline:
                worker.conn.send_bytes(payload)
        except OSError as exc:
            # The worker died or was cancelled. Its sentinel reports the job.
            logger.debug(
                "could not send job %r to worker %d: %s", job.key, worker.pid, exc
            )
            return
        logger.debug("dispatched job %r to worker process %d", job.key, worker.pid)

    def _stop_idle_workers_locked(self) -> list[_Worker]:
        """During shutdown, mark idle workers with nothing left to run as retiring."""
        if not self._closing:
            return []
        if self._queue and not self._cancel_on_shutdown:
            return []  # the idle workers are about to get the queued jobs
        stops = [w for w in self._workers.values() if w.state is _WorkerState.IDLE]
        for worker in stops:
            worker.state = _WorkerState.RETIRING
        return stops

    def _send_control(self, worker: _Worker, kind: str, key: str) -> None:
        try:
            worker.conn.send_bytes(pickle.dumps((kind, key)))
        except OSError:
            pass  # the worker is exiting; its sentinel reports it

    def _send_stop(self, worker: _Worker) -> None:
        try:
            worker.conn.send_bytes(pickle.dumps((_worker_main.STOP,)))
        except OSError:
            pass  # already exiting

    def _enforce_shutdown_deadline_locked(self) -> None:
        if not self._closing or self._kill_deadline is not None:
            return
        if time.monotonic() < self._shutdown_deadline:
            return
        self._cancel_all_locked("the worker pool shutdown timed out")
        for worker in self._workers.values():
            worker.state = _WorkerState.RETIRING
            self._kill_group(worker)
        self._kill_deadline = time.monotonic() + _KILL_WAIT

    def _cancel_all_locked(self, error: str) -> None:
        """Drop queued jobs and kill running ones, with a cancelled outcome each."""
        now = time.time()
        cancelled: list[tuple[_Job, int | None]] = [(job, None) for job in self._queue]
        self._queue.clear()
        self._cancel_requests.clear()
        for worker in self._workers.values():
            worker.cancel_requested = None
            cancelled.extend((job, None) for job in worker.unsettled)
            worker.unsettled = []
            if worker.state is _WorkerState.BUSY:
                cancelled.extend((job, None) for job in worker.ahead)
                if worker.job is not None:
                    cancelled.append((worker.job, worker.pid))
                worker.job = None
                worker.ahead = []
                worker.state = _WorkerState.RETIRING
                self._kill_group(worker)
        for job, pid in cancelled:
            del self._jobs[job.key]
            self._events.append(
                WorkOutcome(
                    key=job.key,
                    ok=False,
                    error=f"job {job.key!r} was cancelled because {error}",
                    cancelled=True,
                    pid=pid,
                    started_at=job.started_at,
                    finished_at=now,
                    reason=REASON_SHUTDOWN,
                )
            )

    def _deliver(self, events: list[_Event]) -> None:
        for event in events:
            try:
                if isinstance(event, WorkOutcome):
                    self._on_finished(event.key, event)
                else:
                    self._on_started(*event)
            except Exception:
                logger.exception("a WorkerPool callback raised for event %r", event)

    def _close(self) -> None:
        with self._lock:
            for worker in self._workers.values():
                worker.conn.close()
                worker.lifeline.close()
            self._workers.clear()
            for fd in (self._wake_r, self._wake_w):
                if fd is not None:
                    os.close(fd)
            self._wake_r = self._wake_w = None

    def _abort(self) -> None:
        """Kill every worker after the pool thread failed, failing every job."""
        with self._lock:
            self._closing = True
            self._cancel_all_locked("the worker pool thread failed")
            for worker in self._workers.values():
                self._kill_group(worker)
            events = list(self._events)
            self._events.clear()
        self._deliver(events)
        self._close()

    def _wake_locked(self) -> None:
        if self._wake_w is None or self._wake_pending:
            return  # not started yet, closed, or already woken
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:
            pass  # the pipe is full, so a wake-up is already pending
        self._wake_pending = True


def _read_frames(fd: int) -> tuple[collections.deque[bytes], bool]:
    """Read the messages that are ready on ``fd``, a worker's connection.

    Reads what one ``read`` returns, then reads on until the last message is whole.
    That wait is short because the worker sends each message in one go. The framing
    is that of ``Connection.send_bytes``: a 4-byte signed big-endian size, or -1 and
    an 8-byte size. One ``read`` often returns several messages, while
    ``Connection.recv_bytes`` makes two system calls for each.

    Returns the whole messages and whether the worker closed its end; a message cut
    short by the close is dropped.
    """
    data = bytearray()
    frames: collections.deque[bytes] = collections.deque()
    offset = 0
    chunk = _READ_CHUNK
    while True:
        block = os.read(fd, chunk)
        if not block:
            return frames, True
        data += block
        while True:
            available = len(data) - offset
            if available < 4:
                break
            (size,) = _SIZE.unpack_from(data, offset)
            header = 4
            if size == -1:
                if available < 12:
                    break
                (size,) = _LONG_SIZE.unpack_from(data, offset + 4)
                header = 12
            if available < header + size:
                # Read the rest of a large message in large blocks.
                chunk = max(_READ_CHUNK, header + size - available)
                break
            frames.append(bytes(data[offset + header : offset + header + size]))
            offset += header + size
        if offset == len(data):
            return frames, False


def _drain(fd: int) -> None:
    # Writers add one byte only while no wake-up is pending (see _wake_pending), so
    # one read empties the pipe.
    with contextlib.suppress(BlockingIOError):
        os.read(fd, 4096)


def _script_hint() -> str:
    """Return advice for a script whose workers die at start, or an empty string.

    Workers start with forkserver or spawn and import the main script again. A
    script that creates or submits scenarios at its top level then does so in each
    worker, where multiprocessing refuses to start processes, and the worker exits.
    """
    main = sys.modules.get("__main__")
    if getattr(main, "__file__", None) is None or is_kernel():
        return ""
    return (
        " If this is a script, create and submit scenarios under "
        "'if __name__ == \"__main__\":', since worker processes import the script "
        "again (README, Limits)."
    )


def _describe_exit(exitcode: int | None) -> str:
    """Describe a ``multiprocessing`` exit code: negative means killed by a signal."""
    if exitcode is None:
        return "exited with an unknown status"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = str(-exitcode)
        return f"was killed by signal {name}"
    return f"exited with code {exitcode}"


# Pools whose pool thread may be running, shut down at interpreter exit. The workers
# are not daemonic processes, so that jobs may start processes of their own.
_live_pools: weakref.WeakSet[WorkerPool] = weakref.WeakSet()


def _shutdown_live_pools() -> None:
    for pool in list(_live_pools):
        pool.shutdown(timeout=1.0)


atexit.register(_shutdown_live_pools)
