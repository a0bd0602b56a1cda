"""Tests of the data node storage backends, on real files under tmp_path."""

from __future__ import annotations

import ast
import dataclasses
import datetime
import json
import os
import pickle
import stat
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from jupyter_scenarios.exceptions import (
    ConfigurationError,
    InvalidStorageType,
    NoData,
)
from jupyter_scenarios.storage import (
    DEFAULT_STORAGE_TYPE,
    STORAGE_TYPES,
    CSVBackend,
    ExcelBackend,
    GenericBackend,
    InMemoryBackend,
    JSONBackend,
    MissingDataError,
    ParquetBackend,
    PickleBackend,
    StorageBackend,
    UnreadableDataError,
    atomic_path,
    atomic_write_bytes,
    get_backend_class,
    make_backend,
)
from jupyter_scenarios.storage.atomic import writing_unpublished_files

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
STORAGE_FOLDER = REPOSITORY_ROOT / "jupyter_scenarios" / "storage"
FILE_TYPES = ("pickle", "json", "csv", "excel", "parquet")
TABLE_TYPES = ("csv", "excel", "parquet")


@dataclasses.dataclass
class Row:
    name: str
    count: int


class PlainRow:
    """A row class that is not a dataclass, built from keyword arguments."""

    def __init__(self, name: str, count: int) -> None:
        self.name = name
        self.count = count

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PlainRow) and vars(self) == vars(other)


def unique_key() -> str:
    return f"node_{uuid.uuid4().hex}"


def sample_frame() -> pd.DataFrame:
    return pd.DataFrame({"name": ["a", "b", "c"], "count": [1, 2, 3]})


def single_table_backend(
    storage_type: str, folder: Path, **properties: Any
) -> StorageBackend:
    """Build a table backend whose read() returns one table, even for excel."""
    if storage_type == "excel":
        properties.setdefault("sheet_name", "data")
    return make_backend(storage_type, unique_key(), properties, folder)


# Registry


def test_storage_types_list_every_backend() -> None:
    assert STORAGE_TYPES == (
        "pickle",
        "json",
        "csv",
        "excel",
        "parquet",
        "in_memory",
        "generic",
    )
    assert DEFAULT_STORAGE_TYPE == "pickle"


@pytest.mark.parametrize("storage_type", STORAGE_TYPES)
def test_get_backend_class_matches_name(storage_type: str) -> None:
    backend_class = get_backend_class(storage_type)
    assert issubclass(backend_class, StorageBackend)
    assert backend_class.storage_type == storage_type


def test_get_backend_class_returns_exported() -> None:
    assert get_backend_class("pickle") is PickleBackend
    assert get_backend_class("json") is JSONBackend
    assert get_backend_class("csv") is CSVBackend
    assert get_backend_class("excel") is ExcelBackend
    assert get_backend_class("parquet") is ParquetBackend
    assert get_backend_class("in_memory") is InMemoryBackend
    assert get_backend_class("generic") is GenericBackend


def test_get_backend_class_none_is_pickle() -> None:
    assert get_backend_class(None) is PickleBackend


@pytest.mark.parametrize("bad_value", ["sql", "CSV", "", "pickle "])
def test_invalid_storage_type_lists_valid(bad_value: str) -> None:
    with pytest.raises(InvalidStorageType) as raised:
        get_backend_class(bad_value)
    message = str(raised.value)
    assert repr(bad_value) in message
    for name in STORAGE_TYPES:
        assert repr(name) in message


def test_invalid_storage_type_unhashable_value() -> None:
    with pytest.raises(InvalidStorageType, match=r"\['csv'\]"):
        get_backend_class(["csv"])  # type: ignore[arg-type]


def test_make_backend_invalid_type_names_key(tmp_path: Path) -> None:
    with pytest.raises(InvalidStorageType) as raised:
        make_backend("mongo", "sales_history", {}, tmp_path)
    message = str(raised.value)
    assert "'sales_history'" in message
    assert "'mongo'" in message
    assert "'in_memory'" in message


def test_make_backend_builds_configured_backend(tmp_path: Path) -> None:
    backend = make_backend("json", "node", {"encoding": "latin-1"}, str(tmp_path))
    assert isinstance(backend, JSONBackend)
    assert backend.key == "node"
    assert backend.folder == tmp_path
    assert backend.encoding == "latin-1"


# Paths


@pytest.mark.parametrize(
    ("storage_type", "extension"),
    [
        ("pickle", ".p"),
        ("json", ".json"),
        ("csv", ".csv"),
        ("excel", ".xlsx"),
        ("parquet", ".parquet"),
    ],
)
def test_default_path_in_folder(
    tmp_path: Path, storage_type: str, extension: str
) -> None:
    backend = make_backend(storage_type, "prices", {}, tmp_path)
    assert backend.path == tmp_path / f"prices{extension}"
    assert backend.extension == extension


def test_relative_path_uses_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    backend = make_backend(
        "json", "node", {"path": "data/out.json"}, tmp_path / "elsewhere"
    )
    backend.write({"a": 1})
    assert json.loads((tmp_path / "data" / "out.json").read_text()) == {"a": 1}
    assert not (tmp_path / "elsewhere").exists()


def test_path_overrides_default_path(tmp_path: Path) -> None:
    both = make_backend(
        "pickle",
        "node",
        {"path": tmp_path / "a.p", "default_path": tmp_path / "b.p"},
        tmp_path,
    )
    assert both.path == tmp_path / "a.p"
    default_only = make_backend(
        "pickle", "node", {"default_path": str(tmp_path / "b.p")}, tmp_path
    )
    assert default_only.path == tmp_path / "b.p"


# Behaviour shared by the file backends


def sample_value(storage_type: str) -> Any:
    if storage_type in TABLE_TYPES:
        return sample_frame()
    return {"name": "café", "values": [1, 2.5, None, True]}


def assert_same_value(storage_type: str, actual: Any, expected: Any) -> None:
    if storage_type in TABLE_TYPES:
        pd.testing.assert_frame_equal(actual, expected)
    else:
        assert actual == expected


@pytest.mark.parametrize("storage_type", FILE_TYPES)
def test_file_backend_round_trip(tmp_path: Path, storage_type: str) -> None:
    backend = single_table_backend(storage_type, tmp_path / "nested" / "folder")
    assert not backend.exists()

    backend.write(sample_value(storage_type))

    assert backend.exists()
    assert backend.path is not None
    assert backend.path.is_file()
    assert_same_value(storage_type, backend.read(), sample_value(storage_type))


@pytest.mark.parametrize("storage_type", FILE_TYPES)
def test_file_backend_write_replaces(tmp_path: Path, storage_type: str) -> None:
    backend = single_table_backend(storage_type, tmp_path)
    backend.write(sample_value(storage_type))
    if storage_type in TABLE_TYPES:
        replacement: Any = pd.DataFrame({"name": ["z"], "count": [9]})
    else:
        replacement = ["replaced"]

    backend.write(replacement)

    assert_same_value(storage_type, backend.read(), replacement)


@pytest.mark.parametrize("storage_type", FILE_TYPES)
def test_file_backend_leaves_no_temp_files(tmp_path: Path, storage_type: str) -> None:
    backend = single_table_backend(storage_type, tmp_path)
    backend.write(sample_value(storage_type))
    backend.write(sample_value(storage_type))
    assert backend.path is not None
    assert sorted(os.listdir(tmp_path)) == [backend.path.name]


@pytest.mark.parametrize("storage_type", FILE_TYPES)
def test_file_backend_delete(tmp_path: Path, storage_type: str) -> None:
    backend = single_table_backend(storage_type, tmp_path)
    backend.write(sample_value(storage_type))
    backend.delete()
    assert not backend.exists()
    backend.delete()


@pytest.mark.parametrize("storage_type", FILE_TYPES)
def test_missing_file_names_key(tmp_path: Path, storage_type: str) -> None:
    backend = make_backend(storage_type, "never_written", {}, tmp_path)
    with pytest.raises(FileNotFoundError) as raised:
        backend.read()
    assert isinstance(raised.value, MissingDataError)
    assert isinstance(raised.value, NoData)
    assert "'never_written'" in str(raised.value)
    assert str(backend.path) in str(raised.value)


# Bytes that no backend can parse: a truncated pickle header, then bytes that are
# invalid in UTF-8, and no zip or Parquet signature.
UNREADABLE_BYTES = b"\x80\x05\x95garbage\xff\xfe\x00"


@pytest.mark.parametrize("storage_type", FILE_TYPES)
def test_unreadable_file_names_path_and_type(tmp_path: Path, storage_type: str) -> None:
    backend = make_backend(storage_type, "corrupt_node", {}, tmp_path)
    assert backend.path is not None
    backend.path.write_bytes(UNREADABLE_BYTES)

    with pytest.raises(UnreadableDataError) as raised:
        backend.read()

    message = str(raised.value)
    assert "'corrupt_node'" in message
    assert str(backend.path) in message
    assert repr(storage_type) in message
    assert raised.value.__cause__ is not None


@pytest.mark.parametrize("storage_type", FILE_TYPES)
def test_folder_path_is_not_unreadable_data(tmp_path: Path, storage_type: str) -> None:
    folder = tmp_path / "a_folder"
    folder.mkdir()
    if storage_type == "parquet":
        # A folder of Parquet files is a valid Parquet dataset.
        pytest.skip("parquet reads folders")
    backend = make_backend(storage_type, "node", {"path": folder}, tmp_path)
    with pytest.raises(IsADirectoryError):
        backend.read()


# pickle


def test_pickle_round_trip_objects(tmp_path: Path) -> None:
    backend = make_backend("pickle", unique_key(), {}, tmp_path)
    value = {
        "row": Row("a", 1),
        "array": np.arange(5),
        "when": datetime.datetime(2024, 1, 2, 3, 4, 5),
        "nested": [(1, 2), {3, 4}, b"bytes"],
    }
    backend.write(value)
    loaded = backend.read()
    assert loaded["row"] == Row("a", 1)
    np.testing.assert_array_equal(loaded["array"], np.arange(5))
    assert loaded["when"] == value["when"]
    assert loaded["nested"] == value["nested"]


def test_pickle_uses_protocol_5(tmp_path: Path) -> None:
    backend = make_backend("pickle", unique_key(), {}, tmp_path)
    backend.write([1, 2, 3])
    assert backend.path is not None
    content = backend.path.read_bytes()
    # A pickle of protocol 2 or later starts with the PROTO opcode and its version.
    assert content[:2] == b"\x80\x05"
    assert pickle.loads(content) == [1, 2, 3]


def test_pickle_function_by_value(tmp_path: Path) -> None:
    backend = make_backend("pickle", unique_key(), {}, tmp_path)
    offset = 10
    backend.write(lambda number: number + offset)
    assert backend.read()(1) == 11


def test_pickle_append_unsupported(tmp_path: Path) -> None:
    backend = make_backend("pickle", "pickled_node", {}, tmp_path)
    backend.write([1])
    with pytest.raises(NotImplementedError, match="'pickled_node'"):
        backend.append([2])
    assert backend.read() == [1]


# json


def test_json_file_is_readable_json(tmp_path: Path) -> None:
    backend = make_backend("json", unique_key(), {}, tmp_path)
    backend.write({"text": "naïve", "numbers": [1, 2]})
    assert backend.path is not None
    assert json.loads(backend.path.read_text(encoding="utf-8")) == {
        "text": "naïve",
        "numbers": [1, 2],
    }


def test_json_encoding_property(tmp_path: Path) -> None:
    backend = make_backend("json", unique_key(), {"encoding": "latin-1"}, tmp_path)
    backend.write({"city": "Besançon"})
    assert backend.path is not None
    assert "Besançon".encode("latin-1") in backend.path.read_bytes()
    assert backend.read() == {"city": "Besançon"}


class DateEncoder(json.JSONEncoder):
    def default(self, o: Any) -> Any:
        if isinstance(o, datetime.date):
            return {"__date__": o.isoformat()}
        return super().default(o)


class DateDecoder(json.JSONDecoder):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(object_hook=self.decode_date, **kwargs)

    @staticmethod
    def decode_date(value: dict[str, Any]) -> Any:
        if set(value) == {"__date__"}:
            return datetime.date.fromisoformat(value["__date__"])
        return value


def test_json_custom_encoder_decoder(tmp_path: Path) -> None:
    properties = {"encoder": DateEncoder, "decoder": DateDecoder}
    backend = make_backend("json", unique_key(), properties, tmp_path)
    value = {"start": datetime.date(2024, 3, 1), "days": [1, 2]}
    backend.write(value)
    assert backend.read() == value


def test_json_default_encoder_stores_dates(tmp_path: Path) -> None:
    backend = make_backend("json", unique_key(), {}, tmp_path)
    value = [datetime.date(2024, 3, 1), datetime.datetime(2024, 3, 1, 8, 15)]
    backend.write(value)
    assert backend.read() == value


def test_json_without_encoder_rejects_sets(tmp_path: Path) -> None:
    backend = make_backend("json", "json_node", {}, tmp_path)
    backend.write([1])
    with pytest.raises(TypeError) as raised:
        backend.write([{1, 2}])
    message = str(raised.value)
    assert "'json_node'" in message
    assert "set" in message
    assert "'encoder' property" in message
    assert backend.read() == [1]


@pytest.mark.parametrize("name", ["encoder", "decoder"])
def test_json_invalid_codec_names_property(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        make_backend("json", "json_node", {name: "not a class"}, tmp_path)
    message = str(raised.value)
    assert "'json_node'" in message
    assert repr(name) in message
    assert "'not a class'" in message


def test_json_append_to_list(tmp_path: Path) -> None:
    backend = make_backend("json", unique_key(), {}, tmp_path)
    backend.write([1, 2])
    backend.append(3)
    backend.append([4, 5])
    backend.append({"six": 6})
    assert backend.read() == [1, 2, 3, 4, 5, {"six": 6}]


def test_json_append_without_file(tmp_path: Path) -> None:
    backend = make_backend("json", unique_key(), {}, tmp_path)
    backend.append({"first": 1})
    assert backend.read() == [{"first": 1}]


def test_json_append_dict_to_dict(tmp_path: Path) -> None:
    backend = make_backend("json", unique_key(), {}, tmp_path)
    backend.write({"a": 1, "b": 2})
    backend.append({"b": 20, "c": 3})
    assert backend.read() == {"a": 1, "b": 20, "c": 3}


def test_json_append_to_scalar_fails(tmp_path: Path) -> None:
    backend = make_backend("json", "scalar_node", {}, tmp_path)
    backend.write(42)
    with pytest.raises(TypeError) as raised:
        backend.append(1)
    assert "'scalar_node'" in str(raised.value)
    assert "int" in str(raised.value)
    assert backend.read() == 42


# Tables: csv, excel and parquet


@pytest.mark.parametrize("storage_type", TABLE_TYPES)
def test_table_append_rows(tmp_path: Path, storage_type: str) -> None:
    backend = single_table_backend(storage_type, tmp_path)
    backend.write(sample_frame())

    backend.append(pd.DataFrame({"count": [4], "name": ["d"]}))
    backend.append([{"name": "e", "count": 5}, {"name": "f", "count": 6}])

    expected = pd.DataFrame(
        {"name": ["a", "b", "c", "d", "e", "f"], "count": [1, 2, 3, 4, 5, 6]}
    )
    pd.testing.assert_frame_equal(backend.read(), expected)


@pytest.mark.parametrize("storage_type", TABLE_TYPES)
def test_table_append_without_file(tmp_path: Path, storage_type: str) -> None:
    backend = single_table_backend(storage_type, tmp_path)
    backend.append(sample_frame())
    pd.testing.assert_frame_equal(backend.read(), sample_frame())


@pytest.mark.parametrize("storage_type", TABLE_TYPES)
def test_table_append_wrong_columns(tmp_path: Path, storage_type: str) -> None:
    backend = single_table_backend(storage_type, tmp_path)
    backend.write(sample_frame())
    with pytest.raises(ValueError) as raised:
        backend.append(pd.DataFrame({"name": ["d"], "price": [1.5]}))
    message = str(raised.value)
    assert repr(backend.key) in message
    assert "price" in message
    pd.testing.assert_frame_equal(backend.read(), sample_frame())


@pytest.mark.parametrize("storage_type", TABLE_TYPES)
def test_table_exposed_numpy(tmp_path: Path, storage_type: str) -> None:
    backend = single_table_backend(storage_type, tmp_path, exposed_type="numpy")
    array = np.array([[1, 2], [3, 4], [5, 6]])
    backend.write(array)
    result = backend.read()
    assert isinstance(result, np.ndarray)
    np.testing.assert_array_equal(result, array)


@pytest.mark.parametrize("row_class", [Row, PlainRow])
@pytest.mark.parametrize("storage_type", TABLE_TYPES)
def test_table_exposed_class(
    tmp_path: Path, storage_type: str, row_class: type[Any]
) -> None:
    backend = single_table_backend(storage_type, tmp_path, exposed_type=row_class)
    rows = [row_class("a", 1), row_class("b", 2)]
    backend.write(rows)
    assert backend.read() == rows

    backend.append([row_class("c", 3)])
    assert backend.read() == [*rows, row_class("c", 3)]


@pytest.mark.parametrize("storage_type", TABLE_TYPES)
def test_table_exposed_class_mismatch(tmp_path: Path, storage_type: str) -> None:
    backend = single_table_backend(storage_type, tmp_path, exposed_type=Row)
    backend.write(pd.DataFrame({"name": ["a"], "price": [1.5]}))
    with pytest.raises(TypeError) as raised:
        backend.read()
    message = str(raised.value)
    assert repr(backend.key) in message
    assert "Row" in message
    assert "price" in message


@pytest.mark.parametrize("bad_value", ["polars", "modin", 3])
@pytest.mark.parametrize("storage_type", TABLE_TYPES)
def test_table_invalid_exposed_type(
    tmp_path: Path, storage_type: str, bad_value: Any
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        make_backend(storage_type, "table_node", {"exposed_type": bad_value}, tmp_path)
    message = str(raised.value)
    assert "'table_node'" in message
    assert repr(bad_value) in message
    assert "'numpy'" in message


@pytest.mark.parametrize("storage_type", TABLE_TYPES)
def test_table_missing_pandas_names_install(
    tmp_path: Path, storage_type: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = single_table_backend(storage_type, tmp_path)
    # A None entry in sys.modules makes `import pandas` raise ImportError.
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError) as raised:
        backend.read()
    message = str(raised.value)
    assert repr(backend.key) in message
    assert "pip install -e '.[pandas]'" in message


@pytest.mark.parametrize("storage_type", TABLE_TYPES)
def test_table_write_rejects_scalar(tmp_path: Path, storage_type: str) -> None:
    backend = single_table_backend(storage_type, tmp_path)
    with pytest.raises(TypeError, match=repr(backend.key)):
        backend.write(42)
    assert not backend.exists()


# csv


def test_csv_file_has_header_and_no_index(tmp_path: Path) -> None:
    backend = make_backend("csv", unique_key(), {}, tmp_path)
    backend.write(sample_frame())
    assert backend.path is not None
    assert backend.path.read_text().splitlines() == [
        "name,count",
        "a,1",
        "b,2",
        "c,3",
    ]


def test_csv_without_header(tmp_path: Path) -> None:
    backend = make_backend("csv", unique_key(), {"has_header": False}, tmp_path)
    backend.write(sample_frame())
    backend.append([["d", 4]])
    assert backend.path is not None
    assert backend.path.read_text().splitlines() == ["a,1", "b,2", "c,3", "d,4"]
    expected = pd.DataFrame({0: ["a", "b", "c", "d"], 1: [1, 2, 3, 4]})
    pd.testing.assert_frame_equal(backend.read(), expected)


def test_csv_without_header_exposed_class(tmp_path: Path) -> None:
    properties = {"has_header": False, "exposed_type": Row}
    backend = make_backend("csv", unique_key(), properties, tmp_path)
    backend.write([Row("a", 1)])
    assert backend.read() == [Row("a", 1)]


def test_csv_without_header_wrong_width(tmp_path: Path) -> None:
    backend = make_backend("csv", "headerless", {"has_header": False}, tmp_path)
    backend.write(sample_frame())
    with pytest.raises(ValueError, match="'headerless'.*3 columns.*has 2"):
        backend.append([["d", 4, "extra"]])


def test_csv_append_reorders_columns(tmp_path: Path) -> None:
    backend = make_backend("csv", unique_key(), {}, tmp_path)
    backend.write(sample_frame())
    backend.append(pd.DataFrame({"count": [4], "name": ["d"]}))
    assert backend.path is not None
    assert backend.path.read_text().splitlines()[-1] == "d,4"


def test_csv_append_keeps_existing_bytes(tmp_path: Path) -> None:
    backend = make_backend("csv", unique_key(), {}, tmp_path)
    assert backend.path is not None
    # Formatting that a parse and rewrite would change: padded floats, no final
    # newline.
    backend.path.write_text("name,count\nx,1.50")
    backend.append([{"name": "y", "count": 2.25}])
    assert backend.path.read_text() == "name,count\nx,1.50\ny,2.25\n"


def test_csv_append_compressed(tmp_path: Path) -> None:
    path = tmp_path / "table.csv.gz"
    backend = make_backend("csv", unique_key(), {"path": path}, tmp_path)
    backend.write(sample_frame())
    backend.append([{"name": "d", "count": 4}])
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    assert list(backend.read()["name"]) == ["a", "b", "c", "d"]


def test_csv_encoding(tmp_path: Path) -> None:
    backend = make_backend("csv", unique_key(), {"encoding": "utf-16"}, tmp_path)
    frame = pd.DataFrame({"city": ["Besançon", "Zürich"]})
    backend.write(frame)
    assert backend.path is not None
    assert backend.path.read_bytes()[:2] in (b"\xff\xfe", b"\xfe\xff")
    pd.testing.assert_frame_equal(backend.read(), frame)


def test_csv_invalid_has_header(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="'csv_node'.*has_header.*'yes'"):
        make_backend("csv", "csv_node", {"has_header": "yes"}, tmp_path)


# excel


def test_excel_without_sheet_name_reads_dict(tmp_path: Path) -> None:
    backend = make_backend("excel", unique_key(), {}, tmp_path)
    backend.write(sample_frame())
    sheets = backend.read()
    assert list(sheets) == ["Sheet1"]
    pd.testing.assert_frame_equal(sheets["Sheet1"], sample_frame())


def test_excel_dict_writes_sheets(tmp_path: Path) -> None:
    backend = make_backend("excel", unique_key(), {}, tmp_path)
    other = pd.DataFrame({"x": [1.5, 2.5]})
    backend.write({"first": sample_frame(), "second": other})
    sheets = backend.read()
    assert list(sheets) == ["first", "second"]
    pd.testing.assert_frame_equal(sheets["first"], sample_frame())
    pd.testing.assert_frame_equal(sheets["second"], other)


def test_excel_sheet_name_list(tmp_path: Path) -> None:
    path = tmp_path / "book.xlsx"
    writer = make_backend("excel", unique_key(), {"path": path}, tmp_path)
    writer.write(
        {
            "a": pd.DataFrame({"v": [1]}),
            "b": pd.DataFrame({"v": [2]}),
            "c": pd.DataFrame({"v": [3]}),
        }
    )
    properties = {"path": path, "sheet_name": ["c", "a"]}
    reader = make_backend("excel", unique_key(), properties, tmp_path)
    sheets = reader.read()
    assert sorted(sheets) == ["a", "c"]
    assert sheets["c"]["v"].tolist() == [3]


def test_excel_sheet_name_str_dict_is_table(tmp_path: Path) -> None:
    backend = make_backend("excel", unique_key(), {"sheet_name": "data"}, tmp_path)
    backend.write({"name": ["a", "b"], "count": [1, 2]})
    pd.testing.assert_frame_equal(
        backend.read(), pd.DataFrame({"name": ["a", "b"], "count": [1, 2]})
    )


def test_excel_append_keeps_other_sheets(tmp_path: Path) -> None:
    path = tmp_path / "book.xlsx"
    backend = make_backend("excel", unique_key(), {"path": path}, tmp_path)
    backend.write({"keep": pd.DataFrame({"v": [1]}), "grow": sample_frame()})

    backend.append({"grow": [{"name": "d", "count": 4}], "new": [{"w": 7}]})

    sheets = backend.read()
    assert list(sheets) == ["keep", "grow", "new"]
    assert sheets["keep"]["v"].tolist() == [1]
    assert sheets["grow"]["name"].tolist() == ["a", "b", "c", "d"]
    assert sheets["new"]["w"].tolist() == [7]


def test_excel_append_ambiguous_sheet(tmp_path: Path) -> None:
    backend = make_backend("excel", "workbook_node", {}, tmp_path)
    backend.write({"one": sample_frame(), "two": sample_frame()})
    with pytest.raises(ValueError, match="'workbook_node'.*dict of tables"):
        backend.append(sample_frame())


def test_excel_append_single_sheet_without_name(tmp_path: Path) -> None:
    backend = make_backend("excel", unique_key(), {}, tmp_path)
    backend.write({"only": sample_frame()})
    backend.append([{"name": "d", "count": 4}])
    assert backend.read()["only"]["name"].tolist() == ["a", "b", "c", "d"]


def test_excel_without_header(tmp_path: Path) -> None:
    properties = {"sheet_name": "data", "has_header": False}
    backend = make_backend("excel", unique_key(), properties, tmp_path)
    backend.write(sample_frame())
    backend.append([["d", 4]])
    expected = pd.DataFrame({0: ["a", "b", "c", "d"], 1: [1, 2, 3, 4]})
    pd.testing.assert_frame_equal(backend.read(), expected)


def test_excel_dict_exposed_numpy(tmp_path: Path) -> None:
    backend = make_backend("excel", unique_key(), {"exposed_type": "numpy"}, tmp_path)
    backend.write({"s": pd.DataFrame({"v": [1, 2]})})
    sheets = backend.read()
    np.testing.assert_array_equal(sheets["s"], np.array([[1], [2]]))


def test_excel_missing_sheet_is_unreadable(tmp_path: Path) -> None:
    backend = make_backend("excel", unique_key(), {"sheet_name": "absent"}, tmp_path)
    assert backend.path is not None
    make_backend("excel", unique_key(), {"path": backend.path}, tmp_path).write(
        {"present": sample_frame()}
    )
    with pytest.raises(UnreadableDataError, match="absent"):
        backend.read()


@pytest.mark.parametrize("bad_value", [3, {"a": 1}, ["a", 2]])
def test_excel_invalid_sheet_name(tmp_path: Path, bad_value: Any) -> None:
    with pytest.raises(ConfigurationError) as raised:
        make_backend("excel", "book_node", {"sheet_name": bad_value}, tmp_path)
    assert "'book_node'" in str(raised.value)
    assert repr(bad_value) in str(raised.value)


def test_excel_empty_dict_rejected(tmp_path: Path) -> None:
    backend = make_backend("excel", "book_node", {}, tmp_path)
    with pytest.raises(ValueError, match="'book_node'.*at least one sheet"):
        backend.write({})
    assert not backend.exists()


# parquet


def parquet_compression(path: Path) -> str:
    import pyarrow.parquet as pq

    metadata = pq.ParquetFile(path).metadata
    return str(metadata.row_group(0).column(0).compression)


def test_parquet_compression_property(tmp_path: Path) -> None:
    default = make_backend("parquet", unique_key(), {}, tmp_path)
    default.write(sample_frame())
    assert default.path is not None
    assert parquet_compression(default.path) == "SNAPPY"

    gzip = make_backend("parquet", unique_key(), {"compression": "gzip"}, tmp_path)
    gzip.write(sample_frame())
    assert gzip.path is not None
    assert parquet_compression(gzip.path) == "GZIP"


def test_parquet_write_kwargs_override(tmp_path: Path) -> None:
    properties = {"compression": "gzip", "write_kwargs": {"compression": "zstd"}}
    backend = make_backend("parquet", unique_key(), properties, tmp_path)
    backend.write(sample_frame())
    assert backend.path is not None
    assert parquet_compression(backend.path) == "ZSTD"


def test_parquet_read_kwargs(tmp_path: Path) -> None:
    properties = {"read_kwargs": {"columns": ["count"]}}
    backend = make_backend("parquet", unique_key(), properties, tmp_path)
    backend.write(sample_frame())
    pd.testing.assert_frame_equal(backend.read(), sample_frame()[["count"]])


def test_parquet_append_ignores_read_kwargs(tmp_path: Path) -> None:
    properties = {"read_kwargs": {"columns": ["count"]}}
    backend = make_backend("parquet", unique_key(), properties, tmp_path)
    backend.write(sample_frame())
    backend.append([{"name": "d", "count": 4}])
    full = make_backend("parquet", unique_key(), {"path": backend.path}, tmp_path)
    assert full.read()["name"].tolist() == ["a", "b", "c", "d"]


def test_parquet_keeps_custom_index(tmp_path: Path) -> None:
    backend = make_backend("parquet", unique_key(), {}, tmp_path)
    frame = sample_frame().set_index("name")
    backend.write(frame)
    backend.append(pd.DataFrame({"count": [4]}, index=pd.Index(["d"], name="name")))
    assert backend.read().index.tolist() == ["a", "b", "c", "d"]


def test_parquet_reads_folder(tmp_path: Path) -> None:
    folder = tmp_path / "dataset"
    folder.mkdir()
    sample_frame().iloc[:2].to_parquet(folder / "part-0.parquet", index=False)
    sample_frame().iloc[2:].to_parquet(folder / "part-1.parquet", index=False)
    backend = make_backend("parquet", unique_key(), {"path": folder}, tmp_path)
    assert sorted(backend.read()["name"]) == ["a", "b", "c"]
    backend.delete()
    assert not folder.exists()


@pytest.mark.parametrize(
    ("properties", "named"),
    [
        ({"engine": "polars"}, "'polars'"),
        ({"write_kwargs": {"partition_cols": ["name"]}}, "partition_cols"),
        ({"read_kwargs": ["columns"]}, "read_kwargs"),
    ],
)
def test_parquet_invalid_properties(
    tmp_path: Path, properties: dict[str, Any], named: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        make_backend("parquet", "parquet_node", properties, tmp_path)
    assert "'parquet_node'" in str(raised.value)
    assert named in str(raised.value)


# in_memory


def test_in_memory_round_trip() -> None:
    backend = make_backend("in_memory", unique_key(), {}, Path("unused"))
    assert not backend.exists()
    value = {"rows": [1, 2]}
    backend.write(value)
    assert backend.exists()
    assert backend.read() is value
    backend.delete()
    assert not backend.exists()


def test_in_memory_has_no_path() -> None:
    backend = make_backend("in_memory", unique_key(), {"path": "x.p"}, Path("unused"))
    assert backend.path is None
    assert not Path("x.p").exists()


def test_in_memory_not_reachable_from_workers() -> None:
    assert InMemoryBackend.reachable_from_workers is False
    for storage_type in STORAGE_TYPES:
        if storage_type != "in_memory":
            assert get_backend_class(storage_type).reachable_from_workers is True


def test_in_memory_shared_by_key() -> None:
    key = unique_key()
    make_backend("in_memory", key, {}, Path("unused")).write(5)
    assert make_backend("in_memory", key, {}, Path("unused")).read() == 5
    other = make_backend("in_memory", unique_key(), {}, Path("unused"))
    assert not other.exists()


def test_in_memory_missing_names_key() -> None:
    backend = make_backend("in_memory", "memory_node", {}, Path("unused"))
    with pytest.raises(NoData, match="'memory_node'"):
        backend.read()


def test_in_memory_append() -> None:
    backend = make_backend("in_memory", unique_key(), {}, Path("unused"))
    backend.append(1)
    first = backend.read()
    backend.append([2, 3])
    assert backend.read() == [1, 2, 3]
    # append() stores a new list, so a list read earlier does not change.
    assert first == [1]


def test_in_memory_concurrent_appends() -> None:
    backend = make_backend("in_memory", unique_key(), {}, Path("unused"))
    backend.write([])
    thread_count = 8
    appends_per_thread = 300
    start = threading.Barrier(thread_count)

    def append_items(thread_index: int) -> None:
        start.wait(timeout=30)
        for item in range(appends_per_thread):
            backend.append((thread_index, item))

    threads = [
        threading.Thread(target=append_items, args=(index,))
        for index in range(thread_count)
    ]
    # Switching threads often makes a lost update likely if append() is not atomic.
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        sys.setswitchinterval(switch_interval)
    assert not any(thread.is_alive() for thread in threads)
    stored = backend.read()
    assert len(stored) == thread_count * appends_per_thread
    assert len(set(stored)) == thread_count * appends_per_thread


# generic


class ListSink:
    """Functions of a generic data node that keep the data in a list."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.items: list[Any] = []

    def read(self, *args: Any) -> list[Any]:
        self.calls.append(("read", args))
        return list(self.items)

    def write(self, data: Any, *args: Any) -> None:
        self.calls.append(("write", (data, *args)))
        self.items = list(data)

    def append(self, data: Any, *args: Any) -> None:
        self.calls.append(("append", (data, *args)))
        self.items.append(data)


def test_generic_calls_functions_with_args(tmp_path: Path) -> None:
    sink = ListSink()
    properties = {
        "read_fct": sink.read,
        "read_fct_args": ["table", 1],
        "write_fct": sink.write,
        "write_fct_args": ("table",),
        "append_fct": sink.append,
    }
    backend = make_backend("generic", unique_key(), properties, tmp_path)

    backend.write([1, 2])
    backend.append(3)

    assert backend.read() == [1, 2, 3]
    assert sink.calls == [
        ("write", ([1, 2], "table")),
        ("append", (3, "table")),
        ("read", ("table", 1)),
    ]


def test_generic_append_fct_args(tmp_path: Path) -> None:
    sink = ListSink()
    properties = {
        "append_fct": sink.append,
        "write_fct_args": ["ignored"],
        "append_fct_args": ["log"],
    }
    backend = make_backend("generic", unique_key(), properties, tmp_path)
    backend.append(7)
    assert sink.calls == [("append", (7, "log"))]


def test_generic_without_args(tmp_path: Path) -> None:
    properties = {"read_fct": lambda: "value"}
    backend = make_backend("generic", unique_key(), properties, tmp_path)
    assert backend.read() == "value"


@pytest.mark.parametrize(
    ("operation", "missing"),
    [("read", "read_fct"), ("write", "write_fct")],
)
def test_generic_missing_function(tmp_path: Path, operation: str, missing: str) -> None:
    backend = make_backend("generic", "generic_node", {}, tmp_path)
    with pytest.raises(ConfigurationError) as raised:
        if operation == "read":
            backend.read()
        else:
            backend.write(1)
    message = str(raised.value)
    assert "'generic_node'" in message
    assert repr(missing) in message


def test_generic_missing_append_fct(tmp_path: Path) -> None:
    backend = make_backend("generic", "generic_node", {}, tmp_path)
    with pytest.raises(NotImplementedError, match="'generic_node'.*'append_fct'"):
        backend.append(1)


def test_generic_function_not_callable(tmp_path: Path) -> None:
    properties = {"read_fct": "module.read_table"}
    backend = make_backend("generic", "generic_node", properties, tmp_path)
    with pytest.raises(ConfigurationError, match="'generic_node'.*'read_fct'"):
        backend.read()


def test_generic_args_not_list(tmp_path: Path) -> None:
    properties = {"read_fct": print, "read_fct_args": "table"}
    backend = make_backend("generic", "generic_node", properties, tmp_path)
    with pytest.raises(ConfigurationError, match="'read_fct_args'.*'table'"):
        backend.read()


def test_generic_path_and_exists(tmp_path: Path) -> None:
    without = make_backend("generic", unique_key(), {}, tmp_path)
    assert without.path is None
    assert not without.exists()
    properties = {"read_fct": list, "path": "remote.db"}
    configured = make_backend("generic", unique_key(), properties, tmp_path)
    assert configured.path == Path("remote.db")
    assert configured.exists()
    assert isinstance(configured, GenericBackend)


# Atomic writes


def test_atomic_write_bytes_creates_folders(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "file.bin"
    atomic_write_bytes(target, b"content")
    assert target.read_bytes() == b"content"
    assert os.listdir(target.parent) == ["file.bin"]


def test_atomic_path_error_keeps_target(tmp_path: Path) -> None:
    target = tmp_path / "file.txt"
    target.write_text("old")

    with (
        pytest.raises(RuntimeError, match="writer failed"),
        atomic_path(target) as temp,
    ):
        temp.write_text("partial")
        raise RuntimeError("writer failed")

    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["file.txt"]


def test_atomic_path_temp_in_same_folder(tmp_path: Path) -> None:
    target = tmp_path / "table.csv.gz"
    with atomic_path(target) as temp:
        assert temp.parent == tmp_path
        assert temp.name.startswith(".table.csv.gz.")
        # The suffixes are kept so that pandas infers the same compression.
        assert temp.name.endswith(".tmp.csv.gz")
        assert temp.exists()
        assert not target.exists()
        temp.write_bytes(b"x")
    assert target.read_bytes() == b"x"


@pytest.mark.parametrize("storage_type", FILE_TYPES)
def test_unpublished_write_goes_to_target(tmp_path: Path, storage_type: str) -> None:
    # Staging files are written in place: no temporary file beside them.
    staged = tmp_path / f".rows.JOB_1.staging.{storage_type}"
    backend = make_backend(storage_type, unique_key(), {"path": str(staged)}, tmp_path)
    value = sample_frame() if storage_type in TABLE_TYPES else {"a": 1}

    with writing_unpublished_files():
        backend.write(value)

    assert os.listdir(tmp_path) == [staged.name]
    read = backend.read()
    if storage_type == "excel":
        (read,) = read.values()  # one frame per sheet
    if storage_type in TABLE_TYPES:
        assert read.equals(value)
    else:
        assert read == value


def test_unpublished_write_error_removes_target(tmp_path: Path) -> None:
    staged = tmp_path / ".value.JOB_1.staging.p"

    with (
        pytest.raises(RuntimeError, match="writer failed"),
        writing_unpublished_files(),
        atomic_path(staged) as temp,
    ):
        assert temp == staged
        temp.write_bytes(b"partial")
        raise RuntimeError("writer failed")

    assert os.listdir(tmp_path) == []


def current_umask() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


@pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")
def test_atomic_path_new_file_mode(tmp_path: Path) -> None:
    target = tmp_path / "new.bin"
    atomic_write_bytes(target, b"x")
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~current_umask()


@pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")
@pytest.mark.parametrize("mode", [0o640, 0o444])
def test_atomic_path_keeps_existing_mode(tmp_path: Path, mode: int) -> None:
    target = tmp_path / "existing.bin"
    target.write_bytes(b"old")
    target.chmod(mode)
    atomic_write_bytes(target, b"new")
    assert stat.S_IMODE(target.stat().st_mode) == mode
    assert target.read_bytes() == b"new"


# Size of the files that the atomicity tests replace: large enough that writing one
# takes many system calls, so that a non-atomic writer is caught mid-write.
LARGE_ROW_COUNT = 200_000
MAX_WRITES = 40
MAX_READS = 5_000
# Upper bound on each loop, so that a hang fails the test instead of blocking it.
LOOP_DEADLINE_SECONDS = 60.0


def two_large_values(storage_type: str) -> list[Any]:
    if storage_type == "pickle":
        return [b"a" * 8 * LARGE_ROW_COUNT, b"b" * 8 * LARGE_ROW_COUNT]
    if storage_type == "json":
        return [list(range(LARGE_ROW_COUNT)), list(range(1, LARGE_ROW_COUNT + 1))]
    numbers = np.arange(LARGE_ROW_COUNT)
    return [
        pd.DataFrame({"x": numbers, "y": numbers * 2}),
        pd.DataFrame({"x": numbers + 1, "y": numbers * 3}),
    ]


@pytest.mark.parametrize("storage_type", ["pickle", "json", "csv"])
def test_reader_thread_sees_whole_files(tmp_path: Path, storage_type: str) -> None:
    backend = make_backend(storage_type, unique_key(), {}, tmp_path)
    assert backend.path is not None
    path = backend.path
    values = two_large_values(storage_type)
    whole_files = []
    for value in values:
        backend.write(value)
        whole_files.append(path.read_bytes())
    assert whole_files[0] != whole_files[1]

    writer_done = threading.Event()
    partial_sizes: list[int] = []
    read_count = 0

    def read_repeatedly() -> None:
        nonlocal read_count
        deadline = time.monotonic() + LOOP_DEADLINE_SECONDS
        while (
            not writer_done.is_set()
            and read_count < MAX_READS
            and time.monotonic() < deadline
        ):
            content = path.read_bytes()
            if content not in whole_files:
                partial_sizes.append(len(content))
            read_count += 1

    reader = threading.Thread(target=read_repeatedly)
    reader.start()
    deadline = time.monotonic() + LOOP_DEADLINE_SECONDS
    try:
        for index in range(MAX_WRITES):
            backend.write(values[index % 2])
            if time.monotonic() > deadline:
                break
    finally:
        writer_done.set()
        reader.join(timeout=LOOP_DEADLINE_SECONDS)

    assert not reader.is_alive()
    assert read_count > 0
    assert partial_sizes == []


READER_SCRIPT = """
import sys, time
from pathlib import Path
from jupyter_scenarios.storage import make_backend

folder, key, stop_file, max_reads, max_seconds, size = sys.argv[1:]
backend = make_backend("pickle", key, {}, Path(folder))
expected = {b"a" * int(size), b"b" * int(size)}
reads = bad = 0
deadline = time.monotonic() + float(max_seconds)
print("ready", flush=True)
while reads < int(max_reads) and time.monotonic() < deadline:
    if Path(stop_file).exists():
        break
    try:
        value = backend.read()
    except Exception as error:
        print(f"error {type(error).__name__}: {error}", flush=True)
        bad += 1
    else:
        if value not in expected:
            bad += 1
    reads += 1
print(f"reads={reads} bad={bad}", flush=True)
"""


def test_reader_process_sees_whole_files(tmp_path: Path) -> None:
    key = unique_key()
    backend = make_backend("pickle", key, {}, tmp_path)
    size = 8 * LARGE_ROW_COUNT
    values = [b"a" * size, b"b" * size]
    backend.write(values[0])
    stop_file = tmp_path / "stop"
    script = tmp_path / "reader.py"
    script.write_text(textwrap.dedent(READER_SCRIPT))
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY_ROOT)}
    command = [
        sys.executable,
        str(script),
        str(tmp_path),
        key,
        str(stop_file),
        str(MAX_READS),
        str(LOOP_DEADLINE_SECONDS),
        str(size),
    ]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, text=True, env=environment
    ) as reader:
        assert reader.stdout is not None
        assert reader.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + LOOP_DEADLINE_SECONDS
        try:
            for index in range(MAX_WRITES):
                backend.write(values[index % 2])
                if time.monotonic() > deadline:
                    break
        finally:
            stop_file.touch()
        output, _ = reader.communicate(timeout=LOOP_DEADLINE_SECONDS)

    assert reader.returncode == 0
    summary = output.strip().splitlines()[-1]
    reads = int(summary.split()[0].removeprefix("reads="))
    assert reads > 0
    assert summary.endswith("bad=0"), output


# Imports


def imported_modules(source: Path) -> set[str]:
    tree = ast.parse(source.read_text(), filename=str(source))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_storage_modules_avoid_kernel_imports() -> None:
    sources = sorted(STORAGE_FOLDER.glob("*.py"))
    assert len(sources) >= 8
    for source in sources:
        imported = imported_modules(source)
        assert "IPython" not in imported, source.name
        assert "ipywidgets" not in imported, source.name


def test_storage_import_skips_pandas() -> None:
    code = (
        "import sys\n"
        "import jupyter_scenarios.storage as storage\n"
        "for name in storage.STORAGE_TYPES:\n"
        "    storage.make_backend(name, 'k', {}, '.')\n"
        "print(sorted(m for m in ('pandas', 'pyarrow', 'openpyxl') if m in sys.modules))\n"
    )
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY_ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("final", "expected"),
    [
        ("/d/value.p", "/d/.value.p.J.staging.p"),
        # The last two suffixes, so that pandas infers the compression.
        ("/d/table.x.csv.gz", "/d/.table.x.csv.gz.J.staging.csv.gz"),
        ("rel/data.json", "rel/.data.json.J.staging.json"),
        # Leading dots belong to the name, and a trailing dot means no suffix.
        ("/d/.hidden", "/d/..hidden.J.staging"),
        ("/d/..rows.csv", "/d/...rows.csv.J.staging.csv"),
        ("/d/odd.", "/d/.odd..J.staging"),
        ("/d.v2/plain", "/d.v2/.plain.J.staging"),
    ],
)
def test_staging_path_keeps_the_suffixes(final: str, expected: str) -> None:
    from jupyter_scenarios.worker import staging_path

    assert staging_path(final, "J") == expected
    assert staging_path(Path(final), "J") == expected


def test_abandoned_temp_files_removed_live_kept(tmp_path: Path) -> None:
    # A killed writer leaves its temporary file unlocked; a running writer holds a
    # lock on its own until it renames it.
    from jupyter_scenarios.storage.atomic import remove_abandoned_temp_files

    abandoned = tmp_path / ".DATANODE_a_1.csv.0123456789abcdef.tmp.csv"
    abandoned.write_text("half")
    other = tmp_path / ".notes.tmp"
    other.write_text("not ours")
    target = tmp_path / "DATANODE_b_2.p"

    with atomic_path(target) as live:
        live.write_bytes(b"new")
        removed = remove_abandoned_temp_files(tmp_path)
        live_exists = live.exists()

    assert removed == 1
    assert not abandoned.exists()
    assert live_exists, "the running writer's temporary file was removed"
    assert target.read_bytes() == b"new"
    assert other.read_text() == "not ours"
