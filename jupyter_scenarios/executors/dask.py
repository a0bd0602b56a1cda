"""Dask mode: run jobs on a ``distributed`` cluster.

Two kinds of cluster:

Embedded (no ``dask_address``)
    ``start`` creates a ``LocalCluster`` with ``n_workers`` worker processes of one
    thread each, bound to 127.0.0.1 and without a dashboard. ``distributed`` starts
    the worker processes with the spawn start method, never a plain fork of the
    kernel. The cluster's scheduler runs with ``allowed_failures=0``, so a job whose
    worker dies (segfault, ``os._exit``, out of memory) fails at once with
    ``KilledWorker`` instead of being retried on other workers. It also runs with
    ``worker-saturation`` 1.0, so no job waits on a worker behind another job: a
    waiting job stays on the scheduler and is never lost with a killed worker. Its
    HTTP server (health and metrics routes) listens on a random port of 127.0.0.1.
    With distributed 2026.8.0 the worker processes exit when the kernel process
    is killed with SIGKILL (checked by hand on Linux).
Remote (``Config.configure_job_executions(mode="dask", dask_address=...)``)
    ``start`` connects a client to the scheduler at that address and ``n_workers`` is
    ignored. Data nodes are files that the workers read and write themselves, so the
    storage folder must be mounted at the same path on every worker.
    ``start``, and ``execute`` for each new data folder, write a check file with a
    random token into the folder and ask every worker to read it back. A worker that
    cannot read it raises ``ConfigurationError`` naming the folder and the fix.
    ``jupyter_scenarios`` and the task functions' modules must be importable there.
    A job whose worker dies is retried up to the remote scheduler's
    ``distributed.scheduler.allowed-failures`` setting (3 times by default).

Either way the client is created with ``set_as_default=False``, so ``dask.compute``
calls in the notebook keep using the scheduler they used before.

Jobs
    ``execute`` submits one task per job with ``key=job_id`` and ``pure=False``.
    ``distributed`` pickles the ``TaskRun``, with cloudpickle for functions defined in
    a notebook cell. The task sends a "started" event with the worker's pid, which
    becomes ``on_started``, runs ``run_task_in_worker``, and sends a "finished" event
    with the pickled ``TaskResult``, which becomes ``on_finished``. Events travel
    through the scheduler on a topic of this executor. A done callback on the future
    reports the jobs whose "finished" event did not come first: errors, cancels,
    dead workers. It runs on ``distributed``'s callback thread,
    ``Dask-Callback-Thread``, which stays for the life of the process. The client
    sends each submit at once instead of batching them (see
    ``_send_without_batching``).

    ``free_slots`` is the number of worker threads minus the jobs in flight. On the
    embedded cluster a RUNNING job therefore has a worker thread to itself, while on
    a shared remote cluster it may wait behind other clients' tasks. For a remote
    cluster the thread count is read at start and again after a job finishes, at
    most every ``THREADS_REFRESH_SECONDS``.
Output
    When the worker runs one thread, ``print`` output and ``sys.stderr`` writes of the
    task go to the job's log file. A worker with several threads cannot tell its
    tasks' output apart, so the output stays in the worker's own log.

Cancelling
    A job that has not started on a worker is cancelled with ``Client.cancel``, and
    ``on_finished`` reports it cancelled. ``distributed`` cannot interrupt a task that
    already runs: the thread goes on, and the scheduler only forgets the result. So:

    - On the embedded cluster the executor cancels the future and then kills the
      worker process that runs the job, with its child processes, by SIGKILL. The
      nanny starts a fresh worker, and the job is reported cancelled.
    - On a remote cluster the executor does not kill workers, because they may run
      other clients' tasks. ``cancel`` returns False and logs a warning. The job runs
      to completion and its outcome is applied as usual.

    A job can start on a worker just before ``Client.cancel`` reaches it, with its
    "started" event still on the way. It is reported cancelled, and when the event
    arrives the executor kills that worker (embedded cluster) or logs that the task
    runs on and that its outputs are discarded (remote cluster).

Shutdown
    ``shutdown`` cancels the jobs in flight and reports each of them cancelled. On the
    embedded cluster it kills the workers that run jobs, since a nanny otherwise
    waits several seconds for a busy worker to close. Then it closes the client and
    the embedded cluster, whose nannies stop their worker processes. A remote cluster
    keeps running.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..exceptions import ConfigurationError, ModeNotAvailable, clause
from ..worker import TaskResult, TaskRun, run_task_in_worker
from .base import Executor, FinishedCallback, JobOutcome, StartedCallback

if TYPE_CHECKING:
    from distributed import Client, Future, LocalCluster

# distributed 2026.8.0 leaves most methods of Client, LocalCluster and Future
# unannotated, hence the "no-untyped-call" ignores below.

logger = logging.getLogger(__name__)

#: Seconds to wait for the connection to a remote scheduler.
CONNECT_TIMEOUT_SECONDS = 10.0
#: Seconds to wait for the client and the embedded cluster to close.
CLOSE_TIMEOUT_SECONDS = 10.0
#: Minimum seconds between two reads of a remote cluster's thread count.
THREADS_REFRESH_SECONDS = 2.0
#: Seconds that shutdown(cancel_running=False) lets jobs in flight finish.
SHUTDOWN_WAIT_SECONDS = 5.0

_TOPIC_PREFIX = "jupyter-scenarios-jobs-"
# Kinds of the events that tasks send on the executor's topic.
_STARTED = "started"
_FINISHED = "finished"
_CHECK_FILE_PREFIX = ".dask-storage-check-"


def _import_distributed() -> None:
    try:
        import distributed  # noqa: F401
    except ImportError as error:
        raise ModeNotAvailable(
            "Job execution mode 'dask' needs the distributed package, which cannot "
            f"be imported ({error}). Install it with "
            "`pip install -e '.[dask]'` in the jupyter-scenarios checkout (or `pip install distributed`), or use standalone mode."
        ) from error


class _InFlight:
    """One job submitted to the cluster and not reported finished yet."""

    __slots__ = ("cancel_requested", "future", "pid", "worker_address")

    def __init__(self, future: Future[TaskResult]) -> None:
        self.future = future
        self.pid: int | None = None
        self.worker_address: str | None = None
        #: Set by cancel(); a cancelled future without it was dropped by Dask.
        self.cancel_requested = False


class DaskExecutor(Executor):
    """Run jobs on an embedded ``LocalCluster`` or on the scheduler at ``address``."""

    def __init__(self, address: str | None, n_workers: int) -> None:
        _import_distributed()
        if n_workers < 1:
            raise ConfigurationError(
                f"The dask mode needs at least 1 worker, got max_nb_of_workers="
                f"{n_workers!r}."
            )
        self.address = address
        self.n_workers = n_workers
        self._client: Client | None = None
        self._cluster: LocalCluster | None = None
        self._topic = _TOPIC_PREFIX + uuid.uuid4().hex

        # Guards _in_flight, _reporting, _cancelled_early, _total_threads and
        # _threads_read_at. The scheduler thread adds and cancels jobs, the
        # client's event loop records "started" events, and the Dask callback
        # thread removes finished jobs.
        self._lock = threading.Lock()
        self._in_flight: dict[str, _InFlight] = {}
        # Outcomes being fetched and reported by the callback thread.
        self._reporting = 0
        # Notified when no job is in flight or being reported, for
        # shutdown(cancel_running=False).
        self._all_done = threading.Condition(self._lock)
        # Jobs cancelled before a "started" event came; a late event for one of
        # them means that its task was already running on a worker. The id of a
        # task that never started stays here, one short string per such cancel.
        self._cancelled_early: set[str] = set()

        self._total_threads = n_workers
        self._threads_read_at = 0.0
        self._checked_folders: set[str] = set()
        self._closed = False

    # -- life cycle -------------------------------------------------------------------

    def start(self, on_started: StartedCallback, on_finished: FinishedCallback) -> None:
        from distributed import Client, LocalCluster

        self._on_started = on_started
        self._on_finished = on_finished
        if self.address is None:
            import dask

            # Give each worker one job at a time (see the module docstring).
            with dask.config.set({"distributed.scheduler.worker-saturation": 1.0}):
                self._cluster = LocalCluster(  # type: ignore[no-untyped-call]
                    n_workers=self.n_workers,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                    scheduler_kwargs={
                        "allowed_failures": 0,
                        # The scheduler serves /health and /metrics even without a
                        # dashboard, on port 8787 by default. A random port leaves
                        # 8787 to the user's own Dask dashboard and other kernels.
                        "dashboard_address": "127.0.0.1:0",
                    },
                )
            try:
                self._client = Client(  # type: ignore[no-untyped-call]
                    self._cluster, set_as_default=False
                )
            except BaseException:
                self._cluster.close()
                self._cluster = None
                raise
        else:
            try:
                self._client = Client(  # type: ignore[no-untyped-call]
                    self.address,
                    timeout=CONNECT_TIMEOUT_SECONDS,
                    set_as_default=False,
                )
            except (OSError, TimeoutError) as error:
                raise ConfigurationError(
                    f"Could not connect to the Dask scheduler at {self.address!r}: "
                    f"{clause(error)}. Start the scheduler (`dask scheduler`) and its "
                    "workers, or remove the dask_address property to run an "
                    "embedded LocalCluster."
                ) from error
        _send_without_batching(self._client)
        try:
            self._client.subscribe_topic(  # type: ignore[no-untyped-call]
                self._topic, self._on_event
            )
            if self.address is not None:
                self._refresh_threads()
                self._check_kernel_storage()
        except BaseException:
            self._close_client_and_cluster()
            raise

    def shutdown(
        self, *, cancel_running: bool = True, timeout: float = SHUTDOWN_WAIT_SECONDS
    ) -> None:
        """Stop running jobs and close the client, and the cluster if it is ours.

        With ``cancel_running=False``, jobs in flight get up to ``timeout`` seconds
        to finish first. Jobs still in flight then are reported cancelled.
        """
        if self._closed:
            return
        client = self._client
        if client is not None and not cancel_running:
            with self._all_done:
                self._all_done.wait_for(
                    lambda: not self._in_flight and not self._reporting, timeout
                )
        with self._lock:
            self._closed = True
            left = dict(self._in_flight)
            self._in_flight.clear()
        if client is not None and left:
            with contextlib.suppress(Exception):
                futures = [entry.future for entry in left.values()]
                client.cancel(futures, force=True)  # type: ignore[no-untyped-call]
            # Closing a nanny waits several seconds for a busy worker before it
            # kills it. Killing the workers of running jobs first saves that wait.
            if self._cluster is not None:
                for job_id, entry in left.items():
                    if entry.pid is not None:
                        self._kill_local_worker(job_id, entry.pid)
        for job_id, entry in left.items():
            self._report(
                JobOutcome(
                    job_id,
                    None,
                    error="the dask executor was shut down",
                    cancelled=True,
                    worker_pid=entry.pid,
                )
            )
        self._close_client_and_cluster()

    def _close_client_and_cluster(self) -> None:
        client, cluster = self._client, self._cluster
        self._client = None
        self._cluster = None
        if client is not None:
            try:
                client.unsubscribe_topic(self._topic)  # type: ignore[no-untyped-call]
                client.close(  # type: ignore[no-untyped-call]
                    timeout=CLOSE_TIMEOUT_SECONDS
                )
            except Exception:
                logger.exception("Closing the Dask client failed")
        if cluster is not None:
            try:
                cluster.close(timeout=CLOSE_TIMEOUT_SECONDS)
            except Exception:
                logger.exception("Closing the embedded LocalCluster failed")

    def describe(self) -> str:
        if self.address is None:
            return (
                f"dask (embedded LocalCluster, {self.n_workers} worker processes on "
                "127.0.0.1)"
            )
        return f"dask (scheduler at {self.address}, {self._total_threads} threads)"

    # -- jobs -------------------------------------------------------------------------

    def free_slots(self) -> int:
        with self._lock:
            return self._total_threads - len(self._in_flight)

    def execute(self, run: TaskRun, log_path: Path) -> None:
        client = self._client
        if client is None or self._closed:
            raise RuntimeError("The dask executor is not started or already shut down")
        if self.address is not None:
            folders = {spec.folder for spec in (*run.inputs, *run.outputs)}
            folders.add(str(log_path.parent))
            for folder in sorted(folders - self._checked_folders):
                self._check_storage(folder)
        future = client.submit(
            _run_on_worker,
            run,
            str(log_path),
            self._topic,
            key=run.job_id,
            pure=False,
        )
        with self._lock:
            self._in_flight[run.job_id] = _InFlight(future)
        future.add_done_callback(  # type: ignore[no-untyped-call]
            self._on_future_done
        )

    def cancel(self, job_id: str) -> bool:
        client = self._client
        with self._lock:
            entry = self._in_flight.get(job_id)
            if entry is None or client is None:
                return False
            pid, worker_address = entry.pid, entry.worker_address
            if pid is not None and self._cluster is None:
                running_remotely = True
            else:
                running_remotely = False
                entry.cancel_requested = True
                if pid is None:
                    self._cancelled_early.add(job_id)
        if running_remotely:
            logger.warning(
                "Job %s runs on Dask worker %s (pid %s), and a running Dask task "
                "cannot be stopped without restarting its worker, which may run "
                "other clients' tasks. The job goes on; restart that worker with "
                "Client.restart_workers to stop it.",
                job_id,
                worker_address,
                pid,
            )
            return False
        # Forget the task first, so that the scheduler does not run it again on
        # another worker once its worker is killed.
        client.cancel([entry.future], force=True)  # type: ignore[no-untyped-call]
        if pid is not None:
            self._kill_local_worker(job_id, pid)
        return True

    def _on_event(self, event: tuple[float, Any]) -> None:
        # This runs on the client's event loop, so it only records and posts.
        _, message = event
        if message["kind"] == _FINISHED:
            self._on_finished_event(message["job_id"], message["result"])
        else:
            self._on_started_event(message)

    def _on_started_event(self, message: dict[str, Any]) -> None:
        job_id = message["job_id"]
        pid = int(message["pid"])
        with self._lock:
            entry = self._in_flight.get(job_id)
            if entry is not None:
                entry.pid = pid
                entry.worker_address = str(message["worker"])
            cancelled_early = job_id in self._cancelled_early
            self._cancelled_early.discard(job_id)
        if cancelled_early:
            self._stop_late_start(job_id, pid, str(message["worker"]))
        elif entry is not None:
            self._on_started(job_id, pid, None)

    def _stop_late_start(self, job_id: str, pid: int, worker_address: str) -> None:
        # The task was already running when it was cancelled, although its
        # "started" event came later.
        if self._cluster is not None:
            self._kill_local_worker(job_id, pid)
            return
        # NOTE: the task's staging files (".<name>.<job id>.staging" beside each
        # output) are left on the remote storage; nothing deletes them.
        logger.warning(
            "Job %s was cancelled, but it had already started on Dask worker %s "
            "(pid %s). It runs to completion there, and its outputs are discarded.",
            job_id,
            worker_address,
            pid,
        )

    def _kill_local_worker(self, job_id: str, pid: int) -> None:
        import psutil

        # The pid comes from a worker's message, so kill it only if it descends from
        # this process, as the workers of the embedded cluster do.
        children = {process.pid for process in psutil.Process().children(True)}
        if pid not in children:
            logger.warning("Job %s: pid %s is not a local Dask worker", job_id, pid)
            return
        try:
            worker = psutil.Process(pid)
            processes = [*worker.children(recursive=True), worker]
        except psutil.NoSuchProcess:
            return
        # The nanny reaps its worker process. A waitpid() here would take the exit
        # status that the nanny reads, so this does not wait.
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGKILL)
        logger.info("Job %s cancelled: killed Dask worker pid %s", job_id, pid)

    def _on_finished_event(self, job_id: str, pickled_result: bytes) -> None:
        # A job that succeeded is reported from its "finished" event, which saves
        # the round trip to the worker that future.result() would make.
        entry = self._take_for_report(job_id)
        if entry is None:
            return  # Cancelled, or reported by the done callback already.
        try:
            result = pickle.loads(pickled_result)
            self._report(JobOutcome(job_id, result, worker_pid=entry.pid))
        finally:
            self._end_report()

    def _on_future_done(self, future: Future[TaskResult]) -> None:
        if self.address is not None:
            self._refresh_threads()
        job_id = str(future.key)
        entry = self._take_for_report(job_id)
        if entry is None:
            # Reported already from the "finished" event, or by shutdown.
            future.release()  # type: ignore[no-untyped-call]
            return
        try:
            outcome = self._outcome_of(job_id, future, entry)
            future.release()  # type: ignore[no-untyped-call]
            self._report(outcome)
        finally:
            self._end_report()

    def _take_for_report(self, job_id: str) -> _InFlight | None:
        """Remove ``job_id`` from the jobs in flight, once, for its one outcome."""
        with self._lock:
            entry = self._in_flight.pop(job_id, None)
            if entry is not None:
                self._reporting += 1
            return entry

    def _end_report(self) -> None:
        with self._lock:
            self._reporting -= 1
            if not self._in_flight and not self._reporting:
                self._all_done.notify_all()

    def _outcome_of(
        self, job_id: str, future: Future[TaskResult], entry: _InFlight
    ) -> JobOutcome:
        status = future.status
        pid = entry.pid
        if status == "cancelled" and entry.cancel_requested:
            return JobOutcome(job_id, None, cancelled=True, worker_pid=pid)
        if status == "cancelled":
            # Dask cancels futures itself when the scheduler restarts or the client
            # loses its connection, and another client may cancel the key.
            return JobOutcome(
                job_id,
                None,
                error="Dask cancelled the task although this kernel did not: the "
                "scheduler restarted, the connection to it was lost, or another "
                "client cancelled the key. Submit the job again.",
                worker_pid=pid,
            )
        if status == "finished":
            try:
                result = future.result()
            # Deserializing the result or reaching the worker can fail in many ways,
            # and each must end the job rather than the callback thread.
            except Exception as error:  # noqa: BLE001
                return JobOutcome(
                    job_id,
                    None,
                    error=f"fetching the result from the Dask worker failed: "
                    f"{type(error).__name__}: {error}",
                    worker_pid=pid,
                )
            return JobOutcome(job_id, result, worker_pid=pid)
        if status == "error":
            task_error = future.exception()  # type: ignore[no-untyped-call]
            return JobOutcome(
                job_id, None, error=_describe_task_error(task_error), worker_pid=pid
            )
        return JobOutcome(
            job_id,
            None,
            error=f"the Dask future ended with status {status!r}",
            worker_pid=pid,
        )

    def _report(self, outcome: JobOutcome) -> None:
        try:
            self._on_finished(outcome)
        except Exception:
            logger.exception("Reporting the outcome of job %s failed", outcome.job_id)

    # -- remote clusters --------------------------------------------------------------

    def _refresh_threads(self) -> None:
        client = self._client
        now = time.monotonic()
        with self._lock:
            if client is None or now - self._threads_read_at < THREADS_REFRESH_SECONDS:
                return
            self._threads_read_at = now
        try:
            total = int(client.scheduler_info(n_workers=0)["total_threads"])
        except Exception:
            logger.exception("Reading the thread count of %s failed", self.address)
            return
        if total < 1:
            # NOTE: a cluster without workers (an adaptive one at zero) still gets
            # one job at a time, so that its scheduler receives work and can scale.
            logger.warning("The Dask cluster at %s has no worker threads", self.address)
        with self._lock:
            self._total_threads = max(total, 1)

    def _check_kernel_storage(self) -> None:
        # The storage folder that the configuration names, when the kernel uses it.
        # Folders that jobs use are checked again in execute().
        from .._runtime import storage_folder

        folder = storage_folder()
        if folder.is_dir():
            self._check_storage(str(folder))

    def _check_storage(self, folder: str) -> None:
        """Raise ConfigurationError unless every worker sees the kernel's ``folder``."""
        client = self._client
        assert client is not None
        token = uuid.uuid4().hex
        check_file = Path(folder) / f"{_CHECK_FILE_PREFIX}{token}"
        check_file.write_text(token, encoding="utf-8")
        try:
            replies = client.run(
                _probe_storage, folder, check_file.name, token, on_error="return"
            )
        finally:
            check_file.unlink(missing_ok=True)
        if not replies:
            # NOTE: workers that join later are not checked.
            logger.warning(
                "The Dask cluster at %s has no workers, so the storage folder %s "
                "could not be checked",
                self.address,
                folder,
            )
            return
        problems = []
        for worker_address, reply in sorted(replies.items()):
            if isinstance(reply, BaseException):
                problems.append(
                    f"{worker_address}: the check failed with "
                    f"{type(reply).__name__}: {reply} (is jupyter_scenarios "
                    "installed there, in the same version?)"
                )
            elif reply is not None:
                problems.append(f"{worker_address}: {reply}")
        if problems:
            raise ConfigurationError(
                f"The Dask workers at {self.address} cannot use the storage folder "
                f"{folder}, where data nodes and job logs live: "
                + "; ".join(problems)
                + ". Mount that folder at the same path on every worker (a shared "
                "file system), or set Config.configure_core(storage_folder=...) to "
                "a folder that the kernel and all workers share."
            )
        self._checked_folders.add(folder)


def _send_without_batching(client: Client) -> None:
    """Make ``client`` send each message to the scheduler at once.

    A client batches its messages to the scheduler and sends at most one batch every
    10 ms (``Client._ensure_connected`` in distributed 2026.8.0). The scheduler
    hands this executor one job per free worker thread, so each submit came within
    10 ms of the previous message and waited for the next batch. On 2 shared CPU
    cores a fan-out of 200 tiny jobs on the embedded cluster took about 1.8 s with
    the batching and 1.25 s without it (3 runs each).
    """
    # NOTE: a client that reconnects builds a new stream with the default interval.
    stream = getattr(client, "scheduler_comm", None)
    if stream is not None and hasattr(stream, "interval"):
        stream.interval = 0.0


def _describe_task_error(error: BaseException | None) -> str:
    if error is None:
        return "the Dask task failed without an exception"
    name = type(error).__name__
    if name == "KilledWorker":
        return (
            "the Dask worker running the job died (segfault, os._exit or out of "
            f"memory): {error}"
        )
    return f"the Dask task raised {name}: {error}"


# -- functions that run on the workers ------------------------------------------------


def _run_on_worker(run: TaskRun, log_path: str, topic: str) -> TaskResult:
    """Run the task and send "started" and "finished" events to the kernel."""
    from distributed import get_worker

    worker = get_worker()
    worker.log_event(
        topic,
        {
            "kind": _STARTED,
            "job_id": run.job_id,
            "pid": os.getpid(),
            "worker": worker.address,
        },
    )
    result = _run_with_log(run, log_path, worker.state.nthreads)
    worker.log_event(
        topic,
        {
            "kind": _FINISHED,
            "job_id": run.job_id,
            "result": pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL),
        },
    )
    return result


def _run_with_log(run: TaskRun, log_path: str, threads: int) -> TaskResult:
    if threads != 1:
        return run_task_in_worker(run)
    try:
        log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError:
        return run_task_in_worker(run)
    with (
        log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        return run_task_in_worker(run)


def _probe_storage(folder: str, check_file: str, token: str) -> str | None:
    """Return None if ``folder`` holds the kernel's check file, else the problem."""
    path = Path(folder)
    if not path.is_dir():
        return f"the folder {folder} does not exist on this worker"
    try:
        content = (path / check_file).read_text(encoding="utf-8")
    except OSError:
        return (
            f"the folder {folder} exists on this worker but is not the kernel's "
            "folder: a check file that the kernel wrote into it is missing"
        )
    if content != token:
        return f"the check file in {folder} has other content on this worker"
    probe = path / f"{check_file}.{os.getpid()}"
    try:
        probe.write_text(token, encoding="utf-8")
        probe.unlink()
    except OSError as error:
        return f"the folder {folder} is not writable on this worker ({error})"
    return None
