# ruff: noqa: F811 - tests take the imported make_pool fixture as a parameter
"""Adversarial tests of WorkerPool.cancel: CANCEL sent to the worker, forced kills."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import pytest
from engine_fixtures import WAIT_SECONDS, use_workers, wait_status, wait_until
from engine_fixtures import engine as engine_fixture  # noqa: F401 - fixture
from engine_fixtures import forkserver_started as forkserver_fixture  # noqa: F401
from engine_fixtures import standalone as standalone_fixture  # noqa: F401 - fixture
from test_pool import (  # noqa: F401 - the fixtures are used by name
    OUTCOME_TIMEOUT,
    PoolFactory,
    Recorder,
    is_gone,
    make_pool,
    multiprocessing_helpers,
    no_leftover_workers_or_threads,
    wait_until_gone,
)

import jupyter_scenarios as tp
from jupyter_scenarios import Config, Status
from jupyter_scenarios.executors.pool import WorkerPool

pytestmark = pytest.mark.timeout(120)


# Job functions


def sleep_then_return(seconds: float, value: object) -> object:
    time.sleep(seconds)
    return value


def spawn_setsid_loop(pid_file: str, token: str) -> None:
    """Start ``sleep`` processes in their own session in a loop, and count them."""
    script = f"while :; do setsid sleep {token} & echo $! >> {pid_file}; done"
    subprocess.Popen(["sh", "-c", script])
    time.sleep(60)


def processes_with_arg(token: str) -> list[int]:
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = process.info["cmdline"] or []
        if token in cmdline and process.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(process.pid)
    return found


def mark_run(marker: str, key: str, seconds: float) -> str:
    with open(marker, "a") as file:
        file.write(f"start {key} {os.getpid()}\n")
    if seconds:
        time.sleep(seconds)
    with open(marker, "a") as file:
        file.write(f"end {key} {os.getpid()}\n")
    return key


def hold_gil(seconds: int) -> str:
    import ctypes

    ctypes.PyDLL(None).sleep(seconds)
    return "held"


def exit_now(code: int) -> None:
    os._exit(code)


# Shutdown without cancel right after a cancel


def test_shutdown_after_cancel_keeps_queued_job(make_pool: PoolFactory) -> None:
    pool, recorder = make_pool(1)
    pool.submit("running", sleep_then_return, (30, "r"), None)
    recorder.wait_started("running")
    time.sleep(0.2)  # past _AHEAD_MAX_RUNNING, so "queued" stays in the queue
    pool.submit("queued", sleep_then_return, (0.1, "q"), None)
    assert pool.cancel("running")
    pool.shutdown(cancel_running=False, timeout=3.0)
    assert recorder.wait("running", timeout=5).cancelled
    finished = recorder.finished.get("queued", [])
    assert len(finished) == 1, f"on_finished calls for 'queued': {finished}"


# Process trees that keep forking


def test_cancel_kills_setsid_fork_loop(make_pool: PoolFactory, tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    token = f"{random.randint(100, 999)}.{os.getpid()}"  # unique sleep argument
    pool, recorder = make_pool(1)
    pool.submit("forker", spawn_setsid_loop, (str(pid_file), token), None)
    recorder.wait_started("forker")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if pid_file.exists() and len(pid_file.read_text().split()) > 150:
            break
        time.sleep(0.01)
    assert pool.cancel("forker")
    assert recorder.wait("forker", timeout=10).cancelled
    time.sleep(1.0)
    started = len(pid_file.read_text().split())
    alive = processes_with_arg(token)
    for pid in alive:
        os.kill(pid, signal.SIGKILL)  # started by this test
    assert alive == [], f"{len(alive)} of about {started} setsid children survived"


# Cancel storms


def run_storm(
    pool: WorkerPool, recorder: Recorder, marker: Path, seed: int, jobs: int
) -> tuple[set[str], set[str]]:
    """Submit short jobs and cancel a random third of them at random moments.

    Returns the keys that were cancelled and the keys of jobs that kill their worker.
    """
    rng = random.Random(seed)
    cancelled: set[str] = set()
    dying: set[str] = set()
    keys = []
    for index in range(jobs):
        key = f"job-{index}"
        keys.append(key)
        choice = rng.random()
        if choice < 0.05:
            dying.add(key)
            pool.submit(key, exit_now, (9,), None)
        else:
            seconds = rng.choice([0.0, 0.0, 0.001, 0.01, 0.03, 0.06])
            pool.submit(key, mark_run, (str(marker), key, seconds), None)
        if rng.random() < 0.5:
            time.sleep(rng.choice([0.0, 0.001, 0.005, 0.02]))
        if rng.random() < 0.35:
            target = rng.choice(keys[-4:])
            if target not in dying:
                pool.cancel(target)
                cancelled.add(target)
                if rng.random() < 0.3:
                    pool.cancel(target)  # the same key twice
    for key in keys:
        recorder.wait(key, timeout=OUTCOME_TIMEOUT)
    return cancelled, dying


def marker_counts(marker: Path) -> tuple[dict[str, int], dict[str, int]]:
    starts: dict[str, int] = {}
    ends: dict[str, int] = {}
    if not marker.exists():
        return starts, ends
    for line in marker.read_text().splitlines():
        kind, key, _ = line.split()
        table = starts if kind == "start" else ends
        table[key] = table.get(key, 0) + 1
    return starts, ends


@pytest.mark.parametrize("seed", range(6))
def test_cancel_storm_invariants(
    make_pool: PoolFactory, tmp_path: Path, seed: int
) -> None:
    marker = tmp_path / "runs"
    pool, recorder = make_pool(2)
    cancelled, dying = run_storm(pool, recorder, marker, seed, 80)
    time.sleep(0.3)
    _starts, ends = marker_counts(marker)
    problems = []
    for key, outcomes in recorder.finished.items():
        if len(outcomes) != 1:
            problems.append(f"{key}: {len(outcomes)} on_finished calls")
            continue
        outcome = outcomes[0]
        if ends.get(key, 0) > 1:
            problems.append(f"{key}: ran to the end {ends[key]} times")
        if key in dying:
            continue
        if key not in cancelled and not outcome.ok:
            problems.append(f"{key}: not cancelled but {outcome.reason}")
        if outcome.ok and ends.get(key, 0) != 1:
            problems.append(f"{key}: completed but {ends.get(key, 0)} end markers")
        if outcome.cancelled and ends.get(key, 0) and key not in cancelled:
            problems.append(f"{key}: cancelled without request")
    assert problems == [], "\n".join(problems)


# A job holding the interpreter lock that ends near the forced kill


def hold_gil_ms(milliseconds: int) -> str:
    import ctypes

    ctypes.PyDLL(None).usleep(milliseconds * 1000)
    return "held"


def print_lines_and_sleep(key: str, seconds: float) -> str:
    print(f"begin {key}", flush=True)
    time.sleep(seconds)
    print(f"end {key}", flush=True)
    return key


@pytest.mark.parametrize("hold_ms", [380, 440, 470, 490, 500, 510, 530, 560])
def test_gil_job_ending_near_force_kill(
    make_pool: PoolFactory, tmp_path: Path, hold_ms: int
) -> None:
    pool, recorder = make_pool(1)
    log_a = tmp_path / "a.log"
    log_b = tmp_path / "b.log"
    pool.submit("a", hold_gil_ms, (hold_ms,), log_a)
    pool.submit("b", print_lines_and_sleep, ("b", 0.3), log_b)
    recorder.wait_started("a")
    time.sleep(0.01)
    assert pool.cancel("a")
    outcome_a = recorder.wait("a", timeout=10)
    outcome_b = recorder.wait("b", timeout=10)
    time.sleep(0.3)
    assert len(recorder.finished["a"]) == 1
    assert len(recorder.finished["b"]) == 1
    assert outcome_b.ok, outcome_b
    text_b = log_b.read_text() if log_b.exists() else ""
    assert text_b.count("begin b") == 1, f"log of b: {text_b!r} (a: {outcome_a.reason})"
    assert text_b.count("end b") == 1, f"log of b: {text_b!r} (a: {outcome_a.reason})"


def exit_after(seconds: float) -> None:
    time.sleep(seconds)
    os._exit(4)


def test_shutdown_after_worker_death_keeps_queued_job(make_pool: PoolFactory) -> None:
    pool, recorder = make_pool(1)
    pool.submit("dying", exit_after, (0.5,), None)
    recorder.wait_started("dying")
    time.sleep(0.2)
    pool.submit("queued", sleep_then_return, (0.1, "q"), None)
    pool.shutdown(cancel_running=False, timeout=3.0)
    recorder.wait("dying", timeout=5)
    finished = recorder.finished.get("queued", [])
    assert len(finished) == 1, f"on_finished calls for 'queued': {finished}"


# Engine level, standalone mode


def started_marker(pid: int) -> Path:
    """Return the file that a job running in worker ``pid`` creates once it printed."""
    return Path(tempfile.gettempdir()) / f"jupyter-scenarios-printed-{pid}"


def print_and_sleep(seconds: float) -> float:
    print("engine job started", flush=True)
    started_marker(os.getpid()).touch()
    time.sleep(seconds)
    return seconds


def print_and_hold_gil(seconds: float) -> float:
    import ctypes

    print("gil job started", flush=True)
    started_marker(os.getpid()).touch()
    ctypes.PyDLL(None).sleep(int(seconds))
    return seconds


def wait_printed(job: tp.Job) -> None:
    # RUNNING is stored when the worker takes the job, before it loads the task
    # function, which on a slow machine took longer than a fixed sleep.
    wait_status(job, Status.RUNNING)
    assert job.worker_pid is not None
    marker = started_marker(job.worker_pid)
    wait_until(marker.exists, WAIT_SECONDS, f"job {job.id} to print")
    marker.unlink()


def single_task(name: str, function: object, default: object) -> object:
    source = Config.configure_data_node(f"{name}_in", default_data=default)
    target = Config.configure_data_node(f"{name}_out")
    task = Config.configure_task(name, function, source, target)
    return Config.configure_scenario(f"{name}_scenario", [task])


@pytest.mark.parametrize("wait", [True, False])
@pytest.mark.parametrize("delay", [0.0, 0.01])
def test_engine_stop_right_after_cancel(
    standalone: Path, delay: float, wait: bool
) -> None:
    use_workers(1)
    long_config = single_task("ps", print_and_sleep, 30.0)
    short_config = single_task("short", print_and_sleep, 0.2)
    first = tp.create_scenario(long_config).submit()
    second = tp.create_scenario(short_config).submit()
    job = first.jobs[0]
    wait_printed(job)
    tp.cancel_job(job)
    time.sleep(delay)
    began = time.monotonic()
    tp.Orchestrator().stop(wait=wait, timeout=10)
    stopped_in = time.monotonic() - began
    assert first.wait(5.0), job.status
    assert second.wait(5.0), second.jobs[0].status
    assert job.status is Status.CANCELED, job.status
    expected = Status.COMPLETED if wait else Status.CANCELED
    assert second.jobs[0].status is expected, second.jobs[0].status
    assert "engine job started" in job.logs, repr(job.logs)
    assert stopped_in < 5.0, stopped_in


def test_engine_cancel_gil_holder_twice(standalone: Path) -> None:
    use_workers(2)
    config = single_task("gil", print_and_hold_gil, 20)
    submission = tp.create_scenario(config).submit()
    job = submission.jobs[0]
    wait_printed(job)
    began = time.monotonic()
    tp.cancel_job(job)
    tp.cancel_job(job)
    wait_status(job, Status.CANCELED, timeout=10)
    took = time.monotonic() - began
    assert took < 2.0, took
    assert "gil job started" in job.logs, repr(job.logs)


def mark_then_hold_gil(marker: str, key: str, milliseconds: int) -> str:
    import ctypes

    with open(marker, "a") as file:
        file.write(f"start {key} {os.getpid()}\n")
    ctypes.PyDLL(None).usleep(milliseconds * 1000)
    with open(marker, "a") as file:
        file.write(f"end {key} {os.getpid()}\n")
    return key


@pytest.mark.parametrize("seed", range(3))
def test_storm_with_gil_and_outside_kills(
    make_pool: PoolFactory, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    marker = tmp_path / "runs"
    pool, recorder = make_pool(2)
    cancelled: set[str] = set()
    killed: set[str] = set()
    keys = []

    for index in range(40):
        key = f"g-{index}"
        keys.append(key)
        if rng.random() < 0.4:
            milliseconds = rng.choice([5, 100, 600])
            pool.submit(key, mark_then_hold_gil, (str(marker), key, milliseconds), None)
        else:
            pool.submit(
                key, mark_run, (str(marker), key, rng.choice([0.0, 0.02])), None
            )
        time.sleep(rng.choice([0.0, 0.01, 0.05]))

        roll = rng.random()
        if roll < 0.3:
            target = rng.choice(keys[-3:])
            pool.cancel(target)
            cancelled.add(target)
        elif roll < 0.4:
            running = pool.running()
            if running:
                _victim, pid = rng.choice(sorted(running.items()))
                killed.update(running)  # a pid may already run the next job
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    for key in keys:
        recorder.wait(key, timeout=OUTCOME_TIMEOUT)
    time.sleep(0.3)

    _starts, ends = marker_counts(marker)
    problems = []
    for key in keys:
        outcomes = recorder.finished[key]
        if len(outcomes) != 1:
            problems.append(f"{key}: {len(outcomes)} on_finished calls")
            continue
        if ends.get(key, 0) > 1:
            problems.append(f"{key}: ran to the end {ends[key]} times")
        outcome = outcomes[0]
        if key not in cancelled and key not in killed and not outcome.ok:
            problems.append(f"{key}: neither cancelled nor killed but {outcome.reason}")
    assert problems == [], "\n".join(problems)
