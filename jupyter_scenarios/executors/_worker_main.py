"""Main loop of a pool worker. This module runs in a worker process, not in the kernel.

``jupyter_scenarios.executors.pool.WorkerPool`` starts every worker with
:func:`run_worker` as its target, and the forkserver preloads this module. Keep its
imports light, and never import IPython or ipywidgets here: a worker must not pay for
them or touch the kernel's display machinery.

Every message is a pickled tuple sent with ``Connection.send_bytes``. A job's
pickled call and its pickled result ride inside that tuple when they are smaller than
``INLINE_LIMIT`` bytes, so that a tiny job costs one message each way. Larger ones
follow as a second raw message, so that they are never copied into an envelope.

kernel -> worker
    ``(RUN, key, ahead, log_path, cwd, sys_path, payload)``, where ``payload`` is
    the pickle of ``(fn, args)``, or None when it follows. ``ahead`` is true for a
    job sent while the worker still runs another one. ``(SKIP, key)`` withdraws a
    cancelled job sent ahead. ``(STEAL, key)`` asks for a job sent ahead back, for
    a worker that became idle. ``(CANCEL, key)`` makes the worker kill itself,
    its process group and its descendants if it is still running job ``key``, and
    is ignored otherwise. ``(STOP,)`` makes an idle worker exit.
worker -> kernel
    ``(READY, pid, pgid, preload_errors)`` once the worker can take jobs.
    ``(DONE, key, ok, error, reason, started_at, finished_at, value, value_follows,
    next_key)``, where ``value`` is the pickled return value, or None when there is
    none or it follows, and ``next_key`` is the job sent ahead that the worker
    started right after this one, or None.
    ``(STARTED, key)`` when an idle worker starts a job that was sent ahead.
    ``(RETURNED, key)`` when a job requested by STEAL was not started and is
    given back; no reply means that it had started.

A worker thread reads every message as it arrives (``_Inbox``), so that SKIP and
STEAL take effect while the main thread runs a job.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import importlib
import logging
import multiprocessing.forkserver
import os
import pickle
import select
import signal
import sys
import threading
import time
import traceback
import types
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection
from typing import Any, TextIO

import cloudpickle

RUN = "run"
SKIP = "skip"
STEAL = "steal"
CANCEL = "cancel"
STOP = "stop"
READY = "ready"
DONE = "done"
STARTED = "started"
RETURNED = "returned"

# Values of WorkOutcome.reason. The pool module re-exports them.
REASON_COMPLETED = "completed"
REASON_EXCEPTION = "exception"
REASON_UNPICKLING_FAILED = "unpickling_failed"
REASON_RESULT_PICKLING_FAILED = "result_pickling_failed"
REASON_LOG_OPEN_FAILED = "log_open_failed"

PICKLE_PROTOCOL = 5
#: Size in bytes below which a payload or a result travels inside its message.
INLINE_LIMIT = 64 * 1024

# A job's output goes first to a spill file that the worker reuses for every job.
# It becomes the job's log file (by a rename) only if the job wrote something,
# because most jobs print nothing and creating one file per job costs more than a
# tiny job. A job that still runs after PROMOTE_SECONDS gets its log file then, so
# that its output can be followed while it runs. The spill file of worker PID is
# SPILL_NAME.format(pid=PID) in the folder of the log files. When a worker dies,
# the kernel moves what is left in it to the log of the job that the worker ran
# (see ``move_spill``).
PROMOTE_SECONDS = 0.2
SPILL_NAME = ".worker-{pid}.spill"

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_PR_SET_CHILD_SUBREAPER = 36
LIFELINE_THREAD_NAME = "jupyter-scenarios-lifeline"


def run_worker(
    conn: Connection,
    lifeline: Connection,
    preload: Sequence[str],
    started_by_forkserver: bool,
    echo_output: bool = False,
) -> None:
    """Serve jobs from ``conn`` until the kernel sends STOP or closes the connection.

    Parameters
    ----------
    conn
        Duplex connection to the pool thread in the kernel.
    lifeline
        Read end of a pipe whose write end only the kernel holds. End of file on it
        means that the kernel exited or released this worker, and the worker then
        kills its own process group.
    preload
        Modules to import before the worker reports that it is ready.
    started_by_forkserver
        Whether the forkserver started this worker. Only then does the worker ask
        Linux for SIGTERM when its parent dies: the parent is then the
        single-threaded forkserver, which exits with the kernel. A spawn worker's
        parent is the kernel thread that started it, and that thread may end long
        before the kernel does.
    echo_output
        Whether to copy each job's output, as it comes, to the descriptor 1 that
        the worker inherited (a script's terminal), besides its log.
    """
    _become_process_group_leader()
    _run_as_batch_work()
    signal.signal(signal.SIGTERM, _on_sigterm)
    if started_by_forkserver:
        _release_forkserver_alive_fd()
        _set_parent_death_signal()
    _adopt_orphans()
    watcher = threading.Thread(
        target=_watch_lifeline, args=(lifeline,), name=LIFELINE_THREAD_NAME, daemon=True
    )
    watcher.start()

    stdout = _open_standard_stream(1)
    stderr = _open_standard_stream(2)
    preload_errors = _import_modules(preload)
    ready = (READY, os.getpid(), os.getpgrp(), preload_errors)
    conn.send_bytes(pickle.dumps(ready, protocol=PICKLE_PROTOCOL))

    echo = _Echo(os.dup(1)) if echo_output else None
    output = _JobOutput(echo)
    try:
        _serve(conn, output, stdout, stderr)
    finally:
        output.close()
        if echo is not None:
            echo.flush(time.monotonic() + _ECHO_PATIENCE_SECONDS)


def _serve(
    conn: Connection, output: _JobOutput, stdout: TextIO, stderr: TextIO
) -> None:
    send_lock = threading.Lock()
    inbox = _Inbox(conn, send_lock)
    job = inbox.next_job(block=True)
    if job is not None and job.ahead:
        _send(conn, send_lock, (STARTED, job.key))
    while job is not None:
        sys.stdout, sys.stderr = stdout, stderr
        _follow_kernel_paths(job.cwd, job.sys_path)
        reply, value = _run_job(job.key, job.payload, job.log_path, output)
        job = None
        # Pick the next job before reporting this one, so that the report also
        # names the job sent ahead that has started.
        following = inbox.next_job(block=False)
        next_key = following.key if following is not None and following.ahead else None
        if value is not None and len(value) < INLINE_LIMIT:
            _send(conn, send_lock, (*reply, value, False, next_key))
        else:
            _send(conn, send_lock, (*reply, None, value is not None, next_key), value)
        del value
        job = following
        if job is None:
            job = inbox.next_job(block=True)
            if job is not None and job.ahead:
                _send(conn, send_lock, (STARTED, job.key))


def _send(
    conn: Connection,
    lock: threading.Lock,
    message: tuple[Any, ...],
    raw: bytes | None = None,
) -> None:
    """Send ``message``, then ``raw`` if given, with no other message in between."""
    data = pickle.dumps(message, protocol=PICKLE_PROTOCOL)
    with lock:
        conn.send_bytes(data)
        if raw is not None:
            conn.send_bytes(raw)


class _Job:
    """A RUN message: one job to run."""

    __slots__ = ("ahead", "cwd", "key", "log_path", "payload", "sys_path")

    def __init__(self, message: tuple[Any, ...], payload: bytes) -> None:
        _, self.key, self.ahead, self.log_path, self.cwd, self.sys_path, _ = message
        self.payload = payload


class _Inbox:
    """Reads the kernel's messages in a thread and keeps the jobs not started yet.

    The kernel sends a job ahead (``ahead`` true) to a worker that is running
    another one, so that the worker starts it without waiting for a round trip. The
    reader thread applies SKIP and STEAL at once, even while the main thread runs a
    job. A job that the main thread took already cannot be withdrawn any more: the
    kernel learns that it started from the DONE or STARTED message.
    """

    def __init__(self, conn: Connection, send_lock: threading.Lock) -> None:
        self._conn = conn
        self._send_lock = send_lock
        self._condition = threading.Condition()
        self._jobs: collections.deque[_Job] = collections.deque()
        self._stopped = False
        self._current: str | None = None  # key of the job the main thread runs
        reader = threading.Thread(
            target=self._read, name="jupyter-scenarios-inbox", daemon=True
        )
        reader.start()

    def next_job(self, *, block: bool) -> _Job | None:
        """Return the next job to run, or None: exit (block) or nothing yet (not)."""
        with self._condition:
            self._current = None
            if block:
                while not self._jobs and not self._stopped:
                    self._condition.wait()
            if self._stopped or not self._jobs:
                return None
            job = self._jobs.popleft()
            self._current = job.key
            return job

    def _read(self) -> None:
        try:
            while self._handle(pickle.loads(self._conn.recv_bytes())):
                pass
        except (EOFError, OSError):
            pass  # the kernel closed the connection
        with self._condition:
            self._stopped = True
            self._condition.notify()

    def _handle(self, message: tuple[Any, ...]) -> bool:
        kind = message[0]
        if kind == RUN:
            payload = message[6]
            if payload is None:
                payload = self._conn.recv_bytes()
            with self._condition:
                self._jobs.append(_Job(message, payload))
                self._condition.notify()
            return True
        if kind == CANCEL:
            with self._condition:
                if self._current == message[1]:
                    # Under the lock, so that the main thread cannot move on to
                    # the next job in between.
                    _kill_process_group()
            return True
        if kind in (SKIP, STEAL):
            key = message[1]
            with self._condition:
                found = [job for job in self._jobs if job.key == key]
                for job in found:
                    self._jobs.remove(job)
            if found and kind == STEAL:
                _send(self._conn, self._send_lock, (RETURNED, key))
            return True
        return False  # STOP, or a message from a newer kernel


def _become_process_group_leader() -> None:
    # A new session makes the worker the leader of its own process group, so that the
    # kernel can kill the worker and every child of a job with one killpg(). It also
    # keeps the worker out of the kernel's group, which jupyter_client's local
    # provisioner signals as a whole on interrupt.
    try:
        os.setsid()
    except OSError:
        # setsid() fails only for a process that already leads its group, so the
        # group id is still the pid. _kill_process_group() checks that anyway.
        pass


def _run_as_batch_work() -> None:
    """Ask Linux not to let this worker preempt the kernel's threads when it wakes.

    A worker that wakes up (a job arrived, a child ended) would otherwise take the
    CPU from the thread that was running there. On a machine with as many workers as
    cores, that thread is often the kernel's scheduler or pool thread, which then
    waits before it can hand out the next job, and the kernel replies to its front
    end late. SCHED_BATCH only removes that wake-up preemption: the worker keeps its
    nice value and its share of the CPU. The job's child processes inherit it.
    Elsewhere, or if Linux refuses, nothing changes.
    """
    policy = getattr(os, "SCHED_BATCH", None)
    if policy is None:
        return
    with contextlib.suppress(OSError):
        os.sched_setscheduler(0, policy, os.sched_param(0))


def _kill_process_group() -> None:
    """Kill this worker, every process in its group and its descendants (SIGKILL)."""
    for pid in stop_descendants(os.getpid()):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    if os.getpgrp() == os.getpid():
        os.killpg(os.getpid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def _on_sigterm(signum: int, frame: types.FrameType | None) -> None:
    _kill_process_group()


def _watch_lifeline(lifeline: Connection) -> None:
    # Nothing is ever sent on the lifeline, so recv_bytes() returns only by raising
    # EOFError once the kernel's write end is closed, which happens when the kernel
    # exits for any reason, including SIGKILL.
    try:
        lifeline.recv_bytes()
    except (EOFError, OSError):
        pass
    _kill_process_group()


def _release_forkserver_alive_fd() -> None:
    """Close this worker's copy of the write end of the forkserver's "alive" pipe.

    The forkserver exits once every copy of that write end is closed, and each of
    its children inherits one. Without this, the forkserver would outlive a dead
    kernel as long as any worker lives, and the parent-death signal would never come.
    A job that uses the forkserver start method itself starts its own forkserver, so
    it does not need this copy.
    """
    # NOTE: _forkserver and its attributes are private to multiprocessing (checked
    # on CPython 3.11). If they change, this does nothing and the lifeline alone
    # stops the workers.
    server = getattr(multiprocessing.forkserver, "_forkserver", None)
    alive_fd = getattr(server, "_forkserver_alive_fd", None)
    if isinstance(alive_fd, int) and getattr(server, "_forkserver_pid", 0) is None:
        with contextlib.suppress(OSError):
            os.close(alive_fd)
        setattr(server, "_forkserver_alive_fd", None)  # noqa: B010 - private attribute


def _set_parent_death_signal() -> None:
    """Ask Linux to send SIGTERM to this worker when its parent process dies.

    SIGTERM, unlike SIGKILL, runs ``_on_sigterm``, which also kills the job's
    children. The lifeline covers every other platform and the case where the kernel
    dies but the parent does not.
    """
    if not sys.platform.startswith("linux"):
        return
    parent_pid = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        result = libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if result == 0 and os.getppid() != parent_pid:
        # The parent died before prctl() took effect, so no signal will come.
        _kill_process_group()


def _adopt_orphans() -> None:
    """Make this worker the parent of its descendants whose own parent exits.

    Linux then keeps every process that a job starts under this worker, even one
    that started its own session or forked twice, so that ``descendants`` finds it
    and a cancel kills it. Elsewhere nothing changes.
    """
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def descendants(pid: int) -> list[int]:
    """Return the pids of the living descendants of ``pid``, read from ``/proc``.

    Returns an empty list where ``/proc`` lists no children (not Linux).
    """
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children") as children:
                    pids = [int(text) for text in children.read().split()]
            except (OSError, ValueError):
                continue
            found.extend(pids)
            pending.extend(pids)
    return found


# How long stop_descendants goes on at most, in seconds. Each round stops the
# processes found so far, so that none of them can start more, and a tree stops
# growing after a few rounds. The loop ends after _QUIET_ROUNDS rounds in a row
# find no new process while every process found has stopped. One CI run saw a
# child of a fork loop of 527 processes outlive a cancel when a single such round
# ended the loop, with at most 50 rounds. Two rounds and a time limit leave less
# room for that.
_STOP_SECONDS = 0.3
_QUIET_ROUNDS = 2


def stop_descendants(pid: int, *, root_stopped: bool = False) -> list[int]:
    """Stop every descendant of ``pid`` with SIGSTOP and return their pids.

    Lists the descendants again after each round of stops, since a process may
    start children while the list is read, until _QUIET_ROUNDS rounds in a row
    find no new one and every process found has stopped (for _STOP_SECONDS at
    most). A process acts
    on SIGSTOP only when it next runs, and one in the middle of a fork finishes
    it first. With ``root_stopped``, the caller has sent SIGSTOP to ``pid`` too,
    and ``pid`` must have stopped as well. The caller then kills them: a stopped
    process cannot start more in between.
    """
    stopped: list[int] = []
    seen: set[int] = set()
    deadline = time.monotonic() + _STOP_SECONDS
    quiet = 0
    while time.monotonic() < deadline:
        found = [child for child in descendants(pid) if child not in seen]
        if not found:
            waiting = [*stopped, pid] if root_stopped else stopped
            if all(_has_stopped(process) for process in waiting):
                quiet += 1
                if quiet >= _QUIET_ROUNDS:
                    break
                continue
            quiet = 0
            time.sleep(0.001)
            continue
        quiet = 0
        for child in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(child, signal.SIGSTOP)
        seen.update(found)
        stopped.extend(found)
    return stopped


def _has_stopped(pid: int) -> bool:
    """Return whether process ``pid`` is stopped, a zombie or gone (``/proc``)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("T", "t", "Z", "X")


def _open_standard_stream(fd: int) -> TextIO:
    """Return a line-buffered text stream that writes to file descriptor ``fd``.

    Because the stream writes to the descriptor itself, it follows ``os.dup2`` onto
    ``fd``, and so do logging handlers that captured it as ``sys.stderr``.
    """
    try:
        os.fstat(fd)
    except OSError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
    return open(
        fd,
        "w",
        buffering=1,
        encoding="utf-8",
        errors="backslashreplace",
        closefd=False,
    )


def _import_modules(names: Sequence[str]) -> list[str]:
    """Import ``names`` and return one error line per module that failed."""
    errors = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - any error of the module's code
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
    return errors


def _follow_kernel_paths(cwd: str, sys_path: Sequence[str]) -> None:
    # Run each job in the kernel's current directory and import path at submit time,
    # so that relative paths and modules beside the notebook resolve as in the kernel.
    if len(sys.path) != len(sys_path) or any(map(str.__ne__, sys.path, sys_path)):
        sys.path[:] = sys_path
    try:
        if os.getcwd() != cwd:
            os.chdir(cwd)
    except OSError:
        pass  # the directory was removed, so the job runs in the worker's directory


def _run_job(
    key: str, payload: bytes, log_path: str | None, output: _JobOutput
) -> tuple[tuple[Any, ...], bytes | None]:
    """Run one job; return the start of its DONE message and its pickled value."""
    started_at = time.time()
    if log_path is None:
        try:
            ok, value, error, reason = _call(key, payload)
        finally:
            _flush_all_output()
    else:
        try:
            capture = output.capture(log_path)
        except OSError as exc:
            message = f"could not open the log file {log_path!r} of job {key!r}: {exc}"
            header = _done(key, False, message, REASON_LOG_OPEN_FAILED, started_at)
            return header, None
        with capture:
            ok, value, error, reason = _call(key, payload)
            if error is not None:
                sys.stderr.write(error)

    value_bytes = None
    if ok:
        value_bytes, error = _dump_value(key, value)
        if value_bytes is None:
            ok = False
            reason = REASON_RESULT_PICKLING_FAILED
    del value
    header = _done(key, ok, error, reason, started_at)
    return header, value_bytes


def _done(
    key: str, ok: bool, error: str | None, reason: str, started_at: float
) -> tuple[Any, ...]:
    """Return the DONE message without its last two fields (the value)."""
    return (DONE, key, ok, error, reason, started_at, time.time())


def _call(key: str, payload: bytes) -> tuple[bool, Any, str | None, str]:
    """Unpickle ``(fn, args)`` and call ``fn(*args)``.

    Returns ``(ok, value, error, reason)``. Every exception, SystemExit and
    KeyboardInterrupt included, becomes an error text because the worker must survive
    to take the next job.
    """
    try:
        fn, args = pickle.loads(payload)
    except BaseException:  # noqa: BLE001 - the error goes back to the kernel
        error = (
            f"could not unpickle the function or arguments of job {key!r} in worker "
            f"process {os.getpid()}:\n{traceback.format_exc()}"
        )
        return False, None, error, REASON_UNPICKLING_FAILED
    try:
        value = fn(*args)
    except BaseException as exc:  # noqa: BLE001 - the error goes back to the kernel
        # Skip this function's own frame so the traceback starts at fn.
        tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
        error = "".join(traceback.format_exception(type(exc), exc, tb))
        return False, None, error, REASON_EXCEPTION
    return True, value, None, REASON_COMPLETED


def _dump_value(key: str, value: Any) -> tuple[bytes | None, str | None]:
    """Pickle a job's return value with protocol 5.

    Plain pickle handles importable types fast. cloudpickle, which writes the same
    protocol, handles instances of classes defined in a notebook cell, and cloudpickle
    maps such a class back to the kernel's own class object when the kernel loads it.
    """
    with contextlib.suppress(Exception):
        return pickle.dumps(value, protocol=PICKLE_PROTOCOL), None
    try:
        return cloudpickle.dumps(value, protocol=PICKLE_PROTOCOL), None
    except Exception as exc:  # noqa: BLE001 - any error means "cannot be pickled"
        error = (
            f"the return value of job {key!r} could not be pickled: "
            f"{type(exc).__name__}: {exc}"
        )
        return None, error


class _JobOutput:
    """Points file descriptors 1 and 2 of each job at its output; see PROMOTE_SECONDS.

    Redirecting the descriptors, not only ``sys.stdout``, also captures child
    processes, C extensions and logging handlers bound to ``sys.stderr``. The spill
    file becomes the job's log by a rename, so the descriptors that the job and its
    children hold keep writing to the right file, and nothing is copied. Only when
    the log file exists already (the pool's callers may reuse a log path) is the
    output appended to it, once the job has ended.
    """

    def __init__(self, echo: _Echo | None = None) -> None:
        self._echo = echo
        # Guards the fields below: the main thread and the promoter thread both
        # hand the spill file over to a log, and both pass output to the echo.
        self._lock = threading.Lock()
        # While a job runs with echo: this worker's own descriptor of the job's
        # output file (not 1, which the job may move), how far it was read, and
        # the start of a line not passed to the echo yet.
        self._echo_source: int | None = None
        self._echoed = 0
        self._echo_tail = b""
        self._echo_open_line = False  # the echo got a line start without its end
        self._spill: int | None = None  # None once it became a log file
        self._spill_path: str | None = None
        self._log_path: str | None = None  # of the running job
        self._started = 0.0  # time.monotonic() when it started
        self._promoter: threading.Thread | None = None
        # The log that the running job's spill file became while the job ran.
        self._promoted: str | None = None

    def capture(self, log_path: str) -> contextlib.AbstractContextManager[None]:
        """Return a context that captures the job's output for ``log_path``.

        Raises OSError, before anything is redirected, if the spill file cannot be
        created in the folder of ``log_path``.
        """
        spill = self._open_spill(os.path.dirname(log_path))
        return self._capturing(spill, log_path)

    @contextlib.contextmanager
    def _capturing(self, spill: int, log_path: str) -> Iterator[None]:
        # The previous job's output was flushed when it ended.
        _flush_standard_streams()
        saved_stdout = os.dup(1)
        saved_stderr = os.dup(2)
        os.dup2(spill, 1)
        os.dup2(spill, 2)
        with self._lock:
            self._log_path = log_path
            self._started = time.monotonic()
            self._echo_source = os.dup(spill) if self._echo is not None else None
            self._echoed = 0
            self._echo_tail = b""
            self._echo_open_line = False
        self._start_promoter()
        try:
            yield
        finally:
            _flush_all_output()
            with self._lock:
                self._echo_locked(at_end=True)
                self._log_path = None
                os.dup2(saved_stdout, 1)
                os.dup2(saved_stderr, 2)
                os.close(saved_stdout)
                os.close(saved_stderr)
                try:
                    self._hand_over(log_path, at_end=True)
                except OSError as exc:
                    sys.stderr.write(
                        f"jupyter-scenarios worker {os.getpid()}: could not write the "
                        f"output of a job to {log_path}: {exc}\n"
                    )
                    if self._spill is not None:
                        _clear(self._spill)

    def _hand_over(self, log_path: str, *, at_end: bool) -> None:
        """Make the spill file ``log_path``, or append it there at the job's end.

        Called with ``_lock`` held. Once the spill file became the log, it only
        removes that log at the job's end if the job wrote nothing to it.
        """
        if at_end and self._promoted is not None:
            promoted, self._promoted = self._promoted, None
            # A silent job that ran past PROMOTE_SECONDS leaves no log file either.
            if os.path.getsize(promoted) == 0 and not _has_children():
                os.unlink(promoted)
            return
        spill, spill_path = self._spill, self._spill_path
        if spill is None or spill_path is None:
            return
        if not os.path.exists(log_path):
            if at_end and os.fstat(spill).st_size == 0 and not _has_children():
                return  # a silent job leaves no log file
            # Child processes that outlive the job keep writing to this file.
            os.rename(spill_path, log_path)
            os.close(spill)
            self._spill = self._spill_path = None
            if not at_end:
                self._promoted = log_path
            return
        if not at_end:
            return  # appended at the end, so that the job's descriptors stay put
        if os.fstat(spill).st_size:
            log = os.open(log_path, _LOG_FLAGS, 0o666)
            try:
                _copy(spill, log)
            finally:
                os.close(log)
            _clear(spill)

    def _open_spill(self, folder: str) -> int:
        path = os.path.join(folder, SPILL_NAME.format(pid=os.getpid()))
        with self._lock:
            if self._spill is not None and path == self._spill_path:
                return self._spill
            self._close_locked()
            fd = os.open(
                path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666
            )
            self._spill, self._spill_path = fd, path
            return fd

    def _start_promoter(self) -> None:
        if self._promoter is None:
            self._promoter = threading.Thread(
                target=self._promote_slow_jobs,
                name="jupyter-scenarios-log-promoter",
                daemon=True,
            )
            self._promoter.start()

    def _promote_slow_jobs(self) -> None:
        while True:
            time.sleep(PROMOTE_SECONDS / 2)
            with self._lock:
                self._echo_locked()
                log_path = self._log_path
                if (
                    log_path is None
                    or time.monotonic() - self._started < PROMOTE_SECONDS
                ):
                    continue
                try:
                    self._hand_over(log_path, at_end=False)
                except OSError:
                    pass  # the output stays in the spill file until the job ends

    def _echo_locked(self, *, at_end: bool = False) -> None:
        """Pass what the job wrote since the last call to the echo, by whole lines.

        Reads the job's output file, the spill file or the log it became, which
        starts with this job's output. A line end is a newline or a carriage
        return (progress bars). The start of a line is held back until its end
        comes, unless it is long, or was already held back at the last call (a
        prompt that waits). At the end of the job the rest goes too, ended with a
        line end if it has none, and the file's descriptor is closed. One call
        waits at most ``_ECHO_PATIENCE_SECONDS`` for the echo in all.
        """
        source = self._echo_source
        echo = self._echo
        if source is None or echo is None:
            return
        deadline = time.monotonic() + _ECHO_PATIENCE_SECONDS
        held_before = self._echo_tail
        try:
            while True:
                chunk = os.pread(source, 1 << 20, self._echoed)
                if not chunk:
                    break
                self._echoed += len(chunk)
                cut = max(chunk.rfind(b"\n"), chunk.rfind(b"\r")) + 1
                if cut:
                    echo.put(self._echo_tail + chunk[:cut], deadline)
                    self._echo_tail = chunk[cut:]
                    self._echo_open_line = False
                else:
                    self._echo_tail += chunk
                if len(self._echo_tail) > _ECHO_LONG_LINE:
                    self._pass_held_locked(deadline)
        except OSError:
            pass  # the log keeps all of it
        if at_end:
            self._pass_held_locked(deadline)
            if self._echo_open_line:
                echo.put(b"\n", deadline)
                self._echo_open_line = False
            os.close(source)
            self._echo_source = None
            echo.flush(deadline)
        elif self._echo_tail and self._echo_tail == held_before:
            self._pass_held_locked(deadline)

    def _pass_held_locked(self, deadline: float) -> None:
        """Pass the start of a line that was held back; its end is still to come."""
        if self._echo_tail and self._echo is not None:
            self._echo.put(self._echo_tail, deadline)
            self._echo_tail = b""
            self._echo_open_line = True

    def close(self) -> None:
        """Close and remove the spill file; called when the worker exits."""
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._spill is not None and self._spill_path is not None:
            os.close(self._spill)
            with contextlib.suppress(OSError):
                os.unlink(self._spill_path)
        self._spill = self._spill_path = None


class _Echo:
    """The copy of job output to the standard output that the worker inherited.

    A thread does the writing, so that a terminal or pipe that is not read never
    stops a job for long. A ``put`` that finds ``_ECHO_LIMIT`` bytes waiting waits
    for room until the caller's deadline. After that, and until the thread catches
    up, output is dropped (each job's log keeps it) and a notice line marks the
    gap. Writes of at most ``select.PIPE_BUF`` bytes that end at a line end keep
    the lines of two workers from mixing on a pipe.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._condition = threading.Condition()
        # Output to write, and the number of bytes dropped at each gap.
        self._items: collections.deque[bytes | int] = collections.deque()
        self._waiting = 0  # bytes of output in _items
        self._writing = False  # the thread writes an item taken from _items
        self._broken = False
        # False once a wait for the thread ran out, until the thread catches up: a
        # reader that stopped reading must not delay every job.
        self._patient = True
        threading.Thread(
            target=self._write_forever, name="jupyter-scenarios-echo", daemon=True
        ).start()

    def put(self, data: bytes, deadline: float) -> None:
        """Queue ``data``, waiting for room until ``time.monotonic()`` is ``deadline``."""
        if not data:
            return
        with self._condition:
            if self._broken:
                return
            while self._waiting and self._waiting + len(data) > _ECHO_LIMIT:
                remaining = deadline - time.monotonic()
                if not self._patient or remaining <= 0:
                    self._patient = False
                    self._drop_locked(len(data))
                    return
                self._condition.wait(remaining)
            self._items.append(data)
            self._waiting += len(data)
            self._condition.notify_all()

    def _drop_locked(self, size: int) -> None:
        if self._items and isinstance(self._items[-1], int):
            self._items[-1] += size
        else:
            self._items.append(size)
        self._condition.notify_all()

    def flush(self, deadline: float) -> None:
        """Wait until what was put is written, until ``time.monotonic()`` is ``deadline``.

        A job's last lines then come before what the script prints once the job
        has ended.
        """
        with self._condition:
            while self._patient and (self._items or self._writing):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._patient = False
                    return
                self._condition.wait(remaining)

    def _write_forever(self) -> None:
        while True:
            with self._condition:
                self._writing = False
                if not self._items:
                    self._patient = True
                self._condition.notify_all()
                while not self._items:
                    self._condition.wait()
                item = self._items.popleft()
                if isinstance(item, bytes):
                    self._waiting -= len(item)
                self._writing = True
            if isinstance(item, int):
                item = (
                    f"\n[jupyter-scenarios: {item} bytes of job output not shown "
                    "here, since this output was not read fast enough; each job's "
                    "log has them]\n"
                ).encode()
            try:
                _write_lines(self._fd, item)
            except OSError:
                with self._condition:  # closed or broken: the logs keep it all
                    self._broken = True
                    self._writing = False
                    self._items.clear()
                    self._waiting = 0
                    self._condition.notify_all()
                return


#: Most bytes of job output that wait for the echo thread; see _Echo.
_ECHO_LIMIT = 8 << 20
#: Seconds that a job's output may wait for room in the echo, and a job's end or a
#: worker's exit for its echo to be written, before the echo stops waiting.
_ECHO_PATIENCE_SECONDS = 0.5
#: Bytes of a line without its end that the echo passes on anyway.
_ECHO_LONG_LINE = 64 * 1024


def _write_lines(fd: int, data: bytes) -> None:
    """Write ``data`` in pieces of at most PIPE_BUF bytes that end at line ends.

    Waits for a descriptor that another process made non-blocking.
    """
    limit = select.PIPE_BUF
    start = 0
    while start < len(data):
        end = min(start + limit, len(data))
        if end < len(data):
            cut = max(data.rfind(b"\n", start, end), data.rfind(b"\r", start, end))
            if cut >= start:
                end = cut + 1
        view = memoryview(data)[start:end]
        while view:
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                poller = select.poll()
                poller.register(fd, select.POLLOUT)
                poller.poll(100)
        start = end


def _has_children() -> bool:
    """Return whether this worker has a child process that may still write.

    A child that a silent job started may write later, so its job gets the spill
    file as its log. On Linux the worker adopts orphaned descendants (see
    ``_adopt_orphans``), so a daemon that forked twice counts too. Children that
    exited but were not reaped do not count. Without ``/proc``, any child counts.
    NOTE: while a process left by an earlier job lives, every silent job gets an
    empty log file.
    """
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False  # no child at all, the usual case
    try:
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/children") as children:
                pids = children.read().split()
            for pid in pids:
                with open(f"/proc/{pid}/stat") as stat:
                    state = stat.read().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    return True
    except (OSError, IndexError):
        return True
    return False


_LOG_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC


def _copy(source: int, target: int, start: int = 0) -> int:
    """Write file ``source`` from ``start`` to its end onto ``target``.

    Returns the offset where the copy ended.
    """
    offset = start
    while True:
        chunk = os.pread(source, 1 << 20, offset)
        if not chunk:
            return offset
        offset += len(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(target, view) :]


def _clear(spill: int) -> None:
    os.ftruncate(spill, 0)
    os.lseek(spill, 0, os.SEEK_SET)


def move_spill(log_path: str, pid: int) -> None:
    """Append the spill file of dead worker ``pid`` to ``log_path`` and remove it.

    Called by the kernel for the job that the worker was running when it died or
    was killed. The spill file is in the folder of ``log_path``; nothing happens if
    it does not exist.
    """
    spill_path = os.path.join(os.path.dirname(log_path), SPILL_NAME.format(pid=pid))
    try:
        spill = os.open(spill_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        if os.fstat(spill).st_size:
            log = os.open(log_path, _LOG_FLAGS, 0o666)
            try:
                _copy(spill, log)
            finally:
                os.close(log)
    finally:
        os.close(spill)
        with contextlib.suppress(OSError):
            os.unlink(spill_path)


# These run twice per job; plain try statements cost less than contextlib.suppress.


def _flush_standard_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001, S110 - a broken stream must not stop the job
            pass


def _flush_all_output() -> None:
    streams = {
        id(s): s for s in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    }
    for stream in streams.values():
        if stream is None:
            continue
        try:
            stream.flush()
        except Exception:  # noqa: BLE001, S110 - as above
            pass
    for handler in _logging_handlers():
        try:
            handler.flush()
        except Exception:  # noqa: BLE001, S110 - a user's handler may raise anything
            pass
    _flush_c_stdio()


def _logging_handlers() -> list[logging.Handler]:
    loggers: list[logging.Logger] = [logging.getLogger()]
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            loggers.append(logger)
    return [handler for logger in loggers for handler in logger.handlers]


_libc: ctypes.CDLL | None = None


def _flush_c_stdio() -> None:
    # printf() from C extensions sits in the C library's buffers until fflush().
    global _libc
    with contextlib.suppress(OSError, AttributeError):
        if _libc is None:
            _libc = ctypes.CDLL(None)
        _libc.fflush(None)


def remove_spill(folder: str, pid: int) -> None:
    """Remove the spill file of dead worker ``pid`` from ``folder``, if it is there."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(folder, SPILL_NAME.format(pid=pid)))
