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
    ``(RUN, key, log_path, cwd, sys_path, payload)``, where ``payload`` is the pickle
    of ``(fn, args)``, or None when it follows. ``(STOP,)`` makes an idle worker exit.
worker -> kernel
    ``(READY, pid, pgid, preload_errors)`` once the worker can take jobs.
    ``(DONE, key, ok, error, reason, started_at, finished_at, value, value_follows)``,
    where ``value`` is the pickled return value, or None when there is none or it
    follows.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import logging
import multiprocessing.forkserver
import os
import pickle
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
STOP = "stop"
READY = "ready"
DONE = "done"

# Values of WorkOutcome.reason. The pool module re-exports them.
REASON_COMPLETED = "completed"
REASON_EXCEPTION = "exception"
REASON_UNPICKLING_FAILED = "unpickling_failed"
REASON_RESULT_PICKLING_FAILED = "result_pickling_failed"
REASON_LOG_OPEN_FAILED = "log_open_failed"

PICKLE_PROTOCOL = 5
#: Size in bytes below which a payload or a result travels inside its message.
INLINE_LIMIT = 64 * 1024

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
LIFELINE_THREAD_NAME = "jupyter-scenarios-lifeline"


def run_worker(
    conn: Connection,
    lifeline: Connection,
    preload: Sequence[str],
    started_by_forkserver: bool,
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
    """
    _become_process_group_leader()
    signal.signal(signal.SIGTERM, _on_sigterm)
    if started_by_forkserver:
        _release_forkserver_alive_fd()
        _set_parent_death_signal()
    watcher = threading.Thread(
        target=_watch_lifeline, args=(lifeline,), name=LIFELINE_THREAD_NAME, daemon=True
    )
    watcher.start()

    stdout = _open_standard_stream(1)
    stderr = _open_standard_stream(2)
    preload_errors = _import_modules(preload)
    ready = (READY, os.getpid(), os.getpgrp(), preload_errors)
    conn.send_bytes(pickle.dumps(ready, protocol=PICKLE_PROTOCOL))

    while True:
        try:
            message = pickle.loads(conn.recv_bytes())
            if message[0] != RUN:
                return
            _, key, log_path, cwd, sys_path, payload = message
            if payload is None:
                payload = conn.recv_bytes()
        except EOFError:
            return
        del message
        sys.stdout, sys.stderr = stdout, stderr
        _follow_kernel_paths(cwd, sys_path)
        reply, value = _run_job(key, payload, log_path)
        del payload
        if value is not None and len(value) < INLINE_LIMIT:
            conn.send_bytes(pickle.dumps((*reply, value, False), PICKLE_PROTOCOL))
        else:
            follows = value is not None
            conn.send_bytes(pickle.dumps((*reply, None, follows), PICKLE_PROTOCOL))
            if value is not None:
                conn.send_bytes(value)


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


def _kill_process_group() -> None:
    """Kill this worker and every process in its group with SIGKILL."""
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
    key: str, payload: bytes, log_path: str | None
) -> tuple[tuple[Any, ...], bytes | None]:
    """Run one job; return the start of its DONE message and its pickled value."""
    started_at = time.time()
    log_fd = None
    if log_path is not None:
        try:
            log_fd = os.open(
                log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o666
            )
        except OSError as exc:
            message = f"could not open the log file {log_path!r} of job {key!r}: {exc}"
            header = _done(key, False, message, REASON_LOG_OPEN_FAILED, started_at)
            return header, None

    with _redirect_output(log_fd):
        ok, value, error, reason = _call(key, payload)
        if error is not None and log_path is not None:
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


@contextlib.contextmanager
def _redirect_output(log_fd: int | None) -> Iterator[None]:
    """Point file descriptors 1 and 2 at ``log_fd`` (closing it) for the block.

    Redirecting the descriptors, not only ``sys.stdout``, also captures child
    processes, C extensions and logging handlers bound to ``sys.stderr``. Everything
    is flushed before the descriptors are restored.
    """
    if log_fd is None:
        try:
            yield
        finally:
            _flush_all_output()
        return
    _flush_all_output()
    saved_stdout = os.dup(1)
    saved_stderr = os.dup(2)
    try:
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.close(log_fd)
        yield
    finally:
        _flush_all_output()
        os.dup2(saved_stdout, 1)
        os.dup2(saved_stderr, 2)
        os.close(saved_stdout)
        os.close(saved_stderr)


def _flush_all_output() -> None:
    streams = {
        id(s): s for s in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    }
    for stream in streams.values():
        if stream is None:
            continue
        with contextlib.suppress(Exception):
            stream.flush()
    for handler in _logging_handlers():
        with contextlib.suppress(Exception):
            handler.flush()
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
