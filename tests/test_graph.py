"""Topological generations of tasks, as the scheduler orders a submission's jobs.

``task_generations`` works on plain dictionaries for speed. These tests compare it
with the layering that networkx computes on the bipartite graph of tasks and data
nodes.
"""

from __future__ import annotations

import dataclasses
import random

import networkx as nx
import pytest

from jupyter_scenarios.exceptions import CycleInGraphError
from jupyter_scenarios.graph import build_graph, task_generations, topological_order


@dataclasses.dataclass
class FakeTask:
    id: str
    input_ids: list[str]
    output_ids: list[str]


def networkx_generations(tasks: list[FakeTask]) -> list[list[str]]:
    generations = []
    for generation in nx.topological_generations(build_graph(tasks)):
        ids = sorted(node[1] for node in generation if node[0] == "task")
        if ids:
            generations.append(ids)
    return generations


def random_dag(seed: int) -> list[FakeTask]:
    # A task reads data nodes before a random split point and writes nodes after it,
    # so every edge goes forward and the graph has no cycle. Several tasks may write
    # one node, and a task may have no input or no output.
    chance = random.Random(seed)
    nodes = [f"node{index}" for index in range(chance.randint(1, 15))]
    tasks = []
    for index in range(chance.randint(1, 12)):
        split = chance.randint(0, len(nodes))
        inputs = chance.sample(nodes[:split], chance.randint(0, min(3, split)))
        outputs = chance.sample(
            nodes[split:], chance.randint(0, min(2, len(nodes) - split))
        )
        tasks.append(FakeTask(f"t{chance.randint(0, 99)}_{index}", inputs, outputs))
    chance.shuffle(tasks)
    return tasks


@pytest.mark.parametrize("first_seed", range(0, 2000, 500))
def test_generations_match_networkx(first_seed: int) -> None:
    for seed in range(first_seed, first_seed + 500):
        tasks = random_dag(seed)
        ours = [[task.id for task in level] for level in task_generations(tasks)]
        assert ours == networkx_generations(tasks), f"seed {seed}"


def test_diamond_order() -> None:
    tasks = [
        FakeTask("last", ["d"], ["e"]),
        FakeTask("join", ["b", "c"], ["d"]),
        FakeTask("right", ["a"], ["c"]),
        FakeTask("left", ["a"], ["b"]),
    ]
    order = [task.id for task in topological_order(tasks)]
    assert order == ["left", "right", "join", "last"]


def test_source_task_before_source_reader() -> None:
    # A task with no input is in generation 0 with the source data nodes, and a
    # task that reads one of them comes one generation later.
    tasks = [
        FakeTask("reads_source", ["source"], ["x"]),
        FakeTask("no_input", [], ["y"]),
    ]
    levels = [[task.id for task in level] for level in task_generations(tasks)]
    assert levels == [["no_input"], ["reads_source"]]


def test_cycle_names_its_owner_and_path() -> None:
    tasks = [FakeTask("a", ["x"], ["y"]), FakeTask("b", ["y"], ["x"])]
    with pytest.raises(CycleInGraphError) as raised:
        topological_order(tasks, "SCENARIO_looping")
    message = str(raised.value)
    assert "SCENARIO_looping" in message
    assert "a -> y -> b -> x" in message or "b -> x -> a -> y" in message


def test_own_output_as_input_is_cycle() -> None:
    with pytest.raises(CycleInGraphError):
        task_generations([FakeTask("self", ["n"], ["n"])])
