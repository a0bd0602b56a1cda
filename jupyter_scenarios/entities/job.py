"""Jobs: one run of one task within one submission.

A job's status only changes on the scheduler's side (the manager thread in standalone
mode, the submitting thread in development mode) through ``_set_status``, which records
the time of each status in ``status_history`` and publishes an event.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..enums import FINAL_STATUSES, Status
from ..events import Event, EventEntityType, EventOperation, bus
from ..exceptions import TaskFailed
from ..store import encode_doc, runs_elsewhere
from ._base import (
    Entity,
    check_wait_allowed,
    checked_timeout,
    from_iso,
    new_id,
    to_iso,
    wait_for_other_process,
)

if TYPE_CHECKING:
    from ..store import Store
    from .task import Task

# Guards the creation of Job._finished and its reading by _set_status (see
# Job._finished_event).
_FINISHED_LOCK = threading.Lock()


class Job(Entity):
    """The execution of a task, with its status, timings, traceback and output."""

    _kind = "job"
    _ID_PREFIX = "JOB_"

    def __init__(
        self,
        store: Store,
        *,
        task: Task,
        submit_id: str,
        submit_entity_id: str,
        force: bool = False,
        id: str | None = None,
    ) -> None:
        super().__init__(store)
        self.id = id or new_id(self._ID_PREFIX, task.config_id)
        self._task_id = task.id
        self._task_config_id = task.config_id
        self._submit_id = submit_id
        self._submit_entity_id = submit_entity_id
        self._force = force
        self._creation_date = datetime.now()
        self._status = Status.SUBMITTED
        self._status_history: list[tuple[Status, datetime]] = []
        self._history_doc: list[list[str]] = []
        self._add_history(Status.SUBMITTED, self._creation_date)
        self._stacktrace: list[str] = []
        self._worker_pid: int | None = None
        self._owner: str | None = None
        # True for a job that another live process ran when it was loaded. That
        # process writes the job's changes, and this one reads them from the store.
        self._foreign = False
        self._reason: str | None = None
        self._version = ""
        # The working folder of the submit, against which the worker resolved the
        # relative paths of the outputs; read again to repair them after a crash.
        self._cwd: str | None = None
        self._init_runtime()

    def _init_runtime(self) -> None:
        # The JSON text of the fields that never change, without its closing brace;
        # built by the first _to_row().
        self._fixed_json: str | None = None
        # Callbacks given to submit() for this job; kept in memory only.
        self._subscribers: list[Callable[..., Any]] = []
        # Created by the first wait(): submit(wait=True) waits on the submission, not
        # on each job, and an Event allocates four objects.
        self._finished: threading.Event | None = None
        # False from a final status set with signal=False until _signal_finished:
        # wait() waits meanwhile, although the status is final.
        self._final_stored = True

    # -- attributes -------------------------------------------------------------------

    @property
    def task(self) -> Task:
        task = self._store.get(self._task_id)
        assert task is not None, f"task {self._task_id} of job {self.id} is missing"
        return task  # type: ignore[no-any-return]

    @property
    def task_id(self) -> str:
        return self._task_id

    @property
    def task_config_id(self) -> str:
        return self._task_config_id

    @property
    def submit_id(self) -> str:
        return self._submit_id

    @property
    def submit_entity_id(self) -> str:
        return self._submit_entity_id

    @property
    def submit_entity(self) -> Any:
        """The scenario, sequence or task that was submitted."""
        from ..api import get

        # api.get also finds sequences, which are stored inside their scenario.
        return get(self._submit_entity_id)

    @property
    def force(self) -> bool:
        return self._force

    @property
    def creation_date(self) -> datetime:
        return self._creation_date

    def _sync(self) -> None:
        if self._foreign:
            self._store.refresh(self)

    def _current_status(self) -> Status:
        if self._foreign:
            self._store.refresh(self)
        return self._status

    @property
    def status(self) -> Status:
        return self._current_status()

    @property
    def status_history(self) -> list[tuple[Status, datetime]]:
        self._sync()
        return list(self._status_history)

    @property
    def stacktrace(self) -> list[str]:
        """Formatted tracebacks of the errors that failed this job, in order."""
        self._sync()
        return list(self._stacktrace)

    @stacktrace.setter
    def stacktrace(self, value: list[str]) -> None:
        self._stacktrace = list(value)
        self._save()

    @property
    def reason(self) -> str | None:
        """One line saying why the job failed, was cancelled or abandoned."""
        self._sync()
        return self._reason

    @property
    def worker_pid(self) -> int | None:
        """Process id of the worker that ran the job, if it ran in a worker."""
        self._sync()
        return self._worker_pid

    @property
    def version(self) -> str:
        return self._version

    @functools.cached_property
    def log_path(self) -> Path:
        """File holding what the task printed or logged."""
        return self._store.logs_folder / f"{self.id}.log"

    @property
    def logs(self) -> str:
        """Everything the task printed or logged while this job ran, as written.

        Carriage returns stay (a progress bar's updates); bytes that are not UTF-8
        read as replacement characters.
        """
        try:
            with open(
                self.log_path, encoding="utf-8", errors="replace", newline=""
            ) as log:
                return log.read()
        except FileNotFoundError:
            return ""

    def logs_tail(self, lines: int = 10) -> str:
        """Return the last ``lines`` lines of ``logs``."""
        return "\n".join(self.logs.splitlines()[-lines:])

    # -- timings ------------------------------------------------------------------------

    def _first_time(self, *statuses: Status) -> datetime | None:
        self._sync()
        for status, when in self._status_history:
            if status in statuses:
                return when
        return None

    @property
    def submitted_at(self) -> datetime:
        return self._status_history[0][1]

    @property
    def run_at(self) -> datetime | None:
        """When the job started running, or None if it never ran."""
        return self._first_time(Status.RUNNING)

    @property
    def finished_at(self) -> datetime | None:
        """When the job reached a final status, or None while unfinished."""
        if self._status not in FINAL_STATUSES:
            return None
        return self._status_history[-1][1]

    @property
    def execution_duration(self) -> float | None:
        """Seconds spent RUNNING (up to now while it runs), or None if it never ran."""
        return self._duration_in(Status.RUNNING)

    @property
    def pending_duration(self) -> float | None:
        return self._duration_in(Status.PENDING)

    @property
    def blocked_duration(self) -> float | None:
        return self._duration_in(Status.BLOCKED)

    def _duration_in(self, status: Status) -> float | None:
        total: timedelta | None = None
        history = self._status_history
        for index, (entry, start) in enumerate(history):
            if entry is not status:
                continue
            end = history[index + 1][1] if index + 1 < len(history) else datetime.now()
            total = (total or timedelta()) + (end - start)
        return total.total_seconds() if total is not None else None

    # -- predicates ---------------------------------------------------------------------

    def is_submitted(self) -> bool:
        return self._current_status() is Status.SUBMITTED

    def is_blocked(self) -> bool:
        return self._current_status() is Status.BLOCKED

    def is_pending(self) -> bool:
        return self._current_status() is Status.PENDING

    def is_running(self) -> bool:
        return self._current_status() is Status.RUNNING

    def is_canceled(self) -> bool:
        return self._current_status() is Status.CANCELED

    def is_failed(self) -> bool:
        return self._current_status() is Status.FAILED

    def is_completed(self) -> bool:
        return self._current_status() is Status.COMPLETED

    def is_skipped(self) -> bool:
        return self._current_status() is Status.SKIPPED

    def is_abandoned(self) -> bool:
        return self._current_status() is Status.ABANDONED

    def is_finished(self) -> bool:
        return self._current_status() in FINAL_STATUSES

    def _is_finished(self) -> bool:
        return self.is_finished()

    def is_deletable(self) -> bool:
        return self.is_finished()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job is finished or ``timeout`` seconds pass; return finished."""
        timeout = checked_timeout(timeout)
        check_wait_allowed(self.id, timeout)
        if self._foreign:
            return wait_for_other_process(self.is_finished, timeout)
        return self._finished_event().wait(timeout)

    def _finished_event(self) -> threading.Event:
        """Return the event set when the job finishes, creating it if needed.

        The status is read under the lock that _set_status takes to find the event,
        so a job that finishes while its event is created still sets it.
        """
        with _FINISHED_LOCK:
            if self._finished is None:
                self._finished = threading.Event()
                if self._status in FINAL_STATUSES and self._final_stored:
                    self._finished.set()
            return self._finished

    def _signal_finished(self) -> None:
        """Let wait() return; see ``_set_status``."""
        with _FINISHED_LOCK:
            self._final_stored = True
            event = self._finished
        if event is not None:
            event.set()

    def _has_waiter(self) -> bool:
        """Return whether a thread called wait() (it may have returned since)."""
        return self._finished is not None

    # -- changes (scheduler side) -------------------------------------------------------

    def _set_status(
        self,
        status: Status,
        *,
        reason: str | None = None,
        when: datetime | None = None,
        signal: bool = True,
    ) -> None:
        """Change the status; a final one lets wait() return, unless ``signal`` is
        False: then the scheduler calls ``_signal_finished`` once it is stored."""
        old = self._status
        self._status = status
        self._add_history(status, when or datetime.now())
        submission = self._store.peek(self._submit_id)
        if submission is not None:
            submission._count_transition(old, status)
        if reason is not None:
            self._reason = reason
        if status in FINAL_STATUSES:
            if signal:
                self._signal_finished()
            else:
                with _FINISHED_LOCK:
                    self._final_stored = False
        self._save()
        bus.publish(
            Event(
                EventEntityType.JOB,
                EventOperation.UPDATE,
                self.id,
                "status",
                status,
                {"submit_id": self._submit_id, "task_config_id": self._task_config_id},
            )
        )

    def _add_history(self, status: Status, when: datetime) -> None:
        # _history_doc contains the same entries as stored, so that a write does not
        # format every date again.
        self._status_history.append((status, when))
        self._history_doc.append([status._name_, when.isoformat()])

    def _set_worker(self, pid: int | None) -> None:
        self._worker_pid = pid
        self._save()

    # -- labels and display ---------------------------------------------------------------

    def get_label(self) -> str:
        return f"{self.task.get_label()} > {self.id}"

    def get_simple_label(self) -> str:
        return self.id

    def __contains__(self, item: object) -> bool:
        return getattr(item, "id", None) == self._task_id

    def __lt__(self, other: Job) -> bool:
        return self._creation_date < other._creation_date

    def __le__(self, other: Job) -> bool:
        return self._creation_date <= other._creation_date

    def __gt__(self, other: Job) -> bool:
        return self._creation_date > other._creation_date

    def __ge__(self, other: Job) -> bool:
        return self._creation_date >= other._creation_date

    __hash__ = Entity.__hash__

    def __repr__(self) -> str:
        return f"Job({self.id!r}, {self._status.name})"

    @property
    def error(self) -> TaskFailed | None:
        """The failure as an exception with the worker-side traceback, if FAILED."""
        if self._status is not Status.FAILED:
            return None
        return TaskFailed(self.id, self._task_config_id, self._stacktrace)

    def raise_for_status(self) -> None:
        """Raise ``TaskFailed`` with the worker-side traceback if the job FAILED."""
        error = self.error
        if error is not None:
            raise error

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))
        if self._status is Status.FAILED and self._stacktrace:
            printer.text("\n" + self._stacktrace[-1].rstrip())

    # -- persistence ----------------------------------------------------------------------

    def _to_doc(self) -> dict[str, Any]:
        return {**self._fixed_doc(), **self._changing_doc()}

    def _fixed_doc(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "task_id": self._task_id,
            "task_config_id": self._task_config_id,
            "submit_id": self._submit_id,
            "submit_entity_id": self._submit_entity_id,
            "force": self._force,
            "creation_date": to_iso(self._creation_date),
            "version": self._version,
            "cwd": self._cwd,
        }

    def _changing_doc(self) -> dict[str, Any]:
        return {
            "status": self._status._name_,
            "status_history": self._history_doc,
            "stacktrace": self._stacktrace,
            "worker_pid": self._worker_pid,
            "owner": self._owner,
            "reason": self._reason,
        }

    def _to_row(self) -> tuple[str, Mapping[str, Any]]:
        # A job is written two to four times, and its ids are most of its document:
        # their JSON is built once.
        fixed = self._fixed_json
        if fixed is None:
            fixed = self._fixed_json = encode_doc(self._fixed_doc())[:-1]
        text = fixed + ", " + encode_doc(self._changing_doc())[1:]
        columns = {
            "submit_id": self._submit_id,
            "task_id": self._task_id,
            "status": self._status._name_,
        }
        return text, columns

    def _load_doc(self, doc: dict[str, Any]) -> None:
        self._task_id = doc["task_id"]
        self._task_config_id = doc["task_config_id"]
        self._submit_id = doc["submit_id"]
        self._submit_entity_id = doc["submit_entity_id"]
        self._force = doc["force"]
        self._creation_date = from_iso(doc["creation_date"])  # type: ignore[assignment]
        self._status = Status[doc["status"]]
        self._status_history = []
        self._history_doc = []
        for name, when in doc["status_history"]:
            self._add_history(Status[name], from_iso(when))  # type: ignore[arg-type]
        self._fixed_json = None
        self._stacktrace = list(doc["stacktrace"])
        self._worker_pid = doc.get("worker_pid")
        self._owner = doc.get("owner")
        self._foreign = runs_elsewhere(self._owner)
        self._reason = doc.get("reason")
        self._version = doc.get("version", "")
        self._cwd = doc.get("cwd")
        if self._status in FINAL_STATUSES and hasattr(self, "_finished"):
            self._signal_finished()

    @classmethod
    def _from_doc(cls, store: Store, doc: dict[str, Any]) -> Job:
        job = cls.__new__(cls)
        Entity.__init__(job, store)
        job.id = doc["id"]
        job._load_doc(doc)
        job._init_runtime()
        return job
