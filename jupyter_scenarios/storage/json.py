"""Storage of JSON-compatible values in a JSON file."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jupyter_scenarios.exceptions import ConfigurationError
from jupyter_scenarios.storage._append import merge_appended
from jupyter_scenarios.storage.atomic import atomic_path
from jupyter_scenarios.storage.base import StorageBackend

DEFAULT_ENCODING = "utf-8"


class JSONBackend(StorageBackend):
    """Store a data node's value in a JSON file.

    The backend reads these data node properties:

    ``encoder``
        A :class:`json.JSONEncoder` subclass used to write values that :mod:`json`
        cannot serialize, such as dates. Default: :class:`json.JSONEncoder`.
    ``decoder``
        A :class:`json.JSONDecoder` subclass used to read the file. Default:
        :class:`json.JSONDecoder`.
    ``encoding``
        Text encoding of the file. Default: ``"utf-8"``.

    ``append`` adds to a stored list, or updates a stored dict with a dict.
    """

    storage_type = "json"
    extension = ".json"

    def __init__(self, key: str, properties: Mapping[str, Any], folder: Path) -> None:
        super().__init__(key, properties, folder)
        self.encoder: type[json.JSONEncoder] = self._json_class(
            "encoder", json.JSONEncoder
        )
        self.decoder: type[json.JSONDecoder] = self._json_class(
            "decoder", json.JSONDecoder
        )
        self.encoding: str = self.properties.get("encoding") or DEFAULT_ENCODING

    def _json_class(self, name: str, base: type[Any]) -> Any:
        value = self.properties.get(name)
        if value is None:
            return base
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
        path = self._require_path()
        with (
            atomic_path(path) as temp,
            open(temp, "w", encoding=self.encoding) as file,
        ):
            # ensure_ascii=False writes text as-is, in the configured encoding.
            json.dump(data, file, cls=self.encoder, ensure_ascii=False, indent=4)

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
