"""Entities: scenarios, sequences, tasks, data nodes, jobs, submissions and cycles."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .cycle import Cycle
from .data_node import DataNode
from .job import Job
from .scenario import Scenario, Sequence
from .submission import Submission
from .task import Task

if TYPE_CHECKING:
    from ..store import Store

__all__ = [
    "Cycle",
    "DataNode",
    "Job",
    "Scenario",
    "Sequence",
    "Submission",
    "Task",
    "register_factories",
]


def register_factories(store: Store) -> None:
    """Teach ``store`` to build each entity kind from its stored document."""
    store.register_factory("scenario", Scenario._from_doc)
    store.register_factory("task", Task._from_doc)
    store.register_factory("data_node", DataNode._from_doc)
    store.register_factory("job", Job._from_doc)
    store.register_factory("submission", Submission._from_doc)
    store.register_factory("cycle", Cycle._from_doc)
