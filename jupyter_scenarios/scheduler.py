"""The scheduler: turns submissions into jobs and moves jobs through their statuses.

Data flow::

    submit(entity)                         any thread
      -> Submission + one Job per task     outputs locked
      -> command queue                     _Command("submit", ...)
    manager thread                         (development mode: the submitting thread)
      -> BLOCKED  while an input is unwritten or locked
      -> PENDING  in the ready queue, FIFO
      -> RUNNING  handed to the executor when it has a free slot
    executor (worker process)              reads inputs, calls the function,
                                           writes outputs to staging files
      -> on_finished(outcome)              back on the command queue
    manager thread
      -> commit staged outputs, record the edit, unlock the outputs
      -> COMPLETED / FAILED / CANCELED, downstream ABANDONED on failure or cancel
      -> release BLOCKED jobs whose inputs are now ready, dispatch again
      -> publish events                    widgets and callbacks follow them

One thread owns the scheduling state (``_blocked``, ``_ready``, ``_running`` and the
``_waiting_on`` index). In standalone and dask modes it is the manager thread, which
sleeps on the command queue and wakes for each command: there is no polling. In
development mode there is no manager thread: the thread that submits drains the
commands itself, one at a time, under ``_drain_lock``, so a chain of any length runs
iteratively before ``submit`` returns.

Decisions:
- submit() returns once the new submission, its jobs and the locks of their outputs
  are in the store. In standalone and dask modes the manager thread writes them,
  with the jobs' first status changes, after it has handed the first jobs to the
  executor; in development mode submit() writes them before any job runs.
- Two jobs never write the same data node at once: a ready job whose output another
  RUNNING job is writing stays PENDING until that job ends.
- A RUNNING job is cancelled by killing its worker process (standalone). In
  development mode a running job cannot be stopped, and ``cancel_job`` logs a warning.
- ``stop()`` and interpreter exit cancel the jobs still running (their workers are
  killed) and mark the jobs not started as CANCELED, each with a reason, so nothing is
  left RUNNING in the store and no worker process outlives the kernel.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import logging
import os
import queue
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from .config.sections import JobConfig
from .entities import DataNode, Job, Scenario, Sequence, Submission, Task
from .entities._base import (
    SCHEDULER_THREAD_NAME,
    check_wait_allowed,
    checked_timeout,
    why_missing,
)
from .entities._values import check_storable
from .entities.scenario import ALL_SCENARIO_SUBSCRIBERS
from .enums import FINAL_STATUSES, EntityType, Status
from .events import Event, EventEntityType, EventOperation, bus
from .exceptions import (
    ConfigurationError,
    ModeNotAvailable,
    NonExistingDataNode,
    NonExistingTask,
    SubmissionTimeoutWarning,
    clause,
)
from .executors._worker_main import SPILL_NAME, move_spill
from .executors.base import Executor, JobOutcome
from .executors.development import INTERRUPTED_REASON
from .graph import topological_order
from .store import Store, is_process_alive, process_identity
from .worker import (
    CommitFailed,
    NodeSpec,
    StagedOutput,
    TaskRun,
    commit_staged,
    discard_staged,
    file_identity,
    notebook_code_files,
    notebook_sources,
)

logger = logging.getLogger(__name__)

_MAY_BLOCK = frozenset({Status.SUBMITTED, Status.BLOCKED})

#: How long cancel_job waits for the manager thread to apply a cancel, in seconds.
CANCEL_WAIT_SECONDS = 5.0

#: Maximum time, in seconds, that the manager thread keeps changes before writing
#: them to the store when commands keep arriving.
FLUSH_SECONDS = 0.05
#: Before it writes pending changes, the manager thread gives the executor one job
#: more than it has free slots for per WRITES_PER_EXTRA_JOB entities to write, and
#: at most EXTRA_JOBS_MAX more. The workers then keep busy during the write: a tiny
#: job takes about as long as writing 8 entities.
WRITES_PER_EXTRA_JOB = 6
EXTRA_JOBS_MAX = 64
#: While a job is BLOCKED, the manager thread checks this often, in seconds, whether
#: another process sharing the storage folder wrote one of its inputs.
OTHER_WRITES_CHECK_SECONDS = 0.5
#: How long submit waits for the manager thread to mark the new jobs PENDING or
#: BLOCKED, in seconds. Past it, submit returns with the jobs still SUBMITTED.
SCHEDULE_WAIT_SECONDS = 5.0


@dataclasses.dataclass
class _Command:
    kind: str
    payload: Any = None
    #: Set once the command has been handled, for callers that wait on it.
    done: threading.Event | None = None


class _SubmitContext:
    """The context of one submission's jobs, captured when it was submitted.

    Worker processes run the jobs in the kernel's working directory and with its
    import path as they were at submit time. The notebook source lines of each task
    function are looked up once per submission rather than once per job.
    """

    def __init__(self, cwd: str, sys_path: tuple[str, ...]) -> None:
        self.cwd = cwd
        self.sys_path = sys_path
        # id of a function -> (the function, its cell sources, its cell file names)
        self._code: dict[
            int, tuple[Callable[..., Any], dict[str, list[str]], dict[str, str]]
        ] = {}

    def notebook_code(
        self, function: Callable[..., Any]
    ) -> tuple[dict[str, list[str]], dict[str, str]]:
        """Return ``notebook_sources`` and ``notebook_code_files`` of ``function``."""
        cached = self._code.get(id(function))
        if cached is None or cached[0] is not function:
            cached = (
                function,
                notebook_sources(function),
                notebook_code_files(function),
            )
            self._code[id(function)] = cached
        return cached[1], cached[2]


def make_executor(job_config: JobConfig) -> Executor:
    """Build the executor for ``job_config.mode``."""
    mode = job_config.mode
    if mode == "development":
        from .executors.development import DevelopmentExecutor

        return DevelopmentExecutor()
    if mode == "standalone":
        from .executors.standalone import StandaloneExecutor

        return StandaloneExecutor(job_config.max_nb_of_workers)
    if mode == "dask":
        from .executors.dask import DaskExecutor

        return DaskExecutor(
            address=job_config.properties.get("dask_address"),
            n_workers=job_config.max_nb_of_workers,
        )
    raise ModeNotAvailable(
        f"Job execution mode {mode!r} is not available; use development, "
        "standalone or dask."
    )


class Scheduler:
    """Run the jobs of submissions with one executor; one instance per process."""

    def __init__(self, store: Store, job_config: JobConfig) -> None:
        self.store = store
        self.mode = job_config.mode
        self.executor = make_executor(job_config)
        self.owner = process_identity()

        # Commands from any thread to the thread that owns the state below.
        self._commands: queue.SimpleQueue[_Command] = queue.SimpleQueue()
        # Development mode: held by the thread draining the commands.
        self._drain_lock = threading.RLock()
        self._draining = threading.local()

        # Scheduling state, touched only by the owning thread (see module docstring).
        self._blocked: dict[str, Job] = {}
        # When _check_other_writes runs next (time.monotonic()), and the store's
        # data_version it saw last.
        self._next_other_check = 0.0
        self._other_version: int | None = None
        self._ready: collections.deque[Job] = collections.deque()
        self._running: dict[str, Job] = {}
        self._waiting_on: dict[str, set[str]] = collections.defaultdict(set)
        self._staged: dict[str, TaskRun] = {}
        # Submission id -> input data node id -> that submission's jobs reading it,
        # for abandoning downstream jobs without scanning the whole submission.
        self._consumers: dict[str, dict[str, list[Job]]] = {}
        # Output data node id -> the RUNNING job writing it; two jobs never write
        # the same data node at once.
        self._writing: dict[str, str] = {}
        # Submission id -> what jobs of unfinished submissions run with.
        self._contexts: dict[str, _SubmitContext] = {}
        # Submissions whose jobs changed status during the current round of
        # commands; their status is derived once at the end of it (see _round).
        self._touched: set[str] | None = None
        # Writes to the store that failed in a row (see _flush).
        self._flush_failures = 0
        # Submissions whose jobs all finished, whose waiters the manager thread lets
        # go after its next write (see _refresh_submissions).
        self._finishing: list[Submission] = []
        # The same for jobs that reached a final status, and whether a thread
        # waits on one of them.
        self._finishing_jobs: list[Job] = []
        self._waited_on = False

        #: Functions called with each new submission on the submitting thread, before
        #: any waiting; the notebook layer uses this to display progress widgets.
        self.submit_hooks: list[Callable[[Submission], None]] = []
        #: Functions called on the waiting thread when submit(wait=True) returns;
        #: the notebook layer sends the widgets' final state from there, because
        #: headless runs keep only what a running cell sends.
        self.wait_hooks: list[Callable[[Submission], None]] = []

        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        # Set once "stop" was handled, and once the manager thread no longer reads
        # the command queue. Commands posted later go to _handle_leftovers.
        self._shut_down = False
        self._manager_done = False
        # Reentrant: a callback of a job cancelled there may submit again.
        self._leftover_lock = threading.RLock()
        self._subscriber = bus.subscribe(self._on_event)

    # -- life cycle -------------------------------------------------------------------

    @property
    def is_asynchronous(self) -> bool:
        return self.mode != "development"

    def start(self) -> None:
        """Reconcile the store, start the executor and, if asynchronous, the thread."""
        self.reconcile()
        self.executor.start(self._post_started, self._post_finished)
        if self.is_asynchronous:
            self._thread = threading.Thread(
                target=self._run_manager,
                name=SCHEDULER_THREAD_NAME,
                daemon=True,
            )
            self._thread.start()
        logger.info("Scheduler started: %s", self.executor.describe())

    def stop(self, wait: bool = True, timeout: float | None = None) -> None:
        """Stop the scheduler; see the module docstring for what happens to jobs.

        With ``wait``, give running jobs up to ``timeout`` seconds (None: no limit)
        to finish before cancelling the rest.
        """
        if self._stopped.is_set():
            return
        if wait:
            self._wait_for_running(timeout)
        done = threading.Event()
        self._post(_Command("stop", done=done))
        if self._thread is not None:
            done.wait(30.0)
            self._thread.join(30.0)
        self._stopped.set()
        bus.unsubscribe(self._subscriber)

    def _wait_for_running(self, timeout: float | None) -> None:
        # A job that finishes can release blocked jobs, which then start. So the
        # running and ready jobs are listed again after each one finishes, once the
        # manager thread has handled every command posted before ("sync").
        if self._on_owner_thread():
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return
            if self._thread is not None:
                synced = threading.Event()
                self._post(_Command("sync", done=synced))
                synced.wait(30.0 if remaining is None else remaining)
            unfinished = [
                job
                for job in list(self._running.values()) + list(self._ready)
                if not job.is_finished()
            ]
            if not unfinished:
                return
            remaining = None if deadline is None else deadline - time.monotonic()
            unfinished[0].wait(remaining)

    # -- public entry points (any thread) ---------------------------------------------

    def submit(
        self,
        entity: Scenario | Sequence | Task,
        *,
        callbacks: list[Callable[..., Any]] | None = None,
        force: bool = False,
        wait: bool = False,
        timeout: float | None = None,
        **properties: Any,
    ) -> Submission:
        """Create the jobs of ``entity`` and queue them; see ``api.submit``."""
        if self._stopped.is_set():
            raise RuntimeError(
                "The orchestrator was stopped; call tp.Orchestrator().run() before "
                "submitting again."
            )
        timeout = checked_timeout(timeout)
        if wait and self.is_asynchronous:
            check_wait_allowed(f"a submission of {entity.id}", timeout)
        tasks = self._tasks_of(entity)
        self._check_runnable(entity, tasks)
        _check_storable(properties)

        # The manager thread writes the new entities with the jobs' first changes,
        # after it has started the first of them, and before submit returns (see
        # _run_manager). Any other caller writes them here.
        hand_over = self.is_asynchronous and not self._on_owner_thread()
        # An interrupt while the jobs are created stores none of them: stored jobs
        # that the scheduler never got would stay SUBMITTED for good.
        with (
            self.store.handover_batch()
            if hand_over
            else self.store.batch(all_or_nothing=True) as writes
        ):
            submission = self._create_submission(entity, properties)
            # Every task of a scenario or sequence belongs to its scenario.
            job_callbacks = (
                self._job_callbacks(tasks[0], entity, callbacks) if tasks else []
            )
            cwd = os.getcwd()
            jobs = [
                self._create_job(task, submission, entity, force, job_callbacks, cwd)
                for task in tasks
            ]
            submission._add_jobs(jobs)
        scheduled = threading.Event()
        posted = False
        try:
            bus.publish(
                Event(
                    _entity_event_type(entity),
                    EventOperation.SUBMISSION,
                    entity.id,
                    metadata={
                        "submission_id": submission.id,
                        "job_ids": submission.job_ids,
                    },
                )
            )
            for hook in list(self.submit_hooks):
                try:
                    hook(submission)
                except Exception:
                    logger.exception(
                        "Submit hook %r failed for %s", hook, submission.id
                    )
            context = _SubmitContext(os.getcwd(), tuple(sys.path))
            self._post(
                _Command("submit", (submission, jobs, context, writes), scheduled)
            )
            posted = True
            if not self._on_owner_thread():
                # As in Taipy, submit returns with each job PENDING or BLOCKED (or
                # further along), not SUBMITTED.
                scheduled.wait(SCHEDULE_WAIT_SECONDS)
        finally:
            if writes is not None and not scheduled.is_set():
                if posted:
                    self._write_unscheduled(submission, writes, posted)
                else:
                    # An exception or an interrupt came before the scheduler got the
                    # jobs: store none of them.
                    self.store.undo(writes)
        if wait:
            self.wait(submission, timeout)
            for wait_hook in list(self.wait_hooks):
                try:
                    wait_hook(submission)
                except Exception:
                    logger.exception(
                        "Wait hook %r failed for %s", wait_hook, submission.id
                    )
        return submission

    def _write_unscheduled(
        self, submission: Submission, writes: dict[str, Any], posted: bool
    ) -> None:
        """Write a submission that the manager thread did not store in time.

        That thread is busier than SCHEDULE_WAIT_SECONDS, has stopped, or never got
        the submission. It may write the same entities later, which does no harm.
        """
        try:
            self.store.write_handed_over(writes, now=True)
        except Exception:
            if not posted:
                raise
            # The jobs run all the same, so submit() must not raise.
            logger.exception(
                "Writing submission %s failed; the scheduler thread writes it with "
                "its next changes",
                submission.id,
            )

    def wait(
        self,
        submission: Submission,
        timeout: float | None = None,
        *,
        reported_timeout: float | None = None,
    ) -> bool:
        """Block until every job of ``submission`` ends or ``timeout`` seconds pass.

        Returns whether it finished. A timeout logs a warning naming the submission
        and the jobs still unfinished. An interrupt (the kernel's stop button) stops
        the waiting, not the jobs, and the error message states that.

        ``reported_timeout`` is the timeout that the warning names in place of
        ``timeout``: ``wait_all`` passes what its caller gave, and the time left of
        it as ``timeout``.
        """
        timeout = checked_timeout(timeout)
        if not self.is_asynchronous and not submission.is_finished():
            # Development mode ran every runnable job before submit returned. The
            # rest is BLOCKED on inputs only a person can write, so a wait never ends.
            blocked = [job for job in submission.jobs if job.is_blocked()]
            if blocked:
                jobs = (
                    "1 BLOCKED job"
                    if len(blocked) == 1
                    else f"{len(blocked)} BLOCKED jobs"
                )
                warnings.warn(
                    f"Submission {submission.id} has {jobs} "
                    f"({', '.join(job.task_config_id for job in blocked[:5])}) waiting "
                    "for inputs that are not written; write those data nodes and the "
                    "jobs run.",
                    stacklevel=_caller_level(),
                )
                return False
        if self.is_asynchronous:
            check_wait_allowed(submission.id, timeout)
            self._warn_if_stuck(submission)
        try:
            finished = submission.wait(timeout)
        except KeyboardInterrupt:
            unfinished_ids = [
                job.id for job in submission.jobs if not job.is_finished()
            ]
            unfinished_jobs = (
                "1 unfinished job keeps"
                if len(unfinished_ids) == 1
                else f"{len(unfinished_ids)} unfinished jobs keep"
            )
            from ._environment import is_kernel

            if is_kernel():
                then = (
                    "Cancel them with tp.cancel_job(job) or %cancel if they should "
                    "stop."
                )
            else:
                # A script that goes on from here ends its jobs when it exits.
                then = (
                    "Cancel them with tp.cancel_job(job), or wait again: the "
                    "script cancels them when it exits."
                )
            raise _WaitInterrupted(
                f"Stopped waiting for submission {submission.id}; its "
                f"{unfinished_jobs} running. {then}"
            ) from None
        if not finished:
            unfinished = [job for job in submission.jobs if not job.is_finished()]
            if unfinished:
                listed = ", ".join(
                    f"{job.id} {job.status.name}" for job in unfinished[:5]
                )
                total = len(submission.job_ids)
                verb = "is" if len(unfinished) == 1 else "are"
                if any(job.is_running() for job in unfinished):
                    going_on = "They keep running"
                elif all(job.is_blocked() for job in unfinished):
                    going_on = "They stay BLOCKED until their inputs are written"
                else:
                    going_on = "They stay queued and run when a worker is free"
                state = (
                    f"{len(unfinished)} of {total} job{'' if total == 1 else 's'} "
                    f"{verb} not finished ({listed}). {going_on}"
                )
            elif len(submission.job_ids) == 1:
                # Finished in memory; the scheduler thread has not written it yet.
                state = "its job has finished, but its final status is not stored yet"
            else:
                state = (
                    f"its {len(submission.job_ids)} jobs have finished, but their "
                    "final statuses are not stored yet"
                )
            named_timeout = (
                reported_timeout if reported_timeout is not None else timeout
            )
            message = (
                f"Waiting for submission {submission.id} timed out after "
                f"{named_timeout:g} s; {state}: wait again with submission.wait() or look at tp.get_jobs()."
            )
            logger.warning("%s", message)
            # Also a Python warning, which notebooks and scripts show even when
            # logging is not configured; this runs on the waiting thread.
            warnings.warn(message, SubmissionTimeoutWarning, stacklevel=_caller_level())
        return finished

    def _warn_if_stuck(self, submission: Submission) -> None:
        # A BLOCKED job whose missing input no job of its submission will write
        # waits for a person or another submission, so warn before waiting for it.
        jobs = submission.jobs
        produced = {
            node_id
            for job in jobs
            if not job.is_finished()
            for node_id in job.task.output_ids
        }
        stuck = []
        # Reading last_edit_date runs an SQLite query under the store's lock, to see
        # other processes' commits. So the query runs once for all nodes, and only
        # nodes that no job will write are read. In a diamond of 200 jobs, 360
        # such queries slowed the scheduler thread, which needs the same lock.
        with self.store.pinned_version():
            for job in jobs:
                # SUBMITTED: the scheduler thread has not got to the job yet.
                if job.status not in _MAY_BLOCK:
                    continue
                for node in job.task.input.values():
                    if node.id not in produced and node.last_edit_date is None:
                        stuck.append(f"{job.task_config_id} needs {node.config_id}")
        if stuck:
            message = (
                f"Submission {submission.id} waits for data nodes that none of its "
                f"jobs will write ({', '.join(stuck[:5])}); write them, cancel its jobs "
                "(%cancel --all in a notebook, tp.cancel_job(job) in Python), or "
                "interrupt the wait. Without a timeout it waits until they are written."
            )
            logger.warning("%s", message)
            warnings.warn(message, stacklevel=_caller_level())

    def cancel(self, job: Job) -> None:
        """Cancel ``job`` and abandon the jobs downstream of it in its submission.

        Raises RuntimeError if another live process (a kernel sharing the storage
        folder) runs the job: only that process can stop it, and it would overwrite
        a status written here.
        """
        owner = job._owner
        if owner is not None and owner != self.owner and is_process_alive(owner):
            pid = owner.partition(":")[0]
            raise RuntimeError(
                f"Job {job.id} is run by another process (pid {pid}) that shares the "
                f"storage folder {self.store.folder}; cancel it from that process."
            )
        if job.is_finished():
            logger.info(
                "Job %s is already %s; nothing to cancel", job.id, job.status.name
            )
            return
        if job.is_running() and not self.is_asynchronous:
            logger.warning(
                "Job %s runs in the kernel (development mode) and cannot be stopped "
                "from outside; it will finish normally.",
                job.id,
            )
            return
        done = threading.Event()
        self._post(_Command("cancel", job.id, done=done))
        if not self._on_owner_thread():
            done.wait(CANCEL_WAIT_SECONDS)
            job.wait(CANCEL_WAIT_SECONDS)

    # -- submission building -------------------------------------------------------------

    def _tasks_of(self, entity: Scenario | Sequence | Task) -> list[Task]:
        if isinstance(entity, Task):
            return [entity]
        tasks = []
        for task_id in entity.task_ids:
            task = self.store.get(task_id)
            if task is None:
                raise NonExistingTask(
                    f"Task {task_id!r} of {entity.id!r} does not exist in the store; "
                    + why_missing(entity, self.store, "Create the scenario again.")
                )
            tasks.append(task)
        return topological_order(tasks, entity.id)  # type: ignore[return-value]

    def _check_runnable(self, entity: Any, tasks: list[Task]) -> None:
        for task in tasks:
            for role, node_ids in (
                ("input", task.input_ids),
                ("output", task.output_ids),
            ):
                for node_id in node_ids:
                    if self.store.get(node_id) is None:
                        raise NonExistingDataNode(
                            f"Data node {node_id!r}, an {role} of task "
                            f"{task.config_id!r} ({task.id}) in {entity.id!r}, was "
                            "deleted, so the task cannot run. Create a new scenario "
                            "with tp.create_scenario() to run this task."
                        )
        shares_memory = self.executor.shares_kernel_memory
        for task in tasks:
            for node in task.data_nodes.values():
                if node.storage_type == "in_memory" and not shares_memory:
                    raise ConfigurationError(
                        f"Data node {node.config_id!r} of {entity.id!r} uses in_memory "
                        f"storage, which lives in the kernel and cannot be read by the "
                        f"worker processes of {self.mode} mode. Use pickle storage (the "
                        "default) for it, or run in development mode."
                    )
        # Only the submission's own inputs must exist now. A file written by a task of
        # the same submission is missing until that task runs.
        # Each input is checked once, however many tasks read it.
        checked = {node_id for task in tasks for node_id in task.output_ids}
        for task in tasks:
            for node in task.input.values():
                if node.id in checked:
                    continue
                checked.add(node.id)
                if node.storage_type in ("pickle", "in_memory", "generic"):
                    continue
                path = node.path
                if path is not None and not path.exists():
                    logger.warning(
                        "Input %s (%s) of task %s reads %s, which does not exist",
                        node.config_id,
                        node.id,
                        task.config_id,
                        path,
                    )

    def _create_submission(
        self, entity: Scenario | Sequence | Task, properties: dict[str, Any]
    ) -> Submission:
        if isinstance(entity, Scenario):
            kind, config_id = EntityType.SCENARIO, entity.config_id
        elif isinstance(entity, Sequence):
            kind, config_id = EntityType.SEQUENCE, None
        else:
            kind, config_id = EntityType.TASK, entity.config_id
        submission = Submission(
            self.store,
            entity_id=entity.id,
            entity_type=kind,
            entity_config_id=config_id,
            properties=properties,
        )
        submission._save()
        bus.publish(
            Event(EventEntityType.SUBMISSION, EventOperation.CREATION, submission.id)
        )
        return submission

    def _create_job(
        self,
        task: Task,
        submission: Submission,
        entity: Scenario | Sequence | Task,
        force: bool,
        callbacks: list[Callable[..., Any]],
        cwd: str,
    ) -> Job:
        job = Job(
            self.store,
            task=task,
            submit_id=submission.id,
            submit_entity_id=entity.id,
            force=force,
        )
        job._owner = self.owner
        job._cwd = cwd
        job._subscribers.extend(callbacks)
        for node in task.output.values():
            node.lock_edit()
        job._save()
        bus.publish(
            Event(
                EventEntityType.JOB,
                EventOperation.CREATION,
                job.id,
                metadata={"submit_id": submission.id, "task_config_id": task.config_id},
            )
        )
        return job

    def _job_callbacks(
        self,
        task: Task,
        entity: Scenario | Sequence | Task,
        callbacks: list[Callable[..., Any]] | None,
    ) -> list[Callable[..., Any]]:
        """Return the callbacks of a job of ``task``: submit's, then its scenario's."""
        scenario = self._scenario_of(task, entity)
        if scenario is None:
            return list(callbacks or ())
        return [
            *(callbacks or ()),
            *(
                _ScenarioCallback(callback, params, scenario)
                for callback, params in [
                    *ALL_SCENARIO_SUBSCRIBERS,
                    *scenario._subscribers,
                ]
            ),
        ]

    def _scenario_of(self, task: Task, entity: Any) -> Scenario | None:
        if isinstance(entity, Scenario):
            return entity
        if isinstance(entity, Sequence):
            return entity.scenario
        owner = self.store.get(task.owner_id) if task.owner_id else None
        return owner if isinstance(owner, Scenario) else None

    # -- the command loop ------------------------------------------------------------------

    def _post(self, command: _Command) -> None:
        self._commands.put(command)
        if not self.is_asynchronous:
            self._drain()
        elif self._manager_done:
            self._handle_leftovers()

    def _post_started(
        self, job_id: str, pid: int | None, started_at: float | None = None
    ) -> None:
        self._post(_Command("started", (job_id, pid, started_at)))

    def _post_finished(self, outcome: JobOutcome) -> None:
        self._post(_Command("finished", outcome))

    def _on_owner_thread(self) -> bool:
        if self._thread is not None:
            return threading.current_thread() is self._thread
        return bool(getattr(self._draining, "active", False))

    def _drain(self) -> None:
        # Development mode: the first caller on the stack drains; nested posts (from
        # the executor finishing a job, or a callback submitting) only enqueue.
        if getattr(self._draining, "active", False):
            return
        with self._drain_lock:
            self._draining.active = True
            try:
                # One batch for the whole drain: each job's changes are written
                # when the next job starts (see _start) and at the end.
                with self.store.batch():
                    while True:
                        try:
                            command = self._commands.get_nowait()
                        except queue.Empty:
                            break
                        try:
                            with self._round():
                                self._handle(command)
                                self._dispatch()
                        except KeyboardInterrupt:
                            self._settle_interrupted_drain()
                            raise
            finally:
                self._draining.active = False

    def _settle_interrupted_drain(self) -> None:
        """Settle what a kernel interrupt stopped in development mode.

        The executor queued the interrupted job's outcome before the interrupt
        reached here: apply it, and cancel the jobs that were about to run in this
        call, so that none stays PENDING with nothing left to run it. BLOCKED jobs
        stay BLOCKED, or become ABANDONED when they depended on the interrupted one.
        """
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                break
            with self._round():
                self._handle(command)
        with self._round():
            # The interrupt may also have come between the executor's report and
            # the job's settling; no job runs any more in this thread.
            for job in list(self._running.values()):
                self._running.pop(job.id, None)
                self._staged.pop(job.id, None)
                for node_id, writer in list(self._writing.items()):
                    if writer == job.id:
                        del self._writing[node_id]
                if not job.is_finished():
                    self._cancel_now(job, INTERRUPTED_REASON)
            while self._ready:
                job = self._ready.popleft()
                if not job.is_finished():
                    self._cancel_now(
                        job, "cancelled: the kernel was interrupted before it ran"
                    )

    def _run_manager(self) -> None:
        # One batch stays open while the thread runs: the changes of many commands
        # are written in one transaction, at most FLUSH_SECONDS after the first of
        # them, or at once when no job is running or ready. A kill loses at most
        # that window, and the store stays consistent.
        with self.store.batch():
            first_unwritten: float | None = None
            while True:
                if self._blocked and time.monotonic() >= self._next_other_check:
                    changed = self._check_other_writes()
                    if changed and first_unwritten is None:
                        first_unwritten = time.monotonic()
                timeout = None
                if first_unwritten is not None:
                    timeout = max(
                        0.0, first_unwritten + FLUSH_SECONDS - time.monotonic()
                    )
                if self._blocked:
                    until_check = max(0.0, self._next_other_check - time.monotonic())
                    timeout = (
                        until_check if timeout is None else min(timeout, until_check)
                    )
                try:
                    command = self._commands.get(timeout=timeout)
                except queue.Empty:
                    if first_unwritten is not None:
                        first_unwritten = self._flush()
                    continue
                batch = [command]
                while True:
                    try:
                        batch.append(self._commands.get_nowait())
                    except queue.Empty:
                        break
                if first_unwritten is None:
                    first_unwritten = time.monotonic()
                # A submission's new entities are written before submit returns.
                flush_due = any(item.kind == "submit" for item in batch) or (
                    time.monotonic() - first_unwritten >= FLUSH_SECONDS
                )
                stop = self._handle_batch(batch, flush_due)
                idle = not self._running and not self._ready
                if stop or idle or flush_due or self._finishing or self._waited_on:
                    first_unwritten = self._flush()
                for item in batch:
                    if item.done is not None:
                        item.done.set()
                if stop:
                    self._manager_done = True
                    self._handle_leftovers()
                    return

    def _check_other_writes(self) -> bool:
        """Release the BLOCKED jobs whose inputs another process has written.

        No event reaches this process when a kernel sharing the storage folder
        writes a data node, so the manager thread looks for other connections'
        commits every OTHER_WRITES_CHECK_SECONDS while a job is BLOCKED. Returns
        whether a job changed.
        """
        self._next_other_check = time.monotonic() + OTHER_WRITES_CHECK_SECONDS
        version = self.store.data_version()
        if version == self._other_version:
            return False
        self._other_version = version
        blocked = len(self._blocked)
        with self._round():
            self._release(list(self._waiting_on))
            self._dispatch()
        return len(self._blocked) != blocked

    def _handle_leftovers(self) -> None:
        """Handle the commands posted after "stop": cancel their jobs, release waiters.

        Runs on the manager thread as it ends, then on any thread that posts later.
        """
        with self._leftover_lock:
            while True:
                try:
                    command = self._commands.get_nowait()
                except queue.Empty:
                    return
                if command.kind == "submit":
                    with self._round():
                        self._handle(command)
                    self._flush()
                if command.done is not None:
                    command.done.set()

    def _flush(self) -> float | None:
        """Write the pending changes, then let go the waiters of what finished.

        Returns None, or after a failure the time (``time.monotonic()``) to count
        FLUSH_SECONDS from before the next try. The changes stay pending, and this
        thread goes on: if it ended, no job would ever finish.
        """
        try:
            self.store.flush()
        except Exception:  # noqa: BLE001 - logged; any error leaves them pending
            retry_from: float | None = self._count_failed_flush()
        else:
            retry_from = None
            if self._flush_failures:
                logger.warning(
                    "Wrote the pending job changes to %s after %d failed tries",
                    self.store.path,
                    self._flush_failures,
                )
                self._flush_failures = 0
        # Even after a failed write: a waiter must not wait for ever.
        for job in self._finishing_jobs:
            job._signal_finished()
        for submission in self._finishing:
            submission._signal_finished()
        self._finishing_jobs.clear()
        self._finishing.clear()
        self._waited_on = False
        return retry_from

    def _count_failed_flush(self) -> float:
        """Log the first failure in a row and return when the next try starts.

        The result is a ``time.monotonic()`` value to count FLUSH_SECONDS from. The
        wait doubles with each failure, up to 5 s."""
        if not self._flush_failures:
            logger.exception(
                "Writing job changes to %s failed; trying again", self.store.path
            )
        self._flush_failures += 1
        delay: float = min(FLUSH_SECONDS * 2.0**self._flush_failures, 5.0)
        return time.monotonic() + delay - FLUSH_SECONDS

    def _handle_batch(self, batch: list[_Command], flush_due: bool = False) -> bool:
        stop = False
        with self._round():
            for item in batch:
                try:
                    self._handle(item)
                except Exception:
                    logger.exception("Scheduler failed to handle %s", item.kind)
                if item.kind == "stop":
                    stop = True
            if not stop:
                # This thread neither hears of finished jobs nor starts new ones
                # while it writes, about 12 us per entity. Without more jobs queued
                # in the executor, workers would wait for most of that time.
                extra = min(
                    self.store.pending_count() // WRITES_PER_EXTRA_JOB, EXTRA_JOBS_MAX
                )
                self._dispatch(extra if flush_due else 0)
        return stop

    @contextlib.contextmanager
    def _round(self) -> Iterator[None]:
        # A round handles commands and starts jobs. A submission whose jobs changed
        # status in the round gets its status derived once, at the end, rather than
        # three times per job. Data nodes read in the round check for another
        # process's commits once (Store.pinned_version).
        self._touched = set()
        try:
            with self.store.pinned_version():
                yield
        finally:
            touched, self._touched = self._touched, None
            self._refresh_submissions(sorted(touched))

    def _handle(self, command: _Command) -> None:
        if command.kind == "submit":
            submission, jobs, context, writes = command.payload
            self.store.write_handed_over(writes)
            if self._shut_down:
                # Posted after "stop": nothing runs any more.
                for job in jobs:
                    if not job.is_finished():
                        self._cancel_now(
                            job, "cancelled because the orchestrator stopped"
                        )
                self._touch(submission.id)
            else:
                self._contexts[submission.id] = context
                self._schedule(submission, jobs)
        elif command.kind == "started":
            job_id, pid, started_at = command.payload
            job = self._running.get(job_id)
            if job is not None:
                job._set_worker(pid)
                if job.status is Status.PENDING:
                    # The worker may have started it well before this thread heard
                    # of it, so the executor's start time is recorded when known.
                    when = (
                        None
                        if started_at is None
                        else datetime.fromtimestamp(started_at)
                    )
                    self._set_status(job, Status.RUNNING, when=when)
                    self._after_final(job)
        elif command.kind == "finished":
            self._finish(command.payload)
        elif command.kind == "cancel":
            self._cancel(command.payload)
        elif command.kind == "data_changed":
            self._release(command.payload)
        elif command.kind == "stop":
            self._shutdown()
        if not self.is_asynchronous and command.done is not None:
            command.done.set()

    # -- scheduling (owner thread) ------------------------------------------------------------

    def _schedule(self, submission: Submission, jobs: list[Job]) -> None:
        consumers: dict[str, list[Job]] = collections.defaultdict(list)
        for job in jobs:
            for node_id in job.task.input_ids:
                consumers[node_id].append(job)
        self._consumers[submission.id] = consumers
        # Workers of an asynchronous executor start on the first ready jobs while
        # this loop goes through the rest, which took about 10 ms per 1,000 jobs.
        early_start = self.is_asynchronous
        for job in jobs:
            if job.is_finished():
                # ABANDONED by an upstream job that failed in an early _dispatch.
                continue
            missing = self._unready_inputs(job)
            if missing:
                self._block(job, missing)
                continue
            self._set_status(job, Status.PENDING)
            self._ready.append(job)
            if early_start and len(self._ready) >= self.executor.free_slots():
                early_start = False
                self._dispatch()
        self._touch(submission.id)

    def _unready_inputs(self, job: Job) -> list[DataNode]:
        return [
            node for node in job.task.input.values() if not node.is_ready_for_reading
        ]

    def _block(self, job: Job, missing: list[DataNode]) -> None:
        if job.status is not Status.BLOCKED:
            self._set_status(job, Status.BLOCKED)
        self._blocked[job.id] = job
        for node in missing:
            self._waiting_on[node.id].add(job.id)

    def _release(self, node_ids: Iterable[str]) -> None:
        # Re-check the blocked jobs that wait on any of ``node_ids``.
        candidates: set[str] = set()
        for node_id in node_ids:
            candidates |= self._waiting_on.pop(node_id, set())
        for job_id in sorted(candidates):
            job = self._blocked.get(job_id)
            if job is None:
                continue
            missing = self._unready_inputs(job)
            if missing:
                for node in missing:
                    self._waiting_on[node.id].add(job.id)
                continue
            del self._blocked[job_id]
            self._set_status(job, Status.PENDING)
            self._ready.append(job)
            self._touch(job.submit_id)

    def _dispatch(self, extra: int = 0) -> None:
        # Each ready job is examined once per call. A job whose output another
        # RUNNING job is writing goes back to the queue until that job ends. An
        # asynchronous executor gets the jobs started here in one call at the end,
        # and ``extra`` jobs more than it has free slots for (see _handle_batch).
        deferred: list[Job] = []
        started: list[tuple[Job, TaskRun]] | None = [] if self.is_asynchronous else None
        try:
            while self._ready and (
                self.executor.free_slots() + extra > len(started or ())
            ):
                job = self._ready.popleft()
                if job.is_finished():
                    continue
                try:
                    self._dispatch_one(job, deferred, started)
                except Exception as error:
                    # An exception here would end the manager thread and leave every
                    # later submission SUBMITTED; fail only this job instead.
                    logger.exception("Job %s could not be dispatched", job.id)
                    self._running.pop(job.id, None)
                    self._staged.pop(job.id, None)
                    for node_id, writer in list(self._writing.items()):
                        if writer == job.id:
                            del self._writing[node_id]
                    self._set_status(
                        job, Status.FAILED, reason=f"dispatching it failed: {error!r}"
                    )
                    self._after_final(job)
        finally:
            self._ready.extendleft(reversed(deferred))
            if started:
                self._execute(started)

    def _dispatch_one(
        self,
        job: Job,
        deferred: list[Job],
        started: list[tuple[Job, TaskRun]] | None,
    ) -> None:
        if any(node_id in self._writing for node_id in job.task.output_ids):
            deferred.append(job)
            return
        if self._can_skip(job):
            self._set_status(job, Status.SKIPPED)
            self._unlock_outputs(job)
            self._after_final(job)
            return
        self._start(job, started)

    def _can_skip(self, job: Job) -> bool:
        task = job.task
        if job.force or not task.skippable:
            return False
        outputs = [self.store.get(node_id) for node_id in task.output_ids]
        if not outputs:
            return False
        for node in outputs:
            if node is None or not node.is_valid:
                return False
        # The loop above returned unless every output exists.
        oldest_output = min(node.last_edit_date for node in outputs if node is not None)
        for node in task.input.values():
            if node.last_edit_date is not None and node.last_edit_date > oldest_output:
                return False
        return True

    def _start(self, job: Job, started: list[tuple[Job, TaskRun]] | None) -> None:
        """Prepare ``job`` and run it now, or add it to ``started`` for _execute."""
        task = job.task
        context = self._contexts.get(job.submit_id)
        if context is None:  # its submission was deleted or the scheduler stopped
            context = _SubmitContext(os.getcwd(), tuple(sys.path))
        try:
            function = task.function
            sources, code_files = context.notebook_code(function)
            run = TaskRun(
                job_id=job.id,
                task_config_id=task.config_id,
                function=function,
                inputs=tuple(self._spec(node) for node in task.input.values()),
                outputs=tuple(self._spec(node) for node in task.output.values()),
                sources=sources,
                code_files=code_files,
                submit_id=job.submit_id,
                cwd=context.cwd,
                sys_path=context.sys_path,
            )
        except Exception as error:
            logger.exception("Job %s could not be prepared", job.id)
            self._fail(job, [f"{type(error).__name__}: {error}\n"], str(error))
            return
        if not self.is_asynchronous:
            self._set_status(job, Status.RUNNING)
        # Asynchronous executors may queue the job behind a busy worker; it stays
        # PENDING until the executor reports that a worker started it.
        self._running[job.id] = job
        self._staged[job.id] = run
        for node_id in task.output_ids:
            self._writing[node_id] = job.id
        self._touch(job.submit_id)
        if started is not None:
            started.append((job, run))
            return
        # The job runs in this thread now. Store RUNNING first, so another process
        # reads it and a crash during the job is reconciled as FAILED.
        self.store.flush()
        self._execute([(job, run)])

    def _execute(self, started: list[tuple[Job, TaskRun]]) -> None:
        try:
            self.executor.execute_many([(run, job.log_path) for job, run in started])
            if self.is_asynchronous:
                # The executor's own thread sends the jobs, but this thread holds the
                # interpreter lock and often goes on with work that needs it
                # (scheduling the rest of a submission, building rows to write). A
                # waiting thread gets the lock only after the switch interval (5 ms):
                # the first job of a fan-out of 200 started 6 ms after this call.
                # Sleeping releases the lock at once; then it started after 1 ms.
                time.sleep(0)
        except Exception as error:
            logger.exception(
                "Executor failed to start %s", ", ".join(job.id for job, _ in started)
            )
            for job, _ in started:
                self._running.pop(job.id, None)
                self._fail(job, [f"{type(error).__name__}: {error}\n"], str(error))

    def _spec(self, node: DataNode) -> NodeSpec:
        return NodeSpec(
            id=node.id,
            config_id=node.config_id,
            storage_type=node.storage_type,
            properties=dict(node.properties),
            folder=str(self.store.data_folder),
        )

    def _finish(self, outcome: JobOutcome) -> None:
        job = self._running.pop(outcome.job_id, None)
        run = self._staged.pop(outcome.job_id, None)
        for spec in run.outputs if run is not None else ():
            if self._writing.get(spec.id) == outcome.job_id:
                del self._writing[spec.id]
        if job is None:
            if outcome.result is not None:
                discard_staged(outcome.result.outputs)
            return
        if outcome.worker_pid is not None and job.worker_pid is None:
            job._set_worker(outcome.worker_pid)
        result = outcome.result
        if result is None and run is not None:
            # A worker that died or was killed while writing leaves its staging
            # files half-written.
            self._discard_staging_of(run)
        if outcome.cancelled:
            if result is not None:
                discard_staged(result.outputs)
            if outcome.cancel_reason is not None:
                reason = outcome.cancel_reason
            elif job.is_running():
                reason = "cancelled while running; its worker was stopped"
            else:
                # It was queued behind a busy worker and never started.
                reason = "cancelled before it started"
            self._cancel_now(job, reason)
            return
        if result is None:
            reason = outcome.error or "the worker returned no result"
            self._fail(job, [reason + "\n"], reason)
            return
        when = None
        if outcome.finished_at is not None:
            when = datetime.fromtimestamp(outcome.finished_at)
        if not result.ok:
            self._fail(job, result.errors, result.summary, when=when)
            return
        # refresh() reads a row that another kernel changed, and returns False
        # for one it deleted; the identity map alone would not know.
        deleted = [
            output.node_id
            for output in result.outputs
            if (node := self.store.get(output.node_id)) is None
            or not self.store.refresh(node)
        ]
        if deleted:
            # Committing would write a file that no data node reads.
            discard_staged(result.outputs)
            reason = (
                f"output data node {', '.join(deleted)} of task "
                f"{job.task_config_id} was deleted while the job ran, so its result "
                "was discarded"
            )
            self._fail(job, [reason + "\n"], reason, when=when)
            return
        try:
            written = self._commit_outputs(job, result)
        except CommitFailed as failure:
            discard_staged(result.outputs)
            reason = self._commit_failure_reason(job, failure, result.outputs)
            self._fail(job, [reason + "\n"], reason)
            return
        # The producer is COMPLETED before any consumer it unblocks turns PENDING.
        # The executor's end time (``when``) matches the start time of the job that
        # its worker started next (see the "started" command).
        self._set_status(job, Status.COMPLETED, when=when)
        self._release(written)
        self._after_final(job)

    def _commit_outputs(self, job: Job, result: Any) -> list[str]:
        commit_staged(result.outputs, job.id, str(self._commit_journal(job.id)))
        written: list[str] = []
        for output in result.outputs:
            node = self.store.get(output.node_id)
            if node is not None:
                node._record_edit(job_id=job.id)
                node._unlock()
                written.append(node.id)
        return written

    def _commit_journal(self, job_id: str) -> Path:
        """Return the file in which the commit of ``job_id`` lists its outputs."""
        return self.store.folder / f".commit.{job_id}.json"

    def _commit_failure_reason(
        self, job: Job, failure: CommitFailed, outputs: list[StagedOutput]
    ) -> str:
        error = failure.error
        final = failure.output.final_path
        if isinstance(error, IsADirectoryError):
            advice = f"{final} is a folder: give the data node the path of a file."
        else:
            advice = (
                f"Check that {os.path.dirname(str(final))} exists and can be written."
            )
        # Generic and in_memory outputs are written in place before the commit.
        # Other outputs stay changed when their earlier file could not be kept
        # (see commit_staged).
        changed = failure.changed + [
            output.node_id for output in outputs if output.staged_path is None
        ]
        if changed:
            names = ", ".join(repr(self._node_name(node_id)) for node_id in changed)
            unchanged = (
                f"Output {names} keeps what the job wrote (written in place, or "
                "its earlier file could not be kept); the others are unchanged."
            )
        else:
            unchanged = "No output of the job changed."
        return (
            f"committing output {self._node_name(failure.output.node_id)!r} "
            f"({failure.output.node_id}) of task {job.task_config_id!r} failed: "
            f"{type(error).__name__}: {clause(error)}. {unchanged} {advice}"
        )

    def _node_name(self, node_id: str) -> str:
        node = self.store.get(node_id)
        return node.config_id if node is not None else node_id

    # _fail and _cancel_now abandon the downstream jobs and unlock the outputs before
    # they set the job's own final status, so that a thread woken by that status finds
    # them settled.

    def _fail(
        self,
        job: Job,
        stacktrace: list[str],
        summary: str,
        when: datetime | None = None,
    ) -> None:
        job._stacktrace = list(stacktrace)
        self._abandon_downstream(job)
        self._unlock_outputs(job)
        self._set_status(job, Status.FAILED, reason=summary, when=when)
        logger.error("Job %s failed: %s", job.id, summary)
        self._after_final(job)

    def _cancel(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job is None or job.is_finished():
            return
        if job.id in self._running:
            # Handed to the executor: running, or queued behind a busy worker.
            if self.executor.cancel(job.id):
                return  # The executor reports the outcome; _finish applies it.
            logger.warning("Job %s could not be stopped by %s", job.id, self.mode)
            return
        self._cancel_now(job, "cancelled before it started")

    def _cancel_now(self, job: Job, reason: str) -> None:
        self._blocked.pop(job.id, None)
        self._abandon_downstream(job)
        self._unlock_outputs(job)
        self._set_status(job, Status.CANCELED, reason=reason)
        self._after_final(job)

    def _abandon_downstream(self, job: Job) -> None:
        by_input = self._consumers.get(job.submit_id)
        if by_input is None:
            return
        frontier = list(job.task.output_ids)
        seen: set[str] = set()
        while frontier:
            node_id = frontier.pop()
            for other in by_input.get(node_id, []):
                if other.id in seen or other.id == job.id or other.is_finished():
                    continue
                seen.add(other.id)
                self._blocked.pop(other.id, None)
                self._set_status(
                    other,
                    Status.ABANDONED,
                    reason=f"upstream job {job.id} did not complete",
                )
                self._unlock_outputs(other)
                frontier.extend(other.task.output_ids)

    def _unlock_outputs(self, job: Job) -> None:
        released = []
        for node in job.task.output.values():
            if not self.store.refresh(node):
                continue  # deleted by another kernel: unlocking would store it again
            if node.edit_in_progress and node.editor_id is None:
                node._unlock()
                released.append(node.id)
        self._release(released)

    def _after_final(self, job: Job) -> None:
        self._touch(job.submit_id)

    def _touch(self, submission_id: str) -> None:
        """Derive the submission's status now, or at the end of the current round."""
        if self._touched is not None:
            self._touched.add(submission_id)
        else:
            self._refresh_submissions([submission_id])

    def _defers_signals(self) -> bool:
        # The manager thread lets waiters go only after it has stored the outcome
        # (see _run_manager), so that a kill right after wait() returns loses none.
        return self._thread is not None and self._on_owner_thread()

    def _refresh_submissions(self, submission_ids: Iterable[str]) -> None:
        defer = self._defers_signals()
        for submission_id in submission_ids:
            submission = self.store.get(submission_id)
            if submission is None:
                continue
            if submission._refresh_status(signal=not defer):
                if defer:
                    self._finishing.append(submission)
                self._consumers.pop(submission.id, None)
                self._contexts.pop(submission.id, None)

    def _set_status(
        self,
        job: Job,
        status: Status,
        reason: str | None = None,
        when: datetime | None = None,
    ) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("Job %s: %s -> %s", job.id, job.status.name, status.name)
        if status in FINAL_STATUSES and self._defers_signals():
            job._set_status(status, reason=reason, when=when, signal=False)
            self._finishing_jobs.append(job)
            # A thread waits on it: write at the end of this round. A thread that
            # starts waiting later waits for the next write, FLUSH_SECONDS at most.
            self._waited_on = self._waited_on or job._has_waiter()
        else:
            job._set_status(status, reason=reason, when=when)
        for callback in list(job._subscribers):
            try:
                callback(job)
            except Exception:
                logger.exception("Callback %r failed for job %s", callback, job.id)

    def _shutdown(self) -> None:
        self._shut_down = True
        self.executor.shutdown(cancel_running=True)
        for job in list(self._running.values()):
            outcome_run = self._staged.pop(job.id, None)
            if outcome_run is not None:
                self._discard_staging_of(outcome_run)
            self._cancel_now(job, "cancelled because the orchestrator stopped")
        self._running.clear()
        waiting = list(self._ready) + list(self._blocked.values())
        self._ready.clear()
        for job in waiting:
            if not job.is_finished():
                self._cancel_now(job, "cancelled because the orchestrator stopped")
        self._blocked.clear()
        self._contexts.clear()

    def _discard_staging_of(self, run: TaskRun) -> None:
        from .worker import staging_path

        for spec in run.outputs:
            final = spec.backend().path
            if final is not None:
                # A relative path is relative to the working folder of the submit.
                final = Path(run.cwd or os.getcwd()) / final
                Path(staging_path(final, run.job_id)).unlink(missing_ok=True)

    # -- events from outside ----------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if event.entity_type is not EventEntityType.DATA_NODE:
            return
        if event.attribute_name == "edit_in_progress" and event.attribute_value:
            return
        if event.attribute_name not in ("last_edit_date", "edit_in_progress"):
            return
        if self._on_owner_thread() or self._stopped.is_set():
            return  # The owner thread releases what it changes itself.
        self._post(_Command("data_changed", [event.entity_id]))

    # -- recovery ----------------------------------------------------------------------------

    def reconcile(self) -> int:
        """Settle jobs left unfinished by a process that is gone; return their number.

        A job recorded as RUNNING becomes FAILED, one that had not started becomes
        ABANDONED; both get a reason, and their outputs are unlocked.
        """
        settled = 0
        touched: set[str] = set()
        with self.store.batch():
            for status in (
                Status.RUNNING,
                Status.PENDING,
                Status.BLOCKED,
                Status.SUBMITTED,
            ):
                for job in self.store.get_all("job", status=status.name):
                    owner = job._owner
                    if owner == self.owner or (owner and is_process_alive(owner)):
                        continue
                    pid = owner.split(":")[0] if owner else "unknown"
                    if status is Status.RUNNING:
                        reason = (
                            f"the process that ran it (pid {pid}) ended before the "
                            "job finished"
                        )
                        self._recover_output(job)
                        job._stacktrace = [f"JobLost: {reason}\n"]
                        job._set_status(Status.FAILED, reason=reason)
                    else:
                        reason = f"the process that scheduled it (pid {pid}) ended"
                        job._set_status(Status.ABANDONED, reason=reason)
                    task = self.store.get(job.task_id)
                    outputs = [
                        self.store.get(node_id)
                        for node_id in (task.output_ids if task is not None else [])
                    ]
                    for node in outputs:
                        if node is not None and node.edit_in_progress:
                            node._unlock()
                    self._remove_stale_staging(job, outputs)
                    touched.add(job.submit_id)
                    settled += 1
                    logger.warning(
                        "Job %s was left %s: %s", job.id, status.name, reason
                    )
            self._refresh_submissions(touched)
        self._remove_stale_spill_files()
        return settled

    def _recover_output(self, job: Job) -> None:
        """Move what a worker that died with the kernel had captured to the job's log."""
        if job.worker_pid is None:
            return
        try:
            move_spill(str(job.log_path), job.worker_pid)
        except OSError as error:
            logger.warning("Cannot recover the output of job %s: %s", job.id, error)

    def _remove_stale_spill_files(self) -> None:
        # Spill files of workers that died with an earlier kernel; see
        # executors/_worker_main.py.
        for path in self.store.logs_folder.glob(SPILL_NAME.format(pid="*")):
            pid = path.name.split("-")[1].split(".")[0]
            if not is_process_alive(pid):
                path.unlink(missing_ok=True)

    def _remove_stale_staging(self, job: Job, nodes: list[DataNode | None]) -> None:
        """Remove what a dead process left of ``job``'s output files.

        A process that ended while it committed the job's outputs left the
        commit's journal (see ``commit_staged``) and the earlier files beside the
        outputs. When a staging file is left too, the commit did not finish: each
        output whose file is still the job's gets its earlier state back. An
        output with another file, written after the crash or never renamed, keeps
        it. When no staging file is left, every output keeps its new file.
        """
        from .worker import previous_path, staging_path

        finals: list[str] = []
        for node in nodes:
            if node is None:
                continue
            try:
                node_path = node.path
            except Exception:
                logger.exception("Cannot find the path of data node %s", node.id)
                continue
            if node_path is not None:
                # Relative to the working folder of the submit, as the worker
                # resolved it.
                finals.append(os.path.join(job._cwd or os.getcwd(), node_path))
        unfinished = any(
            os.path.lexists(staging_path(final, job.id)) for final in finals
        )
        for final in finals:
            Path(staging_path(final, job.id)).unlink(missing_ok=True)
        journal = self._commit_journal(job.id)
        try:
            entries = json.loads(journal.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return  # no commit began, or it ended before the first rename
        for entry in entries:
            final = entry["final"]
            previous = previous_path(final, job.id)
            try:
                if unfinished and _identity_or_none(final) == entry["file"]:
                    if entry["existed"]:
                        if os.path.lexists(previous):
                            os.replace(previous, final)
                    else:
                        os.unlink(final)
                Path(previous).unlink(missing_ok=True)
            except OSError:
                logger.exception("Cannot settle %s after job %s", final, job.id)
        journal.unlink(missing_ok=True)


def _identity_or_none(path: str) -> list[int] | None:
    try:
        return file_identity(path)
    except OSError:
        return None


def _caller_level() -> int:
    """Return the ``stacklevel`` that points a warning at the user's own line.

    Frames of this package are skipped, and so are IPython's when a magic called
    it, so that a warning from ``%submit`` names the cell, not IPython's code.
    """
    skipped = [os.path.dirname(os.path.abspath(__file__))]
    ipython_file = getattr(sys.modules.get("IPython"), "__file__", None)
    if isinstance(ipython_file, str):
        skipped.append(os.path.dirname(os.path.abspath(ipython_file)))
    frame = sys._getframe(1)
    level = 1
    while frame is not None:
        filename = frame.f_code.co_filename
        if not (
            filename.startswith("<decorator-gen-")
            or os.path.abspath(filename).startswith(tuple(skipped))
        ):
            break
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


class _ScenarioCallback:
    """Adapts a scenario subscriber ``f(*params, scenario, job)`` to ``f(job)``."""

    def __init__(
        self, callback: Callable[..., Any], params: list[Any], scenario: Scenario
    ) -> None:
        self.callback = callback
        self.params = params
        self.scenario = scenario

    def __call__(self, job: Job) -> None:
        self.callback(*self.params, self.scenario, job)

    def __repr__(self) -> str:
        return f"{self.callback!r} (subscribed to {self.scenario.id})"


class _WaitInterrupted(KeyboardInterrupt):
    """The wait in submit(wait=True) was interrupted; the jobs go on."""

    def _render_traceback_(self) -> list[str]:
        return [f"KeyboardInterrupt: {self}"]


def _check_storable(properties: dict[str, Any]) -> None:
    """Raise TypeError, before anything is created, if a property cannot be stored."""
    for key, value in properties.items():
        check_storable(key, value, "submit() property")


def _entity_event_type(entity: Any) -> EventEntityType:
    if isinstance(entity, Scenario):
        return EventEntityType.SCENARIO
    if isinstance(entity, Sequence):
        return EventEntityType.SEQUENCE
    return EventEntityType.TASK
