"""Attacks on job rows, scenario callbacks and the stuck-input warning.

Job rows are built from a cached JSON prefix of their fixed fields, and an update
sets only the status column. Scenario callbacks are built once per submit. The wait
warns about inputs that no job of the submission writes.

Four tests failed before their fixes:

- test_other_process_write_releases: a BLOCKED job never noticed an input written
  by another kernel sharing the folder.
- test_other_process_cancel_rejected: another process's cancel was overwritten by
  the kernel that ran the job.
- test_job_of_other_kernel_followed: a job or submission that another kernel ran
  kept the status it had when this process loaded it.
- test_stuck_warning_busy_scheduler: no warning for jobs still SUBMITTED.

The others guard the row format, the rows after a crash and the callback arguments.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import time
import warnings
from pathlib import Path
from typing import Any

import psutil
import pytest
from engine_fixtures import (
    WAIT_SECONDS,
    double,
    double_config,
    job_of,
    open_in_subprocess,
    start_gated_kernel,
    stuck_config,
    wait_for_file,
    wait_status,
    wait_until,
)
from engine_fixtures import engine as engine_fixture  # noqa: F401 - fixture
from engine_fixtures import forkserver_started as forkserver_fixture  # noqa: F401
from engine_fixtures import standalone as standalone_fixture  # noqa: F401 - fixture

import jupyter_scenarios as tp
from jupyter_scenarios import Config, Scope, Status, SubmissionStatus, _runtime
from jupyter_scenarios.scheduler import SCHEDULE_WAIT_SECONDS

pytestmark = pytest.mark.timeout(300)


def test_other_process_write_releases(standalone: Path) -> None:
    scenario = tp.create_scenario(stuck_config())
    submission = scenario.submit()
    second = job_of(submission, "second")
    wait_status(second, Status.BLOCKED)
    open_in_subprocess(standalone, f"tp.get({scenario.unwritten.id!r}).write(10)")
    assert scenario.unwritten.last_edit_date is not None
    assert submission.wait(15), f"second is {second.status.name}"


def stored_job(folder: Path, job_id: str) -> tuple[dict[str, Any], str]:
    """Return the stored document and status column of one job."""
    with sqlite3.connect(folder / "entities.db") as connection:
        doc, status = connection.execute(
            "SELECT doc, status FROM job WHERE id = ?", (job_id,)
        ).fetchone()
    return json.loads(doc), status


def test_other_process_cancel_rejected(standalone: Path) -> None:
    # Only the kernel that runs a job can cancel it: a cancel written by another
    # process was overwritten by that kernel's next write of the job.
    scenario = tp.create_scenario(stuck_config())
    submission = scenario.submit()
    second = job_of(submission, "second")
    wait_status(second, Status.BLOCKED)
    with pytest.raises(AssertionError, match="cancel it from that process"):
        open_in_subprocess(standalone, f"tp.cancel_job({second.id!r})")
    _, status = stored_job(standalone, second.id)
    assert status == "BLOCKED"

    scenario.unwritten.write(10)
    assert submission.wait(WAIT_SECONDS)
    doc, status = stored_job(standalone, second.id)
    assert status == "COMPLETED"
    assert "CANCELED" not in [name for name, _ in doc["status_history"]]
    found = _runtime.store().get_all("job", status="COMPLETED")
    assert second.id in [job.id for job in found]


def test_reconciled_row_after_kill(engine: Path, tmp_path: Path) -> None:
    # A kernel is killed while its job runs, and the next start settles the job as
    # FAILED. The row must keep the dead kernel's history once, in order, and its
    # worker pid.
    gate = tmp_path / "gate"
    marker = tmp_path / "job_id"
    tp.Orchestrator().stop()
    kernel = start_gated_kernel(
        engine, gate, marker, tmp_path / "kernel.log", "import time; time.sleep(120)"
    )
    descendants: list[psutil.Process] = []
    try:
        job_id = wait_for_file(marker)
        wait_until(
            lambda: stored_job(engine, job_id)[1] == "RUNNING",
            WAIT_SECONDS,
            "the killed kernel's job to be stored RUNNING",
        )
        descendants = psutil.Process(kernel.pid).children(recursive=True)
        running_doc, _ = stored_job(engine, job_id)
    finally:
        kernel.send_signal(signal.SIGKILL)
        kernel.wait(WAIT_SECONDS)
        gate.touch()
        for process in descendants:
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(descendants, timeout=WAIT_SECONDS)

    tp.Orchestrator().run()
    job = tp.get(job_id)
    doc, status = stored_job(engine, job_id)
    names = [name for name, _ in doc["status_history"]]
    assert status == "FAILED"
    assert doc["status"] == "FAILED"
    assert names == ["SUBMITTED", "PENDING", "RUNNING", "FAILED"]
    assert doc["status_history"][:3] == running_doc["status_history"]
    assert doc["worker_pid"] == running_doc["worker_pid"] is not None
    assert doc == job._to_doc()
    assert [found.id for found in _runtime.store().get_all("job", status="FAILED")] == [
        job_id
    ]
    assert _runtime.store().get_all("job", status="RUNNING") == []


def test_job_of_other_kernel_followed(engine: Path, tmp_path: Path) -> None:
    # A job and submission that another live kernel runs: this process reads their
    # changes from the store, and wait() returns when that kernel finishes them.
    gate = tmp_path / "gate"
    marker = tmp_path / "job_id"
    kernel = start_gated_kernel(
        engine,
        gate,
        marker,
        tmp_path / "kernel.log",
        "submission.wait(120)\ntp.Orchestrator().stop()",
    )
    try:
        job_id = wait_for_file(marker)
        wait_until(
            lambda: stored_job(engine, job_id)[1] == "RUNNING",
            WAIT_SECONDS,
            "the other kernel's job to be stored RUNNING",
        )
        job = tp.get(job_id)
        submission = tp.get(job.submit_id)
        assert job.status is Status.RUNNING
        assert job.wait(0.3) is False
        assert submission.submission_status is SubmissionStatus.RUNNING
        gate.touch()
        assert job.wait(WAIT_SECONDS)
        assert submission.wait(WAIT_SECONDS)
        assert submission.submission_status is SubmissionStatus.COMPLETED
        assert job.status is Status.COMPLETED
        assert job.is_completed()
        assert [status for status, _ in job.status_history][-1] is Status.COMPLETED
        found = _runtime.store().get_all("job", status="COMPLETED")
        assert [each.status for each in found] == [Status.COMPLETED]
    finally:
        gate.touch()
        kernel.wait(WAIT_SECONDS)


def test_stuck_warning_busy_scheduler(standalone: Path) -> None:
    # A job callback runs on the scheduler thread; while it runs, a new submission
    # stays SUBMITTED and submit() returns after SCHEDULE_WAIT_SECONDS. The wait
    # that follows must still warn about the input that no job writes.
    busy = tp.create_scenario(double_config("busy"))
    slow_started = []

    def slow_callback(job: tp.Job) -> None:
        if job.is_completed():
            slow_started.append(job.id)
            time.sleep(SCHEDULE_WAIT_SECONDS + 3)

    busy.submit(callbacks=[slow_callback])
    scenario = tp.create_scenario(stuck_config())
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        wait_until(lambda: slow_started, WAIT_SECONDS, "the slow callback to start")
        submission = scenario.submit(wait=True, timeout=SCHEDULE_WAIT_SECONDS + 6)
    messages = [str(warning.message) for warning in warned]
    second = job_of(submission, "second")
    assert second.status is Status.BLOCKED
    assert any("second needs unwritten" in message for message in messages), messages


def chain_with_global_config() -> Any:
    """``number -> double -> doubled -> double again -> quadrupled``, plus a task
    on GLOBAL nodes that every scenario of the configuration shares."""
    number = Config.configure_data_node("number", default_data=3)
    doubled = Config.configure_data_node("doubled")
    quadrupled = Config.configure_data_node("quadrupled")
    shared_in = Config.configure_data_node(
        "shared_in", scope=Scope.GLOBAL, default_data=1
    )
    shared_out = Config.configure_data_node("shared_out", scope=Scope.GLOBAL)
    first = Config.configure_task("first", double, number, doubled)
    second = Config.configure_task("second", double, doubled, quadrupled)
    shared = Config.configure_task("shared", double, shared_in, shared_out)
    return Config.configure_scenario("chain", [first, second, shared])


def test_scenario_callbacks_per_entity(engine: Path) -> None:
    # The scenario callbacks are built once per submit and shared by its jobs. Each
    # call must still get the submitted scenario and the job that changed.
    config = chain_with_global_config()
    scenario = tp.create_scenario(config)
    other = tp.create_scenario(config)
    calls: list[tuple[str, str, str, str]] = []

    def record(tag: str, called_scenario: tp.Scenario, job: tp.Job) -> None:
        calls.append((tag, called_scenario.id, job.id, job.status.name))

    tp.subscribe_scenario(record, ["all"])
    tp.subscribe_scenario(record, ["own"], scenario)
    sequence = scenario.add_sequence("tail", [scenario.second])
    submissions = [
        scenario.submit(),
        sequence.submit(),
        scenario.first.submit(),
        scenario.shared.submit(),
        other.submit(),
    ]
    tp.unsubscribe_scenario(record, ["own"], scenario)
    later = scenario.submit()

    expected = []
    for submission, scenario_id, tags in [
        (submissions[0], scenario.id, ["all", "own"]),
        (submissions[1], scenario.id, ["all", "own"]),
        (submissions[2], scenario.id, ["all", "own"]),
        (submissions[3], None, []),
        (submissions[4], other.id, ["all"]),
        (later, scenario.id, ["all"]),
    ]:
        for job in submission.jobs:
            for name, _ in job.status_history[1:]:
                for tag in tags:
                    expected.append((tag, scenario_id, job.id, name.name))
    assert sorted(calls) == sorted(expected)


def raise_odd_message(value: int) -> int:
    raise ValueError('é 漢字 "quoted" \\ back\nline \x00 \ud800 ' + "x" * 100_000)


def test_job_row_with_odd_text(standalone: Path) -> None:
    # The stored JSON joins the fixed fields' text and the changing fields' text. It
    # must decode to the job's document whatever the traceback and reason contain.
    number = Config.configure_data_node("number", default_data=1)
    result = Config.configure_data_node("result")
    task = Config.configure_task("odd", raise_odd_message, number, result)
    scenario = tp.create_scenario(Config.configure_scenario("odd_text", [task]))
    submission = scenario.submit(wait=True, timeout=WAIT_SECONDS)
    [job] = submission.jobs

    doc, status = stored_job(standalone, job.id)
    assert status == "FAILED"
    assert doc == json.loads(json.dumps(job._to_doc()))
    assert "\ud800" in doc["reason"]
    assert doc["worker_pid"] == job.worker_pid is not None
