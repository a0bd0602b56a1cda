"""Attacks on committing several outputs, start-up repair, edit archives, write errors.

Tests use real files under ``tmp_path``, the development scheduler of the ``engine``
fixture, and fresh interpreters that share its storage folder. A helper interpreter
simulates a kernel that dies in the middle of ``commit_staged``: its ``os.replace``
ends the process at the second rename of a staging file onto an output. Every wait
and every helper has a timeout.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from engine_fixtures import REPO_ROOT, TESTS_DIR
from engine_fixtures import engine as engine_fixture  # noqa: F401 - fixture

import jupyter_scenarios as tp
from jupyter_scenarios import Config, Scope, Status

pytestmark = pytest.mark.timeout(300)

# Seconds a helper interpreter may run.
PROCESS_SECONDS = 120.0
# Edits written to one node: more than the 64 that a node's row keeps.
EDITS_PAST_ROW_LIMIT = 70
# Exit status of a helper that ended itself in the middle of a commit.
CRASH_STATUS = 9


# -- task and write functions (importable, so they travel by reference) ----------------


def pair(value: int) -> tuple[str, str]:
    return f"new first {value}", f"new second {value}"


def read_text(path: str) -> str:
    return Path(path).read_text()


def copy_tree_into(data: Any, path: str) -> None:
    shutil.copytree(data, path)


def value_and_set(value: int) -> tuple[int, set[int]]:
    return value + 41, {value}


# One error object that a client keeps and raises again at each call, as a client
# that remembers a lost connection does.
LOST_CONNECTION = OSError(errno.EIO, "Input/output error")


def raise_lost_connection(data: Any) -> None:
    raise LOST_CONNECTION


def read_nothing() -> None:
    return None


# -- helpers ---------------------------------------------------------------------------


# Run by a helper interpreter: declares a task with two pickle outputs, writes
# their earlier values and submits it in development mode. The kernel dies at the
# second rename of a staging file, so the first output has its new file, the
# second output still has its staging file, and the job stays RUNNING.
CRASHING_COMMIT = """
import os
import sys

import jupyter_scenarios as tp
from jupyter_scenarios import Config
from test_attack_round3 import pair

folder, first_path, second_path, write_first = sys.argv[1:5]
CRASH_STATUS = int(sys.argv[5])
Config.configure_core(storage_folder=folder)
source = Config.configure_data_node("source", default_data=1)
first = Config.configure_pickle_data_node("first", path=first_path)
second = Config.configure_pickle_data_node("second", path=second_path)
task = Config.configure_task("pairing", pair, source, [first, second])
scenario = tp.create_scenario(Config.configure_scenario("pairs", [task]))
if write_first == "yes":
    scenario.first.write("old first")
scenario.second.write("old second")
print(scenario.id, scenario.first.id, scenario.second.id, flush=True)

real_replace = os.replace
renames = []


def replace_then_crash(source, destination, *args, **kwargs):
    if ".staging" in os.fspath(source) and ".staging" not in os.fspath(destination):
        renames.append(destination)
        if len(renames) == 2:
            os._exit(CRASH_STATUS)
    return real_replace(source, destination, *args, **kwargs)


os.replace = replace_then_crash
scenario.submit()
print("the commit did not crash", flush=True)
"""


def crash_in_commit(
    folder: Path, first_path: str, second_path: str, cwd: Path, write_first: bool
) -> list[str]:
    """Run CRASHING_COMMIT in ``cwd``; return the ids of scenario, first and second."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(TESTS_DIR)])
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            CRASHING_COMMIT,
            str(folder),
            first_path,
            second_path,
            "yes" if write_first else "no",
            str(CRASH_STATUS),
        ],
        capture_output=True,
        text=True,
        env=environment,
        cwd=str(cwd),
        timeout=PROCESS_SECONDS,
        check=False,
    )
    assert completed.returncode == CRASH_STATUS, (
        f"helper did not crash in the commit:\n{completed.stdout}\n{completed.stderr}"
    )
    return completed.stdout.split()


def hidden_files(folder: Path) -> list[str]:
    """Return the staging and ``.previous`` files anywhere under ``folder``."""
    return sorted(
        path.name
        for path in folder.rglob(".*")
        if ".staging" in path.name or path.name.endswith(".previous")
    )


def restart_runtime() -> None:
    """Stop the runtime and start it again, which repairs jobs of dead kernels."""
    tp.Orchestrator().stop(wait=True, timeout=PROCESS_SECONDS)
    tp.Orchestrator().run()


def load_pickle(path: Path) -> Any:
    import pickle

    with path.open("rb") as file:
        return pickle.load(file)


def declare_pairs() -> None:
    """Declare in this process the configuration that CRASHING_COMMIT uses."""
    source = Config.configure_data_node("source", default_data=1)
    first = Config.configure_pickle_data_node("first")
    second = Config.configure_pickle_data_node("second")
    task = Config.configure_task("pairing", pair, source, [first, second])
    Config.configure_scenario("pairs", [task])


# -- repair at start-up of a commit that a dead kernel left half done ------------------


def test_repair_removes_output_created_by_commit(engine: Path, tmp_path: Path) -> None:
    """Start-up repair removes an output file that the unfinished commit created."""
    first_path = tmp_path / "first.p"
    second_path = tmp_path / "second.p"
    crash_in_commit(engine, str(first_path), str(second_path), tmp_path, False)
    assert load_pickle(first_path) == "new first 1", "the helper crashed too early"

    restart_runtime()

    jobs = tp.get_jobs()
    assert [job.status for job in jobs] == [Status.FAILED]
    assert load_pickle(second_path) == "old second"
    assert not first_path.exists(), (
        "the second output has its earlier value, but the first output keeps the "
        f"file of the FAILED job: {load_pickle(first_path)!r}"
    )


def test_repair_relative_paths_other_cwd(engine: Path, tmp_path: Path) -> None:
    """Start-up repair in another working folder still restores relative outputs."""
    submit_cwd = tmp_path / "notebook_folder"
    restart_cwd = tmp_path / "other_notebook_folder"
    submit_cwd.mkdir()
    restart_cwd.mkdir()
    crash_in_commit(engine, "results/first.p", "results/second.p", submit_cwd, True)
    first_path = submit_cwd / "results" / "first.p"
    second_path = submit_cwd / "results" / "second.p"
    assert load_pickle(first_path) == "new first 1", "the helper crashed too early"

    original_cwd = os.getcwd()
    os.chdir(restart_cwd)
    try:
        restart_runtime()
        jobs = tp.get_jobs()
    finally:
        os.chdir(original_cwd)

    assert [job.status for job in jobs] == [Status.FAILED]
    assert load_pickle(second_path) == "old second"
    assert load_pickle(first_path) == "old first", (
        "the FAILED job left its first output changed and its second unchanged"
    )
    assert hidden_files(submit_cwd) == [], "the repair left staging or .previous files"


def test_repair_keeps_later_manual_write(engine: Path, tmp_path: Path) -> None:
    """Start-up repair does not undo a write that another kernel made after the crash."""
    first_path = tmp_path / "first.p"
    second_path = tmp_path / "second.p"
    declare_pairs()
    tp.Orchestrator().run()  # this kernel started before the other one died
    _, first_id, _ = crash_in_commit(
        engine, str(first_path), str(second_path), tmp_path, True
    )
    first = tp.get(first_id)
    first.write("written by hand after the crash")

    restart_runtime()

    assert tp.get(first_id).edits[-1].get("job_id") is None
    assert load_pickle(first_path) == "written by hand after the crash", (
        "the repair put back the file from before the crash over a later write: "
        f"{load_pickle(first_path)!r}"
    )


# -- outputs written in place ---------------------------------------------------------


@pytest.mark.usefixtures("engine")
def test_failed_job_keeps_in_memory_output() -> None:
    """A job that fails to store one output leaves its in_memory output unchanged."""
    source = Config.configure_data_node("source", default_data=1)
    memory = Config.configure_in_memory_data_node("memory")
    table = Config.configure_json_data_node("table")
    task = Config.configure_task("mixed", value_and_set, source, [memory, table])
    scenario = tp.create_scenario(Config.configure_scenario("mixed", [task]))
    scenario.memory.write("old")

    submission = scenario.submit(wait=True, timeout=PROCESS_SECONDS)

    job = submission.jobs[0]
    assert job.status is Status.FAILED
    assert len(scenario.memory.edits) == 1
    assert scenario.memory.read() == "old", (
        f"the FAILED job changed its in_memory output; the reason says: {job.reason}"
    )


# -- edit history kept outside the node's row ------------------------------------------


@pytest.mark.usefixtures("engine")
def test_equal_edits_all_kept() -> None:
    """Edits recorded with one timestamp all stay in the history past the row limit."""
    config = Config.configure_data_node("shared", scope=Scope.GLOBAL)
    node = tp.create_global_data_node(config)
    when = datetime(2024, 1, 1, 12, 0, 0)

    for _ in range(EDITS_PAST_ROW_LIMIT):
        node.track_edit(timestamp=when)

    assert len(node.edits) == EDITS_PAST_ROW_LIMIT, (
        f"{EDITS_PAST_ROW_LIMIT - len(node.edits)} of {EDITS_PAST_ROW_LIMIT} edits "
        "were lost"
    )


@pytest.mark.usefixtures("engine")
def test_edits_readable_after_stop() -> None:
    """A node written past the row limit lists its edits after the runtime stopped."""
    config = Config.configure_data_node("shared", scope=Scope.GLOBAL)
    many = tp.create_global_data_node(config)
    few_config = Config.configure_data_node("few", scope=Scope.GLOBAL)
    few = tp.create_global_data_node(few_config)
    for number in range(EDITS_PAST_ROW_LIMIT):
        many.write(number)
    few.write(0)

    tp.Orchestrator().stop(wait=True, timeout=PROCESS_SECONDS)

    assert len(few.edits) == 1
    assert len(many.edits) == EDITS_PAST_ROW_LIMIT


# -- write errors of data nodes --------------------------------------------------------


@pytest.mark.usefixtures("engine")
def test_write_error_keeps_shutil_args(tmp_path: Path) -> None:
    """A shutil.Error from a write function keeps the list of failed copies in args."""
    source = tmp_path / "report"
    source.mkdir()
    (source / "table.csv").write_text("a,b\n1,2\n")
    (source / "broken").symlink_to(tmp_path / "missing")
    target = tmp_path / "exported"
    config = Config.configure_generic_data_node(
        "exported",
        read_fct=read_text,
        write_fct=copy_tree_into,
        read_fct_args=[str(target)],
        write_fct_args=[str(target)],
    )
    scenario_config = Config.configure_scenario(
        "exports", [], additional_data_node_configs=[config]
    )
    node = tp.create_scenario(scenario_config).exported

    with pytest.raises(shutil.Error) as caught:
        node.write(str(source))

    failures = caught.value.args[0]
    assert isinstance(failures, list), (
        f"args[0] of the shutil.Error is now {failures!r}"
    )


@pytest.mark.usefixtures("engine")
def test_reraised_error_named_once() -> None:
    """An error object raised again by a write function gets the node's name once."""
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

    message = str(caught.value)
    assert message.count("Writing data node") == 1, message
