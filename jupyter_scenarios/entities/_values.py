"""Encoding of arbitrary property values inside JSON entity documents.

JSON values are stored as they are. Anything else (a class given as ``exposed_type``, a
``read_fct`` function, a set) is stored by cloudpickle, base64-encoded, under a
``__pickle__`` key, so that properties survive a restart whatever their type.
``PersistedProperties`` saves its entity when a user changes ``entity.properties``.
"""

from __future__ import annotations

import base64
import json
import reprlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import cloudpickle

if TYPE_CHECKING:
    from typing_extensions import Self

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


_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = 80


def check_storable(key: str, value: Any, where: str) -> None:
    """Raise TypeError, naming ``key`` and ``where``, if ``value`` cannot be stored."""
    try:
        json.dumps(encode_value(value))
    except Exception as error:
        try:
            value_text = _SHORT_REPR.repr(value)
        except Exception:  # noqa: BLE001 - a broken __repr__ must not hide the cause
            value_text = f"<{type(value).__name__} object>"
        raise TypeError(
            f"{where} {key}={value_text} cannot be stored: pickling it failed with "
            f"{type(error).__name__}: {error}. Pass a value that can be pickled, "
            "such as numbers, text, lists and dictionaries of them, or objects of "
            "classes that can be imported."
        ) from error


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


class PersistedProperties(dict[str, Any]):
    """An entity's ``properties`` dict that saves the entity after each change.

    Inside a ``with entity:`` block the save is deferred to the end of the block, as
    for any other attribute. Copies and pickles are plain dicts.
    """

    def __init__(self, values: Mapping[str, Any], save: Callable[[], None]) -> None:
        super().__init__(values)
        self._save = save

    def __reduce__(self) -> Any:
        return (dict, (dict(self),))

    def __setitem__(self, key: str, value: Any) -> None:
        check_storable(key, value, "property")
        super().__setitem__(key, value)
        self._save()

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._save()

    def __ior__(self, other: Any) -> Self:  # type: ignore[override,misc]
        self.update(other)
        return self

    def pop(self, key: str, *default: Any) -> Any:
        value = super().pop(key, *default)
        self._save()
        return value

    def popitem(self) -> tuple[str, Any]:
        item = super().popitem()
        self._save()
        return item

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key in self:
            return self[key]
        self[key] = default
        return default

    def update(self, *args: Any, **kwargs: Any) -> None:
        changes = dict(*args, **kwargs)
        for key, value in changes.items():
            check_storable(key, value, "property")
        super().update(changes)
        self._save()

    def clear(self) -> None:
        super().clear()
        self._save()
