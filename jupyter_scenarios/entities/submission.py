"""Submissions: the jobs created by one call to ``submit``, and their overall status.

The status is derived from the job statuses, in this order of precedence: any FAILED
job makes the submission FAILED; otherwise any CANCELED job makes it CANCELED; then
RUNNING, PENDING, BLOCKED and SUBMITTED win in that order; when every job is COMPLETED
or SKIPPED the submission is COMPLETED; ABANDONED jobs alone leave it UNDEFINED.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..enums import FINAL_STATUSES, EntityType, Status, SubmissionStatus
from ..events import Event, EventEntityType, EventOperation, bus
from ._base import (
    Entity,
    check_wait_allowed,
    checked_timeout,
    from_iso,
    new_id,
    to_iso,
    wait_for_other_process,
)
from ._values import PersistedProperties, decode_mapping, encode_mapping

if TYPE_CHECKING:
    from ..store import Store
    from .job import Job

FINISHED_SUBMISSION_STATUSES = frozenset(
    {SubmissionStatus.COMPLETED, SubmissionStatus.FAILED, SubmissionStatus.CANCELED}
)
# Stored statuses after which a loaded submission's wait() returns at once.
# UNDEFINED comes only from jobs that are all final (ABANDONED ones among them).
_SETTLED_WHEN_LOADED = FINISHED_SUBMISSION_STATUSES | {SubmissionStatus.UNDEFINED}


def derive_status(statuses: Iterable[Status]) -> SubmissionStatus:
    """Return the submission status that the given job statuses add up to."""
    present = set(statuses)
    if not present:
        return SubmissionStatus.SUBMITTED
    for job_status, result in (
        (Status.FAILED, SubmissionStatus.FAILED),
        (Status.CANCELED, SubmissionStatus.CANCELED),
        (Status.RUNNING, SubmissionStatus.RUNNING),
        (Status.PENDING, SubmissionStatus.PENDING),
        (Status.BLOCKED, SubmissionStatus.BLOCKED),
        (Status.SUBMITTED, SubmissionStatus.SUBMITTED),
    ):
        if job_status in present:
            return result
    if present <= {Status.COMPLETED, Status.SKIPPED}:
        return SubmissionStatus.COMPLETED
    return SubmissionStatus.UNDEFINED


class Submission(Entity):
    """The jobs of one ``submit`` call and their combined status."""

    _kind = "submission"
    _ID_PREFIX = "SUBMISSION_"

    def __init__(
        self,
        store: Store,
        *,
        entity_id: str,
        entity_type: EntityType,
        entity_config_id: str | None,
        properties: dict[str, Any] | None = None,
        id: str | None = None,
    ) -> None:
        super().__init__(store)
        self.id = id or new_id(self._ID_PREFIX, entity_id)
        self._entity_id = entity_id
        self._entity_type = entity_type
        self._entity_config_id = entity_config_id
        self._job_ids: list[str] = []
        self._creation_date = datetime.now()
        self._status = SubmissionStatus.SUBMITTED
        self._properties = PersistedProperties(properties or {}, self._save)
        self._version = ""
        self._init_runtime()
        self._foreign: bool | None = False

    def _init_runtime(self) -> None:
        # Number of jobs in each status, kept by the scheduler; None until first
        # counted from the jobs themselves.
        self._status_counts: collections.Counter[Status] | None = None
        # Set once every job is finished; submit(wait=True) and wait() block on it.
        # A FAILED or CANCELED status can come earlier, while other branches still
        # run. A submission loaded from the store trusts its stored status instead.
        # Threads: set by the scheduler, waited on by any thread.
        self._finished = threading.Event()
        if self._status in _SETTLED_WHEN_LOADED:
            self._finished.set()
        # Whether another live process runs the jobs: False when created here,
        # found on first use when loaded from the store.
        self._foreign = None

    @property
    def entity_id(self) -> str:
        return self._entity_id

    @property
    def entity_type(self) -> EntityType:
        return self._entity_type

    @property
    def entity_config_id(self) -> str | None:
        return self._entity_config_id

    @property
    def entity(self) -> Any:
        """The scenario, sequence or task that was submitted."""
        from ..api import get

        # api.get also finds sequences, which are stored inside their scenario.
        return get(self._entity_id)

    @property
    def job_ids(self) -> list[str]:
        return list(self._job_ids)

    @property
    def jobs(self) -> list[Job]:
        """The jobs of this submission, producers before consumers."""
        jobs = [self._store.get(job_id) for job_id in self._job_ids]
        return [job for job in jobs if job is not None]

    @property
    def creation_date(self) -> datetime:
        return self._creation_date

    @property
    def submission_status(self) -> SubmissionStatus:
        self._sync()
        return self._status

    @property
    def properties(self) -> dict[str, Any]:
        return self._properties

    @property
    def version(self) -> str:
        return self._version

    @property
    def is_completed(self) -> bool:
        return self._status is SubmissionStatus.COMPLETED

    @property
    def is_canceled(self) -> bool:
        return self._status is SubmissionStatus.CANCELED

    @property
    def is_abandoned(self) -> bool:
        return any(job.is_abandoned() for job in self.jobs)

    @property
    def run_at(self) -> datetime | None:
        """When the first job started running."""
        times = [job.run_at for job in self.jobs if job.run_at is not None]
        return min(times) if times else None

    @property
    def finished_at(self) -> datetime | None:
        """When the last job finished, or None while any job is unfinished."""
        jobs = self.jobs
        if not jobs or not all(job.is_finished() for job in jobs):
            return None
        return max(job.finished_at for job in jobs)  # type: ignore[type-var]

    @property
    def execution_duration(self) -> float | None:
        """Seconds from the first job's start to the last finish (or to now)."""
        start = self.run_at
        if start is None:
            return None
        end = self.finished_at or datetime.now()
        return (end - start).total_seconds()

    def is_finished(self) -> bool:
        self._sync()
        return self._status in FINISHED_SUBMISSION_STATUSES

    def is_deletable(self) -> bool:
        """Return whether ``tp.delete`` would delete the submission now.

        See ``jupyter_scenarios.is_deletable``, which this calls: a FAILED or
        CANCELED submission can still have a running job.
        """
        from ..deletion import is_deletable

        return is_deletable(self)

    def _status_allows_deletion(self) -> bool:
        # The deletion check starts here, then looks at the jobs themselves.
        return self.is_finished() or self._status is SubmissionStatus.UNDEFINED

    def _is_foreign(self) -> bool:
        """Return whether another live process runs this submission's jobs."""
        if self._foreign is None:
            first = self._store.get(self._job_ids[0]) if self._job_ids else None
            self._foreign = bool(first is not None and first._foreign)
        return self._foreign

    def _sync(self) -> None:
        # The process that runs the jobs writes the status; this one reads it.
        if self._is_foreign():
            self._store.refresh(self)

    def raise_for_status(self) -> None:
        """Raise ``TaskFailed`` for the first FAILED job, with its worker traceback.

        In a notebook, ``submission.raise_for_status()`` shows the error as if the
        task had run in the cell.
        """
        for job in self.jobs:
            job.raise_for_status()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every job is finished or ``timeout`` passes; return finished."""
        timeout = checked_timeout(timeout)
        check_wait_allowed(self.id, timeout)
        if self._is_foreign():
            return wait_for_other_process(self.is_finished, timeout)
        return self._finished.wait(timeout)

    def get_label(self) -> str:
        return self.id

    def get_simple_label(self) -> str:
        return self.id

    def _add_jobs(self, jobs: list[Job]) -> None:
        self._job_ids.extend(job.id for job in jobs)
        self._status_counts = None
        self._save()

    def _count_transition(self, old: Status, new: Status) -> None:
        # Called by each job status change, so that refreshing the status costs
        # O(1) instead of reading every job.
        if self._status_counts is not None:
            self._status_counts[old] -= 1
            self._status_counts[new] += 1

    def _refresh_status(self, *, signal: bool = True) -> bool:
        """Derive the status from the jobs'; return whether every job is finished.

        With ``signal`` False, ``wait()`` keeps waiting until the caller calls
        ``_signal_finished``: the scheduler does so once the outcome is stored.
        """
        if self._status_counts is None:
            self._status_counts = collections.Counter(job.status for job in self.jobs)
        statuses = [
            status for status, count in self._status_counts.items() if count > 0
        ]
        # Without jobs (a scenario with no tasks) there is nothing left to run, so
        # the submission is COMPLETED and wait() returns at once.
        status = derive_status(statuses) if statuses else SubmissionStatus.COMPLETED
        finished = all(job_status in FINAL_STATUSES for job_status in statuses)
        if finished and signal:
            self._finished.set()
        if status is not self._status:
            self._status = status
            self._save()
            bus.publish(
                Event(
                    EventEntityType.SUBMISSION,
                    EventOperation.UPDATE,
                    self.id,
                    "submission_status",
                    status,
                    {"entity_id": self._entity_id},
                )
            )
        return finished

    def _signal_finished(self) -> None:
        """Let ``wait()`` return; see ``_refresh_status``."""
        self._finished.set()

    def __repr__(self) -> str:
        return f"Submission({self.id!r}, {self._status.name})"

    def _to_doc(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "entity_id": self._entity_id,
            "entity_type": self._entity_type.value,
            "entity_config_id": self._entity_config_id,
            "job_ids": self._job_ids,
            "creation_date": to_iso(self._creation_date),
            "status": self._status.name,
            "properties": encode_mapping(self._properties),
            "version": self._version,
        }

    def _load_doc(self, doc: dict[str, Any]) -> None:
        self._entity_id = doc["entity_id"]
        self._entity_type = EntityType(doc["entity_type"])
        self._entity_config_id = doc["entity_config_id"]
        self._job_ids = list(doc["job_ids"])
        self._creation_date = from_iso(doc["creation_date"])  # type: ignore[assignment]
        self._status = SubmissionStatus[doc["status"]]
        self._properties = PersistedProperties(
            decode_mapping(doc["properties"]), self._save
        )
        self._version = doc.get("version", "")
        if self._status in _SETTLED_WHEN_LOADED and hasattr(self, "_finished"):
            self._finished.set()

    @classmethod
    def _from_doc(cls, store: Store, doc: dict[str, Any]) -> Submission:
        submission = cls.__new__(cls)
        Entity.__init__(submission, store)
        submission.id = doc["id"]
        submission._load_doc(doc)
        submission._init_runtime()
        return submission
