"""Magics given a declared task in a pipeline, a value that is no entity, or quotes.

Each test runs the magics in a real IPython kernel.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.kernel import ExecutionResult, KernelSession
from test_magics import SETUP_CELL, print_json, run_json

pytestmark = pytest.mark.timeout(300)

DATA_NODES_CELL = """\
%datanode my_input --default 21
%datanode intermediate
%datanode my_output
"""

SKIPPABLE_DOUBLE_CELL = """\
%%task double --inputs my_input --outputs intermediate --skippable
def double(nb):
    return nb * 2
"""


def usage_error(result: ExecutionResult) -> str:
    """Return the UsageError message of a failed cell, checking it has no traceback.

    IPython prints a UsageError on stderr in place of a traceback.
    """
    assert result.status == "error", "the cell was accepted"
    assert result.errors == [], "a traceback was shown instead of a UsageError"
    assert "UsageError:" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) <= 3, result.stderr
    return result.stderr


def test_pipeline_keeps_task_skippable(kernel: KernelSession) -> None:
    # The README's pattern: declare a task with %%task, then use it in a pipeline.
    kernel.execute(SETUP_CELL).check()
    kernel.execute("%datanode my_input --default 21").check()
    kernel.execute(
        "%%task double --inputs my_input --outputs intermediate --skippable\n"
        "def double(nb):\n"
        "    return nb * 2\n"
    ).check()
    kernel.execute("def add(nb):\n    return nb + 10\n").check()
    kernel.execute(
        "%%scenario my_scenario\nmy_input -> double -> intermediate -> add -> my_output\n"
    ).check()

    skippable = run_json(kernel, print_json("Config.tasks['double'].skippable"))

    assert skippable is True, "the pipeline cell dropped --skippable from double"


def test_pipeline_keeps_configure_task_settings(kernel: KernelSession) -> None:
    kernel.execute(SETUP_CELL).check()
    kernel.execute(DATA_NODES_CELL).check()
    kernel.execute(
        "def double(nb):\n"
        "    return nb * 2\n"
        "declared = Config.configure_task('double', double,"
        " Config.data_nodes['my_input'], Config.data_nodes['intermediate'],"
        " skippable=True, note='kept')\n"
        "def add(nb):\n"
        "    return nb + 10\n"
    ).check()
    kernel.execute(
        "%%scenario my_scenario\nmy_input -> double -> intermediate -> add -> my_output"
    ).check()

    kept = run_json(
        kernel,
        print_json(
            "{'same': Config.tasks['double'] is declared,"
            " 'skippable': Config.tasks['double'].skippable,"
            " 'properties': Config.tasks['double'].properties,"
            " 'in_scenario': declared in Config.scenarios['my_scenario'].task_configs}"
        ),
    )

    assert kept["same"] is True, "the pipeline replaced the declared task"
    assert kept["skippable"] is True
    assert kept["properties"] == {"note": "kept"}
    assert kept["in_scenario"] is True


def test_pipeline_keeps_task_function(kernel: KernelSession) -> None:
    # The task runs a function named differently from the task.
    kernel.execute(SETUP_CELL).check()
    kernel.execute(DATA_NODES_CELL).check()
    kernel.execute(
        "%%task double --inputs my_input --outputs my_output --function times_two\n"
        "def times_two(nb):\n"
        "    return nb * 2\n"
    ).check()
    kernel.execute("def double(nb):\n    return -1\n").check()
    kernel.execute("%%scenario my_scenario\nmy_input -> double -> my_output").check()

    name = run_json(kernel, print_json("Config.tasks['double'].function.__name__"))

    assert name == "times_two"


def test_pipeline_rewiring_declared_task_error(kernel: KernelSession) -> None:
    kernel.execute(SETUP_CELL).check()
    kernel.execute(DATA_NODES_CELL).check()
    kernel.execute(SKIPPABLE_DOUBLE_CELL).check()

    result = kernel.execute("%%scenario my_scenario\nmy_input -> double -> my_output")

    message = usage_error(result)
    assert "'double'" in message
    assert "my_input -> double -> my_output" in message, "the pipeline's wiring"
    assert "my_input -> double -> intermediate" in message, "the declared wiring"
    assert "%%task" in message, "the message does not say who declared the task"
    assert "re-declare" in message, "the message does not say what to do"
    outputs = run_json(
        kernel,
        print_json(
            "{'outputs': [dn.id for dn in Config.tasks['double'].output_configs],"
            " 'skippable': Config.tasks['double'].skippable}"
        ),
    )
    assert outputs == {"outputs": ["intermediate"], "skippable": True}


def test_rerun_edited_pipeline_rewires_task(kernel: KernelSession) -> None:
    # A task that the pipeline itself declared follows the edited cell.
    kernel.execute(SETUP_CELL).check()
    kernel.execute("def double(nb):\n    return nb * 2\n").check()
    kernel.execute("%%scenario my_scenario\nmy_input -> double -> first").check()

    kernel.execute("%%scenario my_scenario\nmy_input -> double -> second").check()

    outputs = run_json(
        kernel, print_json("[dn.id for dn in Config.tasks['double'].output_configs]")
    )
    assert outputs == ["second"]


def test_pipeline_task_of_other_scenario_error(kernel: KernelSession) -> None:
    # Re-wiring would change the first scenario's graph too.
    kernel.execute(SETUP_CELL).check()
    kernel.execute("def double(nb):\n    return nb * 2\n").check()
    kernel.execute("%%scenario first\nmy_input -> double -> one").check()

    result = kernel.execute("%%scenario second\nmy_input -> double -> two")

    message = usage_error(result)
    assert "scenario 'first'" in message
    assert "my_input -> double -> one" in message
    outputs = run_json(
        kernel, print_json("[dn.id for dn in Config.tasks['double'].output_configs]")
    )
    assert outputs == ["one"]


def test_pipeline_same_task_twice_error(kernel: KernelSession) -> None:
    kernel.execute(SETUP_CELL).check()
    kernel.execute("def double(nb):\n    return nb * 2\n").check()

    result = kernel.execute(
        "%%scenario twice\nmy_input -> double -> one\nmy_input -> double -> two"
    )

    message = usage_error(result)
    assert "line 2" in message
    assert "an earlier line of this cell" in message


def test_submit_non_entity_usage_error(kernel: KernelSession) -> None:
    kernel.execute(SETUP_CELL).check()

    result = kernel.execute("five = 5\n%submit five")

    message = usage_error(result)
    assert "'five'" in message
    assert "int" in message
    assert "a scenario, sequence or task" in message


ENTITY_CASES = [
    ("%submit nothing", "'nothing'", "NoneType"),
    ("%submit text", "'text'", "'not an id'"),
    ("%submit my_input_node", "'my_input_node'", "DataNode"),
    ("%cancel five", "'five'", "a job or submission"),
    ("%cancel scenario", "'scenario'", "Scenario"),
    ("%scenario_graph five", "'five'", "a scenario, sequence or task"),
    ("%scenario_graph submission_id", "'submission_id'", "Submission"),
    ("%wait five", "five", "%wait?"),
    ("%jobs five", "five", "no arguments"),
]


@pytest.mark.parametrize(
    ("cell", "name", "detail"),
    ENTITY_CASES,
    ids=[cell.split()[0][1:] + "-" + cell.split()[1] for cell, _, _ in ENTITY_CASES],
)
def test_entity_magic_wrong_value(
    kernel: KernelSession, cell: str, name: str, detail: str
) -> None:
    kernel.execute(SETUP_CELL).check()
    kernel.execute(
        "def double(nb):\n    return nb * 2\n%datanode my_input --default 21\n"
    ).check()
    kernel.execute(
        "%%scenario my_scenario --create scenario\nmy_input -> double -> out"
    )
    kernel.execute(
        "five = 5\n"
        "nothing = None\n"
        "text = 'not an id'\n"
        "my_input_node = scenario.my_input\n"
        "submission_id = tp.submit(scenario, wait=True, timeout=60).id\n"
    ).check()

    message = usage_error(kernel.execute(cell))

    assert name in message
    assert detail in message


def test_export_config_quoted_path(kernel: KernelSession, tmp_path: Path) -> None:
    kernel.execute(SETUP_CELL).check()
    kernel.execute("%datanode my_input --default 21").check()

    kernel.execute('%export_config "my config.toml"').check()
    kernel.execute("%export_config 'single quoted.toml'").check()

    names = sorted(path.name for path in tmp_path.iterdir())
    assert "my config.toml" in names, f"files written: {names}"
    assert "single quoted.toml" in names, f"files written: {names}"


def test_unbalanced_quote_usage_error(kernel: KernelSession, tmp_path: Path) -> None:
    kernel.execute(SETUP_CELL).check()

    message = usage_error(kernel.execute('%export_config "my config.toml'))

    assert "Close every quote" in message
    assert list(tmp_path.glob("*.toml")) == []
    datanode = usage_error(kernel.execute("%datanode x --default 'text"))
    assert "Close every quote" in datanode


def test_quoted_names_and_expressions(kernel: KernelSession) -> None:
    # Quotes group a path with spaces. In a Python expression they stay.
    kernel.execute(SETUP_CELL).check()
    kernel.execute(
        "%datanode sales --storage 'csv' --path \"my data/sales.csv\"\n"
        "%datanode label --default 'some text'\n"
        "%datanode encoded --storage csv -p encoding='utf-8'\n"
        "def double(nb):\n"
        "    return nb * 2\n"
    ).check()
    kernel.execute(
        "%%scenario my_scenario --sequence \"main=double\" --create 'scenario'\n"
        "label -> double -> out"
    ).check()

    values = run_json(
        kernel,
        print_json(
            "{'path': Config.data_nodes['sales'].default_path,"
            " 'storage': Config.data_nodes['sales'].storage_type,"
            " 'label': Config.data_nodes['label'].default_data,"
            " 'encoding': Config.data_nodes['encoded'].properties['encoding'],"
            " 'sequences': sorted(Config.scenarios['my_scenario'].sequences),"
            " 'created': type(scenario).__name__}"
        ),
    )

    assert values["path"] == "my data/sales.csv"
    assert values["storage"] == "csv"
    assert values["label"] == "some text"
    assert values["encoding"] == "utf-8"
    assert values["sequences"] == ["main"]
    assert values["created"] == "Scenario"
