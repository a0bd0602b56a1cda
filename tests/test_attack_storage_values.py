"""Attacks on the values that data nodes store: empty tables, column names, values
that a format cannot hold, and filtering a stored table.

Each test checks a promise: behaviour that Taipy's source and documentation describe,
or the rule that a bad input gets an error naming the data node and the fix. After such
an error, the stored data and the edit history are as they were.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from engine_fixtures import engine as engine_fixture  # noqa: F401 - fixture

import jupyter_scenarios as tp
from jupyter_scenarios import Config, JoinOperator, Operator, Scope
from jupyter_scenarios.exceptions import NoData
from jupyter_scenarios.storage import UnreadableDataError

pytestmark = pytest.mark.timeout(300)


class Color(enum.Enum):
    RED = 1
    BLUE = 2


@dataclasses.dataclass
class Point:
    x: int
    y: int


@dataclasses.dataclass(frozen=True)
class Sale:
    city: str
    amount: int


SALES = pd.DataFrame(
    {"city": ["Paris", "Lyon", "Paris", "Nice"], "amount": [10, 20, 30, 40]}
)


def test_csv_empty_frame_reads_back(engine: Path) -> None:
    # A task whose result is an empty table is ordinary (a filter with no match).
    # Taipy's CSV data node reads such a file as an empty DataFrame.
    config = Config.configure_csv_data_node("empty_table", scope=Scope.GLOBAL)
    node = tp.create_global_data_node(config)

    node.write(pd.DataFrame())

    assert node.read().empty


@pytest.mark.parametrize("has_header", [True, False])
def test_csv_empty_frame_exposed_types(engine: Path, has_header: bool) -> None:
    numpy_config = Config.configure_csv_data_node(
        "empty_numpy", scope=Scope.GLOBAL, exposed_type="numpy", has_header=has_header
    )
    class_config = Config.configure_csv_data_node(
        "empty_rows", scope=Scope.GLOBAL, exposed_type=Sale, has_header=has_header
    )
    numpy_node = tp.create_global_data_node(numpy_config)
    class_node = tp.create_global_data_node(class_config)

    numpy_node.write(pd.DataFrame())
    class_node.write(pd.DataFrame())

    assert numpy_node.read().size == 0
    assert class_node.read() == []


def test_csv_append_to_empty_frame(engine: Path) -> None:
    config = Config.configure_csv_data_node("grown", scope=Scope.GLOBAL)
    node = tp.create_global_data_node(config)
    node.write(pd.DataFrame())

    node.append(SALES)

    pd.testing.assert_frame_equal(node.read(), SALES)


def test_json_set_error_names_node(engine: Path) -> None:
    # Taipy's default JSON encoder stores dates (test_json_date_round_trips), so this
    # test writes a set, which no JSON data node stores without an encoder.
    config = Config.configure_json_data_node("tagged", scope=Scope.GLOBAL)
    node = tp.create_global_data_node(config)
    node.write({"count": 1})

    with pytest.raises(TypeError) as raised:
        node.write({"tags": {"a", "b"}})

    message = str(raised.value)
    assert node.read() == {"count": 1}
    assert len(node.edits) == 1
    assert node.id in message, f"error does not name the data node: {message}"
    assert "encoder" in message, f"error does not name the fix: {message}"


def return_set(value: int) -> dict[str, set[int]]:
    return {"tags": {value, value + 1}}


def test_task_output_error_reads_as_sentences(engine: Path) -> None:
    # The job's error quotes the JSON error, which ends with a full stop, and goes
    # on with its own advice.
    source = Config.configure_data_node("seed", default_data=1)
    target = Config.configure_json_data_node("tags_out")
    task = Config.configure_task("tagging", return_set, source, target)
    scenario = tp.create_scenario(Config.configure_scenario("tags", [task]))

    job = scenario.submit(wait=True).jobs[0]

    assert job.is_failed()
    text = "".join(job.stacktrace)
    assert "converts it. No output of the job changed. Return a value" in text, text
    assert ".." not in text.replace("...", ""), text


def test_json_date_round_trips(engine: Path) -> None:
    config = Config.configure_json_data_node("dated", scope=Scope.GLOBAL)
    node = tp.create_global_data_node(config)
    value = {
        "when": datetime.datetime(2024, 1, 1, 12, 30),
        "day": datetime.date(2024, 3, 1),
        "color": Color.RED,
        "point": Point(1, 2),
    }

    node.write(value)

    assert node.read() == value
    assert len(node.edits) == 1


def test_json_reads_taipy_tagged_file(engine: Path) -> None:
    # The objects that Taipy's default JSON encoder writes for these types.
    config = Config.configure_json_data_node("from_taipy", scope=Scope.GLOBAL)
    node = tp.create_global_data_node(config)
    module = Color.__module__
    stored = {
        "when": {"__type__": "Datetime", "__value__": "2024-01-01T12:30:00"},
        "color": {"__type__": f"Enum-{module}-Color-RED", "__value__": 1},
        "point": {
            "__type__": f"dataclass-{module}-Point",
            "__value__": {"x": 1, "y": 2},
        },
    }
    node.path.write_text(json.dumps(stored), encoding="utf-8")

    assert node.read() == {
        "when": datetime.datetime(2024, 1, 1, 12, 30),
        "color": Color.RED,
        "point": Point(1, 2),
    }


def test_json_unknown_class_names_node(engine: Path) -> None:
    config = Config.configure_json_data_node("lost_class", scope=Scope.GLOBAL)
    node = tp.create_global_data_node(config)
    stored = {"__type__": "dataclass-no_such_module-Gone", "__value__": {}}
    node.path.write_text(json.dumps(stored), encoding="utf-8")

    with pytest.raises(UnreadableDataError) as raised:
        node.read()

    message = str(raised.value)
    assert node.id in message
    assert "no_such_module.Gone" in message


def test_json_custom_encoder_error_names_it(engine: Path) -> None:
    config = Config.configure_json_data_node(
        "strict", scope=Scope.GLOBAL, encoder=json.JSONEncoder
    )
    node = tp.create_global_data_node(config)

    with pytest.raises(TypeError) as raised:
        node.write({"day": datetime.date(2024, 3, 1)})

    message = str(raised.value)
    assert node.id in message
    assert "JSONEncoder" in message
    assert not node.path.exists()
    assert node.edits == []


def test_parquet_big_int_error_names_node(engine: Path) -> None:
    config = Config.configure_parquet_data_node("huge", scope=Scope.GLOBAL)
    node = tp.create_global_data_node(config)
    node.write(pd.DataFrame({"n": [1]}))

    # Any exception type will do, because the defect is in the message.
    with pytest.raises(Exception) as raised:
        node.write(pd.DataFrame({"n": [2**70]}))

    message = str(raised.value)
    assert node.read()["n"].tolist() == [1]
    assert node.id in message, f"error does not name the data node: {message}"


def test_write_columns_names_table(engine: Path) -> None:
    # Taipy documents write_with_column_names() for its csv and excel data nodes.
    # Its write(data, job_id=None, **kwargs) records extra keyword arguments such as
    # columns=[...] in the edit, so the columns go through write_with_column_names.
    config = Config.configure_csv_data_node("sales", scope=Scope.GLOBAL)
    node = tp.create_global_data_node(config)

    node.write_with_column_names(
        [["12/24/2018", 1550], ["12/25/2018", 2315]], columns=["date", "nb"]
    )

    assert list(node.read().columns) == ["date", "nb"]
    assert len(node.edits) == 1


@pytest.mark.parametrize("name", ["filter", "write_with_column_names"])
def test_data_node_taipy_method_exists(name: str) -> None:
    assert hasattr(tp.DataNode, name), f"DataNode has no {name}"


@pytest.mark.parametrize("storage_type", ["excel", "parquet"])
def test_write_columns_other_tables(engine: Path, storage_type: str) -> None:
    config = Config.configure_data_node(
        f"sales_{storage_type}", storage_type=storage_type, scope=Scope.GLOBAL
    )
    node = tp.create_global_data_node(config)

    node.write_with_column_names(np.array([[1, 2], [3, 4]]), columns=["a", "b"])

    frame = node.read()
    if storage_type == "excel":
        # Without a sheet_name property, an excel data node reads every sheet.
        frame = frame["Sheet1"]
    assert list(frame.columns) == ["a", "b"]
    assert frame["b"].tolist() == [2, 4]


def test_write_columns_records_job_id(engine: Path) -> None:
    config = Config.configure_csv_data_node("by_job", scope=Scope.GLOBAL)
    node = tp.create_global_data_node(config)

    node.write_with_column_names([[1]], columns=["a"], job_id="JOB_one")

    assert node.job_ids == ["JOB_one"]


def test_write_columns_count_mismatch(engine: Path) -> None:
    config = Config.configure_csv_data_node("narrow", scope=Scope.GLOBAL)
    node = tp.create_global_data_node(config)
    node.write(SALES)

    with pytest.raises(ValueError) as raised:
        node.write_with_column_names([[1, 2, 3]], columns=["a", "b"])

    message = str(raised.value)
    assert node.id in message
    assert "['a', 'b']" in message
    pd.testing.assert_frame_equal(node.read(), SALES)
    assert len(node.edits) == 1


def test_write_columns_pickle_names_node(engine: Path) -> None:
    config = Config.configure_pickle_data_node("values", scope=Scope.GLOBAL)
    node = tp.create_global_data_node(config)

    with pytest.raises(NotImplementedError) as raised:
        node.write_with_column_names([[1]], columns=["a"])

    message = str(raised.value)
    assert node.id in message
    assert "'pickle'" in message
    assert "write()" in message
    assert node.edits == []


def test_parquet_mixed_column_names_column(engine: Path) -> None:
    config = Config.configure_parquet_data_node("mixed", scope=Scope.GLOBAL)
    node = tp.create_global_data_node(config)
    node.write(SALES)

    with pytest.raises(ValueError) as raised:
        node.write(pd.DataFrame({"fine": [1, 2], "mixed": [1, "a"]}))

    message = str(raised.value)
    assert node.id in message
    assert "'mixed'" in message
    pd.testing.assert_frame_equal(node.read(), SALES)
    assert len(node.edits) == 1


def test_taipy_filter_names_exported() -> None:
    assert tp.Operator is Operator
    assert tp.JoinOperator is JoinOperator
    assert "Operator" in tp.__all__
    assert "JoinOperator" in tp.__all__


def test_filter_frame_one_condition(engine: Path) -> None:
    config = Config.configure_data_node("sales_table", scope=Scope.GLOBAL)
    node = tp.create_global_data_node(config)
    node.write(SALES)

    paris = node.filter(("city", "Paris", Operator.EQUAL))

    assert paris["amount"].tolist() == [10, 30]
    assert paris.index.tolist() == [0, 2]


@pytest.mark.parametrize(
    ("join_operator", "conditions", "amounts"),
    [
        (
            JoinOperator.AND,
            [("city", "Paris", Operator.EQUAL), ("amount", 25, Operator.GREATER_THAN)],
            [30],
        ),
        (
            JoinOperator.OR,
            [
                ("city", "Paris", Operator.EQUAL),
                ("amount", 40, Operator.GREATER_OR_EQUAL),
            ],
            [10, 30, 40],
        ),
    ],
)
def test_filter_frame_joins_conditions(
    engine: Path,
    join_operator: JoinOperator,
    conditions: list[tuple[str, object, Operator]],
    amounts: list[int],
) -> None:
    config = Config.configure_csv_data_node("sales_csv", scope=Scope.GLOBAL)
    node = tp.create_global_data_node(config)
    node.write(SALES)

    filtered = node.filter(conditions, join_operator)

    assert filtered["amount"].tolist() == amounts


@pytest.mark.parametrize(
    ("condition", "amounts"),
    [
        (("amount", 20, Operator.NOT_EQUAL), [10, 30, 40]),
        (("amount", 20, Operator.LESS_THAN), [10]),
        (("amount", 20, Operator.LESS_OR_EQUAL), [10, 20]),
        (("amount", 30, Operator.GREATER_THAN), [40]),
    ],
)
def test_filter_list_of_objects(
    engine: Path, condition: tuple[str, int, Operator], amounts: list[int]
) -> None:
    config = Config.configure_data_node("sale_list", scope=Scope.GLOBAL)
    node = tp.create_global_data_node(config)
    node.write([Sale(city, amount) for city, amount in SALES.itertuples(index=False)])

    filtered = node.filter(condition)

    assert [sale.amount for sale in filtered] == amounts


def test_filter_list_of_dicts_or(engine: Path) -> None:
    config = Config.configure_json_data_node("sale_dicts", scope=Scope.GLOBAL)
    node = tp.create_global_data_node(config)
    node.write(SALES.to_dict(orient="records"))

    filtered = node.filter(
        [("city", "Nice", Operator.EQUAL), ("amount", 10, Operator.EQUAL)],
        JoinOperator.OR,
    )

    assert filtered == [{"city": "Paris", "amount": 10}, {"city": "Nice", "amount": 40}]


def test_filter_numpy_by_column_number(engine: Path) -> None:
    config = Config.configure_csv_data_node(
        "sales_numpy", scope=Scope.GLOBAL, exposed_type="numpy"
    )
    node = tp.create_global_data_node(config)
    node.write(pd.DataFrame({"a": [1, 2, 3], "b": [4, 5, 6]}))

    filtered = node.filter((1, 5, Operator.GREATER_OR_EQUAL))

    assert filtered.tolist() == [[2, 5], [3, 6]]


def test_filter_excel_sheets_one_by_one(engine: Path) -> None:
    config = Config.configure_excel_data_node("sheets", scope=Scope.GLOBAL)
    node = tp.create_global_data_node(config)
    node.write({"first": SALES, "second": SALES.iloc[2:]})

    filtered = node.filter(("city", "Paris", Operator.EQUAL))

    assert filtered["first"]["amount"].tolist() == [10, 30]
    assert filtered["second"]["amount"].tolist() == [30]


def test_filter_empty_conditions_returns_all(engine: Path) -> None:
    config = Config.configure_data_node("all_sales", scope=Scope.GLOBAL)
    node = tp.create_global_data_node(config)
    node.write(SALES)

    pd.testing.assert_frame_equal(node.filter([]), SALES)


def test_filter_missing_column_names_node(engine: Path) -> None:
    config = Config.configure_data_node("no_year", scope=Scope.GLOBAL)
    node = tp.create_global_data_node(config)
    node.write(SALES)

    with pytest.raises(KeyError) as raised:
        node.filter(("year", 2024, Operator.EQUAL))

    message = str(raised.value)
    assert node.id in message
    assert "'year'" in message
    assert "'city'" in message


def test_filter_bad_condition_names_it(engine: Path) -> None:
    config = Config.configure_data_node("bad_filter", scope=Scope.GLOBAL)
    node = tp.create_global_data_node(config)
    node.write(SALES)

    with pytest.raises(TypeError) as raised:
        node.filter(("city", "Paris", "=="))

    message = str(raised.value)
    assert node.id in message
    assert "('city', 'Paris', '==')" in message
    assert "Operator.EQUAL" in message


def test_filter_scalar_not_implemented(engine: Path) -> None:
    config = Config.configure_data_node("number", scope=Scope.GLOBAL)
    node = tp.create_global_data_node(config)
    node.write(42)

    with pytest.raises(NotImplementedError) as raised:
        node.filter(("value", 1, Operator.EQUAL))

    message = str(raised.value)
    assert node.id in message
    assert "int" in message


def test_filter_unwritten_node_raises(engine: Path) -> None:
    config = Config.configure_data_node("never", scope=Scope.GLOBAL)
    node = tp.create_global_data_node(config)

    with pytest.raises(NoData):
        node.filter(("value", 1, Operator.EQUAL))
