"""The SQLite store: sharing a storage folder between processes, restarts, crashes.

Other processes are fresh interpreters started with ``run_python``; they import this
repository and the tests folder, so they can run the importable task functions below.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from engine_fixtures import (
    WAIT_SECONDS,
    main_namespace,
    open_in_subprocess,
    start_python,
    wait_for_file,
    wait_until,
)
from engine_fixtures import engine as engine_fixture  # noqa: F401 - fixture

import jupyter_scenarios as tp
from jupyter_scenarios import Config, Status, SubmissionStatus, _runtime

pytestmark = [pytest.mark.usefixtures("engine"), pytest.mark.timeout(240)]


def double(value: int) -> int:
    return 2 * value


def add_one(value: int) -> int:
    return value + 1


def chain_scenario(default: int = 5) -> tp.Scenario:
    my_input = Config.configure_data_node("my_input", default_data=default)
    middle = Config.configure_data_node("middle")
    my_output = Config.configure_data_node("my_output")
    first = Config.configure_task("double", double, my_input, middle)
    second = Config.configure_task("add_one", add_one, middle, my_output)
    return tp.create_scenario(Config.configure_scenario("chain", [first, second]))


def counts(folder: Path) -> dict[str, int]:
    with sqlite3.connect(folder / "entities.db") as connection:
        return {
            kind: connection.execute(f"SELECT COUNT(*) FROM {kind}").fetchone()[0]
            for kind in ("scenario", "task", "data_node", "job", "submission", "cycle")
        }


# -- sharing a folder between processes --------------------------------------------------


def test_other_process_reads_and_submits(engine: Path) -> None:
    scenario = chain_scenario()
    scenario_id = scenario.id
    tp.Orchestrator().stop()

    output = open_in_subprocess(
        engine,
        f"""
scenario = tp.get({scenario_id!r})
submission = scenario.submit()
print(json.dumps({{
    "status": submission.submission_status.name,
    "output": scenario.my_output.read(),
    "jobs": submission.job_ids,
}}))
""",
    )

    result = json.loads(output.strip().splitlines()[-1])
    assert result["status"] == "COMPLETED"
    assert result["output"] == 11
    reloaded = tp.get(scenario_id)
    assert reloaded.my_output.read() == 11
    assert reloaded.my_output.job_ids == [result["jobs"][1]]
    submission = tp.get_latest_submission(reloaded)
    assert submission.submission_status is SubmissionStatus.COMPLETED
    assert [job.status for job in submission.jobs] == [Status.COMPLETED] * 2


def test_notebook_function_runs_in_other_process(engine: Path) -> None:
    namespace = main_namespace(
        """
        def triple(value):
            return value * 3
        """
    )
    my_input = Config.configure_data_node("my_input", default_data=7)
    my_output = Config.configure_data_node("my_output")
    task = Config.configure_task("triple", namespace["triple"], my_input, my_output)
    scenario = tp.create_scenario(Config.configure_scenario("notebook", [task]))
    tp.Orchestrator().stop()

    output = open_in_subprocess(
        engine,
        f"""
scenario = tp.get({scenario.id!r})
scenario.submit()
print(scenario.my_output.read())
""",
    )

    assert output.strip().splitlines()[-1] == "21"


def test_start_deletes_nothing(engine: Path) -> None:
    scenario = chain_scenario()
    scenario.submit()
    before = counts(engine)
    files_before = sorted(path.name for path in (engine / "data").iterdir())
    tp.Orchestrator().stop()

    tp.Orchestrator().run()
    open_in_subprocess(engine, "tp.Orchestrator().run()")

    assert counts(engine) == before
    assert sorted(path.name for path in (engine / "data").iterdir()) == files_before
    assert tp.get(scenario.id).my_output.read() == 11


def test_concurrent_kernels_keep_each_others_edits(engine: Path) -> None:
    scenario = chain_scenario()
    node = scenario.my_output
    node_id = node.id

    open_in_subprocess(
        engine,
        f"tp.get({node_id!r}).write(123, comment='from the other kernel')",
    )

    assert node.read() == 123
    comments = [edit.get("comment") for edit in node.edits]
    assert "from the other kernel" in comments

    # Once this kernel has caught up, a later edit from the other kernel must still
    # be seen, after one of this kernel's own.
    node.write(7, comment="from this kernel")
    open_in_subprocess(
        engine,
        f"tp.get({node_id!r}).write(456, comment='again from the other kernel')",
    )
    assert node.read() == 456
    comments = [edit.get("comment") for edit in node.edits]
    assert comments[-3:] == [
        "from the other kernel",
        "from this kernel",
        "again from the other kernel",
    ]
    tp.Orchestrator().stop()
    tp.Orchestrator().run()
    reloaded = [edit.get("comment") for edit in tp.get(node_id).edits]
    assert "from the other kernel" in reloaded


# -- deleting ------------------------------------------------------------------------------


def test_clean_all_entities_deletes_everything(engine: Path, tmp_path: Path) -> None:
    user_file = tmp_path / "kept.json"
    user_file.write_text("[1, 2]")
    external = Config.configure_json_data_node("external", default_path=str(user_file))
    copied = Config.configure_data_node("copied")
    task = Config.configure_task("copy", list, external, copied)
    Config.configure_scenario("copying", [task])
    scenario = tp.create_scenario("copying")
    scenario.submit()
    chain_scenario().submit()
    assert any((engine / "data").iterdir())
    # These tasks print nothing, so they leave no log; a stale log must go too.
    (engine / "logs" / "JOB_stale.log").write_text("old output")

    assert tp.clean_all_entities() is True

    assert set(counts(engine).values()) == {0}
    assert list((engine / "data").iterdir()) == []
    assert list((engine / "logs").iterdir()) == []
    assert user_file.read_text() == "[1, 2]"
    assert tp.get_scenarios() == []
    assert tp.get(scenario.id) is None


# -- SQLite settings and crashes ------------------------------------------------------------


def test_store_uses_wal(engine: Path) -> None:
    chain_scenario()

    with sqlite3.connect(engine / "entities.db") as connection:
        mode = connection.execute("PRAGMA journal_mode").fetchone()[0]

    assert mode == "wal"


def test_rows_follow_the_entities_they_store(engine: Path) -> None:
    # A job row joins the JSON of its fixed fields, kept from the first write, with
    # that of its changing fields. An update sets the status column, not the others.
    scenario = chain_scenario()
    submission = scenario.submit(wait=True)
    jobs = submission.jobs
    nodes = [scenario.middle, scenario.my_output]
    with sqlite3.connect(engine / "entities.db") as connection:
        job_rows = {
            row[0]: row[1:]
            for row in connection.execute(
                "SELECT id, doc, submit_id, task_id, status FROM job"
            )
        }
        node_rows = {
            row[0]: row[1:]
            for row in connection.execute(
                "SELECT id, doc, config_id, owner_id FROM data_node"
            )
        }
    for job in jobs:
        doc, submit_id, task_id, status = job_rows[job.id]
        assert json.loads(doc) == job._to_doc()
        assert json.loads(doc)["status_history"] == [
            [status.name, when.isoformat()] for status, when in job.status_history
        ]
        assert (submit_id, task_id, status) == (job.submit_id, job.task_id, "COMPLETED")
    for node in nodes:
        doc, config_id, owner_id = node_rows[node.id]
        assert json.loads(doc) == node._to_doc()
        assert (config_id, owner_id) == (node.config_id, scenario.id)
    store = _runtime.store()
    assert {job.id for job in store.get_all("job", status="COMPLETED")} == {
        job.id for job in jobs
    }
    assert store.get_all("job", status="PENDING") == []

    # Another process builds the same documents from these rows, and writes them
    # back unchanged.
    output = open_in_subprocess(
        engine,
        f"""
from jupyter_scenarios import _runtime
store = _runtime.store()
jobs = [tp.get(job_id) for job_id in {[job.id for job in jobs]!r}]
print(json.dumps([job._to_doc() for job in jobs]))
for job in jobs:
    store.save(job)
""",
    )
    assert json.loads(output.splitlines()[-1]) == [job._to_doc() for job in jobs]
    with sqlite3.connect(engine / "entities.db") as connection:
        for job in jobs:
            (doc,) = connection.execute(
                "SELECT doc FROM job WHERE id = ?", (job.id,)
            ).fetchone()
            assert json.loads(doc) == job._to_doc()


def stored_lock(folder: Path, node_id: str) -> bool:
    with sqlite3.connect(folder / "entities.db") as connection:
        (doc,) = connection.execute(
            "SELECT doc FROM data_node WHERE id = ?", (node_id,)
        ).fetchone()
    return bool(json.loads(doc)["edit_in_progress"])


def test_handed_over_saves_written_by_taker(engine: Path) -> None:
    # submit() hands its saves to the scheduler thread this way.
    store = _runtime.store()
    node = chain_scenario().middle
    with store.handover_batch() as writes:
        node.lock_edit()
    assert stored_lock(engine, node.id) is False
    # A commit by another connection makes refresh() read rows again, which must
    # not undo the unwritten lock.
    with sqlite3.connect(engine / "entities.db") as connection:
        connection.execute("UPDATE meta SET value = value WHERE key = 'schema_version'")
    store.refresh(node)
    assert node.edit_in_progress is True

    seen_in_batch = []

    def take() -> None:
        with store.batch():
            store.write_handed_over(writes)
            seen_in_batch.append(stored_lock(engine, node.id))

    taker = threading.Thread(target=take)
    taker.start()
    taker.join(WAIT_SECONDS)
    assert seen_in_batch == [False]  # written when the taker's batch ends
    assert stored_lock(engine, node.id) is True
    # Only the first call writes: this one must not bring back the old lock.
    node._unlock()
    store.write_handed_over(writes)
    assert stored_lock(engine, node.id) is False


def written_count(progress: Path) -> int:
    """Return the count in ``progress``, 0 while it is missing or being rewritten."""
    try:
        text = progress.read_text().strip()
    except FileNotFoundError:
        return 0
    # One read: the writer truncates the file before it writes the next count.
    return int(text) if text.isdigit() else 0


def test_killed_writer_leaves_readable_store(engine: Path, tmp_path: Path) -> None:
    chain_scenario()
    tp.Orchestrator().stop()
    progress = tmp_path / "progress"
    log = tmp_path / "writer.log"
    writer = start_python(
        f"""
import jupyter_scenarios as tp
from jupyter_scenarios import Config
from test_store import chain_scenario
Config.configure_core(storage_folder={str(engine)!r})
count = 0
while True:
    scenario = chain_scenario(count)
    scenario.submit()
    scenario.my_input.write(list(range(2000)), comment="bulk")
    count += 1
    with open({str(progress)!r}, "w") as marker:
        marker.write(str(count))
""",
        log,
    )
    try:
        wait_until(
            lambda: written_count(progress) >= 5,
            WAIT_SECONDS,
            f"the writer to make progress (log: {log})",
        )
        time.sleep(0.2)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(WAIT_SECONDS)
    assert writer.returncode == -signal.SIGKILL

    with sqlite3.connect(engine / "entities.db") as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    tp.Orchestrator().run()
    scenarios = tp.get_scenarios()
    assert len(scenarios) >= 6
    for scenario in scenarios:
        for node in scenario.data_nodes.values():
            if node.last_edit_date is not None:
                node.read()
        for task in scenario.tasks.values():
            assert task.function is not None
    for job in tp.get_jobs():
        assert job.status in (Status.COMPLETED, Status.FAILED, Status.ABANDONED), job


def test_two_processes_write_concurrently(engine: Path, tmp_path: Path) -> None:
    scenario = chain_scenario()
    mine, theirs = scenario.my_input, scenario.middle
    done = tmp_path / "done"
    log = tmp_path / "other.log"
    other = start_python(
        f"""
import jupyter_scenarios as tp
from jupyter_scenarios import Config
Config.configure_core(storage_folder={str(engine)!r})
node = tp.get({theirs.id!r})
for index in range(100):
    node.write(index, comment=f"other {{index}}")
tp.Orchestrator().stop()
open({str(done)!r}, "w").write("done")
""",
        log,
    )
    try:
        for index in range(100):
            mine.write(index, comment=f"mine {index}")
        wait_for_file(done)
    finally:
        other.wait(WAIT_SECONDS)
    assert other.returncode == 0, log.read_text()

    tp.Orchestrator().stop()
    tp.Orchestrator().run()
    assert len(tp.get(mine.id).edits) == 101
    assert len(tp.get(theirs.id).edits) == 100
    assert tp.get(theirs.id).read() == 99


class _Unwritable:
    """An entity whose document cannot be built."""

    id = "TASK_unwritable"

    def _to_row(self) -> tuple[str, dict[str, str]]:
        raise TypeError("this document cannot be built")


def test_delete_and_write_is_one_transaction(engine: Path) -> None:
    # A deletion writes the entities that named a deleted parent in its own
    # transaction: when that write fails, nothing is deleted either.
    scenario = chain_scenario()
    store = _runtime.store()
    before = counts(engine)

    with pytest.raises(TypeError, match="cannot be built"):
        store.delete([scenario.id], then_write=[_Unwritable()])

    assert counts(engine) == before
    assert tp.get(scenario.id) is scenario
