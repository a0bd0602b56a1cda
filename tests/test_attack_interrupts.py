"""Kernel crashes, interrupts and restarts, seen from the next kernel on the same folder."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from engine_fixtures import WAIT_SECONDS, run_python, start_python, wait_until
from helpers.kernel import KernelSession

pytestmark = pytest.mark.timeout(240)

# Writes a large DataFrame to a csv data node again and again, after writing the
# marker file once the first write has finished, until it is killed.
WRITER = """
import pandas as pd
import jupyter_scenarios as tp
from jupyter_scenarios import Config
Config.configure_core(storage_folder={storage!r})
table_cfg = Config.configure_data_node("table", storage_type="csv")
scenario = tp.create_scenario(Config.configure_scenario("writing", [], [table_cfg]))
frame = pd.DataFrame({{"a": range(2_000_000), "b": range(2_000_000)}})
scenario.table.write(frame)
open({marker!r}, "w").write(str(scenario.table.path))
while True:
    scenario.table.write(frame)
"""

# The chain start -> slow -> middle -> follow -> end, for scripts and kernel cells
# that define the functions slow and follow first.
SLOW_CHAIN = """
start = Config.configure_data_node("start", default_data=1)
middle = Config.configure_data_node("middle")
end = Config.configure_data_node("end")
tasks = [
    Config.configure_task("slow", slow, start, middle),
    Config.configure_task("follow", follow, middle, end),
]
scenario = tp.create_scenario(Config.configure_scenario("chain", tasks))
"""


def test_killed_write_temp_file_removed(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    marker = tmp_path / "written"
    process = start_python(
        WRITER.format(storage=str(storage), marker=str(marker)), tmp_path / "log"
    )
    try:
        wait_until(
            lambda: marker.exists() or process.poll() is not None,
            WAIT_SECONDS,
            "the first write",
        )
        assert marker.exists(), (tmp_path / "log").read_text()
        # The writer loops without a pause, so a temporary file exists almost all
        # the time after the first write, and the kill lands in the middle of one.
        time.sleep(0.5)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait(WAIT_SECONDS)
    data_path = Path(marker.read_text())

    output = run_python(
        f"""
import json
import jupyter_scenarios as tp
from jupyter_scenarios import Config
Config.configure_core(storage_folder={str(storage)!r})
[scenario] = tp.get_scenarios()
print(json.dumps({{"rows": len(scenario.table.read()),
                  "locked": scenario.table.edit_in_progress}}))
scenario.table.write(scenario.table.read().head(3))
tp.Orchestrator().stop()
"""
    ).stdout
    state = json.loads(output.strip().splitlines()[-1])
    leftovers = sorted(
        path.name for path in data_path.parent.iterdir() if ".tmp" in path.name
    )

    assert state["rows"] == 2_000_000
    assert state["locked"] is False
    assert leftovers == [], "a killed write left its temporary file for good"


def test_interrupted_creation_stores_nothing(tmp_path: Path) -> None:
    output = run_python(
        f"""
import json, threading, _thread
import jupyter_scenarios as tp
from jupyter_scenarios import Config
Config.configure_core(storage_folder={str(tmp_path / "storage")!r})
nodes = [Config.configure_data_node(f"n{{i}}", default_data=i) for i in range(1000)]
config = Config.configure_scenario("wide", [], nodes)
# SIGINT, as the kernel's interrupt button sends, while the scenario is created.
timer = threading.Timer(0.3, _thread.interrupt_main)
timer.start()
try:
    tp.create_scenario(config)
    interrupted = False
except KeyboardInterrupt:
    interrupted = True
timer.cancel()
print(json.dumps({{"interrupted": interrupted,
                  "scenarios": len(tp.get_scenarios()),
                  "data_nodes": len(tp.get_data_nodes())}}))
tp.Orchestrator().stop()
"""
    ).stdout
    state = json.loads(output.strip().splitlines()[-1])

    assert state["interrupted"] is True
    assert state["scenarios"] == 0
    assert state["data_nodes"] == 0, "an interrupted creation stored part of it"


def test_development_interrupt_settles_job(tmp_path: Path) -> None:
    output = run_python(
        f"""
import json, os, threading, time, _thread
import jupyter_scenarios as tp
from jupyter_scenarios import Config


def slow(value):
    time.sleep(3)
    return value + 1


def follow(value):
    return value * 10


Config.configure_core(storage_folder={str(tmp_path / "storage")!r})
{SLOW_CHAIN}# SIGINT, as the kernel's interrupt button sends, while the slow job runs.
threading.Timer(0.5, _thread.interrupt_main).start()
try:
    scenario.submit(wait=True)
    interrupted = False
except KeyboardInterrupt:
    interrupted = True
# Longer than the slow task would have run.
time.sleep(4)
jobs = {{job.task_config_id: [job.status.name, job.reason] for job in tp.get_jobs()}}
locked = scenario.middle.edit_in_progress
again = scenario.submit(wait=True, timeout=10)
stopper = threading.Thread(target=tp.Orchestrator().stop, daemon=True)
stopper.start()
stopper.join(10)
print(json.dumps({{"interrupted": interrupted, "jobs": jobs, "locked": locked,
                  "again": again.submission_status.name, "end": scenario.end.read(),
                  "stopped": not stopper.is_alive()}}), flush=True)
os._exit(0)
"""
    ).stdout
    state = json.loads(output.strip().splitlines()[-1])

    assert state["interrupted"] is True
    assert state["stopped"] is True, "Orchestrator().stop() waited for a dead job"
    slow_status, slow_reason = state["jobs"]["slow"]
    assert slow_status in ("FAILED", "CANCELED"), f"slow job stayed {slow_status}"
    assert slow_reason, "the interrupted job has no reason"
    assert state["locked"] is False, "the interrupted job's output stayed locked"
    assert state["again"] == "COMPLETED"
    assert state["end"] == 20


def test_interrupted_submit_stores_nothing(tmp_path: Path) -> None:
    output = run_python(
        f"""
import collections, json, threading, time, _thread
import jupyter_scenarios as tp
from jupyter_scenarios import Config


def double(value):
    return value * 2


Config.configure_core(storage_folder={str(tmp_path / "storage")!r})
Config.configure_job_executions(mode="standalone", max_nb_of_workers=2)
number = Config.configure_data_node("number", default_data=1)
tasks = [
    Config.configure_task(f"t{{index}}", double, number,
                          Config.configure_data_node(f"out{{index}}"))
    for index in range(1500)
]
scenario = tp.create_scenario(Config.configure_scenario("wide", tasks))
# SIGINT, as the kernel's interrupt button sends, while submit() stores the jobs.
timer = threading.Timer(0.05, _thread.interrupt_main)
timer.start()
try:
    scenario.submit()
    interrupted = False
except KeyboardInterrupt:
    interrupted = True
timer.cancel()
settled = tp.wait_all(timeout=20)
statuses = collections.Counter(job.status.name for job in tp.get_jobs())
print(json.dumps({{"interrupted": interrupted, "settled": settled,
                  "statuses": statuses,
                  "deletable": bool(tp.is_deletable(scenario))}}), flush=True)
tp.Orchestrator().stop(wait=False)
"""
    ).stdout
    state = json.loads(output.strip().splitlines()[-1])

    assert state["interrupted"] is True
    assert "SUBMITTED" not in state["statuses"], state["statuses"]
    assert state["settled"] is True, "wait_all() timed out on jobs nobody runs"
    assert state["deletable"] is True


def test_interrupted_delete_files_removed(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    output = run_python(
        f"""
import json, os, threading, _thread
import jupyter_scenarios as tp
from jupyter_scenarios import Config
Config.configure_core(storage_folder={str(storage)!r})
nodes = [Config.configure_data_node(f"n{{i}}", default_data=i) for i in range(800)]
scenario = tp.create_scenario(Config.configure_scenario("wide", [], nodes))
# SIGINT, as the kernel's interrupt button sends, while the scenario is deleted.
timer = threading.Timer(0.05, _thread.interrupt_main)
timer.start()
try:
    tp.delete(scenario.id)
    interrupted = False
except KeyboardInterrupt:
    interrupted = True
timer.cancel()
state = {{"interrupted": interrupted, "scenarios": len(tp.get_scenarios()),
         "data_nodes": len(tp.get_data_nodes())}}
tp.clean_all_entities()
print(json.dumps(state), flush=True)
tp.Orchestrator().stop()
"""
    ).stdout
    state = json.loads(output.strip().splitlines()[-1])
    leftovers = list((storage / "data").iterdir())

    assert state["interrupted"] is True
    assert state["scenarios"] == 0
    assert state["data_nodes"] == 0
    assert len(leftovers) == 0, (
        f"{len(leftovers)} data files of deleted nodes stay after clean_all_entities()"
    )


DEVELOPMENT_SETUP = (
    f"""\
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
import json, time
from pathlib import Path
import jupyter_scenarios as tp
from jupyter_scenarios import Config
%load_ext jupyter_scenarios


def slow(value):
    Path("slow-started").write_text("started")
    time.sleep(3)
    return value + 1


def follow(value):
    return value * 10
"""
    + SLOW_CHAIN
)


def test_kernel_interrupt_development_job(
    kernel: KernelSession, tmp_path: Path
) -> None:
    kernel.execute(DEVELOPMENT_SETUP, timeout=60).check()
    marker = tmp_path / "slow-started"

    def interrupt_when_started() -> None:
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        kernel.km.interrupt_kernel()

    interrupter = threading.Thread(target=interrupt_when_started)
    interrupter.start()
    interrupted = kernel.execute("scenario.submit(wait=True)", timeout=60)
    interrupter.join(35)
    # Longer than the slow task would have run.
    time.sleep(4)
    after = kernel.execute(
        "print(json.dumps({job.task_config_id: [job.status.name, job.reason]"
        " for job in tp.get_jobs()}))"
    ).check()
    jobs = json.loads(after.stdout.strip().splitlines()[-1])
    again = kernel.execute(
        "submission = scenario.submit(wait=True, timeout=10)\n"
        "print(json.dumps([submission.submission_status.name, scenario.end.read()]))",
        timeout=30,
    ).check()

    assert interrupted.status == "error"
    assert jobs["slow"][0] in ("FAILED", "CANCELED"), f"slow job is {jobs['slow']}"
    assert jobs["slow"][1], "the interrupted job has no reason"
    assert json.loads(again.stdout.strip().splitlines()[-1]) == ["COMPLETED", 20]
