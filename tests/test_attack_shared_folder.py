"""Kernels that share a storage folder: creating, opening and editing together.

Each test failed before its fix. Helper interpreters are fresh processes started
with ``subprocess``, each bounded by a timeout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from engine_fixtures import REPO_ROOT, TESTS_DIR
from engine_fixtures import engine as engine_fixture  # noqa: F401 - fixture

import jupyter_scenarios as tp
from jupyter_scenarios import Config, Scope
from jupyter_scenarios.exceptions import NonExistingDataNode
from jupyter_scenarios.store import Store, StoreError

pytestmark = pytest.mark.timeout(300)

# Seconds one helper interpreter may run.
PROCESS_SECONDS = 120.0
# Number of writes that each of two processes makes to one shared data node.
WRITES_PER_PROCESS = 200
# Threads that open one new storage folder at the same moment, and how many times.
OPENERS = 6
OPEN_ATTEMPTS = 200


def double(value: int) -> int:
    return 2 * value


def start_interpreter(source: str, folder: Path) -> subprocess.Popen[str]:
    """Start ``source`` in a fresh interpreter whose runtime stores in ``folder``."""
    header = textwrap.dedent(
        f"""
        import sys, time
        import jupyter_scenarios as tp
        from jupyter_scenarios import Config, Scope
        Config.configure_core(storage_folder={str(folder)!r})
        """
    )
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(TESTS_DIR)])
    return subprocess.Popen(
        [sys.executable, "-c", header + textwrap.dedent(source)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
        cwd=str(REPO_ROOT),
    )


def finish(process: subprocess.Popen[str]) -> str:
    """Wait for ``process`` (at most PROCESS_SECONDS) and return its stdout."""
    try:
        stdout, stderr = process.communicate(timeout=PROCESS_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    assert process.returncode == 0, f"helper failed:\n{stdout}\n{stderr}"
    return stdout


# -- two processes on one storage folder ---------------------------------------------


def test_two_writers_keep_every_edit(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    setup = """
        config = Config.configure_data_node("shared", scope=Scope.GLOBAL)
        node = tp.create_global_data_node(config)
        node.write(0, comment="setup")
        tp.Orchestrator().stop()
    """
    finish(start_interpreter(setup, folder))
    start_at = time.time() + 3.0
    writer = f"""
        config = Config.configure_data_node("shared", scope=Scope.GLOBAL)
        node = tp.create_global_data_node(config)
        while time.time() < {start_at}:
            time.sleep(0.001)
        for number in range({WRITES_PER_PROCESS}):
            node.write(number, comment=sys.argv[1] + str(number))
        tp.Orchestrator().stop()
    """
    processes = []
    for name in ("first", "second"):
        source = f"import sys; sys.argv[1:] = [{name!r}]\n" + textwrap.dedent(writer)
        processes.append(start_interpreter(source, folder))
    for process in processes:
        finish(process)

    check = """
        config = Config.configure_data_node("shared", scope=Scope.GLOBAL)
        print(len(tp.create_global_data_node(config).edits))
        tp.Orchestrator().stop()
    """
    edits = int(finish(start_interpreter(check, folder)).split()[-1])

    assert edits == 1 + 2 * WRITES_PER_PROCESS, (
        f"{1 + 2 * WRITES_PER_PROCESS - edits} edits lost from the history"
    )


def test_stores_open_new_folder_together(tmp_path: Path) -> None:
    # Kernels started together on a new folder (a notebook run twice, a test
    # matrix) must all open it. Some got StoreError "cannot be read (database is
    # locked) ... Restore the file from a backup", which blames a healthy file.
    # Threads with one connection each race like processes do, and cost less.
    failures: list[str] = []

    def open_store(folder: Path, barrier: threading.Barrier) -> None:
        barrier.wait(timeout=PROCESS_SECONDS)
        try:
            store = Store(folder)
        except StoreError as error:
            failures.append(str(error))
            return
        store.close()

    for attempt in range(OPEN_ATTEMPTS):
        folder = tmp_path / f"store{attempt}"
        barrier = threading.Barrier(OPENERS)
        threads = [
            threading.Thread(target=open_store, args=(folder, barrier))
            for _ in range(OPENERS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=PROCESS_SECONDS)

    assert failures == [], f"{len(failures)} of {OPENERS * OPEN_ATTEMPTS} opens failed"


def test_two_kernels_share_global_node(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    # The store exists before, so that only the data node creation races.
    finish(start_interpreter("tp.get_data_nodes()\ntp.Orchestrator().stop()", folder))
    start_at = time.time() + 3.0
    source = f"""
        config = Config.configure_data_node("shared", scope=Scope.GLOBAL)
        tp.get_data_nodes()
        while time.time() < {start_at}:
            time.sleep(0.0005)
        print(tp.create_global_data_node(config).id)
        tp.Orchestrator().stop()
    """
    processes = [start_interpreter(source, folder) for _ in range(2)]
    ids = {finish(process).split()[-1] for process in processes}

    assert len(ids) == 1, f"two kernels created two GLOBAL data nodes: {ids}"


def test_store_kept_locked_names_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A folder that another process keeps locked is not a damaged file: the error
    # names the lock instead of sending the user to a backup.
    import sqlite3

    from jupyter_scenarios import store as store_module

    Store(tmp_path).close()
    holder = sqlite3.connect(tmp_path / "entities.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    monkeypatch.setattr(store_module, "BUSY_SECONDS", 0.3)
    try:
        with pytest.raises(StoreError) as raised:
            Store(tmp_path)
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    message = str(raised.value)
    assert "locked by another process" in message
    assert "backup" not in message
    # The file still opens once the other process lets go.
    Store(tmp_path).close()


@pytest.mark.usefixtures("engine")
def test_write_deleted_node_raises() -> None:
    # A kernel writes a data node object that another kernel deleted (or a variable
    # kept after tp.delete). The write recreates the row and the file,
    # so the deletion is undone without a word.
    config = Config.configure_data_node("gone", scope=Scope.GLOBAL)
    node = tp.create_global_data_node(config)
    node.write(1)
    path = node.path
    tp.delete(node.id)

    with pytest.raises(NonExistingDataNode):
        node.write(2)

    assert tp.get(node.id) is None, "the write brought the deleted data node back"
    assert not path.exists(), "the write recreated the deleted node's file"


def test_get_sees_other_kernel_deletion(tmp_path: Path) -> None:
    folder = tmp_path / "shared"
    Config.configure_core(storage_folder=str(folder))
    node = tp.create_global_data_node(
        Config.configure_data_node("kept", scope=Scope.GLOBAL)
    )
    node.write(1)
    assert tp.exists(node.id)

    finish(start_interpreter(f"tp.delete({node.id!r})", folder))

    assert not tp.exists(node.id), "a deletion by another kernel went unseen"
    assert tp.get(node.id) is None
    assert tp.get_data_nodes() == []


SIGNAL_HELPERS = """
import os
config = Config.configure_data_node("shared", scope=Scope.GLOBAL)

def wait_for(name):
    deadline = time.time() + 60
    while not os.path.exists(os.path.join(SIGNALS, name)):
        assert time.time() < deadline, f"timed out waiting for {name}"
        time.sleep(0.05)

def signal(name):
    open(os.path.join(SIGNALS, name), "w").close()
"""


def test_other_kernel_write_respects_lock(tmp_path: Path) -> None:
    # Kernel A locks a GLOBAL node for editor "alice". Kernel B loaded the node
    # before that, and its write() checks the lock as B last read it, so B's value
    # replaces alice's data and B's unlock drops her lock.
    folder = tmp_path / "store"
    signals = f"SIGNALS = {str(tmp_path)!r}\n" + SIGNAL_HELPERS
    setup = (
        signals
        + """
tp.create_global_data_node(config).write(0)
tp.Orchestrator().stop()
"""
    )
    finish(start_interpreter(setup, folder))
    writer = (
        signals
        + """
node = tp.create_global_data_node(config)
node.read()
signal("writer_loaded")
wait_for("editor_locked")
try:
    node.write(99)
    print("write accepted")
except Exception as error:
    print("write rejected", type(error).__name__)
signal("writer_done")
tp.Orchestrator().stop()
"""
    )
    editor = (
        signals
        + """
node = tp.create_global_data_node(config)
wait_for("writer_loaded")
node.lock_edit(editor_id="alice")
signal("editor_locked")
wait_for("writer_done")
print(node.read(), node.edit_in_progress, node.editor_id)
tp.Orchestrator().stop()
"""
    )
    writer_process = start_interpreter(writer, folder)
    editor_process = start_interpreter(editor, folder)
    writer_output = finish(writer_process).split()
    editor_output = finish(editor_process).split()

    assert writer_output == ["write", "rejected", "DataNodeIsBeingEdited"], (
        f"kernel B printed {writer_output}"
    )
    assert editor_output == ["0", "True", "alice"], (
        f"value, edit_in_progress and editor after B's write: {editor_output}"
    )
