"""Scheduler behaviour in development mode, as a Taipy user observes it.

Development mode runs every job synchronously in the submitting thread, so each test
can inspect the final state right after ``submit`` returns. Timing checks compare
timestamps with each other and with the task's own sleep; none of them bounds how
long anything may take.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import types
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from engine_fixtures import engine as engine_fixture  # noqa: F401 - fixture
from engine_fixtures import main_namespace

import jupyter_scenarios as tp
from jupyter_scenarios import Config, EntityType, Scope, Status, SubmissionStatus
from jupyter_scenarios.exceptions import NonExistingScenario, NonExistingTask

pytestmark = pytest.mark.usefixtures("engine")

SLEEP_SECONDS = 0.2


# -- task functions --------------------------------------------------------------------


def double(value: int) -> int:
    return 2 * value


def add_one_slowly(value: int) -> int:
    time.sleep(SLEEP_SECONDS)
    return value + 1


def sleep_then_double(value: int) -> int:
    time.sleep(SLEEP_SECONDS)
    return 2 * value


def add(left: int, right: int) -> int:
    return left + right


def fail(value: Any) -> None:
    raise ValueError(f"cannot handle {value!r}")


def no_input() -> int:
    return 7


CALLS: list[str] = []


def counted_double(value: int) -> int:
    CALLS.append("counted_double")
    return 2 * value


def counted_add_one(value: int) -> int:
    CALLS.append("counted_add_one")
    return value + 1


@pytest.fixture(autouse=True)
def clear_calls() -> None:
    CALLS.clear()


# -- configurations ----------------------------------------------------------------------


def chain_config(default: Any = 21) -> tp.Scenario:
    """Return a scenario ``my_input -> double -> middle -> add_one -> my_output``."""
    extra = {} if default is None else {"default_data": default}
    my_input = Config.configure_data_node("my_input", **extra)
    middle = Config.configure_data_node("middle")
    my_output = Config.configure_data_node("my_output")
    first = Config.configure_task("double", double, my_input, middle)
    second = Config.configure_task("add_one", add_one_slowly, middle, my_output)
    scenario_config = Config.configure_scenario(
        "chain", [first, second], sequences={"first_only": [first]}
    )
    return tp.create_scenario(scenario_config)


def diamond_config(default: Any = 3) -> tp.Scenario:
    """Return a 4-task scenario: two branches from ``my_input`` joined by ``join``.

    my_input -> left -> a; my_input -> right -> b; (a, b) -> join -> c;
    c -> last -> d.
    """
    extra = {} if default is None else {"default_data": default}
    my_input = Config.configure_data_node("my_input", **extra)
    a = Config.configure_data_node("a")
    b = Config.configure_data_node("b")
    c = Config.configure_data_node("c")
    d = Config.configure_data_node("d")
    tasks = [
        Config.configure_task("last", double, c, d),
        Config.configure_task("join", add, [a, b], c),
        Config.configure_task("left", double, my_input, a),
        Config.configure_task("right", double, my_input, b),
    ]
    return tp.create_scenario(Config.configure_scenario("diamond", tasks))


def jobs_by_task(submission: tp.Submission) -> dict[str, tp.Job]:
    return {job.task_config_id: job for job in submission.jobs}


# -- running a scenario ------------------------------------------------------------------


def test_submit_runs_every_job_before_returning() -> None:
    scenario = chain_config()
    input_edit = scenario.my_input.last_edit_date
    assert input_edit is not None

    submission = scenario.submit()

    statuses = [job.status for job in submission.jobs]
    assert statuses == [Status.COMPLETED, Status.COMPLETED]
    assert scenario.middle.read() == 42
    assert scenario.my_output.read() == 43
    assert scenario.middle.last_edit_date is not None
    assert scenario.my_output.last_edit_date is not None
    assert scenario.my_input.last_edit_date == input_edit
    assert scenario.my_output.last_edit_date > input_edit
    assert submission.submission_status is SubmissionStatus.COMPLETED


def test_jobs_come_in_dependency_order() -> None:
    scenario = diamond_config()

    submission = scenario.submit()

    order = [job.task_config_id for job in submission.jobs]
    assert len(order) == 4
    assert set(order[:2]) == {"left", "right"}
    assert order[2] == "join"
    assert order[3] == "last"
    assert scenario.d.read() == 24


def test_jobs_share_submit_id_and_entity() -> None:
    scenario = chain_config()

    first = scenario.submit()
    second = scenario.submit()

    assert first.id != second.id
    for submission in (first, second):
        for job in submission.jobs:
            assert job.submit_id == submission.id
            assert job.submit_entity_id == scenario.id
    assert {job.id for job in first.jobs}.isdisjoint(job.id for job in second.jobs)


def test_fresh_job_defaults() -> None:
    scenario = chain_config()
    before = datetime.now()

    submission = scenario.submit()

    after = datetime.now()
    for job in submission.jobs:
        assert job.force is False
        assert job.stacktrace == []
        assert before <= submission.creation_date <= job.creation_date <= after
        assert job.submitted_at == job.creation_date


def test_user_callbacks_see_each_transition() -> None:
    scenario = chain_config()
    seen: list[tuple[str, Status]] = []

    scenario.submit(
        callbacks=[lambda job: seen.append((job.task_config_id, job.status))]
    )

    double_statuses = [status for task, status in seen if task == "double"]
    add_statuses = [status for task, status in seen if task == "add_one"]
    assert double_statuses == [Status.PENDING, Status.RUNNING, Status.COMPLETED]
    assert add_statuses[0] is Status.BLOCKED
    assert add_statuses[-2:] == [Status.RUNNING, Status.COMPLETED]


def test_one_submission_entity_per_submit() -> None:
    scenario = chain_config()

    submission = tp.submit(scenario, note="first run", attempt=1)

    assert tp.get_submissions() == [submission]
    assert submission.job_ids == [job.id for job in submission.jobs]
    assert len(submission.jobs) == 2
    assert submission.entity_id == scenario.id
    assert submission.entity_type is EntityType.SCENARIO
    assert submission.entity_config_id == "chain"
    assert isinstance(submission.creation_date, datetime)
    assert submission.properties == {"note": "first run", "attempt": 1}
    assert tp.get_latest_submission(scenario) == submission


def test_successful_run_leaves_nothing_waiting() -> None:
    scenario = diamond_config()

    submission = scenario.submit()

    assert submission.submission_status is SubmissionStatus.COMPLETED
    assert submission.is_finished()
    unfinished = [job for job in tp.get_jobs() if not job.is_finished()]
    assert unfinished == []
    for node in scenario.data_nodes.values():
        assert node.edit_in_progress is False


def test_unwritten_input_blocks_every_job() -> None:
    scenario = diamond_config(default=None)

    submission = scenario.submit()

    assert [job.status for job in submission.jobs] == [Status.BLOCKED] * 4
    for name in ("a", "b", "c", "d"):
        assert scenario.data_nodes[name].edit_in_progress is True, name
    assert scenario.my_input.edit_in_progress is False
    assert submission.submission_status is SubmissionStatus.BLOCKED
    assert not tp.is_submittable(scenario)


def test_person_write_releases_blocked_jobs() -> None:
    scenario = diamond_config(default=None)
    submission = scenario.submit()
    assert submission.submission_status is SubmissionStatus.BLOCKED

    scenario.my_input.write(5)

    assert [job.status for job in submission.jobs] == [Status.COMPLETED] * 4
    for job in submission.jobs:
        statuses = [status for status, _ in job.status_history]
        assert statuses[:3] == [Status.SUBMITTED, Status.BLOCKED, Status.PENDING]
    assert scenario.d.read() == 40
    assert submission.submission_status is SubmissionStatus.COMPLETED
    for name in ("a", "b", "c", "d"):
        assert scenario.data_nodes[name].edit_in_progress is False, name


def test_sequence_submission_runs_its_tasks_only() -> None:
    scenario = chain_config()
    sequence = scenario.sequences["first_only"]

    submission = sequence.submit()

    assert [job.task_config_id for job in submission.jobs] == ["double"]
    assert submission.jobs[0].submit_entity_id == sequence.id
    assert submission.entity_id == sequence.id
    assert submission.entity_type is EntityType.SEQUENCE
    assert submission.entity_config_id is None
    assert scenario.middle.read() == 42
    assert scenario.my_output.last_edit_date is None


def test_wait_with_timeout_returns_finished_submission(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scenario = chain_config()

    with caplog.at_level(logging.WARNING):
        submission = scenario.submit(wait=True, timeout=30)

    assert submission.is_finished()
    assert "timed out" not in caplog.text


def test_force_marks_jobs_forced() -> None:
    scenario = chain_config()

    submission = scenario.submit(force=True)

    assert [job.force for job in submission.jobs] == [True, True]


def test_task_submission_runs_one_task() -> None:
    scenario = chain_config()
    task = scenario.tasks["double"]

    submission = tp.submit(task)

    assert len(submission.jobs) == 1
    assert submission.jobs[0].status is Status.COMPLETED
    assert scenario.middle.read() == 42
    assert submission.submission_status is SubmissionStatus.COMPLETED
    assert submission.entity_type is EntityType.TASK
    assert submission.entity_config_id == "double"
    assert submission.entity_id == task.id


def test_task_with_unready_input_is_blocked() -> None:
    scenario = chain_config()
    task = scenario.tasks["add_one"]

    submission = task.submit()

    assert submission.jobs[0].status is Status.BLOCKED
    assert scenario.my_output.edit_in_progress is True
    assert submission.submission_status is SubmissionStatus.BLOCKED


def test_job_and_submission_timings() -> None:
    my_input = Config.configure_data_node("my_input", default_data=1)
    middle = Config.configure_data_node("middle")
    my_output = Config.configure_data_node("my_output")
    first = Config.configure_task("first", sleep_then_double, my_input, middle)
    second = Config.configure_task("second", add_one_slowly, middle, my_output)
    scenario = tp.create_scenario(Config.configure_scenario("timed", [first, second]))

    submission = scenario.submit()

    jobs = submission.jobs
    for job in jobs:
        assert job.submitted_at <= job.run_at <= job.finished_at
        assert job.execution_duration >= SLEEP_SECONDS
    assert submission.run_at == min(job.run_at for job in jobs)
    assert submission.finished_at == max(job.finished_at for job in jobs)
    total = sum(job.execution_duration for job in jobs)
    assert submission.execution_duration >= total
    assert jobs[0].finished_at <= jobs[1].run_at


def test_submit_deleted_scenario_raises() -> None:
    scenario = chain_config()
    scenario_id = scenario.id
    tp.delete(scenario_id)

    with pytest.raises(NonExistingScenario):
        tp.submit(scenario)
    with pytest.raises(NonExistingScenario):
        tp.submit(scenario_id)


def test_submit_with_missing_task_raises() -> None:
    scenario = chain_config()
    task_id = scenario.tasks["add_one"].id
    tp.delete(task_id)

    with pytest.raises(NonExistingTask, match=task_id):
        scenario.submit()


def test_missing_input_file_warns(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "absent.json"
    source = Config.configure_json_data_node("source", default_path=str(missing))
    target = Config.configure_data_node("target")
    task = Config.configure_task("copy", double, source, target)
    scenario = tp.create_scenario(Config.configure_scenario("reads_file", [task]))

    with caplog.at_level(logging.WARNING):
        scenario.submit()

    assert "source" in caplog.text
    assert str(missing) in caplog.text


# -- development executor and job outcomes -----------------------------------------------


def test_failing_task_records_traceback() -> None:
    my_input = Config.configure_data_node("my_input", default_data="bad")
    broken = Config.configure_data_node("broken")
    task = Config.configure_task("fail", fail, my_input, broken)
    scenario = tp.create_scenario(Config.configure_scenario("failing", [task]))

    submission = scenario.submit()

    job = submission.jobs[0]
    assert job.status is Status.FAILED
    assert len(job.stacktrace) == 1
    assert "Traceback" in job.stacktrace[0]
    assert "ValueError: cannot handle 'bad'" in job.stacktrace[0]
    assert "in fail" in job.stacktrace[0]
    assert scenario.broken.edit_in_progress is False
    assert scenario.broken.last_edit_date is None
    assert submission.submission_status is SubmissionStatus.FAILED


def test_completed_job_has_empty_stacktrace() -> None:
    scenario = chain_config()

    submission = scenario.submit()

    assert [job.stacktrace for job in submission.jobs] == [[], []]


def test_job_writes_are_in_edit_history() -> None:
    scenario = chain_config()

    submission = scenario.submit()

    jobs = jobs_by_task(submission)
    assert scenario.middle.job_ids == [jobs["double"].id]
    assert scenario.my_output.job_ids == [jobs["add_one"].id]
    last_edit = scenario.my_output.edits[-1]
    assert last_edit["job_id"] == jobs["add_one"].id
    assert datetime.fromisoformat(last_edit["timestamp"]) == (
        scenario.my_output.last_edit_date
    )

    second = scenario.submit()

    assert scenario.my_output.job_ids == [
        jobs["add_one"].id,
        jobs_by_task(second)["add_one"].id,
    ]
    assert len(scenario.my_output.edits) == 2


# -- skipping and forcing ----------------------------------------------------------------


def skippable_chain(validity: timedelta | None = None) -> tp.Scenario:
    """Return ``my_input -> counted_double (skippable) -> middle -> add -> output``."""
    my_input = Config.configure_data_node("my_input", default_data=4)
    middle = Config.configure_data_node("middle", validity_period=validity)
    my_output = Config.configure_data_node("my_output")
    final = Config.configure_data_node("final")
    first = Config.configure_task(
        "double", counted_double, my_input, middle, skippable=True
    )
    second = Config.configure_task("add_one", counted_add_one, middle, my_output)
    third = Config.configure_task("again", counted_add_one, my_output, final)
    return tp.create_scenario(
        Config.configure_scenario("skipping", [first, second, third])
    )


def test_skippable_task_is_skipped_when_up_to_date() -> None:
    scenario = skippable_chain()
    scenario.submit()
    CALLS.clear()

    second = scenario.submit()

    jobs = jobs_by_task(second)
    assert jobs["double"].status is Status.SKIPPED
    assert jobs["add_one"].status is Status.COMPLETED
    assert jobs["again"].status is Status.COMPLETED
    assert CALLS == ["counted_add_one", "counted_add_one"]
    assert scenario.middle.edit_in_progress is False
    assert jobs["double"].run_at is None
    assert second.submission_status is SubmissionStatus.COMPLETED
    all_jobs = tp.get_jobs()
    assert len(all_jobs) == 6
    double_statuses = sorted(
        job.status.name for job in all_jobs if job.task_config_id == "double"
    )
    assert double_statuses == ["COMPLETED", "SKIPPED"]


def test_force_runs_skippable_task() -> None:
    scenario = skippable_chain()
    scenario.submit()
    CALLS.clear()

    submission = scenario.submit(force=True)

    assert jobs_by_task(submission)["double"].status is Status.COMPLETED
    assert CALLS.count("counted_double") == 1


def test_skippable_runs_when_input_is_newer() -> None:
    scenario = skippable_chain()
    scenario.submit()
    CALLS.clear()
    scenario.my_input.write(10)

    submission = scenario.submit()

    assert jobs_by_task(submission)["double"].status is Status.COMPLETED
    assert scenario.final.read() == 22


def test_skippable_runs_when_output_expired() -> None:
    scenario = skippable_chain(validity=timedelta(milliseconds=50))
    scenario.submit()
    CALLS.clear()
    time.sleep(0.1)
    assert scenario.middle.is_valid is False

    submission = scenario.submit()

    assert jobs_by_task(submission)["double"].status is Status.COMPLETED


def test_skippable_runs_while_output_unwritten() -> None:
    scenario = skippable_chain()

    submission = scenario.submit()

    assert jobs_by_task(submission)["double"].status is Status.COMPLETED
    assert CALLS[0] == "counted_double"


def test_skippable_without_outputs_always_runs() -> None:
    sink_calls: list[int] = []

    def sink(value: int) -> None:
        sink_calls.append(value)

    my_input = Config.configure_data_node("my_input", default_data=1)
    task = Config.configure_task("sink", sink, my_input, [], skippable=True)
    scenario = tp.create_scenario(Config.configure_scenario("sinking", [task]))

    first = scenario.submit()
    second = scenario.submit()

    assert first.jobs[0].status is Status.COMPLETED
    assert second.jobs[0].status is Status.COMPLETED
    assert sink_calls == [1, 1]


def test_skippable_without_inputs_is_skipped() -> None:
    output = Config.configure_data_node("output")
    task = Config.configure_task("constant", no_input, [], output, skippable=True)
    scenario = tp.create_scenario(Config.configure_scenario("constant", [task]))

    scenario.submit()
    second = scenario.submit()

    assert second.jobs[0].status is Status.SKIPPED
    assert scenario.output.read() == 7


def test_non_skippable_task_always_runs() -> None:
    scenario = chain_config()
    scenario.submit()

    second = scenario.submit()

    assert [job.status for job in second.jobs] == [Status.COMPLETED] * 2


# -- blocking, releasing and abandoning ------------------------------------------------


def test_completion_releases_only_ready_jobs() -> None:
    my_input = Config.configure_data_node("my_input", default_data=2)
    never = Config.configure_data_node("never_written")
    middle = Config.configure_data_node("middle")
    ready = Config.configure_data_node("ready_output")
    stuck = Config.configure_data_node("stuck_output")
    tasks = [
        Config.configure_task("produce", double, my_input, middle),
        Config.configure_task("consume", double, middle, ready),
        Config.configure_task("needs_both", add, [middle, never], stuck),
    ]
    scenario = tp.create_scenario(Config.configure_scenario("partial", tasks))

    submission = scenario.submit()

    jobs = jobs_by_task(submission)
    assert jobs["produce"].status is Status.COMPLETED
    assert jobs["consume"].status is Status.COMPLETED
    assert jobs["needs_both"].status is Status.BLOCKED
    assert submission.submission_status is SubmissionStatus.BLOCKED

    scenario.never_written.write(1)

    assert jobs["needs_both"].status is Status.COMPLETED
    assert scenario.stuck_output.read() == 5
    assert submission.submission_status is SubmissionStatus.COMPLETED


def test_failure_abandons_only_consumers() -> None:
    my_input = Config.configure_data_node("my_input", default_data=1)
    never = Config.configure_data_node("never_written")
    failed_output = Config.configure_data_node("failed_output")
    downstream = Config.configure_data_node("downstream")
    unrelated = Config.configure_data_node("unrelated")
    tasks = [
        Config.configure_task("fail", fail, my_input, failed_output),
        Config.configure_task("consumer", double, failed_output, downstream),
        Config.configure_task("sibling", add, [my_input, never], unrelated),
    ]
    scenario = tp.create_scenario(Config.configure_scenario("failure", tasks))

    submission = scenario.submit()

    jobs = jobs_by_task(submission)
    assert jobs["fail"].status is Status.FAILED
    assert jobs["consumer"].status is Status.ABANDONED
    assert jobs["sibling"].status is Status.BLOCKED
    assert scenario.downstream.edit_in_progress is False
    assert scenario.unrelated.edit_in_progress is True
    assert submission.submission_status is SubmissionStatus.FAILED

    scenario.never_written.write(1)

    assert jobs["sibling"].status is Status.COMPLETED
    assert submission.submission_status is SubmissionStatus.FAILED


def test_locked_input_blocks_until_unlocked() -> None:
    scenario = chain_config()
    scenario.my_input.lock_edit()
    assert not tp.is_submittable(scenario)

    submission = scenario.submit()

    assert jobs_by_task(submission)["double"].status is Status.BLOCKED

    scenario.my_input.unlock_edit()

    assert [job.status for job in submission.jobs] == [Status.COMPLETED] * 2


def test_task_without_inputs_is_never_blocked() -> None:
    output = Config.configure_data_node("output")
    task = Config.configure_task("constant", no_input, [], output)
    scenario = tp.create_scenario(Config.configure_scenario("constant", [task]))

    submission = scenario.submit()

    assert submission.jobs[0].status is Status.COMPLETED
    assert scenario.output.read() == 7


def test_job_creation_locks_outputs_only() -> None:
    scenario = chain_config(default=None)

    submission = scenario.submit(force=True)

    assert scenario.my_input.edit_in_progress is False
    assert scenario.middle.edit_in_progress is True
    assert scenario.my_output.edit_in_progress is True
    assert scenario.middle.is_ready_for_reading is False
    assert all(job.force for job in submission.jobs)
    assert all(tp.get(job.id) is not None for job in submission.jobs)


def test_empty_scenario_submission_finishes(caplog: pytest.LogCaptureFixture) -> None:
    scenario = tp.create_scenario(Config.configure_scenario("empty", []))
    outcome: list[tp.Submission] = []

    def submit_and_wait() -> None:
        outcome.append(scenario.submit(wait=True, timeout=5))

    waiter = threading.Thread(target=submit_and_wait, daemon=True)
    with caplog.at_level(logging.WARNING):
        waiter.start()
        waiter.join(30)

    assert not waiter.is_alive()
    assert outcome[0].jobs == []
    assert outcome[0].is_finished()
    assert "timed out" not in caplog.text


# -- cancelling ----------------------------------------------------------------------------


def test_cancel_blocked_job_abandons_downstream() -> None:
    scenario = diamond_config(default=None)
    submission = scenario.submit()
    jobs = jobs_by_task(submission)

    tp.cancel_job(jobs["left"])

    assert jobs["left"].status is Status.CANCELED
    assert jobs["join"].status is Status.ABANDONED
    assert jobs["last"].status is Status.ABANDONED
    assert jobs["right"].status is Status.BLOCKED
    for name in ("a", "c", "d"):
        assert scenario.data_nodes[name].edit_in_progress is False, name
    assert scenario.b.edit_in_progress is True
    assert submission.submission_status is SubmissionStatus.CANCELED


def test_cancel_abandons_side_branches() -> None:
    my_input = Config.configure_data_node("my_input")
    head_output = Config.configure_data_node("head_output")
    branch_one = Config.configure_data_node("branch_one")
    branch_two = Config.configure_data_node("branch_two")
    tail = Config.configure_data_node("tail")
    tasks = [
        Config.configure_task("head", double, my_input, head_output),
        Config.configure_task("one", double, head_output, branch_one),
        Config.configure_task("two", double, head_output, branch_two),
        Config.configure_task("tail", double, branch_two, tail),
    ]
    scenario = tp.create_scenario(Config.configure_scenario("branches", tasks))
    submission = scenario.submit()
    jobs = jobs_by_task(submission)

    tp.cancel_job(jobs["head"].id)

    assert jobs["head"].status is Status.CANCELED
    for name in ("one", "two", "tail"):
        assert jobs[name].status is Status.ABANDONED, name
    for name in ("head_output", "branch_one", "branch_two", "tail"):
        assert scenario.data_nodes[name].edit_in_progress is False, name


def test_cancel_mid_chain_keeps_finished_upstream() -> None:
    my_input = Config.configure_data_node("my_input", default_data=1)
    never = Config.configure_data_node("never_written")
    first_output = Config.configure_data_node("first_output")
    middle_output = Config.configure_data_node("middle_output")
    last_output = Config.configure_data_node("last_output")
    tasks = [
        Config.configure_task("first", double, my_input, first_output),
        Config.configure_task("middle", add, [first_output, never], middle_output),
        Config.configure_task("last", double, middle_output, last_output),
    ]
    scenario = tp.create_scenario(Config.configure_scenario("mid_chain", tasks))
    submission = scenario.submit()
    jobs = jobs_by_task(submission)
    assert jobs["first"].status is Status.COMPLETED

    tp.cancel_job(jobs["middle"])

    assert jobs["first"].status is Status.COMPLETED
    assert jobs["middle"].status is Status.CANCELED
    assert jobs["last"].status is Status.ABANDONED
    assert scenario.first_output.read() == 2


@pytest.mark.parametrize("final", ["COMPLETED", "FAILED", "CANCELED", "ABANDONED"])
def test_cancel_finished_job_changes_nothing(final: str) -> None:
    my_input = Config.configure_data_node("my_input", default_data=1)
    never = Config.configure_data_node("never_written")
    good = Config.configure_data_node("good")
    bad = Config.configure_data_node("bad")
    waiting = Config.configure_data_node("waiting")
    after_waiting = Config.configure_data_node("after_waiting")
    tasks = [
        Config.configure_task("succeed", double, my_input, good),
        Config.configure_task("fail", fail, my_input, bad),
        Config.configure_task("wait", double, never, waiting),
        Config.configure_task("after_wait", double, waiting, after_waiting),
    ]
    scenario = tp.create_scenario(Config.configure_scenario("finals", tasks))
    submission = scenario.submit()
    jobs = jobs_by_task(submission)
    tp.cancel_job(jobs["wait"])
    target = {
        "COMPLETED": jobs["succeed"],
        "FAILED": jobs["fail"],
        "CANCELED": jobs["wait"],
        "ABANDONED": jobs["after_wait"],
    }[final]
    assert target.status is Status[final]
    history = target.status_history
    before = {job.id: job.status for job in submission.jobs}

    tp.cancel_job(target)

    assert target.status is Status[final]
    assert target.status_history == history
    assert {job.id: job.status for job in submission.jobs} == before


def test_skipped_job_cancel_changes_nothing() -> None:
    scenario = skippable_chain()
    scenario.submit()
    submission = scenario.submit()
    skipped = jobs_by_task(submission)["double"]
    assert skipped.status is Status.SKIPPED

    tp.cancel_job(skipped)

    assert skipped.status is Status.SKIPPED


def test_cancel_is_scoped_to_one_submission() -> None:
    scenario = chain_config(default=None)
    first = scenario.submit()
    second = scenario.submit()

    tp.cancel_job(jobs_by_task(second)["double"].id)

    assert [job.status for job in second.jobs] == [Status.CANCELED, Status.ABANDONED]
    assert [job.status for job in first.jobs] == [Status.BLOCKED, Status.BLOCKED]
    assert second.submission_status is SubmissionStatus.CANCELED
    assert first.submission_status is SubmissionStatus.BLOCKED


def test_two_blocked_submissions_complete_after_write() -> None:
    scenario = chain_config(default=None)
    first = scenario.submit()
    second = scenario.submit()

    scenario.my_input.write(1)

    assert first.submission_status is SubmissionStatus.COMPLETED
    assert second.submission_status is SubmissionStatus.COMPLETED
    assert scenario.my_output.read() == 3
    assert len(scenario.my_output.job_ids) == 2


def test_running_job_cannot_be_cancelled_in_development(
    caplog: pytest.LogCaptureFixture,
) -> None:
    attempts: list[Status] = []

    def cancel_while_running(job: tp.Job) -> None:
        if job.status is Status.RUNNING:
            tp.cancel_job(job)
            attempts.append(job.status)

    scenario = chain_config()
    with caplog.at_level(logging.WARNING):
        submission = scenario.submit(callbacks=[cancel_while_running])

    assert attempts == [Status.RUNNING, Status.RUNNING]
    assert [job.status for job in submission.jobs] == [Status.COMPLETED] * 2
    assert "cannot be stopped" in caplog.text


# -- scopes in one submission ----------------------------------------------------------


def test_global_input_shared_by_scenarios() -> None:
    rate = Config.configure_data_node("rate", scope=Scope.GLOBAL, default_data=3)
    result = Config.configure_data_node("result")
    task = Config.configure_task("double", double, rate, result)
    config = Config.configure_scenario("uses_rate", [task])
    first = tp.create_scenario(config)
    second = tp.create_scenario(config)

    first.rate.write(10)
    second.submit()

    assert first.rate.id == second.rate.id
    assert second.result.read() == 20
    assert first.result.last_edit_date is None


# -- notebook functions ------------------------------------------------------------------


@pytest.fixture
def kernel_main(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """A fresh ``__main__`` module whose namespace plays the notebook's globals."""
    module = types.ModuleType("__main__")
    monkeypatch.setitem(sys.modules, "__main__", module)
    return module


def run_cell(module: types.ModuleType, source: str) -> None:
    """Run ``source`` in ``module``'s namespace, as a kernel runs a notebook cell."""
    exec(source, vars(module))  # noqa: S102 - test input


def notebook_scenario(function: Any, default: int) -> tp.Scenario:
    my_input = Config.configure_data_node("my_input", default_data=default)
    my_output = Config.configure_data_node("my_output")
    task = Config.configure_task("transform", function, my_input, my_output)
    return tp.create_scenario(Config.configure_scenario("notebook", [task]))


def test_rerun_cell_changes_code_without_reconfiguring(
    kernel_main: types.ModuleType,
) -> None:
    run_cell(kernel_main, "def transform(value):\n    return value + 1\n")
    scenario = notebook_scenario(kernel_main.transform, 1)
    scenario.submit()
    assert scenario.my_output.read() == 2

    run_cell(kernel_main, "def transform(value):\n    return value + 100\n")
    scenario.submit()

    assert scenario.my_output.read() == 101


def test_lambda_in_main_keeps_configured_code(kernel_main: types.ModuleType) -> None:
    run_cell(kernel_main, "transform = lambda value: value * 2\n")
    scenario = notebook_scenario(kernel_main.transform, 3)
    run_cell(kernel_main, "transform = lambda value: value * 1000\n")

    scenario.submit()

    assert scenario.my_output.read() == 6


def test_notebook_traceback_shows_cell_lines() -> None:
    namespace = main_namespace(
        """
        def lookup(value):
            return helper({}, value)

        def helper(table, value):
            return table[value]
        """,
        "/tmp/ipykernel_0/development_cell.py",
    )
    my_input = Config.configure_data_node("my_input", default_data=5)
    my_output = Config.configure_data_node("my_output")
    task = Config.configure_task("lookup", namespace["lookup"], my_input, my_output)
    scenario = tp.create_scenario(Config.configure_scenario("lookup", [task]))

    job = scenario.submit().jobs[0]

    assert job.status is Status.FAILED
    assert "return helper({}, value)" in job.stacktrace[0]
    assert "return table[value]" in job.stacktrace[0]


def make_rows(value: int) -> Any:
    import pandas as pd

    return pd.DataFrame({"value": [value, value + 1]})


def test_compressed_csv_output_is_compressed(tmp_path: Path) -> None:
    # The staging file must keep the .csv.gz suffix, or pandas writes plain text
    # that the final .gz file then cannot be read back from.
    path = tmp_path / "rows.csv.gz"
    source = Config.configure_data_node("source", default_data=4)
    rows = Config.configure_csv_data_node("rows", default_path=str(path))
    task = Config.configure_task("make_rows", make_rows, source, rows)
    scenario = tp.create_scenario(Config.configure_scenario("compressed", [task]))

    submission = scenario.submit()

    assert submission.jobs[0].status is Status.COMPLETED, submission.jobs[0].stacktrace
    assert path.read_bytes()[:2] == b"\x1f\x8b"  # the gzip magic number
    assert scenario.rows.read()["value"].tolist() == [4, 5]


def read_constant() -> int:
    return 20


def test_generic_input_with_read_function_is_ready() -> None:
    # Its data is read through the function, so a task reading it must not wait
    # for a write.
    source = Config.configure_generic_data_node("source", read_fct=read_constant)
    result = Config.configure_data_node("result")
    task = Config.configure_task("double", lambda value: 2 * value, source, result)
    scenario = tp.create_scenario(Config.configure_scenario("generic", [task]))

    assert scenario.source.is_ready_for_reading
    submission = scenario.submit()

    assert submission.jobs[0].status is Status.COMPLETED
    assert scenario.result.read() == 40
