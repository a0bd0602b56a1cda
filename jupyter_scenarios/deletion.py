"""Deletion: ``delete``, ``is_deletable``, ``delete_job(s)`` and ``clean_all_entities``.

An entity goes with what it owns. A cycle owns its scenarios and its CYCLE-scoped tasks
and data nodes. A scenario owns its SCENARIO-scoped tasks and data nodes and its
submissions. A task owns its jobs. GLOBAL data nodes and tasks are never deleted with
an owner. Each deletion removes its rows in one store transaction, then the data files
and job logs of what it removed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from . import _runtime
from .api import get, get_data_nodes, get_jobs, get_scenarios, get_submissions
from .entities import Cycle, DataNode, Job, Scenario, Sequence, Submission, Task
from .events import Event, EventEntityType, EventOperation, bus
from .exceptions import (
    ConfigurationError,
    JobNotDeletedException,
    NonExistingEntity,
    SubmissionNotDeletedException,
)

logger = logging.getLogger(__name__)


def is_deletable(entity: Any) -> bool:
    """Return whether ``tp.delete`` would delete ``entity`` now.

    A primary scenario is deletable only when it is alone in its cycle. A task, data
    node or cycle is not deletable while an unfinished job uses what it would delete.
    """
    if isinstance(entity, str):
        entity = get(entity)
    if isinstance(entity, (Scenario, Job, Submission)):
        return entity.is_deletable()
    if isinstance(entity, Cycle):
        return _cycle_blocker(entity) is None
    if isinstance(entity, (Task, DataNode)):
        return _unfinished_job_blocker(entity) is None
    return entity is not None


def delete(entity_id: str) -> None:
    """Delete an entity and what it owns.

    Deleting a cycle deletes its scenarios and its CYCLE-scoped tasks and data nodes.
    Deleting a scenario deletes its own tasks and data nodes (not the shared CYCLE
    and GLOBAL ones), their jobs and its submissions. Data files are deleted only
    when they sit in the storage folder; files at a path you configured are kept.
    """
    entity = get(entity_id)
    if entity is None:
        raise NonExistingEntity(
            f"Entity {entity_id!r} does not exist; nothing deleted."
        )
    if isinstance(entity, Scenario):
        _delete_scenario(entity)
    elif isinstance(entity, Sequence):
        entity.scenario.remove_sequence(entity.name)
    elif isinstance(entity, Job):
        delete_job(entity)
    elif isinstance(entity, Submission):
        _delete_submission(entity)
    elif isinstance(entity, Cycle):
        _delete_cycle(entity)
    else:
        blocker = _unfinished_job_blocker(entity)
        if blocker is not None:
            raise JobNotDeletedException(blocker)
        deletion = _Deletion()
        deletion.add_owned([entity.id])
        deletion.run()


class _Deletion:
    """Rows to delete in one transaction, and the files that go once it committed.

    The files go after the rows, so that a failed transaction leaves every stored
    entity with its data.
    """

    def __init__(self) -> None:
        # Ids in insertion order; a dict drops the repeats.
        self.ids: dict[str, None] = {}
        self.nodes: list[DataNode] = []
        self.jobs: list[Job] = []

    def add_owned(self, entity_ids: list[str]) -> None:
        """Add tasks (with their jobs) and data nodes (with their files)."""
        store = _runtime.store()
        for entity_id in entity_ids:
            entity = store.get(entity_id)
            if isinstance(entity, Task):
                self.add_jobs(store.get_all("job", task_id=entity.id))
            if isinstance(entity, DataNode):
                self.nodes.append(entity)
            self.ids[entity_id] = None

    def add_jobs(self, jobs: list[Job]) -> None:
        self.jobs.extend(jobs)
        self.ids.update(dict.fromkeys(job.id for job in jobs))

    def add_submission(self, submission: Submission) -> None:
        self.add_jobs(submission.jobs)
        self.ids[submission.id] = None

    def run(self) -> None:
        _runtime.store().delete(list(self.ids))
        for node in self.nodes:
            _delete_data_file(node)
        for job in self.jobs:
            job.log_path.unlink(missing_ok=True)


def _unfinished_job_blocker(entity: Task | DataNode) -> str | None:
    # A task or data node that unfinished jobs still read or write cannot go.
    task_ids = {entity.id} if isinstance(entity, Task) else set(entity.parent_ids)
    for job in get_jobs():
        if not job.is_finished() and job.task_id in task_ids:
            return (
                f"{type(entity).__name__} {entity.id!r} is used by job {job.id!r}, "
                f"which is {job.status.name}; cancel it with tp.cancel_job() or wait "
                "for it before deleting."
            )
    return None


def _scenario_submissions(scenario: Scenario) -> list[Submission]:
    """Return the submissions of ``scenario`` and of its sequences."""
    return [
        submission
        for submission in get_submissions()
        if submission.entity_id == scenario.id
        or submission.entity_id.endswith(scenario.id)
    ]


def _scenario_owned_ids(scenario: Scenario) -> list[str]:
    children: list[Task | DataNode] = [
        *scenario.tasks.values(),
        *scenario.data_nodes.values(),
    ]
    return [entity.id for entity in children if entity.owner_id == scenario.id]


def _scenario_blocker(scenario: Scenario, owned_ids: set[str]) -> str | None:
    # A task submitted on its own has a submission of its own; its jobs still use
    # the task and data nodes that the deletion removes.
    for submission in get_submissions():
        if (
            submission.entity_id == scenario.id
            or submission.entity_id.endswith(scenario.id)
            or submission.entity_id in owned_ids
        ) and not submission.is_deletable():
            return (
                f"Scenario {scenario.id!r} has an unfinished submission "
                f"{submission.id!r}; cancel its jobs or wait for them first."
            )
    return None


def _delete_scenario(scenario: Scenario) -> None:
    if not scenario.is_deletable():
        raise ConfigurationError(
            f"Scenario {scenario.id!r} is the primary scenario of its cycle and other "
            "scenarios share that cycle; make another one primary with "
            "tp.set_primary() first."
        )
    owned = _scenario_owned_ids(scenario)
    blocker = _scenario_blocker(scenario, set(owned))
    if blocker is not None:
        raise SubmissionNotDeletedException(blocker)

    deletion = _Deletion()
    for submission in _scenario_submissions(scenario):
        deletion.add_submission(submission)
    deletion.add_owned([*owned, scenario.id])
    deletion.run()
    bus.publish(Event(EventEntityType.SCENARIO, EventOperation.DELETION, scenario.id))


def _cycle_owned_ids(cycle: Cycle) -> list[str]:
    store = _runtime.store()
    tasks = [task.id for task in store.get_all("task") if task.owner_id == cycle.id]
    nodes = [node.id for node in store.get_all("data_node", owner_id=cycle.id)]
    return tasks + nodes


def _cycle_blocker(cycle: Cycle) -> str | None:
    """Return why ``cycle`` cannot be deleted now, or None when it can."""
    for scenario in get_scenarios(cycle):
        blocker = _scenario_blocker(scenario, set(_scenario_owned_ids(scenario)))
        if blocker is not None:
            return blocker
    owned = set(_cycle_owned_ids(cycle))
    for job in get_jobs():
        if not job.is_finished() and job.task_id in owned:
            return (
                f"Cycle {cycle.id!r} owns task {job.task_id!r}, whose job {job.id!r} "
                f"is {job.status.name}; cancel it with tp.cancel_job() or wait for it "
                "before deleting the cycle."
            )
    return None


def _delete_cycle(cycle: Cycle) -> None:
    blocker = _cycle_blocker(cycle)
    if blocker is not None:
        raise JobNotDeletedException(blocker)

    # The primary flag does not hold a cycle's deletion back: every scenario goes.
    scenarios = get_scenarios(cycle)
    deletion = _Deletion()
    for scenario in scenarios:
        for submission in _scenario_submissions(scenario):
            deletion.add_submission(submission)
        deletion.add_owned([*_scenario_owned_ids(scenario), scenario.id])
    owned = _cycle_owned_ids(cycle)
    owned_set = set(owned)
    for submission in get_submissions():
        if submission.entity_id in owned_set:
            deletion.add_submission(submission)
    deletion.add_owned([*owned, cycle.id])
    deletion.run()

    for scenario in scenarios:
        bus.publish(
            Event(EventEntityType.SCENARIO, EventOperation.DELETION, scenario.id)
        )
    bus.publish(Event(EventEntityType.CYCLE, EventOperation.DELETION, cycle.id))


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


def delete_job(job: Job, force: bool = False) -> None:
    """Delete a finished job; an unfinished one needs ``force=True``."""
    if not job.is_finished() and not force:
        raise JobNotDeletedException(
            f"Job {job.id!r} is {job.status.name} and cannot be deleted; cancel it "
            "first or pass force=True."
        )
    job.log_path.unlink(missing_ok=True)
    _runtime.store().delete([job.id])


def delete_jobs() -> None:
    """Delete every job."""
    for job in get_jobs():
        delete_job(job, force=True)


def _delete_submission(submission: Submission) -> None:
    if not submission.is_deletable():
        raise SubmissionNotDeletedException(
            f"Submission {submission.id!r} is {submission.submission_status.name} "
            "and cannot be deleted; cancel its jobs or wait for them first."
        )
    deletion = _Deletion()
    deletion.add_submission(submission)
    deletion.run()


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
    return True
