"""Attacks on the JSON default decoder, filter() and write_with_column_names().

Each test checks a promise. Reading a data file builds only the types that the JSON
format names: dates, Enum members and dataclass instances. Values read back as
written. A bad input gets an error naming the data node before any file changes.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import enum
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from engine_fixtures import engine as engine_fixture  # noqa: F401 - fixture

import jupyter_scenarios as tp
from jupyter_scenarios import Config, Operator, Scope
from jupyter_scenarios.storage import UnreadableDataError

pytestmark = [pytest.mark.usefixtures("engine"), pytest.mark.timeout(300)]

# Arguments of every Recorder() call, so a test can see whether a read built one.
RECORDER_CALLS: list[dict[str, object]] = []

# A module-level dict that is neither an Enum nor a dataclass.
SETTINGS = {"API_TOKEN": "secret-value"}


class Recorder:
    """A plain class, neither an Enum nor a dataclass, that records its creation."""

    def __init__(self, **arguments: object) -> None:
        RECORDER_CALLS.append(arguments)


@dataclasses.dataclass
class Inner:
    x: int


@dataclasses.dataclass
class Outer:
    inner: Inner
    label: str


def json_node(name: str) -> tp.DataNode:
    config = Config.configure_json_data_node(name, scope=Scope.GLOBAL)
    return tp.create_global_data_node(config)


# -- JSON default decoder -----------------------------------------------------------


def test_json_decoder_rejects_plain_class() -> None:
    # A "dataclass-" tag must name a dataclass. The decoder calls whatever class the
    # file names with the stored keyword arguments, so a file naming, for example,
    # subprocess.Popen runs a command when the node is read.
    node = json_node("plain_class")
    tag = f"dataclass-{Recorder.__module__}-Recorder"
    stored = {"__type__": tag, "__value__": {"args": ["echo", "hi"]}}
    node.path.write_text(json.dumps(stored), encoding="utf-8")
    RECORDER_CALLS.clear()

    with pytest.raises((UnreadableDataError, ValueError)) as raised:
        node.read()

    assert RECORDER_CALLS == [], "reading the file created an instance of a plain class"
    assert "Recorder" in str(raised.value)


def test_json_decoder_rejects_non_enum() -> None:
    # An "Enum-" tag must name an Enum. The decoder indexes any attribute the file
    # names, so a file can read out a module-level dict such as os.environ.
    node = json_node("plain_mapping")
    tag = f"Enum-{Recorder.__module__}-SETTINGS-API_TOKEN"
    node.path.write_text(
        json.dumps({"__type__": tag, "__value__": 1}), encoding="utf-8"
    )

    with pytest.raises((UnreadableDataError, ValueError)) as raised:
        node.read()

    assert "SETTINGS" in str(raised.value)


def test_json_nested_dataclass_round_trips() -> None:
    # The module docstring promises that dataclass instances are stored and read
    # back. dataclasses.asdict() turns the inner instance into a plain dict first,
    # so it reads back as a dict.
    node = json_node("nested")
    value = Outer(Inner(1), "first")

    node.write(value)
    read = node.read()

    assert isinstance(read.inner, Inner), f"inner read back as {read.inner!r}"
    assert read == value


def test_json_user_dict_with_type_key_round_trips() -> None:
    # A user dict whose keys happen to be the tag keys is not escaped on write, so it
    # reads back as a date, a different value.
    node = json_node("tag_lookalike")
    value = {"__type__": "Datetime", "__value__": "2024-01-01"}

    node.write(value)

    assert node.read() == value


# -- DataNode.filter ----------------------------------------------------------------


def test_filter_list_of_lists_names_node() -> None:
    # Rows that are lists have no attributes, so the int key fails. The error comes
    # from getattr() and names neither the data node nor the accepted keys.
    config = Config.configure_pickle_data_node("rows", scope=Scope.GLOBAL)
    node = tp.create_global_data_node(config)
    node.write([[1, 2], [3, 4]])

    with pytest.raises((TypeError, NotImplementedError)) as raised:
        node.filter((0, 1, Operator.EQUAL))

    message = str(raised.value)
    assert node.id in message, f"error does not name the data node: {message}"


# -- write_with_column_names --------------------------------------------------------


def test_excel_sheets_with_column_names() -> None:
    # Taipy's excel data node writes a dict of sheets (DataFrames or numpy arrays)
    # one sheet per key, each with the given column names. Here the dict becomes
    # the columns of one empty table, so the rows and the old contents are lost
    # without an error.
    config = Config.configure_excel_data_node("book", scope=Scope.GLOBAL)
    node = tp.create_global_data_node(config)
    node.write({"old": pd.DataFrame({"a": [9]})})
    sheets = {"north": np.array([[1, 2]]), "south": np.array([[3, 4]])}

    node.write_with_column_names(sheets, columns=["a", "b"])

    read = node.read()
    assert sorted(read) == ["north", "south"], f"sheets read back: {read}"
    assert read["north"].to_dict("list") == {"a": [1], "b": [2]}
    assert read["south"].to_dict("list") == {"a": [3], "b": [4]}


def test_write_columns_names_frame_columns() -> None:
    # Taipy sets the names of a DataFrame's columns to ``columns``. Here they select
    # columns by name, so a DataFrame with other names is written as NaN only.
    config = Config.configure_csv_data_node("renamed", scope=Scope.GLOBAL)
    node = tp.create_global_data_node(config)

    node.write_with_column_names(pd.DataFrame([[1, 2], [3, 4]]), columns=["a", "b"])

    read = node.read()
    assert list(read.columns) == ["a", "b"]
    assert read["a"].tolist() == [1, 3], f"stored table:\n{read}"
    assert read["b"].tolist() == [2, 4]


# -- further cases of the fixes -----------------------------------------------------


class Shade(enum.Enum):
    LIGHT = "light"
    DARK = "dark"


@dataclasses.dataclass
class Palette:
    created: datetime.date
    shade: Shade
    points: list[Inner]
    labels: dict[str, object]


@dataclasses.dataclass
class Counted:
    items: list[int]
    count: int = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.count = len(self.items)


Row = collections.namedtuple("Row", ["year", "sales"])


def test_json_rejected_tag_names_node() -> None:
    node = json_node("plain_class_message")
    tag = f"dataclass-{Recorder.__module__}-Recorder"
    stored = [1, {"__type__": tag, "__value__": {}}]
    node.path.write_text(json.dumps(stored), encoding="utf-8")
    RECORDER_CALLS.clear()

    with pytest.raises(UnreadableDataError) as raised:
        node.read()

    message = str(raised.value)
    assert RECORDER_CALLS == []
    assert node.id in message
    assert tag in message
    assert "not a dataclass" in message


@pytest.mark.parametrize(
    "tag",
    [
        "Enum-os-environ-HOME",
        "Enum-builtins-dict-keys",
        "Enum-test_attack_storage_values_2-Shade-PURPLE",
        "Enum-missing",
    ],
)
def test_json_enum_tag_rejected(tag: str) -> None:
    node = json_node("enum_tags")
    node.path.write_text(
        json.dumps({"__type__": tag, "__value__": 1}), encoding="utf-8"
    )

    with pytest.raises(UnreadableDataError) as raised:
        node.read()

    message = str(raised.value)
    assert node.id in message
    assert str(Path.home()) not in message, "the error shows the environment value"


def test_json_decoder_imports_named_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The decoder imports the module that a tag names, as Taipy does, so a kernel
    # reads a dataclass whose module it has not imported yet.
    module_name = "json_tag_module_not_imported"
    source = """
import dataclasses

@dataclasses.dataclass
class Stored:
    x: int
"""
    (tmp_path / f"{module_name}.py").write_text(source, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert module_name not in sys.modules
    node = json_node("imported_module")
    stored = {"__type__": f"dataclass-{module_name}-Stored", "__value__": {"x": 3}}
    node.path.write_text(json.dumps(stored), encoding="utf-8")

    try:
        read = node.read()
        assert type(read).__module__ == module_name
        assert read.x == 3
    finally:
        sys.modules.pop(module_name, None)


def test_json_dataclass_fields_keep_types() -> None:
    node = json_node("palette")
    lookalike = {"__type__": "Datetime", "__value__": "2024-01-01"}
    value = Palette(
        created=datetime.date(2024, 5, 6),
        shade=Shade.DARK,
        points=[Inner(1), Inner(2)],
        labels={"first": lookalike, "second": [lookalike]},
    )

    node.write(value)
    read = node.read()

    assert read == value
    assert isinstance(read.created, datetime.date)
    assert read.shade is Shade.DARK
    assert all(isinstance(point, Inner) for point in read.points)


def test_json_dataclass_init_false_field() -> None:
    node = json_node("counted")

    node.write(Counted([4, 5, 6]))
    read = node.read()

    assert read == Counted([4, 5, 6])
    assert read.count == 3


def test_json_nested_lookalikes_round_trip() -> None:
    node = json_node("nested_lookalikes")
    inner = {"__type__": "Enum-os-environ-HOME", "__value__": 1}
    value = {
        "rows": [inner, {"__type__": "x", "__value__": inner}],
        "plain": {"__type__": "only one key"},
        "tuple": (inner,),
    }

    node.write(value)

    assert node.read() == {**value, "tuple": [inner]}


def test_json_append_keeps_lookalike() -> None:
    node = json_node("appended_lookalike")
    lookalike = {"__type__": "Datetime", "__value__": "2024-01-01"}
    node.write([lookalike])

    node.append([lookalike])

    assert node.read() == [lookalike, lookalike]


def test_json_reads_taipy_tags() -> None:
    # Files written by Taipy's JSON data node keep reading as before.
    node = json_node("taipy_file")
    stored = [
        {"__type__": "Datetime", "__value__": "2024-01-02T03:04:05"},
        {"__type__": f"Enum-{Shade.__module__}-Shade-LIGHT", "__value__": "light"},
        {"__type__": f"dataclass-{Inner.__module__}-Inner", "__value__": {"x": 7}},
    ]
    node.path.write_text(json.dumps(stored), encoding="utf-8")

    assert node.read() == [
        datetime.datetime(2024, 1, 2, 3, 4, 5),
        Shade.LIGHT,
        Inner(7),
    ]


def test_json_circular_list_rejected() -> None:
    node = json_node("circular")
    node.write([1])
    value: list[object] = [1]
    value.append(value)

    with pytest.raises(ValueError) as raised:
        node.write(value)

    assert node.id in str(raised.value)
    assert node.read() == [1]


def test_filter_list_of_tuples_message() -> None:
    config = Config.configure_pickle_data_node("tuples", scope=Scope.GLOBAL)
    node = tp.create_global_data_node(config)
    node.write([(2024, 10), (2025, 20)])

    with pytest.raises(TypeError) as raised:
        node.filter(("year", 2024, Operator.EQUAL))

    message = str(raised.value)
    assert node.id in message
    assert "tuples" in message
    assert "(2024, 10)" in message
    assert "DataFrame" in message


def test_filter_objects_integer_key() -> None:
    config = Config.configure_pickle_data_node("objects", scope=Scope.GLOBAL)
    node = tp.create_global_data_node(config)
    node.write([Inner(1), Inner(2)])

    with pytest.raises(TypeError) as raised:
        node.filter((0, 1, Operator.EQUAL))

    message = str(raised.value)
    assert node.id in message
    assert "Inner" in message
    assert "must be a string" in message


def test_filter_namedtuples_by_field() -> None:
    config = Config.configure_pickle_data_node("named", scope=Scope.GLOBAL)
    node = tp.create_global_data_node(config)
    node.write([Row(2024, 10), Row(2025, 20)])

    assert node.filter(("year", 2025, Operator.EQUAL)) == [Row(2025, 20)]


@pytest.mark.parametrize("storage_type", ["csv", "excel", "parquet"])
def test_write_columns_renames_frame(storage_type: str) -> None:
    config = Config.configure_data_node(
        f"renamed_{storage_type}",
        storage_type=storage_type,
        scope=Scope.GLOBAL,
        sheet_name="data" if storage_type == "excel" else None,
    )
    node = tp.create_global_data_node(config)
    frame = pd.DataFrame({"x": [1, 3], "y": [2, 4]})

    node.write_with_column_names(frame, columns=["a", "b"])

    read = node.read()
    assert list(read.columns) == ["a", "b"]
    assert read["a"].tolist() == [1, 3]
    assert read["b"].tolist() == [2, 4]
    assert list(frame.columns) == ["x", "y"], "the caller's DataFrame was renamed"


def test_write_columns_renames_dict() -> None:
    config = Config.configure_csv_data_node("dict_columns", scope=Scope.GLOBAL)
    node = tp.create_global_data_node(config)

    node.write_with_column_names({"x": [1], "y": [2]}, columns=["a", "b"])

    assert node.read().to_dict("list") == {"a": [1], "b": [2]}


def test_write_columns_empty_rows() -> None:
    config = Config.configure_csv_data_node("empty_rows", scope=Scope.GLOBAL)
    node = tp.create_global_data_node(config)

    node.write_with_column_names([], columns=["a", "b"])

    read = node.read()
    assert list(read.columns) == ["a", "b"]
    assert len(read) == 0


@pytest.mark.parametrize("storage_type", ["csv", "excel", "parquet"])
def test_write_columns_frame_mismatch(storage_type: str) -> None:
    config = Config.configure_data_node(
        f"mismatch_{storage_type}",
        storage_type=storage_type,
        scope=Scope.GLOBAL,
        sheet_name="data" if storage_type == "excel" else None,
    )
    node = tp.create_global_data_node(config)
    node.write(pd.DataFrame({"kept": [5]}))
    before = node.path.read_bytes()

    with pytest.raises(ValueError) as raised:
        node.write_with_column_names(pd.DataFrame([[1, 2, 3]]), columns=["a", "b"])

    message = str(raised.value)
    assert node.id in message
    assert "2 column names" in message
    assert "3 columns" in message
    assert node.path.read_bytes() == before
    assert len(node.edits) == 1


def test_excel_sheets_mismatch_keeps_workbook() -> None:
    config = Config.configure_excel_data_node("kept_book", scope=Scope.GLOBAL)
    node = tp.create_global_data_node(config)
    node.write({"old": pd.DataFrame({"a": [9]})})
    before = node.path.read_bytes()
    sheets = {"north": np.array([[1, 2]]), "south": np.array([[3, 4, 5]])}

    with pytest.raises(ValueError) as raised:
        node.write_with_column_names(sheets, columns=["a", "b"])

    message = str(raised.value)
    assert node.id in message
    assert "'south'" in message
    assert node.path.read_bytes() == before


@pytest.mark.parametrize(
    "data",
    [{1: np.array([[1, 2]])}, {}, {"north": {1, 2}}],
    ids=["integer sheet name", "no sheets", "set"],
)
def test_excel_bad_sheets_keep_workbook(data: object) -> None:
    config = Config.configure_excel_data_node("bad_book", scope=Scope.GLOBAL)
    node = tp.create_global_data_node(config)
    node.write({"old": pd.DataFrame({"a": [9]})})
    before = node.path.read_bytes()

    with pytest.raises((TypeError, ValueError)) as raised:
        node.write_with_column_names(data, columns=["a", "b"])

    assert node.id in str(raised.value)
    assert node.path.read_bytes() == before


def test_excel_named_sheet_gets_array_dict() -> None:
    # With one sheet_name, write() takes a dict of DataFrames or 2-D numpy arrays as
    # sheets, and any other dict as the columns of one table.
    config = Config.configure_excel_data_node(
        "array_book", scope=Scope.GLOBAL, sheet_name="main"
    )
    node = tp.create_global_data_node(config)

    node.write_with_column_names({"main": np.array([[1, 2]])}, columns=["a", "b"])

    assert node.read().to_dict("list") == {"a": [1], "b": [2]}
