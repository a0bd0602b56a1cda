"""Configuration files exchanged with a real Taipy 4.1.1 installation, both ways.

Taipy runs in a subprocess of the interpreter named by the ``TAIPY_PYTHON``
environment variable, so the test environment itself needs no Taipy. The tests are
skipped when the variable is unset or that interpreter cannot import Taipy. To run
them::

    python -m venv /tmp/taipy-venv
    /tmp/taipy-venv/bin/pip install taipy-core==4.1.1
    TAIPY_PYTHON=/tmp/taipy-venv/bin/python python -m pytest -m taipy

Both sides run the same tutorial-style configuration code, with only the imports
changed, and describe the result with :func:`summarize`, which is sent to Taipy's
interpreter as source.
"""

from __future__ import annotations

import datetime as dt
import inspect
import json
import linecache
import os
import subprocess
import sys
import textwrap
from collections.abc import Collection, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from jupyter_scenarios.config import Config
from jupyter_scenarios.config.toml_format import read_layer
from jupyter_scenarios.enums import Frequency, Scope

pytestmark = pytest.mark.taipy

ALGOS_MODULE = "tutorial_algos"

ALGOS_SOURCE = '''
"""Task functions of the tutorial configuration."""


def clean_data(initial, replacement_type):
    return [replacement_type if value is None else value for value in initial]


def predict(cleaned, day, n_predictions):
    return cleaned[:n_predictions]


def evaluate(predictions, cleaned):
    return len(predictions)


def compare_predictions(*predictions):
    return [len(prediction) for prediction in predictions]


class Row:
    def __init__(self, **columns):
        self.columns = columns
'''

# Runs unchanged against Taipy's Config and ours. The caller provides Config, Scope,
# Frequency, dt and algos.
TUTORIAL_CONFIGURATION = """
initial = Config.configure_csv_data_node(
    "initial_dataset", default_path="dataset.csv", exposed_type=algos.Row,
    scope=Scope.GLOBAL,
)
replacement = Config.configure_data_node("replacement_type", default_data="NO VALUE")
cleaned = Config.configure_data_node(
    "cleaned_dataset", validity_period=dt.timedelta(days=1, hours=6), scope=Scope.CYCLE
)
day = Config.configure_data_node("day", default_data=dt.datetime(2021, 7, 26))
n_predictions = Config.configure_data_node(
    "n_predictions", default_data=40, ratio=0.5, flags=[True, False],
    tags={"team": "sales", "level": 2},
)
predictions = Config.configure_json_data_node(
    "predictions", default_path="predictions.json"
)
evaluation = Config.configure_data_node("evaluation")
clean = Config.configure_task(
    "clean_data", algos.clean_data, [initial, replacement], cleaned, skippable=True
)
predict = Config.configure_task(
    "predict", algos.predict, [cleaned, day, n_predictions], predictions
)
evaluate = Config.configure_task(
    "evaluate", algos.evaluate, [predictions, cleaned], evaluation, owner="ops"
)
Config.configure_scenario(
    "scenario",
    [clean, predict, evaluate],
    [],
    Frequency.WEEKLY,
    comparators={"predictions": algos.compare_predictions},
    sequences={"cleaning": [clean], "forecast": [predict, evaluate]},
    description="tutorial",
    revision=3,
)
Config.configure_job_executions(mode="standalone", max_nb_of_workers=2)
"""

# Properties that Taipy 4.1.1 adds with their default values to csv and json data
# nodes when it applies a configuration, so they appear only on Taipy's side.
TAIPY_OPTIONAL_PROPERTIES = {"encoding", "has_header", "exposed_type"}


def summarize(data_nodes: Any, tasks: Any, scenarios: Any, job: Any) -> Any:
    """Describe sections as JSON-compatible data, for Taipy's sections and ours."""
    import datetime as dt
    import enum
    import inspect

    def plain(value: Any) -> Any:
        if isinstance(value, enum.Enum):
            return f"{type(value).__name__}.{value.name}"
        if isinstance(value, dt.timedelta):
            return {"timedelta": value.total_seconds()}
        if isinstance(value, (dt.datetime, dt.date)):
            return {"datetime": value.isoformat()}
        if inspect.isclass(value) or inspect.isroutine(value):
            return {"ref": f"{value.__module__}.{value.__qualname__}"}
        if type(value).__name__.endswith("Config") and hasattr(value, "id"):
            return {"section": value.id}
        if isinstance(value, (list, tuple)):
            return [plain(item) for item in value]
        if isinstance(value, dict):
            return {str(key): plain(item) for key, item in value.items()}
        return value

    return {
        "data_nodes": {
            key: {
                "storage_type": node.storage_type,
                "scope": plain(node.scope),
                "validity_period": plain(node.validity_period),
                "properties": plain(dict(node.properties)),
            }
            for key, node in data_nodes.items()
        },
        "tasks": {
            key: {
                "function": plain(task.function),
                "inputs": plain(task.input_configs),
                "outputs": plain(task.output_configs),
                "skippable": task.skippable,
                "properties": plain(dict(task.properties)),
            }
            for key, task in tasks.items()
        },
        "scenarios": {
            key: {
                "tasks": plain(scenario.task_configs),
                "additional": plain(scenario.additional_data_node_configs),
                "frequency": plain(scenario.frequency),
                "comparators": plain(dict(scenario.comparators)),
                "sequences": plain(dict(scenario.sequences)),
                "properties": plain(dict(scenario.properties)),
            }
            for key, scenario in scenarios.items()
        },
        "job": {"mode": job.mode, "max_nb_of_workers": job.max_nb_of_workers},
    }


@pytest.fixture(scope="module")
def taipy_python() -> str:
    interpreter = os.environ.get("TAIPY_PYTHON", "")
    if not interpreter:
        pytest.skip("TAIPY_PYTHON is not set to an interpreter that has Taipy 4.1.1")
    if not Path(interpreter).exists():
        pytest.skip(f"TAIPY_PYTHON={interpreter} does not exist")
    probe = subprocess.run(
        [interpreter, "-c", "import taipy.core, taipy.common.config"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if probe.returncode != 0:
        pytest.skip(f"{interpreter} cannot import taipy: {probe.stderr.strip()}")
    return interpreter


@pytest.fixture(autouse=True)
def clean_config() -> Iterator[None]:
    Config._reset()
    yield
    Config._reset()


@pytest.fixture
def work_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Path, ModuleType]]:
    """Write the task module to a folder, import it, and forget it afterwards."""
    (tmp_path / f"{ALGOS_MODULE}.py").write_text(ALGOS_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, ALGOS_MODULE, raising=False)
    module = __import__(ALGOS_MODULE)
    yield tmp_path, module
    sys.modules.pop(ALGOS_MODULE, None)


def run_taipy(taipy_python: str, body: str, folder: Path) -> Any:
    """Run ``body`` with Taipy in ``folder`` and return the JSON it prints last."""
    script = "\n".join(
        [
            "import datetime as dt, json",
            "from typing import Any",
            "from taipy.common.config import Config, Frequency, Scope",
            f"import {ALGOS_MODULE} as algos",
            textwrap.dedent(inspect.getsource(summarize)),
            textwrap.dedent(body),
        ]
    )
    completed = subprocess.run(
        [taipy_python, "-c", script],
        check=False,
        cwd=folder,
        env={**os.environ, "PYTHONPATH": str(folder)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def summarize_ours(path: Path) -> Any:
    layer = read_layer(path)
    assert layer.job_config is not None
    return json.loads(
        json.dumps(
            summarize(layer.data_nodes, layer.tasks, layer.scenarios, layer.job_config)
        )
    )


def without_order(scenario: dict[str, Any]) -> dict[str, Any]:
    """Sort a scenario summary's task and data node lists.

    Taipy 4.1.1 collects a loaded scenario's tasks, additional data nodes and
    sequence tasks in sets, so their order after loading is arbitrary.
    """

    def ordered(items: list[Any]) -> list[Any]:
        return sorted(items, key=json.dumps)

    result = dict(scenario)
    result["tasks"] = ordered(scenario["tasks"])
    result["additional"] = ordered(scenario["additional"])
    result["sequences"] = {
        name: ordered(tasks) for name, tasks in scenario["sequences"].items()
    }
    return result


def assert_same_configuration(
    ours: Any,
    theirs: Any,
    *,
    taipy_extras: Collection[str] = (),
    with_defaults: bool = True,
) -> None:
    """Compare summaries, allowing Taipy's extra default properties.

    ``with_defaults=False`` leaves the ``default`` sections out, for files written
    by Taipy's ``Config.export``, which does not write them.
    """
    for kind in ("data_nodes", "tasks", "scenarios"):
        if not with_defaults:
            theirs = {**theirs, kind: dict(theirs[kind])}
            theirs[kind].pop("default", None)
        assert sorted(ours[kind]) == sorted(theirs[kind]), kind
        for key in ours[kind]:
            our_section = dict(ours[kind][key])
            their_section = dict(theirs[kind][key])
            if kind == "scenarios":
                our_section = without_order(our_section)
                their_section = without_order(their_section)
            their_properties = their_section.pop("properties")
            our_properties = our_section.pop("properties")
            assert our_section == their_section, f"{kind}.{key}"
            for name, value in their_properties.items():
                if name not in our_properties and name in taipy_extras:
                    continue
                assert our_properties.get(name) == value, f"{kind}.{key}.{name}"
            assert set(our_properties) <= set(their_properties), f"{kind}.{key}"
    assert ours["job"] == theirs["job"]


def test_reads_taipy_export_and_backup(taipy_python: str, work_folder: Any) -> None:
    folder, _ = work_folder
    theirs = run_taipy(
        taipy_python,
        TUTORIAL_CONFIGURATION
        + """
Config.export("taipy_export.toml")
Config.backup("taipy_backup.toml")
print(json.dumps(summarize(Config.data_nodes, Config.tasks, Config.scenarios,
                           Config.job_config)))
""",
        folder,
    )

    from_backup = summarize_ours(folder / "taipy_backup.toml")
    from_export = summarize_ours(folder / "taipy_export.toml")

    assert_same_configuration(from_backup, theirs)
    assert_same_configuration(
        from_export,
        theirs,
        taipy_extras=TAIPY_OPTIONAL_PROPERTIES,
        with_defaults=False,
    )
    assert from_backup["scenarios"]["scenario"]["comparators"] == {
        "predictions": [{"ref": f"{ALGOS_MODULE}.compare_predictions"}]
    }


def test_reads_taipy_core_section(taipy_python: str, work_folder: Any) -> None:
    folder, _ = work_folder
    run_taipy(
        taipy_python,
        TUTORIAL_CONFIGURATION + '\nConfig.backup("backup.toml")\nprint("{}")',
        folder,
    )

    core = read_layer(folder / "backup.toml").core

    assert core is not None
    assert core.root_folder == "./taipy/"
    assert core.storage_folder == "user_data/"
    assert core.repository_type == "filesystem"
    assert core.read_entity_retry == 1
    assert core.force is False
    assert core.core_version == "4.1.1"


NOTEBOOK_CELL = """
SCALE = 10

def scaled_length(values):
    return len(values) * SCALE
"""


def test_taipy_loads_our_export(taipy_python: str, work_folder: Any) -> None:
    folder, algos = work_folder
    namespace = {
        "Config": Config,
        "Scope": Scope,
        "Frequency": Frequency,
        "dt": dt,
        "algos": algos,
    }
    exec(TUTORIAL_CONFIGURATION, namespace)  # noqa: S102 - shared with Taipy's side
    cell = run_notebook_cell(NOTEBOOK_CELL)
    Config.configure_task(
        "notebook_step",
        cell["scaled_length"],
        Config.data_nodes["predictions"],
        Config.configure_data_node("notebook_output"),
    )
    path = folder / "ours.toml"
    Config.export(path)
    ours = summarize_ours(path)

    theirs = run_taipy(
        taipy_python,
        """
Config.load("ours.toml")
issues = Config.check()
assert not issues.errors, [str(issue) for issue in issues.errors]
print(Config.tasks["notebook_step"].function([1, 2, 3]))
print(json.dumps(summarize(Config.data_nodes, Config.tasks, Config.scenarios,
                           Config.job_config)))
""",
        folder,
    )

    assert_same_configuration(ours, theirs, taipy_extras=TAIPY_OPTIONAL_PROPERTIES)
    assert theirs["tasks"]["notebook_step"]["function"] == {
        "ref": "ours_functions.scaled_length"
    }
    assert theirs["data_nodes"]["cleaned_dataset"]["validity_period"] == {
        "timedelta": dt.timedelta(days=1, hours=6).total_seconds()
    }


def test_taipy_runs_our_notebook_function(taipy_python: str, work_folder: Any) -> None:
    folder, _ = work_folder
    cell = run_notebook_cell(NOTEBOOK_CELL)
    source = Config.configure_data_node("source")
    Config.configure_task("notebook_step", cell["scaled_length"], source)
    Config.export(folder / "ours.toml")

    result = run_taipy(
        taipy_python,
        """
Config.load("ours.toml")
print(json.dumps(Config.tasks["notebook_step"].function([1, 2, 3])))
""",
        folder,
    )

    assert result == 30


_cell_counter = 0


def run_notebook_cell(source: str) -> dict[str, Any]:
    """Run ``source`` the way IPython runs a cell: module ``__main__``, in linecache."""
    global _cell_counter
    _cell_counter += 1
    filename = f"<ipython-input-{_cell_counter}-fedcba987654>"
    text = textwrap.dedent(source)
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(text, filename, "exec"), namespace)  # noqa: S102 - as IPython does
    return namespace
