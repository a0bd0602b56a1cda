# ruff: noqa: F811 - tests take the imported fixtures as parameters
"""Adversarial tests of output capture between jobs, early dispatch and events.

Covered: jobs that close or redirect descriptors 1 and 2, output written between
jobs, early dispatch while a submission is scheduled, lazy job events, lock-free
event publishing and the dictionary-based task generations.

Job functions live at module level so that workers import them by reference.
"""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from engine_fixtures import WAIT_SECONDS, main_namespace, use_workers
from engine_fixtures import engine as engine_fixture  # noqa: F401 - fixture
from engine_fixtures import forkserver_started as forkserver_fixture  # noqa: F401
from engine_fixtures import standalone as standalone_fixture  # noqa: F401 - fixture
from test_graph import FakeTask, networkx_generations
from test_pool import (  # noqa: F401 - the fixtures are used by name
    PoolFactory,
    make_pool,
    multiprocessing_helpers,
    no_leftover_workers_or_threads,
)

import jupyter_scenarios as tp
from jupyter_scenarios import Config, Status
from jupyter_scenarios.entities.task import Task
from jupyter_scenarios.events import (
    Event,
    EventBus,
    EventEntityType,
    EventOperation,
    bus,
)
from jupyter_scenarios.exceptions import ConfigurationError, CycleInGraphError
from jupyter_scenarios.graph import task_generations

pytestmark = pytest.mark.timeout(180)

# Seconds a submission of a few trivial jobs gets to finish. A stuck submission
# fails after this, not after the engine fixtures' minute.
SUBMISSION_SECONDS = 20.0
# Tasks beside the failing one, more than the jobs handed out per worker.
FILLERS = 6


# -- job functions --------------------------------------------------------------------


def print_line(text: str) -> str:
    print(text, flush=True)
    return text


def stay_silent(value: int) -> int:
    return value


def close_stdout_and_stderr() -> str:
    """Close descriptors 1 and 2 and return at once, before any promotion."""
    os.close(1)
    os.close(2)
    return "closed"


def silence_stdout_and_stderr() -> str:
    """Point descriptors 1 and 2 at /dev/null for good, as "quiet C" helpers do."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)
    return "silenced"


def print_later_from_thread(text: str, delay: float) -> str:
    """Start a thread that prints ``text`` ``delay`` seconds after the job returns."""

    def later() -> None:
        time.sleep(delay)
        print(text, flush=True)

    threading.Thread(target=later, daemon=True).start()
    return "started"


# -- descriptors 1 and 2 between jobs ------------------------------------------------------


@pytest.mark.parametrize(
    ("function", "value"),
    [(close_stdout_and_stderr, "closed"), (silence_stdout_and_stderr, "silenced")],
)
def test_broken_fds_spare_next_job(
    make_pool: PoolFactory, tmp_path: Path, function: Any, value: str
) -> None:
    # A job closes descriptors 1 and 2, or points them at /dev/null, and ends
    # within 0.2 s, before its output would be promoted to its log. The next job
    # in the same log folder must still write its own output to its own log.
    pool, recorder = make_pool(1)
    pool.submit("breaker", function, (), tmp_path / "breaker.log")
    assert recorder.wait("breaker").value == value

    pool.submit("after", print_line, ("after-line",), tmp_path / "after.log")
    outcome = recorder.wait("after")
    assert outcome.ok, outcome.error
    after_log = tmp_path / "after.log"
    assert after_log.exists(), "the output of job 'after' is missing"
    assert after_log.read_text() == "after-line\n"


def test_thread_output_between_jobs_not_next_log(
    make_pool: PoolFactory, tmp_path: Path
) -> None:
    # The thread of job "first" prints after "first" ended and before "second"
    # started. That line is not the output of "second", which prints nothing.
    pool, recorder = make_pool(1)
    pool.submit(
        "first",
        print_later_from_thread,
        ("late-from-first", 0.2),
        tmp_path / "first.log",
    )
    assert recorder.wait("first").ok
    time.sleep(0.8)  # the thread has printed by now

    pool.submit("second", stay_silent, (5,), tmp_path / "second.log")
    assert recorder.wait("second").value == 5
    second_log = tmp_path / "second.log"
    second_text = second_log.read_text() if second_log.exists() else ""
    assert "late-from-first" not in second_text


def test_unlogged_job_between_logged_jobs(
    make_pool: PoolFactory, tmp_path: Path
) -> None:
    # Talking and silent jobs, with and without a log file, in two folders.
    pool, recorder = make_pool(1)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    plan = [
        ("j0", "a", True),
        ("j1", None, True),
        ("j2", "a", False),
        ("j3", None, True),
        ("j4", "b", True),
        ("j5", "a", True),
        ("j6", None, False),
        ("j7", "a", True),
        ("j8", "b", False),
        ("j9", "b", True),
    ]
    for key, folder, talks in plan:
        log = None if folder is None else tmp_path / folder / f"{key}.log"
        if talks:
            pool.submit(key, print_line, (f"line-{key}",), log)
        else:
            pool.submit(key, stay_silent, (1,), log)
    for key, _, _ in plan:
        outcome = recorder.wait(key)
        assert outcome.ok, (key, outcome.error)

    for key, folder, talks in plan:
        if folder is None:
            continue
        log = tmp_path / folder / f"{key}.log"
        if talks:
            assert log.read_text() == f"line-{key}\n", key
        else:
            assert not log.exists(), (key, log.read_text())
    texts = "".join(path.read_text() for path in tmp_path.glob("*/*.log"))
    for key, folder, _ in plan:
        if folder is None:
            assert f"line-{key}" not in texts, key


# -- early dispatch while a submission is scheduled ---------------------------------------


def fail_preparation_of(monkeypatch: pytest.MonkeyPatch, config_id: str) -> None:
    """Make the scheduler fail to resolve the function of task ``config_id``.

    Imitates a task whose function is in no configuration, cannot be imported
    and was not pickled: Task.function then raises ConfigurationError, and
    Scheduler._start fails the job while it prepares it.
    """
    original = Task.function

    def function(self: Task) -> Any:
        if self.config_id == config_id:
            raise ConfigurationError(f"The function of task {self.id!r} is missing")
        return original.fget(self)

    monkeypatch.setattr(Task, "function", property(function))


def fan_out_config(downstream_has_data: bool) -> Any:
    """``source -> unfindable -> broken -> after``, plus independent fillers."""
    source = Config.configure_data_node("source", default_data=5)
    if downstream_has_data:
        broken = Config.configure_data_node("broken", default_data=100)
    else:
        broken = Config.configure_data_node("broken")
    after = Config.configure_data_node("after")
    tasks = [
        Config.configure_task("unfindable", stay_silent, source, broken),
        Config.configure_task("after_unfindable", stay_silent, broken, after),
        *filler_tasks(source),
    ]
    return Config.configure_scenario("fan_out", tasks)


def filler_tasks(source: Any) -> list[Any]:
    """Tasks that read ``source`` and sort after "unfindable" in its generation.

    There are more of them than the free slots of one worker, so the early
    dispatch in Scheduler._schedule starts "unfindable" before the loop reaches
    "after_unfindable", whatever the number of jobs handed out per worker.
    """
    return [
        Config.configure_task(
            f"v_filler_{index}",
            stay_silent,
            source,
            Config.configure_data_node(f"filler_out_{index}"),
        )
        for index in range(FILLERS)
    ]


@pytest.mark.usefixtures("standalone")
@pytest.mark.parametrize("downstream_has_data", [False, True])
def test_early_dispatch_failure_abandons_downstream(
    monkeypatch: pytest.MonkeyPatch, downstream_has_data: bool
) -> None:
    # The source tasks fill the free slots of one worker, so they are dispatched
    # before the loop in Scheduler._schedule reaches "after_unfindable".
    use_workers(1)
    fail_preparation_of(monkeypatch, "unfindable")
    scenario = tp.create_scenario(fan_out_config(downstream_has_data))

    submission = scenario.submit()
    finished = submission.wait(SUBMISSION_SECONDS)
    statuses = {job.task_config_id: job.status for job in submission.jobs}
    assert finished, f"submission never finished: {statuses}"
    assert statuses["unfindable"] is Status.FAILED
    assert statuses["after_unfindable"] is Status.ABANDONED, statuses
    for index in range(FILLERS):
        assert statuses[f"v_filler_{index}"] is Status.COMPLETED


def chain_config(length: int) -> Any:
    nodes = [Config.configure_data_node("n0", default_data=0)]
    nodes += [Config.configure_data_node(f"n{i}") for i in range(1, length + 1)]
    tasks = [
        Config.configure_task(f"step{i:03d}", stay_silent, nodes[i], nodes[i + 1])
        for i in range(length)
    ]
    return Config.configure_scenario("chain", tasks)


@pytest.mark.usefixtures("standalone")
def test_wide_submission_with_chains_completes() -> None:
    # 60 independent sources fill the free slots early, and a chain of 20 waits
    # on its inputs behind them.
    use_workers(2)
    source = Config.configure_data_node("source", default_data=1)
    tasks = []
    for index in range(60):
        output = Config.configure_data_node(f"wide{index:02d}")
        tasks.append(
            Config.configure_task(f"wide{index:02d}", stay_silent, source, output)
        )
    chain = chain_config(20)
    scenario_config = Config.configure_scenario(
        "wide_and_chain", tasks + list(chain.task_configs)
    )
    scenario = tp.create_scenario(scenario_config)

    submission = scenario.submit()
    finished = submission.wait(WAIT_SECONDS)
    statuses = {job.task_config_id: job.status.name for job in submission.jobs}
    assert finished, statuses
    assert set(statuses.values()) == {"COMPLETED"}, statuses


# -- lazy job events ----------------------------------------------------------------------


@pytest.mark.usefixtures("standalone")
def test_many_threads_wait_while_jobs_finish() -> None:
    use_workers(2)
    scenario = tp.create_scenario(chain_config(30))
    submission = scenario.submit()
    jobs = list(submission.jobs)
    results: list[bool] = []
    lock = threading.Lock()

    def wait_on(job: tp.Job) -> None:
        finished = job.wait(WAIT_SECONDS)
        with lock:
            results.append(finished)

    threads = [
        threading.Thread(target=wait_on, args=(job,)) for job in jobs for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_SECONDS + 5)
    assert not any(thread.is_alive() for thread in threads)
    assert results == [True] * len(threads)
    assert all(job.status is Status.COMPLETED for job in jobs)


@pytest.mark.usefixtures("standalone")
def test_finished_job_from_store_waits_at_once() -> None:
    use_workers(1)
    scenario = tp.create_scenario(chain_config(2))
    submission = scenario.submit(wait=True, timeout=WAIT_SECONDS)
    job_ids = [job.id for job in submission.jobs]
    tp.Orchestrator().stop(wait=True, timeout=15)
    tp.Orchestrator().run()
    for job_id in job_ids:
        job = tp.get(job_id)
        assert job.status is Status.COMPLETED
        started = time.monotonic()
        assert job.wait(5.0)
        assert time.monotonic() - started < 1.0


# -- events published without the lock ----------------------------------------------------


def test_subscriber_unsubscribing_itself_during_publish() -> None:
    bus = EventBus()
    calls: list[str] = []

    def once(event: Event) -> None:
        calls.append("once")
        bus.unsubscribe(once)

    def always(event: Event) -> None:
        calls.append("always")

    bus.subscribe(once)
    bus.subscribe(always)
    sample = Event(EventEntityType.JOB, EventOperation.UPDATE, "JOB_x")
    bus.publish(sample)
    bus.publish(sample)
    assert calls == ["once", "always", "always"]


def test_concurrent_subscribe_keeps_every_subscriber() -> None:
    bus = EventBus()
    subscribers = [lambda event, i=i: None for i in range(2000)]
    chunks = [subscribers[i::4] for i in range(4)]

    def add(chunk: list[Any]) -> None:
        for subscriber in chunk:
            bus.subscribe(subscriber)

    threads = [threading.Thread(target=add, args=(chunk,)) for chunk in chunks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(bus._subscribers) == len(subscribers)


@pytest.mark.usefixtures("standalone")
def test_subscribe_churn_while_jobs_run() -> None:
    use_workers(2)
    scenario = tp.create_scenario(chain_config(15))
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn() -> None:
        # Subscribers that unsubscribe themselves from inside publish, while
        # the scheduler publishes job events from its own thread.
        try:
            while not stop.is_set():

                def once(event: Event) -> None:
                    bus.unsubscribe(once)

                bus.subscribe(once)
                time.sleep(0.001)
                bus.unsubscribe(once)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        submission = scenario.submit(wait=True, timeout=WAIT_SECONDS)
    finally:
        stop.set()
        thread.join(10)
    assert not errors
    assert all(job.status is Status.COMPLETED for job in submission.jobs)


# -- task generations against networkx ----------------------------------------------------


def messy_dag(seed: int) -> list[FakeTask]:
    # Duplicate inputs and outputs, tasks listed twice, and data node ids equal to
    # task ids, all with edges going forward only.
    chance = random.Random(seed)
    names = [f"x{index}" for index in range(chance.randint(1, 10))]
    tasks = []
    for index in range(chance.randint(1, 10)):
        split = chance.randint(0, len(names))
        head = names[:split]
        tail = names[split:]
        inputs = []
        if head:
            inputs = [chance.choice(head) for _ in range(chance.randint(0, 4))]
        outputs = []
        if tail:
            outputs = [chance.choice(tail) for _ in range(chance.randint(0, 3))]
        task_id = chance.choice(names) if chance.random() < 0.3 else f"t{index}"
        if any(task.id == task_id for task in tasks):
            task_id = f"t{index}"
        task = FakeTask(task_id, inputs, outputs)
        tasks.append(task)
        if chance.random() < 0.2:
            tasks.append(task)
    chance.shuffle(tasks)
    return tasks


def test_messy_generations_match_networkx() -> None:
    for seed in range(3000):
        tasks = messy_dag(seed)
        ours = [[task.id for task in level] for level in task_generations(tasks)]
        assert ours == networkx_generations(tasks), f"seed {seed}"


def test_cycle_through_two_tasks_raises() -> None:
    tasks = [
        FakeTask("a", ["x"], ["y"]),
        FakeTask("b", ["y"], ["x"]),
        FakeTask("c", [], ["x"]),
    ]
    with pytest.raises(CycleInGraphError, match="owner-of-cycle"):
        task_generations(tasks, "owner-of-cycle")


def test_task_listed_twice_appears_once() -> None:
    first = FakeTask("a", [], ["x"])
    second = FakeTask("b", ["x", "x"], [])
    generations = task_generations([first, second, first, second])
    assert [[task.id for task in level] for level in generations] == [["a"], ["b"]]


UNPICKLABLE_CELL = """
import threading

guard = threading.Lock()

def unpicklable(value):
    with guard:
        return value
"""


@pytest.mark.usefixtures("standalone")
@pytest.mark.parametrize("downstream_has_data", [False, True])
def test_missing_function_after_restart_abandons_downstream(
    engine: Path, downstream_has_data: bool
) -> None:
    # The same failure without fault injection: after a restart, the task's
    # function is in no configuration, cannot be imported and was never pickled.
    use_workers(1)
    namespace = main_namespace(UNPICKLABLE_CELL)
    source = Config.configure_data_node("source", default_data=5)
    if downstream_has_data:
        broken = Config.configure_data_node("broken", default_data=100)
    else:
        broken = Config.configure_data_node("broken")
    after = Config.configure_data_node("after")
    tasks = [
        Config.configure_task("unfindable", namespace["unpicklable"], source, broken),
        Config.configure_task("after_unfindable", stay_silent, broken, after),
        *filler_tasks(source),
    ]
    scenario_id = tp.create_scenario(Config.configure_scenario("fan_out", tasks)).id

    tp.Orchestrator().stop(wait=True, timeout=15)
    Config.unblock_update()
    Config._reset()
    Config.configure_core(storage_folder=str(engine))
    use_workers(1)
    tp.Orchestrator().run()
    scenario = tp.get(scenario_id)

    submission = scenario.submit()
    finished = submission.wait(SUBMISSION_SECONDS)
    statuses = {job.task_config_id: job.status for job in submission.jobs}
    assert finished, f"submission never finished: {statuses}"
    assert statuses["unfindable"] is Status.FAILED
    assert statuses["after_unfindable"] is Status.ABANDONED, statuses
