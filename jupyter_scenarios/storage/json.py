"""Storage of JSON-compatible values in a JSON file.

Besides the JSON types, the default encoder stores dates, datetimes, Enum members and
dataclass instances, in the format of Taipy's JSON data node, and the default decoder
reads them back.

A file names the class of an Enum member or a dataclass instance by module and name.
The decoder imports that module, as Taipy does, so that a kernel or worker that has not
imported it yet can still read the value. Importing runs only the module's import-time
code, and the module must be on ``sys.path``. The decoder accepts only an Enum
subclass with the named member, or a dataclass, which it calls with the stored fields.
Any other object raises ValueError, so a file cannot make a read call an arbitrary
class such as ``subprocess.Popen`` or read out an attribute such as ``os.environ``.
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
# Tag of a dict of the data whose keys are those of a tagged value. Taipy has no such
# tag, and reads the object as it is.
_ESCAPED_DICT_TAG = "escaped-dict"


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
    member by its value, a dataclass instance by a dict of its fields. The field values
    are encoded in turn, so a dataclass nested in a dataclass keeps its type, where
    Taipy's ``dataclasses.asdict`` turns it into a plain dict.

    A dict of the data whose keys are exactly ``"__type__"`` and ``"__value__"`` would
    read back as a tagged value, so it is written as ``{"__type__": "escaped-dict",
    "__value__": [[key, value], ...]}`` instead. Taipy has no such tag and reads that
    object back as it is.
    """

    def iterencode(self, o: Any, _one_shot: bool = False) -> Any:
        # json.dumps() and json.dump() both go through iterencode().
        return super().iterencode(_escape_tag_lookalikes(o), _one_shot)

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
            # The encoder calls default() again for each field value of a type that
            # JSON lacks, such as a nested dataclass.
            fields = {
                field.name: _escape_tag_lookalikes(getattr(o, field.name))
                for field in dataclasses.fields(o)
            }
            return {_TYPE_KEY: tag, _VALUE_KEY: fields}
        return super().default(o)


def _is_tag_lookalike(value: dict[Any, Any]) -> bool:
    """Return whether the decoder would read the dict ``value`` as a tagged value."""
    return set(value) == {_TYPE_KEY, _VALUE_KEY} and isinstance(value[_TYPE_KEY], str)


def _escape_tag_lookalikes(value: Any, path_ids: frozenset[int] = frozenset()) -> Any:
    """Return ``value`` with each dict that looks like a tagged value escaped.

    Lists, tuples and dicts are copied only where something inside them changes.
    ``path_ids`` holds the ids of the containers that enclose ``value``, so that a
    circular reference is left for the encoder to report.
    """
    if not isinstance(value, (dict, list, tuple)) or id(value) in path_ids:
        return value
    inner_ids = path_ids | {id(value)}
    if isinstance(value, dict):
        escaped = {
            key: _escape_tag_lookalikes(item, inner_ids) for key, item in value.items()
        }
        if _is_tag_lookalike(value):
            return {_TYPE_KEY: _ESCAPED_DICT_TAG, _VALUE_KEY: list(escaped.items())}
        changed = any(escaped[key] is not item for key, item in value.items())
        return escaped if changed else value
    items = [_escape_tag_lookalikes(item, inner_ids) for item in value]
    if any(new is not old for new, old in zip(items, value)):
        return items
    return value


class DefaultJSONDecoder(json.JSONDecoder):
    """JSON decoder that reads back what :class:`DefaultJSONEncoder` writes.

    A date written without a time reads as a ``datetime.date``, where Taipy returns a
    ``datetime.datetime`` at midnight. An Enum tag must name an :class:`enum.Enum`
    subclass and one of its members, and a dataclass tag a dataclass, or the decoder
    raises ValueError. Reading such a value imports the module that the tag names, as
    Taipy does.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("object_hook", _decode_tagged)
        super().__init__(**kwargs)


def _decode_tagged(source: dict[str, Any]) -> Any:
    if not _is_tag_lookalike(source):
        return source
    tag: str = source[_TYPE_KEY]
    value = source[_VALUE_KEY]
    if tag == _DATETIME_TAG and isinstance(value, str):
        # A datetime's ISO format always has a "T" before the time, a date's never.
        if "T" not in value:
            return datetime.date.fromisoformat(value)
        return datetime.datetime.fromisoformat(value)
    if tag == _ESCAPED_DICT_TAG:
        return _decode_escaped_dict(value, tag)
    if tag.startswith(_ENUM_PREFIX):
        return _decode_enum_member(tag, source)
    if tag.startswith(_DATACLASS_PREFIX):
        return _decode_dataclass(tag, value)
    return source


def _decode_escaped_dict(pairs: Any, tag: str) -> dict[Any, Any]:
    if not (
        isinstance(pairs, list)
        and all(isinstance(pair, list) and len(pair) == 2 for pair in pairs)
    ):
        raise ValueError(
            f"The JSON object tagged {tag!r} contains {pairs!r}, which is not a list "
            "of [key, value] pairs. Rewrite the data node."
        )
    return {key: item for key, item in pairs}


def _decode_enum_member(tag: str, source: dict[str, Any]) -> enum.Enum:
    parts = tag[len(_ENUM_PREFIX) :].split("-", 2)
    if len(parts) != 3:
        raise ValueError(
            f"The JSON type tag {tag!r} does not have the form "
            "'Enum-<module>-<class>-<member>'. Rewrite the data node."
        )
    module, qualname, name = parts
    enum_class = _find_object(module, qualname, tag)
    if not (isinstance(enum_class, type) and issubclass(enum_class, enum.Enum)):
        # ValueError, as for any invalid content, so read() raises UnreadableDataError.
        raise ValueError(  # noqa: TRY004
            f"The JSON type tag {tag!r} names {module}.{qualname}, which is a "
            f"{type(enum_class).__name__}, not an Enum class, so the value was not "
            "read. Rewrite the data node, or check that the file was written by a "
            "JSON data node."
        )
    try:
        return enum_class[name]
    except KeyError:
        raise ValueError(
            f"The JSON object {source!r} names the member {name!r}, which "
            f"{module}.{qualname} does not have. Add the member, or rewrite the "
            "data node."
        ) from None


def _decode_dataclass(tag: str, fields: Any) -> Any:
    parts = tag[len(_DATACLASS_PREFIX) :].split("-", 1)
    if len(parts) != 2:
        raise ValueError(
            f"The JSON type tag {tag!r} does not have the form "
            "'dataclass-<module>-<class>'. Rewrite the data node."
        )
    module, qualname = parts

    data_class = _find_object(module, qualname, tag)
    # Only a dataclass is built, because a file naming any other callable, such as
    # subprocess.Popen, would run it with arguments taken from the file.
    if not (dataclasses.is_dataclass(data_class) and isinstance(data_class, type)):
        raise ValueError(
            f"The JSON type tag {tag!r} names {module}.{qualname}, which is not a "
            "dataclass, so it was not called. Rewrite the data node, or check that "
            "the file was written by a JSON data node."
        )
    if not isinstance(fields, dict):
        raise ValueError(  # noqa: TRY004 - invalid file content
            f"The JSON object tagged {tag!r} stores {fields!r} where a dict of the "
            "fields of the dataclass is expected. Rewrite the data node."
        )

    # Fields with init=False are written, as Taipy does, but __init__ rejects them,
    # so they are left out and __init__ or __post_init__ sets them.
    init_names = {field.name for field in dataclasses.fields(data_class) if field.init}
    other_names = {field.name for field in dataclasses.fields(data_class)} - init_names
    arguments = {name: item for name, item in fields.items() if name not in other_names}

    try:
        return data_class(**arguments)
    except TypeError as error:
        raise ValueError(
            f"Failed to build {module}.{qualname} from the JSON object tagged "
            f"{tag!r}: {error}. Make the dataclass's fields match the stored ones "
            f"{sorted(fields)}, or rewrite the data node."
        ) from error


def _find_object(module_name: str, qualname: str, tag: str) -> Any:
    """Import ``module_name`` and return its attribute ``qualname``.

    NOTE: Importing runs the module's import-time code, so a crafted file can make a
    read import any module on ``sys.path``, such as a script in the working directory.
    The decoder then calls only an Enum or a dataclass found there.
    """
    try:
        found: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError, TypeError, ValueError) as error:
        # import_module raises TypeError or ValueError for an empty or relative name.
        raise ValueError(
            f"The JSON type tag {tag!r} names the class {module_name}.{qualname}, "
            f"which cannot be found: {error}. Define the class at the top level of an "
            "importable module, or import its module before reading."
        ) from error
    return found
