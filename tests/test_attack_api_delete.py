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
from jupyter_scenarios.exceptions import JobNotDeletedException, NonExistingDataNode

pytestmark = pytest.mark.usefixtures("engine")


def double(value: int) -> int:
    return 2 * value


def add(left: int, right: int) -> int:
    return left + right


def remove_node_then_double(node_id: str) -> int:
    # Removes the node from the store while this job runs, as a kernel that does
    # not see the running job would.
    from jupyter_scenarios import _runtime

    _runtime.store().delete([node_id])
    return 42


# -- Taipy names -------------------------------------------------------------------------

# Names in Taipy 4.1's public API (taipy.core), checked in its source.
TAIPY_NAMES = [
    (tp, "get_cycles_scenarios"),
    (tp, "is_promotable"),
    (tp, "is_readable"),
    (tp, "is_editable"),
    (tp, "is_deletable"),
    (tp, "is_submittable"),
    (tp, "exists"),
    (tp.Scenario, "get_inputs"),
    (tp.Scenario, "get_outputs"),
    (tp.Scenario, "get_intermediate"),
    (tp.Scenario, "is_ready_to_run"),
    (tp.Sequence, "get_inputs"),
    (tp.Sequence, "get_outputs"),
    (tp.Sequence, "get_intermediate"),
    (tp.Sequence, "is_ready_to_run"),
]


@pytest.mark.parametrize(
    ("owner", "name"),
    TAIPY_NAMES,
    ids=[f"{getattr(owner, '__name__', owner)}.{name}" for owner, name in TAIPY_NAMES],
)
def test_taipy_name_exists(owner: object, name: str) -> None:
    assert hasattr(owner, name), f"{getattr(owner, '__name__', owner)} has no {name}"


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


def config_ids(nodes: set[tp.DataNode]) -> list[str]:
    return sorted(node.config_id for node in nodes)


def test_scenario_inputs_outputs_intermediate() -> None:
    scenario = tp.create_scenario(chain_config())

    assert config_ids(scenario.get_inputs()) == ["first", "second"]
    assert config_ids(scenario.get_outputs()) == ["last"]
    assert config_ids(scenario.get_intermediate()) == ["middle"]


def test_sequence_inputs_outputs_intermediate() -> None:
    scenario = tp.create_scenario(chain_config())
    front = scenario.sequences["front"]

    assert config_ids(front.get_inputs()) == ["first"]
    assert config_ids(front.get_outputs()) == ["middle"]
    assert config_ids(front.get_intermediate()) == []


def test_ready_to_run_names_unwritten_input() -> None:
    scenario = tp.create_scenario(chain_config())

    before = scenario.is_ready_to_run()
    sequence_before = scenario.sequences["front"].is_ready_to_run()
    scenario.first.write(5)

    assert not before
    assert scenario.first.id in before.reasons
    assert "first" in str(before)
    assert not sequence_before
    assert scenario.is_ready_to_run()
    assert scenario.data_nodes_being_edited() == set()
    assert scenario.sequences["front"].is_ready_to_run()


def test_cycles_scenarios_groups_by_cycle() -> None:
    config = chain_config(Frequency.DAILY)
    july_a = tp.create_scenario(config, creation_date=datetime(2024, 7, 1))
    july_b = tp.create_scenario(config, creation_date=datetime(2024, 7, 1, 9))
    august = tp.create_scenario(config, creation_date=datetime(2024, 8, 1))
    free_input = Config.configure_data_node("free_input", default_data=1)
    free_output = Config.configure_data_node("free_output")
    free_task = Config.configure_task("free", double, free_input, free_output)
    free = tp.create_scenario(Config.configure_scenario("free", [free_task]))

    grouped = tp.get_cycles_scenarios()

    assert set(grouped) == {july_a.cycle, august.cycle, None}
    assert grouped[july_a.cycle] == [july_a, july_b]
    assert grouped[august.cycle] == [august]
    assert grouped[None] == [free]


def test_is_promotable_reasons() -> None:
    config = chain_config(Frequency.DAILY)
    primary = tp.create_scenario(config, creation_date=datetime(2024, 7, 1))
    other = tp.create_scenario(config, creation_date=datetime(2024, 7, 1, 9))
    no_cycle = tp.create_scenario(Config.configure_scenario("plain", []))

    assert tp.is_promotable(other)
    assert tp.is_promotable(other.id)
    assert not tp.is_promotable(primary)
    assert "already the primary" in str(tp.is_promotable(primary))
    assert not tp.is_promotable(no_cycle)
    assert "no cycle" in str(tp.is_promotable(no_cycle))
    assert "SCENARIO_missing" in str(tp.is_promotable("SCENARIO_missing"))


def test_readable_editable_need_existing_entity() -> None:
    scenario = tp.create_scenario(chain_config())
    node_id = scenario.notes.id
    tp.delete(node_id)

    for check in (tp.is_readable, tp.is_editable):
        assert check(scenario)
        assert check(scenario.first.id)
        assert check(scenario.sequences["front"])
        assert not check(node_id)
        assert node_id in str(check(node_id))


# -- cycle deletion ----------------------------------------------------------------------


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


# -- submission of a task whose data node was deleted ----------------------------------


def one_task_scenario() -> tp.Scenario:
    number = Config.configure_data_node("number", default_data=21)
    result = Config.configure_data_node("result")
    task = Config.configure_task("doubling", double, number, result)
    return tp.create_scenario(Config.configure_scenario("lost", [task]))


def test_deleted_output_fails_submission() -> None:
    scenario = one_task_scenario()
    output_id = scenario.result.id

    tp.delete(output_id)
    with pytest.raises(NonExistingDataNode) as raised:
        scenario.submit(wait=True, timeout=60)

    message = str(raised.value)
    assert output_id in message, f"error does not name the data node: {message}"
    assert "doubling" in message, f"error does not name the task: {message}"
    assert tp.get_submissions() == []
    assert tp.get_jobs() == []


def test_deleted_input_fails_submission() -> None:
    scenario = one_task_scenario()
    input_id = scenario.number.id
    task = scenario.doubling

    tp.delete(input_id)

    for entity in (scenario, task):
        with pytest.raises(NonExistingDataNode) as raised:
            tp.submit(entity)
        assert input_id in str(raised.value)
    assert tp.get_jobs() == []
    assert not tp.is_submittable(scenario)
    assert input_id in tp.is_submittable(scenario).reasons


def test_output_deleted_while_running_fails_job() -> None:
    target = Config.configure_data_node("target")
    result = Config.configure_data_node("result")
    task = Config.configure_task("removing", remove_node_then_double, target, result)
    scenario = tp.create_scenario(Config.configure_scenario("vanishing", [task]))
    result_id = scenario.result.id
    result_path = scenario.result.path
    scenario.target.write(result_id)

    submission = scenario.submit(wait=True, timeout=60)

    [job] = submission.jobs
    assert job.status is Status.FAILED
    assert result_id in (job.reason or ""), f"reason: {job.reason}"
    assert tp.get(result_id) is None
    assert not result_path.exists(), "the deleted node's file was written"
    leftovers = [
        path.name for path in result_path.parent.iterdir() if job.id in path.name
    ]
    assert leftovers == [], f"staging files left: {leftovers}"
