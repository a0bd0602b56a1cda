"""Attacks on the latest changes: committing outputs, write errors, submit checks.

Tests use real files under ``tmp_path``, the development scheduler of the ``engine``
fixture or the worker processes of ``standalone``, and fresh interpreters that
share a storage folder. Every wait has a timeout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from engine_fixtures import REPO_ROOT, TESTS_DIR, WAIT_SECONDS
from engine_fixtures import engine as engine_fixture  # noqa: F401 - fixture

import jupyter_scenarios as tp
from jupyter_scenarios import Config, Status
from jupyter_scenarios.events import EventEntityType, EventOperation, bus
from jupyter_scenarios.exceptions import NonExistingDataNode

pytestmark = pytest.mark.timeout(300)

# ext4 refuses a new hard link to a file that has this many links (EMLINK).
EXT4_MAX_LINKS = 65000
# Seconds a helper interpreter may run.
PROCESS_SECONDS = 120.0


# -- task and write functions (importable, so they travel by reference) ----------------


def pair(value: int) -> tuple[int, int]:
    return value + 1, value + 2


def double(value: int) -> int:
    return 2 * value


def write_text(data: Any, path: str) -> None:
    Path(path).write_text(repr(data))


def read_text(path: str) -> str:
    return Path(path).read_text()


class QuotaExceeded(OSError):
    """OSError of a storage service that carries the rejected size as an attribute."""

    def __init__(self, *args: Any, size: int | None = None) -> None:
        super().__init__(*args)
        self.size = size


def reject_over_quota(data: Any, path: str) -> None:
    raise QuotaExceeded(28, "quota exceeded", size=1234)


def reject_missing_folder(data: Any, path: str) -> None:
    with open(path, "w") as file:
        file.write(repr(data))


# -- helpers ---------------------------------------------------------------------------


def run_interpreter(source: str, folder: Path) -> str:
    """Run ``source`` in a fresh interpreter whose runtime stores in ``folder``."""
    header = textwrap.dedent(
        f"""
        import jupyter_scenarios as tp
        from jupyter_scenarios import Config
        Config.configure_core(storage_folder={str(folder)!r})
        """
    )
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(TESTS_DIR)])
    completed = subprocess.run(
        [sys.executable, "-c", header + textwrap.dedent(source)],
        capture_output=True,
        text=True,
        env=environment,
        cwd=str(REPO_ROOT),
        timeout=PROCESS_SECONDS,
        check=False,
    )
    assert completed.returncode == 0, (
        f"helper failed:\n{completed.stdout}\n{completed.stderr}"
    )
    return completed.stdout


def set_immutable(path: Path, immutable: bool) -> None:
    """Set or clear the ext4 immutable attribute, which blocks renames even for root."""
    flag = "+i" if immutable else "-i"
    subprocess.run(["chattr", flag, str(path)], check=True, timeout=30)


# -- committing several outputs --------------------------------------------------------


@pytest.mark.usefixtures("engine")
def test_unlinkable_output_survives_failed_commit(tmp_path: Path) -> None:
    """An output whose file cannot be hard-linked keeps a file when a later rename fails."""
    data = tmp_path / "data"
    links = tmp_path / "links"
    data.mkdir()
    links.mkdir()
    first_path = data / "first.p"
    second_path = data / "second.p"
    source = Config.configure_data_node("source", default_data=1)
    first = Config.configure_pickle_data_node("first", path=str(first_path))
    second = Config.configure_pickle_data_node("second", path=str(second_path))
    task = Config.configure_task("pairing", pair, source, [first, second])
    scenario = tp.create_scenario(Config.configure_scenario("pairs", [task]))
    scenario.first.write(100)
    scenario.second.write(200)
    # The file system refuses another link to the first file (as one without hard
    # links would), and refuses to replace the second file.
    for number in range(EXT4_MAX_LINKS - 1):
        os.link(first_path, links / str(number))
    set_immutable(second_path, True)
    try:
        submission = scenario.submit(wait=True, timeout=WAIT_SECONDS)
    finally:
        set_immutable(second_path, False)

    job = submission.jobs[0]
    assert job.status is Status.FAILED
    assert first_path.exists(), (
        "the failed commit deleted the first output's file; "
        f"files left: {sorted(p.name for p in data.iterdir())}"
    )


@pytest.mark.usefixtures("engine")
def test_commit_failure_hides_generic_write(tmp_path: Path) -> None:
    """A failed commit does not claim that no output changed after a generic write."""
    record = tmp_path / "record.txt"
    record.write_text("old")
    folder = tmp_path / "a_folder"
    folder.mkdir()
    source = Config.configure_data_node("source", default_data=1)
    recorded = Config.configure_generic_data_node(
        "recorded",
        read_fct=read_text,
        write_fct=write_text,
        read_fct_args=[str(record)],
        write_fct_args=[str(record)],
    )
    target = Config.configure_pickle_data_node("target", path=str(folder))
    task = Config.configure_task("pairing", pair, source, [recorded, target])
    scenario = tp.create_scenario(Config.configure_scenario("pairs", [task]))

    submission = scenario.submit(wait=True, timeout=WAIT_SECONDS)

    job = submission.jobs[0]
    assert job.status is Status.FAILED
    assert record.read_text() != "old", "the generic output was not written"
    assert "No output of the job changed" not in job.reason, (
        f"record.txt now contains {record.read_text()!r}, but the reason is: "
        f"{job.reason}"
    )


# -- write errors of data nodes --------------------------------------------------------


@pytest.mark.usefixtures("engine")
def test_write_error_keeps_subclass_attributes(tmp_path: Path) -> None:
    """An OSError subclass from a write function keeps its own attributes."""
    config = Config.configure_generic_data_node(
        "uploaded",
        read_fct=read_text,
        write_fct=reject_over_quota,
        read_fct_args=[str(tmp_path / "uploaded.txt")],
        write_fct_args=[str(tmp_path / "uploaded.txt")],
    )
    scenario_config = Config.configure_scenario(
        "uploads", [], additional_data_node_configs=[config]
    )
    node = tp.create_scenario(scenario_config).uploaded

    with pytest.raises(QuotaExceeded) as caught:
        node.write("payload")

    assert caught.value.errno == 28
    assert caught.value.size == 1234, "the rejected size was lost"


@pytest.mark.usefixtures("engine")
def test_write_error_keeps_file_name(tmp_path: Path) -> None:
    """A FileNotFoundError from a write function keeps the file name it names."""
    target = tmp_path / "missing_folder" / "out.txt"
    config = Config.configure_generic_data_node(
        "exported",
        read_fct=read_text,
        write_fct=reject_missing_folder,
        read_fct_args=[str(target)],
        write_fct_args=[str(target)],
    )
    scenario_config = Config.configure_scenario(
        "exports", [], additional_data_node_configs=[config]
    )
    node = tp.create_scenario(scenario_config).exported

    with pytest.raises(FileNotFoundError) as caught:
        node.write("payload")

    assert caught.value.filename == str(target), caught.value


# -- submit and other processes --------------------------------------------------------


def test_submit_sees_deletion_during_submit(engine: Path) -> None:
    """A submit notices an output that another process deleted while jobs are created."""
    source = Config.configure_data_node("source", default_data=1)
    middle = Config.configure_data_node("middle")
    last = Config.configure_data_node("last")
    first_task = Config.configure_task("first_double", double, source, middle)
    second_task = Config.configure_task("second_double", double, middle, last)
    scenario = tp.create_scenario(
        Config.configure_scenario("chain", [first_task, second_task])
    )
    scenario.last.write(0)
    last_id = scenario.last.id
    deleted: list[str] = []

    def delete_last_in_other_process(event: Any) -> None:
        if (
            event.entity_type is EventEntityType.JOB
            and event.operation is EventOperation.CREATION
            and not deleted
        ):
            deleted.append(event.entity_id)
            run_interpreter(f"tp.delete({last_id!r})", engine)

    bus.subscribe(delete_last_in_other_process)
    try:
        with pytest.raises(NonExistingDataNode):
            scenario.submit(wait=True, timeout=WAIT_SECONDS)
    finally:
        bus.unsubscribe(delete_last_in_other_process)
    assert deleted, "no job was created"


# -- configuration checks --------------------------------------------------------------


@pytest.mark.usefixtures("engine")
def test_task_accepts_numpy_bool_skippable() -> None:
    """A NumPy boolean, as a pandas or NumPy test returns it, is a valid skippable."""
    import numpy as np

    source = Config.configure_data_node("source", default_data=1)
    result = Config.configure_data_node("result")
    flags = np.array([True, False])

    task = Config.configure_task("doubling", double, source, result, skippable=flags[0])

    assert task.skippable is True


# -- messages at interpreter exit ------------------------------------------------------


EXIT_SCRIPT = """
import sys
import time

import jupyter_scenarios as tp
from jupyter_scenarios import Config
from slow_task import sleep_then_return

if __name__ == "__main__":
    Config.configure_core(storage_folder=sys.argv[1])
    Config.configure_job_executions(mode="standalone", max_nb_of_workers=1)
    source = Config.configure_data_node("source", default_data=1)
    result = Config.configure_data_node("result")
    task = Config.configure_task("sleeping", sleep_then_return, source, result)
    scenario = tp.create_scenario(Config.configure_scenario("sleeps", [task]))
    job = scenario.submit().jobs[0]
    deadline = time.monotonic() + 60
    while job.status.name != "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.05)
    print("data:", job.status.name, flush=True)
"""

SLOW_TASK_MODULE = """
import time


def sleep_then_return(value):
    time.sleep(60)
    return value
"""


def test_exit_message_stays_off_stdout(tmp_path: Path) -> None:
    """With stderr closed, the exit message about cancelled jobs does not go to stdout."""
    (tmp_path / "exit_script.py").write_text(EXIT_SCRIPT)
    (tmp_path / "slow_task.py").write_text(SLOW_TASK_MODULE)
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(tmp_path)])
    # bash starts the interpreter with file descriptor 2 closed, so sys.stderr is None.
    completed = subprocess.run(
        [
            "bash",
            "-c",
            'exec "$0" "$@" 2>&-',
            sys.executable,
            str(tmp_path / "exit_script.py"),
            str(tmp_path / "store"),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=environment,
        cwd=str(tmp_path),
        timeout=PROCESS_SECONDS,
        check=False,
    )

    assert completed.returncode == 0
    assert completed.stdout.splitlines() == ["data: RUNNING"], completed.stdout


# -- write errors of jobs --------------------------------------------------------------


@pytest.mark.usefixtures("engine")
def test_job_error_spots_file_as_folder(tmp_path: Path) -> None:
    """A job whose output folder is a file names that cause, not space or permissions."""
    blocker = tmp_path / "reports"
    blocker.write_text("a file where the output folder should be")
    source = Config.configure_data_node("source", default_data=1)
    target = Config.configure_pickle_data_node(
        "target", path=str(blocker / "doubled.p")
    )
    task = Config.configure_task("doubling", double, source, target)
    scenario = tp.create_scenario(Config.configure_scenario("doubles", [task]))

    submission = scenario.submit(wait=True, timeout=WAIT_SECONDS)

    job = submission.jobs[0]
    assert job.status is Status.FAILED
    assert "NotADirectoryError" in job.reason, job.reason
    assert "free space" not in job.reason, job.reason
