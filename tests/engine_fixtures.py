"""Fixtures and helpers shared by the engine tests: scheduler, entities, store, workers.

Import what a test module needs explicitly. Each fixture sets its ``name``, so one
imported under another name keeps its own, and tests can request ``engine`` without
shadowing the import::

    from engine_fixtures import engine as engine_fixture  # noqa: F401

Each test that uses ``engine`` gets a fresh storage folder under ``tmp_path``, a reset
``Config`` and, in teardown, a stopped runtime. ``standalone`` does the same with
``mode="standalone"`` and then checks that no worker process outlives the runtime.
Every wait in these helpers has a timeout.
"""

from __future__ import annotations

import linecache
import multiprocessing
import multiprocessing.forkserver
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers.processes import session_owned_pids

import jupyter_scenarios as tp
from jupyter_scenarios import Config, Job
from jupyter_scenarios.entities.scenario import ALL_SCENARIO_SUBSCRIBERS
from jupyter_scenarios.executors import _worker_main

REPO_ROOT = Path(__file__).resolve().parents[1]
TESTS_DIR = Path(__file__).resolve().parent

# Seconds to wait for a job, a submission or a process to reach an expected state.
# Generous because CI machines may have 2 slow cores; no test asserts that anything
# finishes faster than this.
WAIT_SECONDS = 60.0
# Seconds a cancelled worker and its children may take to disappear.
KILL_WAIT_SECONDS = 10.0
# Seconds that the processes of a test get to exit after the runtime stopped, before
# the test fails for leaving them. Longer than KILL_WAIT_SECONDS: one process was
# still there after 10 s once, in a full test run that shared the 2 cores with
# another full run.
LEAK_WAIT_SECONDS = 30.0
# Seconds the runtime gets to stop in teardown.
STOP_SECONDS = 15.0

# Modules that the standalone executor preloads in its workers (see
# executors/standalone.py). The forkserver must start with the same list.
WORKER_PRELOAD = [_worker_main.__name__, "jupyter_scenarios.worker"]


# -- configuration and runtime ---------------------------------------------------------


def _reset_engine(storage: Path) -> None:
    tp.Orchestrator().stop(wait=False)
    Config.unblock_update()
    Config._reset()
    ALL_SCENARIO_SUBSCRIBERS.clear()
    Config.configure_core(storage_folder=str(storage))


@pytest.fixture(name="engine")
def engine(tmp_path: Path) -> Iterator[Path]:
    """Development mode on a fresh storage folder; yields that folder."""
    storage = tmp_path / "store"
    _reset_engine(storage)
    yield storage
    tp.Orchestrator().stop(wait=True, timeout=STOP_SECONDS)
    Config._reset()
    ALL_SCENARIO_SUBSCRIBERS.clear()


@pytest.fixture(name="forkserver_started", scope="module")
def forkserver_started() -> None:
    """Start the interpreter-wide forkserver and resource tracker once per module.

    They live until the interpreter exits. Starting them before any test lets the
    per-test leak checks treat them as already running.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(WORKER_PRELOAD)
    multiprocessing.forkserver.ensure_running()


def child_pids() -> set[int]:
    """Return the pids of this process's live, non-zombie descendants.

    The session's browser and Playwright driver are left out, with their children:
    Chromium starts helper processes of its own at any time, during any test.
    """
    pids = set()
    for process in psutil.Process().children(recursive=True):
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                pids.add(process.pid)
        except psutil.NoSuchProcess:
            pass
    return pids - session_owned_pids()


@pytest.fixture(name="standalone")
def standalone(engine: Path, forkserver_started: None) -> Iterator[Path]:
    """Standalone mode with 2 workers on a fresh storage folder.

    Teardown stops the runtime and asserts that every process started during the
    test (workers and the jobs' children) has exited.
    """
    before = child_pids()
    Config.configure_job_executions(mode="standalone", max_nb_of_workers=2)
    yield engine
    tp.Orchestrator().stop(wait=False)
    leftover = wait_gone(child_pids() - before, LEAK_WAIT_SECONDS)
    assert not leftover, (
        f"processes left after Orchestrator().stop(): {describe_processes(leftover)}"
    )


def describe_processes(pids: Iterable[int]) -> list[str]:
    """Return pid, status, parent and command line of each process, for messages."""
    described = []
    for pid in pids:
        try:
            process = psutil.Process(pid)
            described.append(
                f"{pid} ({process.status()}, parent {process.ppid()}): "
                f"{' '.join(process.cmdline())[:200]}"
            )
        except psutil.Error as error:
            described.append(f"{pid} ({type(error).__name__})")
    return described


def use_workers(count: int) -> None:
    """Switch the job execution settings to standalone with ``count`` workers."""
    Config.configure_job_executions(mode="standalone", max_nb_of_workers=count)


# -- waiting ---------------------------------------------------------------------------


def wait_until(
    predicate: Callable[[], object], timeout: float = WAIT_SECONDS, what: str = ""
) -> None:
    """Poll ``predicate`` every 10 ms until it is true; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def wait_status(job: Job, *statuses: tp.Status, timeout: float = WAIT_SECONDS) -> None:
    """Wait until ``job`` reaches one of ``statuses``."""
    wait_until(
        lambda: job.status in statuses,
        timeout,
        f"{job.id} to reach {[s.name for s in statuses]} (now {job.status.name})",
    )


def is_gone(pid: int) -> bool:
    """Return whether ``pid`` has exited (zombies count as exited)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Wait up to ``timeout`` seconds; return the pids still alive then."""
    deadline = time.monotonic() + timeout
    alive = [pid for pid in pids if not is_gone(pid)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [pid for pid in alive if not is_gone(pid)]
    return alive


def wait_for_file(path: Path, timeout: float = WAIT_SECONDS) -> str:
    """Return the text of ``path`` once it exists and is not empty."""
    wait_until(
        lambda: path.exists() and path.read_text().strip() != "",
        timeout,
        f"{path} to be written",
    )
    return path.read_text()


# -- job intervals ---------------------------------------------------------------------


def running_interval(job: Job) -> tuple[datetime, datetime]:
    """Return when ``job`` started and stopped RUNNING, from its status history."""
    assert job.run_at is not None, f"{job.id} never ran"
    assert job.finished_at is not None, f"{job.id} is not finished"
    return job.run_at, job.finished_at


def max_overlap(intervals: Iterable[tuple[Any, Any]]) -> int:
    """Return the maximum number of half-open intervals that overlap at one instant."""
    points = []
    for start, end in intervals:
        points.append((start, 1))
        points.append((end, -1))
    # At equal instants an end sorts before a start, so touching intervals do not
    # count as overlapping.
    points.sort(key=lambda point: (point[0], point[1]))
    current = highest = 0
    for _, step in points:
        current += step
        highest = max(highest, current)
    return highest


# -- notebook-style code and subprocesses ---------------------------------------------


def main_namespace(source: str, cell_file: str | None = None) -> dict[str, Any]:
    """Execute ``source`` like a notebook cell, in a namespace named ``__main__``.

    With ``cell_file``, the code is compiled under that file name and its lines are
    put in ``linecache``, as IPython does for each cell, so tracebacks in this
    process can show them.
    """
    code = textwrap.dedent(source)
    if cell_file is not None:
        linecache.cache[cell_file] = (len(code), None, code.splitlines(True), cell_file)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    compiled = compile(code, cell_file or "<string>", "exec")
    exec(compiled, namespace)  # noqa: S102 - test input
    return namespace


def run_python(
    source: str, *, timeout: float = WAIT_SECONDS, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run ``source`` in a fresh interpreter with the repository importable."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT), str(TESTS_DIR), environment.get("PYTHONPATH", "")]
    )
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        cwd=str(REPO_ROOT),
        check=False,
    )
    if check and completed.returncode != 0:
        raise AssertionError(
            f"subprocess exited with {completed.returncode}\n"
            f"stdout:\n{completed.stdout}\nstderr:\n{completed.stderr}"
        )
    return completed


def start_python(source: str, log: Path) -> subprocess.Popen[bytes]:
    """Start ``source`` in a fresh interpreter; its output goes to ``log``."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT), str(TESTS_DIR), environment.get("PYTHONPATH", "")]
    )
    with open(log, "wb") as output:
        return subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(source)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=str(REPO_ROOT),
        )


def gate_task_source() -> str:
    """Return notebook-style code defining ``wait_for_gate(path)``.

    The function blocks until the file ``path`` exists (at most 120 s), so a test
    controls when a worker's job ends.
    """
    return """
        import os, time

        def wait_for_gate(path):
            deadline = time.monotonic() + 120
            while not os.path.exists(path):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"gate {path} was never opened")
                time.sleep(0.01)
            return path
    """


def job_of(submission: tp.Submission, task_config_id: str) -> tp.Job:
    """Return the one job of ``submission`` that runs task ``task_config_id``."""
    [job] = [job for job in submission.jobs if job.task_config_id == task_config_id]
    return job


def wait_for_gate(path: str) -> str:
    """Wait until the file ``path`` exists, at most 120 s: the test decides when."""
    deadline = time.monotonic() + 120
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {path} was never opened")
        time.sleep(0.01)
    return path


def double(value: int) -> int:
    return 2 * value


def double_config(name: str = "doubling", function: Any = double) -> Any:
    """``number -> double -> doubled``: one job that ends at once."""
    number = Config.configure_data_node(f"{name}_number", default_data=21)
    doubled = Config.configure_data_node(f"{name}_doubled")
    task = Config.configure_task(f"{name}_double", function, number, doubled)
    return Config.configure_scenario(name, [task])


def single_gate_config(gate: Path) -> Any:
    """``gate_path -> wait -> waited``: one job that ends once the file ``gate`` exists."""
    gate_path = Config.configure_data_node("gate_path", default_data=str(gate))
    waited = Config.configure_data_node("waited")
    task = Config.configure_task("wait", wait_for_gate, gate_path, waited)
    return Config.configure_scenario("gated", [task])


def open_in_subprocess(folder: Path, body: str) -> str:
    """Run ``body`` in a fresh interpreter whose runtime uses ``folder``."""
    source = f"""
import json
import jupyter_scenarios as tp
from jupyter_scenarios import Config
Config.configure_core(storage_folder={str(folder)!r})
{body}
tp.Orchestrator().stop()
"""
    return run_python(source).stdout


def start_gated_kernel(
    folder: Path, gate: Path, marker: Path, log: Path, then: str
) -> subprocess.Popen[bytes]:
    """Start a kernel on ``folder`` that submits ``single_gate_config(gate)``.

    It runs one worker, writes its job's id to ``marker`` and then runs ``then``,
    where ``submission`` is its submission.
    """
    return start_python(
        f"""
import jupyter_scenarios as tp
from jupyter_scenarios import Config
from engine_fixtures import single_gate_config
Config.configure_core(storage_folder={str(folder)!r})
Config.configure_job_executions(mode="standalone", max_nb_of_workers=1)
submission = tp.create_scenario(single_gate_config({str(gate)!r})).submit()
open({str(marker)!r}, "w").write(submission.jobs[0].id)
{then}
""",
        log,
    )


def add(left: int, right: int) -> int:
    return left + right


def stuck_config() -> Any:
    """``source -> first -> middle``, then ``[middle, unwritten] -> second -> result``.

    No task writes ``unwritten``, so the job of ``second`` stays BLOCKED until a
    person writes it.
    """
    source = Config.configure_data_node("source", default_data=1)
    middle = Config.configure_data_node("middle")
    unwritten = Config.configure_data_node("unwritten")
    result = Config.configure_data_node("result")
    first = Config.configure_task("first", double, source, middle)
    second = Config.configure_task("second", add, [middle, unwritten], result)
    return Config.configure_scenario("stuck", [first, second])
