"""Encoding of arbitrary property values inside JSON entity documents.

JSON values are stored as they are. Anything else (a class given as ``exposed_type``, a
``read_fct`` function, a set) is stored by cloudpickle, base64-encoded, under a
``__pickle__`` key, so that properties survive a restart whatever their type.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import cloudpickle

_PICKLE_KEY = "__pickle__"


def _is_plain_json(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, list):
        return all(_is_plain_json(item) for item in value)
    if isinstance(value, dict):
        return all(
            isinstance(key, str) and key != _PICKLE_KEY and _is_plain_json(item)
            for key, item in value.items()
        )
    return False


def encode_value(value: Any) -> Any:
    """Return a JSON-compatible form of ``value``."""
    if _is_plain_json(value):
        return value
    return {_PICKLE_KEY: base64.b64encode(cloudpickle.dumps(value)).decode("ascii")}


def decode_value(value: Any) -> Any:
    """Invert ``encode_value``."""
    if isinstance(value, dict) and set(value) == {_PICKLE_KEY}:
        return cloudpickle.loads(base64.b64decode(value[_PICKLE_KEY]))
    return value


def encode_mapping(values: dict[str, Any]) -> dict[str, Any]:
    return {key: encode_value(value) for key, value in values.items()}


def decode_mapping(values: dict[str, Any]) -> dict[str, Any]:
    return {key: decode_value(value) for key, value in values.items()}


def is_json_serializable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True
