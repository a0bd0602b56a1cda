"""Attacks on letting submission waiters go only once the final statuses are stored.

In standalone and dask modes the scheduler's manager thread sets a submission's
finished event after it has written the jobs' final statuses (``_run_manager`` and
``_finishing`` in scheduler.py). Rows are also built under the store lock, and a
scheduler write leaves out an entity whose document cannot be built. Every check of
the file reads ``entities.db`` through a connection of its own, as another process
would. The first seven tests each failed when they were written.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from engine_fixtures import (
    WAIT_SECONDS,
    double,
    double_config,
    main_namespace,
    run_python,
    single_gate_config,
    wait_until,
)
from engine_fixtures import engine as engine_fixture  # noqa: F401 - fixture
from engine_fixtures import forkserver_started as forkserver_fixture  # noqa: F401
from engine_fixtures import standalone as standalone_fixture  # noqa: F401 - fixture

import jupyter_scenarios as tp
from jupyter_scenarios import Config, Status, SubmissionStatus, _runtime
from jupyter_scenarios.enums import FINAL_STATUSES
from jupyter_scenarios.exceptions import SubmissionTimeoutWarning
from jupyter_scenarios.scheduler import SCHEDULE_WAIT_SECONDS

pytestmark = [pytest.mark.timeout(300)]

# Seconds a test gives a wait that must return at once, or that must not return.
SHORT_WAIT_SECONDS = 3.0


# -- task functions (importable, so they travel by reference) ------------------------


def exit_worker(value: int) -> int:
    os._exit(3)


# -- helpers -------------------------------------------------------------------------


def unwritten_input_config() -> Any:
    """``missing -> double -> doubled``, where nothing ever writes ``missing``."""
    missing = Config.configure_data_node("missing")
    doubled = Config.configure_data_node("doubled")
    task = Config.configure_task("double", double, missing, doubled)
    return Config.configure_scenario("never_ready", [task])


def stored_docs(folder: Path, kind: str) -> dict[str, dict[str, Any]]:
    """Read every row of table ``kind`` through a connection of the test's own."""
    with contextlib.closing(sqlite3.connect(folder / "entities.db")) as connection:
        return {
            entity_id: json.loads(doc)
            for entity_id, doc in connection.execute(f"SELECT id, doc FROM {kind}")
        }


class HoldOnStatus:
    """A job callback that keeps the manager thread busy on one job status.

    Job callbacks run on the manager thread inside a round, before it writes the
    round's changes, so while one waits on a final status the job is final in
    memory only.
    """

    def __init__(self, *statuses: Status) -> None:
        self.statuses = statuses
        self.holding = threading.Event()
        self._released = threading.Event()

    def __call__(self, job: tp.Job) -> None:
        if job.status in self.statuses and not self.holding.is_set():
            self.holding.set()
            self._released.wait(WAIT_SECONDS)

    def release(self) -> None:
        self._released.set()


# -- waits that return before the outcome is stored ---------------------------------


@pytest.mark.usefixtures("standalone")
def test_wait_all_returns_before_stored(standalone: Path) -> None:
    # tp.wait_all() skipped each submission whose jobs were final in memory, so it
    # returned before the manager thread had written them, where submission.wait()
    # kept waiting. A notebook ending with tp.wait_all() and then killed lost the
    # outcome.
    hold = HoldOnStatus(*FINAL_STATUSES)
    scenario = tp.create_scenario(double_config())
    try:
        submission = scenario.submit(callbacks=[hold])
        assert hold.holding.wait(WAIT_SECONDS), "the job never finished"
        assert not submission.wait(0.2), "wait() returned before the write"

        with pytest.warns(SubmissionTimeoutWarning, match="not stored yet"):
            returned = tp.wait_all(timeout=SHORT_WAIT_SECONDS)
        job_rows = stored_docs(standalone, "job")
        submission_rows = stored_docs(standalone, "submission")
    finally:
        hold.release()

    [job_id] = submission.job_ids
    # The held manager thread cannot write, so wait_all() must time out.
    assert returned is False, (
        f"tp.wait_all() returned with the job stored as {job_rows[job_id]['status']}"
    )
    assert submission_rows[submission.id]["status"] != "COMPLETED"
    assert tp.wait_all(timeout=WAIT_SECONDS) is True
    assert stored_docs(standalone, "job")[job_id]["status"] == "COMPLETED"


# -- waits that never return -------------------------------------------------------


@pytest.mark.usefixtures("standalone")
def test_loaded_undefined_submission_waits(standalone: Path) -> None:
    # A kernel killed with a BLOCKED job leaves it for the next kernel to settle
    # as ABANDONED, which makes the submission UNDEFINED. A submission loaded
    # from the store sets its finished event from its stored status alone, and
    # UNDEFINED did not count, so wait() blocked for ever although every job was
    # final.
    killed = run_python(
        f"""
        import os, signal
        if __name__ == "__main__":
            import jupyter_scenarios as tp
            from jupyter_scenarios import Config
            from test_attack_wait_after_write import unwritten_input_config
            Config.configure_core(storage_folder={str(standalone)!r})
            Config.configure_job_executions(mode="standalone", max_nb_of_workers=1)
            scenario = tp.create_scenario(unwritten_input_config())
            submission = scenario.submit()
            print(submission.id, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        """,
        check=False,
    )
    submission_id = killed.stdout.split()[0]
    run_python(
        f"""
        import jupyter_scenarios as tp
        from jupyter_scenarios import Config
        Config.configure_core(storage_folder={str(standalone)!r})
        tp.Orchestrator().run()
        tp.Orchestrator().stop()
        """
    )

    submission = tp.get(submission_id)

    assert submission.submission_status is SubmissionStatus.UNDEFINED
    assert [job.status for job in submission.jobs] == [Status.ABANDONED]
    assert submission.wait(SHORT_WAIT_SECONDS), (
        "wait() on a loaded submission whose jobs are all final did not return"
    )


@pytest.mark.usefixtures("standalone")
def test_submit_after_stop_waits_forever(standalone: Path) -> None:
    # stop() posts "stop" and sets _stopped only after the manager thread ended,
    # so a submit() that got the scheduler before stop() and posts after it
    # passes the _stopped check. The manager thread handled its command after
    # _shutdown (or never), its job stayed PENDING, and submit(wait=True) never
    # returned. The test keeps the manager thread in a job callback to order the
    # posts.
    hold = HoldOnStatus(Status.RUNNING)
    first = tp.create_scenario(double_config("first"))
    second = tp.create_scenario(double_config("second"))
    scheduler = _runtime.orchestrator()
    first.submit(callbacks=[hold])
    assert hold.holding.wait(WAIT_SECONDS), "the first job never ran"
    stopper = threading.Thread(target=lambda: tp.Orchestrator().stop(wait=False))
    stopper.start()
    wait_until(
        lambda: scheduler._commands.qsize() >= 1, 10.0, "the stop command to be posted"
    )
    returned: list[tp.Submission] = []
    # A daemon thread, so that a hang cannot outlive the test.
    submitter = threading.Thread(
        target=lambda: returned.append(scheduler.submit(second, wait=True)),
        daemon=True,
    )
    submitter.start()
    time.sleep(0.5)
    hold.release()
    stopper.join(WAIT_SECONDS)

    submitter.join(SCHEDULE_WAIT_SECONDS + 5.0)

    assert not stopper.is_alive(), "stop() did not return"
    assert returned, "submit(wait=True) still waits after the scheduler stopped"


@pytest.mark.usefixtures("standalone")
def test_callback_submit_wait_deadlocks(standalone: Path) -> None:
    # A job callback runs on the manager thread, so submit(wait=True) there waited
    # for jobs that only that thread can start: it always timed out, and without
    # a timeout it blocked every job of the kernel.
    first = tp.create_scenario(double_config("first"))
    second = tp.create_scenario(double_config("second"))
    nested: list[tp.Submission] = []

    errors: list[BaseException] = []

    def submit_and_wait(job: tp.Job) -> None:
        if job.status is Status.COMPLETED and not nested and not errors:
            try:
                nested.append(second.submit(wait=True, timeout=SHORT_WAIT_SECONDS))
            except RuntimeError as error:
                errors.append(error)

    first.submit(callbacks=[submit_and_wait], wait=True, timeout=WAIT_SECONDS)

    # Such a wait is rejected before anything is submitted.
    assert not nested
    assert len(errors) == 1
    assert "job callback" in str(errors[0])
    assert tp.get_latest_submission(second) is None


# -- an entity left out of a write stays out ------------------------------------------


@pytest.mark.usefixtures("standalone")
def test_rejected_property_loses_final_status(standalone: Path, tmp_path: Path) -> None:
    # Setting a property that cannot be pickled raised TypeError, but
    # PersistedProperties kept the value in memory. From then on Store.flush left
    # the submission out of every scheduler write, so its row kept PENDING for
    # ever while wait() returned as if the outcome were stored.
    gate = tmp_path / "gate"
    scenario = tp.create_scenario(single_gate_config(gate))
    submission = scenario.submit()
    with pytest.raises(TypeError):
        submission.properties["lock"] = threading.Lock()
    gate.touch()

    assert submission.wait(WAIT_SECONDS)

    assert submission.submission_status is SubmissionStatus.COMPLETED
    stored = stored_docs(standalone, "submission")[submission.id]
    assert stored["status"] == "COMPLETED", (
        f"wait() returned with the submission stored as {stored['status']}"
    )
    assert "lock" not in submission.properties, (
        "the rejected value stayed in submission.properties"
    )


# -- messages of submit()'s property check ---------------------------------------------


class UnpicklableWithBrokenRepr:
    """A value that cannot be pickled and whose repr() raises."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def __repr__(self) -> str:
        raise RuntimeError("repr is not available")


@pytest.mark.usefixtures("standalone")
def test_unstorable_broken_repr_message() -> None:
    # The check formatted the value with !r inside its except block, so a
    # failing repr() replaced the TypeError that names the property.
    scenario = tp.create_scenario(double_config())

    with pytest.raises(TypeError, match="handle"):
        tp.submit(scenario, handle=UnpicklableWithBrokenRepr())


@pytest.mark.usefixtures("standalone")
def test_unstorable_message_is_bounded() -> None:
    # The message contained the whole repr of the value: a list of 100,000
    # numbers with one lock in it gave a message of about 300 kB.
    scenario = tp.create_scenario(double_config())
    value = [0] * 100_000 + [threading.Lock()]

    with pytest.raises(TypeError) as raised:
        tp.submit(scenario, rows=value)

    assert "rows" in str(raised.value)
    assert len(str(raised.value)) < 2_000, f"{len(str(raised.value))} characters"


# -- cases that held (coverage of the deferred signal) -----------------------------------


@pytest.mark.usefixtures("standalone")
def test_zero_job_submission_wait(standalone: Path) -> None:
    # a submission without jobs is finished at once and must not
    # wait for a write that nothing else triggers.
    scenario = tp.create_scenario(Config.configure_scenario("empty", []))
    started = time.monotonic()

    submission = scenario.submit(wait=True, timeout=WAIT_SECONDS)

    assert submission.wait(0)
    assert time.monotonic() - started < SHORT_WAIT_SECONDS
    stored = stored_docs(standalone, "submission")[submission.id]
    assert stored["status"] == "COMPLETED"


@pytest.mark.usefixtures("standalone")
def test_dead_worker_outcome_stored(standalone: Path) -> None:
    # a worker that exits in the task gives a FAILED job, stored
    # before submit(wait=True) returns.
    scenario = tp.create_scenario(double_config("dying", exit_worker))

    submission = scenario.submit(wait=True, timeout=WAIT_SECONDS)

    assert submission.submission_status is SubmissionStatus.FAILED
    [job_id] = submission.job_ids
    assert stored_docs(standalone, "job")[job_id]["status"] == "FAILED"
    assert stored_docs(standalone, "submission")[submission.id]["status"] == "FAILED"


@pytest.mark.usefixtures("standalone")
def test_stop_releases_waiter(standalone: Path, tmp_path: Path) -> None:
    # stop() while a job runs lets a waiting thread go, with the
    # CANCELED status stored.
    scenario = tp.create_scenario(single_gate_config(tmp_path / "gate"))
    submission = scenario.submit()
    [job] = submission.jobs
    wait_until(lambda: job.status is Status.RUNNING, WAIT_SECONDS, f"{job.id} to run")
    results: list[bool] = []
    waiter = threading.Thread(target=lambda: results.append(submission.wait(30.0)))
    waiter.start()

    tp.Orchestrator().stop(wait=False)
    waiter.join(40.0)

    assert results == [True]
    assert stored_docs(standalone, "job")[job.id]["status"] == "CANCELED"


@pytest.mark.usefixtures("standalone")
def test_readers_and_writers_no_deadlock(standalone: Path) -> None:
    # rows are now built under the store lock. A thread listing jobs
    # and submissions and the main thread writing a data node, while the manager
    # thread writes 20 submissions, must all go on.
    scenarios = [tp.create_scenario(double_config(f"run_{i}")) for i in range(20)]
    stop = threading.Event()
    errors: list[BaseException] = []

    def read() -> None:
        try:
            while not stop.is_set():
                tp.get_jobs()
                tp.get_submissions()
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    reader = threading.Thread(target=read)
    reader.start()
    node = scenarios[0].run_0_number
    try:
        submissions = [scenario.submit() for scenario in scenarios]
        for value in range(200):
            node.write(value)
        finished = [submission.wait(WAIT_SECONDS) for submission in submissions]
    finally:
        stop.set()
        reader.join(30.0)

    assert all(finished)
    assert not errors, errors
    assert not reader.is_alive()


@pytest.mark.usefixtures("engine")
def test_development_mode_unchanged(engine: Path) -> None:
    # development mode has no manager thread and signals at once.
    scenario = tp.create_scenario(double_config())

    submission = scenario.submit(wait=True, timeout=WAIT_SECONDS)

    assert submission.wait(0)
    [job_id] = submission.job_ids
    assert stored_docs(engine, "job")[job_id]["status"] == "COMPLETED"


@pytest.mark.usefixtures("standalone")
def test_storable_values_accepted(standalone: Path) -> None:
    # the new check in submit() accepts what could be stored before:
    # numpy and pandas objects, datetimes, enums, dictionaries with int keys and
    # objects of a class defined in a notebook cell.
    numpy = pytest.importorskip("numpy")
    pandas = pytest.importorskip("pandas")
    namespace = main_namespace(
        """
        class Note:
            def __init__(self, text):
                self.text = text
        """
    )
    values = {
        "array": numpy.arange(5),
        "frame": pandas.DataFrame({"a": [1, 2]}),
        "when": datetime(2024, 1, 2),
        "status": Status.RUNNING,
        "int_keys": {1: {2: "x"}},
        "note": namespace["Note"]("hi"),
        "pair": (1, 2),
        "nan": float("nan"),
    }
    scenario = tp.create_scenario(double_config())

    submission = scenario.submit(wait=True, timeout=WAIT_SECONDS, **values)

    assert submission.submission_status is SubmissionStatus.COMPLETED
    stored = stored_docs(standalone, "submission")[submission.id]
    assert stored["status"] == "COMPLETED"
    assert set(stored["properties"]) == set(values)


@pytest.mark.usefixtures("standalone")
def test_wait_returns_soon_after_finish(standalone: Path) -> None:
    # writing before signalling keeps submit(wait=True) within
    # 100 ms of the last job's end (about 1 ms measured on a 2-core machine).
    gaps = []
    for index in range(10):
        scenario = tp.create_scenario(double_config(f"latency_{index}"))
        submission = scenario.submit(wait=True, timeout=WAIT_SECONDS)
        returned = datetime.now()
        assert submission.finished_at is not None
        gaps.append((returned - submission.finished_at).total_seconds())

    assert max(gaps) < 0.1, gaps


@pytest.mark.usefixtures("engine")
def test_dask_waits_for_write(engine: Path) -> None:
    # dask mode defers the signal as standalone mode does.
    pytest.importorskip("distributed")
    Config.configure_job_executions(mode="dask", max_nb_of_workers=1)
    hold = HoldOnStatus(*FINAL_STATUSES)
    scenario = tp.create_scenario(double_config())
    submission = scenario.submit(callbacks=[hold])
    assert hold.holding.wait(WAIT_SECONDS), "the job never finished"

    waited_early = submission.wait(0.3)
    hold.release()

    assert not waited_early, "wait() returned before the write"
    assert submission.wait(WAIT_SECONDS)
    [job_id] = submission.job_ids
    assert stored_docs(engine, "job")[job_id]["status"] == "COMPLETED"
    tp.Orchestrator().stop()
