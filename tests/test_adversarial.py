"""Adversarial cases in standalone mode: deletions while jobs are unfinished.

Jobs wait on gate files, so each test decides when they finish. Every wait has a
timeout, and the ``standalone`` fixture fails a test that leaves a process behind.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from engine_fixtures import WAIT_SECONDS, use_workers, wait_for_gate, wait_status
from engine_fixtures import engine as engine_fixture  # noqa: F401 - fixture
from engine_fixtures import forkserver_started as forkserver_fixture  # noqa: F401
from engine_fixtures import standalone as standalone_fixture  # noqa: F401 - fixture

import jupyter_scenarios as tp
from jupyter_scenarios import Config, Status, SubmissionTimeoutWarning
from jupyter_scenarios.exceptions import (
    JobNotDeletedException,
    SubmissionNotDeletedException,
)
from jupyter_scenarios.executors.standalone import IN_FLIGHT_PER_WORKER
from jupyter_scenarios.store import StoreError

pytestmark = [pytest.mark.usefixtures("standalone"), pytest.mark.timeout(240)]


def gated_scenario(tmp_path: Path, task_count: int) -> tp.Scenario:
    gate = Config.configure_data_node("gate", default_data=str(tmp_path / "gate"))
    tasks = [
        Config.configure_task(
            f"t{index}", wait_for_gate, gate, Config.configure_data_node(f"out{index}")
        )
        for index in range(task_count)
    ]
    return tp.create_scenario(Config.configure_scenario("gated", tasks))


def test_delete_scenario_with_running_task_submission(tmp_path: Path) -> None:
    scenario = gated_scenario(tmp_path, 1)
    submission = tp.submit(scenario.t0)
    wait_status(submission.jobs[0], Status.RUNNING)

    with pytest.raises(SubmissionNotDeletedException):
        tp.delete(scenario.id)

    (tmp_path / "gate").touch()
    assert submission.wait(WAIT_SECONDS)
    assert tp.exists(scenario.id)
    assert scenario.out0.read() == str(tmp_path / "gate")


def test_scheduler_survives_deleted_pending_task(tmp_path: Path) -> None:
    # One worker runs t0, and the executor keeps the next jobs up to its limit, so
    # the last two wait in the scheduler's ready queue when their tasks are deleted.
    use_workers(1)
    handed_over = IN_FLIGHT_PER_WORKER
    count = handed_over + 2
    scenario = gated_scenario(tmp_path, count)
    tasks = [scenario.tasks[f"t{index}"] for index in range(count)]
    submissions = [tp.submit(task) for task in tasks]
    wait_status(submissions[0].jobs[0], Status.RUNNING)
    # tp.delete rejects tasks with unfinished jobs; another kernel sharing the
    # storage folder can still remove the rows, which the store call stands for.
    from jupyter_scenarios import _runtime

    for task in tasks[handed_over:]:
        _runtime.store().delete([task.id])

    (tmp_path / "gate").touch()
    for submission in submissions[handed_over:]:
        assert submission.wait(WAIT_SECONDS)
        assert submission.jobs[0].status is Status.FAILED

    fresh = gated_scenario(tmp_path, 2)
    submission = fresh.submit(wait=True, timeout=WAIT_SECONDS)
    assert [job.status for job in submission.jobs] == [Status.COMPLETED] * 2


def test_delete_task_with_unfinished_job_rejected(tmp_path: Path) -> None:
    scenario = gated_scenario(tmp_path, 1)
    submission = tp.submit(scenario.t0)
    wait_status(submission.jobs[0], Status.RUNNING)

    with pytest.raises(JobNotDeletedException, match=scenario.t0.id):
        tp.delete(scenario.t0.id)
    with pytest.raises(JobNotDeletedException, match=scenario.out0.id):
        tp.delete(scenario.out0.id)

    (tmp_path / "gate").touch()
    assert submission.wait(WAIT_SECONDS)
    assert tp.exists(scenario.t0.id)


def test_negative_timeout_rejected(tmp_path: Path) -> None:
    scenario = gated_scenario(tmp_path, 1)

    with pytest.raises(ValueError, match="timeout=-1"):
        scenario.submit(wait=True, timeout=-1)

    assert tp.get_submissions() == []


@pytest.mark.parametrize(
    ("timeout", "error"),
    [
        ("5", TypeError),
        ([1], TypeError),
        (True, TypeError),
        (float("nan"), ValueError),
        (-0.5, ValueError),
        (-(10**400), ValueError),
    ],
)
def test_bad_timeout_named_before_anything_runs(
    tmp_path: Path, timeout: object, error: type[Exception]
) -> None:
    scenario = gated_scenario(tmp_path, 1)
    match = f"timeout={timeout!r}".replace("[", r"\[").replace("]", r"\]")

    with pytest.raises(error, match=match):
        scenario.submit(wait=True, timeout=timeout)
    assert tp.get_submissions() == []

    submission = scenario.submit()
    for wait in (submission.wait, submission.jobs[0].wait, tp.wait_all):
        with pytest.raises(error, match=match):
            wait(timeout)
    with pytest.raises(error, match=match):
        tp.Orchestrator().stop(timeout=timeout)
    (tmp_path / "gate").touch()
    assert submission.wait(WAIT_SECONDS)


def test_endless_timeout_waits_like_none(tmp_path: Path) -> None:
    # threading's locks reject a timeout over threading.TIMEOUT_MAX with
    # OverflowError; such a timeout means no limit.
    scenario = gated_scenario(tmp_path, 1)
    submission = scenario.submit()
    (tmp_path / "gate").touch()
    assert submission.wait(float("inf"))
    assert tp.wait_all(1e300)
    assert tp.wait_all(10**400)  # too large for a float
    assert submission.wait(Decimal("0.5"))


def test_wait_on_unwritable_input_warns(tmp_path: Path) -> None:
    never = Config.configure_data_node("never_written")
    task = Config.configure_task("needs", str, never, Config.configure_data_node("got"))
    scenario = tp.create_scenario(Config.configure_scenario("stuck", [task]))

    with (
        pytest.warns(UserWarning, match="never_written"),
        pytest.warns(SubmissionTimeoutWarning, match="timed out after 0.2 s"),
    ):
        submission = scenario.submit(wait=True, timeout=0.2)

    assert submission.jobs[0].status is Status.BLOCKED


def call_api_inside_task(value: int) -> int:
    return len(tp.get_scenarios()) + value


def test_api_inside_worker_fails_job(tmp_path: Path) -> None:
    source = Config.configure_data_node("source", default_data=1)
    task = Config.configure_task(
        "nested", call_api_inside_task, source, Config.configure_data_node("result")
    )
    scenario = tp.create_scenario(Config.configure_scenario("nesting", [task]))

    submission = scenario.submit(wait=True, timeout=WAIT_SECONDS)

    job = submission.jobs[0]
    assert job.status is Status.FAILED
    assert "called the jupyter_scenarios API" in job.stacktrace[0]


def test_damaged_store_names_file(tmp_path: Path) -> None:
    folder = tmp_path / "damaged"
    folder.mkdir()
    database = folder / "entities.db"
    database.write_bytes(b"not a database" * 100)
    size = database.stat().st_size
    from jupyter_scenarios.store import Store

    with pytest.raises(StoreError, match=str(database)):
        Store(folder)

    assert database.stat().st_size == size
