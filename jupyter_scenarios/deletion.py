"""Deletion: ``delete``, ``is_deletable``, ``delete_job(s)`` and ``clean_all_entities``.

An entity goes with what it owns. A cycle owns its scenarios and its CYCLE-scoped tasks
and data nodes. A scenario owns its SCENARIO-scoped tasks and data nodes and the
submissions of itself, its sequences and its tasks. A sequence owns its submissions.
A task owns its jobs and every submission that contains one of them. GLOBAL data nodes
and tasks are never deleted with an owner.

``delete`` and ``is_deletable`` both build a ``_Deletion`` plan and check it, so they
always agree. Each deletion removes its rows in one store transaction, then the data
files and job logs of what it removed.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from . import _runtime
from .api import get, get_data_nodes, get_jobs, get_scenarios
from .entities import Cycle, DataNode, Job, Scenario, Sequence, Submission, Task
from .entities._base import why_missing
from .entities.scenario import SEQUENCE_PREFIX
from .events import Event, EventEntityType, EventOperation, bus
from .exceptions import (
    ConfigurationError,
    JobNotDeletedException,
    NonExistingEntity,
    ScenarioError,
    SubmissionNotDeletedException,
)
from .storage.atomic import remove_abandoned_temp_files
from .store import Store

logger = logging.getLogger(__name__)


def is_deletable(entity: Any) -> bool:
    """Return whether ``tp.delete`` would delete ``entity`` now.

    It runs the check that ``delete`` runs. A primary scenario is deletable only
    when it is alone in its cycle. Nothing is deletable while an unfinished job would
    be deleted with it or reads or writes a data node deleted with it. An entity
    that does not exist is not deletable.
    """
    if not isinstance(entity, str) and not isinstance(getattr(entity, "id", None), str):
        return False
    found = get(entity)
    if found is None:
        return False
    return _plan(found).error is None


def delete(entity_id: str) -> None:
    """Delete an entity and what it owns.

    Deleting a cycle deletes its scenarios and its CYCLE-scoped tasks and data nodes.
    Deleting a scenario deletes its own tasks and data nodes (not the shared CYCLE
    and GLOBAL ones), their jobs and the submissions of the scenario, its sequences
    and its tasks. Deleting a task deletes its jobs and every submission that
    contains one of them. Data files are deleted only when they sit in the storage
    folder, so files at a path you configured are kept.

    Raises
    ------
    NonExistingEntity
        Nothing with ``entity_id`` exists.
    ConfigurationError
        The scenario is the primary one of a cycle that has other scenarios.
    SubmissionNotDeletedException, JobNotDeletedException
        An unfinished job is in the way; ``tp.is_deletable`` is false then.
    """
    entity = get(entity_id)
    if entity is None:
        if isinstance(entity_id, str):
            raise NonExistingEntity(
                f"Entity {entity_id!r} does not exist; nothing deleted."
            )
        raise NonExistingEntity(
            f"{entity_id!r} does not exist in the store; "
            + why_missing(entity_id, _runtime.store(), "Nothing was deleted.")
        )
    deletion = _plan(entity)
    if deletion.error is not None:
        raise deletion.error
    deletion.run()

    if isinstance(entity, Sequence):
        entity.scenario.remove_sequence(entity.name)
    for scenario_id in deletion.scenario_ids:
        bus.publish(
            Event(EventEntityType.SCENARIO, EventOperation.DELETION, scenario_id)
        )
    if isinstance(entity, Cycle):
        bus.publish(Event(EventEntityType.CYCLE, EventOperation.DELETION, entity.id))


def _plan(entity: Any) -> _Deletion:
    """Plan the deletion of ``entity``, with ``error`` set when it cannot run now."""
    deletion = _Deletion()
    if isinstance(entity, Scenario):
        deletion.add_scenario(entity)
    elif isinstance(entity, Sequence):
        deletion.add_submissions_of(entity.id)
    elif isinstance(entity, Job):
        deletion.add_jobs([entity])
    elif isinstance(entity, Submission):
        deletion.add_submission(entity)
    elif isinstance(entity, Cycle):
        for scenario in get_scenarios(entity):
            deletion.add_scenario(scenario)
        deletion.add_owned([*_cycle_owned_ids(entity), entity.id])
    elif isinstance(entity, (Task, DataNode)):
        deletion.add_owned([entity.id])
    else:
        raise TypeError(
            f"Cannot delete {entity!r}: pass the id of a scenario, sequence, task, "
            "data node, cycle, job or submission."
        )

    label = f"{type(entity).__name__} {entity.id!r}"
    if isinstance(entity, Scenario) and _has_sibling_scenarios(entity):
        deletion.error = ConfigurationError(
            f"{label} is the primary scenario of its cycle and other scenarios share "
            "that cycle; make another one primary with tp.set_primary() first."
        )
        return deletion
    blocker = deletion.find_blocker()
    if blocker is not None:
        # A scenario, sequence or submission raises SubmissionNotDeletedException
        # and any other entity JobNotDeletedException.
        error_type: type[ScenarioError] = (
            SubmissionNotDeletedException
            if isinstance(entity, (Scenario, Sequence, Submission))
            else JobNotDeletedException
        )
        deletion.error = error_type(
            f"{label} cannot be deleted now, because {blocker}. Cancel the job with "
            "tp.cancel_job() or wait for it to finish, then delete again."
        )
    return deletion


def _has_sibling_scenarios(scenario: Scenario) -> bool:
    if not scenario.is_primary or scenario.cycle is None:
        return False
    siblings = _runtime.store().get_all("scenario", cycle_id=scenario.cycle.id)
    return len(siblings) > 1


class _Deletion:
    """Rows to delete in one transaction, and the files that go once it committed.

    The files go after the rows, so that a failed transaction leaves every stored
    entity with its data. ``error`` is set when the deletion must not run now.
    """

    def __init__(self) -> None:
        self.error: Exception | None = None
        # Ids in insertion order; a dict drops the repeats.
        self.ids: dict[str, None] = {}
        self.nodes: dict[str, DataNode] = {}
        self.jobs: dict[str, Job] = {}
        self.submissions: dict[str, Submission] = {}
        self.scenario_ids: list[str] = []
        # Tasks and data nodes that may stay, and the parent ids that go: deleted
        # scenarios, their sequences and deleted tasks.
        self.kept_children: dict[str, Task | DataNode] = {}
        self.gone_parent_ids: set[str] = set()

    def add_scenario(self, scenario: Scenario) -> None:
        """Add ``scenario`` with what it owns and the submissions of its parts."""
        store = _runtime.store()
        own_prefix = f"_{scenario.id}"
        for submission in store.get_all("submission"):
            entity_id = submission.entity_id
            if entity_id == scenario.id or (
                entity_id.startswith(SEQUENCE_PREFIX) and entity_id.endswith(own_prefix)
            ):
                self.add_submission(submission)
        children: list[Task | DataNode] = []
        for task_id in scenario.task_ids:
            task = store.get(task_id)
            if task is not None:
                children.append(task)
                children.extend(task.data_nodes.values())
        children.extend(scenario.additional_data_nodes.values())
        owned = []
        for child in children:
            if child.owner_id == scenario.id:
                owned.append(child.id)
            else:
                self.kept_children[child.id] = child
        self.add_owned([*owned, scenario.id])
        self.scenario_ids.append(scenario.id)
        self.gone_parent_ids.update(
            sequence.id for sequence in scenario.sequences.values()
        )

    def add_owned(self, entity_ids: list[str]) -> None:
        """Add tasks (with their jobs and submissions) and data nodes (with files)."""
        store = _runtime.store()
        for entity_id in entity_ids:
            entity = store.get(entity_id)
            if isinstance(entity, Task):
                self.add_task_runs(entity)
                self.kept_children.update(
                    (node.id, node) for node in entity.data_nodes.values()
                )
            if isinstance(entity, DataNode):
                self.nodes[entity.id] = entity
            self.ids[entity_id] = None
            self.gone_parent_ids.add(entity_id)

    def add_task_runs(self, task: Task) -> None:
        """Add the jobs of ``task`` and every submission that contains one of them."""
        store = _runtime.store()
        jobs = store.get_all("job", task_id=task.id)
        self.add_jobs(jobs)
        for job in jobs:
            submission = store.get(job.submit_id)
            if submission is not None:
                self.add_submission(submission)
        self.add_submissions_of(task.id)

    def add_submissions_of(self, entity_id: str) -> None:
        for submission in _runtime.store().get_all("submission", entity_id=entity_id):
            self.add_submission(submission)

    def add_jobs(self, jobs: list[Job]) -> None:
        for job in jobs:
            self.jobs[job.id] = job
            self.ids[job.id] = None

    def add_submission(self, submission: Submission) -> None:
        self.add_jobs(submission.jobs)
        self.submissions[submission.id] = submission
        self.ids[submission.id] = None

    def find_blocker(self) -> str | None:
        """Return what keeps this deletion from running now, or None."""
        for submission in self.submissions.values():
            if not submission._status_allows_deletion():
                return (
                    f"submission {submission.id!r} is "
                    f"{submission.submission_status.name}"
                    + _unfinished_job_clause(submission.jobs)
                )
        for job in self.jobs.values():
            if not job.is_finished():
                return f"job {job.id!r} of task {job.task_id!r} is {job.status.name}"
        if self.nodes:
            return self._node_user_blocker()
        return None

    def _node_user_blocker(self) -> str | None:
        # A data node that an unfinished job reads or writes cannot go, whatever
        # submission that job belongs to.
        store = _runtime.store()
        for job in get_jobs():
            if job.is_finished():
                continue
            task = store.get(job.task_id)
            if task is None:
                continue
            for node_id in [*task.input_ids, *task.output_ids]:
                if node_id in self.nodes:
                    return (
                        f"data node {node_id!r} is used by job {job.id!r} of task "
                        f"{task.id!r}, which is {job.status.name}"
                    )
        return None

    def run(self) -> None:
        # The kept entities that named a deleted parent are written in the deletion's
        # transaction, so that no stored row names a deleted parent.
        store = _runtime.store()
        changed = self._without_gone_parents()
        try:
            store.delete(list(self.ids), then_write=changed)
        except BaseException:
            for child in changed:
                store.reload(child)  # back to the stored parents, which still exist
            raise
        for node in self.nodes.values():
            _delete_data_file(node)
        for job in self.jobs.values():
            job.log_path.unlink(missing_ok=True)

    def _without_gone_parents(self) -> list[Any]:
        store = _runtime.store()
        changed = []
        for child in self.kept_children.values():
            if child.id in self.ids or not child.parent_ids & self.gone_parent_ids:
                continue
            # Another process may have changed the row since it was loaded.
            store.reload(child)
            child._parent_ids -= self.gone_parent_ids
            changed.append(child)
        return changed


def _unfinished_job_clause(jobs: list[Job]) -> str:
    for job in jobs:
        if not job.is_finished():
            return f": its job {job.id!r} of task {job.task_id!r} is {job.status.name}"
    return ""


def _cycle_owned_ids(cycle: Cycle) -> list[str]:
    store = _runtime.store()
    tasks = [task.id for task in store.get_all("task") if task.owner_id == cycle.id]
    nodes = [node.id for node in store.get_all("data_node", owner_id=cycle.id)]
    return tasks + nodes


def _delete_data_file(node: DataNode) -> None:
    store = _runtime.store()
    try:
        path = node.path
    except ConfigurationError:
        return
    if node.storage_type == "in_memory" or (
        path is not None and Path(path).resolve().is_relative_to(store.data_folder)
    ):
        node.backend.delete()


def remove_leftover_files(store: Store) -> int:
    """Remove the files in the data folder that no stored data node uses.

    Deleting entities removes rows first and files after, so an interrupt or a crash
    in between leaves the files of deleted data nodes. A write killed midway leaves
    its temporary file. Both are removed here; returns how many. The shared-creation
    lock keeps out kernels that create data nodes, whose default data is written
    just before their rows.
    """
    removed = remove_abandoned_temp_files(store.data_folder)
    with store.shared_creation():
        stored = store.ids("data_node")
        try:
            entries = list(os.scandir(store.data_folder))
        except FileNotFoundError:
            return removed
        for entry in entries:
            node_id = entry.name.split(".", 1)[0]
            if (
                not entry.name.startswith(DataNode._ID_PREFIX)
                or node_id in stored
                or not entry.is_file(follow_symlinks=False)
            ):
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed += 1
    return removed


def delete_job(job: Job, force: bool = False) -> None:
    """Delete a finished job; an unfinished one needs ``force=True``."""
    if not job.is_finished() and not force:
        raise JobNotDeletedException(
            f"Job {job.id!r} is {job.status.name} and cannot be deleted; cancel it "
            "first or pass force=True."
        )
    store = _runtime.store()
    # The submission stops naming the job in the same transaction.
    submission = store.get(job.submit_id)
    rewritten = []
    if submission is not None and job.id in submission._job_ids:
        submission._job_ids = [id_ for id_ in submission._job_ids if id_ != job.id]
        submission._status_counts = None  # counted again from the jobs left
        rewritten.append(submission)
    try:
        store.delete([job.id], then_write=rewritten)
    except BaseException:
        for entity in rewritten:
            store.reload(entity)
        raise
    job.log_path.unlink(missing_ok=True)


def delete_jobs() -> None:
    """Delete every job."""
    for job in get_jobs():
        delete_job(job, force=True)


def clean_all_entities(version_number: str | None = None) -> bool:
    """Delete every entity and every data file in the storage folder.

    Running jobs are cancelled first. Files at paths you configured are kept.
    Returns True when done.
    """
    if version_number not in (None, "all", ""):
        logger.info("Versions are not tracked; deleting every entity")
    store = _runtime.store()
    scheduler = _runtime.orchestrator()
    for job in get_jobs():
        if not job.is_finished():
            scheduler.cancel(job)
    for node in get_data_nodes():
        _delete_data_file(node)
    for log in store.logs_folder.glob("*.log"):
        log.unlink(missing_ok=True)
    store.clear()
    remove_leftover_files(store)
    return True
