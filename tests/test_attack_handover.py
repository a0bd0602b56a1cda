"""Attacks on the hand-over of a standalone submission's writes to the scheduler thread.

In standalone mode ``submit()`` gathers the new submission, jobs and locked output
data nodes with ``Store.handover_batch``. The scheduler's manager thread writes them
with its own batch (``Store.write_handed_over``). When that thread does not take them
within SCHEDULE_WAIT_SECONDS, ``submit()`` writes them itself.
Every check of the file reads ``entities.db`` through a connection of its own, as
another process would.

The first four tests each failed on the first version of the hand-over; the others
cover cases that the hand-over made newly important.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from engine_fixtures import (
    WAIT_SECONDS,
    double_config,
    max_overlap,
    run_python,
    running_interval,
    start_python,
    wait_for_gate,
    wait_gone,
    wait_status,
    wait_until,
)
from engine_fixtures import engine as engine_fixture  # noqa: F401 - fixture
from engine_fixtures import forkserver_started as forkserver_fixture  # noqa: F401
from engine_fixtures import standalone as standalone_fixture  # noqa: F401 - fixture

import jupyter_scenarios as tp
from jupyter_scenarios import Config, Status, SubmissionStatus
from jupyter_scenarios.scheduler import SCHEDULE_WAIT_SECONDS

pytestmark = [pytest.mark.usefixtures("standalone"), pytest.mark.timeout(300)]


# -- task functions (importable, so they travel by reference) ------------------------


# -- helpers -------------------------------------------------------------------------


def gated_fan_config(gate: Path, count: int) -> Any:
    """``count`` independent tasks, each waiting for the file ``gate``."""
    gate_path = Config.configure_data_node("gate_path", default_data=str(gate))
    tasks = []
    for index in range(count):
        output = Config.configure_data_node(f"out_{index}")
        tasks.append(
            Config.configure_task(f"wait_{index}", wait_for_gate, gate_path, output)
        )
    return Config.configure_scenario("gated_fan", tasks)


def stored_snapshot(folder: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Read every row of the job, submission and data_node tables in one snapshot."""
    tables = ("job", "submission", "data_node")
    with contextlib.closing(sqlite3.connect(folder / "entities.db")) as connection:
        connection.execute("BEGIN")
        snapshot = {
            table: {
                entity_id: json.loads(doc)
                for entity_id, doc in connection.execute(f"SELECT id, doc FROM {table}")
            }
            for table in tables
        }
        connection.execute("COMMIT")
    return snapshot


def stored_docs(folder: Path, kind: str) -> dict[str, dict[str, Any]]:
    return stored_snapshot(folder)[kind]


def set_job_writes_failing(folder: Path, failing: bool) -> None:
    """Make every INSERT and UPDATE of a job row fail, as a full disk would."""
    with contextlib.closing(sqlite3.connect(folder / "entities.db")) as connection:
        for event in ("INSERT", "UPDATE"):
            name = f"refuse_job_{event.lower()}"
            if failing:
                connection.execute(
                    f"CREATE TRIGGER {name} BEFORE {event} ON job "
                    "BEGIN SELECT RAISE(ABORT, 'job rows cannot be written now'); END"
                )
            else:
                connection.execute(f"DROP TRIGGER IF EXISTS {name}")
        connection.commit()


class SchedulerHold:
    """A job callback that keeps the manager thread busy until ``release()``.

    Job callbacks run on the manager thread, so while one waits, the thread handles
    no command: a submit() made meanwhile waits SCHEDULE_WAIT_SECONDS and then
    writes its entities itself.
    """

    def __init__(self) -> None:
        self.holding = threading.Event()
        self._released = threading.Event()

    def __call__(self, job: tp.Job) -> None:
        if job.status is Status.RUNNING and not self.holding.is_set():
            self.holding.set()
            self._released.wait(WAIT_SECONDS)

    def release(self) -> None:
        self._released.set()


# -- one entity that cannot be encoded must not block the others --------------------


def test_submit_rejects_unstorable_property() -> None:
    # Found by an attack: standalone submit() returned normally and the error
    # surfaced only in the manager thread's log, where development mode raised.
    scenario = tp.create_scenario(double_config())

    with pytest.raises(TypeError, match="pickle"):
        tp.submit(scenario, lock=threading.Lock())


def test_unstorable_property_blocks_later_writes(standalone: Path) -> None:
    # Found by an attack: a submission that could not be encoded stayed in the
    # manager thread's pending batch, so every later write failed on it, for every
    # submission, and stop() ended the manager thread with the same TypeError.
    poisoned = tp.create_scenario(double_config("poisoned"))
    healthy = tp.create_scenario(double_config("healthy"))
    with contextlib.suppress(TypeError):
        tp.submit(poisoned, lock=threading.Lock())

    submission = healthy.submit(wait=True, timeout=WAIT_SECONDS)

    assert submission.submission_status is SubmissionStatus.COMPLETED
    wait_until(
        lambda: submission.id in stored_docs(standalone, "submission"),
        10.0,
        f"{submission.id} to be written to entities.db",
    )


# -- submit() must not raise once its jobs are queued ----------------------------------


def test_fallback_write_error_but_jobs_run(standalone: Path) -> None:
    # Found by an attack: when the manager thread is busy past
    # SCHEDULE_WAIT_SECONDS, submit() writes the handed-over entities itself. That
    # write failed and submit() raised, although the command was queued and its
    # jobs ran later: a user who submitted again ran everything twice.
    hold = SchedulerHold()
    first = tp.create_scenario(double_config("first"))
    second = tp.create_scenario(double_config("second"))
    raised: BaseException | None = None
    try:
        first.submit(callbacks=[hold])
        assert hold.holding.wait(WAIT_SECONDS), "the first job never ran"
        set_job_writes_failing(standalone, True)
        try:
            second.submit()
        except sqlite3.DatabaseError as error:
            raised = error
    finally:
        set_job_writes_failing(standalone, False)
        hold.release()

    output = second.second_doubled
    deadline = time.monotonic() + 20.0
    while output.last_edit_date is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert raised is None or output.last_edit_date is None, (
        f"submit() raised {raised!r}, yet its job ran and wrote {output.id}"
    )


# -- submit() must not return before its entities are written --------------------------


def test_slow_callback_submit_returns_unstored(standalone: Path) -> None:
    # Found by an attack: the manager thread takes the handed-over saves first in
    # _handle("submit"), then runs the job callbacks of the PENDING transitions. A
    # callback slower than SCHEDULE_WAIT_SECONDS made submit() stop waiting and
    # return with nothing in the file, while its job could already run.
    released = threading.Event()

    def slow_on_pending(job: tp.Job) -> None:
        if job.status is Status.PENDING:
            released.wait(WAIT_SECONDS)

    scenario = tp.create_scenario(double_config())
    try:
        submission = scenario.submit(callbacks=[slow_on_pending])
        snapshot = stored_snapshot(standalone)
    finally:
        released.set()

    assert submission.id in snapshot["submission"]
    for job_id in submission.job_ids:
        assert job_id in snapshot["job"], f"{job_id} not stored"
    assert submission.wait(WAIT_SECONDS)


# -- durability of what submit() returns ------------------------------------


def test_many_jobs_stored_when_submit_returns(standalone: Path, tmp_path: Path) -> None:
    # 2,000 jobs: every job row, the submission row and the lock of every
    # output whose job has not finished are in the file when submit() returns.
    gate = tmp_path / "gate"
    scenario = tp.create_scenario(gated_fan_config(gate, 2000))

    submission = scenario.submit()
    snapshot = stored_snapshot(standalone)
    gate.touch()

    assert submission.id in snapshot["submission"]
    jobs = snapshot["job"]
    missing = [job_id for job_id in submission.job_ids if job_id not in jobs]
    assert not missing, f"{len(missing)} job rows missing, e.g. {missing[:3]}"
    submitted = [
        job_id for job_id in submission.job_ids if jobs[job_id]["status"] == "SUBMITTED"
    ]
    assert not submitted, f"{len(submitted)} jobs stored as SUBMITTED"
    unlocked = [
        job.task.output_ids[0]
        for job in submission.jobs
        if jobs[job.id]["status"] in ("PENDING", "RUNNING")
        and not snapshot["data_node"][job.task.output_ids[0]]["edit_in_progress"]
    ]
    assert not unlocked, f"{len(unlocked)} outputs of unfinished jobs not locked"
    assert submission.wait(120.0)
    assert submission.submission_status is SubmissionStatus.COMPLETED


def test_timed_out_submit_stores_entities(standalone: Path) -> None:
    # The manager thread is held in a job callback, so submit() waits
    # SCHEDULE_WAIT_SECONDS and writes its entities itself, SUBMITTED and locked.
    # Meanwhile another connection commits: refresh() must not undo the lock that
    # is not written yet. When the thread is released the jobs run normally.
    hold = SchedulerHold()
    first = tp.create_scenario(double_config("first"))
    second = tp.create_scenario(double_config("second"))
    output = second.second_doubled
    result: list[tp.Submission] = []
    submitter = threading.Thread(target=lambda: result.append(second.submit()))
    try:
        first.submit(callbacks=[hold])
        assert hold.holding.wait(WAIT_SECONDS), "the first job never ran"
        started = time.monotonic()
        submitter.start()
        wait_until(lambda: output.edit_in_progress, 10.0, f"{output.id} to lock")
        assert stored_docs(standalone, "data_node")[output.id]["edit_in_progress"] is (
            False
        )
        with contextlib.closing(sqlite3.connect(standalone / "entities.db")) as other:
            other.execute("UPDATE meta SET value = value WHERE key = 'schema_version'")
            other.commit()
        assert output.edit_in_progress is True

        submitter.join(SCHEDULE_WAIT_SECONDS + 10.0)
        assert result, "submit() did not return"
        assert time.monotonic() - started >= SCHEDULE_WAIT_SECONDS - 0.5
        snapshot = stored_snapshot(standalone)
        assert result[0].id in snapshot["submission"]
        [job_id] = result[0].job_ids
        assert snapshot["job"][job_id]["status"] == "SUBMITTED"
        assert snapshot["data_node"][output.id]["edit_in_progress"] is True
    finally:
        hold.release()
        submitter.join(SCHEDULE_WAIT_SECONDS + 10.0)
    assert result[0].wait(WAIT_SECONDS)
    assert output.read() == 42
    wait_until(
        lambda: stored_docs(standalone, "job")[job_id]["status"] == "COMPLETED",
        10.0,
        f"{job_id} to be stored COMPLETED",
    )


def test_concurrent_submits_all_stored(standalone: Path) -> None:
    # Eight threads submit at once; each submission is complete in the
    # file when its own submit() returns.
    scenarios = [tp.create_scenario(double_config()) for _ in range(8)]
    problems: list[str] = []
    submissions: list[tp.Submission] = []
    barrier = threading.Barrier(len(scenarios))

    def submit(scenario: tp.Scenario) -> None:
        barrier.wait(WAIT_SECONDS)
        submission = scenario.submit()
        submissions.append(submission)
        snapshot = stored_snapshot(standalone)
        if submission.id not in snapshot["submission"]:
            problems.append(f"{submission.id} not stored")
        for job_id in submission.job_ids:
            if job_id not in snapshot["job"]:
                problems.append(f"{job_id} not stored")

    threads = [threading.Thread(target=submit, args=(s,)) for s in scenarios]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_SECONDS)
    assert len(submissions) == len(scenarios)
    assert not problems, problems
    for submission in submissions:
        assert submission.wait(WAIT_SECONDS)


def test_callback_submission_gets_stored(standalone: Path) -> None:
    # A submit() from a job callback runs on the manager thread, so it
    # neither hands over nor waits: its saves join the thread's own batch. They
    # must still reach the file, and its job must run.
    first = tp.create_scenario(double_config("first"))
    second = tp.create_scenario(double_config("second"))
    callback_submissions: list[tp.Submission] = []

    def submit_second(job: tp.Job) -> None:
        if job.status is Status.COMPLETED and not callback_submissions:
            callback_submissions.append(second.submit())

    first.submit(callbacks=[submit_second], wait=True, timeout=WAIT_SECONDS)

    assert callback_submissions, "the callback did not submit"
    assert callback_submissions[0].wait(WAIT_SECONDS)
    assert second.second_doubled.read() == 42
    [job_id] = callback_submissions[0].job_ids
    wait_until(
        lambda: (
            stored_docs(standalone, "job").get(job_id, {}).get("status") == "COMPLETED"
        ),
        10.0,
        f"{job_id} to be stored COMPLETED",
    )
    assert callback_submissions[0].id in stored_docs(standalone, "submission")


def test_killed_after_submit_reconciles(standalone: Path, tmp_path: Path) -> None:
    # A process killed with SIGKILL right after submit() returns leaves
    # rows that the next process settles: each unfinished job gets a final status
    # and a reason, and every output lock is released.
    gate = tmp_path / "gate"
    ready = tmp_path / "submitted"
    log = tmp_path / "child.log"
    child = start_python(
        f"""
        import json, os, pathlib, signal
        import psutil
        if __name__ == "__main__":
            import jupyter_scenarios as tp
            from jupyter_scenarios import Config
            from test_attack_handover import gated_fan_config
            Config.configure_core(storage_folder={str(standalone)!r})
            Config.configure_job_executions(mode="standalone", max_nb_of_workers=2)
            scenario = tp.create_scenario(
                gated_fan_config(pathlib.Path({str(gate)!r}), 300)
            )
            submission = scenario.submit()
            workers = [p.pid for p in psutil.Process().children(recursive=True)]
            pathlib.Path({str(ready)!r}).write_text(
                json.dumps([submission.id, workers])
            )
            os.kill(os.getpid(), signal.SIGKILL)
        """,
        log,
    )
    try:
        child.wait(WAIT_SECONDS)
    finally:
        if child.poll() is None:
            child.kill()
        gate.touch()
    assert child.returncode == -signal.SIGKILL, log.read_text()
    submission_id, workers = json.loads(ready.read_text())
    assert not wait_gone(workers, 30.0), "worker processes outlived their kernel"

    completed = run_python(
        f"""
        import json
        import jupyter_scenarios as tp
        from jupyter_scenarios import Config
        Config.configure_core(storage_folder={str(standalone)!r})
        submission = tp.get({submission_id!r})
        print(json.dumps({{
            "status": submission.submission_status.name,
            "jobs": [
                [job.status.name, job.reason]
                for job in submission.jobs
            ],
            "locked": [
                node.id for node in tp.get_data_nodes() if node.edit_in_progress
            ],
        }}))
        tp.Orchestrator().stop()
        """
    )
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    statuses = {status for status, _ in report["jobs"]}
    assert len(report["jobs"]) == 300
    assert statuses <= {"FAILED", "ABANDONED"}, statuses
    assert all(reason for _, reason in report["jobs"])
    assert report["locked"] == []
    # Jobs still PENDING in the file (queued in the pool) become ABANDONED, and
    # derive_status makes a submission whose jobs are all ABANDONED UNDEFINED.
    assert report["status"] in ("FAILED", "UNDEFINED"), report["status"]


# -- jobs handed to the executor beyond its free slots ------------------------------


def test_extra_queued_jobs_cancel_and_overlap(tmp_path: Path) -> None:
    # With 1 worker, a 60-job submission gets extra jobs queued in the
    # executor before the first write. Cancelling them all before they start must
    # cancel each one, and at most one job ever runs at once.
    Config.configure_job_executions(mode="standalone", max_nb_of_workers=1)
    gate = tmp_path / "gate"
    scenario = tp.create_scenario(gated_fan_config(gate, 60))
    submission = scenario.submit()
    jobs = submission.jobs
    wait_until(
        lambda: any(job.status is Status.RUNNING for job in jobs),
        WAIT_SECONDS,
        "a job to run",
    )
    [running] = [job for job in jobs if job.status is Status.RUNNING]
    for job in jobs:
        if job is not running and job.status is Status.PENDING:
            tp.cancel_job(job)
    gate.touch()
    assert submission.wait(WAIT_SECONDS)
    wait_status(running, Status.COMPLETED)
    others = [job for job in jobs if job is not running]
    statuses = {job.status for job in others}
    assert statuses == {Status.CANCELED}, statuses
    intervals = [running_interval(job) for job in jobs if job.run_at is not None]
    assert max_overlap(intervals) == 1
    assert os.path.exists(gate)
