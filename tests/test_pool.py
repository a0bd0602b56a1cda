"""Tests of WorkerPool with real worker processes.

Every wait is bounded. The forkserver and the resource tracker that multiprocessing
keeps for the whole interpreter are started by a module fixture before the first
test, so the leak checks count them as already running.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.forkserver
import os
import selectors
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import pytest
from helpers.processes import (
    descendants,
    describe,
    new_non_daemon_threads,
    session_owned_pids,
    wait_for_exit,
)

from jupyter_scenarios.executors import _worker_main
from jupyter_scenarios.executors.pool import (
    POOL_THREAD_NAME,
    REASON_CANCELLED,
    REASON_COMPLETED,
    REASON_EXCEPTION,
    REASON_LOG_OPEN_FAILED,
    REASON_PICKLING_FAILED,
    REASON_RESULT_PICKLING_FAILED,
    REASON_SHUTDOWN,
    REASON_WORKER_DIED,
    REASON_WORKER_START_FAILED,
    WorkerPool,
    WorkOutcome,
)

if TYPE_CHECKING:
    # helpers.kernel imports jupyter_client, which workers would import too when
    # they load this module for the job functions below.
    from helpers.kernel import KernelSession

pytestmark = pytest.mark.timeout(120)

REPO_ROOT = Path(__file__).resolve().parents[1]
# Seconds to wait for an outcome. Generous because CI machines may have 2 cores.
OUTCOME_TIMEOUT = 30.0
# Seconds the worker and the job's children may take to die after cancel().
CANCEL_DEADLINE = 1.0
# Seconds the workers of a SIGKILLed parent may take to exit by themselves.
ORPHAN_DEADLINE = 5.0


class Recorder:
    """Collects callback calls and lets the test wait for them."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self.started: dict[str, int] = {}
        self.finished: dict[str, list[WorkOutcome]] = {}
        self.calls: list[tuple[str, str]] = []  # ("started" or "finished", key)
        self.threads: set[str] = set()

    def on_started(self, key: str, pid: int) -> None:
        with self._condition:
            self.started[key] = pid
            self.calls.append(("started", key))
            self.threads.add(threading.current_thread().name)
            self._condition.notify_all()

    def on_finished(self, key: str, outcome: WorkOutcome) -> None:
        with self._condition:
            self.finished.setdefault(key, []).append(outcome)
            self.calls.append(("finished", key))
            self.threads.add(threading.current_thread().name)
            self._condition.notify_all()

    def wait_started(self, key: str, timeout: float = OUTCOME_TIMEOUT) -> int:
        with self._condition:
            if not self._condition.wait_for(lambda: key in self.started, timeout):
                raise AssertionError(f"job {key!r} did not start within {timeout} s")
            return self.started[key]

    def wait(
        self, key: str, timeout: float = OUTCOME_TIMEOUT, *, count: int = 1
    ) -> WorkOutcome:
        """Wait for the ``count``-th outcome of ``key`` and return it."""
        with self._condition:
            if not self._condition.wait_for(
                lambda: len(self.finished.get(key, ())) >= count, timeout
            ):
                raise AssertionError(f"job {key!r} did not finish within {timeout} s")
            return self.finished[key][count - 1]

    def outcome(self, key: str) -> WorkOutcome:
        """Return the only outcome of ``key``, which must have arrived."""
        outcomes = self.finished.get(key, [])
        assert len(outcomes) == 1, f"{len(outcomes)} on_finished calls for {key!r}"
        return outcomes[0]


PoolFactory = Callable[..., tuple[WorkerPool, Recorder]]


@pytest.fixture(scope="module", autouse=True)
def multiprocessing_helpers() -> None:
    """Start the interpreter-wide forkserver and resource tracker before the tests."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([_worker_main.__name__])
    multiprocessing.forkserver.ensure_running()


@pytest.fixture(autouse=True)
def no_leftover_workers_or_threads() -> Iterator[None]:
    """Fail a test that leaves worker processes, the pool thread or other threads."""
    pids_before = {process.pid for process in descendants(os.getpid())}
    threads_before = set(threading.enumerate())
    yield
    # The session's browser starts helper processes of its own during any test.
    exempt = pids_before | session_owned_pids()
    started = [p for p in descendants(os.getpid()) if p.pid not in exempt]
    leftovers = wait_for_exit(started, timeout=5.0)
    for process in leftovers:
        try:
            os.kill(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not leftovers, "worker processes left behind: " + ", ".join(
        describe(process) for process in leftovers
    )
    pool_threads = [t for t in threading.enumerate() if t.name == POOL_THREAD_NAME]
    assert not pool_threads, "the pool thread is still running"
    threads = new_non_daemon_threads(threads_before)
    assert not threads, f"non-daemon threads left behind: {threads}"


@pytest.fixture
def make_pool() -> Iterator[PoolFactory]:
    """Return a factory of started pools, each shut down after the test."""
    pools: list[WorkerPool] = []

    def factory(max_workers: int = 2, **kwargs: Any) -> tuple[WorkerPool, Recorder]:
        recorder = Recorder()
        pool = WorkerPool(
            max_workers,
            on_started=recorder.on_started,
            on_finished=recorder.on_finished,
            **kwargs,
        )
        pools.append(pool)
        pool.start()
        return pool, recorder

    yield factory
    for pool in pools:
        pool.shutdown(timeout=5.0)


def main_namespace(source: str) -> dict[str, Any]:
    """Execute ``source`` like a notebook cell, in a namespace named ``__main__``."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(textwrap.dedent(source), namespace)  # noqa: S102 - test input
    return namespace


def wait_for_file(path: Path, timeout: float = OUTCOME_TIMEOUT) -> str:
    """Return the content of ``path`` once a job has written it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text()
        time.sleep(0.02)
    raise AssertionError(f"{path} was not written within {timeout} s")


def is_gone(pid: int) -> bool:
    try:
        process = psutil.Process(pid)
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_until_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait up to ``timeout`` seconds and return the pids still alive then."""
    deadline = time.monotonic() + timeout
    alive = [pid for pid in pids if not is_gone(pid)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.01)
        alive = [pid for pid in alive if not is_gone(pid)]
    return alive


# Job functions. Module-level functions travel by reference, which also checks that
# the workers can import this test module.


def sleep_and_return(seconds: float, value: Any) -> Any:
    time.sleep(seconds)
    return value


def record_interval(path: str, seconds: float) -> None:
    start = time.time()
    time.sleep(seconds)
    Path(path).write_text(f"{start} {time.time()}")


def spawn_child_and_sleep(pid_file: str) -> None:
    child = subprocess.Popen(["sleep", "60"])
    Path(pid_file).write_text(str(child.pid))
    time.sleep(60)


def spawn_session_leader_and_sleep(pid_file: str) -> None:
    child = subprocess.Popen(["sleep", "60"], start_new_session=True)
    Path(pid_file).write_text(str(child.pid))
    time.sleep(60)


def spawn_daemon_and_sleep(pid_file: str) -> None:
    # The shell starts "sleep" in the background in a new session and exits, so
    # "sleep" loses its parent, as a daemon that forks twice does.
    subprocess.run(
        [
            "sh",
            "-c",
            f"sleep 60 & echo $! > {pid_file}.tmp && mv {pid_file}.tmp {pid_file}",
        ],
        start_new_session=True,
        check=True,
    )
    time.sleep(60)


def write_output(marker: str) -> None:
    import ctypes

    print(f"print {marker}")
    logging.warning("logging %s", marker)  # noqa: LOG015 - root logger on purpose
    subprocess.run(["echo", f"child {marker}"], check=True)
    os.write(2, f"fd2 {marker}\n".encode())
    ctypes.CDLL(None).printf(f"printf {marker}\n".encode())


def print_then_wait(marker: str, gate: str, done: str) -> str:
    print(f"begin {marker}", flush=True)
    Path(done).write_text("printed")
    deadline = time.monotonic() + OUTCOME_TIMEOUT
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    print(f"end {marker}", flush=True)
    return marker


def print_then_exit(marker: str) -> None:
    print(f"last words {marker}", flush=True)
    os._exit(7)


def loaded_gui_modules() -> list[str]:
    prefixes = ("IPython", "ipywidgets", "ipykernel")
    return sorted(name for name in sys.modules if name.startswith(prefixes))


def group_and_session() -> tuple[int, int, int]:
    return os.getpid(), os.getpgrp(), os.getsid(0)


def start_forked_child() -> int | None:
    process = multiprocessing.get_context("fork").Process(target=os._exit, args=(0,))
    process.start()
    process.join(10)
    return process.exitcode


# Results


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_basic_result(make_pool: PoolFactory, start_method: str) -> None:
    pool, recorder = make_pool(2, start_method=start_method)
    pool.submit("pow", pow, (2, 10), None)
    outcome = recorder.wait("pow")
    assert outcome.ok
    assert outcome.value == 1024
    assert outcome.reason == REASON_COMPLETED
    assert outcome.error is None
    assert outcome.pid == recorder.started["pow"]
    assert outcome.started_at is not None
    assert outcome.finished_at is not None
    assert outcome.started_at <= outcome.finished_at
    assert recorder.calls == [("started", "pow"), ("finished", "pow")]
    assert recorder.threads == {POOL_THREAD_NAME}


def echo_bytes(data: bytes) -> bytes:
    return data


def test_values_of_every_size_arrive_whole(make_pool: PoolFactory) -> None:
    # Messages below 16 KiB go out in one write. Results below INLINE_LIMIT travel
    # inside the DONE message, and larger ones follow it. The pool thread reads
    # several messages per read and waits for the rest of a large one.
    pool, recorder = make_pool(2)
    limit = _worker_main.INLINE_LIMIT
    sizes = [0, 1, 16 * 1024, limit - 200, limit, limit + 1, 3 * 1024 * 1024]
    expected = {}
    for round_ in range(3):
        for size in sizes:
            key = f"echo-{round_}-{size}"
            expected[key] = bytes([round_ + 1]) * size
            pool.submit(key, echo_bytes, (expected[key],), None)
    for key, data in expected.items():
        outcome = recorder.wait(key)
        assert outcome.ok, outcome.error
        assert outcome.value == data, f"{key}: {len(outcome.value)} bytes back"


def test_worker_leads_own_process_group(make_pool: PoolFactory) -> None:
    pool, recorder = make_pool(1)
    pool.submit("ids", group_and_session, (), None)
    pid, pgid, sid = recorder.wait("ids").value
    assert pgid == pid
    assert sid == pid
    assert pid != os.getpid()


def scheduling_policies() -> tuple[int, int, int]:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        return (
            os.sched_getscheduler(0),
            os.sched_getscheduler(child.pid),
            os.getpriority(os.PRIO_PROCESS, 0),
        )
    finally:
        child.kill()
        child.wait()


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux scheduling policy")
def test_workers_and_their_children_run_as_batch_work(make_pool: PoolFactory) -> None:
    # Workers do not preempt the kernel's threads when they wake, and keep the
    # kernel's nice value, so their share of the CPU does not change.
    pool, recorder = make_pool(1)
    pool.submit("policy", scheduling_policies, (), None)
    worker, child, nice = recorder.wait("policy").value
    assert worker == os.SCHED_BATCH
    assert child == os.SCHED_BATCH
    assert nice == os.getpriority(os.PRIO_PROCESS, 0)
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the kernel is untouched


def test_worker_does_not_import_ipython(make_pool: PoolFactory) -> None:
    pool, recorder = make_pool(1)
    pool.submit("modules", loaded_gui_modules, (), None)
    assert recorder.wait("modules").value == []


def test_lambda_and_closure(make_pool: PoolFactory) -> None:
    pool, recorder = make_pool(2)
    offset = 10

    def add_offset(x: int) -> int:
        return x + offset

    pool.submit("lambda", lambda x: x * 3, (7,), None)
    pool.submit("closure", add_offset, (5,), None)
    assert recorder.wait("lambda").value == 21
    assert recorder.wait("closure").value == 15


def test_main_function(make_pool: PoolFactory) -> None:
    pool, recorder = make_pool(1)
    namespace = main_namespace(
        """
        FACTOR = 4

        def scale(x):
            return x * FACTOR
        """
    )
    assert namespace["scale"].__module__ == "__main__"
    pool.submit("scale", namespace["scale"], (3,), None)
    assert recorder.wait("scale").value == 12


def test_main_function_redefinition(make_pool: PoolFactory) -> None:
    pool, recorder = make_pool(1)
    first = main_namespace("def version():\n    return 1\n")["version"]
    pool.submit("first", first, (), None)
    assert recorder.wait("first").value == 1
    second = main_namespace("def version():\n    return 2\n")["version"]
    pool.submit("second", second, (), None)
    assert recorder.wait("second").value == 2


def test_main_class_result_keeps_class(make_pool: PoolFactory) -> None:
    pool, recorder = make_pool(1)
    namespace = main_namespace(
        """
        import dataclasses

        @dataclasses.dataclass
        class Point:
            x: int
            y: int

        def make_point(x, y):
            return Point(x, y)
        """
    )
    pool.submit("point", namespace["make_point"], (1, 2), None)
    outcome = recorder.wait("point")
    assert outcome.ok, outcome.error
    assert type(outcome.value) is namespace["Point"]
    assert outcome.value == namespace["Point"](1, 2)


def test_exception_traceback_has_every_frame(make_pool: PoolFactory) -> None:
    pool, recorder = make_pool(1)
    namespace = main_namespace(
        """
        def inner_frame():
            raise ValueError("boom in inner")

        def middle_frame():
            inner_frame()

        def outer_frame():
            middle_frame()
        """
    )
    pool.submit("raises", namespace["outer_frame"], (), None)
    outcome = recorder.wait("raises")
    assert not outcome.ok
    assert outcome.reason == REASON_EXCEPTION
    assert outcome.error is not None
    assert outcome.error.startswith("Traceback (most recent call last):")
    for frame in ("outer_frame", "middle_frame", "inner_frame"):
        assert f"in {frame}" in outcome.error
    assert "ValueError: boom in inner" in outcome.error
    assert "_call" not in outcome.error

    # The worker survives an exception and takes the next job.
    pool.submit("after", os.getpid, (), None)
    assert recorder.wait("after").value == outcome.pid


def test_system_exit_is_an_exception(make_pool: PoolFactory) -> None:
    pool, recorder = make_pool(1)
    pool.submit("exit", sys.exit, (4,), None)
    outcome = recorder.wait("exit")
    assert outcome.reason == REASON_EXCEPTION
    assert outcome.error is not None
    assert "SystemExit: 4" in outcome.error


# Worker deaths


def test_worker_exit_fails_only_that_job(make_pool: PoolFactory) -> None:
    pool, recorder = make_pool(2)
    pool.submit("slow", sleep_and_return, (1.0, "still fine"), None)
    pool.submit("exits", os._exit, (3,), None)
    outcome = recorder.wait("exits")
    assert not outcome.ok
    assert outcome.reason == REASON_WORKER_DIED
    assert outcome.exit_code == 3
    assert outcome.signal is None
    assert outcome.error == (
        f"worker process {outcome.pid} exited with code 3 while running job 'exits'"
    )
    assert recorder.wait("slow").value == "still fine"

    # A replacement worker takes new jobs.
    pool.submit("next", os.getpid, (), None)
    next_pid = recorder.wait("next").value
    assert next_pid != outcome.pid


def test_segfault_fails_job(make_pool: PoolFactory) -> None:
    pool, recorder = make_pool(1)
    namespace = main_namespace(
        """
        def crash():
            import ctypes
            ctypes.string_at(0)
        """
    )
    pool.submit("segv", namespace["crash"], (), None)
    outcome = recorder.wait("segv")
    assert not outcome.ok
    assert outcome.reason == REASON_WORKER_DIED
    assert outcome.signal == signal.SIGSEGV
    assert outcome.error is not None
    assert "killed by signal SIGSEGV" in outcome.error
    pool.submit("next", pow, (3, 2), None)
    assert recorder.wait("next").value == 9


def test_external_sigkill_fails_job(make_pool: PoolFactory) -> None:
    pool, recorder = make_pool(2)
    pool.submit("victim", time.sleep, (60,), None)
    pool.submit("bystander", sleep_and_return, (0.5, "done"), None)
    pid = recorder.wait_started("victim")
    os.kill(pid, signal.SIGKILL)
    outcome = recorder.wait("victim")
    assert outcome.reason == REASON_WORKER_DIED
    assert outcome.signal == signal.SIGKILL
    assert outcome.error == (
        f"worker process {pid} was killed by signal SIGKILL while running job 'victim'"
    )
    assert recorder.wait("bystander").value == "done"
    pool.submit("next", pow, (2, 3), None)
    assert recorder.wait("next").value == 8


# Cancel


@pytest.mark.parametrize(
    "spawn",
    [spawn_child_and_sleep, spawn_session_leader_and_sleep, spawn_daemon_and_sleep],
    ids=["child", "new-session", "daemon"],
)
def test_cancel_running_kills_worker_and_children(
    make_pool: PoolFactory, tmp_path: Path, spawn: Callable[[str], None]
) -> None:
    pool, recorder = make_pool(1)
    pid_file = tmp_path / "child.pid"
    pool.submit("parent", spawn, (str(pid_file),), None)
    worker_pid = recorder.wait_started("parent")
    child_pid = int(wait_for_file(pid_file))
    assert pool.running() == {"parent": worker_pid}

    assert pool.cancel("parent")
    alive = wait_until_gone([worker_pid, child_pid], CANCEL_DEADLINE)
    assert alive == [], f"still alive {CANCEL_DEADLINE} s after cancel: {alive}"

    outcome = recorder.wait("parent")
    assert outcome.cancelled
    assert not outcome.ok
    assert outcome.reason == REASON_CANCELLED
    assert outcome.pid == worker_pid
    assert pool.running() == {}
    assert pool.free_slots() == 1
    assert not pool.cancel("parent")

    pool.submit("next", os.getpid, (), None)
    assert recorder.wait("next").value != worker_pid


def sleep_holding_gil(pid_file: str, seconds: int) -> None:
    import ctypes

    Path(pid_file).write_text(str(os.getpid()))
    # A PyDLL call keeps the interpreter lock, so the worker's reader thread cannot
    # act on CANCEL and the pool thread must kill the worker itself.
    ctypes.PyDLL(None).sleep(seconds)


def test_cancel_job_holding_gil(make_pool: PoolFactory, tmp_path: Path) -> None:
    pool, recorder = make_pool(1)
    pid_file = tmp_path / "worker.pid"
    pool.submit("stuck", sleep_holding_gil, (str(pid_file), 30), None)
    worker_pid = int(wait_for_file(pid_file))

    assert pool.cancel("stuck")
    alive = wait_until_gone([worker_pid], CANCEL_DEADLINE)

    assert alive == [], f"worker still alive {CANCEL_DEADLINE} s after cancel"
    assert recorder.wait("stuck").cancelled
    pool.submit("after", pow, (2, 3), None)
    assert recorder.wait("after").value == 8


def test_cancel_queued_job(make_pool: PoolFactory) -> None:
    pool, recorder = make_pool(1)
    pool.submit("running", time.sleep, (60,), None)
    pool.submit("queued", pow, (2, 2), None)
    recorder.wait_started("running")
    assert pool.free_slots() == 0

    assert pool.cancel("queued")
    outcome = recorder.wait("queued")
    assert outcome.cancelled
    assert outcome.reason == REASON_CANCELLED
    assert outcome.pid is None
    assert outcome.started_at is None
    assert "queued" not in recorder.started
    assert not pool.cancel("queued")
    assert not pool.cancel("unknown")
    assert pool.cancel("running")
    assert recorder.wait("running").cancelled


# Pickling


def test_unpicklable_result(make_pool: PoolFactory) -> None:
    pool, recorder = make_pool(1)
    pool.submit("lock", threading.Lock, (), None)
    outcome = recorder.wait("lock")
    assert not outcome.ok
    assert outcome.reason == REASON_RESULT_PICKLING_FAILED
    assert outcome.error is not None
    assert "'lock'" in outcome.error
    assert "could not be pickled" in outcome.error
    pool.submit("next", pow, (5, 2), None)
    assert recorder.wait("next").value == 25


def test_unpicklable_function(make_pool: PoolFactory) -> None:
    pool, recorder = make_pool(1)
    lock = threading.Lock()
    pool.submit("holds-lock", lambda: lock.locked(), (), None)
    outcome = recorder.wait("holds-lock")
    assert not outcome.ok
    assert outcome.reason == REASON_PICKLING_FAILED
    assert outcome.error is not None
    assert "'holds-lock'" in outcome.error
    assert "holds-lock" not in recorder.started
    pool.submit("next", pow, (2, 5), None)
    assert recorder.wait("next").value == 32


# Output capture


def test_output_capture(make_pool: PoolFactory, tmp_path: Path) -> None:
    pool, recorder = make_pool(1)
    log_path = tmp_path / "job.log"
    log_path.write_text("existing line\n")
    pool.submit("writes", write_output, ("one",), log_path)
    assert recorder.wait("writes").ok

    log = log_path.read_text()
    assert log.startswith("existing line\n")
    for line in (
        "print one",
        "WARNING:root:logging one",
        "child one",
        "fd2 one",
        "printf one",
    ):
        assert line in log

    # Output of a job without a log file does not reach the previous log.
    pool.submit("unlogged", write_output, ("two",), None)
    assert recorder.wait("unlogged").ok
    assert "two" not in log_path.read_text()

    pool.submit("again", write_output, ("three",), log_path)
    assert recorder.wait("again").ok
    log = log_path.read_text()
    assert "print one" in log
    assert "print three" in log
    assert "logging three" in log


def spill_files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.glob(".worker-*.spill"))


def test_silent_job_creates_no_log_file(make_pool: PoolFactory, tmp_path: Path) -> None:
    pool, recorder = make_pool(1)
    pool.submit("silent", pow, (2, 3), tmp_path / "silent.log")
    pool.submit("talks", write_output, ("one",), tmp_path / "talks.log")
    assert recorder.wait("silent").value == 8
    assert recorder.wait("talks").ok

    assert not (tmp_path / "silent.log").exists()
    assert "print one" in (tmp_path / "talks.log").read_text()
    pool.shutdown()
    assert spill_files(tmp_path) == []  # the worker removed its spill file


def test_output_of_running_job_reaches_log(
    make_pool: PoolFactory, tmp_path: Path
) -> None:
    pool, recorder = make_pool(1)
    log_path = tmp_path / "slow.log"
    gate = tmp_path / "gate"
    pool.submit(
        "slow", print_then_wait, ("x", str(gate), str(tmp_path / "done")), log_path
    )

    # The job is still running, blocked on the gate, when its output shows.
    assert "begin x" in wait_for_file(log_path)
    assert "slow" not in recorder.finished
    gate.write_text("open")
    assert recorder.wait("slow").value == "x"
    assert log_path.read_text() == "begin x\nend x\n"


def test_cancelled_job_keeps_its_output(make_pool: PoolFactory, tmp_path: Path) -> None:
    pool, recorder = make_pool(1)
    log_path = tmp_path / "cancelled.log"
    done = tmp_path / "done"
    pool.submit(
        "stuck", print_then_wait, ("y", str(tmp_path / "never"), str(done)), log_path
    )
    wait_for_file(done)
    assert pool.cancel("stuck")
    assert recorder.wait("stuck").cancelled

    pool.submit("after", pow, (3, 2), None)  # served by the replacement worker
    assert recorder.wait("after").value == 9
    assert log_path.read_text() == "begin y\n"
    assert spill_files(tmp_path) == []


def test_dead_worker_output_reaches_log(make_pool: PoolFactory, tmp_path: Path) -> None:
    pool, recorder = make_pool(1)
    log_path = tmp_path / "dies.log"
    pool.submit("dies", print_then_exit, ("z",), log_path)
    outcome = recorder.wait("dies")
    assert outcome.reason == REASON_WORKER_DIED
    assert log_path.read_text() == "last words z\n"
    assert spill_files(tmp_path) == []


def test_job_sent_ahead_can_be_cancelled(
    make_pool: PoolFactory, tmp_path: Path
) -> None:
    pool, recorder = make_pool(1)
    gate = tmp_path / "gate"
    first_done = tmp_path / "first"
    pool.submit("first", print_then_wait, ("a", str(gate), str(first_done)), None)
    pool.submit("ahead", record_interval, (str(tmp_path / "ahead"), 0.0), None)
    pool.submit("third", pow, (2, 4), None)
    wait_for_file(first_done)
    # "ahead" waits in the worker's pipe behind "first" (private state, read only
    # to make sure that this test covers a job sent ahead).
    deadline = time.monotonic() + OUTCOME_TIMEOUT
    while not any(w.ahead for w in list(pool._workers.values())):
        assert time.monotonic() < deadline, "no job was sent ahead"
        time.sleep(0.01)

    assert pool.cancel("ahead")
    assert recorder.wait("ahead").cancelled
    # The pool thread sends the SKIP in its next round. If "first" ended before
    # the worker read it, "ahead" would start and be killed at once, a race that
    # test_attack_two_ahead.py covers. Here it must not start.
    while pool._skips:
        assert time.monotonic() < deadline, "the SKIP was never sent"
        time.sleep(0.001)
    time.sleep(0.05)
    gate.write_text("open")

    assert recorder.wait("first").value == "a"
    assert recorder.wait("third").value == 16
    assert not (tmp_path / "ahead").exists()  # it never ran
    assert "ahead" not in recorder.started
    assert recorder.started["third"] == recorder.started["first"]  # same worker


def test_job_sent_ahead_moves_to_idle_worker(
    make_pool: PoolFactory, tmp_path: Path
) -> None:
    # "long" blocks worker one; "short" keeps worker two busy briefly, so "moved" is
    # sent ahead to one of them. It must run as soon as a worker is free, not wait
    # behind "long".
    pool, recorder = make_pool(2)
    gate = tmp_path / "gate"
    long_started = tmp_path / "long"
    pool.submit("long", print_then_wait, ("l", str(gate), str(long_started)), None)
    wait_for_file(long_started)
    pool.submit("short", sleep_and_return, (0.3, "s"), None)
    pool.submit("moved", pow, (2, 6), None)

    assert recorder.wait("moved").value == 64
    assert "long" not in recorder.finished  # still blocked on its gate
    assert recorder.started["moved"] != recorder.started["long"]
    gate.write_text("open")
    assert recorder.wait("long").value == "l"


def test_exception_traceback_in_log(make_pool: PoolFactory, tmp_path: Path) -> None:
    pool, recorder = make_pool(1)
    log_path = tmp_path / "job.log"
    pool.submit("raises", int, ("not a number",), log_path)
    assert recorder.wait("raises").reason == REASON_EXCEPTION
    assert "ValueError: invalid literal" in log_path.read_text()


def test_log_open_failure(make_pool: PoolFactory, tmp_path: Path) -> None:
    pool, recorder = make_pool(1)
    log_path = tmp_path / "missing-folder" / "job.log"
    pool.submit("nolog", pow, (2, 2), log_path)
    outcome = recorder.wait("nolog")
    assert outcome.reason == REASON_LOG_OPEN_FAILED
    assert outcome.error is not None
    assert "'nolog'" in outcome.error
    assert str(log_path) in outcome.error


# Scheduling


def test_max_concurrency_not_exceeded(make_pool: PoolFactory, tmp_path: Path) -> None:
    pool, recorder = make_pool(2)
    keys = [f"job-{index}" for index in range(6)]
    for key in keys:
        pool.submit(key, record_interval, (str(tmp_path / key), 0.3), None)
    for key in keys:
        assert recorder.wait(key).ok

    events = []
    for key in keys:
        start, end = map(float, (tmp_path / key).read_text().split())
        events.append((start, 1))
        events.append((end, -1))
    running = max_running = 0
    for _, change in sorted(events):
        running += change
        max_running = max(max_running, running)
    assert max_running <= 2
    assert max_running == 2  # the pool does use both workers


def test_queue_is_fifo(make_pool: PoolFactory) -> None:
    pool, recorder = make_pool(1)
    keys = [f"job-{index}" for index in range(8)]
    for key in keys:
        pool.submit(key, pow, (2, 2), None)
    for key in keys:
        recorder.wait(key)
    started = [key for kind, key in recorder.calls if kind == "started"]
    assert started == keys


def test_free_slots(make_pool: PoolFactory) -> None:
    pool, recorder = make_pool(2)
    assert pool.free_slots() == 2
    pool.submit("a", time.sleep, (60,), None)
    assert pool.free_slots() == 1
    pool.submit("b", time.sleep, (60,), None)
    pool.submit("c", time.sleep, (60,), None)
    assert pool.free_slots() == 0
    recorder.wait_started("a")
    recorder.wait_started("b")
    assert set(pool.running()) == {"a", "b"}
    assert pool.cancel("c")
    assert pool.free_slots() == 0
    assert pool.cancel("a")
    assert recorder.wait("a").cancelled
    assert pool.free_slots() == 1


def test_duplicate_key_rejected(make_pool: PoolFactory) -> None:
    pool, recorder = make_pool(1)
    pool.submit("same", time.sleep, (60,), None)
    with pytest.raises(ValueError, match="'same' is already queued or running"):
        pool.submit("same", pow, (2, 2), None)
    pool.cancel("same")
    recorder.wait("same")
    pool.submit("same", pow, (2, 2), None)
    assert recorder.wait("same", count=2).value == 4


def test_job_follows_kernel_directory(
    make_pool: PoolFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool, recorder = make_pool(1)
    monkeypatch.chdir(tmp_path)
    pool.submit("cwd", os.getcwd, (), None)
    assert recorder.wait("cwd").value == str(tmp_path)


def test_job_may_start_processes(make_pool: PoolFactory) -> None:
    pool, recorder = make_pool(1)
    pool.submit("fork", start_forked_child, (), None)
    outcome = recorder.wait("fork")
    assert outcome.ok, outcome.error
    assert outcome.value == 0


def test_callback_error_does_not_stop_pool(caplog: pytest.LogCaptureFixture) -> None:
    finished = threading.Event()
    calls: list[str] = []

    def on_finished(key: str, outcome: WorkOutcome) -> None:
        calls.append(key)
        if key == "first":
            raise RuntimeError("callback failure")
        finished.set()

    def on_started(key: str, pid: int) -> None:
        pass

    pool = WorkerPool(1, on_started=on_started, on_finished=on_finished)
    pool.start()
    try:
        with caplog.at_level(logging.ERROR, logger="jupyter_scenarios.executors.pool"):
            pool.submit("first", pow, (2, 2), None)
            pool.submit("second", pow, (2, 3), None)
            assert finished.wait(OUTCOME_TIMEOUT)
    finally:
        pool.shutdown()
    assert calls == ["first", "second"]
    assert "a WorkerPool callback raised" in caplog.text


EXIT_ON_IMPORT_MODULE = """\
import os
from pathlib import Path

if Path(__file__).with_name("exit-on-import.flag").exists():
    os._exit(7)
"""


def test_worker_start_failure_fails_queue(
    make_pool: PoolFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "exit_on_import.py").write_text(EXIT_ON_IMPORT_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    pool, recorder = make_pool(1, preload=["exit_on_import"])

    # From now on every new worker exits while it imports its preloads.
    (tmp_path / "exit-on-import.flag").touch()
    pool.submit("kills-worker", os._exit, (3,), None)
    pool.submit("queued", pow, (2, 2), None)
    assert recorder.wait("kills-worker").reason == REASON_WORKER_DIED
    outcome = recorder.wait("queued")
    assert outcome.reason == REASON_WORKER_START_FAILED
    assert outcome.error is not None
    assert "'queued'" in outcome.error
    assert "failed to start" in outcome.error
    assert "exited with code 7 before it became ready" in outcome.error
    assert "queued" not in recorder.started

    # The next submit starts workers again.
    (tmp_path / "exit-on-import.flag").unlink()
    pool.submit("retry", pow, (2, 3), None)
    assert recorder.wait("retry").value == 8


def test_start_failure_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "exit_on_import.py").write_text(EXIT_ON_IMPORT_MODULE)
    (tmp_path / "exit-on-import.flag").touch()
    monkeypatch.syspath_prepend(str(tmp_path))
    pool = WorkerPool(
        2,
        on_started=Recorder().on_started,
        on_finished=Recorder().on_finished,
        preload=["exit_on_import"],
    )
    with pytest.raises(RuntimeError, match="exited with code 7 before it became ready"):
        pool.start()
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit("late", pow, (2, 2), None)
    pool.shutdown()


def test_preload_error_logged(
    make_pool: PoolFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="jupyter_scenarios.executors.pool"):
        pool, recorder = make_pool(1, preload=["no_such_module_for_the_pool"])
    assert "could not preload no_such_module_for_the_pool" in caplog.text
    pool.submit("works", pow, (2, 4), None)
    assert recorder.wait("works").value == 16


def test_invalid_arguments() -> None:
    def ignore(*args: Any) -> None:
        pass

    with pytest.raises(ValueError, match="at least 1"):
        WorkerPool(0, on_started=ignore, on_finished=ignore)
    with pytest.raises(ValueError, match="plain fork is unsafe"):
        WorkerPool(1, on_started=ignore, on_finished=ignore, start_method="fork")
    pool = WorkerPool(1, on_started=ignore, on_finished=ignore)
    with pytest.raises(RuntimeError, match="before start"):
        pool.submit("early", pow, (2, 2), None)
    pool.shutdown()


# Shutdown and orphans


def test_shutdown_idempotent_and_cancels(make_pool: PoolFactory) -> None:
    pool, recorder = make_pool(1)
    pool.submit("running", time.sleep, (60,), None)
    pool.submit("queued", pow, (2, 2), None)
    worker_pid = recorder.wait_started("running")

    began = time.monotonic()
    pool.shutdown()
    assert time.monotonic() - began < 5.0
    pool.shutdown()

    for key in ("running", "queued"):
        outcome = recorder.outcome(key)
        assert outcome.cancelled
        assert outcome.reason == REASON_SHUTDOWN
    assert is_gone(worker_pid)
    assert pool.running() == {}
    assert pool.free_slots() == 0
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit("late", pow, (2, 2), None)


def test_shutdown_without_cancel_waits(make_pool: PoolFactory) -> None:
    pool, recorder = make_pool(1)
    pool.submit("first", sleep_and_return, (0.3, 1), None)
    pool.submit("second", sleep_and_return, (0.3, 2), None)
    recorder.wait_started("first")
    pool.shutdown(cancel_running=False, timeout=10.0)
    assert recorder.outcome("first").value == 1
    assert recorder.outcome("second").value == 2


def test_shutdown_timeout_kills(make_pool: PoolFactory) -> None:
    pool, recorder = make_pool(1)
    pool.submit("stuck", time.sleep, (60,), None)
    recorder.wait_started("stuck")
    began = time.monotonic()
    pool.shutdown(cancel_running=False, timeout=0.5)
    assert time.monotonic() - began < 5.0
    outcome = recorder.outcome("stuck")
    assert outcome.cancelled
    assert outcome.reason == REASON_SHUTDOWN


ORPHAN_SCRIPT = """\
import subprocess
import sys
import threading
import time
from pathlib import Path

from jupyter_scenarios.executors.pool import WorkerPool


def spawn_child_and_sleep(pid_file, new_session):
    child = subprocess.Popen(["sleep", "60"], start_new_session=new_session)
    Path(pid_file).write_text(str(child.pid))
    time.sleep(60)


if __name__ == "__main__":
    started = threading.Event()
    pool = WorkerPool(
        2,
        on_started=lambda key, pid: started.set(),
        on_finished=lambda key, outcome: None,
        start_method=sys.argv[2],
    )
    pool.start()
    new_session = sys.argv[3] == "new-session"
    pool.submit("long", spawn_child_and_sleep, (sys.argv[1], new_session), None)
    started.wait(30)
    print("running", flush=True)
    time.sleep(120)
"""


def read_line(process: subprocess.Popen[str], timeout: float) -> str:
    """Read one stdout line of ``process`` or fail after ``timeout`` seconds."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            raise AssertionError(f"no output from process {process.pid} in {timeout} s")
    return process.stdout.readline()


@pytest.mark.parametrize(
    ("start_method", "child"),
    [("forkserver", "child"), ("spawn", "child"), ("forkserver", "new-session")],
)
def test_parent_sigkill_leaves_no_orphans(
    tmp_path: Path, start_method: str, child: str
) -> None:
    script = tmp_path / "parent.py"
    script.write_text(ORPHAN_SCRIPT)
    pid_file = tmp_path / "child.pid"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    parent = subprocess.Popen(
        [sys.executable, str(script), str(pid_file), start_method, child],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    tree: list[psutil.Process] = []
    try:
        assert read_line(parent, OUTCOME_TIMEOUT) == "running\n"
        child_pid = int(wait_for_file(pid_file))
        tree = [*descendants(parent.pid), psutil.Process(child_pid)]
        pids = sorted({process.pid for process in tree})
        # Two workers, the job's child, and multiprocessing's helper processes.
        assert len(pids) >= 3
        parent.kill()
        parent.wait(OUTCOME_TIMEOUT)
        alive = wait_until_gone(pids, ORPHAN_DEADLINE)
        assert alive == [], (
            f"still alive {ORPHAN_DEADLINE} s after the parent was killed: "
            + ", ".join(describe(psutil.Process(pid)) for pid in alive)
        )
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(OUTCOME_TIMEOUT)
        if parent.stdout is not None:
            parent.stdout.close()
        # Survivors are no longer our descendants, so the leak check cannot see them.
        for process in tree:
            if process.is_running():
                process.kill()


KERNEL_CELL = """\
import sys
import threading

sys.path.insert(0, {repo_root!r})
from jupyter_scenarios.executors.pool import WorkerPool

outcomes = {{}}
all_done = threading.Event()


def on_finished(key, outcome):
    outcomes[key] = outcome
    if len(outcomes) == 2:
        all_done.set()


def double(x):
    return 2 * x


pool = WorkerPool(1, on_started=lambda key, pid: None, on_finished=on_finished)
pool.start()
pool.submit("double", double, (21,), None)
pool.submit(
    "modules",
    lambda: sorted(m for m in sys.modules if m.startswith(("IPython", "ipykernel"))),
    (),
    None,
)
finished = all_done.wait(30)
pool.shutdown()
print(finished, outcomes["double"].value, outcomes["modules"].value)
"""


def test_pool_inside_ipython_kernel(kernel: KernelSession) -> None:
    result = kernel.execute(KERNEL_CELL.format(repo_root=str(REPO_ROOT)), timeout=90)
    result.check()
    assert result.stdout.strip() == "True 42 []"
