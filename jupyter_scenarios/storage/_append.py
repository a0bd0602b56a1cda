"""Append rule shared by the json and in_memory backends."""

from __future__ import annotations

from typing import Any


def merge_appended(key: str, storage_type: str, stored: Any, data: Any) -> Any:
    """Return a new value with ``data`` appended to ``stored``, leaving both unchanged.

    Parameters
    ----------
    key
        Id of the data node, for the error message.
    storage_type
        Storage type of the data node, for the error message.
    stored
        The value stored now: a list, or a dict when ``data`` is a dict.
    data
        A list of items to add, a dict to merge into a stored dict, or one item.

    Raises
    ------
    TypeError
        If ``stored`` is neither a list nor, for dict ``data``, a dict.
    """
    if isinstance(stored, list):
        if isinstance(data, list):
            return [*stored, *data]
        return [*stored, data]
    if isinstance(stored, dict) and isinstance(data, dict):
        return {**stored, **data}
    raise TypeError(
        f"Cannot append to data node {key!r} (storage type {storage_type!r}) because "
        f"it stores a {type(stored).__name__}, not a list. Append to a list, append "
        "a dict to a dict, or use write() to replace the value."
    )
