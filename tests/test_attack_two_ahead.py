# ruff: noqa: F811 - tests take the imported make_pool fixture as a parameter
"""Adversarial tests of WorkerPool with two jobs sent ahead to each worker.

They aim at the worker that is killed for starting a withdrawn job (its jobs stay
unsettled until it exits), at STEAL racing with the worker's next start, at the
50 ms steal deadline and at shutdown. Job functions live at module level so that
workers import them by reference.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from engine_fixtures import engine as engine_fixture  # noqa: F401 - fixture
from engine_fixtures import forkserver_started as forkserver_fixture  # noqa: F401
from engine_fixtures import standalone as standalone_fixture  # noqa: F401 - fixture
from test_attack_pool import make_blocking_pool, submit_together
from test_pool import (  # noqa: F401 - the fixtures are used by name
    OUTCOME_TIMEOUT,
    PoolFactory,
    Recorder,
    make_pool,
    multiprocessing_helpers,
    no_leftover_workers_or_threads,
    wait_for_file,
)

from jupyter_scenarios.executors import pool as pool_module
from jupyter_scenarios.executors.pool import WorkerPool

pytestmark = pytest.mark.timeout(120)


# Job functions


def record_and_print(marker: str, text: str, seconds: float = 0.0) -> str:
    """Append this worker's pid to ``marker``, print ``text``, then sleep.

    Sleeps only on the first run, so that a run after a kill ends at once.
    """
    first_run = not os.path.exists(marker)
    with open(marker, "a") as file:
        file.write(f"{os.getpid()}\n")
    print(text, flush=True)
    if first_run and seconds:
        time.sleep(seconds)
    return text


def delay_returned(key: str, seconds: float) -> int:
    """Make this worker's reader thread pause before it sends RETURNED for ``key``.

    The pause imitates the reader thread losing the CPU (or the interpreter
    lock) between taking the job out of its inbox and sending RETURNED, which
    can happen at any bytecode. Returns the worker's pid.
    """
    from jupyter_scenarios.executors import _worker_main

    original = _worker_main._send

    def delayed_send(conn, lock, message, raw=None):  # type: ignore[no-untyped-def]
        if message[0] == _worker_main.RETURNED and message[1] == key:
            time.sleep(seconds)
        original(conn, lock, message, raw)

    _worker_main._send = delayed_send
    time.sleep(0.2)  # so that the other worker takes the other copy of this job
    return os.getpid()


def mark_run(folder: str, key: str, seconds: float, death: str) -> str:
    """Write a start marker, sleep, maybe die, then write an end marker.

    Markers hold ``pid time`` lines, so a test can count the runs of a job and
    see when each one started and ended.
    """
    with open(os.path.join(folder, key + ".start"), "a") as file:
        file.write(f"{os.getpid()} {time.time()}\n")
    if seconds:
        time.sleep(seconds)
    if death == "exit":
        os._exit(7)
    with open(os.path.join(folder, key + ".end"), "a") as file:
        file.write(f"{os.getpid()} {time.time()}\n")
    return key


def warm_up(pool: WorkerPool, recorder: Recorder, tmp_path: Path, count: int) -> None:
    """Run one job of this module on each of ``count`` workers.

    A worker imports this module, and the test modules that it imports, on its
    first job of it, which can take longer than the windows these tests set up.
    """
    for index in range(count):
        marker = str(tmp_path / f"warm-{index}")
        pool.submit(f"warm-{index}", record_and_print, (marker, "", 0.2), None)
    for index in range(count):
        assert recorder.wait(f"warm-{index}").ok


def read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# A job that ends after its worker was killed for a withdrawn start


def test_settled_job_reported_started(tmp_path: Path) -> None:
    # Same set-up as test_job_done_before_kill_runs_once: "after" runs to its end
    # on a worker that is then killed because it started "cancelled", and its DONE
    # counts. The pool's contract is that on_started comes before on_finished for
    # every job that reached a worker, so "after" must get on_started too.
    pool, recorder = make_blocking_pool(1, {"first": 1.5}, {})
    try:
        warm_up(pool, recorder, tmp_path, 1)
        submit_together(
            pool,
            {
                "first": (pow, (2, 3)),
                "cancelled": (record_and_print, (str(tmp_path / "c"), "c")),
                "after": (record_and_print, (str(tmp_path / "after"), "a")),
            },
        )
        wait_for_file(tmp_path / "after")
        assert pool.cancel("cancelled")
        after = recorder.wait("after")
        assert after.ok, (after.reason, after.error)
        assert len(read_lines(tmp_path / "after")) == 1
    finally:
        pool.shutdown(timeout=5.0)
    assert "after" in recorder.started, "on_finished of 'after' came without on_started"


def test_withdrawn_kill_output_stays_with_job(tmp_path: Path) -> None:
    # The pool thread is held in the callback of "first" starting while the worker
    # runs "first", then "withdrawn" (sent ahead, then cancelled) to its end, then
    # starts "after", which prints a line and sleeps. When the pool reads that
    # "withdrawn" started, it sends CANCEL for it, which the worker ignores since
    # it runs "after" by then. So "after" runs once, and its line must not reach
    # the log of "withdrawn". after.log exists already, so the output of "after"
    # stays in the worker's spill file until the job ends.
    log_withdrawn = tmp_path / "withdrawn.log"
    log_after = tmp_path / "after.log"
    log_after.write_text("")
    pool, recorder = make_blocking_pool(1, {"first": 1.0}, {})

    try:
        warm_up(pool, recorder, tmp_path, 1)
        submit_together(
            pool,
            {
                "first": (pow, (2, 3)),
                "withdrawn": (
                    record_and_print,
                    (str(tmp_path / "withdrawn"), "withdrawn-line"),
                ),
                "after": (
                    record_and_print,
                    (str(tmp_path / "after"), "after-line", 3.0),
                ),
            },
            {"withdrawn": log_withdrawn, "after": log_after},
        )
        wait_for_file(tmp_path / "after")

        assert pool.cancel("withdrawn")
        assert recorder.wait("withdrawn").cancelled
        assert recorder.wait("first").ok
        after = recorder.wait("after")
        assert after.ok, (after.reason, after.error)
    finally:
        pool.shutdown(timeout=5.0)

    assert len(read_lines(tmp_path / "after")) == 1, "'after' was killed and run again"
    withdrawn_text = log_withdrawn.read_text()
    assert "after-line" not in withdrawn_text, f"withdrawn.log: {withdrawn_text!r}"
    assert log_after.read_text() == "after-line\n"


# STEAL of the first job sent ahead while the worker starts the second one


def test_steal_racing_next_start_keeps_worker(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Worker A runs "run" with "x" sent ahead while worker B runs "quick". The
    # pool thread is held in the callback of "run" starting until "quick" has
    # ended and "q1", "q2", "q3" are queued. The next round then sends "q1" to B,
    # which is idle, "q2" ahead to B, "q3" ahead to A (A's job has run for less
    # than 50 ms), and then STEAL "x" to A for the idle B. A's reader thread takes
    # "x" out of its inbox and is paused before it sends RETURNED. Meanwhile "run"
    # ends and A starts "q3", its next job, and reports that in DONE. Nothing went
    # wrong, yet the pool reads a start of "q3" while it still expects "x" first.
    # The jobs sent ahead are kept for up to 1 s instead of 50 ms, so that "run"
    # is young enough in that round on a loaded machine. The race is the same.
    monkeypatch.setattr(pool_module, "_AHEAD_MAX_RUNNING", 1.0)
    pool, recorder = make_blocking_pool(2, {"run": 0.3}, {})
    try:
        caplog.set_level(logging.DEBUG, logger="jupyter_scenarios.executors.pool")
        pool.submit("patch-0", delay_returned, ("x", 0.8), None)
        pool.submit("patch-1", delay_returned, ("x", 0.8), None)
        patched = {recorder.wait(f"patch-{i}").value for i in range(2)}
        assert len(patched) == 2, "both workers must take one copy of the patch"

        # One call, so that the pool thread sends all three in one round.
        calls = {
            "run": (mark_run, (str(tmp_path), "run", 0.6, "none")),
            "quick": (pow, (2, 3)),
            "x": (mark_run, (str(tmp_path), "x", 0.0, "none")),
        }
        pool.submit_pickled_many(
            [
                (key, cloudpickle.dumps(call), None, os.getcwd(), tuple(sys.path))
                for key, call in calls.items()
            ]
        )
        recorder.wait_started("run")
        for key in ("q1", "q2"):
            pool.submit(key, mark_run, (str(tmp_path), key, 0.0, "none"), None)
        pool.submit("q3", mark_run, (str(tmp_path), "q3", 0.3, "none"), None)
        for key in ("run", "quick", "x", "q1", "q2", "q3"):
            outcome = recorder.wait(key)
            assert outcome.ok, (key, outcome.reason, outcome.error)
    finally:
        pool.shutdown(timeout=5.0)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors
    q3_starts = read_lines(tmp_path / "q3.start")
    assert len(q3_starts) == 1, f"q3 started {len(q3_starts)} times: {q3_starts}"


# Deadlines


def test_shutdown_without_cancel_does_not_spin(make_pool: PoolFactory) -> None:
    # Two workers each run a job of 0.6 s with two jobs sent ahead. shutdown()
    # lets them finish, and steals stop during shutdown. The pool thread should
    # sleep in poll meanwhile, not wake at once again and again on the deadline of
    # a steal that never comes.
    pool, recorder = make_pool(2)
    keys = [f"job{i}" for i in range(6)]
    for key in keys:
        pool.submit(key, time.sleep, (0.6,), None)
    cpu_before = time.process_time()
    wall_before = time.monotonic()
    pool.shutdown(cancel_running=False, timeout=20.0)
    cpu = time.process_time() - cpu_before
    wall = time.monotonic() - wall_before
    for key in keys:
        assert recorder.outcome(key).ok, recorder.outcome(key)
    assert cpu < 0.25 * wall, f"used {cpu:.2f} s of CPU in {wall:.2f} s of shutdown"


def test_steal_deadline_with_two_long_jobs(
    make_pool: PoolFactory, tmp_path: Path
) -> None:
    # Both workers run long jobs, each with two jobs sent ahead. Taking those back
    # after 50 ms helps nothing, because no worker is free. They must still all
    # run once, and the pool thread must not spin while it waits.
    pool, recorder = make_pool(2)
    keys = ["long0", "long1", *[f"short{i}" for i in range(4)]]
    for key in keys:
        seconds = 0.8 if key.startswith("long") else 0.0
        pool.submit(key, mark_run, (str(tmp_path), key, seconds, "none"), None)
    cpu_before = time.process_time()
    for key in keys:
        assert recorder.wait(key).ok, key
    cpu = time.process_time() - cpu_before
    for key in keys:
        assert len(read_lines(tmp_path / f"{key}.start")) == 1, key
    assert cpu < 0.4, f"used {cpu:.2f} s of CPU while two long jobs ran"


# Random storms


def check_storm(
    recorder: Recorder,
    keys: list[str],
    folder: Path,
    reported_at: dict[str, float],
) -> list[str]:
    """Return the broken invariants of a storm, one line each."""
    problems = []
    for key in keys:
        outcomes = recorder.finished.get(key, [])
        if len(outcomes) != 1:
            problems.append(f"{key}: {len(outcomes)} on_finished calls")
            continue
        outcome = outcomes[0]
        ends = read_lines(folder / f"{key}.end")
        if len(ends) > 1:
            problems.append(f"{key}: ran to its end {len(ends)} times: {ends}")
        if outcome.ok and key not in recorder.started:
            problems.append(f"{key}: ok without on_started")
        if outcome.ok and len(ends) != 1:
            problems.append(f"{key}: ok with {len(ends)} end markers")
        if outcome.cancelled:
            late = [e for e in ends if float(e.split()[1]) > reported_at[key] + 0.05]
            if late:
                problems.append(f"{key}: ran to its end after its cancel: {late}")
    return problems


def first_start(folder: Path, key: str) -> float | None:
    starts = read_lines(folder / f"{key}.start")
    return float(starts[0].split()[1]) if starts else None


def record_report_times(pool: WorkerPool, recorder: Recorder) -> dict[str, float]:
    """Return a dict that gets the time.time() of each job's on_finished call."""
    reported_at: dict[str, float] = {}
    original = recorder.on_finished

    def on_finished(key: str, outcome: Any) -> None:
        reported_at[key] = time.time()
        original(key, outcome)

    pool._on_finished = on_finished
    return reported_at


@pytest.mark.parametrize(
    ("workers", "seed"), [(1, 0), (1, 1), (1, 2), (2, 3), (2, 4), (2, 5)]
)
def test_two_ahead_storm(
    make_pool: PoolFactory, tmp_path: Path, workers: int, seed: int
) -> None:
    rng = random.Random(seed)
    pool, recorder = make_pool(workers)
    reported_at = record_report_times(pool, recorder)
    keys = [f"job-{i:03d}" for i in range(120)]
    cancelled: set[str] = set()
    for index, key in enumerate(keys):
        seconds = rng.choice([0.0, 0.0, 0.0, 0.001, 0.005, 0.02, 0.08])
        death = "exit" if rng.random() < 0.04 else "none"
        pool.submit(key, mark_run, (str(tmp_path), key, seconds, death), None)
        roll = rng.random()
        if roll < 0.25:
            victim = rng.choice(keys[max(0, index - 4) : index + 1])
            if pool.cancel(victim):
                cancelled.add(victim)
        elif roll < 0.28:
            running = pool.running()
            if running:
                # The worker may have exited since running() returned.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(rng.choice(list(running.values())), signal.SIGKILL)
        if rng.random() < 0.3:
            time.sleep(rng.choice([0.0005, 0.002, 0.01, 0.03]))
    for key in keys:
        recorder.wait(key)
    time.sleep(0.3)
    problems = check_storm(recorder, keys, tmp_path, reported_at)
    if workers == 1:
        # Jobs start in submit order on a single worker.
        starts = [(first_start(tmp_path, key), key) for key in keys]
        ran = [(start, key) for start, key in starts if start is not None]
        for (start_a, key_a), (start_b, key_b) in itertools.pairwise(ran):
            if start_b < start_a:
                problems.append(f"{key_b} started before {key_a}")
    assert not problems, problems


@pytest.mark.parametrize(
    ("workers", "seed"), [(1, 10), (1, 11), (2, 12), (2, 13), (2, 14)]
)
def test_cancel_at_start_storm(
    make_pool: PoolFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    workers: int,
    seed: int,
) -> None:
    # Batches of tiny jobs, with cancels aimed at jobs of the batch that are about
    # to start, so that many cancels race with a start of a job sent ahead.
    caplog.set_level(logging.DEBUG, logger="jupyter_scenarios.executors.pool")
    rng = random.Random(seed)
    pool, recorder = make_pool(workers)
    reported_at = record_report_times(pool, recorder)
    keys: list[str] = []
    deadline = time.monotonic() + 12.0
    batch = 0
    while time.monotonic() < deadline and batch < 60:
        names = [f"b{batch:02d}-{i}" for i in range(6)]
        keys.extend(names)
        head = rng.uniform(0.005, 0.03)
        for index, name in enumerate(names):
            seconds = head if index == 0 else rng.choice([0.0, 0.001, 0.002])
            pool.submit(name, mark_run, (str(tmp_path), name, seconds, "none"), None)
        # The jobs sent ahead start when the head of the batch ends.
        time.sleep(max(0.0, head + rng.uniform(-0.004, 0.004)))
        for name in rng.sample(names[1:4], 2):
            pool.cancel(name)
        for name in names:
            recorder.wait(name)
        batch += 1
    for key in keys:
        recorder.wait(key)
    time.sleep(0.3)
    problems = check_storm(recorder, keys, tmp_path, reported_at)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    problems.extend(errors)
    withdrawn_kills = sum(
        "started withdrawn job" in r.getMessage() for r in caplog.records
    )
    print(f"{withdrawn_kills} workers killed for starting a withdrawn job")
    assert not problems, problems


# Engine level


def diamond_step(name: str, *inputs: tuple[str, str]) -> tuple[str, str]:
    folder, tag = inputs[0]
    with open(os.path.join(folder, f"{tag}-{name}"), "a") as handle:
        handle.write(f"{os.getpid()}\n")
    time.sleep(random.choice([0.0, 0.001, 0.01]))
    return folder, tag


def diamond_top(data: tuple[str, str]) -> tuple[str, str]:
    return diamond_step("top", data)


def diamond_left(data: tuple[str, str]) -> tuple[str, str]:
    return diamond_step("left", data)


def diamond_right(data: tuple[str, str]) -> tuple[str, str]:
    return diamond_step("right", data)


def diamond_bottom(left: tuple[str, str], right: tuple[str, str]) -> tuple[str, str]:
    return diamond_step("bottom", left, right)


@pytest.mark.parametrize("seed", range(2))
def test_engine_diamonds_with_cancels(
    standalone: Path, tmp_path: Path, seed: int
) -> None:
    import jupyter_scenarios as tp
    from jupyter_scenarios import Config, Status

    rng = random.Random(seed)
    source = Config.configure_data_node("source")
    middle = Config.configure_data_node("middle")
    left = Config.configure_data_node("left_out")
    right = Config.configure_data_node("right_out")
    bottom = Config.configure_data_node("bottom_out")
    tasks = [
        Config.configure_task("top", diamond_top, source, middle),
        Config.configure_task("left", diamond_left, middle, left),
        Config.configure_task("right", diamond_right, middle, right),
        Config.configure_task("bottom", diamond_bottom, [left, right], bottom),
    ]
    config = Config.configure_scenario("diamond", tasks)
    submissions = []
    cancelled: set[str] = set()
    for index in range(16):
        scenario = tp.create_scenario(config)
        scenario.source.write((str(tmp_path), f"s{index:02d}"))
        submissions.append(scenario.submit())
        time.sleep(rng.choice([0.0, 0.002, 0.01]))
        if rng.random() < 0.6:
            victim = rng.choice(rng.choice(submissions).jobs)
            cancelled.add(victim.id)
            tp.cancel_job(victim)
    for submission in submissions:
        assert submission.wait(60.0), [
            (job.task_config_id, job.status.name) for job in submission.jobs
        ]
    problems = []
    upstream = {"left": ["top"], "right": ["top"], "bottom": ["left", "right"]}
    for index, submission in enumerate(submissions):
        jobs = {job.task_config_id: job for job in submission.jobs}
        for name, job in jobs.items():
            runs = read_lines(tmp_path / f"s{index:02d}-{name}")
            if job.status is Status.COMPLETED and len(runs) != 1:
                problems.append(f"s{index:02d} {name}: completed, ran {len(runs)}x")
            if job.status not in (Status.COMPLETED, Status.CANCELED, Status.ABANDONED):
                problems.append(f"s{index:02d} {name}: ended {job.status.name}")
            for parent in upstream.get(name, []):
                parent_status = jobs[parent].status
                if (
                    parent_status is not Status.COMPLETED
                    and job.status is not Status.ABANDONED
                    and job.id not in cancelled
                ):
                    problems.append(
                        f"s{index:02d} {name}: {job.status.name} after {parent} "
                        f"{parent_status.name}"
                    )
    assert not problems, problems
