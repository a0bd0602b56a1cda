"""The task graph: data nodes and tasks as a networkx directed graph.

Edges run from each input data node to its task and from each task to its outputs.
The graph is used to reject cycles (the error names the cycle), to order the jobs of a
submission in topological generations, and to find the jobs downstream of a job.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

import networkx as nx

from .exceptions import CycleInGraphError


class TaskLike(Protocol):
    """Anything with an id and input and output data node ids, config or entity."""

    @property
    def id(self) -> str: ...


def _edges(task: object) -> tuple[list[str], list[str]]:
    # Task configs hold data node configs; task entities hold data node ids.
    inputs = getattr(task, "input_ids", None)
    outputs = getattr(task, "output_ids", None)
    if inputs is None:
        inputs = [dn.id for dn in task.input_configs]  # type: ignore[attr-defined]
        outputs = [dn.id for dn in task.output_configs]  # type: ignore[attr-defined]
    return list(inputs), list(outputs or [])


def build_graph(tasks: Iterable[TaskLike]) -> nx.DiGraph:
    """Return the bipartite graph of ``tasks`` and their data nodes.

    Nodes are ``("task", id)`` and ``("data", id)`` tuples.
    """
    graph = nx.DiGraph()
    for task in tasks:
        task_node = ("task", task.id)
        graph.add_node(task_node)
        inputs, outputs = _edges(task)
        for dn_id in inputs:
            graph.add_edge(("data", dn_id), task_node)
        for dn_id in outputs:
            graph.add_edge(task_node, ("data", dn_id))
    return graph


def check_acyclic(owner: str, tasks: Iterable[TaskLike]) -> None:
    """Raise ``CycleInGraphError`` naming the cycle if the task graph has one."""
    graph = build_graph(tasks)
    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        return
    path = [edge[0][1] for edge in cycle] + [cycle[0][0][1]]
    raise CycleInGraphError(
        f"The tasks of {owner!r} form a cycle: {' -> '.join(path)}. A task cannot "
        "read, directly or through other tasks, a data node it writes; split the "
        "data node in two (for example an input and an updated copy)."
    )


def task_generations(tasks: Sequence[TaskLike]) -> list[list[TaskLike]]:
    """Return ``tasks`` grouped in topological generations (producers first)."""
    by_id = {task.id: task for task in tasks}
    graph = build_graph(tasks)
    generations = []
    for generation in nx.topological_generations(graph):
        ids = sorted(node[1] for node in generation if node[0] == "task")
        if ids:
            generations.append([by_id[task_id] for task_id in ids])
    return generations


def topological_order(tasks: Sequence[TaskLike]) -> list[TaskLike]:
    """Return ``tasks`` in an order where each task comes after its producers."""
    return [task for generation in task_generations(tasks) for task in generation]
