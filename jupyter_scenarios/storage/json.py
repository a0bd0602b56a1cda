"""Storage of JSON-compatible values in a JSON file.

Besides the JSON types, the default encoder stores dates, datetimes, Enum members and
dataclass instances, in the format of Taipy's JSON data node, and the default decoder
reads them back.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import importlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jupyter_scenarios.exceptions import ConfigurationError
from jupyter_scenarios.storage._append import merge_appended
from jupyter_scenarios.storage.atomic import atomic_path
from jupyter_scenarios.storage.base import StorageBackend

DEFAULT_ENCODING = "utf-8"

# Keys of the object that represents a value of a type JSON lacks, and the tags of
# its "__type__" key. Taipy's JSON data node (taipy/core/data/json.py) writes and
# reads the same objects.
_TYPE_KEY = "__type__"
_VALUE_KEY = "__value__"
_DATETIME_TAG = "Datetime"
_ENUM_PREFIX = "Enum-"
_DATACLASS_PREFIX = "dataclass-"


class JSONBackend(StorageBackend):
    """Store a data node's value in a JSON file.

    The backend reads these data node properties:

    ``encoder``
        A :class:`json.JSONEncoder` subclass used to write values that :mod:`json`
        cannot serialize. Default: :class:`DefaultJSONEncoder`, which also writes
        dates, datetimes, Enum members and dataclass instances.
    ``decoder``
        A :class:`json.JSONDecoder` subclass used to read the file. Default:
        :class:`DefaultJSONDecoder`, which reads back what the default encoder wrote.
    ``encoding``
        Text encoding of the file. Default: ``"utf-8"``.

    ``append`` adds to a stored list, or updates a stored dict with a dict.
    """

    storage_type = "json"
    extension = ".json"

    def __init__(self, key: str, properties: Mapping[str, Any], folder: Path) -> None:
        super().__init__(key, properties, folder)
        self.encoder: type[json.JSONEncoder] = self._json_class(
            "encoder", json.JSONEncoder, DefaultJSONEncoder
        )
        self.decoder: type[json.JSONDecoder] = self._json_class(
            "decoder", json.JSONDecoder, DefaultJSONDecoder
        )
        self.encoding: str = self.properties.get("encoding") or DEFAULT_ENCODING

    def _json_class(self, name: str, base: type[Any], default: type[Any]) -> Any:
        value = self.properties.get(name)
        if value is None:
            return default
        if not (isinstance(value, type) and issubclass(value, base)):
            raise ConfigurationError(
                f"Data node {self.key!r} has an invalid {name!r} property: {value!r}. "
                f"Set {name!r} to a subclass of json.{base.__name__}, or remove it to "
                "use the default."
            )
        return value

    def read(self) -> Any:
        """Parse the file and return its value."""
        path = self._require_path()
        # JSONDecodeError and UnicodeDecodeError are both ValueError subclasses.
        with (
            self._translate_read_errors(path, (ValueError,)),
            open(path, encoding=self.encoding) as file,
        ):
            return json.load(file, cls=self.decoder)

    def write(self, data: Any) -> None:
        """Serialize ``data`` to JSON and replace the file with it atomically."""
        # Serializing before opening the file leaves the file untouched on failure.
        text = self._serialize(data)
        path = self._require_path()
        with (
            atomic_path(path) as temp,
            open(temp, "w", encoding=self.encoding) as file,
        ):
            file.write(text)

    def _serialize(self, data: Any) -> str:
        try:
            # ensure_ascii=False writes text as-is, in the configured encoding.
            return json.dumps(data, cls=self.encoder, ensure_ascii=False, indent=4)
        except (TypeError, ValueError) as error:
            if self.encoder is DefaultJSONEncoder:
                fix = (
                    "set the data node's 'encoder' property to a json.JSONEncoder "
                    "subclass whose default() converts it"
                )
            else:
                name = self.encoder.__qualname__
                fix = f"make the default() method of its encoder {name} convert it"
            # A circular reference raises ValueError, and an unknown type TypeError.
            raise type(error)(
                f"Data node {self.key!r} failed to store the value as JSON: {error}. "
                "Convert the value to JSON types, dates, Enum members or dataclass "
                f"instances. Otherwise, {fix}."
            ) from error

    def append(self, data: Any) -> None:
        """Add ``data`` to the stored list, or merge it into the stored dict.

        A list ``data`` is added item by item to a stored list, and any other value is
        added as one item. A dict ``data`` updates a stored dict. When nothing is
        stored yet, the result is the list of the added items.

        Raises
        ------
        TypeError
            If the stored value is neither a list nor, for dict ``data``, a dict.
        """
        if self.exists():
            stored = self.read()
        else:
            stored = []
        self.write(merge_appended(self.key, self.storage_type, stored, data))


class DefaultJSONEncoder(json.JSONEncoder):
    """JSON encoder for dates, datetimes, Enum members and dataclass instances.

    Each such value becomes an object ``{"__type__": tag, "__value__": value}``, as
    Taipy's JSON data node writes it: a date or datetime in ISO 8601 format, an Enum
    member by its value, a dataclass instance by ``dataclasses.asdict``.
    """

    def default(self, o: Any) -> Any:
        if isinstance(o, enum.Enum):
            enum_class = type(o)
            tag = (
                f"{_ENUM_PREFIX}{enum_class.__module__}-{enum_class.__qualname__}-"
                f"{o.name}"
            )
            return {_TYPE_KEY: tag, _VALUE_KEY: o.value}
        if isinstance(o, datetime.date):
            return {_TYPE_KEY: _DATETIME_TAG, _VALUE_KEY: o.isoformat()}
        if dataclasses.is_dataclass(o) and not isinstance(o, type):
            data_class = type(o)
            tag = (
                f"{_DATACLASS_PREFIX}{data_class.__module__}-{data_class.__qualname__}"
            )
            return {_TYPE_KEY: tag, _VALUE_KEY: dataclasses.asdict(o)}
        return super().default(o)


class DefaultJSONDecoder(json.JSONDecoder):
    """JSON decoder that reads back what :class:`DefaultJSONEncoder` writes.

    A date written without a time reads as a ``datetime.date``, where Taipy returns a
    ``datetime.datetime`` at midnight. Reading an Enum member or a dataclass instance
    imports the module that the file names, and raises ValueError when the class
    cannot be found there.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("object_hook", _decode_tagged)
        super().__init__(**kwargs)


def _decode_tagged(source: dict[str, Any]) -> Any:
    if set(source) != {_TYPE_KEY, _VALUE_KEY} or not isinstance(source[_TYPE_KEY], str):
        return source
    tag: str = source[_TYPE_KEY]
    value = source[_VALUE_KEY]
    if tag == _DATETIME_TAG and isinstance(value, str):
        # A datetime's ISO format always has a "T" before the time, a date's never.
        if "T" not in value:
            return datetime.date.fromisoformat(value)
        return datetime.datetime.fromisoformat(value)
    if tag.startswith(_ENUM_PREFIX):
        module, qualname, name = tag[len(_ENUM_PREFIX) :].split("-", 2)
        enum_class = _find_class(module, qualname, tag)
        try:
            return enum_class[name]
        except KeyError:
            raise ValueError(
                f"The JSON object {source!r} names the member {name!r}, which "
                f"{module}.{qualname} does not have. Add the member, or rewrite the "
                "data node."
            ) from None
    if tag.startswith(_DATACLASS_PREFIX):
        module, qualname = tag[len(_DATACLASS_PREFIX) :].split("-", 1)
        data_class = _find_class(module, qualname, tag)
        try:
            return data_class(**value)
        except TypeError as error:
            raise ValueError(
                f"Failed to build {module}.{qualname} from the JSON object "
                f"{source!r}: {error}. Make the dataclass's fields match the stored "
                "ones, or rewrite the data node."
            ) from error
    return source


def _find_class(module_name: str, qualname: str, tag: str) -> Any:
    """Import ``module_name`` and return its class ``qualname``."""
    try:
        found: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as error:
        raise ValueError(
            f"The JSON type tag {tag!r} names the class {module_name}.{qualname}, "
            f"which cannot be found: {error}. Define the class at the top level of an "
            "importable module, or import its module before reading."
        ) from error
    return found
