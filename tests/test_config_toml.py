"""Tests of configuration files: TOML round trips, typed values, templates, functions.

Notebook cells are simulated by compiling code under an ``<ipython-input-...>`` file
name registered in :mod:`linecache` and running it in a namespace whose ``__name__``
is ``__main__``, which is what IPython does. One test runs a real IPython shell in a
subprocess as well. Loading in a fresh process also runs in a subprocess.
"""

from __future__ import annotations

import datetime as dt
import functools
import linecache
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import cloudpickle
import pytest
from helpers.kernel import KernelSession

import jupyter_scenarios
from jupyter_scenarios.config import Config
from jupyter_scenarios.config.config import ConfigLayer
from jupyter_scenarios.config.functions import (
    GENERATED_HEADER,
    sidecar_module_name,
)
from jupyter_scenarios.config.sections import (
    DataNodeConfig,
    ScenarioConfig,
    TaskConfig,
)
from jupyter_scenarios.config.toml_format import read_layer, write_layer
from jupyter_scenarios.enums import Frequency, Scope
from jupyter_scenarios.exceptions import ConfigurationError, LoadingError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

REPO_ROOT = Path(jupyter_scenarios.__file__).resolve().parent.parent

ALGOS_SOURCE = '''
"""Functions and classes that the tests configure, in an importable module."""

import json


def double(value):
    return 2 * value


def add(left, right):
    return left + right


def compare(*values):
    return max(values)


def read_data(path):
    return path


def write_data(data, path):
    return None


class Row:
    def __init__(self, **columns):
        self.columns = columns


class Encoder(json.JSONEncoder):
    pass


class Decoder(json.JSONDecoder):
    pass


class Holder:
    class Inner:
        pass
'''


@pytest.fixture(autouse=True)
def clean_config() -> Iterator[None]:
    Config._reset()
    yield
    Config._reset()


@pytest.fixture
def algos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """Import a module of task functions, written to its own folder on sys.path."""
    folder = tmp_path / "modules"
    folder.mkdir()
    (folder / "scenario_algos.py").write_text(ALGOS_SOURCE)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, "scenario_algos", raising=False)
    import scenario_algos

    yield scenario_algos
    sys.modules.pop("scenario_algos", None)


_cell_counter = 0


def run_cell(source: str, namespace: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run ``source`` the way IPython runs a notebook cell and return the namespace."""
    global _cell_counter
    _cell_counter += 1
    filename = f"<ipython-input-{_cell_counter}-0123456789ab>"
    text = textwrap.dedent(source)
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    if namespace is None:
        namespace = {"__name__": "__main__"}
    exec(compile(text, filename, "exec"), namespace)  # noqa: S102 - as IPython does
    return namespace


def call_task(task: TaskConfig, *arguments: Any) -> Any:
    assert task.function is not None
    return task.function(*arguments)


def export_and_read(tmp_path: Path, name: str = "config.toml") -> ConfigLayer:
    path = tmp_path / name
    Config.export(path)
    return read_layer(path)


def run_python(
    code: str, cwd: Path, extra_path: list[Path] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter that can import jupyter_scenarios."""
    env = dict(os.environ)
    paths = [str(REPO_ROOT), *(str(p) for p in extra_path or [])]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["IPYTHONDIR"] = str(cwd / ".ipython")
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        check=False,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- round trips -----------------------------------------------------------------------


def test_round_trip_data_node_fields(tmp_path: Path) -> None:
    Config.configure_data_node(
        "sales",
        storage_type="json",
        scope=Scope.GLOBAL,
        validity_period=dt.timedelta(days=1, hours=2, seconds=3),
        default_path="sales.json",
    )
    Config.configure_data_node("by_cycle", scope=Scope.CYCLE)

    layer = export_and_read(tmp_path)

    sales = layer.data_nodes["sales"]
    assert sales.storage_type == "json"
    assert sales.scope is Scope.GLOBAL
    assert sales.validity_period == dt.timedelta(days=1, hours=2, seconds=3)
    assert sales.default_path == "sales.json"
    by_cycle = layer.data_nodes["by_cycle"]
    assert by_cycle.storage_type == "pickle"
    assert by_cycle.scope is Scope.CYCLE
    assert by_cycle.validity_period is None


def test_round_trip_custom_property_types(tmp_path: Path) -> None:
    properties: dict[str, Any] = {
        "count": 21,
        "negative": -7,
        "ratio": 0.5,
        "huge": 1e300,
        "flag": False,
        "region": "north",
        "empty_text": "",
        "with_colon": "localhost:8080",
        "when": dt.datetime(2024, 1, 2, 3, 4, 5),
        "when_utc": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
        "day": dt.date(2024, 3, 1),
        "alarm": dt.time(7, 30),
        "delay": dt.timedelta(minutes=90),
        "short_delay": dt.timedelta(seconds=1.5),
        "scope_value": Scope.CYCLE,
        "frequency_value": Frequency.WEEKLY,
        "mixed": [1, 2.5, True, "x", dt.timedelta(days=2)],
        "empty_list": [],
        "nested": {"a": 1, "b": [1, 2], "c": {"deep": "yes"}},
        "rows": [{"x": 1}, {"x": 2}],
    }
    Config.configure_data_node("node", **properties)

    node = export_and_read(tmp_path).data_nodes["node"]

    for key, expected in properties.items():
        assert getattr(node, key) == expected, key
        assert type(getattr(node, key)) is type(expected), key


def test_round_trip_tuple_and_set_become_lists(tmp_path: Path) -> None:
    Config.configure_data_node("node", pair=(1, 2), labels={"b", "a"})

    node = export_and_read(tmp_path).data_nodes["node"]

    assert node.pair == [1, 2]
    assert node.labels == ["a", "b"]


def test_round_trip_path_property_becomes_text(tmp_path: Path) -> None:
    Config.configure_data_node("node", default_path=Path("data") / "x.p")

    node = export_and_read(tmp_path).data_nodes["node"]

    assert node.default_path == str(Path("data") / "x.p")


def test_round_trip_task_fields(tmp_path: Path, algos: ModuleType) -> None:
    left = Config.configure_data_node("left")
    right = Config.configure_data_node("right")
    total = Config.configure_data_node("total")
    Config.configure_task(
        "add", algos.add, [left, right], total, skippable=True, owner="team"
    )
    Config.configure_task("no_output", algos.double, left)

    layer = export_and_read(tmp_path)

    task = layer.tasks["add"]
    assert task.function is algos.add
    assert [dn.id for dn in task.input_configs] == ["left", "right"]
    assert [dn.id for dn in task.output_configs] == ["total"]
    assert task.input_configs[0] is layer.data_nodes["left"]
    assert task.skippable is True
    assert task.owner == "team"
    assert layer.tasks["no_output"].skippable is False
    assert layer.tasks["no_output"].output_configs == []


def test_round_trip_scenario_fields(tmp_path: Path, algos: ModuleType) -> None:
    source = Config.configure_data_node("source", default_data=1)
    doubled = Config.configure_data_node("doubled")
    quadrupled = Config.configure_data_node("quadrupled")
    notes = Config.configure_data_node("notes", default_data="n")
    first = Config.configure_task("first", algos.double, source, doubled)
    second = Config.configure_task("second", algos.double, doubled, quadrupled)
    Config.configure_scenario(
        "pipeline",
        [first, second],
        [notes],
        Frequency.MONTHLY,
        comparators={"quadrupled": [algos.compare, max], "doubled": algos.compare},
        sequences={"only_first": [first], "both": [first, second]},
        owner="me",
        priority=3,
    )

    layer = export_and_read(tmp_path)

    scenario = layer.scenarios["pipeline"]
    assert [t.id for t in scenario.task_configs] == ["first", "second"]
    assert scenario.task_configs[0] is layer.tasks["first"]
    assert [dn.id for dn in scenario.additional_data_node_configs] == ["notes"]
    assert scenario.frequency is Frequency.MONTHLY
    assert scenario.comparators == {
        "quadrupled": [algos.compare, max],
        "doubled": [algos.compare],
    }
    assert {name: [t.id for t in ts] for name, ts in scenario.sequences.items()} == {
        "only_first": ["first"],
        "both": ["first", "second"],
    }
    assert scenario.sequences["both"][1] is layer.tasks["second"]
    assert scenario.owner == "me"
    assert scenario.priority == 3


def test_round_trip_functions_and_classes(tmp_path: Path, algos: ModuleType) -> None:
    Config.configure_csv_data_node(
        "table", default_path="t.csv", exposed_type=algos.Row
    )
    Config.configure_excel_data_node("sheet", exposed_type="numpy")
    Config.configure_json_data_node(
        "document", encoder=algos.Encoder, decoder=algos.Decoder
    )
    Config.configure_generic_data_node(
        "custom",
        read_fct=algos.read_data,
        write_fct=algos.write_data,
        read_fct_args=["in.bin", 3],
        write_fct_args=["out.bin"],
    )
    Config.configure_data_node("nested_class", kind=algos.Holder.Inner)
    Config.configure_data_node("builtin", reducer=len)

    layer = export_and_read(tmp_path)

    assert layer.data_nodes["table"].exposed_type is algos.Row
    assert layer.data_nodes["sheet"].exposed_type == "numpy"
    assert layer.data_nodes["document"].encoder is algos.Encoder
    assert layer.data_nodes["document"].decoder is algos.Decoder
    custom = layer.data_nodes["custom"]
    assert custom.read_fct is algos.read_data
    assert custom.write_fct is algos.write_data
    assert custom.read_fct_args == ["in.bin", 3]
    assert custom.write_fct_args == ["out.bin"]
    assert layer.data_nodes["nested_class"].kind is algos.Holder.Inner
    assert layer.data_nodes["builtin"].reducer is len


def test_round_trip_job_core_and_global(tmp_path: Path) -> None:
    Config.configure_job_executions(mode="standalone", max_nb_of_workers=3)
    Config.configure_core(
        root_folder="/srv/app", storage_folder="store", repository_type="sql"
    )
    Config.configure_global_app(project="demo", retries=2)

    layer = export_and_read(tmp_path)

    assert layer.job_config is not None
    assert layer.job_config.mode == "standalone"
    assert layer.job_config.max_nb_of_workers == 3
    assert layer.core is not None
    assert layer.core.root_folder == "/srv/app"
    assert layer.core.storage_folder == "store"
    assert layer.core.repository_type == "sql"
    assert layer.global_properties == {"project": "demo", "retries": 2}


def test_round_trip_default_sections(tmp_path: Path) -> None:
    Config.configure_default_data_node(
        "json", Scope.GLOBAL, dt.timedelta(hours=1), encoding="latin-1"
    )
    Config.configure_data_node("inherits")

    layer = export_and_read(tmp_path)

    default = layer.data_nodes["default"]
    assert default.storage_type == "json"
    assert default.scope is Scope.GLOBAL
    assert default.validity_period == dt.timedelta(hours=1)
    assert default.encoding == "latin-1"
    assert layer.data_nodes["inherits"].storage_type == "json"
    assert layer.data_nodes["inherits"].encoding == "latin-1"
    assert "default" in layer.tasks
    assert "default" in layer.scenarios


def test_config_load_replaces_code_sections(tmp_path: Path) -> None:
    Config.configure_data_node("kept", default_data=1)
    path = tmp_path / "config.toml"
    Config.export(path)
    Config._reset()
    Config.configure_data_node("dropped")

    Config.load(path)

    assert "kept" in Config.data_nodes
    assert "dropped" not in Config.data_nodes
    assert Config.data_nodes["kept"].default_data == 1


def test_config_override_uses_code_sections(tmp_path: Path, algos: ModuleType) -> None:
    source = Config.configure_data_node("source")
    target = Config.configure_data_node("target")
    Config.configure_task("work", algos.double, source, target)
    Config.configure_job_executions(mode="standalone", max_nb_of_workers=4)
    override = tmp_path / "override.toml"
    override.write_text(
        textwrap.dedent(
            """
            [JOB]
            max_nb_of_workers = "2:int"

            [TASK.work]
            function = "scenario_algos.add:function"
            inputs = ["source:SECTION", "target:SECTION"]
            outputs = []
            """
        )
    )

    Config.override(override)

    task = Config.tasks["work"]
    assert task.function is algos.add
    assert task.input_configs == [source, target]
    assert Config.job_config.mode == "standalone"
    assert Config.job_config.max_nb_of_workers == 2


# -- the written text ------------------------------------------------------------------


def test_written_values_use_taipy_suffixes(tmp_path: Path, algos: ModuleType) -> None:
    source = Config.configure_data_node(
        "my_input",
        scope=Scope.SCENARIO,
        validity_period=dt.timedelta(days=1, hours=2),
        default_data=21,
        ratio=0.5,
        when=dt.datetime(2024, 1, 2, 3, 4, 5),
    )
    output = Config.configure_data_node("my_output")
    task = Config.configure_task("double", algos.double, source, output)
    Config.configure_scenario("plan", [task], frequency=Frequency.DAILY)
    path = tmp_path / "config.toml"

    Config.export(path)

    document = tomllib.loads(path.read_text())
    node = document["DATA_NODE"]["my_input"]
    assert node["scope"] == "SCENARIO:SCOPE"
    assert node["validity_period"] == "1d2h0m0s:timedelta"
    assert node["default_data"] == "21:int"
    assert node["ratio"] == "0.5:float"
    assert node["when"] == "2024-01-02T03:04:05:datetime"
    assert document["TASK"]["double"] == {
        "function": "scenario_algos.double:function",
        "inputs": ["my_input:SECTION"],
        "outputs": ["my_output:SECTION"],
        "skippable": "False:bool",
    }
    assert document["SCENARIO"]["plan"]["frequency"] == "DAILY:FREQUENCY"
    assert document["SCENARIO"]["plan"]["tasks"] == ["double:SECTION"]
    assert "TAIPY" in document


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ("a:int", "a:int:str"),
        ("x:str", "x:str:str"),
        ("ends with:", "ends with::str"),
        ("typo:flot", "typo:flot:str"),
        ("localhost:8080", "localhost:8080"),
        ("db:postgres", "db:postgres"),
        (":int", ":int"),
        ("plain", "plain"),
    ],
)
def test_text_that_reads_as_typed_is_escaped(
    tmp_path: Path, text: str, written: str
) -> None:
    Config.configure_data_node("node", label=text)
    path = tmp_path / "config.toml"

    Config.export(path)

    assert tomllib.loads(path.read_text())["DATA_NODE"]["node"]["label"] == written
    assert read_layer(path).data_nodes["node"].label == text


def test_timedelta_formats() -> None:
    layer = ConfigLayer()
    cases = {
        "whole": (dt.timedelta(days=1, hours=2), "1d2h0m0s"),
        "fraction": (dt.timedelta(seconds=61.25), "0d0h1m1.25s"),
        "negative": (dt.timedelta(seconds=-1), "-1d23h59m59s"),
    }
    for key, (value, _) in cases.items():
        layer.global_properties[key] = value
    document = _document_of(layer)
    for key, (value, text) in cases.items():
        assert document["TAIPY"][key] == f"{text}:timedelta", key


def _document_of(layer: ConfigLayer) -> dict[str, Any]:
    from jupyter_scenarios.config.functions import SidecarModule
    from jupyter_scenarios.config.toml_format import _LayerWriter

    return _LayerWriter(SidecarModule("unused_functions")).document(layer)


def test_timedelta_round_trip_with_fraction(tmp_path: Path) -> None:
    value = dt.timedelta(days=-1, microseconds=250)
    Config.configure_global_app(delay=value)

    layer = export_and_read(tmp_path)

    assert layer.global_properties["delay"] == value


def test_export_failure_keeps_previous_file(tmp_path: Path) -> None:
    Config.configure_data_node("node", default_data=1)
    path = tmp_path / "config.toml"
    Config.export(path)
    before = path.read_bytes()
    Config.configure_data_node("broken", reader=lambda: 1)

    with pytest.raises(ConfigurationError):
        Config.export(path)

    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (object(), "of type object"),
        ({1: "a"}, "The key 1"),
        ([1, None], "Item 1"),
        ({"a": None}, "The entry 'a'"),
        (b"raw", "of type bytes"),
    ],
)
def test_unwritable_value_error(tmp_path: Path, value: Any, expected: str) -> None:
    Config.configure_data_node("node", payload=value)

    with pytest.raises(ConfigurationError) as error:
        Config.export(tmp_path / "config.toml")

    assert expected in str(error.value)
    assert "DATA_NODE.node.payload" in str(error.value)


def test_property_named_like_field_error(tmp_path: Path) -> None:
    section = DataNodeConfig("node")
    section._properties["scope"] = "x"
    layer = ConfigLayer()
    layer.data_nodes["node"] = section

    with pytest.raises(ConfigurationError, match="'scope' of DATA_NODE.node"):
        write_layer(layer, tmp_path / "config.toml")


def test_unregistered_referenced_sections_are_written(
    tmp_path: Path, algos: ModuleType
) -> None:
    source = DataNodeConfig("loose_input")
    task = TaskConfig("loose_task", algos.double, source, None)
    layer = ConfigLayer()
    layer.scenarios["plan"] = ScenarioConfig("plan", [task])
    path = tmp_path / "config.toml"

    write_layer(layer, path)

    loaded = read_layer(path)
    assert loaded.tasks["loose_task"].input_configs[0].id == "loose_input"


# -- reading files written by hand or by Taipy -----------------------------------------


TAIPY_WRITTEN = """
[TAIPY]

[JOB]
mode = "standalone"
max_nb_of_workers = "3:int"

[CORE]
root_folder = "./taipy/"
storage_folder = "user_data/"
taipy_storage_folder = ".taipy/"
repository_type = "filesystem"
read_entity_retry = "1:int"
mode = "development"
version_number = ""
force = "False:bool"
core_version = "4.1.1"

[DATA_NODE.default]
storage_type = "pickle"
scope = "SCENARIO:SCOPE"

[DATA_NODE.inp]
storage_type = "pickle"
scope = "GLOBAL:SCOPE"
validity_period = "1d2h0m0s:timedelta"
custom = [ "1:int", "2.5:float", "True:bool", "x",]
when = "2024-01-02T03:04:05:datetime"
colon = "a:int:str"
default_data = "21:int"

[DATA_NODE.out]
storage_type = "csv"
scope = "SCENARIO:SCOPE"
default_path = "o.csv"
exposed_type = "scenario_algos.Row:class"
encoding = "utf-8"
has_header = "True:bool"

[TASK.default]
inputs = []
outputs = []
skippable = "False:bool"

[TASK.t]
function = "scenario_algos.double:function"
inputs = [ "inp:SECTION",]
outputs = [ "out:SECTION",]
skippable = "True:bool"

[SCENARIO.default]
tasks = []
additional_data_nodes = []

[SCENARIO.sc]
tasks = [ "t:SECTION",]
additional_data_nodes = []
frequency = "DAILY:FREQUENCY"
owner = "me"

[DATA_NODE.inp.nested]
a = "1:int"
b = [ "1:int", "2:int",]

[SCENARIO.default.comparators]

[SCENARIO.default.sequences]

[SCENARIO.sc.comparators]
out = [ "scenario_algos.compare:function",]

[SCENARIO.sc.sequences]
seq = [ "t:SECTION",]
"""


def test_reads_taipy_written_file(tmp_path: Path, algos: ModuleType) -> None:
    path = tmp_path / "taipy.toml"
    path.write_text(TAIPY_WRITTEN)

    layer = read_layer(path)

    node = layer.data_nodes["inp"]
    assert node.scope is Scope.GLOBAL
    assert node.validity_period == dt.timedelta(days=1, hours=2)
    assert node.custom == [1, 2.5, True, "x"]
    assert node.when == dt.datetime(2024, 1, 2, 3, 4, 5)
    assert node.colon == "a:int"
    assert node.default_data == 21
    assert node.nested == {"a": 1, "b": [1, 2]}
    assert layer.data_nodes["out"].exposed_type is algos.Row
    assert layer.data_nodes["out"].has_header is True
    assert layer.tasks["t"].function is algos.double
    assert layer.tasks["t"].skippable is True
    scenario = layer.scenarios["sc"]
    assert scenario.frequency is Frequency.DAILY
    assert scenario.comparators == {"out": [algos.compare]}
    assert [t.id for t in scenario.sequences["seq"]] == ["t"]
    assert layer.job_config is not None
    assert layer.job_config.mode == "standalone"
    assert layer.job_config.max_nb_of_workers == 3


def test_reads_taipy_core_keys(tmp_path: Path, algos: ModuleType) -> None:
    path = tmp_path / "taipy.toml"
    path.write_text(TAIPY_WRITTEN)

    core = read_layer(path).core

    assert core is not None
    assert core.root_folder == "./taipy/"
    assert core.storage_folder == "user_data/"
    assert core.properties == {
        "taipy_storage_folder": ".taipy/",
        "repository_type": "filesystem",
        "read_entity_retry": 1,
        "mode": "development",
        "version_number": "",
        "force": False,
        "core_version": "4.1.1",
    }


def test_reads_native_toml_values(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        textwrap.dedent(
            """
            [JOB]
            mode = "standalone"
            max_nb_of_workers = 2

            [DATA_NODE.node]
            count = 4
            ratio = 0.25
            flag = true
            when = 2024-05-06T07:08:09
            day = 2024-05-06
            scope = "CYCLE"

            [TASK.t]
            inputs = ["node"]
            function = "builtins.len:function"
            """
        )
    )

    layer = read_layer(path)

    node = layer.data_nodes["node"]
    assert node.count == 4
    assert node.ratio == 0.25
    assert node.flag is True
    assert node.when == dt.datetime(2024, 5, 6, 7, 8, 9)
    assert node.day == dt.date(2024, 5, 6)
    assert node.scope is Scope.CYCLE
    assert layer.tasks["t"].input_configs == [node]
    assert layer.job_config is not None
    assert layer.job_config.max_nb_of_workers == 2


def test_default_section_fills_missing_fields(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        textwrap.dedent(
            """
            [DATA_NODE.default]
            storage_type = "json"
            scope = "GLOBAL:SCOPE"
            validity_period = "0d1h0m0s:timedelta"
            encoding = "latin-1"

            [DATA_NODE.same_type]

            [DATA_NODE.other_type]
            storage_type = "pickle"

            [TASK.default]
            skippable = "True:bool"
            team = "data"

            [TASK.t]
            function = "builtins.len:function"

            [SCENARIO.default]
            frequency = "WEEKLY:FREQUENCY"

            [SCENARIO.s]
            """
        )
    )

    layer = read_layer(path)

    same = layer.data_nodes["same_type"]
    assert same.storage_type == "json"
    assert same.scope is Scope.GLOBAL
    assert same.validity_period == dt.timedelta(hours=1)
    assert same.encoding == "latin-1"
    other = layer.data_nodes["other_type"]
    assert other.scope is Scope.SCENARIO
    assert other.validity_period == dt.timedelta(hours=1)
    assert other.encoding is None
    assert layer.tasks["t"].skippable is True
    assert layer.tasks["t"].team == "data"
    assert layer.scenarios["s"].frequency is Frequency.WEEKLY


def test_unknown_table_is_ignored_with_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[GUI]\nport = "5000:int"\n\n[DATA_NODE.node]\n')

    with caplog.at_level(logging.WARNING):
        layer = read_layer(path)

    assert "node" in layer.data_nodes
    assert "Ignored table [GUI]" in caplog.text


# -- ENV templates ---------------------------------------------------------------------


def test_env_template_exported_as_written(tmp_path: Path) -> None:
    Config.configure_job_executions(
        mode="ENV[JOB_MODE]", max_nb_of_workers="ENV[W]:int"
    )
    Config.configure_data_node("node", default_path="ENV[PATH_X]", limit="ENV[X]:int")
    path = tmp_path / "config.toml"

    Config.export(path)

    document = tomllib.loads(path.read_text())
    assert document["DATA_NODE"]["node"]["limit"] == "ENV[X]:int"
    assert document["DATA_NODE"]["node"]["default_path"] == "ENV[PATH_X]"
    assert document["JOB"]["mode"] == "ENV[JOB_MODE]"
    assert document["JOB"]["max_nb_of_workers"] == "ENV[W]:int"


def test_env_template_loaded_stays_template(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        textwrap.dedent(
            """
            [JOB]
            mode = "ENV[JOB_MODE]"
            max_nb_of_workers = "ENV[WORKERS]:int"

            [DATA_NODE.node]
            limit = "ENV[LIMIT]:int"
            ratio = "ENV[RATIO]:float"
            enabled = "ENV[ENABLED]:bool"
            label = "ENV[LABEL]"
            """
        )
    )

    layer = read_layer(path)
    node = layer.data_nodes["node"]
    assert node._properties["limit"] == "ENV[LIMIT]:int"
    monkeypatch.setenv("LIMIT", "12")
    monkeypatch.setenv("RATIO", "0.75")
    monkeypatch.setenv("ENABLED", "true")
    monkeypatch.setenv("LABEL", "north")
    monkeypatch.setenv("JOB_MODE", "standalone")
    monkeypatch.setenv("WORKERS", "5")

    assert node.limit == 12
    assert node.ratio == 0.75
    assert node.enabled is True
    assert node.label == "north"
    assert layer.job_config is not None
    assert layer.job_config.mode == "standalone"
    assert layer.job_config.max_nb_of_workers == 5
    monkeypatch.setenv("LIMIT", "13")
    assert node.limit == 13
    write_layer(layer, tmp_path / "again.toml")
    again = tomllib.loads((tmp_path / "again.toml").read_text())
    assert again["DATA_NODE"]["node"]["limit"] == "ENV[LIMIT]:int"


def test_env_template_missing_variable_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SCENARIO_TEST_UNSET", raising=False)
    path = tmp_path / "config.toml"
    path.write_text('[DATA_NODE.node]\nlimit = "ENV[SCENARIO_TEST_UNSET]:int"\n')
    node = read_layer(path).data_nodes["node"]

    with pytest.raises(ConfigurationError, match="SCENARIO_TEST_UNSET"):
        _ = node.limit


# -- notebook functions and the sidecar module -----------------------------------------


NOTEBOOK_CELL = """
import math
from collections import OrderedDict as Ordered

FACTOR = 3
NAMES = ["a", "b"]

def helper(value):
    return value * FACTOR

def triple(value):
    return helper(value) + math.floor(0.5) + len(Ordered())

def compare_cells(*values):
    return [name for name in NAMES][: len(values)]

class Box:
    def __init__(self, value):
        self.value = value
"""


def configure_notebook_pipeline(namespace: dict[str, Any]) -> None:
    source = Config.configure_data_node("source", default_data=2, box=namespace["Box"])
    result = Config.configure_data_node("result")
    task = Config.configure_task("triple", namespace["triple"], source, result)
    Config.configure_scenario(
        "plan", [task], comparators={"result": namespace["compare_cells"]}
    )


def test_notebook_function_written_to_sidecar(tmp_path: Path) -> None:
    namespace = run_cell(NOTEBOOK_CELL)
    configure_notebook_pipeline(namespace)
    path = tmp_path / "config.toml"

    Config.export(path)

    document = tomllib.loads(path.read_text())
    assert document["TASK"]["triple"]["function"] == "config_functions.triple:function"
    assert document["DATA_NODE"]["source"]["box"] == "config_functions.Box:class"
    sidecar = (tmp_path / "config_functions.py").read_text()
    assert sidecar.splitlines()[0] == GENERATED_HEADER
    assert "import math" in sidecar
    assert "from collections import OrderedDict as Ordered" in sidecar
    assert "FACTOR = 3" in sidecar
    assert "NAMES = ['a', 'b']" in sidecar
    assert "def helper(value):" in sidecar
    assert "class Box:" in sidecar
    assert "__main__" not in path.read_text()


def test_sidecar_loads_in_fresh_process(tmp_path: Path) -> None:
    namespace = run_cell(NOTEBOOK_CELL)
    configure_notebook_pipeline(namespace)
    Config.export(tmp_path / "config.toml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    loaded = run_python(
        f"""
        import sys
        from pathlib import Path
        from jupyter_scenarios.config.toml_format import read_layer
        path_before = list(sys.path)
        layer = read_layer(Path({str(tmp_path / "config.toml")!r}))
        assert sys.path == path_before, "sys.path changed"
        print(layer.tasks["triple"].function(2))
        print(layer.scenarios["plan"].comparators["result"][0](1, 2))
        print(layer.data_nodes["source"].box(5).value)
        """,
        cwd=elsewhere,
    )
    imported = run_python(
        """
        import config_functions
        print(config_functions.triple(4))
        """,
        cwd=elsewhere,
        extra_path=[tmp_path],
    )

    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.split() == ["6", "['a',", "'b']", "5"]
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == "12"


def test_sidecar_from_real_ipython_shell(tmp_path: Path) -> None:
    toml_path = tmp_path / "cells.toml"
    cells = [
        "import statistics\nOFFSET = 10",
        "def center(values):\n    return statistics.mean(values) - OFFSET",
        (
            "from jupyter_scenarios.config import Config\n"
            "source = Config.configure_data_node('source')\n"
            "result = Config.configure_data_node('result')\n"
            "Config.configure_task('center', center, source, result)\n"
            f"Config.export({str(toml_path)!r})"
        ),
    ]
    exported = run_python(
        f"""
        from IPython.core.interactiveshell import InteractiveShell
        shell = InteractiveShell.instance()
        for cell in {cells!r}:
            result = shell.run_cell(cell, store_history=True)
            result.raise_error()
        print(shell.user_ns["center"].__module__)
        """,
        cwd=tmp_path,
    )
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.strip() == "__main__"

    loaded = run_python(
        f"""
        from pathlib import Path
        from jupyter_scenarios.config.toml_format import read_layer
        layer = read_layer(Path({str(toml_path)!r}))
        print(layer.tasks["center"].function([20, 40]))
        """,
        cwd=tmp_path / ".ipython",
    )

    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "20"


def test_sidecar_from_real_kernel(kernel: KernelSession, tmp_path: Path) -> None:
    toml_path = tmp_path / "kernel.toml"
    kernel.execute(f"import sys\nsys.path.insert(0, {str(REPO_ROOT)!r})").check()
    kernel.execute(
        textwrap.dedent(
            """
            import dataclasses
            import statistics

            @dataclasses.dataclass
            class Reading:
                sensor: str
                value: float = 0.0

            def spread(values):
                return statistics.pstdev(values)
            """
        )
    ).check()
    kernel.execute(
        textwrap.dedent(
            f"""
            from jupyter_scenarios.config import Config
            values = Config.configure_csv_data_node("values", exposed_type=Reading)
            result = Config.configure_data_node("result")
            Config.configure_task("spread", spread, values, result)
            Config.export({str(toml_path)!r})
            """
        )
    ).check()

    loaded = run_python(
        f"""
        from pathlib import Path
        from jupyter_scenarios.config.toml_format import read_layer
        layer = read_layer(Path({str(toml_path)!r}))
        print(layer.tasks["spread"].function([1, 3]))
        print(layer.data_nodes["values"].exposed_type("a", 2.5))
        """,
        cwd=tmp_path,
    )

    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.splitlines() == [
        "1.0",
        "Reading(sensor='a', value=2.5)",
    ]


def test_loaded_functions_pickle_by_value(tmp_path: Path) -> None:
    namespace = run_cell(NOTEBOOK_CELL)
    configure_notebook_pipeline(namespace)
    (tmp_path / "beside_steps_for_pickle.py").write_text(
        "def negate(value):\n    return -value\n"
    )
    Config.configure_task(
        "negate",
        namespace["helper"],
        Config.data_nodes["source"],
    )
    path = tmp_path / "pickled.toml"
    Config.export(path)
    text = path.read_text().replace(
        '"pickled_functions.helper:function"',
        '"beside_steps_for_pickle.negate:function"',
    )
    path.write_text(text)
    elsewhere = tmp_path / "worker"
    elsewhere.mkdir()

    try:
        layer = read_layer(path)
        payload = cloudpickle.dumps(
            [layer.tasks["triple"].function, layer.tasks["negate"].function]
        )
    finally:
        sys.modules.pop("pickled_functions", None)
        sys.modules.pop("beside_steps_for_pickle", None)
    (elsewhere / "payload.bin").write_bytes(payload)
    worker = run_python(
        """
        import pickle
        triple, negate = pickle.loads(open("payload.bin", "rb").read())
        print(triple(2), negate(5))
        """,
        cwd=elsewhere,
    )

    assert worker.returncode == 0, worker.stderr
    assert worker.stdout.split() == ["6", "-5"]


def test_sidecar_load_leaves_sys_path(tmp_path: Path) -> None:
    namespace = run_cell(NOTEBOOK_CELL)
    configure_notebook_pipeline(namespace)
    path = tmp_path / "unchanged.toml"
    Config.export(path)
    before = list(sys.path)

    try:
        layer = read_layer(path)
        assert sys.path == before
        assert call_task(layer.tasks["triple"], 1) == 3
    finally:
        sys.modules.pop("unchanged_functions", None)


def test_sidecar_reloaded_after_new_export(tmp_path: Path) -> None:
    path = tmp_path / "reload.toml"
    try:
        namespace = run_cell("def step(value):\n    return value + 1\n")
        source = Config.configure_data_node("source")
        Config.configure_task("step", namespace["step"], source)
        Config.export(path)
        assert call_task(read_layer(path).tasks["step"], 1) == 2

        namespace = run_cell("def step(value):\n    return value + 100\n")
        Config.configure_task("step", namespace["step"], source)
        Config.export(path)

        assert call_task(read_layer(path).tasks["step"], 1) == 101
    finally:
        sys.modules.pop("reload_functions", None)


def test_sidecar_method_and_alias(tmp_path: Path) -> None:
    namespace = run_cell(
        """
        class Steps:
            @staticmethod
            def grow(value):
                return value * 10

        def base(value):
            return value - 1

        shrink = base

        def uses_alias(value):
            return shrink(value)
        """
    )
    source = Config.configure_data_node("source")
    Config.configure_task("grow", namespace["Steps"].grow, source)
    Config.configure_task("alias", namespace["uses_alias"], source)
    path = tmp_path / "methods.toml"

    try:
        Config.export(path)
        layer = read_layer(path)
        assert call_task(layer.tasks["grow"], 2) == 20
        assert call_task(layer.tasks["alias"], 2) == 1
    finally:
        sys.modules.pop("methods_functions", None)


def test_sidecar_decorated_function(tmp_path: Path) -> None:
    namespace = run_cell(
        """
        import functools

        def logged(function):
            @functools.wraps(function)
            def wrapper(*arguments):
                return ("logged", function(*arguments))
            return wrapper

        @logged
        def halve(value):
            return value / 2
        """
    )
    Config.configure_task("halve", namespace["halve"], Config.configure_data_node("s"))
    path = tmp_path / "decorated.toml"

    try:
        Config.export(path)
        assert call_task(read_layer(path).tasks["halve"], 4) == ("logged", 2.0)
    finally:
        sys.modules.pop("decorated_functions", None)


def test_sidecar_notebook_dataclass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # IPython makes the notebook namespace the dict of sys.modules["__main__"],
    # where generated dataclass methods find their globals.
    notebook = ModuleType("__main__")
    monkeypatch.setitem(sys.modules, "__main__", notebook)
    namespace = run_cell(
        """
        import dataclasses

        @dataclasses.dataclass
        class Sale:
            region: str
            amount: float = 0.0
        """,
        vars(notebook),
    )
    Config.configure_csv_data_node("sales", exposed_type=namespace["Sale"])
    path = tmp_path / "rows.toml"

    try:
        Config.export(path)
        row_class = read_layer(path).data_nodes["sales"].exposed_type
        assert row_class("north", 2.5).amount == 2.5
        assert row_class.__module__ == "rows_functions"
    finally:
        sys.modules.pop("rows_functions", None)


def test_loaded_sidecar_function_exported_again(tmp_path: Path) -> None:
    namespace = run_cell(NOTEBOOK_CELL)
    configure_notebook_pipeline(namespace)
    first = tmp_path / "first.toml"
    Config.export(first)
    second = tmp_path / "copy" / "second.toml"

    try:
        Config.load(first)
        Config.export(second)
        sidecar = (second.parent / "second_functions.py").read_text()
        assert "def triple(value):" in sidecar
        assert "def helper(value):" in sidecar
        assert "FACTOR = 3" in sidecar
        task = tomllib.loads(second.read_text())["TASK"]["triple"]
        assert task["function"] == "second_functions.triple:function"
        assert call_task(read_layer(second).tasks["triple"], 2) == 6
    finally:
        sys.modules.pop("first_functions", None)
        sys.modules.pop("second_functions", None)


def test_stale_sidecar_removed(tmp_path: Path, algos: ModuleType) -> None:
    namespace = run_cell("def step(value):\n    return value\n")
    source = Config.configure_data_node("source")
    Config.configure_task("step", namespace["step"], source)
    path = tmp_path / "config.toml"
    Config.export(path)
    assert (tmp_path / "config_functions.py").exists()

    Config.configure_task("step", algos.double, source)
    Config.export(path)

    assert not (tmp_path / "config_functions.py").exists()


def test_handwritten_sidecar_not_overwritten(tmp_path: Path) -> None:
    handwritten = tmp_path / "config_functions.py"
    handwritten.write_text("def mine():\n    return 1\n")
    namespace = run_cell("def step(value):\n    return value\n")
    Config.configure_task("step", namespace["step"], Config.configure_data_node("s"))

    with pytest.raises(
        ConfigurationError, match="was not written by jupyter_scenarios"
    ):
        Config.export(tmp_path / "config.toml")

    assert handwritten.read_text() == "def mine():\n    return 1\n"


def test_sidecar_module_name_is_identifier() -> None:
    assert sidecar_module_name(Path("my-config.v2.toml")) == "my_config_v2_functions"
    assert sidecar_module_name(Path("2024.toml")) == "_2024_functions"


def test_lambda_export_error(tmp_path: Path) -> None:
    Config.configure_task(
        "anonymous", lambda value: value, Config.configure_data_node("s")
    )

    with pytest.raises(ConfigurationError) as error:
        Config.export(tmp_path / "config.toml")

    message = str(error.value)
    assert "lambda" in message
    assert "TASK.anonymous.function" in message
    assert "'def'" in message


def test_closure_export_error(tmp_path: Path) -> None:
    namespace = run_cell(
        """
        def make_scaler(factor):
            def scale(value):
                return value * factor
            return scale

        scale_by_two = make_scaler(2)
        """
    )
    Config.configure_task(
        "scale", namespace["scale_by_two"], Config.configure_data_node("s")
    )

    with pytest.raises(ConfigurationError) as error:
        Config.export(tmp_path / "config.toml")

    assert "make_scaler.<locals>.scale" in str(error.value)
    assert "top level" in str(error.value)


def test_notebook_closure_over_cell_variable_error(tmp_path: Path) -> None:
    namespace = run_cell(
        """
        class Model:
            pass

        MODEL = Model()

        def predict(value):
            return MODEL, value
        """
    )
    Config.configure_task(
        "predict", namespace["predict"], Config.configure_data_node("s")
    )

    with pytest.raises(ConfigurationError) as error:
        Config.export(tmp_path / "config.toml")

    message = str(error.value)
    assert "'predict'" in message
    assert "'MODEL'" in message
    assert "data node" in message


def test_source_not_found_error(tmp_path: Path) -> None:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    # Code run from a string has no source that inspect or linecache can find.
    code = compile("def hidden(value):\n    return value\n", "<string>", "exec")
    exec(code, namespace)  # noqa: S102
    Config.configure_task(
        "hidden", namespace["hidden"], Config.configure_data_node("s")
    )

    with pytest.raises(ConfigurationError) as error:
        Config.export(tmp_path / "config.toml")

    assert "__main__.hidden" in str(error.value)
    assert "not found" in str(error.value)


def test_callable_instance_export_error(tmp_path: Path, algos: ModuleType) -> None:
    Config.configure_task(
        "partial",
        functools.partial(algos.add, 1),
        Config.configure_data_node("s"),
    )

    with pytest.raises(ConfigurationError, match="neither a function nor a class"):
        Config.export(tmp_path / "config.toml")


# -- load errors -----------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_main_function_reference_error(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [DATA_NODE.s]

        [TASK.t]
        function = "__main__.notebook_step:function"
        inputs = ["s:SECTION"]
        """,
    )

    with pytest.raises(LoadingError) as error:
        read_layer(path)

    message = str(error.value)
    assert "'__main__.notebook_step'" in message
    assert str(path) in message
    assert "TASK.t.function" in message
    assert "Move 'notebook_step' to a module" in message


def test_missing_module_error(tmp_path: Path) -> None:
    path = write(tmp_path, '[TASK.t]\nfunction = "no_such_module_xyz.f:function"\n')

    with pytest.raises(LoadingError) as error:
        read_layer(path)

    assert "'no_such_module_xyz.f'" in str(error.value)
    assert str(path) in str(error.value)
    assert "no_such_module_xyz.py" in str(error.value)


def test_missing_attribute_error(tmp_path: Path, algos: ModuleType) -> None:
    path = write(tmp_path, '[TASK.t]\nfunction = "scenario_algos.tripple:function"\n')

    with pytest.raises(LoadingError, match="has no attribute 'tripple'"):
        read_layer(path)


def test_module_beside_toml_is_found(tmp_path: Path) -> None:
    (tmp_path / "beside_toml_steps.py").write_text("def step(v):\n    return v * 7\n")
    path = write(tmp_path, '[TASK.t]\nfunction = "beside_toml_steps.step:function"\n')
    before = list(sys.path)

    try:
        layer = read_layer(path)
        assert sys.path == before
        assert call_task(layer.tasks["t"], 2) == 14
    finally:
        sys.modules.pop("beside_toml_steps", None)


def test_module_import_failure_error(tmp_path: Path) -> None:
    (tmp_path / "broken_steps_mod.py").write_text("raise RuntimeError('boom')\n")
    path = write(tmp_path, '[TASK.t]\nfunction = "broken_steps_mod.step:function"\n')

    try:
        with pytest.raises(LoadingError, match="RuntimeError: boom"):
            read_layer(path)
    finally:
        sys.modules.pop("broken_steps_mod", None)


def test_invalid_toml_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[DATA_NODE.a]\nstorage_type = "pickle"\nscope = = 3\n')

    with pytest.raises(LoadingError) as error:
        read_layer(path)

    assert str(path) in str(error.value)
    assert "line 3" in str(error.value)


def test_missing_file_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"

    with pytest.raises(LoadingError) as error:
        read_layer(path)

    assert str(path) in str(error.value)
    assert "not found" in str(error.value)


def test_undeclared_section_error(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [TASK.t]
        function = "builtins.len:function"
        inputs = ["ghost_input:SECTION"]
        """,
    )

    with pytest.raises(LoadingError) as error:
        read_layer(path)

    message = str(error.value)
    assert "[DATA_NODE.ghost_input]" in message
    assert "TASK.t.inputs" in message
    assert str(path) in message


def test_undeclared_scenario_task_error(tmp_path: Path) -> None:
    path = write(tmp_path, '[SCENARIO.s]\ntasks = ["ghost_task:SECTION"]\n')

    with pytest.raises(LoadingError, match=r"\[TASK.ghost_task\]"):
        read_layer(path)


def test_undeclared_property_section_error(tmp_path: Path) -> None:
    path = write(tmp_path, '[DATA_NODE.a]\nlink = "ghost:SECTION"\n')

    with pytest.raises(LoadingError, match="'ghost'"):
        read_layer(path)


@pytest.mark.parametrize("value", ["0.5:flot", "3:integer", "DAILY:frequency"])
def test_unknown_suffix_error(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, f'[DATA_NODE.a]\nsetting = "{value}"\n')

    with pytest.raises(LoadingError) as error:
        read_layer(path)

    assert repr(value) in str(error.value)
    assert "unknown type suffix" in str(error.value)


@pytest.mark.parametrize(
    "value",
    [
        "abc:int",
        "maybe:bool",
        "x:float",
        "yesterday:datetime",
        "soon:timedelta",
        "ALL:SCOPE",
    ],
)
def test_invalid_typed_value_error(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, f'[DATA_NODE.a]\nsetting = "{value}"\n')

    with pytest.raises(LoadingError) as error:
        read_layer(path)

    assert repr(value) in str(error.value)
    assert "DATA_NODE.a.setting" in str(error.value)


def test_invalid_section_id_error(tmp_path: Path) -> None:
    path = write(tmp_path, '[DATA_NODE."my-node"]\n')

    with pytest.raises(LoadingError, match="'my-node'"):
        read_layer(path)


def test_untyped_function_error(tmp_path: Path) -> None:
    path = write(tmp_path, '[TASK.t]\nfunction = "builtins.len"\n')

    with pytest.raises(LoadingError, match="module.name:function"):
        read_layer(path)


def test_reserved_key_error(tmp_path: Path) -> None:
    path = write(tmp_path, '[DATA_NODE.a]\n\n[TASK.t]\ninput = ["a:SECTION"]\n')

    with pytest.raises(LoadingError, match="'input' is not valid in"):
        read_layer(path)


def test_comparator_not_function_error(tmp_path: Path) -> None:
    path = write(tmp_path, '[SCENARIO.s.comparators]\nresult = ["max"]\n')

    with pytest.raises(LoadingError) as error:
        read_layer(path)

    assert "'max'" in str(error.value)
    assert "SCENARIO.s.comparators.result" in str(error.value)
    assert str(path) in str(error.value)
