"""Taipy API names, cycle deletion and submissions whose data nodes were deleted.

Taipy deletes, with a cycle, its scenarios and the CYCLE-scoped tasks and data nodes
it owns. A task whose input or output data node no longer exists cannot run, so its
submission is rejected before any job is created.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from engine_fixtures import engine as engine_fixture  # noqa: F401 - fixture

import jupyter_scenarios as tp
from jupyter_scenarios import Config, Frequency, Scope, Status
from jupyter_scenarios.exceptions import JobNotDeletedException

pytestmark = pytest.mark.usefixtures("engine")


def double(value: int) -> int:
    return 2 * value


def add(left: int, right: int) -> int:
    return left + right


def chain_config(frequency: Frequency | None = None) -> tp.Scenario:
    """``first -> double -> middle -> add(middle, second) -> last``, plus ``notes``."""
    first = Config.configure_data_node("first")
    second = Config.configure_data_node("second", default_data=1)
    middle = Config.configure_data_node("middle")
    last = Config.configure_data_node("last")
    notes = Config.configure_data_node("notes")
    doubling = Config.configure_task("doubling", double, first, middle)
    adding = Config.configure_task("adding", add, [middle, second], last)
    return Config.configure_scenario(
        "chain",
        [doubling, adding],
        additional_data_node_configs=[notes],
        frequency=frequency,
        sequences={"front": [doubling]},
    )


def test_delete_cycle_deletes_cycle_nodes(engine: Path) -> None:
    # Taipy's cycle deletion also deletes the data nodes and tasks the cycle owns.
    shared = Config.configure_data_node("per_day", scope=Scope.CYCLE, default_data=1)
    number = Config.configure_data_node("number", default_data=2)
    result = Config.configure_data_node("result")
    task = Config.configure_task("doubling", double, number, result)
    config = Config.configure_scenario(
        "daily",
        [task],
        additional_data_node_configs=[shared],
        frequency=Frequency.DAILY,
    )
    scenario = tp.create_scenario(config)
    cycle = scenario.cycle
    cycle_node = scenario.per_day
    cycle_file = cycle_node.path

    tp.delete(cycle.id)

    assert tp.get_scenarios() == []
    assert tp.get(cycle_node.id) is None, "the cycle's data node outlived its cycle"
    assert not cycle_file.exists(), f"{cycle_file} outlived its cycle"


def scoped_config() -> tp.Scenario:
    """``rate`` (GLOBAL) -> scale -> ``monthly`` (CYCLE) -> apply -> ``result``."""
    rate = Config.configure_data_node("rate", scope=Scope.GLOBAL, default_data=2)
    monthly = Config.configure_data_node("monthly", scope=Scope.CYCLE)
    result = Config.configure_data_node("result")
    scale = Config.configure_task("scale", double, rate, monthly)
    apply = Config.configure_task("apply", double, monthly, result)
    return Config.configure_scenario(
        "scoped", [scale, apply], frequency=Frequency.MONTHLY
    )


def test_delete_cycle_keeps_other_cycles() -> None:
    config = scoped_config()
    march = tp.create_scenario(config, creation_date=datetime(2024, 3, 1))
    march.submit(wait=True, timeout=60)
    april = tp.create_scenario(config, creation_date=datetime(2024, 4, 1))
    march_ids = [march.monthly.id, march.scale.id, march.result.id, march.apply.id]
    rate = march.rate
    job_ids = [job.id for job in tp.get_jobs()]

    tp.delete(march.cycle.id)

    for entity_id in [*march_ids, *job_ids]:
        assert tp.get(entity_id) is None, f"{entity_id} outlived its cycle"
    assert tp.get_submissions() == []
    assert tp.get_cycles() == [april.cycle]
    assert tp.get(april.monthly.id) is not None
    assert tp.get(april.scale.id) is not None
    assert tp.get(rate.id) is not None, "the GLOBAL data node was deleted"
    assert rate.read() == 2


def test_cycle_with_unfinished_job_kept() -> None:
    config = chain_config(Frequency.DAILY)
    scenario = tp.create_scenario(config, creation_date=datetime(2024, 7, 1))
    # "first" was never written, so the job waits for it, BLOCKED.
    submission = scenario.submit()
    [job] = [job for job in submission.jobs if job.task_config_id == "doubling"]
    cycle = scenario.cycle

    deletable = tp.is_deletable(cycle)
    with pytest.raises(JobNotDeletedException) as raised:
        tp.delete(cycle.id)

    assert job.status is Status.BLOCKED
    assert not deletable
    assert submission.id in str(raised.value)
    assert tp.get(cycle.id) is not None
    assert tp.get(scenario.id) is not None
    assert tp.get(scenario.first.id) is not None
    tp.cancel_job(job)
    assert tp.is_deletable(cycle)


def test_cycle_task_job_keeps_cycle() -> None:
    monthly = Config.configure_data_node("monthly", scope=Scope.CYCLE)
    scaled = Config.configure_data_node("scaled", scope=Scope.CYCLE)
    scale = Config.configure_task("scale", double, monthly, scaled)
    config = Config.configure_scenario("cyclic", [scale], frequency=Frequency.DAILY)
    scenario = tp.create_scenario(config)
    # The task belongs to the cycle and is submitted on its own. Its input was
    # never written, so its job waits, BLOCKED.
    [job] = scenario.scale.submit().jobs
    cycle = scenario.cycle

    deletable = tp.is_deletable(cycle)
    with pytest.raises(JobNotDeletedException) as raised:
        tp.delete(cycle.id)

    assert not deletable
    assert job.id in str(raised.value)
    assert tp.get(scenario.scale.id) is not None
    tp.cancel_job(job)
    tp.delete(cycle.id)
    assert tp.get_submissions() == []
    assert tp.get_tasks() == []


def test_deletable_cycle_agrees_with_delete() -> None:
    config = chain_config(Frequency.DAILY)
    scenario = tp.create_scenario(config, creation_date=datetime(2024, 7, 1))
    tp.create_scenario(config, creation_date=datetime(2024, 7, 1, 9))

    assert tp.is_deletable(scenario.cycle)
    tp.delete(scenario.cycle.id)
    assert tp.get_cycles() == []
    assert tp.get_data_nodes() == []
    assert tp.get_tasks() == []
