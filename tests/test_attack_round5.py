"""Attacks on repair by file times, edits of deleted nodes and merged edit histories.

Tests use real files under ``tmp_path``, the development scheduler of the ``engine``
fixture, fresh interpreters that share its storage folder, and a second ``Store`` on
that folder in place of a second kernel. A helper interpreter simulates a kernel that
dies in the middle of ``commit_staged`` (see ``test_attack_round3``). Every wait and
every helper has a timeout.
"""

from __future__ import annotations

import os
import sqlite3
from datetime import datetime
from pathlib import Path

import pytest
from engine_fixtures import engine as engine_fixture  # noqa: F401 - fixture
from test_attack_round3 import (
    crash_in_commit,
    declare_pairs,
    load_pickle,
    restart_runtime,
)
from test_attack_round4 import other_store
from test_attack_session import run_interpreter

import jupyter_scenarios as tp
from jupyter_scenarios import Config, Scope, Status
from jupyter_scenarios.exceptions import NonExistingDataNode

pytestmark = pytest.mark.timeout(300)

# Seconds a helper interpreter or a submission may take.
PROCESS_SECONDS = 120.0
# Characters of a comment that makes a node's row need new database pages.
LARGE_COMMENT_CHARACTERS = 200_000


# -- task functions (importable, so they travel by reference) --------------------------


def delete_own_output_elsewhere(value: int) -> int:
    """Force-delete this job and delete its output from another interpreter."""
    folder, output_id = os.environ["ATTACK_FOLDER"], os.environ["ATTACK_OUTPUT_ID"]
    run_interpreter(
        f"""
        for job in tp.get_jobs():
            tp.delete_job(job, force=True)
        tp.delete({output_id!r})
        """,
        Path(folder),
    )
    return value + 1


# -- start-up repair of a commit that a dead kernel left half done ---------------------


def test_repair_keeps_write_of_unrenamed_output(engine: Path, tmp_path: Path) -> None:
    """Repair keeps a later write to the output whose staging file was left."""
    first_path = tmp_path / "first.p"
    second_path = tmp_path / "second.p"
    declare_pairs()
    tp.Orchestrator().run()  # this kernel started before the other one died
    _, _, second_id = crash_in_commit(
        engine, str(first_path), str(second_path), tmp_path, True
    )
    assert load_pickle(second_path) == "old second", "the helper crashed too late"
    tp.get(second_id).write("written by hand after the crash")

    restart_runtime()

    assert tp.get_jobs()[0].status is Status.FAILED
    assert load_pickle(second_path) == "written by hand after the crash", (
        "the repair put back the file from before the crash over a later write: "
        f"{load_pickle(second_path)!r}"
    )


def test_repair_after_marker_chmod(engine: Path, tmp_path: Path) -> None:
    """Repair keeps a later write when the commit's marker changed mode afterwards."""
    first_path = tmp_path / "first.p"
    second_path = tmp_path / "second.p"
    declare_pairs()
    tp.Orchestrator().run()  # this kernel started before the other one died
    _, first_id, _ = crash_in_commit(
        engine, str(first_path), str(second_path), tmp_path, True
    )
    tp.get(first_id).write("written by hand after the crash")
    markers = sorted(tmp_path.glob(".first.p.*.previous"))
    assert len(markers) == 1, markers
    # A permission fix-up or a backup tool changes the mode, and so the change time,
    # of every file in the folder, the commit's markers included.
    os.chmod(markers[0], 0o640)

    restart_runtime()

    assert load_pickle(first_path) == "written by hand after the crash", (
        "the repair put back the file from before the crash over a later write: "
        f"{load_pickle(first_path)!r}"
    )


# -- edits of deleted data nodes -------------------------------------------------------


@pytest.mark.usefixtures("engine")
def test_read_revives_deleted_node(tmp_path: Path) -> None:
    """Reading a deleted node whose file appeared later does not store it again."""
    path = tmp_path / "placed_by_hand.p"
    config = Config.configure_pickle_data_node(
        "placed", path=str(path), scope=Scope.GLOBAL
    )
    node = tp.create_global_data_node(config)
    tp.delete(node.id)
    # The file appears at the configured path, as another program writes it.
    path.write_bytes(b"\x80\x04K\x07.")  # pickle of the integer 7

    try:
        node.read()
    except NonExistingDataNode:
        pass

    revived = tp.get(node.id)
    assert revived is None, (
        f"the deleted node is stored again, with edits {revived.edits}"
    )


def test_job_revives_node_deleted_elsewhere(
    engine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job whose output another kernel deleted fails and leaves it deleted."""
    source = Config.configure_data_node("source", default_data=1)
    output = Config.configure_data_node("output", scope=Scope.GLOBAL)
    task = Config.configure_task(
        "deleting", delete_own_output_elsewhere, source, output
    )
    scenario = tp.create_scenario(Config.configure_scenario("deletes", [task]))
    output_id = scenario.output.id
    monkeypatch.setenv("ATTACK_FOLDER", str(engine))
    monkeypatch.setenv("ATTACK_OUTPUT_ID", output_id)

    submission = scenario.submit(wait=True, timeout=PROCESS_SECONDS)

    job = submission.jobs[0]
    store = other_store(engine)
    try:
        stored = store.get(output_id)
        stored_edits = None if stored is None else stored.edits
    finally:
        store.close()
    assert stored_edits is None, (
        f"the job was {job.status.name} and its deleted output is stored again, "
        f"with edits {stored_edits}"
    )
    assert job.status is Status.FAILED, job.status


# -- edit histories merged across kernels ----------------------------------------------


def test_failed_save_then_unlock_duplicates(engine: Path) -> None:
    """Saving again after a failed merged save lists no edit twice."""
    config = Config.configure_data_node("shared", scope=Scope.GLOBAL)
    node = tp.create_global_data_node(config)
    node.track_edit(timestamp=datetime(2024, 1, 1, 12), comment="first in this kernel")
    store = other_store(engine)
    connection = node._store._connection
    try:
        theirs = store.get(node.id)
        (pages,) = connection.execute("PRAGMA page_count").fetchone()
        with pytest.raises(sqlite3.OperationalError), node._store.batch():
            node.track_edit(comment="x" * LARGE_COMMENT_CHARACTERS)
            # The other kernel's edit is dated before this kernel's first edit.
            theirs.track_edit(timestamp=datetime(2024, 1, 1, 6), comment="other kernel")
            # The disk fills up before the batch writes the node.
            connection.execute(f"PRAGMA max_page_count = {pages}")
        connection.execute("PRAGMA max_page_count = 1073741823")

        node.unlock_edit()
    finally:
        connection.execute("PRAGMA max_page_count = 1073741823")
        store.close()

    comments = [edit.get("comment", "")[:20] for edit in node.edits]
    assert comments.count("first in this kernel") == 1, comments
