"""Dask mode with real ``distributed`` clusters on 127.0.0.1.

Most tests run the embedded ``LocalCluster`` with 2 worker processes. The remote tests
start ``dask scheduler`` and ``dask worker`` as subprocesses and connect to them by
address. The unreachable-storage test runs its worker in a private mount namespace
(``unshare --mount``) where an empty tmpfs hides the test's folder, as on a machine
that does not share the kernel's file system. It needs root and is skipped otherwise.

A module fixture runs one job first, so that the helpers that ``distributed`` and
``multiprocessing`` keep for the whole interpreter (the resource tracker process and
the ``Dask-Callback-Thread`` thread) exist before the per-test leak checks.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_fixtures import (
    KILL_WAIT_SECONDS,
    REPO_ROOT,
    STOP_SECONDS,
    TESTS_DIR,
    WAIT_SECONDS,
    child_pids,
    engine,  # noqa: F401 - pytest fixture
    job_of,
    main_namespace,
    wait_gone,
    wait_status,
    wait_until,
)

pytest.importorskip("distributed")

import jupyter_scenarios as tp
from jupyter_scenarios import Config, Status, SubmissionStatus, _runtime
from jupyter_scenarios.exceptions import (
    ConfigurationError,
    ModeNotAvailable,
)
from jupyter_scenarios.executors import dask as dask_executor
from jupyter_scenarios.executors.base import JobOutcome
from jupyter_scenarios.worker import TaskRun

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.slow,
    pytest.mark.usefixtures("engine"),
]

# Seconds that a dask scheduler or worker subprocess gets to start.
SUBPROCESS_START_SECONDS = 60.0


# -- task functions (importable, so the workers load them by reference) ----------------


def double(value: int) -> int:
    return 2 * value


def add(left: int, right: int) -> int:
    return left + right


def fail(value: int) -> int:
    raise ValueError(f"cannot handle {value!r}")


def sleep_long(value: int) -> int:
    time.sleep(120)
    return value


def sleep_briefly() -> None:
    time.sleep(0.5)


def sleep_forever() -> None:
    time.sleep(120)


def exit_worker(value: int) -> int:
    os._exit(3)


def print_and_double(value: int) -> int:
    print(f"doubling {value}")
    return 2 * value


# -- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def dask_helpers_started() -> None:
    """Run one job through a DaskExecutor so process-wide helpers exist."""
    executor = dask_executor.DaskExecutor(address=None, n_workers=1)
    outcomes: list[JobOutcome] = []
    executor.start(lambda job_id, pid: None, outcomes.append)
    try:
        run = TaskRun("warm-up", "warm_up", int, (), ())
        executor.execute(run, Path(os.devnull))
        wait_until(lambda: outcomes, WAIT_SECONDS, "the warm-up job")
    finally:
        executor.shutdown()


@pytest.fixture
def dask_mode() -> Iterator[None]:
    """Dask mode with an embedded LocalCluster of 2 workers."""
    before = child_pids()
    Config.configure_job_executions(mode="dask", max_nb_of_workers=2)
    yield
    tp.Orchestrator().stop(wait=False)
    leftover = wait_gone(child_pids() - before, KILL_WAIT_SECONDS)
    assert not leftover, f"processes left after Orchestrator().stop(): {leftover}"


def seed_scenario() -> tp.Scenario:
    """Create the scenario double(21) -> b, add(21, b) -> c."""
    a = Config.configure_data_node("a", default_data=21)
    b = Config.configure_data_node("b")
    c = Config.configure_data_node("c")
    double_cfg = Config.configure_task("double", double, a, b)
    add_cfg = Config.configure_task("add", add, [a, b], c)
    scenario_cfg = Config.configure_scenario("seed", task_configs=[double_cfg, add_cfg])
    return tp.create_scenario(scenario_cfg)


# -- embedded LocalCluster -------------------------------------------------------------


def test_seed_scenario_runs_on_workers(dask_mode: None) -> None:
    scenario = seed_scenario()
    submission = scenario.submit(wait=True, timeout=WAIT_SECONDS)

    assert submission.submission_status is SubmissionStatus.COMPLETED
    assert scenario.b.read() == 42
    assert scenario.c.read() == 63
    worker_pids = {job.worker_pid for job in submission.jobs}
    assert None not in worker_pids
    assert os.getpid() not in worker_pids
    assert worker_pids <= child_pids()


def test_notebook_function_runs_on_workers(dask_mode: None) -> None:
    cell = main_namespace(
        """
        OFFSET = 100

        def shift(value):
            return value + OFFSET
        """
    )
    a = Config.configure_data_node("a", default_data=1)
    b = Config.configure_data_node("b")
    task_cfg = Config.configure_task("shift", cell["shift"], a, b)
    scenario_cfg = Config.configure_scenario("notebook", task_configs=[task_cfg])
    scenario = tp.create_scenario(scenario_cfg)

    submission = scenario.submit(wait=True, timeout=WAIT_SECONDS)

    assert submission.submission_status is SubmissionStatus.COMPLETED
    assert scenario.b.read() == 101


def test_executor_describes_embedded_cluster(dask_mode: None) -> None:
    scheduler = _runtime.orchestrator()
    assert "embedded LocalCluster, 2 worker processes" in scheduler.executor.describe()


def test_task_output_goes_to_job_log(dask_mode: None) -> None:
    a = Config.configure_data_node("a", default_data=5)
    b = Config.configure_data_node("b")
    task_cfg = Config.configure_task("print_and_double", print_and_double, a, b)
    scenario_cfg = Config.configure_scenario("printing", task_configs=[task_cfg])
    scenario = tp.create_scenario(scenario_cfg)

    submission = scenario.submit(wait=True, timeout=WAIT_SECONDS)

    job = submission.jobs[0]
    assert job.status is Status.COMPLETED
    assert "doubling 5" in job.logs


def test_failure_keeps_traceback(dask_mode: None) -> None:
    a = Config.configure_data_node("a", default_data=21)
    b = Config.configure_data_node("b")
    c = Config.configure_data_node("c")
    fail_cfg = Config.configure_task("fail", fail, a, b)
    double_cfg = Config.configure_task("double", double, b, c)
    scenario_cfg = Config.configure_scenario(
        "failing", task_configs=[fail_cfg, double_cfg]
    )
    scenario = tp.create_scenario(scenario_cfg)

    submission = scenario.submit(wait=True, timeout=WAIT_SECONDS)

    failed = job_of(submission, "fail")
    assert failed.status is Status.FAILED
    trace = "".join(failed.stacktrace)
    assert "Traceback (most recent call last)" in trace
    assert "in fail" in trace
    assert "ValueError: cannot handle 21" in trace
    assert job_of(submission, "double").status is Status.ABANDONED
    assert submission.submission_status is SubmissionStatus.FAILED
    assert not scenario.b.is_ready_for_reading


def test_dead_worker_fails_only_its_job(dask_mode: None) -> None:
    a = Config.configure_data_node("a", default_data=21)
    b = Config.configure_data_node("b")
    c = Config.configure_data_node("c")
    exit_cfg = Config.configure_task("exit_worker", exit_worker, a, b)
    double_cfg = Config.configure_task("double", double, a, c)
    scenario_cfg = Config.configure_scenario(
        "dying", task_configs=[exit_cfg, double_cfg]
    )
    scenario = tp.create_scenario(scenario_cfg)

    submission = scenario.submit(wait=True, timeout=WAIT_SECONDS)

    dead = job_of(submission, "exit_worker")
    assert dead.status is Status.FAILED
    assert "worker running the job died" in (dead.reason or "")
    assert job_of(submission, "double").status is Status.COMPLETED
    assert scenario.c.read() == 42

    # The nanny replaced the dead worker, so the next submission runs.
    again = tp.submit(scenario.tasks["double"], wait=True, timeout=WAIT_SECONDS)
    assert again.submission_status is SubmissionStatus.COMPLETED


def test_cancel_running_job_kills_worker(dask_mode: None) -> None:
    a = Config.configure_data_node("a", default_data=1)
    b = Config.configure_data_node("b")
    c = Config.configure_data_node("c")
    d = Config.configure_data_node("d")
    sleep_cfg = Config.configure_task("sleep_long", sleep_long, a, b)
    downstream_cfg = Config.configure_task("double", double, b, c)
    other_cfg = Config.configure_task("double_a", double, a, d)
    scenario_cfg = Config.configure_scenario(
        "sleepy", task_configs=[sleep_cfg, downstream_cfg, other_cfg]
    )
    scenario = tp.create_scenario(scenario_cfg)
    submission = scenario.submit()
    job = job_of(submission, "sleep_long")
    wait_until(lambda: job.worker_pid is not None, WAIT_SECONDS, "the job to start")
    worker_pid = job.worker_pid
    assert worker_pid is not None

    tp.cancel_job(job)

    wait_status(job, Status.CANCELED)
    assert wait_gone([worker_pid], KILL_WAIT_SECONDS) == []
    assert job_of(submission, "double").status is Status.ABANDONED
    wait_status(job_of(submission, "double_a"), Status.COMPLETED)
    assert not scenario.b.is_ready_for_reading
    # The nanny replaced the killed worker, so the cluster still runs jobs.
    for _ in range(3):
        again = tp.submit(
            scenario.tasks["double_a"], force=True, wait=True, timeout=WAIT_SECONDS
        )
        assert again.submission_status is SubmissionStatus.COMPLETED


def test_cancel_before_start_reports_cancelled(tmp_path: Path) -> None:
    # The scheduler hands the executor a job only when a slot is free, so this
    # drives the executor directly to queue a job behind another one in Dask.
    started: dict[str, int | None] = {}
    outcomes: dict[str, JobOutcome] = {}
    executor = dask_executor.DaskExecutor(address=None, n_workers=1)
    executor.start(
        lambda job_id, pid, _: started.__setitem__(job_id, pid),
        lambda outcome: outcomes.update({outcome.job_id: outcome}),
    )
    try:
        executor.execute(
            TaskRun("running", "sleep", sleep_forever, (), ()), tmp_path / "1.log"
        )
        executor.execute(
            TaskRun("queued", "sleep", sleep_forever, (), ()), tmp_path / "2.log"
        )
        wait_until(lambda: "running" in started, WAIT_SECONDS, "the first job to start")
        assert executor.free_slots() == -1

        assert executor.cancel("queued") is True
        wait_until(lambda: "queued" in outcomes, WAIT_SECONDS, "the cancel outcome")
        assert outcomes["queued"].cancelled is True
        assert outcomes["queued"].worker_pid is None
        assert "queued" not in started
        assert executor.free_slots() == 0
    finally:
        executor.shutdown()
    assert outcomes["running"].cancelled is True
    assert executor.free_slots() == 1


def test_shutdown_without_cancel_lets_jobs_finish(tmp_path: Path) -> None:
    outcomes: list[JobOutcome] = []
    executor = dask_executor.DaskExecutor(address=None, n_workers=1)
    executor.start(lambda job_id, pid: None, outcomes.append)
    try:
        run = TaskRun("short", "sleep", sleep_briefly, (), ())
        executor.execute(run, tmp_path / "short.log")
    finally:
        executor.shutdown(cancel_running=False, timeout=WAIT_SECONDS)

    assert len(outcomes) == 1
    assert outcomes[0].cancelled is False
    assert outcomes[0].result is not None
    assert outcomes[0].result.ok is True


def test_stop_leaves_no_process(dask_mode: None) -> None:
    before = child_pids()
    scheduler = _runtime.orchestrator()
    cluster = scheduler.executor._cluster
    assert cluster is not None
    started = child_pids() - before
    assert len(started) == 2  # the worker processes

    tp.Orchestrator().stop(wait=True, timeout=STOP_SECONDS)

    assert wait_gone(started, KILL_WAIT_SECONDS) == []
    assert cluster.status.name == "closed"


def test_stop_cancels_running_job(dask_mode: None) -> None:
    a = Config.configure_data_node("a", default_data=1)
    b = Config.configure_data_node("b")
    sleep_cfg = Config.configure_task("sleep_long", sleep_long, a, b)
    scenario_cfg = Config.configure_scenario("stopped", task_configs=[sleep_cfg])
    scenario = tp.create_scenario(scenario_cfg)
    submission = scenario.submit()
    job = submission.jobs[0]
    wait_until(lambda: job.worker_pid is not None, WAIT_SECONDS, "the job to start")
    worker_pid = job.worker_pid
    assert worker_pid is not None

    tp.Orchestrator().stop(wait=False)

    assert job.status is Status.CANCELED
    assert wait_gone([worker_pid], KILL_WAIT_SECONDS) == []


def test_missing_distributed_names_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)

    with pytest.raises(ModeNotAvailable, match=r"pip install -e '\.\[dask\]'"):
        dask_executor.DaskExecutor(address=None, n_workers=2)


# -- remote clusters -------------------------------------------------------------------


def _subprocess_environment() -> dict[str, str]:
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT), str(TESTS_DIR), environment.get("PYTHONPATH", "")]
    )
    return environment


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(KILL_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(KILL_WAIT_SECONDS)


class RemoteCluster:
    """A ``dask scheduler`` and one ``dask worker`` subprocess on 127.0.0.1."""

    def __init__(self, folder: Path, worker_prefix: list[str] | None = None) -> None:
        self.folder = folder
        self.processes: list[subprocess.Popen[bytes]] = []
        scheduler_file = folder / "scheduler.json"
        self._start(
            "scheduler.log",
            [
                sys.executable,
                "-m",
                "dask",
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(scheduler_file),
            ],
        )
        wait_until(
            scheduler_file.exists, SUBPROCESS_START_SECONDS, "the dask scheduler"
        )
        self.address: str = json.loads(scheduler_file.read_text())["address"]
        worker_command = [
            sys.executable,
            "-m",
            "dask",
            "worker",
            self.address,
            "--host",
            "127.0.0.1",
            "--nthreads",
            "1",
            "--no-nanny",
            "--no-dashboard",
        ]
        self._start("worker.log", [*(worker_prefix or []), *worker_command])
        self._wait_for_worker()

    def _start(self, log_name: str, command: list[str]) -> None:
        with open(self.folder / log_name, "wb") as log:
            self.processes.append(
                subprocess.Popen(
                    command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=_subprocess_environment(),
                    cwd=str(REPO_ROOT),
                )
            )

    def _wait_for_worker(self) -> None:
        from distributed import Client

        with Client(self.address, timeout=SUBPROCESS_START_SECONDS) as client:
            client.wait_for_workers(1, timeout=SUBPROCESS_START_SECONDS)

    def logs(self) -> str:
        return "\n".join(
            (self.folder / name).read_text(errors="replace")
            for name in ("scheduler.log", "worker.log")
        )

    def stop(self) -> None:
        for process in reversed(self.processes):
            _stop(process)


@pytest.fixture
def remote_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "cluster"
    folder.mkdir()
    return folder


def test_remote_scheduler_runs_seed(remote_folder: Path) -> None:
    cluster = RemoteCluster(remote_folder)
    try:
        Config.configure_job_executions(
            mode="dask", max_nb_of_workers=2, dask_address=cluster.address
        )
        scenario = seed_scenario()
        submission = scenario.submit(wait=True, timeout=WAIT_SECONDS)

        assert submission.submission_status is SubmissionStatus.COMPLETED, (
            cluster.logs()
        )
        assert scenario.c.read() == 63
        executor = _runtime.orchestrator().executor
        assert f"scheduler at {cluster.address}, 1 threads" in executor.describe()
        storage = _runtime.storage_folder()
        leftovers = list(storage.glob("**/.dask-storage-check-*"))
        assert leftovers == []
    finally:
        tp.Orchestrator().stop(wait=True, timeout=STOP_SECONDS)
        cluster.stop()


def _can_unshare_mounts() -> bool:
    if shutil.which("unshare") is None:
        return False
    completed = subprocess.run(
        ["unshare", "--mount", "true"], capture_output=True, check=False
    )
    return completed.returncode == 0


@pytest.mark.skipif(
    not _can_unshare_mounts(), reason="needs `unshare --mount` (root) on Linux"
)
def test_unreachable_storage_names_folder(remote_folder: Path, tmp_path: Path) -> None:
    storage = _runtime.storage_folder()
    assert storage.is_relative_to(tmp_path)
    # In the worker's mount namespace an empty tmpfs hides tmp_path, which contains
    # the storage folder.
    hide_storage = [
        "unshare",
        "--mount",
        "sh",
        "-c",
        f'mount -t tmpfs tmpfs "{tmp_path}" && exec "$0" "$@"',
    ]
    cluster = RemoteCluster(remote_folder, worker_prefix=hide_storage)
    try:
        Config.configure_job_executions(
            mode="dask", max_nb_of_workers=2, dask_address=cluster.address
        )

        with pytest.raises(ConfigurationError) as raised:
            seed_scenario()

        message = str(raised.value)
        assert str(storage) in message
        assert "does not exist on this worker" in message
        assert "Mount that folder at the same path on every worker" in message
        assert not _runtime.is_running()
        assert list(storage.glob(".dask-storage-check-*")) == []
    finally:
        tp.Orchestrator().stop(wait=False)
        cluster.stop()


def test_unreachable_scheduler_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dask_executor, "CONNECT_TIMEOUT_SECONDS", 1.0)
    # A bound socket that does not listen: connections to its port are refused.
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        Config.configure_job_executions(
            mode="dask", dask_address=f"tcp://127.0.0.1:{port}"
        )

        with pytest.raises(ConfigurationError, match="Could not connect to the Dask"):
            tp.Orchestrator().run()


def test_probe_storage_reports_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    problem = dask_executor._probe_storage(str(missing), "check", "token")
    assert problem == f"the folder {missing} does not exist on this worker"


def test_probe_storage_reports_other_folder(tmp_path: Path) -> None:
    problem = dask_executor._probe_storage(str(tmp_path), "check", "token")
    assert problem is not None
    assert "is not the kernel's folder" in problem


def test_probe_storage_accepts_shared_folder(tmp_path: Path) -> None:
    (tmp_path / "check").write_text("token", encoding="utf-8")
    assert dask_executor._probe_storage(str(tmp_path), "check", "token") is None
    assert sorted(path.name for path in tmp_path.iterdir()) == ["check"]
