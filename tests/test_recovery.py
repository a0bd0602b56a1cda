"""Crashes and exits: what the next process finds in the storage folder.

A separate interpreter runs a standalone submission whose first job waits on a gate
file. The test then kills that interpreter with SIGKILL, or lets it exit, and opens
the same storage folder in the test process. The old process's workers must exit by
themselves, and no job may stay RUNNING or keep its outputs locked.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
from engine_fixtures import (
    KILL_WAIT_SECONDS,
    WAIT_SECONDS,
    start_python,
    wait_gone,
    wait_until,
)
from engine_fixtures import engine as engine_fixture  # noqa: F401 - fixture

import jupyter_scenarios as tp
from jupyter_scenarios import Status, SubmissionStatus

pytestmark = [pytest.mark.usefixtures("engine"), pytest.mark.timeout(240)]

# Runs in another interpreter: submits a gated chain in standalone mode, writes the
# ids and worker pids to STATE once the first job runs, then, if EXIT is true, exits
# while the job still runs. Otherwise it waits to be killed.
SUBMITTER = """
import json, logging, os, sys, time
import jupyter_scenarios as tp
from jupyter_scenarios import Config, Status

STORAGE, GATE, STATE, EXIT = {storage!r}, {gate!r}, {state!r}, {exit_early!r}


def wait_for_gate(path):
    print("waiting for the gate", flush=True)
    deadline = time.monotonic() + 120
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.01)
    return path


def shout(text):
    return text.upper()


logging.basicConfig(level=logging.WARNING)
Config.configure_core(storage_folder=STORAGE)
Config.configure_job_executions(mode="standalone", max_nb_of_workers=2)
gate_path = Config.configure_data_node("gate_path", default_data=GATE)
waited = Config.configure_data_node("waited")
after = Config.configure_data_node("after")
hold = Config.configure_task("hold", wait_for_gate, gate_path, waited)
follow = Config.configure_task("follow", shout, waited, after)
scenario = tp.create_scenario(Config.configure_scenario("crashing", [hold, follow]))
submission = scenario.submit()
jobs = {{job.task_config_id: job for job in submission.jobs}}
deadline = time.monotonic() + 60
while jobs["hold"].worker_pid is None or jobs["hold"].status is not Status.RUNNING:
    if time.monotonic() > deadline:
        sys.exit("the hold job never started")
    time.sleep(0.01)
# The scheduler writes its changes to the store in batches at most 50 ms apart, so
# give it time to store RUNNING before this process can be killed.
time.sleep(0.3)
import psutil
state = {{
    "scenario": scenario.id,
    "submission": submission.id,
    "hold": jobs["hold"].id,
    "follow": jobs["follow"].id,
    "worker_pid": jobs["hold"].worker_pid,
    "descendants": [p.pid for p in psutil.Process().children(recursive=True)],
}}
with open(STATE + ".tmp", "w") as output:
    json.dump(state, output)
os.replace(STATE + ".tmp", STATE)
if not EXIT:
    time.sleep(600)
"""


def start_submitter(
    storage: Path, tmp_path: Path, exit_early: bool
) -> tuple[subprocess.Popen[bytes], dict[str, object], Path]:
    gate = tmp_path / "gate"
    state = tmp_path / "state.json"
    log = tmp_path / "submitter.log"
    process = start_python(
        SUBMITTER.format(
            storage=str(storage),
            gate=str(gate),
            state=str(state),
            exit_early=exit_early,
        ),
        log,
    )
    try:
        wait_until(
            lambda: state.exists() or process.poll() is not None,
            WAIT_SECONDS,
            "the submitter to start its job",
        )
    except AssertionError:
        process.kill()
        process.wait(WAIT_SECONDS)
        raise
    if not state.exists():
        process.wait(WAIT_SECONDS)
        raise AssertionError(f"the submitter exited early:\n{log.read_text()}")
    return process, json.loads(state.read_text()), log


def test_crash_fails_running_job(engine: Path, tmp_path: Path) -> None:
    process, state, log = start_submitter(engine, tmp_path, exit_early=False)
    old_processes = [state["worker_pid"], *state["descendants"]]
    assert state["worker_pid"] in state["descendants"]

    process.send_signal(signal.SIGKILL)
    process.wait(WAIT_SECONDS)

    leftover = wait_gone(old_processes, KILL_WAIT_SECONDS)
    for pid in leftover:
        psutil.Process(pid).kill()
    assert leftover == [], (
        f"processes of the killed kernel still run:\n{log.read_text()}"
    )

    tp.Orchestrator().run()
    hold = tp.get(state["hold"])
    follow = tp.get(state["follow"])
    scenario = tp.get(state["scenario"])
    assert hold.status is Status.FAILED
    assert hold.reason
    assert "ended" in hold.reason
    assert hold.stacktrace
    assert hold.worker_pid == state["worker_pid"]
    assert follow.status is Status.ABANDONED
    assert follow.reason
    assert scenario.waited.edit_in_progress is False
    assert scenario.after.edit_in_progress is False
    assert scenario.waited.last_edit_date is None
    submission = tp.get(state["submission"])
    assert submission.submission_status is SubmissionStatus.FAILED
    staging = [path for path in (engine / "data").iterdir() if "staging" in path.name]
    assert staging == []
    # What the job printed before the crash is kept, and no spill file is left.
    assert hold.logs == "waiting for the gate\n"
    assert list((engine / "logs").glob(".worker-*")) == []


def test_crash_recovered_store_runs_again(engine: Path, tmp_path: Path) -> None:
    process, state, _ = start_submitter(engine, tmp_path, exit_early=False)
    process.send_signal(signal.SIGKILL)
    process.wait(WAIT_SECONDS)
    wait_gone([state["worker_pid"], *state["descendants"]], KILL_WAIT_SECONDS)
    (tmp_path / "gate").touch()

    scenario = tp.get(state["scenario"])
    submission = scenario.submit()

    assert submission.submission_status is SubmissionStatus.COMPLETED
    assert scenario.after.read() == str(tmp_path / "gate").upper()


def test_exit_cancels_running_job(engine: Path, tmp_path: Path) -> None:
    process, state, log = start_submitter(engine, tmp_path, exit_early=True)

    process.wait(WAIT_SECONDS)

    assert process.returncode == 0, log.read_text()
    assert (
        wait_gone([state["worker_pid"], *state["descendants"]], KILL_WAIT_SECONDS) == []
    )
    tp.Orchestrator().run()
    hold = tp.get(state["hold"])
    follow = tp.get(state["follow"])
    scenario = tp.get(state["scenario"])
    assert hold.status is Status.CANCELED
    assert "stopped" in hold.reason
    assert follow.status is Status.ABANDONED
    assert hold.id in follow.reason
    assert scenario.waited.edit_in_progress is False
    assert scenario.after.edit_in_progress is False
    assert tp.get(state["submission"]).submission_status is SubmissionStatus.CANCELED
    text = log.read_text()
    assert "exiting with 2 unfinished jobs (" in text, text
    assert hold.id in text
    assert follow.id in text
    assert text.count("exiting with") == 1, text


def test_live_kernel_jobs_left_alone(engine: Path, tmp_path: Path) -> None:
    process, state, _ = start_submitter(engine, tmp_path, exit_early=False)
    try:
        tp.Orchestrator().run()
        hold = tp.get(state["hold"])
        assert hold.status is Status.RUNNING
        assert tp.get(state["follow"]).status is Status.BLOCKED
        assert tp.get(state["scenario"]).waited.edit_in_progress is True
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(WAIT_SECONDS)
        wait_gone([state["worker_pid"], *state["descendants"]], KILL_WAIT_SECONDS)


def two_output_nodes(tmp_path: Path) -> list[tp.DataNode]:
    from jupyter_scenarios import Config

    source = Config.configure_data_node("source", default_data=1)
    outputs = [
        Config.configure_pickle_data_node(name, path=str(tmp_path / f"{name}.p"))
        for name in ("first", "second")
    ]
    task = Config.configure_task("pairing", abs, source, outputs)
    scenario = tp.create_scenario(Config.configure_scenario("pairs", [task]))
    nodes = [scenario.first, scenario.second]
    for node in nodes:
        node.write("old")
    return nodes


@pytest.mark.parametrize("staging_left", [True, False])
def test_interrupted_commit_settles_all_outputs(
    tmp_path: Path, staging_left: bool
) -> None:
    """Start-up leaves a commit cut short by a crash all old or all new."""
    from jupyter_scenarios import _runtime
    from jupyter_scenarios.worker import file_identity, previous_path, staging_path

    nodes = two_output_nodes(tmp_path)
    job_id = "JOB_pairing_cut"
    first, second = (str(node.path) for node in nodes)
    # The crash came after the first output was renamed, its earlier file kept
    # aside; the second was renamed too unless its staging file is left.
    os.link(first, previous_path(first, job_id))
    os.link(second, previous_path(second, job_id))
    staged_first = Path(staging_path(first, job_id))
    staged_first.write_bytes(pickle.dumps("new"))
    identity_first = file_identity(str(staged_first))
    os.replace(staged_first, first)
    staged = Path(staging_path(second, job_id))
    staged.write_bytes(pickle.dumps("new"))
    entries = [
        {"final": first, "existed": True, "file": identity_first},
        {"final": second, "existed": True, "file": file_identity(str(staged))},
    ]
    if not staging_left:
        os.replace(staged, second)
    scheduler = _runtime.orchestrator()
    scheduler._commit_journal(job_id).write_text(json.dumps(entries))

    job = SimpleNamespace(id=job_id, _cwd=None)
    scheduler._remove_stale_staging(job, list(nodes))  # type: ignore[arg-type]

    expected = "old" if staging_left else "new"
    assert [node.backend.read() for node in nodes] == [expected, expected]
    left = sorted(path.name for path in tmp_path.iterdir() if path.name.startswith("."))
    assert left == []
    assert not scheduler._commit_journal(job_id).exists()
