"""Attacks on how standalone jobs write their outputs when something goes wrong.

Each test runs real worker processes of the ``standalone`` fixture (2 workers) and
real files under ``tmp_path``. A job's output goes to a hidden staging file beside
the data node's file, which the scheduler renames onto the file only when the whole
job succeeded.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from engine_fixtures import WAIT_SECONDS, wait_for_file, wait_for_gate, wait_status
from engine_fixtures import engine as engine_fixture  # noqa: F401 - fixture
from engine_fixtures import forkserver_started as forkserver_fixture  # noqa: F401
from engine_fixtures import standalone as standalone_fixture  # noqa: F401 - fixture

import jupyter_scenarios as tp
from jupyter_scenarios import Config, Status, SubmissionStatus

pytestmark = [pytest.mark.usefixtures("standalone"), pytest.mark.timeout(240)]

# Bytes that a task returns before the value that stops its write, so that the
# worker has written part of the staging file when it dies or is cancelled.
PARTIAL_BYTES = 8 * 1024 * 1024
# RLIMIT_FSIZE in bytes that a task sets on its own worker process, so that
# writing its output fails as on a full disk.
FILE_SIZE_LIMIT = 1024 * 1024


# -- task functions (importable, so they travel by reference) --------------------------


def double(value: int) -> int:
    return 2 * value


def pair(value: int) -> tuple[int, int]:
    return value + 1, value + 2


def value_and_set(value: int) -> tuple[int, set[int]]:
    return value, {value}


class DiesWhilePickled:
    """Value whose pickling ends the worker process with exit code 7."""

    def __reduce__(self) -> Any:
        os._exit(7)


class HangsWhilePickled:
    """Value whose pickling creates the file ``marker`` and then blocks for 120 s."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        Path(self.marker).write_text("writing")
        time.sleep(120)
        raise TimeoutError("the test never cancelled this job")


def partial_then_die(value: int) -> list[Any]:
    return [b"x" * PARTIAL_BYTES, DiesWhilePickled()]


def partial_then_hang(marker: str) -> list[Any]:
    return [b"x" * PARTIAL_BYTES, HangsWhilePickled(marker)]


def exceed_file_size_limit(value: int) -> bytes:
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, resource.RLIM_INFINITY))
    return b"y" * (4 * FILE_SIZE_LIMIT)


def write_record(data: Any, path: str) -> None:
    Path(path).write_text(repr(data))


def read_record(path: str) -> str:
    return Path(path).read_text()


# -- helpers -----------------------------------------------------------------------------


def staging_files(folder: Path) -> list[str]:
    """Return the staging files of job outputs anywhere under ``folder``."""
    return sorted(str(path) for path in folder.rglob("*") if ".staging" in path.name)


def wait_finished(submission: tp.Submission) -> None:
    assert submission.wait(WAIT_SECONDS), [
        (job.task_config_id, job.status.name) for job in submission.jobs
    ]


def restart_orchestrator() -> None:
    tp.Orchestrator().stop(wait=True, timeout=WAIT_SECONDS)
    tp.Orchestrator().run()


def check_pool_still_runs() -> None:
    number = Config.configure_data_node("later_number", default_data=4)
    doubled = Config.configure_data_node("later_doubled")
    task = Config.configure_task("later_double", double, number, doubled)
    scenario = tp.create_scenario(Config.configure_scenario("later", [task]))
    submission = scenario.submit(wait=True, timeout=WAIT_SECONDS)
    assert submission.submission_status is SubmissionStatus.COMPLETED
    assert scenario.later_doubled.read() == 8


# -- tests -------------------------------------------------------------------------------


def test_failed_commit_keeps_other_output(tmp_path: Path) -> None:
    """A job whose second output cannot be committed leaves its first output unchanged."""
    folder = tmp_path / "a_folder"
    folder.mkdir()
    source = Config.configure_data_node("source", default_data=1)
    first = Config.configure_pickle_data_node("first", path=str(tmp_path / "first.p"))
    second = Config.configure_pickle_data_node("second", path=str(folder))
    task = Config.configure_task("pairing", pair, source, [first, second])
    scenario = tp.create_scenario(Config.configure_scenario("pairs", [task]))
    scenario.first.write(100)
    edits_before = len(scenario.first.edits)

    submission = scenario.submit()
    wait_finished(submission)

    job = submission.jobs[0]
    assert job.status is Status.FAILED
    assert scenario.first.read() == 100, "the FAILED job replaced its first output"
    assert len(scenario.first.edits) == edits_before
    assert scenario.first.edit_in_progress is False
    assert scenario.second.edit_in_progress is False
    check_pool_still_runs()


def test_commit_error_names_data_node(tmp_path: Path) -> None:
    """A job whose output cannot be committed names that data node and its task."""
    folder = tmp_path / "a_folder"
    folder.mkdir()
    source = Config.configure_data_node("source", default_data=1)
    target = Config.configure_pickle_data_node("target_node", path=str(folder))
    task = Config.configure_task("doubling", double, source, target)
    scenario = tp.create_scenario(Config.configure_scenario("doubles", [task]))

    submission = scenario.submit()
    wait_finished(submission)

    job = submission.jobs[0]
    assert job.status is Status.FAILED
    assert "target_node" in job.reason, job.reason
    assert "doubling" in job.reason, job.reason
    assert staging_files(tmp_path) == []


def test_worker_death_leaves_no_staging(standalone: Path) -> None:
    """A worker that dies while writing an output leaves no staging file behind."""
    source = Config.configure_data_node("source", default_data=1)
    out = Config.configure_pickle_data_node("out")
    task = Config.configure_task("dying", partial_then_die, source, out)
    scenario = tp.create_scenario(Config.configure_scenario("dies", [task]))
    scenario.out.write("old")

    submission = scenario.submit()
    wait_finished(submission)

    job = submission.jobs[0]
    assert job.status is Status.FAILED
    assert "exited with code 7" in job.reason
    assert scenario.out.read() == "old"
    assert scenario.out.edit_in_progress is False
    assert staging_files(standalone) == [], "staging file left after the job failed"
    restart_orchestrator()
    assert staging_files(standalone) == [], "staging file left after a restart"
    check_pool_still_runs()


def test_cancel_mid_write_leaves_no_staging(standalone: Path, tmp_path: Path) -> None:
    """A job cancelled while writing an output leaves no staging file behind."""
    marker = tmp_path / "writing"
    source = Config.configure_data_node("source", default_data=str(marker))
    out = Config.configure_pickle_data_node("out")
    task = Config.configure_task("hanging", partial_then_hang, source, out)
    scenario = tp.create_scenario(Config.configure_scenario("hangs", [task]))
    scenario.out.write("old")

    submission = scenario.submit()
    wait_for_file(marker)
    job = submission.jobs[0]
    tp.cancel_job(job)
    wait_finished(submission)

    assert job.status is Status.CANCELED
    assert scenario.out.read() == "old"
    assert scenario.out.edit_in_progress is False
    assert staging_files(standalone) == [], "staging file left after the cancel"
    restart_orchestrator()
    assert staging_files(standalone) == [], "staging file left after a restart"
    check_pool_still_runs()


def test_full_disk_error_gives_right_advice() -> None:
    """A write that fails like a full disk names the file and does not blame the value."""
    source = Config.configure_data_node("source", default_data=1)
    out = Config.configure_pickle_data_node("out")
    task = Config.configure_task("filling", exceed_file_size_limit, source, out)
    scenario = tp.create_scenario(Config.configure_scenario("full", [task]))
    scenario.out.write("old")

    submission = scenario.submit()
    wait_finished(submission)

    job = submission.jobs[0]
    assert job.status is Status.FAILED
    assert "File too large" in job.reason
    assert scenario.out.read() == "old"
    assert scenario.out.edit_in_progress is False
    assert "Return a value that this storage type can store" not in job.reason, (
        f"a file system error is blamed on the value: {job.reason}"
    )
    assert str(scenario.out.path.parent) in job.reason, (
        f"the error does not say where the write failed: {job.reason}"
    )


def test_relative_output_after_chdir(tmp_path: Path) -> None:
    """A job with a relative output path commits the file its worker wrote after a chdir."""
    gate = tmp_path / "gate"
    (tmp_path / "first_cwd").mkdir()
    (tmp_path / "second_cwd").mkdir()
    source = Config.configure_data_node("source", default_data=str(gate))
    out = Config.configure_pickle_data_node("out", path="relative/out.p")
    task = Config.configure_task("gated", wait_for_gate, source, out)
    scenario = tp.create_scenario(Config.configure_scenario("relative", [task]))
    original_cwd = os.getcwd()

    os.chdir(tmp_path / "first_cwd")
    try:
        submission = scenario.submit()
        wait_status(submission.jobs[0], Status.RUNNING)
        os.chdir(tmp_path / "second_cwd")
        gate.touch()
        wait_finished(submission)
    finally:
        os.chdir(original_cwd)

    job = submission.jobs[0]
    assert staging_files(tmp_path) == [], "staging file left after the job"
    assert job.status is Status.COMPLETED, job.reason
    assert (tmp_path / "first_cwd" / "relative" / "out.p").exists()


def test_failed_job_skips_generic_write(tmp_path: Path) -> None:
    """A job that fails on one output does not call the write_fct of its generic output."""
    record = tmp_path / "record.txt"
    record.write_text("old")
    source = Config.configure_data_node("source", default_data=1)
    first = Config.configure_generic_data_node(
        "first",
        read_fct=read_record,
        write_fct=write_record,
        read_fct_args=[str(record)],
        write_fct_args=[str(record)],
    )
    second = Config.configure_json_data_node("second")
    task = Config.configure_task("mixed", value_and_set, source, [first, second])
    scenario = tp.create_scenario(Config.configure_scenario("mixed", [task]))

    submission = scenario.submit()
    wait_finished(submission)

    job = submission.jobs[0]
    assert job.status is Status.FAILED
    assert "second" in job.reason
    assert record.read_text() == "old", "the FAILED job wrote its generic output"


def test_failed_rename_restores_earlier_outputs(tmp_path: Path) -> None:
    """commit_staged puts back the outputs renamed before the one that failed."""
    from jupyter_scenarios.worker import StagedOutput, commit_staged, previous_path

    first = tmp_path / "first.p"
    first.write_text("old first")
    staged_first = tmp_path / ".first.p.JOB_x.staging.p"
    staged_first.write_text("new first")
    fresh = tmp_path / "fresh.p"
    staged_fresh = tmp_path / ".fresh.p.JOB_x.staging.p"
    staged_fresh.write_text("new fresh")
    missing = StagedOutput(
        "DATANODE_c", str(tmp_path / "gone.staging"), str(tmp_path / "c")
    )
    outputs = [
        StagedOutput("DATANODE_a", str(staged_first), str(first)),
        StagedOutput("DATANODE_b", str(staged_fresh), str(fresh)),
        missing,
    ]

    with pytest.raises(OSError) as raised:
        commit_staged(outputs, "JOB_x")

    assert getattr(raised.value, "output", None) is missing
    assert first.read_text() == "old first"
    assert not fresh.exists(), "an output that did not exist before was left"
    assert not Path(previous_path(first, "JOB_x")).exists()


def test_journal_commit_missing_staging_file(tmp_path: Path) -> None:
    """A journaled commit whose staging file is gone fails before any rename."""
    from jupyter_scenarios.worker import CommitFailed, StagedOutput, commit_staged

    first = tmp_path / "first.p"
    first.write_text("old first")
    staged_first = tmp_path / ".first.p.JOB_y.staging.p"
    staged_first.write_text("new first")
    missing = StagedOutput("DATANODE_b", str(tmp_path / "gone"), str(tmp_path / "b"))
    journal = tmp_path / "journal.json"

    with pytest.raises(CommitFailed) as raised:
        commit_staged(
            [StagedOutput("DATANODE_a", str(staged_first), str(first)), missing],
            "JOB_y",
            str(journal),
        )

    assert raised.value.output is missing
    assert first.read_text() == "old first"
    assert not journal.exists()
