"""Entities as a Taipy user sees them: jobs, submissions, data nodes, the task wrapper.

Most tests build entities through the public API in development mode. The submission
status tests also drive jobs through ``Job._set_status`` directly, the way the
scheduler does, so that every combination of job statuses can be reached.
"""

from __future__ import annotations

import itertools
import sqlite3
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from engine_fixtures import engine as engine_fixture  # noqa: F401 - fixture

import jupyter_scenarios as tp
from jupyter_scenarios import (
    Config,
    EntityType,
    Job,
    Status,
    Submission,
    SubmissionStatus,
    _runtime,
)
from jupyter_scenarios.entities.submission import derive_status
from jupyter_scenarios.exceptions import (
    DataNodeIsBeingEdited,
    JobNotDeletedException,
    SubmissionNotDeletedException,
)
from jupyter_scenarios.worker import NodeSpec, TaskRun, run_task

pytestmark = pytest.mark.usefixtures("engine")

FINAL = [
    Status.COMPLETED,
    Status.SKIPPED,
    Status.FAILED,
    Status.CANCELED,
    Status.ABANDONED,
]
UNFINISHED = [Status.SUBMITTED, Status.BLOCKED, Status.PENDING, Status.RUNNING]


def double(value: int) -> int:
    return 2 * value


def fail(value: Any) -> None:
    raise RuntimeError(f"task refused {value!r}")


def return_lock(value: Any) -> Any:
    return threading.Lock()


def pair(value: int) -> tuple[int, int]:
    return value, value + 1


def triple(value: int) -> tuple[int, int, int]:
    return value, value + 1, value + 2


def two_step_scenario(default: Any = 2) -> tp.Scenario:
    extra = {} if default is None else {"default_data": default}
    my_input = Config.configure_data_node("my_input", **extra)
    middle = Config.configure_data_node("middle")
    my_output = Config.configure_data_node("my_output")
    first = Config.configure_task("first", double, my_input, middle, name="First step")
    second = Config.configure_task("second", double, middle, my_output)
    return tp.create_scenario(Config.configure_scenario("two_steps", [first, second]))


def manual_submission(
    scenario: tp.Scenario, count: int = 2
) -> tuple[Submission, list[Job]]:
    """Create a submission with ``count`` SUBMITTED jobs, bypassing the scheduler."""
    store = _runtime.store()
    submission = Submission(
        store,
        entity_id=scenario.id,
        entity_type=EntityType.SCENARIO,
        entity_config_id=scenario.config_id,
    )
    submission._save()
    tasks = list(scenario.tasks.values())
    jobs = []
    for index in range(count):
        job = Job(
            store,
            task=tasks[index % len(tasks)],
            submit_id=submission.id,
            submit_entity_id=scenario.id,
        )
        job._save()
        jobs.append(job)
    submission._add_jobs(jobs)
    return submission, jobs


def stored_doc(entity_id: str, kind: str) -> dict[str, Any]:
    """Read an entity's JSON document straight from the SQLite file."""
    import json

    path = _runtime.store().path
    with sqlite3.connect(path) as connection:
        row = connection.execute(
            f"SELECT doc FROM {kind} WHERE id = ?", (entity_id,)
        ).fetchone()
    assert row is not None, f"{entity_id} is not in {path}"
    return json.loads(row[0])  # type: ignore[no-any-return]


# -- jobs -------------------------------------------------------------------------------


def test_jobs_compare_by_id_only() -> None:
    scenario = two_step_scenario()
    first, second = scenario.submit().jobs

    assert first == tp.get(first.id)
    assert first != second
    assert first != first.id
    assert first != scenario.tasks["first"]
    assert first < second
    assert first <= second
    assert second > first
    assert second >= first
    assert len({first, tp.get(first.id)}) == 1


def test_new_job_attributes() -> None:
    scenario = two_step_scenario()
    submission, jobs = manual_submission(scenario, 1)
    job = jobs[0]
    task = scenario.tasks["first"]

    assert job.status is Status.SUBMITTED
    assert task in job
    assert scenario.tasks["second"] not in job
    assert job.submit_id == submission.id
    assert job.submit_entity_id == scenario.id
    assert job.submit_entity == scenario
    assert job.get_label() == f"{task.get_label()} > {job.id}"
    assert "First step" in job.get_label()


def test_job_wait_before_and_after_finish() -> None:
    # A job makes its finished event on the first wait(). Waiters that came
    # before the end are woken by it, and later ones return at once.
    scenario = two_step_scenario()
    _, jobs = manual_submission(scenario, 20)
    results: list[bool] = []
    waiters = [
        threading.Thread(target=lambda job=job: results.append(job.wait(10)))
        for job in jobs
    ]
    for waiter in waiters:
        waiter.start()
    for job in jobs:
        assert not job.wait(0)
        job._set_status(Status.COMPLETED)
    for waiter in waiters:
        waiter.join(10)
    assert results == [True] * len(jobs)
    assert all(job.wait(0) for job in jobs)

    _, unwatched = manual_submission(scenario, 1)
    unwatched[0]._set_status(Status.FAILED)
    assert unwatched[0].wait(0)


def test_job_id_embeds_task_config_id() -> None:
    scenario = two_step_scenario()

    submission = scenario.submit(force=True)

    first, second = submission.jobs
    assert "first" in first.id
    assert "second" in second.id
    assert first.id.startswith("JOB_")
    assert first.force is True
    assert first.submit_id == submission.id


@pytest.mark.parametrize("status", list(Status))
def test_status_predicates_match(status: Status) -> None:
    scenario = two_step_scenario()
    _, jobs = manual_submission(scenario, 1)
    job = jobs[0]
    for previous in reversed(list(Status)):
        job._set_status(previous)

    job._set_status(status)

    predicates = {
        Status.SUBMITTED: job.is_submitted,
        Status.BLOCKED: job.is_blocked,
        Status.PENDING: job.is_pending,
        Status.RUNNING: job.is_running,
        Status.CANCELED: job.is_canceled,
        Status.FAILED: job.is_failed,
        Status.COMPLETED: job.is_completed,
        Status.SKIPPED: job.is_skipped,
        Status.ABANDONED: job.is_abandoned,
    }
    for other, predicate in predicates.items():
        assert predicate() is (other is status), other
    assert job.is_finished() is (status in FINAL)


def test_stacktrace_accepts_any_strings() -> None:
    scenario = two_step_scenario()
    _, jobs = manual_submission(scenario, 1)
    job = jobs[0]

    job.stacktrace = ["first line", "", "ünïcode ✓"]

    assert job.stacktrace == ["first line", "", "ünïcode ✓"]
    assert stored_doc(job.id, "job")["stacktrace"] == ["first line", "", "ünïcode ✓"]


def test_subscriber_called_once_per_transition() -> None:
    scenario = two_step_scenario()
    calls: dict[str, list[Status]] = {}

    def record(job: Job) -> None:
        calls.setdefault(job.id, []).append(job.status)

    submission = scenario.submit(callbacks=[record])

    for job in submission.jobs:
        transitions = [status for status, _ in job.status_history[1:]]
        assert calls[job.id] == transitions


def test_user_exception_fails_job() -> None:
    my_input = Config.configure_data_node("my_input", default_data="x")
    my_output = Config.configure_data_node("my_output")
    task = Config.configure_task("fail", fail, my_input, my_output)
    scenario = tp.create_scenario(Config.configure_scenario("fails", [task]))

    job = scenario.submit().jobs[0]

    assert job.status is Status.FAILED
    assert "RuntimeError: task refused 'x'" in job.stacktrace[0]


def test_missing_input_file_fails_job() -> None:
    scenario = two_step_scenario()
    assert scenario.my_input.path is not None
    scenario.my_input.path.unlink()

    job = scenario.submit().jobs[0]

    assert job.status is Status.FAILED
    assert "NoData" in job.stacktrace[0]
    assert scenario.my_input.id in job.stacktrace[0]


def test_output_write_error_fails_job() -> None:
    my_input = Config.configure_data_node("my_input", default_data=1)
    my_output = Config.configure_data_node("my_output")
    task = Config.configure_task("lock_maker", return_lock, my_input, my_output)
    scenario = tp.create_scenario(Config.configure_scenario("unpicklable", [task]))

    job = scenario.submit().jobs[0]

    assert job.status is Status.FAILED
    assert "DataNodeWritingError" in job.stacktrace[0]
    assert "my_output" in job.stacktrace[0]
    assert scenario.my_output.last_edit_date is None
    assert scenario.my_output.edit_in_progress is False


def test_job_changes_shared_between_references() -> None:
    scenario = two_step_scenario()
    job = scenario.submit().jobs[0]
    other = tp.get(job.id)

    job.stacktrace = ["changed"]

    assert other.stacktrace == ["changed"]
    assert stored_doc(job.id, "job")["stacktrace"] == ["changed"]


def test_job_with_block_defers_write() -> None:
    scenario = two_step_scenario()
    job = scenario.submit().jobs[0]

    with job:
        job.stacktrace = ["inside the block"]
        assert stored_doc(job.id, "job")["stacktrace"] == []

    assert stored_doc(job.id, "job")["stacktrace"] == ["inside the block"]


def test_status_history_and_durations() -> None:
    scenario = two_step_scenario()
    _, jobs = manual_submission(scenario, 1)
    job = jobs[0]
    submitted_at = job.submitted_at

    job._set_status(Status.BLOCKED)
    time.sleep(0.05)
    job._set_status(Status.PENDING)
    time.sleep(0.05)
    job._set_status(Status.RUNNING)
    time.sleep(0.05)
    running_so_far = job.execution_duration
    job._set_status(Status.COMPLETED)

    history = job.status_history
    assert [status for status, _ in history] == [
        Status.SUBMITTED,
        Status.BLOCKED,
        Status.PENDING,
        Status.RUNNING,
        Status.COMPLETED,
    ]
    assert history[0][1] == submitted_at
    times = [when for _, when in history]
    assert times == sorted(times)
    assert job.blocked_duration == (times[2] - times[1]).total_seconds()
    assert job.pending_duration == (times[3] - times[2]).total_seconds()
    assert job.execution_duration == (times[4] - times[3]).total_seconds()
    assert job.blocked_duration >= 0.05
    assert running_so_far >= 0.05
    assert job.run_at == times[3]
    assert job.finished_at == times[4]


def test_get_jobs_and_latest_job() -> None:
    scenario = two_step_scenario()
    task = scenario.tasks["first"]
    assert tp.get_latest_job(task) is None

    first = scenario.submit()
    second = scenario.submit()

    assert tp.get(first.jobs[0].id) == first.jobs[0]
    assert tp.get("JOB_unknown_0") is None
    assert set(tp.get_jobs()) == set(first.jobs + second.jobs)
    assert tp.get_latest_job(task) == second.jobs[0]


def test_delete_finished_job() -> None:
    scenario = two_step_scenario()
    job = scenario.submit().jobs[0]

    submission = tp.get(job.submit_id)
    tp.delete_job(job)

    assert tp.get(job.id) is None
    assert job not in tp.get_jobs()
    # The stored submission stops naming it too.
    assert job.id not in submission._job_ids
    _runtime.store().reload(submission)
    assert job.id not in submission._job_ids


@pytest.mark.parametrize("status", UNFINISHED)
def test_delete_unfinished_job_needs_force(status: Status) -> None:
    scenario = two_step_scenario()
    _, jobs = manual_submission(scenario, 1)
    job = jobs[0]
    job._set_status(status)

    with pytest.raises(JobNotDeletedException, match=job.id):
        tp.delete_job(job)
    assert tp.get(job.id) is not None

    tp.delete_job(job, force=True)

    assert tp.get(job.id) is None


@pytest.mark.parametrize("status", list(Status))
def test_job_deletable_iff_finished(status: Status) -> None:
    scenario = two_step_scenario()
    _, jobs = manual_submission(scenario, 1)
    job = jobs[0]
    job._set_status(status)

    assert tp.is_deletable(job) is (status in FINAL)
    assert tp.is_deletable(job.id) is (status in FINAL)


def test_unknown_entity_not_deletable() -> None:
    assert tp.is_deletable("JOB_does_not_exist_0") is False


# -- the task wrapper -------------------------------------------------------------------


def node_spec(folder: Path, name: str) -> NodeSpec:
    return NodeSpec(
        id=f"DATANODE_{name}_0",
        config_id=name,
        storage_type="pickle",
        properties={},
        folder=str(folder),
    )


def make_run(folder: Path, function: Any, outputs: list[str]) -> TaskRun:
    source = node_spec(folder, "source")
    source.backend().write(5)
    return TaskRun(
        job_id="JOB_wrapper_0",
        task_config_id="wrapper",
        function=function,
        inputs=(source,),
        outputs=tuple(node_spec(folder, name) for name in outputs),
        stage_outputs=False,
    )


def test_tuple_result_spread_over_outputs(tmp_path: Path) -> None:
    run = make_run(tmp_path, pair, ["low", "high"])

    result = run_task(run)

    assert result.ok, result.errors
    assert run.outputs[0].backend().read() == 5
    assert run.outputs[1].backend().read() == 6


def test_tuple_result_kept_whole_for_one_output(tmp_path: Path) -> None:
    run = make_run(tmp_path, pair, ["both"])

    result = run_task(run)

    assert result.ok, result.errors
    assert run.outputs[0].backend().read() == (5, 6)


def test_wrong_result_count_reports_error(tmp_path: Path) -> None:
    run = make_run(tmp_path, triple, ["low", "high"])

    result = run_task(run)

    assert result.ok is False
    assert len(result.errors) == 1
    assert "2 outputs" in result.errors[0]
    assert "returned 3 values" in result.errors[0]
    for spec in run.outputs:
        assert spec.backend().exists() is False, spec.config_id


def test_wrong_result_count_fails_job() -> None:
    my_input = Config.configure_data_node("my_input", default_data=1)
    low = Config.configure_data_node("low")
    high = Config.configure_data_node("high")
    task = Config.configure_task("split", triple, my_input, [low, high])
    scenario = tp.create_scenario(Config.configure_scenario("split", [task]))

    job = scenario.submit().jobs[0]

    assert job.status is Status.FAILED
    assert "2 outputs (low, high)" in job.stacktrace[0]
    assert "returned 3 values" in job.stacktrace[0]
    assert scenario.low.last_edit_date is None
    assert scenario.high.last_edit_date is None


# -- submissions ------------------------------------------------------------------------


def test_new_submission_defaults() -> None:
    scenario = two_step_scenario()
    store = _runtime.store()
    before = datetime.now()

    submission = Submission(
        store,
        entity_id=scenario.id,
        entity_type=EntityType.SCENARIO,
        entity_config_id=scenario.config_id,
    )

    assert submission.id.startswith("SUBMISSION_")
    assert submission.jobs == []
    assert submission.job_ids == []
    assert before <= submission.creation_date <= datetime.now()
    assert submission.submission_status is SubmissionStatus.SUBMITTED
    assert isinstance(submission.version, str)
    other = Submission(
        store,
        entity_id=scenario.id,
        entity_type=EntityType.SCENARIO,
        entity_config_id=scenario.config_id,
        properties={"key": "value"},
        id="SUBMISSION_explicit",
    )
    assert other.id == "SUBMISSION_explicit"
    assert other.properties == {"key": "value"}
    assert other != submission
    assert other == Submission(
        store,
        entity_id="x",
        entity_type=EntityType.TASK,
        entity_config_id=None,
        id="SUBMISSION_explicit",
    )


@pytest.mark.parametrize(
    ("job_status", "expected"),
    [
        (Status.SUBMITTED, SubmissionStatus.SUBMITTED),
        (Status.FAILED, SubmissionStatus.FAILED),
        (Status.CANCELED, SubmissionStatus.CANCELED),
        (Status.BLOCKED, SubmissionStatus.BLOCKED),
        (Status.PENDING, SubmissionStatus.PENDING),
        (Status.RUNNING, SubmissionStatus.RUNNING),
        (Status.COMPLETED, SubmissionStatus.COMPLETED),
        (Status.SKIPPED, SubmissionStatus.COMPLETED),
        (Status.ABANDONED, SubmissionStatus.UNDEFINED),
    ],
)
def test_single_job_status_table(
    job_status: Status, expected: SubmissionStatus
) -> None:
    assert derive_status([job_status]) is expected


def expected_status(statuses: tuple[Status, ...]) -> SubmissionStatus:
    """Restate the precedence rules independently of the engine's loop."""
    present = set(statuses)
    if Status.FAILED in present:
        return SubmissionStatus.FAILED
    if Status.CANCELED in present:
        return SubmissionStatus.CANCELED
    if Status.RUNNING in present:
        return SubmissionStatus.RUNNING
    if Status.PENDING in present:
        return SubmissionStatus.PENDING
    if Status.BLOCKED in present:
        return SubmissionStatus.BLOCKED
    if Status.SUBMITTED in present:
        return SubmissionStatus.SUBMITTED
    if all(status in (Status.COMPLETED, Status.SKIPPED) for status in statuses):
        return SubmissionStatus.COMPLETED
    return SubmissionStatus.UNDEFINED


def test_status_table_for_every_combination() -> None:
    for size in (2, 3):
        for combination in itertools.product(list(Status), repeat=size):
            assert derive_status(combination) is expected_status(combination), (
                combination
            )
            for order in itertools.permutations(combination):
                assert derive_status(order) is derive_status(combination), order


@pytest.mark.parametrize("other", list(Status))
def test_failed_job_wins_in_any_order(other: Status) -> None:
    assert derive_status([Status.FAILED, other]) is SubmissionStatus.FAILED
    assert derive_status([other, Status.FAILED]) is SubmissionStatus.FAILED


@pytest.mark.parametrize("other", [s for s in Status if s is not Status.FAILED])
def test_canceled_job_wins_without_failure(other: Status) -> None:
    assert derive_status([Status.CANCELED, other]) is SubmissionStatus.CANCELED
    assert derive_status([other, Status.CANCELED]) is SubmissionStatus.CANCELED


def test_precedence_below_cancel() -> None:
    assert derive_status([Status.COMPLETED, Status.RUNNING, Status.PENDING]) is (
        SubmissionStatus.RUNNING
    )
    assert derive_status([Status.BLOCKED, Status.PENDING]) is SubmissionStatus.PENDING
    assert derive_status([Status.COMPLETED, Status.BLOCKED]) is SubmissionStatus.BLOCKED
    assert derive_status([Status.SKIPPED, Status.COMPLETED]) is (
        SubmissionStatus.COMPLETED
    )
    assert derive_status([Status.ABANDONED, Status.COMPLETED]) is (
        SubmissionStatus.UNDEFINED
    )
    assert derive_status([Status.ABANDONED, Status.RUNNING]) is SubmissionStatus.RUNNING


def step_through(
    submission: Submission, jobs: list[Job], steps: list[tuple[int, Status]]
) -> list[SubmissionStatus]:
    observed = []
    for index, status in steps:
        jobs[index]._set_status(status)
        submission._refresh_status()
        observed.append(submission.submission_status)
    return observed


def test_one_job_step_by_step() -> None:
    submission, jobs = manual_submission(two_step_scenario(), 1)

    observed = step_through(
        submission,
        jobs,
        [(0, Status.PENDING), (0, Status.RUNNING), (0, Status.COMPLETED)],
    )

    assert observed == [
        SubmissionStatus.PENDING,
        SubmissionStatus.RUNNING,
        SubmissionStatus.COMPLETED,
    ]
    assert submission.is_finished()


def test_blocked_job_released_step_by_step() -> None:
    submission, jobs = manual_submission(two_step_scenario(), 2)

    observed = step_through(
        submission,
        jobs,
        [
            (0, Status.PENDING),
            (1, Status.BLOCKED),
            (0, Status.RUNNING),
            (0, Status.COMPLETED),
            (1, Status.PENDING),
            (1, Status.RUNNING),
            (1, Status.COMPLETED),
        ],
    )

    assert observed == [
        SubmissionStatus.PENDING,
        SubmissionStatus.PENDING,
        SubmissionStatus.RUNNING,
        SubmissionStatus.BLOCKED,
        SubmissionStatus.PENDING,
        SubmissionStatus.RUNNING,
        SubmissionStatus.COMPLETED,
    ]


def test_skip_failure_and_cancel_steps() -> None:
    skipped, skipped_jobs = manual_submission(two_step_scenario(), 2)
    assert step_through(
        skipped,
        skipped_jobs,
        [
            (0, Status.SKIPPED),
            (1, Status.PENDING),
            (1, Status.RUNNING),
            (1, Status.COMPLETED),
        ],
    ) == [
        SubmissionStatus.SUBMITTED,
        SubmissionStatus.PENDING,
        SubmissionStatus.RUNNING,
        SubmissionStatus.COMPLETED,
    ]
    failed, failed_jobs = manual_submission(two_step_scenario(), 2)
    assert step_through(
        failed,
        failed_jobs,
        [
            (0, Status.RUNNING),
            (1, Status.BLOCKED),
            (0, Status.FAILED),
            (1, Status.ABANDONED),
        ],
    ) == [
        SubmissionStatus.RUNNING,
        SubmissionStatus.RUNNING,
        SubmissionStatus.FAILED,
        SubmissionStatus.FAILED,
    ]
    canceled, canceled_jobs = manual_submission(two_step_scenario(), 2)
    assert step_through(
        canceled,
        canceled_jobs,
        [
            (0, Status.PENDING),
            (1, Status.BLOCKED),
            (0, Status.CANCELED),
            (1, Status.ABANDONED),
        ],
    ) == [
        SubmissionStatus.PENDING,
        SubmissionStatus.PENDING,
        SubmissionStatus.CANCELED,
        SubmissionStatus.CANCELED,
    ]


def test_submission_shared_between_references() -> None:
    scenario = two_step_scenario()
    submission = scenario.submit()
    other = tp.get(submission.id)

    assert other is submission or (
        other.job_ids == submission.job_ids
        and other.submission_status is submission.submission_status
    )
    assert other.is_completed is True
    assert other.is_canceled is False
    assert other.is_abandoned is False
    doc = stored_doc(submission.id, "submission")
    assert doc["job_ids"] == submission.job_ids
    assert doc["status"] == "COMPLETED"


def test_submission_properties_are_persisted() -> None:
    scenario = two_step_scenario()
    submission = scenario.submit(origin="test")

    submission.properties["added"] = 1
    submission.properties.update({"updated": 2})
    submission.properties.pop("origin")

    assert stored_doc(submission.id, "submission")["properties"] == {
        "added": 1,
        "updated": 2,
    }


def test_submission_with_block_defers_write() -> None:
    scenario = two_step_scenario()
    submission = scenario.submit()

    with submission:
        submission.properties["inside"] = True
        assert "inside" not in stored_doc(submission.id, "submission")["properties"]

    assert stored_doc(submission.id, "submission")["properties"] == {"inside": True}


@pytest.mark.parametrize("status", list(SubmissionStatus))
def test_submission_finished_and_deletable(status: SubmissionStatus) -> None:
    submission, _ = manual_submission(two_step_scenario(), 1)
    submission._status = status

    finished = status in (
        SubmissionStatus.COMPLETED,
        SubmissionStatus.FAILED,
        SubmissionStatus.CANCELED,
    )
    assert submission.is_finished() is finished
    # Whatever its status, tp.delete would also delete the SUBMITTED job, so it
    # raises, and both tp.is_deletable and the method return False.
    assert tp.is_deletable(submission) is False
    assert submission.is_deletable() is False
    with pytest.raises(SubmissionNotDeletedException):
        tp.delete(submission.id)


def test_submission_run_and_finish_times() -> None:
    submission, jobs = manual_submission(two_step_scenario(), 2)
    assert submission.run_at is None
    assert submission.execution_duration is None

    jobs[0]._set_status(Status.RUNNING)
    time.sleep(0.02)
    jobs[1]._set_status(Status.RUNNING)
    jobs[0]._set_status(Status.COMPLETED)

    assert submission.run_at == jobs[0].run_at
    assert submission.finished_at is None
    assert submission.execution_duration >= 0.02

    time.sleep(0.02)
    jobs[1]._set_status(Status.COMPLETED)

    assert submission.finished_at == jobs[1].finished_at
    assert (
        submission.execution_duration
        == (jobs[1].finished_at - jobs[0].run_at).total_seconds()
    )


def test_latest_submission_and_lookup() -> None:
    scenario = two_step_scenario()

    first = scenario.submit(label="one")
    second = scenario.submit(label="two")

    assert tp.get_latest_submission(scenario) == second
    assert tp.get(first.id).properties == {"label": "one"}
    assert tp.get("SUBMISSION_unknown_0") is None
    assert tp.get_submissions() == [first, second]


def test_delete_unfinished_submission_raises() -> None:
    scenario = two_step_scenario(default=None)
    submission = scenario.submit()
    assert submission.submission_status is SubmissionStatus.BLOCKED

    with pytest.raises(SubmissionNotDeletedException, match=submission.id):
        tp.delete(submission.id)
    assert tp.get(submission.id) is not None


def test_delete_submission_deletes_its_jobs_only() -> None:
    scenario = two_step_scenario()
    first = scenario.submit()
    second = scenario.submit()

    tp.delete(first.id)

    assert tp.get(first.id) is None
    for job in first.jobs:
        assert tp.get(job.id) is None
    for job in second.jobs:
        assert tp.get(job.id) is not None
    assert tp.get_submissions() == [second]


# -- data node locks, readiness and edits --------------------------------------------------


def test_data_node_lock_rules() -> None:
    scenario = two_step_scenario()
    node = scenario.my_input
    assert node.edit_in_progress is False
    assert node.editor_id is None
    assert node.editor_expiration_date is None

    node.lock_edit("alice")

    assert node.edit_in_progress is True
    assert node.editor_id == "alice"
    assert node.editor_expiration_date > datetime.now()
    with pytest.raises(DataNodeIsBeingEdited, match="alice"):
        node.lock_edit("bob")
    with pytest.raises(DataNodeIsBeingEdited):
        node.unlock_edit("bob")
    with pytest.raises(DataNodeIsBeingEdited):
        node.write(99, editor_id="bob")
    assert node.editor_id == "alice"

    node.lock_edit("alice")
    node.unlock_edit("alice")

    assert node.edit_in_progress is False
    assert node.editor_id is None

    node.lock_edit("alice")
    node.unlock_edit()
    assert node.edit_in_progress is False
    node.lock_edit()
    assert node.edit_in_progress is True
    assert node.editor_id is None
    assert node.editor_expiration_date is None
    node.unlock_edit()
    assert node.edit_in_progress is False


def test_unwritten_node_never_ready() -> None:
    scenario = two_step_scenario()
    node = scenario.middle

    for _ in range(2):
        node.lock_edit()
        assert node.is_ready_for_reading is False
        node.unlock_edit()
        assert node.is_ready_for_reading is False

    node.write(3, job_id="JOB_manual_0")

    assert node.is_ready_for_reading is True
    assert node.job_ids == ["JOB_manual_0"]


def test_each_write_appends_one_edit() -> None:
    scenario = two_step_scenario()
    node = scenario.middle

    node.write(1, job_id="JOB_a_0", reason="first")
    node.write(2, job_id="JOB_b_0", reason="second", source="unit test")

    edits = node.edits
    assert len(edits) == 2
    assert edits[0]["job_id"] == "JOB_a_0"
    assert edits[0]["reason"] == "first"
    assert edits[1]["job_id"] == "JOB_b_0"
    assert edits[1]["source"] == "unit test"
    assert datetime.fromisoformat(edits[1]["timestamp"]) == node.last_edit_date
    assert datetime.fromisoformat(edits[0]["timestamp"]) <= node.last_edit_date
    assert node.job_ids == ["JOB_a_0", "JOB_b_0"]


def test_submittable_follows_inputs() -> None:
    output = Config.configure_data_node("output")
    constant = Config.configure_task("constant", lambda: 1, [], output)
    no_inputs = tp.create_scenario(Config.configure_scenario("no_inputs", [constant]))
    assert tp.is_submittable(no_inputs)

    scenario = two_step_scenario(default=None)
    assert not tp.is_submittable(scenario)
    assert not tp.is_submittable(scenario.tasks["first"])
    reasons = tp.is_submittable(scenario).reasons
    assert reasons == {scenario.my_input.id: "my_input is not written."}

    scenario.my_input.write(1)
    assert tp.is_submittable(scenario)

    scenario.my_input.lock_edit("someone")
    assert not tp.is_submittable(scenario)
    assert str(tp.is_submittable(scenario)) == "my_input is being edited."
    scenario.my_input.unlock_edit("someone")
    assert tp.is_submittable(scenario.id)


def test_data_node_read_of_unwritten_warns() -> None:
    scenario = two_step_scenario()

    with pytest.warns(UserWarning, match="middle"):
        value = scenario.middle.read()

    assert value is None


def test_sequence_job_entity_resolves() -> None:
    my_input = Config.configure_data_node("my_input", default_data=1)
    my_output = Config.configure_data_node("my_output")
    task = Config.configure_task("only", double, my_input, my_output)
    config = Config.configure_scenario("seq", [task], sequences={"part": [task]})
    scenario = tp.create_scenario(config)
    sequence = scenario.sequences["part"]

    job = sequence.submit().jobs[0]

    assert job.submit_entity_id == sequence.id
    assert tp.get(sequence.id) == sequence
    assert job.submit_entity == sequence


def test_validity_period_expiration() -> None:
    period = Config.configure_data_node("timed", validity_period=timedelta(days=1))
    task = Config.configure_task("make", lambda: 1, [], period)
    scenario = tp.create_scenario(Config.configure_scenario("timed", [task]))
    scenario.submit()
    node = scenario.timed

    assert node.is_valid is True
    assert node.expiration_date == node.last_edit_date + timedelta(days=1)


def test_task_and_data_node_properties_persist() -> None:
    scenario = two_step_scenario()
    task = scenario.tasks["first"]
    task.properties["owner"] = "team a"
    scenario.my_input.properties["note"] = "checked"

    from jupyter_scenarios import _runtime
    from jupyter_scenarios.entities import register_factories
    from jupyter_scenarios.store import Store

    other = Store(_runtime.store().folder)
    register_factories(other)
    try:
        assert other.get(task.id).properties["owner"] == "team a"
        assert other.get(scenario.my_input.id).properties["note"] == "checked"
    finally:
        other.close()


def test_write_error_names_node_and_folder(tmp_path: Path) -> None:
    """A write that the file system refuses names the data node and the folder."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    out = Config.configure_pickle_data_node("refused", path=str(blocker / "out.p"))
    task = Config.configure_task("t", abs, Config.configure_data_node("n"), out)
    scenario = tp.create_scenario(Config.configure_scenario("s", [task]))

    with pytest.raises(OSError) as raised:
        scenario.refused.write(5)

    message = str(raised.value)
    assert "refused" in message
    assert str(blocker) in message
    assert "is a file, not a folder" in message
    assert scenario.refused.last_edit_date is None


def abs_scenario() -> tp.Scenario:
    """Return a new scenario of one task: out = abs(n), with n = -1."""
    source = Config.configure_data_node("n", default_data=-1)
    task = Config.configure_task("t", abs, source, Config.configure_data_node("out"))
    return tp.create_scenario(Config.configure_scenario("s", [task]))


def test_long_edit_history_keeps_row_small() -> None:
    """A node written many times keeps its whole history and a small row."""
    scenario = abs_scenario()
    for value in range(150):
        scenario.out.write(value, comment=f"write {value}")
    job_ids = [scenario.submit().jobs[0].id for _ in range(3)]

    comments = [edit.get("comment") for edit in scenario.out.edits]
    assert comments[:150] == [f"write {value}" for value in range(150)]
    assert scenario.out.job_ids == job_ids
    assert len(scenario.out.edits) == 153
    doc = stored_doc(scenario.out.id, "data_node")
    assert len(doc["edits"]) <= 64
    assert doc["archived_edits"] + len(doc["edits"]) == 153
    # Read back by a fresh object, as after a kernel restart.
    from jupyter_scenarios import _runtime
    from jupyter_scenarios.entities import register_factories
    from jupyter_scenarios.store import Store

    other = Store(_runtime.store().folder)
    register_factories(other)
    try:
        assert other.get(scenario.out.id).edits == scenario.out.edits
    finally:
        other.close()


def test_two_kernels_archive_one_history() -> None:
    """Two stores writing one GLOBAL node past the row's limit keep each edit once."""
    from jupyter_scenarios import _runtime
    from jupyter_scenarios.entities import register_factories
    from jupyter_scenarios.store import Store

    node = tp.create_global_data_node(
        Config.configure_data_node("shared", scope=tp.Scope.GLOBAL)
    )
    other = Store(_runtime.store().folder)
    register_factories(other)
    try:
        theirs = other.get(node.id)
        for value in range(80):
            node.write(value, comment=f"here {value}")
            theirs.write(value, comment=f"there {value}")

        for view in (node, other.get(node.id)):
            comments = [edit.get("comment") for edit in view.edits]
            assert len(comments) == 160, comments
            assert len(set(comments)) == 160
            assert comments[-2:] == ["here 79", "there 79"]
    finally:
        other.close()


def test_deleted_node_leaves_no_archive() -> None:
    """Deleting a scenario removes the archived edits of its data nodes."""
    from jupyter_scenarios import _runtime

    scenario = abs_scenario()
    for value in range(100):
        scenario.out.write(value)

    tp.delete(scenario.id)

    with sqlite3.connect(_runtime.store().path) as connection:
        (count,) = connection.execute("SELECT COUNT(*) FROM data_node_edit").fetchone()
    assert count == 0


def test_write_to_folder_path_says_so(tmp_path: Path) -> None:
    """A write whose path is a folder names it, in one readable sentence."""
    folder = tmp_path / "a_folder"
    folder.mkdir()
    out = Config.configure_pickle_data_node("out", path=str(folder))
    task = Config.configure_task("t", abs, Config.configure_data_node("n"), out)
    scenario = tp.create_scenario(Config.configure_scenario("s", [task]))

    with pytest.raises(IsADirectoryError) as raised:
        scenario.out.write(5)

    message = str(raised.value)
    assert f"{folder} is a folder" in message, message
    assert ".:" not in message, message
