"""Tests of the configuration checker: one test per rule, plus the collector itself.

Layers are built from section objects directly, so that values which the
``Config.configure_*`` functions would reject can reach the checker, as they can
from a file or from code that edits a section after creating it.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from jupyter_scenarios.config import Config
from jupyter_scenarios.config.checker import Issue, IssueCollector, check_layer
from jupyter_scenarios.config.config import ConfigLayer
from jupyter_scenarios.config.sections import (
    DEFAULT_ID,
    CoreSection,
    DataNodeConfig,
    JobConfig,
    ScenarioConfig,
    TaskConfig,
)
from jupyter_scenarios.enums import Frequency
from jupyter_scenarios.exceptions import ConfigurationError


def step(*values: Any) -> Any:
    return values


def compare(*values: Any) -> Any:
    return values


class Row:
    def __init__(self, **columns: Any) -> None:
        self.columns = columns


@pytest.fixture(autouse=True)
def clean_config() -> Iterator[None]:
    Config._reset()
    yield
    Config._reset()


def make_layer(
    data_nodes: Sequence[DataNodeConfig] = (),
    tasks: Sequence[TaskConfig] = (),
    scenarios: Sequence[ScenarioConfig] = (),
    job: JobConfig | None = None,
) -> ConfigLayer:
    layer = ConfigLayer()
    layer.data_nodes[DEFAULT_ID] = DataNodeConfig(DEFAULT_ID)
    layer.tasks[DEFAULT_ID] = TaskConfig(DEFAULT_ID, None)
    layer.scenarios[DEFAULT_ID] = ScenarioConfig(DEFAULT_ID)
    layer.job_config = job or JobConfig()
    layer.core = CoreSection()
    for data_node in data_nodes:
        layer.data_nodes[data_node.id] = data_node
    for task in tasks:
        layer.tasks[task.id] = task
    for scenario in scenarios:
        layer.scenarios[scenario.id] = scenario
    return layer


def used(*data_nodes: DataNodeConfig) -> ConfigLayer:
    """Return a layer where one scenario uses every data node."""
    scenario = ScenarioConfig("uses_all", [], list(data_nodes))
    return make_layer(data_nodes, scenarios=[scenario])


def only_issue(issues: list[Issue]) -> Issue:
    assert len(issues) == 1, [str(issue) for issue in issues]
    return issues[0]


# -- data nodes ------------------------------------------------------------------------


def test_valid_layer_has_no_issues() -> None:
    source = DataNodeConfig("source")
    result = DataNodeConfig("result")
    task = TaskConfig("work", step, source, result)
    scenario = ScenarioConfig(
        "plan",
        [task],
        frequency=Frequency.DAILY,
        comparators={"result": compare},
        sequences={"all": [task]},
    )
    layer = make_layer([source, result], [task], [scenario])

    issues = check_layer(layer)

    assert not issues
    assert len(issues) == 0
    assert str(issues) == "The configuration check found no issues."


def test_invalid_storage_type() -> None:
    node = DataNodeConfig("sales", storage_type="sql")

    issue = only_issue(check_layer(used(node)).errors)

    assert issue.section == "DATA_NODE.sales"
    assert issue.field == "storage_type"
    assert issue.value == "sql"
    assert "DATA_NODE.sales.storage_type = 'sql'" in issue.message
    assert "'pickle'" in issue.message
    assert "'generic'" in issue.message


def test_invalid_scope() -> None:
    node = DataNodeConfig("sales", scope="PLANET")

    issue = only_issue(check_layer(used(node)).errors)

    assert issue.field == "scope"
    assert "DATA_NODE.sales.scope = 'PLANET'" in issue.message
    assert "GLOBAL" in issue.message


def test_scope_of_wrong_type() -> None:
    node = DataNodeConfig("sales")
    node.scope = 3  # type: ignore[assignment]

    issue = only_issue(check_layer(used(node)).errors)

    assert issue.value == 3
    assert "DATA_NODE.sales.scope = 3 is not a Scope" in issue.message


def test_validity_period_not_timedelta() -> None:
    node = DataNodeConfig("sales")
    node.validity_period = 5  # type: ignore[assignment]

    issue = only_issue(check_layer(used(node)).errors)

    assert issue.field == "validity_period"
    assert "DATA_NODE.sales.validity_period = 5 is not a timedelta" in issue.message


def test_validity_period_timedelta_or_none_accepted() -> None:
    nodes = [
        DataNodeConfig("daily", validity_period=dt.timedelta(days=1)),
        DataNodeConfig("forever", validity_period=None),
        DataNodeConfig("text", validity_period="0d1h0m0s"),
    ]

    assert not check_layer(used(*nodes)).errors


@pytest.mark.parametrize("mode", ["standalone", "dask"])
def test_in_memory_outside_development(mode: str) -> None:
    node = DataNodeConfig("cache", storage_type="in_memory")
    layer = used(node)
    layer.job_config = JobConfig(mode)

    issue = only_issue(check_layer(layer).errors)

    assert issue.field == "storage_type"
    assert "DATA_NODE.cache.storage_type = 'in_memory'" in issue.message
    assert repr(mode) in issue.message
    assert "Use 'pickle'" in issue.message


def test_in_memory_in_development_accepted() -> None:
    node = DataNodeConfig("cache", storage_type="in_memory")

    assert not check_layer(used(node)).errors


def test_generic_without_functions() -> None:
    node = DataNodeConfig("remote", storage_type="generic")

    issue = only_issue(check_layer(used(node)).errors)

    assert issue.section == "DATA_NODE.remote"
    assert "neither read_fct nor write_fct" in issue.message


def test_generic_function_not_callable() -> None:
    node = DataNodeConfig("remote", storage_type="generic", read_fct="load_it")

    issue = only_issue(check_layer(used(node)).errors)

    assert issue.field == "read_fct"
    assert "DATA_NODE.remote.read_fct = 'load_it' is not callable" in issue.message


def test_generic_with_one_function_accepted() -> None:
    node = DataNodeConfig("remote", storage_type="generic", write_fct=step)

    assert not check_layer(used(node)).errors


@pytest.mark.parametrize("storage_type", ["csv", "excel", "parquet"])
def test_invalid_exposed_type(storage_type: str) -> None:
    node = DataNodeConfig("table", storage_type=storage_type, exposed_type="polars")

    issue = only_issue(check_layer(used(node)).errors)

    assert issue.field == "exposed_type"
    assert "DATA_NODE.table.exposed_type = 'polars'" in issue.message
    assert "'pandas'" in issue.message


@pytest.mark.parametrize("exposed_type", ["pandas", "numpy", Row])
def test_valid_exposed_type_accepted(exposed_type: Any) -> None:
    node = DataNodeConfig("table", storage_type="csv", exposed_type=exposed_type)

    assert not check_layer(used(node)).errors


def test_excel_exposed_type_per_sheet() -> None:
    good = DataNodeConfig(
        "good", storage_type="excel", exposed_type={"a": "numpy", "b": Row}
    )
    bad = DataNodeConfig("bad", storage_type="excel", exposed_type={"a": "arrow"})

    issue = only_issue(check_layer(used(good, bad)).errors)

    assert issue.section == "DATA_NODE.bad"
    assert "'arrow'" in issue.message


def test_missing_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHECKER_TEST_STORAGE", raising=False)
    node = DataNodeConfig("sales", storage_type="ENV[CHECKER_TEST_STORAGE]")

    issue = only_issue(check_layer(used(node)).errors)

    assert issue.field == "storage_type"
    assert "CHECKER_TEST_STORAGE" in issue.message
    assert "cannot be read" in issue.message


def test_unused_data_node_info() -> None:
    orphan = DataNodeConfig("orphan")
    layer = make_layer([orphan])

    issues = check_layer(layer)

    issue = only_issue(issues.infos)
    assert issue.section == "DATA_NODE.orphan"
    assert "'orphan'" in issue.message
    assert "not used by any scenario" in issue.message
    assert not issues.errors


# -- tasks -----------------------------------------------------------------------------


def test_task_function_missing() -> None:
    node = DataNodeConfig("source")
    task = TaskConfig("work", None, node)
    scenario = ScenarioConfig("plan", [task])

    issue = only_issue(check_layer(make_layer([node], [task], [scenario])).errors)

    assert issue.section == "TASK.work"
    assert issue.field == "function"
    assert "TASK.work.function is not set (None)" in issue.message


def test_task_function_not_callable() -> None:
    node = DataNodeConfig("source")
    task = TaskConfig("work", step, node)
    task.function = 42  # type: ignore[assignment]
    scenario = ScenarioConfig("plan", [task])

    issue = only_issue(check_layer(make_layer([node], [task], [scenario])).errors)

    assert issue.value == 42
    assert "TASK.work.function = 42 is not callable" in issue.message


def test_task_input_not_data_node() -> None:
    node = DataNodeConfig("source")
    task = TaskConfig("work", step, node)
    task._inputs.append("other")  # type: ignore[arg-type]
    scenario = ScenarioConfig("plan", [task])

    issue = only_issue(check_layer(make_layer([node], [task], [scenario])).errors)

    assert issue.field == "inputs"
    assert "TASK.work.inputs contains 'other'" in issue.message
    assert "DataNodeConfig" in issue.message


def test_task_output_not_data_node() -> None:
    task = TaskConfig("work", step)
    task._outputs.append(7)  # type: ignore[arg-type]
    scenario = ScenarioConfig("plan", [task])

    issue = only_issue(check_layer(make_layer([], [task], [scenario])).errors)

    assert issue.field == "outputs"
    assert "TASK.work.outputs contains 7" in issue.message


def test_task_skippable_unreadable() -> None:
    task = TaskConfig("work", step, skippable="perhaps")
    scenario = ScenarioConfig("plan", [task])

    issue = only_issue(check_layer(make_layer([], [task], [scenario])).errors)

    assert issue.field == "skippable"
    assert "'perhaps'" in issue.message


# -- scenarios -------------------------------------------------------------------------


def test_data_node_written_by_two_tasks() -> None:
    source = DataNodeConfig("source")
    shared = DataNodeConfig("shared")
    first = TaskConfig("first", step, source, shared)
    second = TaskConfig("second", step, source, shared)
    scenario = ScenarioConfig("plan", [first, second])

    issues = check_layer(make_layer([source, shared], [first, second], [scenario]))

    issue = only_issue(issues.warnings)
    assert issue.section == "SCENARIO.plan"
    assert "'first' and 'second'" in issue.message
    assert "'shared'" in issue.message
    assert not issues.errors


def test_scenario_task_not_task_config() -> None:
    scenario = ScenarioConfig("plan")
    scenario._tasks.append("work")  # type: ignore[arg-type]

    issue = only_issue(check_layer(make_layer(scenarios=[scenario])).errors)

    assert issue.field == "tasks"
    assert "SCENARIO.plan.tasks contains 'work'" in issue.message
    assert "TaskConfig" in issue.message


def test_scenario_additional_not_data_node() -> None:
    scenario = ScenarioConfig("plan")
    scenario._additional.append("extra")  # type: ignore[arg-type]

    issue = only_issue(check_layer(make_layer(scenarios=[scenario])).errors)

    assert issue.field == "additional_data_nodes"
    assert "'extra'" in issue.message


def test_cycle_named() -> None:
    a = DataNodeConfig("a")
    b = DataNodeConfig("b")
    forward = TaskConfig("forward", step, a, b)
    backward = TaskConfig("backward", step, b, a)
    scenario = ScenarioConfig("loop", [forward, backward])

    issue = only_issue(
        check_layer(make_layer([a, b], [forward, backward], [scenario])).errors
    )

    assert issue.section == "SCENARIO.loop"
    assert "form a cycle" in issue.message
    for name in ("task 'forward'", "task 'backward'", "data node 'a'", "data node 'b'"):
        assert name in issue.message
    assert sorted(issue.value) == ["backward", "forward"]


def test_self_loop_named() -> None:
    a = DataNodeConfig("a")
    update = TaskConfig("update", step, a, a)
    scenario = ScenarioConfig("loop", [update])

    issue = only_issue(check_layer(make_layer([a], [update], [scenario])).errors)

    assert "task 'update' -> data node 'a' -> task 'update'" in issue.message


def test_sequence_task_outside_scenario() -> None:
    node = DataNodeConfig("source")
    inside = TaskConfig("inside", step, node)
    outside = TaskConfig("outside", step, node)
    scenario = ScenarioConfig("plan", [inside], sequences={"run": [inside, outside]})

    issue = only_issue(
        check_layer(make_layer([node], [inside, outside], [scenario])).errors
    )

    assert issue.field == "sequences.run"
    assert (
        "SCENARIO.plan.sequences['run'] contains TaskConfig('outside')" in issue.message
    )


def test_comparator_for_foreign_data_node() -> None:
    node = DataNodeConfig("source")
    task = TaskConfig("work", step, node)
    scenario = ScenarioConfig("plan", [task], comparators={"elsewhere": compare})

    issue = only_issue(check_layer(make_layer([node], [task], [scenario])).errors)

    assert issue.field == "comparators.elsewhere"
    assert "'elsewhere'" in issue.message
    assert "not a data node of scenario 'plan'" in issue.message


def test_comparator_not_callable() -> None:
    node = DataNodeConfig("source")
    task = TaskConfig("work", step, node)
    scenario = ScenarioConfig("plan", [task])
    scenario.comparators["source"] = ["max"]  # type: ignore[list-item]

    issue = only_issue(check_layer(make_layer([node], [task], [scenario])).errors)

    assert issue.value == "max"
    assert "SCENARIO.plan.comparators['source'] contains 'max'" in issue.message


def test_invalid_frequency() -> None:
    scenario = ScenarioConfig("plan", frequency="HOURLY")

    issue = only_issue(check_layer(make_layer(scenarios=[scenario])).errors)

    assert issue.field == "frequency"
    assert "'HOURLY'" in issue.message
    assert "WEEKLY" in issue.message


def test_frequency_of_wrong_type() -> None:
    scenario = ScenarioConfig("plan")
    scenario.frequency = 7  # type: ignore[assignment]

    issue = only_issue(check_layer(make_layer(scenarios=[scenario])).errors)

    assert "SCENARIO.plan.frequency = 7 is not a Frequency" in issue.message


# -- job -------------------------------------------------------------------------------


def test_invalid_job_mode() -> None:
    layer = make_layer(job=JobConfig("cluster"))

    issue = only_issue(check_layer(layer).errors)

    assert issue.section == "JOB"
    assert issue.field == "mode"
    assert "JOB.mode = 'cluster'" in issue.message
    assert "'standalone'" in issue.message


@pytest.mark.parametrize("workers", [0, -2, True, 1.5, "many"])
def test_invalid_max_nb_of_workers(workers: Any) -> None:
    layer = make_layer(job=JobConfig("standalone", workers))

    issue = only_issue(check_layer(layer).errors)

    assert issue.field == "max_nb_of_workers"
    assert f"JOB.max_nb_of_workers = {workers!r}" in issue.message


def test_max_nb_of_workers_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHECKER_TEST_WORKERS", "0")
    layer = make_layer(job=JobConfig("standalone", "ENV[CHECKER_TEST_WORKERS]:int"))

    issue = only_issue(check_layer(layer).errors)

    assert "JOB.max_nb_of_workers = 0" in issue.message


# -- the collector ---------------------------------------------------------------------


def test_collector_size_and_truth() -> None:
    collector = IssueCollector()
    assert not collector
    collector.add("info", "DATA_NODE.a", "id", "a", "Info sentence.")
    collector.add("warning", "SCENARIO.s", "tasks", [], "Warning sentence.")

    assert collector
    assert len(collector) == 2
    assert not collector.has_errors
    collector.raise_if_errors()
    collector.add("error", "JOB", "mode", "x", "Error sentence.")
    assert collector.has_errors
    assert [issue.level for issue in collector] == ["error", "warning", "info"]


def test_collector_text() -> None:
    collector = IssueCollector()
    collector.add("error", "JOB", "mode", "x", "JOB.mode = 'x' is wrong.")
    collector.add("info", "DATA_NODE.a", "id", "a", "DATA_NODE.a is unused.")

    text = str(collector)

    assert text.splitlines() == [
        "The configuration check found 1 error, 0 warnings, 1 info.",
        "ERROR: JOB.mode = 'x' is wrong.",
        "INFO: DATA_NODE.a is unused.",
    ]
    assert repr(collector) == "IssueCollector(errors=1, warnings=0, infos=1)"


def test_collector_pretty_printer() -> None:
    collector = IssueCollector()
    collector.add("error", "JOB", "mode", "x", "JOB.mode = 'x' is wrong.")
    printed: list[str] = []

    class Printer:
        def text(self, value: str) -> None:
            printed.append(value)

    collector._repr_pretty_(Printer(), cycle=False)

    assert printed == [str(collector)]


def test_collector_raise_if_errors() -> None:
    collector = IssueCollector()
    collector.add("error", "JOB", "mode", "x", "JOB.mode = 'x' is wrong.")

    with pytest.raises(
        ConfigurationError, match="1 error:\n- JOB.mode = 'x' is wrong."
    ):
        collector.raise_if_errors()


def test_errors_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    layer = make_layer(job=JobConfig("cluster"))

    with caplog.at_level(logging.INFO, logger="jupyter_scenarios.config.checker"):
        check_layer(layer)

    records = [
        r for r in caplog.records if r.name == "jupyter_scenarios.config.checker"
    ]
    assert [record.levelno for record in records] == [logging.ERROR]
    assert "JOB.mode = 'cluster'" in records[0].getMessage()


def test_config_check_uses_applied_configuration() -> None:
    source = Config.configure_data_node("source")
    result = Config.configure_in_memory_data_node("result")
    task = Config.configure_task("work", step, source, result)
    Config.configure_scenario("plan", [task])
    Config.configure_job_executions(mode="standalone")

    issues = Config.check()

    issue = only_issue(issues.errors)
    assert issue.section == "DATA_NODE.result"
    assert "'in_memory'" in issue.message


# -- the Python API rejects bad values at once ------------------------------------------


@pytest.mark.parametrize(
    ("call", "named"),
    [
        (lambda: Config.configure_data_node("v", validity_period=5), "validity_period"),
        (lambda: Config.configure_data_node("v", scope="sometimes"), "sometimes"),
        (lambda: Config.configure_data_node("v", scope=3), "scope"),
        (
            lambda: Config.configure_task(
                "t",
                step,
                Config.configure_data_node("a"),
                Config.configure_data_node("b"),
                skippable="maybe",
            ),
            "maybe",
        ),
        (
            lambda: Config.configure_scenario("s", [], frequency="weekly-ish"),
            "weekly-ish",
        ),
    ],
)
def test_configure_rejects_bad_value(call: Any, named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        call()


def test_configure_keeps_text_and_templates() -> None:
    node = Config.configure_data_node(
        "v", scope="global", validity_period="ENV[VALIDITY]"
    )
    scenario = Config.configure_scenario("s", [], frequency="weekly")

    assert node.scope.name == "GLOBAL"
    assert node.raw_fields["validity_period"] == "ENV[VALIDITY]"
    assert scenario.frequency is Frequency.WEEKLY


@pytest.mark.parametrize(
    ("validity", "named"), [("1 day", "cannot be read"), ("-1d", "negative")]
)
def test_validity_text_checked_at_once(validity: str, named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        Config.configure_data_node("v", validity_period=validity)
