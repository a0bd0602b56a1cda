"""Filtering of the data read from a data node, for ``DataNode.filter``.

A condition is a 3-tuple ``(key, value, Operator)``: the rows whose ``key`` compares
to ``value`` by the operator match it. ``key`` is a column name for a DataFrame, a
column number for a 2-D numpy array, and a dict key or an attribute name for the items
of a list. A list of plain lists or tuples raises TypeError, because its rows have
neither keys nor named fields. Several conditions are joined with ``JoinOperator.AND``
(a row must match all of them) or ``JoinOperator.OR`` (any of them). The rows keep
their stored order and, in a DataFrame, their index.

pandas and numpy are imported only when the data is of their types.
"""

from __future__ import annotations

import functools
import numbers
import operator
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from jupyter_scenarios.enums import JoinOperator, Operator

Condition = tuple[Any, Any, Operator]

_COMPARISONS: dict[Operator, Callable[[Any, Any], Any]] = {
    Operator.EQUAL: operator.eq,
    Operator.NOT_EQUAL: operator.ne,
    Operator.LESS_THAN: operator.lt,
    Operator.LESS_OR_EQUAL: operator.le,
    Operator.GREATER_THAN: operator.gt,
    Operator.GREATER_OR_EQUAL: operator.ge,
}


def filter_data(
    data: Any, operators: Sequence[Any], join_operator: JoinOperator, key: str
) -> Any:
    """Return the rows of ``data`` that match the conditions ``operators``.

    Parameters
    ----------
    data
        A DataFrame, a 2-D numpy array, a list of dicts or objects, or a dict of
        those (such as the sheets of an Excel data node), filtered one by one.
    operators
        One condition ``(key, value, Operator)``, or a list of them. An empty list
        returns ``data`` unchanged.
    join_operator
        ``JoinOperator.AND`` or ``JoinOperator.OR``.
    key
        Id of the data node, for the error messages.

    Raises
    ------
    TypeError
        If a condition is not a ``(key, value, Operator)`` tuple, if
        ``join_operator`` is not a JoinOperator, or if a stored value cannot be
        compared with the condition's value. Also if the rows of a list are plain
        lists or tuples, or objects filtered by a key that is not a string.
    KeyError
        If a DataFrame has no column named by a condition.
    NotImplementedError
        If ``data`` is of a type that cannot be filtered.
    """
    conditions = _conditions(operators, key)
    if not isinstance(join_operator, JoinOperator):
        raise TypeError(
            f"Data node {key!r} received the join operator {join_operator!r}. Pass "
            "JoinOperator.AND or JoinOperator.OR."
        )
    if not conditions:
        return data
    if isinstance(data, Mapping):
        return {
            name: filter_data(table, conditions, join_operator, key)
            for name, table in data.items()
        }
    pandas = sys.modules.get("pandas")
    if pandas is not None and isinstance(data, pandas.DataFrame):
        return _filter_frame(data, conditions, join_operator, key)
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(data, numpy.ndarray) and data.ndim == 2:
        return _filter_array(data, conditions, join_operator, key)
    if isinstance(data, list):
        return _filter_list(data, conditions, join_operator, key)
    raise NotImplementedError(
        f"Data node {key!r} contains a {type(data).__name__}, which filter() cannot "
        "filter. filter() takes a DataFrame, a 2-D numpy array, a list of dicts or "
        "objects, or a dict of those. Read the data with read() and filter it "
        "yourself."
    )


def _conditions(operators: Sequence[Any], key: str) -> list[Condition]:
    """Return ``operators`` as a list of checked conditions."""
    if not isinstance(operators, (list, tuple)):
        raise TypeError(
            f"Data node {key!r} received the filter {operators!r}. Pass a tuple "
            "(key, value, Operator) or a list of such tuples."
        )
    if operators and not isinstance(operators[0], (list, tuple)):
        # One condition, as in filter(("year", 2024, Operator.EQUAL)).
        operators = [operators]
    conditions = []
    for condition in operators:
        if (
            not isinstance(condition, (list, tuple))
            or len(condition) != 3
            or not isinstance(condition[2], Operator)
        ):
            raise TypeError(
                f"Data node {key!r} received the filter condition {condition!r}. "
                "Write each condition as a tuple (key, value, Operator), such as "
                "('year', 2024, Operator.EQUAL)."
            )
        conditions.append((condition[0], condition[1], condition[2]))
    return conditions


def _compare(stored: Any, condition: Condition, key: str, subject: str) -> Any:
    column, value, comparison = condition
    try:
        return _COMPARISONS[comparison](stored, value)
    except TypeError as error:
        raise TypeError(
            f"Data node {key!r} failed to filter {subject} {column!r} with "
            f"{comparison!r} {value!r}: {error}. Compare with a value of the stored "
            "type."
        ) from error


def _join(masks: list[Any], join_operator: JoinOperator) -> Any:
    combine = operator.and_ if join_operator is JoinOperator.AND else operator.or_
    return functools.reduce(combine, masks)


def _filter_frame(
    frame: Any, conditions: list[Condition], join_operator: JoinOperator, key: str
) -> Any:
    masks = []
    for condition in conditions:
        column = condition[0]
        if column not in frame.columns:
            raise KeyError(
                f"Data node {key!r} has no column {column!r} to filter on. Its "
                f"columns are {list(frame.columns)!r}."
            )
        masks.append(_compare(frame[column], condition, key, "the column"))
    return frame[_join(masks, join_operator)]


def _filter_array(
    array: Any, conditions: list[Condition], join_operator: JoinOperator, key: str
) -> Any:
    masks = []
    for condition in conditions:
        column = condition[0]
        width = array.shape[1]
        if not isinstance(column, numbers.Integral) or not -width <= column < width:
            raise TypeError(
                f"Data node {key!r} contains a numpy array with {width} columns, so "
                f"the filter key {column!r} must be a column number from 0 to "
                f"{width - 1}."
            )
        masks.append(_compare(array[:, column], condition, key, "the column"))
    return array[_join(masks, join_operator)]


def _filter_list(
    rows: list[Any], conditions: list[Condition], join_operator: JoinOperator, key: str
) -> list[Any]:
    matches = all if join_operator is JoinOperator.AND else any
    matching_rows = []
    for row in rows:
        results = []
        for condition in conditions:
            stored = _row_field(row, condition[0], key)
            results.append(bool(_compare(stored, condition, key, "the field")))
        if matches(results):
            matching_rows.append(row)
    return matching_rows


def _row_field(row: Any, name: Any, key: str) -> Any:
    """Return the field ``name`` of a row of a list: a dict key or an attribute."""
    if isinstance(row, Mapping):
        return row.get(name)
    # A namedtuple has attributes, but a plain list or tuple has none to filter on.
    if isinstance(row, (list, tuple)) and not hasattr(row, "_fields"):
        raise TypeError(
            f"Data node {key!r} contains a list whose rows are "
            f"{type(row).__name__}s, such as {row!r}, so filter() cannot find the "
            f"field {name!r} in them. filter() reads a list of dicts by key and a list "
            "of objects by attribute name. Write the rows as a DataFrame or a 2-D "
            "numpy array to filter by column number, or as dicts."
        )
    if not isinstance(name, str):
        raise TypeError(
            f"Data node {key!r} contains a list of {type(row).__name__} objects, "
            f"whose fields filter() reads by attribute name, so the filter key "
            f"{name!r} must be a string."
        )
    # A missing attribute compares as None, as in Taipy.
    return getattr(row, name, None)
