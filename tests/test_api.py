"""The ``tp.*`` functions: errors for bad input, subscriptions, lookups and restarts.

Every error test checks that the message names the offending value, because a user
who mistyped an id must be able to find it from the message alone.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from engine_fixtures import engine as engine_fixture  # noqa: F401 - fixture

import jupyter_scenarios as tp
from jupyter_scenarios import Config, Scope, Status
from jupyter_scenarios.exceptions import (
    ConfigurationError,
    CycleInGraphError,
    InvalidStorageType,
    ModeNotAvailable,
    NoData,
    NonExistingEntity,
    NonExistingJob,
)
from jupyter_scenarios.store import StoreError

pytestmark = pytest.mark.usefixtures("engine")


def double(value: int) -> int:
    return 2 * value


def add(left: int, right: int) -> int:
    return left + right


def one_task_scenario(name: str = "single", default: Any = 4) -> tp.Scenario:
    extra = {} if default is None else {"default_data": default}
    my_input = Config.configure_data_node("my_input", **extra)
    my_output = Config.configure_data_node("my_output")
    task = Config.configure_task("double", double, my_input, my_output)
    return tp.create_scenario(Config.configure_scenario(name, [task]))


# -- errors that name the bad value ------------------------------------------------------


def test_unknown_scenario_config_names_it() -> None:
    Config.configure_scenario("declared", [])

    with pytest.raises(ConfigurationError) as raised:
        tp.create_scenario("not_declared")

    message = str(raised.value)
    assert "'not_declared'" in message
    assert "declared" in message


def test_non_callable_function_names_it() -> None:
    my_input = Config.configure_data_node("my_input")

    with pytest.raises(ConfigurationError) as raised:
        Config.configure_task("broken", 42, my_input, [])  # type: ignore[arg-type]

    message = str(raised.value)
    assert "'broken'" in message
    assert "42" in message


def test_cycle_in_graph_names_cycle() -> None:
    first = Config.configure_data_node("first_node")
    second = Config.configure_data_node("second_node")
    forward = Config.configure_task("forward", double, first, second)
    backward = Config.configure_task("backward", double, second, first)

    with pytest.raises(CycleInGraphError) as raised:
        Config.configure_scenario("loop", [forward, backward])

    message = str(raised.value)
    for name in ("loop", "forward", "backward", "first_node", "second_node"):
        assert name in message, name
    assert "->" in message


def test_read_of_unwritten_node_warns(caplog: pytest.LogCaptureFixture) -> None:
    scenario = one_task_scenario()

    with pytest.warns(UserWarning, match="my_output"):
        value = scenario.my_output.read()

    assert value is None


def test_read_or_raise_of_unwritten_node_raises() -> None:
    scenario = one_task_scenario()

    with pytest.raises(NoData, match=scenario.my_output.id):
        scenario.my_output.read_or_raise()
    assert scenario.my_input.read_or_raise() == 4


def test_unknown_storage_type_lists_valid_ones() -> None:
    with pytest.raises(InvalidStorageType) as raised:
        Config.configure_data_node("bad_storage", storage_type="sqlite_table")

    message = str(raised.value)
    assert "'sqlite_table'" in message
    for valid in ("pickle", "csv", "excel", "json", "parquet", "in_memory", "generic"):
        assert valid in message, valid


def test_unknown_mode_names_it() -> None:
    with pytest.raises(ModeNotAvailable, match="'turbo'"):
        Config.configure_job_executions(mode="turbo")


@pytest.mark.parametrize("workers", ["two", "", 2.5, 0, True])
def test_invalid_worker_count_names_it(workers: Any) -> None:
    before = Config.job_config

    with pytest.raises(ConfigurationError) as raised:
        Config.configure_job_executions(mode="standalone", max_nb_of_workers=workers)

    assert f"got {workers!r}." in str(raised.value)
    assert "max_nb_of_workers=2" in str(raised.value)
    assert Config.job_config is before


@pytest.mark.parametrize("workers", [3, "3", "ENV[TEST_API_WORKERS]"])
def test_worker_count_forms_accepted(
    workers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_API_WORKERS", "3")

    Config.configure_job_executions(mode="standalone", max_nb_of_workers=workers)

    assert Config.job_config.max_nb_of_workers == 3


def test_worker_count_from_environment_names_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_API_WORKERS", "two")
    Config.configure_job_executions(
        mode="standalone", max_nb_of_workers="ENV[TEST_API_WORKERS]"
    )

    with pytest.raises(ConfigurationError, match="'two' is not a whole number"):
        tp.Orchestrator().run()


def test_scenario_of_other_folder_is_not_called_deleted(engine: Path) -> None:
    scenario = one_task_scenario()
    Config.configure_core(storage_folder=str(engine / "elsewhere"))

    for submit in (scenario.submit, lambda: tp.submit(scenario)):
        with pytest.raises(NonExistingEntity) as raised:
            submit()
        message = str(raised.value)
        assert "deleted" not in message, message
        assert f"belongs to the storage folder {engine.resolve()}" in message, message
        assert "elsewhere" in message, message

    with pytest.raises(NonExistingEntity, match="belongs to the storage folder"):
        tp.delete(scenario)  # type: ignore[arg-type]

    Config.configure_core(storage_folder=str(engine))
    assert scenario.submit(wait=True).jobs[0].is_completed()
    assert scenario.my_output.read() == 8


def test_unknown_job_id_names_it() -> None:
    with pytest.raises(NonExistingJob, match="JOB_missing_0"):
        tp.cancel_job("JOB_missing_0")


def test_entity_of_closed_store_says_why(engine: Path) -> None:
    # Its data nodes are no longer in the old store's memory, so reading one
    # needs that store's database.
    scenario = one_task_scenario()
    tp.delete(scenario.id)
    Config.configure_core(storage_folder=str(engine / "elsewhere"))
    assert tp.get_scenarios() == []  # the orchestrator moves to the new folder

    with pytest.raises(StoreError, match="is closed") as raised:
        _ = scenario.my_input
    assert str(engine.resolve()) in str(raised.value)


def test_attribute_of_deleted_scenario_says_deleted() -> None:
    scenario = one_task_scenario()
    assert scenario.my_input.read() == 4
    tp.delete(scenario.id)

    with pytest.raises(AttributeError, match="was deleted") as raised:
        _ = scenario.my_input
    assert scenario.id in str(raised.value)
    assert not hasattr(scenario, "my_input")
    with pytest.raises(AttributeError, match="its data nodes are"):
        _ = one_task_scenario("other").no_such_name


def test_delete_unknown_entity_names_it() -> None:
    with pytest.raises(NonExistingEntity, match="SCENARIO_missing_0"):
        tp.delete("SCENARIO_missing_0")


def test_submit_of_non_entity_names_it() -> None:
    with pytest.raises((TypeError, NonExistingEntity), match="42"):
        tp.submit(42)  # type: ignore[arg-type]


def test_invalid_identifier_names_it() -> None:
    with pytest.raises(ConfigurationError, match="'my input'"):
        Config.configure_data_node("my input")


def test_global_creation_of_scenario_scope_rejected() -> None:
    local = Config.configure_data_node("local")

    with pytest.raises(ConfigurationError, match="'local'"):
        tp.create_global_data_node(local)


# -- scenario subscribers ----------------------------------------------------------------


def test_scenario_subscriber_sees_three_transitions() -> None:
    scenario = one_task_scenario()
    calls: list[tuple[Any, ...]] = []

    def callback(*arguments: Any) -> None:
        calls.append((*arguments[:-1], arguments[-1].status))

    tp.subscribe_scenario(callback, ["first", 2], scenario)
    scenario.submit()

    assert calls == [
        ("first", 2, scenario, Status.PENDING),
        ("first", 2, scenario, Status.RUNNING),
        ("first", 2, scenario, Status.COMPLETED),
    ]


def test_global_subscriber_follows_every_scenario() -> None:
    first = one_task_scenario()
    second = tp.create_scenario("single")
    seen: list[str] = []

    tp.subscribe_scenario(lambda scenario, job: seen.append(scenario.id))
    first.submit()
    second.submit()

    assert seen == [first.id] * 3 + [second.id] * 3


def test_subscriber_only_follows_later_jobs() -> None:
    scenario = one_task_scenario(default=None)
    calls: list[Status] = []
    blocked = scenario.submit()
    assert blocked.jobs[0].status is Status.BLOCKED

    scenario.subscribe(lambda scenario, job: calls.append(job.status))
    scenario.my_input.write(1)

    assert blocked.jobs[0].status is Status.COMPLETED
    assert calls == []

    scenario.submit()

    assert calls == [Status.PENDING, Status.RUNNING, Status.COMPLETED]


def test_unsubscribe_absent_callback_raises() -> None:
    scenario = one_task_scenario()

    with pytest.raises(ValueError):
        tp.unsubscribe_scenario(double, scenario=scenario)
    with pytest.raises(ValueError):
        tp.unsubscribe_scenario(double)


def test_unsubscribe_duplicate_removes_first() -> None:
    scenario = one_task_scenario()
    calls: list[tuple[Any, ...]] = []

    def callback(*arguments: Any) -> None:
        calls.append(arguments[:-2])

    tp.subscribe_scenario(callback, ["first"], scenario)
    tp.subscribe_scenario(callback, ["second"], scenario)
    tp.unsubscribe_scenario(callback, scenario=scenario)
    scenario.submit()

    assert calls == [("second",)] * 3
    tp.unsubscribe_scenario(callback, scenario=scenario)
    with pytest.raises(ValueError):
        tp.unsubscribe_scenario(callback, scenario=scenario)


# -- lookups -----------------------------------------------------------------------------


def test_lookups_by_id_and_config() -> None:
    scenario = one_task_scenario()
    task = scenario.tasks["double"]

    assert tp.get(scenario.id) == scenario
    assert tp.exists(scenario.id) is True
    assert tp.exists("SCENARIO_missing_0") is False
    assert tp.get_scenarios() == [scenario]
    assert set(tp.get_data_nodes()) == {scenario.my_input, scenario.my_output}
    assert tp.get_tasks() == [task]
    assert set(tp.get_entities_by_config_id("my_input")) == {scenario.my_input}
    parents = tp.get_parents(scenario.my_output)
    assert parents["task"] == {task}
    assert parents["scenario"] == {scenario}


def test_tags_and_sorting() -> None:
    first = one_task_scenario()
    first.name = "b scenario"
    second = tp.create_scenario("single", name="a scenario")

    tp.tag(first, "baseline")

    assert tp.get_scenarios(tag="baseline") == [first]
    assert [s.name for s in tp.get_scenarios(is_sorted=True)] == [
        "a scenario",
        "b scenario",
    ]
    tp.untag(first, "baseline")
    assert tp.get_scenarios(tag="baseline") == []
    assert second.has_tag("baseline") is False


def test_compare_scenarios_uses_comparators() -> None:
    my_input = Config.configure_data_node("my_input", default_data=4)
    my_output = Config.configure_data_node("my_output")
    task = Config.configure_task("double", double, my_input, my_output)

    def difference(left: int, right: int) -> int:
        return right - left

    config = Config.configure_scenario(
        "compared", [task], comparators={"my_output": difference}
    )
    first = tp.create_scenario(config)
    second = tp.create_scenario(config)
    second.my_input.write(10)
    first.submit()
    second.submit()

    assert tp.compare_scenarios(first, second) == {"my_output": {"difference": 12}}


# -- persistence across a restart --------------------------------------------------------


def test_entities_survive_restart() -> None:
    scenario = one_task_scenario()
    submission = scenario.submit(note="kept")
    scenario.properties["owner"] = "analyst"
    scenario.my_output.write(100, comment="manual")
    ids = (scenario.id, submission.id, scenario.my_output.id)

    tp.Orchestrator().stop()
    tp.Orchestrator().run()

    reloaded, reloaded_submission, reloaded_output = (tp.get(i) for i in ids)
    assert reloaded is not scenario
    assert reloaded.properties["owner"] == "analyst"
    assert reloaded_submission.properties == {"note": "kept"}
    assert reloaded_submission.submission_status.name == "COMPLETED"
    assert reloaded_output.read() == 100
    assert reloaded_output.edits[-1]["comment"] == "manual"
    assert reloaded_output.job_ids == [submission.jobs[0].id]


def test_task_function_from_store_after_reset(engine: Path) -> None:
    scenario = one_task_scenario()
    scenario_id = scenario.id
    tp.Orchestrator().stop()
    Config._reset()
    Config.configure_core(storage_folder=str(engine))

    reloaded = tp.get(scenario_id)
    submission = reloaded.submit()

    assert submission.jobs[0].status is Status.COMPLETED
    assert reloaded.my_output.read() == 8


def test_redeclared_function_runs_in_existing_scenario() -> None:
    scenario = one_task_scenario()
    my_input = Config.configure_data_node("my_input", default_data=4)
    my_output = Config.configure_data_node("my_output")
    Config.configure_task("double", lambda value: value * 100, my_input, my_output)

    scenario.submit()

    assert scenario.my_output.read() == 400


def test_global_data_node_created_once() -> None:
    rate = Config.configure_data_node("rate", scope=Scope.GLOBAL, default_data=2)

    node = tp.create_global_data_node(rate)

    assert node.read() == 2
    assert tp.create_global_data_node(rate) == node


def test_clean_all_entities_logs_nothing_alarming(
    caplog: pytest.LogCaptureFixture,
) -> None:
    one_task_scenario().submit()

    with caplog.at_level(logging.WARNING):
        assert tp.clean_all_entities() is True

    assert tp.get_scenarios() == []
    assert tp.get_jobs() == []
    assert caplog.records == []


def test_create_scenario_rejects_none() -> None:
    """create_scenario(None) names the expected argument, not a missing name."""
    with pytest.raises(TypeError, match="got None"):
        tp.create_scenario(None)  # type: ignore[arg-type]
