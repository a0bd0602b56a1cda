"""Deletion: ``delete``, ``is_deletable``, ``delete_job(s)`` and ``clean_all_entities``."""

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
    """Return whether ``entity`` can be deleted now."""
    if isinstance(entity, str):
        entity = get(entity)
    if isinstance(entity, (Scenario, Job, Submission)):
        return entity.is_deletable()
    return entity is not None


def delete(entity_id: str) -> None:
    """Delete an entity and what it owns.

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
        for scenario in get_scenarios(entity):
            _delete_scenario(scenario, check_primary=False)
        _runtime.store().delete([entity.id])
    else:
        _check_no_unfinished_jobs(entity)
        _delete_owned([entity.id])


def _check_no_unfinished_jobs(entity: Task | DataNode) -> None:
    # A task or data node that unfinished jobs still read or write cannot go.
    task_ids = {entity.id} if isinstance(entity, Task) else set(entity.parent_ids)
    for job in get_jobs():
        if not job.is_finished() and job.task_id in task_ids:
            raise JobNotDeletedException(
                f"{type(entity).__name__} {entity.id!r} is used by job {job.id!r}, "
                f"which is {job.status.name}; cancel it with tp.cancel_job() or wait "
                "for it before deleting."
            )


def _delete_scenario(scenario: Scenario, check_primary: bool = True) -> None:
    if check_primary and not scenario.is_deletable():
        raise ConfigurationError(
            f"Scenario {scenario.id!r} is the primary scenario of its cycle and other "
            "scenarios share that cycle; make another one primary with "
            "tp.set_primary() first."
        )
    children: list[Task | DataNode] = [
        *scenario.tasks.values(),
        *scenario.data_nodes.values(),
    ]
    owned = [entity.id for entity in children if entity.owner_id == scenario.id]
    # A task submitted on its own has a submission of its own; its jobs still use
    # the task and data nodes deleted below.
    owned_ids = set(owned)
    for submission in get_submissions():
        if (
            submission.entity_id == scenario.id
            or submission.entity_id.endswith(scenario.id)
            or submission.entity_id in owned_ids
        ) and not submission.is_deletable():
            raise SubmissionNotDeletedException(
                f"Scenario {scenario.id!r} has an unfinished submission "
                f"{submission.id!r}; cancel its jobs or wait for them first."
            )
    with _runtime.store().batch():
        for submission in get_submissions():
            if submission.entity_id == scenario.id or submission.entity_id.endswith(
                scenario.id
            ):
                _delete_submission(submission)
        _delete_owned(owned)
        _runtime.store().delete([scenario.id])
    bus.publish(Event(EventEntityType.SCENARIO, EventOperation.DELETION, scenario.id))


def _delete_owned(entity_ids: list[str]) -> None:
    store = _runtime.store()
    doomed: list[str] = []
    for entity_id in entity_ids:
        entity = store.get(entity_id)
        if isinstance(entity, Task):
            doomed.extend(job.id for job in store.get_all("job", task_id=entity.id))
        if isinstance(entity, DataNode):
            _delete_data_file(entity)
        doomed.append(entity_id)
    store.delete(doomed)


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
    store = _runtime.store()
    for job in submission.jobs:
        job.log_path.unlink(missing_ok=True)
    store.delete([*submission.job_ids, submission.id])


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
