"""Interrupting and restarting a real IPython kernel that runs standalone jobs.

The kernel's interrupt button sends SIGINT to the kernel's process group. It must stop
``submit(wait=True)`` without stopping the jobs, which run in worker processes. A
restarted kernel must find the previous kernel's submissions and jobs in the store,
with the unfinished ones settled and given a reason.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from helpers.kernel import WIDGET_VIEW_MIMETYPE, KernelSession
from helpers.processes import is_running, terminate, wait_for_exit

REPO_ROOT = Path(__file__).resolve().parents[1]

# Seconds any single cell or job is waited for.
CELL_TIMEOUT = 60.0
# Seconds the slow task sleeps. It must outlast the interrupt and the checks made
# right after it.
SLOW_TASK_SECONDS = 6.0
# Seconds to wait for the slow task to start in its worker.
START_TIMEOUT = 30.0
# Seconds the processes of a replaced kernel get to exit.
EXIT_TIMEOUT = 15.0

# The slow task writes a marker file when its function starts, so the test can tell
# that the job is RUNNING while the kernel is busy waiting for it.
SETUP_CELL = f"""\
import sys
if {str(REPO_ROOT)!r} not in sys.path:
    sys.path.insert(0, {str(REPO_ROOT)!r})
import json
import os
import time
from pathlib import Path

import jupyter_scenarios as tp
from jupyter_scenarios import Config

%load_ext jupyter_scenarios

STARTED_MARKER = Path("slow-started").resolve()


def slow(value):
    STARTED_MARKER.write_text(str(os.getpid()))
    time.sleep({{seconds}})
    return value + 1


def follow(value):
    return value * 10


start_cfg = Config.configure_data_node("start", default_data=1)
middle_cfg = Config.configure_data_node("middle")
end_cfg = Config.configure_data_node("end")
slow_cfg = Config.configure_task("slow", slow, start_cfg, middle_cfg)
follow_cfg = Config.configure_task("follow", follow, middle_cfg, end_cfg)
chain_cfg = Config.configure_scenario("chain", task_configs=[slow_cfg, follow_cfg])
Config.configure_job_executions(mode="standalone", max_nb_of_workers=1)
scenario = tp.create_scenario(chain_cfg)
"""

JOBS_JSON_CELL = """\
print(json.dumps([
    {"id": job.id, "task": job.task_config_id, "status": job.status.name,
     "reason": job.reason, "worker_pid": job.worker_pid, "submit_id": job.submit_id}
    for job in tp.get_jobs()
]))
"""


def run_json(kernel: KernelSession, code: str, timeout: float = CELL_TIMEOUT) -> Any:
    """Run ``code``, which must print one JSON line last, and return the decoded value."""
    result = kernel.execute(code, timeout=timeout).check()
    lines = result.stdout.strip().splitlines()
    assert lines, f"Cell printed nothing on stdout. stderr:\n{result.stderr}"
    return json.loads(lines[-1])


def wait_for_file(path: Path, timeout: float) -> bool:
    """Wait until ``path`` exists; return whether it does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.05)
    return path.exists()


def by_task(jobs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {job["task"]: job for job in jobs}


def test_interrupt_stops_waiting_not_jobs(
    kernel: KernelSession, tmp_path: Path, capsys: Any
) -> None:
    kernel.execute(SETUP_CELL.format(seconds=SLOW_TASK_SECONDS)).check()
    marker = tmp_path / "slow-started"
    interrupted_at: list[float] = []

    def interrupt_when_running() -> None:
        if wait_for_file(marker, START_TIMEOUT):
            interrupted_at.append(time.monotonic())
            kernel.km.interrupt_kernel()

    interrupter = threading.Thread(target=interrupt_when_running, name="interrupter")
    interrupter.start()
    try:
        result = kernel.execute(
            "submission = scenario.submit(wait=True)", timeout=CELL_TIMEOUT
        )
        cell_ended_at = time.monotonic()
    finally:
        interrupter.join(START_TIMEOUT + 5)
    right_after = by_task(run_json(kernel, JOBS_JSON_CELL))
    worker_pid = right_after["slow"]["worker_pid"]
    worker_alive = worker_pid is not None and psutil.pid_exists(worker_pid)

    assert interrupted_at, "the slow task never started"
    with capsys.disabled():
        print(
            f"\nthe cell ended {cell_ended_at - interrupted_at[0]:.2f} s after the "
            "interrupt"
        )
    assert result.status == "error"
    assert len(result.errors) == 1, result.outputs
    traceback = "\n".join(result.errors[0]["traceback"])
    assert traceback.startswith("KeyboardInterrupt: Stopped waiting"), traceback
    assert "keep running" in traceback
    assert "\n" not in traceback.strip(), f"a long traceback was shown:\n{traceback}"
    assert right_after["slow"]["status"] == "RUNNING"
    assert right_after["follow"]["status"] in ("BLOCKED", "PENDING")
    assert worker_alive, f"worker {worker_pid} of the running job is gone"

    finished = run_json(
        kernel,
        f"submission = tp.get_submissions()[0]\n"
        f"finished = submission.wait({CELL_TIMEOUT})\n"
        "print(json.dumps({'finished': finished,"
        " 'status': submission.submission_status.name,"
        " 'end': scenario.end.read()}))",
        timeout=CELL_TIMEOUT + 10,
    )
    assert finished["finished"] is True
    assert finished["status"] == "COMPLETED"
    assert finished["end"] == 20
    statuses = {job["task"]: job["status"] for job in run_json(kernel, JOBS_JSON_CELL)}
    assert statuses == {"slow": "COMPLETED", "follow": "COMPLETED"}

    # The interrupt reached the kernel's whole process group, forkserver included;
    # a new submission must still run.
    again = run_json(
        kernel,
        "submission = scenario.submit(wait=True, timeout=60)\n"
        "print(json.dumps(submission.submission_status.name))",
        timeout=CELL_TIMEOUT + 10,
    )
    assert again == "COMPLETED"
    assert kernel.execute("print(6 * 7)").check().stdout == "42\n"


@pytest.mark.parametrize("now", [False, True], ids=["graceful", "killed"])
def test_restart_lists_stored_jobs(
    kernel: KernelSession, tmp_path: Path, now: bool, capsys: Any
) -> None:
    # The slow task outlasts the restart, so its job is RUNNING when the kernel stops.
    kernel.execute(SETUP_CELL.format(seconds=120)).check()
    submission_id = run_json(
        kernel, "submission = scenario.submit()\nprint(json.dumps(submission.id))"
    )
    assert wait_for_file(tmp_path / "slow-started", START_TIMEOUT), "slow never ran"
    before = by_task(run_json(kernel, JOBS_JSON_CELL))
    assert before["slow"]["status"] == "RUNNING"
    # The scheduler writes job changes to the store in batches at most 50 ms apart;
    # let it record RUNNING before the kernel may be killed.
    time.sleep(0.3)
    assert kernel.pid is not None
    old_processes = [
        psutil.Process(kernel.pid),
        *psutil.Process(kernel.pid).children(recursive=True),
    ]

    try:
        kernel.km.restart_kernel(now=now)
        kernel.client.wait_for_ready(timeout=CELL_TIMEOUT)
        leftovers = [
            process
            for process in wait_for_exit(old_processes, EXIT_TIMEOUT)
            if is_running(process)
        ]
    finally:
        terminate(old_processes)
    setup = (
        f"import sys\nsys.path.insert(0, {str(REPO_ROOT)!r})\n"
        "import json\nimport jupyter_scenarios as tp\n%load_ext jupyter_scenarios\n"
    )
    kernel.execute(setup).check()
    submissions = run_json(
        kernel,
        "print(json.dumps([(s.id, s.submission_status.name)"
        " for s in tp.get_submissions()]))",
    )
    after = by_task(run_json(kernel, JOBS_JSON_CELL))
    table = kernel.execute("%jobs").check()

    with capsys.disabled():
        print(
            f"\nafter restart(now={now}): "
            + "; ".join(
                f"{task} {job['status']} ({job['reason']})"
                for task, job in after.items()
            )
        )
    assert leftovers == [], "processes of the old kernel are still running"
    assert [entry[0] for entry in submissions] == [submission_id]
    assert submissions[0][1] in ("FAILED", "CANCELED")
    assert set(after) == {"slow", "follow"}
    for task, job in after.items():
        assert job["id"] == before[task]["id"]
        assert job["status"] in ("FAILED", "CANCELED", "ABANDONED"), job
        assert job["reason"], f"job {job['id']} was settled without a reason"
    if now:
        assert after["slow"]["status"] == "FAILED"
        assert "ended before the job finished" in after["slow"]["reason"]
        assert after["follow"]["status"] == "ABANDONED"
    bundles = table.display_data
    assert len(bundles) == 1, table.outputs
    assert WIDGET_VIEW_MIMETYPE in bundles[0]
    text = bundles[0]["text/plain"]
    assert after["slow"]["status"] in text, text
    assert "slow" in text, text
    assert "follow" in text, text
