"""Attacks on start-up repair of cut-short commits, the edit archive and write errors.

Tests use real files under ``tmp_path``, the development scheduler of the ``engine``
fixture, fresh interpreters that share its storage folder, and a second ``Store`` on
that folder in place of a restarted kernel. A helper interpreter simulates a kernel
that dies in the middle of ``commit_staged``: its ``os.replace`` ends the process at
a chosen rename of a staging file onto an output. Every wait and every helper has a
timeout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from engine_fixtures import REPO_ROOT, TESTS_DIR
from engine_fixtures import engine as engine_fixture  # noqa: F401 - fixture
from test_attack_round3 import (
    CRASH_STATUS,
    CRASHING_COMMIT,
    declare_pairs,
    load_pickle,
    restart_runtime,
)

import jupyter_scenarios as tp
from jupyter_scenarios import Config, Scope, Status
from jupyter_scenarios.exceptions import ConfigurationError, NonExistingDataNode

pytestmark = pytest.mark.timeout(300)

# Seconds a helper interpreter may run.
PROCESS_SECONDS = 120.0
# Edits written to one node: more than the 64 that a node's row keeps.
EDITS_PAST_ROW_LIMIT = 70
# Edits that each of two processes writes at once: together fewer than the 64
# that a node's row keeps, so that no edit is moved to the archive.
EQUAL_EDITS_PER_PROCESS = 30
# Hours by which the clock of the crashed kernel is ahead of this process's clock.
CLOCK_AHEAD_HOURS = 5


# -- task and write functions (importable, so they travel by reference) ----------------


def first_step(value: int) -> tuple[str, str]:
    return f"middle {value}", f"shared from first step {value}"


def second_step(middle: str) -> tuple[str, str]:
    return "shared from second step", "other from second step"


# One OSError without errno or strerror that a client keeps and raises again at each
# call, as a client that remembers a lost connection does.
LOST_CONNECTION = OSError("connection to the storage service lost")


def raise_lost_connection(data: object) -> None:
    raise LOST_CONNECTION


def read_nothing() -> None:
    return None


# -- helpers ---------------------------------------------------------------------------


def helper_environment(**extra: str) -> dict[str, str]:
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(TESTS_DIR)])
    environment.update(extra)
    return environment


def run_crashing(source: str, arguments: list[str], cwd: Path, **extra: str) -> str:
    """Run ``source`` in a fresh interpreter that must end with CRASH_STATUS."""
    completed = subprocess.run(
        [sys.executable, "-c", source, *arguments, str(CRASH_STATUS)],
        capture_output=True,
        text=True,
        env=helper_environment(**extra),
        cwd=str(cwd),
        timeout=PROCESS_SECONDS,
        check=False,
    )
    assert completed.returncode == CRASH_STATUS, (
        f"helper did not crash in the commit:\n{completed.stdout}\n{completed.stderr}"
    )
    return completed.stdout


def clock_ahead_timezone(hours: int) -> str:
    """Return a POSIX TZ value whose local time is ``hours`` ahead of this process's."""
    offset = datetime.now().astimezone().utcoffset() or timedelta(0)
    ahead = round(offset.total_seconds() / 3600) + hours
    # POSIX TZ offsets count hours west of UTC, so the sign is the other way round.
    return f"AHEAD{-ahead:+d}"


def other_store(folder: Path) -> tp.Store:
    """Open a second store on ``folder``, as a kernel started later does."""
    from jupyter_scenarios.entities import register_factories
    from jupyter_scenarios.store import Store

    store = Store(folder)
    register_factories(store)
    return store


# Run by a helper interpreter: one submission of two jobs that both write "shared".
# The first job writes "middle" and "shared"; the second reads "middle" and writes
# "shared" and "other". The kernel dies at the second job's second rename, so
# "shared" has the FAILED job's file, "other" still has its staging file, and the
# job stays RUNNING.
TWO_JOBS_ONE_OUTPUT = """
import os
import sys

import jupyter_scenarios as tp
from jupyter_scenarios import Config
from test_attack_round4 import first_step, second_step

folder, middle_path, shared_path, other_path = sys.argv[1:5]
CRASH_STATUS = int(sys.argv[5])
Config.configure_core(storage_folder=folder)
source = Config.configure_data_node("source", default_data=1)
middle = Config.configure_pickle_data_node("middle", path=middle_path)
shared = Config.configure_pickle_data_node("shared", path=shared_path)
other = Config.configure_pickle_data_node("other", path=other_path)
first = Config.configure_task("first_step", first_step, source, [middle, shared])
second = Config.configure_task("second_step", second_step, middle, [shared, other])
scenario = tp.create_scenario(Config.configure_scenario("steps", [first, second]))
scenario.shared.write("old shared")
scenario.other.write("old other")
print(scenario.id, flush=True)

real_replace = os.replace
renames = []


def replace_then_crash(source, destination, *args, **kwargs):
    if ".staging" in os.fspath(source) and ".staging" not in os.fspath(destination):
        renames.append(destination)
        if len(renames) == 4:
            os._exit(CRASH_STATUS)
    return real_replace(source, destination, *args, **kwargs)


os.replace = replace_then_crash
scenario.submit()
print("the commit did not crash", flush=True)
"""


# -- start-up repair of a commit that a dead kernel left half done ---------------------


def test_repair_after_sibling_job_write(engine: Path, tmp_path: Path) -> None:
    """Repair restores an output that an earlier job of the crashed kernel wrote."""
    middle_path = tmp_path / "middle.p"
    shared_path = tmp_path / "shared.p"
    other_path = tmp_path / "other.p"
    arguments = [str(engine), str(middle_path), str(shared_path), str(other_path)]
    run_crashing(TWO_JOBS_ONE_OUTPUT, arguments, tmp_path)
    assert load_pickle(shared_path) == "shared from second step", (
        "the helper crashed before the second job renamed its first output"
    )

    restart_runtime()

    statuses = sorted(job.status.name for job in tp.get_jobs())
    assert statuses == [Status.COMPLETED.name, Status.FAILED.name]
    assert load_pickle(other_path) == "old other"
    assert load_pickle(shared_path) == "shared from first step 1", (
        "the second job FAILED and its second output got its earlier file back, "
        "but its first output keeps the FAILED job's file: "
        f"{load_pickle(shared_path)!r}"
    )


def test_repair_ahead_clock_keeps_write(engine: Path, tmp_path: Path) -> None:
    """Repair keeps a later manual write when the crashed kernel's clock ran ahead."""
    first_path = tmp_path / "first.p"
    second_path = tmp_path / "second.p"
    declare_pairs()
    tp.Orchestrator().run()  # this kernel started before the other one died
    arguments = [str(engine), str(first_path), str(second_path), "yes"]
    ahead = clock_ahead_timezone(CLOCK_AHEAD_HOURS)
    output = run_crashing(CRASHING_COMMIT, arguments, tmp_path, TZ=ahead)
    _, first_id, _ = output.split()
    first = tp.get(first_id)
    first.write("written by hand after the crash")

    restart_runtime()

    job = tp.get_jobs()[0]
    assert job.status is Status.FAILED
    assert load_pickle(first_path) == "written by hand after the crash", (
        f"the job was created at {job.creation_date} (TZ={ahead}) and the manual "
        f"write is dated {tp.get(first_id).last_edit_date}; the repair put back "
        f"the file from before the crash: {load_pickle(first_path)!r}"
    )


# -- edit history kept outside the node's row ------------------------------------------


def test_edit_order_same_after_restart(engine: Path) -> None:
    """A node lists its edits in one order in the writing kernel and after a restart."""
    config = Config.configure_data_node("shared", scope=Scope.GLOBAL)
    node = tp.create_global_data_node(config)
    start = datetime(2024, 1, 1, 12, 0, 0)
    # Timestamps that go back, as edits dated by file times or other clocks do.
    for number in range(EDITS_PAST_ROW_LIMIT):
        when = start - timedelta(minutes=number)
        node.track_edit(timestamp=when, comment=str(number))
    writer_comments = [edit["comment"] for edit in node.edits]

    store = other_store(engine)
    try:
        restarted_comments = [edit["comment"] for edit in store.get(node.id).edits]
    finally:
        store.close()

    assert len(restarted_comments) == len(writer_comments) == EDITS_PAST_ROW_LIMIT
    assert writer_comments == restarted_comments, (
        f"the writing kernel lists {writer_comments[30:40]} at places 30 to 39, "
        f"a restarted kernel lists {restarted_comments[30:40]}"
    )


def test_concurrent_equal_edits_all_kept(tmp_path: Path) -> None:
    """Equal edits that two kernels track at once all stay in the history."""
    folder = tmp_path / "store"
    header = textwrap.dedent(
        f"""
        import sys
        import time
        from datetime import datetime

        import jupyter_scenarios as tp
        from jupyter_scenarios import Config, Scope

        Config.configure_core(storage_folder={str(folder)!r})
        config = Config.configure_data_node("shared", scope=Scope.GLOBAL)
        node = tp.create_global_data_node(config)
        """
    )
    setup = subprocess.run(
        [sys.executable, "-c", header + "tp.Orchestrator().stop()"],
        env=helper_environment(),
        capture_output=True,
        text=True,
        timeout=PROCESS_SECONDS,
        check=False,
    )
    assert setup.returncode == 0, setup.stderr
    start_at = time.time() + 3.0
    writer = header + textwrap.dedent(
        f"""
        while time.time() < {start_at}:
            time.sleep(0.001)
        for _ in range({EQUAL_EDITS_PER_PROCESS}):
            node.track_edit(timestamp=datetime(2024, 1, 1))
        tp.Orchestrator().stop()
        """
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", writer],
            env=helper_environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for process in processes:
            _, stderr = process.communicate(timeout=PROCESS_SECONDS)
            assert process.returncode == 0, stderr
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()

    store = other_store(folder)
    try:
        node_id = store.get_all("data_node")[0].id
        edits = store.get(node_id).edits
    finally:
        store.close()

    assert len(edits) == 2 * EQUAL_EDITS_PER_PROCESS, (
        f"{2 * EQUAL_EDITS_PER_PROCESS - len(edits)} of "
        f"{2 * EQUAL_EDITS_PER_PROCESS} edits were lost"
    )


def test_track_edit_after_delete_raises(engine: Path) -> None:
    """Tracking an edit of a node that another kernel deleted does not bring it back."""
    config = Config.configure_data_node("shared", scope=Scope.GLOBAL)
    node = tp.create_global_data_node(config)
    for number in range(EDITS_PAST_ROW_LIMIT):
        node.write(number)
    store = other_store(engine)
    try:
        theirs = store.get(node.id)
        assert len(theirs.edits) == EDITS_PAST_ROW_LIMIT
        tp.delete(node.id)

        with pytest.raises(NonExistingDataNode):
            theirs.track_edit(comment="after the delete")
    finally:
        store.close()

    assert tp.get(node.id) is None, (
        "the deleted node is back, with "
        f"{len(tp.get(node.id).edits)} of its {EDITS_PAST_ROW_LIMIT + 1} edits listed"
    )


# -- write errors and configuration checks ---------------------------------------------


@pytest.mark.usefixtures("engine")
def test_reraised_plain_error_noted_once() -> None:
    """An OSError without errno raised again by a write function gets one note."""
    config = Config.configure_generic_data_node(
        "remote", read_fct=read_nothing, write_fct=raise_lost_connection
    )
    scenario_config = Config.configure_scenario(
        "remotes", [], additional_data_node_configs=[config]
    )
    node = tp.create_scenario(scenario_config).remote
    with pytest.raises(OSError):
        node.write("first try")

    with pytest.raises(OSError) as caught:
        node.write("second try")

    notes = getattr(caught.value, "__notes__", [])
    assert len(notes) == 1, notes


@pytest.mark.usefixtures("engine")
def test_huge_validity_text_rejected() -> None:
    """Validity text too long for a timedelta raises ConfigurationError."""
    with pytest.raises(ConfigurationError):
        Config.configure_data_node("expiring", validity_period="999999999999d")
