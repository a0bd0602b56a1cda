"""Storage backends that read and write the contents of data nodes.

Each storage type of a data node configuration maps to a :class:`StorageBackend`
subclass. Build one with :func:`make_backend`. Backends that need pandas import it on
first use, and no module of this package imports IPython or ipywidgets, so that worker
processes can import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jupyter_scenarios.exceptions import InvalidStorageType
from jupyter_scenarios.storage.atomic import atomic_path, atomic_write_bytes
from jupyter_scenarios.storage.base import StorageBackend
from jupyter_scenarios.storage.csv import CSVBackend
from jupyter_scenarios.storage.errors import MissingDataError, UnreadableDataError
from jupyter_scenarios.storage.excel import ExcelBackend
from jupyter_scenarios.storage.generic import GenericBackend
from jupyter_scenarios.storage.in_memory import InMemoryBackend
from jupyter_scenarios.storage.json import JSONBackend
from jupyter_scenarios.storage.parquet import ParquetBackend
from jupyter_scenarios.storage.pickle import PickleBackend

__all__ = [
    "DEFAULT_STORAGE_TYPE",
    "STORAGE_TYPES",
    "CSVBackend",
    "ExcelBackend",
    "GenericBackend",
    "InMemoryBackend",
    "JSONBackend",
    "MissingDataError",
    "ParquetBackend",
    "PickleBackend",
    "StorageBackend",
    "UnreadableDataError",
    "atomic_path",
    "atomic_write_bytes",
    "get_backend_class",
    "make_backend",
]

_BACKEND_CLASSES: dict[str, type[StorageBackend]] = {
    backend.storage_type: backend
    for backend in (
        PickleBackend,
        JSONBackend,
        CSVBackend,
        ExcelBackend,
        ParquetBackend,
        InMemoryBackend,
        GenericBackend,
    )
}

#: Names of the storage types, as data node configurations spell them.
STORAGE_TYPES: tuple[str, ...] = tuple(_BACKEND_CLASSES)
#: Storage type of a data node whose configuration does not set one.
DEFAULT_STORAGE_TYPE = PickleBackend.storage_type


def _invalid_storage_type(storage_type: object, key: str | None) -> InvalidStorageType:
    subject = f"Data node {key!r} has an invalid" if key else "Invalid"
    valid = ", ".join(repr(name) for name in STORAGE_TYPES)
    return InvalidStorageType(
        f"{subject} storage type {storage_type!r}. Valid storage types are {valid}. "
        "Set storage_type to one of them."
    )


def get_backend_class(storage_type: str | None) -> type[StorageBackend]:
    """Return the backend class of ``storage_type``.

    Parameters
    ----------
    storage_type
        One of :data:`STORAGE_TYPES`, or None for :data:`DEFAULT_STORAGE_TYPE`.

    Raises
    ------
    InvalidStorageType
        If ``storage_type`` is not one of :data:`STORAGE_TYPES`. The message lists
        them.
    """
    return _lookup_backend_class(storage_type, key=None)


def _lookup_backend_class(
    storage_type: str | None, key: str | None
) -> type[StorageBackend]:
    if storage_type is None:
        storage_type = DEFAULT_STORAGE_TYPE
    try:
        return _BACKEND_CLASSES[storage_type]
    except (KeyError, TypeError):
        # TypeError: an unhashable value, such as a list, read from a bad config file.
        raise _invalid_storage_type(storage_type, key) from None


def make_backend(
    storage_type: str | None,
    key: str,
    properties: Mapping[str, Any],
    folder: str | Path,
) -> StorageBackend:
    """Build the backend that stores the data node ``key``.

    Parameters
    ----------
    storage_type
        One of :data:`STORAGE_TYPES`, or None for :data:`DEFAULT_STORAGE_TYPE`.
    key
        Id of the data node.
    properties
        The data node's properties, as configured.
    folder
        Folder of the file when ``properties`` sets neither ``path`` nor
        ``default_path``.

    Raises
    ------
    InvalidStorageType
        If ``storage_type`` is not one of :data:`STORAGE_TYPES`. The message names the
        data node and lists the valid storage types.
    jupyter_scenarios.exceptions.ConfigurationError
        If a property has an invalid value. The message names the data node and the
        property.
    """
    backend_class = _lookup_backend_class(storage_type, key)
    return backend_class(
        key, properties, folder if isinstance(folder, Path) else Path(folder)
    )
