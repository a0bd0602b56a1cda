"""Standalone mode with real worker processes.

Jobs run in processes of ``executors/pool.py``. Tests control how long a job runs
with gate files: ``wait_for_gate(path)`` blocks until the test creates ``path``.
Concurrency is checked from the jobs' RUNNING intervals (``run_at`` to
``finished_at``), never from wall-clock bounds. Every wait has a timeout, and the
``standalone`` fixture fails a test that leaves a worker or a job's child process.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from engine_fixtures import (
    KILL_WAIT_SECONDS,
    WAIT_SECONDS,
    job_of,
    main_namespace,
    max_overlap,
    running_interval,
    stuck_config,
    use_workers,
    wait_for_file,
    wait_for_gate,
    wait_gone,
    wait_status,
    wait_until,
)
from engine_fixtures import engine as engine_fixture  # noqa: F401 - fixture
from engine_fixtures import forkserver_started as forkserver_fixture  # noqa: F401
from engine_fixtures import standalone as standalone_fixture  # noqa: F401 - fixture

import jupyter_scenarios as tp
from jupyter_scenarios import Config, Scope, Status, SubmissionStatus
from jupyter_scenarios.exceptions import ConfigurationError, SubmissionTimeoutWarning

pytestmark = [pytest.mark.usefixtures("standalone"), pytest.mark.timeout(240)]

ADD_SLEEP_SECONDS = 1.0


# -- task functions (importable, so they travel by reference) --------------------------


def double(value: int) -> int:
    return 2 * value


def add_slowly(value: int) -> int:
    time.sleep(ADD_SLEEP_SECONDS)
    return value + 1


def exit_worker(value: Any) -> None:
    os._exit(3)


def crash_worker(value: Any) -> None:
    ctypes.string_at(0)


def raise_error(value: Any) -> None:
    raise KeyError(f"no entry for {value!r}")


def return_generator(value: Any) -> Any:
    return (item for item in range(3))


def print_and_echo(value: str) -> str:
    print(f"python says {value}", flush=True)
    subprocess.run(["echo", f"child says {value}"], check=True)
    return value


def draw_progress(steps: int) -> int:
    for step in range(steps):
        print(f"\rstep {step}", end="", flush=True)
    print("\ndone é", flush=True)
    return steps


def start_child_and_wait(folder: str) -> str:
    child = subprocess.Popen(["sleep", "300"])
    Path(folder, "child.pid").write_text(str(child.pid))
    Path(folder, "worker.pid").write_text(str(os.getpid()))
    child.wait()
    return "finished normally"


def record_interval(folder: str) -> str:
    start = time.time()
    time.sleep(0.3)
    end = time.time()
    Path(folder, f"{os.getpid()}-{start}").write_text(f"{start} {end}")
    return folder


# -- scenario builders -----------------------------------------------------------------


def tutorial_config() -> Any:
    """The tutorial's shape: ``my_input -> double -> middle -> add -> my_output``."""
    my_input = Config.configure_data_node("my_input", default_data=21)
    middle = Config.configure_data_node("middle")
    my_output = Config.configure_data_node("my_output")
    first = Config.configure_task("double", double, my_input, middle)
    second = Config.configure_task("add", add_slowly, middle, my_output)
    return Config.configure_scenario("tutorial", [first, second])


def gated_config(gate: Path, downstream: bool = True) -> Any:
    """``gate_path -> wait -> waited [-> double_path -> after]``; waits for ``gate``."""
    gate_path = Config.configure_data_node("gate_path", default_data=str(gate))
    waited = Config.configure_data_node("waited")
    tasks = [Config.configure_task("wait", wait_for_gate, gate_path, waited)]
    if downstream:
        after = Config.configure_data_node("after")
        tasks.append(Config.configure_task("follow", str.upper, waited, after))
    return Config.configure_scenario("gated", tasks)


def jobs_by_task(submission: tp.Submission) -> dict[str, tp.Job]:
    return {job.task_config_id: job for job in submission.jobs}


def wait_finished(submission: tp.Submission, timeout: float = WAIT_SECONDS) -> None:
    assert submission.wait(timeout), (
        f"{submission.id} did not finish within {timeout} s: "
        f"{[(job.task_config_id, job.status.name) for job in submission.jobs]}"
    )


# -- parallel runs -----------------------------------------------------------------------


def test_two_scenarios_run_in_parallel() -> None:
    config = tutorial_config()
    first = tp.create_scenario(config)
    second = tp.create_scenario(config)

    submissions = [first.submit(), second.submit()]
    for submission in submissions:
        wait_finished(submission)

    assert first.my_output.read() == 43
    assert second.my_output.read() == 43
    first_add = jobs_by_task(submissions[0])["add"]
    second_add = jobs_by_task(submissions[1])["add"]
    first_start, first_end = running_interval(first_add)
    second_start, second_end = running_interval(second_add)
    assert first_start < second_end
    assert second_start < first_end
    assert first_add.worker_pid != second_add.worker_pid
    for job in first_add, second_add:
        assert job.execution_duration >= ADD_SLEEP_SECONDS
    for submission in submissions:
        assert submission.execution_duration >= ADD_SLEEP_SECONDS
        assert submission.submission_status is SubmissionStatus.COMPLETED


def test_submit_returns_before_jobs_run(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    scenario = tp.create_scenario(gated_config(gate))

    submission = scenario.submit()

    assert not submission.is_finished()
    assert jobs_by_task(submission)["follow"].status is Status.BLOCKED
    assert scenario.waited.edit_in_progress is True
    wait_status(jobs_by_task(submission)["wait"], Status.RUNNING)
    gate.touch()
    wait_finished(submission)
    assert scenario.after.read() == str(gate).upper()
    assert scenario.waited.edit_in_progress is False


def test_wait_timeout_warns_and_returns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gate = tmp_path / "gate"
    scenario = tp.create_scenario(gated_config(gate))

    with (
        caplog.at_level(logging.WARNING, logger="jupyter_scenarios"),
        pytest.warns(SubmissionTimeoutWarning) as warned,
    ):
        submission = scenario.submit(wait=True, timeout=0.5)

    assert submission.id in str(warned[0].message)
    assert not submission.is_finished()
    assert submission.submission_status in (
        SubmissionStatus.PENDING,
        SubmissionStatus.RUNNING,
    )
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any(submission.id in record.getMessage() for record in warnings)
    assert any("timed out" in record.getMessage() for record in warnings)
    gate.touch()
    wait_finished(submission)
    assert submission.submission_status is SubmissionStatus.COMPLETED


def test_wait_warns_of_inputs_no_job_writes() -> None:
    scenario = tp.create_scenario(stuck_config())

    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        submission = scenario.submit(wait=True, timeout=0.5)

    messages = [str(warning.message) for warning in warned]
    assert any("none of its jobs will write" in message for message in messages)
    assert any(warning.category is SubmissionTimeoutWarning for warning in warned)
    assert any("second needs unwritten" in message for message in messages)
    assert not any("needs middle" in message for message in messages)
    assert jobs_by_task(submission)["second"].status is Status.BLOCKED
    scenario.unwritten.write(10)
    wait_finished(submission)
    assert scenario.result.read() == 12


def test_wait_true_waits_for_completion() -> None:
    scenario = tp.create_scenario(tutorial_config())

    submission = scenario.submit(wait=True, timeout=WAIT_SECONDS)

    assert submission.is_finished()
    assert submission.jobs[1].finished_at is not None
    assert scenario.my_output.read() == 43


def test_max_concurrency_never_exceeded(tmp_path: Path) -> None:
    intervals_folder = tmp_path / "intervals"
    intervals_folder.mkdir()
    folder = Config.configure_data_node("folder", default_data=str(intervals_folder))
    tasks = []
    for index in range(6):
        output = Config.configure_data_node(f"done_{index}")
        tasks.append(
            Config.configure_task(f"record_{index}", record_interval, folder, output)
        )
    scenario = tp.create_scenario(Config.configure_scenario("many", tasks))

    submission = scenario.submit()
    wait_finished(submission)

    jobs = submission.jobs
    assert all(job.status is Status.COMPLETED for job in jobs)
    assert max_overlap(running_interval(job) for job in jobs) <= 2
    worker_intervals = []
    for path in intervals_folder.iterdir():
        start, end = (float(part) for part in path.read_text().split())
        worker_intervals.append((start, end))
    assert len(worker_intervals) == 6
    assert max_overlap(worker_intervals) <= 2
    assert len({job.worker_pid for job in jobs}) <= 2


def test_third_job_waits_for_free_worker(tmp_path: Path) -> None:
    gates = [tmp_path / f"gate_{index}" for index in range(3)]
    tasks = []
    for index, gate in enumerate(gates):
        path = Config.configure_data_node(f"path_{index}", default_data=str(gate))
        output = Config.configure_data_node(f"out_{index}")
        tasks.append(
            Config.configure_task(f"wait_{index}", wait_for_gate, path, output)
        )
    config = Config.configure_scenario("three", tasks)
    submissions = [
        tp.submit(tp.create_scenario(config).tasks[f"wait_{i}"]) for i in range(2)
    ]
    third_scenario = tp.create_scenario(config)
    for submission in submissions:
        wait_status(submission.jobs[0], Status.RUNNING)

    third = third_scenario.tasks["wait_2"].submit()

    assert third.jobs[0].status is Status.PENDING
    assert third.submission_status is SubmissionStatus.PENDING
    for submission in submissions:
        assert submission.submission_status is SubmissionStatus.RUNNING
    gates[0].touch()
    wait_finished(submissions[0])
    wait_status(third.jobs[0], Status.RUNNING)
    gates[1].touch()
    gates[2].touch()
    wait_finished(submissions[1])
    wait_finished(third)


def test_same_output_jobs_do_not_overlap(tmp_path: Path) -> None:
    # The scheduler's rule: a job whose output is also the output of an unfinished
    # job waits for that job, so writes to one data node never interleave.
    gate = tmp_path / "gate"
    scenario = tp.create_scenario(gated_config(gate))
    first = scenario.submit()
    wait_status(jobs_by_task(first)["wait"], Status.RUNNING)
    second = scenario.submit()
    time.sleep(0.5)
    gate.touch()
    wait_finished(first)
    wait_finished(second)

    writers = [jobs_by_task(first)["wait"], jobs_by_task(second)["wait"]]
    intervals = [running_interval(job) for job in writers]
    assert max_overlap(intervals) == 1


# -- functions defined in a notebook -------------------------------------------------------


def test_notebook_function_runs() -> None:
    namespace = main_namespace(
        """
        import math

        def hypotenuse(value):
            return math.sqrt(value * value + 9)
        """
    )
    assert namespace["hypotenuse"].__module__ == "__main__"
    side = Config.configure_data_node("side", default_data=4)
    length = Config.configure_data_node("length")
    task = Config.configure_task("hypotenuse", namespace["hypotenuse"], side, length)
    scenario = tp.create_scenario(Config.configure_scenario("notebook", [task]))

    submission = scenario.submit(wait=True, timeout=WAIT_SECONDS)

    assert submission.jobs[0].status is Status.COMPLETED, submission.jobs[0].stacktrace
    assert scenario.length.read() == 5.0
    assert submission.jobs[0].worker_pid != os.getpid()


def test_lambda_and_closure_tasks() -> None:
    offset = 1000

    def make_adder(step: int) -> Any:
        def adder(value: int) -> int:
            return value + step + offset

        return adder

    source = Config.configure_data_node("source", default_data=5)
    from_lambda = Config.configure_data_node("from_lambda")
    from_closure = Config.configure_data_node("from_closure")
    tasks = [
        Config.configure_task(
            "lambda_task", lambda value: value * 3, source, from_lambda
        ),
        Config.configure_task("closure_task", make_adder(7), source, from_closure),
    ]
    scenario = tp.create_scenario(Config.configure_scenario("anonymous", tasks))

    submission = scenario.submit(wait=True, timeout=WAIT_SECONDS)

    assert [job.status for job in submission.jobs] == [Status.COMPLETED] * 2
    assert scenario.from_lambda.read() == 15
    assert scenario.from_closure.read() == 1012


def test_redefined_function_runs_new_code() -> None:
    cell = """
        def transform(value):
            return value + {step}
    """
    source = Config.configure_data_node("source", default_data=1)
    target = Config.configure_data_node("target")
    first = main_namespace(cell.format(step=10))["transform"]
    Config.configure_task("transform", first, source, target)
    scenario = tp.create_scenario(
        Config.configure_scenario("redefined", [Config.tasks["transform"]])
    )
    scenario.submit(wait=True, timeout=WAIT_SECONDS)
    assert scenario.target.read() == 11

    second = main_namespace(cell.format(step=20))["transform"]
    Config.configure_task("transform", second, source, target)
    scenario.submit(wait=True, timeout=WAIT_SECONDS)

    assert scenario.target.read() == 21


def test_each_submission_sees_current_global_values() -> None:
    # The function is pickled once per submission, so a global variable changed
    # between two submissions must reach the second one.
    namespace = main_namespace(
        """
        factor = 2

        def scale(value):
            return value * factor
        """
    )
    source = Config.configure_data_node("source", default_data=5)
    targets = [Config.configure_data_node(f"scaled_{index}") for index in range(3)]
    tasks = [
        Config.configure_task(f"scale_{index}", namespace["scale"], source, target)
        for index, target in enumerate(targets)
    ]
    scenario = tp.create_scenario(Config.configure_scenario("globals", tasks))

    scenario.submit(wait=True, timeout=WAIT_SECONDS)
    first = [scenario.data_nodes[f"scaled_{index}"].read() for index in range(3)]
    namespace["factor"] = 3
    scenario.submit(wait=True, timeout=WAIT_SECONDS)
    second = [scenario.data_nodes[f"scaled_{index}"].read() for index in range(3)]

    assert first == [10, 10, 10]
    assert second == [15, 15, 15]


def test_unpicklable_function_fails_its_job_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lock = threading.Lock()

    def guarded(value: int) -> int:
        with lock:
            return value

    source = Config.configure_data_node("source", default_data=2)
    guarded_out = Config.configure_data_node("guarded_out")
    doubled = Config.configure_data_node("doubled")
    tasks = [
        Config.configure_task("guarded", guarded, source, guarded_out),
        Config.configure_task("double", double, source, doubled),
    ]
    with caplog.at_level(logging.WARNING, logger="jupyter_scenarios"):
        scenario = tp.create_scenario(Config.configure_scenario("unpicklable", tasks))
    assert "task 'guarded' cannot be pickled" in caplog.text

    submission = scenario.submit(wait=True, timeout=WAIT_SECONDS)

    failed = job_of(submission, "guarded")
    assert failed.status is Status.FAILED
    assert "could not pickle the function" in "".join(failed.stacktrace)
    assert "'guarded'" in "".join(failed.stacktrace)
    assert job_of(submission, "double").status is Status.COMPLETED
    assert scenario.doubled.read() == 4


def test_notebook_objects_in_data_node_properties(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The read function of a generic data node is a property, which must reach the
    # worker by value, as the task function does. As in a notebook, the class and
    # the function are attributes of the real __main__ module, which the standard
    # pickler would reference by name.
    namespace = main_namespace(
        """
        class Offset:
            def __init__(self, amount):
                self.amount = amount

        def read_offset(offset):
            return offset.amount
        """
    )
    for name in ("Offset", "read_offset"):
        monkeypatch.setattr(
            sys.modules["__main__"], name, namespace[name], raising=False
        )
    offset = namespace["Offset"](41)
    source = Config.configure_generic_data_node(
        "source", read_fct=namespace["read_offset"], read_fct_args=[offset]
    )
    result = Config.configure_data_node("result")
    task = Config.configure_task("add_one", lambda value: value + 1, source, result)
    scenario = tp.create_scenario(Config.configure_scenario("generic", [task]))

    submission = scenario.submit(wait=True, timeout=WAIT_SECONDS)

    assert submission.jobs[0].status is Status.COMPLETED, submission.jobs[0].stacktrace
    assert scenario.result.read() == 42


def test_task_output_in_job_logs() -> None:
    word = Config.configure_data_node("word", default_data="hello")
    echoed = Config.configure_data_node("echoed")
    task = Config.configure_task("echo", print_and_echo, word, echoed)
    scenario = tp.create_scenario(Config.configure_scenario("logging", [task]))

    job = scenario.submit(wait=True, timeout=WAIT_SECONDS).jobs[0]

    assert job.status is Status.COMPLETED
    assert "python says hello" in job.logs
    assert "child says hello" in job.logs


def test_job_logs_keep_carriage_returns() -> None:
    steps = Config.configure_data_node("steps", default_data=3)
    drawn = Config.configure_data_node("drawn")
    task = Config.configure_task("progress", draw_progress, steps, drawn)
    scenario = tp.create_scenario(Config.configure_scenario("bar", [task]))

    job = scenario.submit(wait=True, timeout=WAIT_SECONDS).jobs[0]

    assert job.logs == "\rstep 0\rstep 1\rstep 2\ndone é\n", repr(job.logs)
    assert job.logs_tail(2) == "step 2\ndone é"


def test_person_write_releases_blocked_job() -> None:
    my_input = Config.configure_data_node("my_input")
    my_output = Config.configure_data_node("my_output")
    task = Config.configure_task("double", double, my_input, my_output)
    scenario = tp.create_scenario(Config.configure_scenario("waiting", [task]))
    submission = scenario.submit()
    job = submission.jobs[0]
    wait_status(job, Status.BLOCKED)

    scenario.my_input.write(8)

    wait_status(job, Status.COMPLETED)
    assert job.status_history[-3][0] is Status.PENDING
    assert scenario.my_output.read() == 16
    wait_until(lambda: submission.submission_status is SubmissionStatus.COMPLETED)


def test_in_memory_node_rejected() -> None:
    cache = Config.configure_in_memory_data_node("cache", default_data=1)
    result = Config.configure_data_node("result")
    task = Config.configure_task("double", double, cache, result)
    scenario = tp.create_scenario(Config.configure_scenario("memory", [task]))

    with pytest.raises(ConfigurationError) as raised:
        scenario.submit()

    assert "'cache'" in str(raised.value)
    assert "in_memory" in str(raised.value)
    assert tp.get_jobs() == []


# -- cancelling ----------------------------------------------------------------------------


def test_cancel_pending_job(tmp_path: Path) -> None:
    use_workers(1)
    gate = tmp_path / "gate"
    busy = tp.create_scenario(gated_config(gate))
    busy_submission = busy.submit()
    wait_status(jobs_by_task(busy_submission)["wait"], Status.RUNNING)
    queued = tp.create_scenario("gated")
    queued_submission = queued.submit()
    queued_jobs = jobs_by_task(queued_submission)
    assert queued_jobs["wait"].status is Status.PENDING

    tp.cancel_job(queued_jobs["wait"])

    assert queued_jobs["wait"].status is Status.CANCELED
    assert queued_jobs["follow"].status is Status.ABANDONED
    assert queued.waited.edit_in_progress is False
    assert queued.after.edit_in_progress is False
    assert queued_submission.submission_status is SubmissionStatus.CANCELED
    assert jobs_by_task(busy_submission)["wait"].status is Status.RUNNING
    gate.touch()
    wait_finished(busy_submission)
    assert busy_submission.submission_status is SubmissionStatus.COMPLETED
    assert queued_jobs["wait"].run_at is None


def test_cancel_blocked_job(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    scenario = tp.create_scenario(gated_config(gate))
    submission = scenario.submit()
    jobs = jobs_by_task(submission)
    wait_status(jobs["wait"], Status.RUNNING)
    assert jobs["follow"].status is Status.BLOCKED

    tp.cancel_job(jobs["follow"].id)

    assert jobs["follow"].status is Status.CANCELED
    assert scenario.after.edit_in_progress is False
    gate.touch()
    wait_status(jobs["wait"], Status.COMPLETED)
    wait_until(lambda: submission.submission_status is SubmissionStatus.CANCELED)
    assert scenario.after.last_edit_date is None


def test_cancel_running_job_kills_worker(tmp_path: Path) -> None:
    folder = Config.configure_data_node("folder", default_data=str(tmp_path))
    result = Config.configure_data_node("result")
    after = Config.configure_data_node("after")
    tasks = [
        Config.configure_task("hold", start_child_and_wait, folder, result),
        Config.configure_task("follow", str.upper, result, after),
    ]
    scenario = tp.create_scenario(Config.configure_scenario("killable", tasks))
    scenario.result.write("before")
    edits_before = len(scenario.result.edits)
    submission = scenario.submit()
    jobs = jobs_by_task(submission)
    child_pid = int(wait_for_file(tmp_path / "child.pid"))
    worker_pid = int(wait_for_file(tmp_path / "worker.pid"))
    assert jobs["hold"].status is Status.RUNNING
    wait_until(lambda: jobs["hold"].worker_pid == worker_pid, what="worker pid")

    tp.cancel_job(jobs["hold"])

    assert wait_gone([worker_pid, child_pid], KILL_WAIT_SECONDS) == []
    wait_status(jobs["hold"], Status.CANCELED, timeout=KILL_WAIT_SECONDS)
    assert jobs["follow"].status is Status.ABANDONED
    assert jobs["hold"].reason
    assert scenario.result.edit_in_progress is False
    assert scenario.after.edit_in_progress is False
    assert scenario.result.read() == "before"
    assert len(scenario.result.edits) == edits_before
    assert submission.submission_status is SubmissionStatus.CANCELED

    (tmp_path / "child.pid").unlink()
    second = tp.create_scenario(tutorial_config())
    later = second.submit(wait=True, timeout=WAIT_SECONDS)
    assert later.submission_status is SubmissionStatus.COMPLETED
    assert all(job.worker_pid != worker_pid for job in later.jobs)


def test_cancel_scoped_to_submission(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    scenario = tp.create_scenario(gated_config(gate))
    first = scenario.submit()
    wait_status(jobs_by_task(first)["wait"], Status.RUNNING)
    second = scenario.submit()
    second_jobs = jobs_by_task(second)

    tp.cancel_job(second_jobs["wait"])

    assert second_jobs["wait"].status is Status.CANCELED
    assert second_jobs["follow"].status is Status.ABANDONED
    assert [job.status for job in first.jobs] == [Status.RUNNING, Status.BLOCKED]
    gate.touch()
    wait_finished(first)
    assert first.submission_status is SubmissionStatus.COMPLETED


# -- failures ------------------------------------------------------------------------------


def branching_config(failing: Any) -> Any:
    """``source -> failing -> broken -> after``, plus an independent slow branch."""
    source = Config.configure_data_node("source", default_data=5)
    broken = Config.configure_data_node("broken")
    after = Config.configure_data_node("after")
    other = Config.configure_data_node("other")
    tasks = [
        Config.configure_task("failing", failing, source, broken),
        Config.configure_task("after_failing", double, broken, after),
        Config.configure_task("other_branch", add_slowly, source, other),
    ]
    return Config.configure_scenario("branching", tasks)


def test_worker_exit_fails_only_its_job() -> None:
    scenario = tp.create_scenario(branching_config(exit_worker))

    submission = scenario.submit()
    wait_finished(submission)

    jobs = jobs_by_task(submission)
    failed = jobs["failing"]
    assert failed.status is Status.FAILED
    assert "exited with code 3" in failed.reason
    assert "exited with code 3" in failed.stacktrace[0]
    assert jobs["after_failing"].status is Status.ABANDONED
    assert jobs["other_branch"].status is Status.COMPLETED
    assert scenario.other.read() == 6
    assert scenario.broken.edit_in_progress is False
    later = tp.create_scenario(tutorial_config()).submit(
        wait=True, timeout=WAIT_SECONDS
    )
    assert later.submission_status is SubmissionStatus.COMPLETED


def test_worker_segfault_fails_only_its_job() -> None:
    scenario = tp.create_scenario(branching_config(crash_worker))

    submission = scenario.submit()
    wait_finished(submission)

    jobs = jobs_by_task(submission)
    assert jobs["failing"].status is Status.FAILED
    assert "SIGSEGV" in jobs["failing"].reason
    assert jobs["after_failing"].status is Status.ABANDONED
    assert jobs["other_branch"].status is Status.COMPLETED
    later = tp.create_scenario(tutorial_config()).submit(
        wait=True, timeout=WAIT_SECONDS
    )
    assert later.submission_status is SubmissionStatus.COMPLETED


LOOKUP_CELL = """
    def lookup(value):
        table = {}
        return helper(table, value)

    def helper(table, value):
        return table[value]
"""


def test_task_exception_has_full_traceback() -> None:
    namespace = main_namespace(LOOKUP_CELL, "/tmp/ipykernel_0/lookup_cell.py")
    scenario = tp.create_scenario(branching_config(namespace["lookup"]))

    submission = scenario.submit()
    wait_finished(submission)

    jobs = jobs_by_task(submission)
    failed = jobs["failing"]
    assert failed.status is Status.FAILED
    trace = failed.stacktrace[0]
    assert trace.startswith("Traceback")
    assert "in lookup" in trace
    assert "in helper" in trace
    assert trace.rstrip().endswith("KeyError: 5")
    assert jobs["after_failing"].status is Status.ABANDONED
    assert jobs["other_branch"].status is Status.COMPLETED
    assert submission.submission_status is SubmissionStatus.FAILED


def test_notebook_traceback_shows_helper_source() -> None:
    # Development mode shows the lines of every cell function in the traceback,
    # including ``helper``, which the task function calls; standalone mode should too.
    namespace = main_namespace(LOOKUP_CELL, "/tmp/ipykernel_0/source_cell.py")
    scenario = tp.create_scenario(branching_config(namespace["lookup"]))

    submission = scenario.submit()
    wait_finished(submission)

    trace = jobs_by_task(submission)["failing"].stacktrace[0]
    assert "return helper(table, value)" in trace
    assert "return table[value]" in trace


def test_importable_task_exception_traceback() -> None:
    scenario = tp.create_scenario(branching_config(raise_error))

    submission = scenario.submit()
    wait_finished(submission)

    trace = jobs_by_task(submission)["failing"].stacktrace[0]
    assert "in raise_error" in trace
    assert "KeyError" in trace
    assert "no entry for 5" in trace


def test_unpicklable_result_fails_cleanly() -> None:
    scenario = tp.create_scenario(branching_config(return_generator))

    submission = scenario.submit()
    wait_finished(submission)

    jobs = jobs_by_task(submission)
    failed = jobs["failing"]
    assert failed.status is Status.FAILED
    assert "generator" in failed.stacktrace[0]
    assert "broken" in failed.stacktrace[0]
    assert scenario.broken.edit_in_progress is False
    assert scenario.broken.last_edit_date is None
    assert jobs["other_branch"].status is Status.COMPLETED
    later = tp.create_scenario(tutorial_config()).submit(
        wait=True, timeout=WAIT_SECONDS
    )
    assert later.submission_status is SubmissionStatus.COMPLETED


# -- stopping ------------------------------------------------------------------------------


def test_stop_cancels_running_jobs(tmp_path: Path) -> None:
    folder = Config.configure_data_node("folder", default_data=str(tmp_path))
    result = Config.configure_data_node("result")
    task = Config.configure_task("hold", start_child_and_wait, folder, result)
    scenario = tp.create_scenario(Config.configure_scenario("stoppable", [task]))
    submission = scenario.submit()
    job = submission.jobs[0]
    child_pid = int(wait_for_file(tmp_path / "child.pid"))
    worker_pid = int(wait_for_file(tmp_path / "worker.pid"))
    wait_status(job, Status.RUNNING)

    tp.Orchestrator().stop(wait=False)

    assert wait_gone([worker_pid, child_pid], KILL_WAIT_SECONDS) == []
    assert job.status is Status.CANCELED
    assert "stopped" in job.reason
    assert scenario.result.edit_in_progress is False
    assert submission.submission_status is SubmissionStatus.CANCELED


def test_stop_with_timeout_lets_short_jobs_finish() -> None:
    scenario = tp.create_scenario(tutorial_config())
    submission = scenario.submit()

    tp.Orchestrator().stop(wait=True, timeout=WAIT_SECONDS)

    assert submission.submission_status is SubmissionStatus.COMPLETED
    assert scenario.my_output.read() == 43


def test_runtime_restarts_after_stop() -> None:
    scenario = tp.create_scenario(tutorial_config())
    scenario.submit(wait=True, timeout=WAIT_SECONDS)
    tp.Orchestrator().stop()

    again = tp.get(scenario.id).submit(wait=True, timeout=WAIT_SECONDS)

    assert again.submission_status is SubmissionStatus.COMPLETED


def test_global_node_shared_across_workers() -> None:
    rate = Config.configure_data_node("rate", scope=Scope.GLOBAL, default_data=3)
    result = Config.configure_data_node("result")
    task = Config.configure_task("double", double, rate, result)
    config = Config.configure_scenario("uses_rate", [task])
    first = tp.create_scenario(config)
    second = tp.create_scenario(config)

    first.rate.write(50)
    submission = second.submit(wait=True, timeout=WAIT_SECONDS)

    assert submission.submission_status is SubmissionStatus.COMPLETED
    assert second.result.read() == 100


def test_job_timestamps_are_ordered() -> None:
    scenario = tp.create_scenario(tutorial_config())
    before = datetime.now()

    submission = scenario.submit(wait=True, timeout=WAIT_SECONDS)

    first, second = submission.jobs
    for job in first, second:
        assert before <= job.submitted_at <= job.run_at <= job.finished_at
    assert first.finished_at <= second.run_at
    assert submission.run_at == first.run_at
    assert submission.finished_at == second.finished_at
    assert submission.execution_duration >= ADD_SLEEP_SECONDS


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

    submission = scenario.submit(wait=True, timeout=WAIT_SECONDS)

    assert submission.jobs[0].status is Status.COMPLETED, submission.jobs[0].stacktrace
    assert path.read_bytes()[:2] == b"\x1f\x8b"  # the gzip magic number
    assert scenario.rows.read()["value"].tolist() == [4, 5]


def sleep_briefly(value: int) -> int:
    time.sleep(0.2)
    return value


def test_jobs_sent_ahead_record_real_start() -> None:
    # On one worker each job after the first starts as the one before it ends,
    # before the scheduler hears of it. Its RUNNING time must be that start, which
    # comes before the scheduler records the previous job COMPLETED.
    use_workers(1)
    source = Config.configure_data_node("source", default_data=1)
    tasks = [
        Config.configure_task(
            f"nap_{index}",
            sleep_briefly,
            source,
            Config.configure_data_node(f"napped_{index}"),
        )
        for index in range(4)
    ]
    scenario = tp.create_scenario(Config.configure_scenario("naps", tasks))

    submission = scenario.submit(wait=True, timeout=WAIT_SECONDS)

    jobs = sorted(submission.jobs, key=lambda job: job.run_at)
    for job in jobs:
        assert job.status is Status.COMPLETED
        assert job.execution_duration >= 0.2, (job.id, job.execution_duration)
    for before, after in itertools.pairwise(jobs):
        assert after.run_at <= before.finished_at, (before.id, after.id)


def test_first_jobs_start_before_all_are_pending() -> None:
    # The scheduler hands the first ready jobs to the workers while it still marks
    # the rest of a large submission PENDING. When the last job turns PENDING, some
    # must already be with the executor.
    from jupyter_scenarios import _runtime
    from jupyter_scenarios.events import EventEntityType, bus

    source = Config.configure_data_node("source", default_data=1)
    tasks = [
        Config.configure_task(
            f"copy_{index}", double, source, Config.configure_data_node(f"out_{index}")
        )
        for index in range(50)
    ]
    scenario = tp.create_scenario(Config.configure_scenario("wide", tasks))
    scheduler = _runtime.orchestrator()
    pending: list[str] = []
    handed_over: list[int] = []

    def on_event(event: Any) -> None:
        if (
            event.entity_type is EventEntityType.JOB
            and event.attribute_name == "status"
            and event.attribute_value is Status.PENDING
        ):
            pending.append(event.entity_id)
            if len(pending) == len(tasks):
                handed_over.append(len(scheduler._running))

    bus.subscribe(on_event)
    try:
        submission = scenario.submit(wait=True, timeout=WAIT_SECONDS)
    finally:
        bus.unsubscribe(on_event)

    assert submission.submission_status is SubmissionStatus.COMPLETED
    assert len(handed_over) == 1
    assert handed_over[0] > 0


# -- writes to the store -------------------------------------------------------------------


def stored_docs(folder: Path, kind: str) -> dict[str, dict[str, Any]]:
    """Read every row of ``kind`` through a connection of its own, as another process."""
    with contextlib.closing(sqlite3.connect(folder / "entities.db")) as connection:
        rows = connection.execute(f"SELECT id, doc FROM {kind}").fetchall()
    return {entity_id: json.loads(doc) for entity_id, doc in rows}


def test_submit_returns_with_its_entities_stored(
    standalone: Path, tmp_path: Path
) -> None:
    # The manager thread writes a new submission's entities. submit() must not
    # return before they are in the file, although FLUSH_SECONDS would allow a later
    # write while the jobs run.
    gate = tmp_path / "gate"
    scenario = tp.create_scenario(gated_config(gate))

    submission = scenario.submit()

    try:
        assert submission.id in stored_docs(standalone, "submission")
        jobs = stored_docs(standalone, "job")
        statuses = {jobs[job.id]["status"] for job in submission.jobs}
        assert statuses <= {"PENDING", "BLOCKED", "RUNNING"}, statuses
        nodes = stored_docs(standalone, "data_node")
        assert nodes[scenario.waited.id]["edit_in_progress"] is True
        assert nodes[scenario.after.id]["edit_in_progress"] is True
    finally:
        gate.touch()
    wait_finished(submission)


def slow_down_job_writes(folder: Path) -> None:
    """Make each write of a job row take tens of milliseconds.

    SQLite lets other threads of the process run meanwhile, so a thread released
    before the write would read the file before the write ends.
    """
    with contextlib.closing(sqlite3.connect(folder / "entities.db")) as connection:
        connection.execute(
            "CREATE TRIGGER slow_job_update AFTER UPDATE ON job BEGIN "
            "SELECT count(*) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "
            "SELECT x + 1 FROM c WHERE x < 200000) SELECT x FROM c); END"
        )
        connection.commit()


def test_wait_returns_after_outcome_stored(standalone: Path) -> None:
    scenario = tp.create_scenario(tutorial_config())
    slow_down_job_writes(standalone)

    submission = scenario.submit(wait=True, timeout=WAIT_SECONDS)

    assert submission.submission_status is SubmissionStatus.COMPLETED
    jobs = stored_docs(standalone, "job")
    assert {jobs[job_id]["status"] for job_id in submission.job_ids} == {"COMPLETED"}
    stored = stored_docs(standalone, "submission")[submission.id]
    assert stored["status"] == "COMPLETED"


def test_job_wait_returns_after_status_stored(standalone: Path) -> None:
    scenario = tp.create_scenario(tutorial_config())
    slow_down_job_writes(standalone)

    submission = scenario.submit()
    job = jobs_by_task(submission)["double"]
    assert job.wait(WAIT_SECONDS)

    assert stored_docs(standalone, "job")[job.id]["status"] == "COMPLETED"
    wait_finished(submission)


def test_unstorable_change_does_not_block_writes(
    standalone: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A job callback, which runs on the manager thread, puts an object that cannot
    # be pickled inside a property of the scenario, then changes the scenario.
    # That change cannot be stored; the jobs' changes written with it must be.
    scenario = tp.create_scenario(tutorial_config())
    scenario.properties["holder"] = {"items": []}

    def spoil(job: tp.Job) -> None:
        if job.task_config_id == "double" and job.status is Status.COMPLETED:
            scenario.properties["holder"]["items"].append(threading.Lock())
            scenario.properties["spoiled"] = True

    with caplog.at_level(logging.ERROR, logger="jupyter_scenarios"):
        submission = scenario.submit(callbacks=[spoil], wait=True, timeout=WAIT_SECONDS)

    assert submission.submission_status is SubmissionStatus.COMPLETED
    jobs = stored_docs(standalone, "job")
    assert {jobs[job_id]["status"] for job_id in submission.job_ids} == {"COMPLETED"}
    assert (
        "spoiled" not in stored_docs(standalone, "scenario")[scenario.id]["properties"]
    )
    messages = [record.getMessage() for record in caplog.records]
    assert any(scenario.id in message for message in messages), messages


def test_failing_writes_are_retried(
    standalone: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Another program makes every write of a job row fail, as a full disk would.
    # The manager thread must log it, go on running jobs, and write everything
    # once the writes succeed again.
    failure = "job rows cannot be written now"
    scenario = tp.create_scenario(tutorial_config())
    with contextlib.closing(sqlite3.connect(standalone / "entities.db")) as connection:
        for event in ("INSERT", "UPDATE"):
            connection.execute(
                f"CREATE TRIGGER refuse_job_{event.lower()} BEFORE {event} ON job "
                f"BEGIN SELECT RAISE(ABORT, '{failure}'); END"
            )
        connection.commit()

    with caplog.at_level(logging.ERROR, logger="jupyter_scenarios"):
        submission = scenario.submit(wait=True, timeout=WAIT_SECONDS)

    assert submission.submission_status is SubmissionStatus.COMPLETED
    assert scenario.my_output.read() == 43
    assert not set(submission.job_ids) & set(stored_docs(standalone, "job"))
    assert any(
        failure in record.getMessage()
        or (record.exc_info and failure in str(record.exc_info[1]))
        for record in caplog.records
    ), [r.getMessage() for r in caplog.records]

    with contextlib.closing(sqlite3.connect(standalone / "entities.db")) as connection:
        connection.execute("DROP TRIGGER refuse_job_insert")
        connection.execute("DROP TRIGGER refuse_job_update")
        connection.commit()

    def completed_in_file() -> bool:
        jobs = stored_docs(standalone, "job")
        return all(
            jobs.get(job_id, {}).get("status") == "COMPLETED"
            for job_id in submission.job_ids
        )

    wait_until(completed_in_file, WAIT_SECONDS, "the job rows to be written")
    assert stored_docs(standalone, "data_node")[scenario.my_output.id]["edits"]
    again = scenario.submit(wait=True, timeout=WAIT_SECONDS)
    assert again.submission_status is SubmissionStatus.COMPLETED
