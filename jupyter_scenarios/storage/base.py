"""The interface every storage backend implements.

A backend reads and writes the contents of one data node. Backends are built from plain,
picklable values (storage type, data node id, properties, a folder for default paths) so
that a worker process can build the same backend as the kernel and read or write the data
itself. This module and every backend must import neither IPython nor ipywidgets.
"""

from __future__ import annotations

import abc
import contextlib
import functools
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from jupyter_scenarios.storage.errors import MissingDataError, UnreadableDataError


class StorageBackend(abc.ABC):
    """Read and write the contents of one data node.

    Parameters
    ----------
    key
        Id of the data node; names the default file and keys the in-memory store.
    properties
        The data node's properties (``path``, ``default_data``, ``encoding``,
        ``exposed_type`` ...), as configured.
    folder
        Folder for files whose path is not given in ``properties``.
    """

    storage_type: ClassVar[str]
    #: File name extension of the default path, with its dot.
    extension: ClassVar[str] = ""
    #: False for backends whose data lives only in the kernel's memory.
    reachable_from_workers: ClassVar[bool] = True

    def __init__(self, key: str, properties: Mapping[str, Any], folder: Path) -> None:
        self.key = key
        self.properties = dict(properties)
        self.folder = folder if isinstance(folder, Path) else Path(folder)

    @functools.cached_property
    def path(self) -> Path | None:
        """File holding the data, or None for backends without a file.

        A relative ``path`` or ``default_path`` property is relative to the current
        working directory at the time of each read or write, as in Taipy. Built once
        per backend, whose properties are its own copy.
        """
        configured = self.properties.get("path") or self.properties.get("default_path")
        if configured:
            return Path(configured)
        return self.folder / f"{self.key}{self.extension}"

    @abc.abstractmethod
    def read(self) -> Any:
        """Return the stored data."""

    @abc.abstractmethod
    def write(self, data: Any) -> None:
        """Replace the stored data with ``data``, atomically."""

    def append(self, data: Any) -> None:
        """Add ``data`` to the stored data.

        NOTE: File backends append by reading the file, adding to it and replacing it
        atomically. Two threads or processes that append to one data node at the same
        time can lose one of the appends, so callers must serialize appends.
        """
        raise NotImplementedError(
            f"Data node {self.key!r} uses storage type {self.storage_type!r}, which "
            "does not support append(); use write() with the whole value instead."
        )

    def write_with_column_names(self, data: Any, columns: Sequence[Any] | None) -> None:
        """Replace the stored table with the rows ``data``, named by ``columns``.

        Only the backends that store tables (csv, excel, parquet) implement it.
        """
        raise NotImplementedError(
            f"Data node {self.key!r} uses storage type {self.storage_type!r}, which "
            "stores values, not tables with named columns, so it does not support "
            "write_with_column_names(). Use write() instead, or a csv, excel or "
            "parquet data node to store a table."
        )

    def exists(self) -> bool:
        """Return whether data has been stored."""
        path = self.path
        return path is not None and path.exists()

    def delete(self) -> None:
        """Remove the stored data, if any."""
        path = self.path
        if path is not None:
            path.unlink(missing_ok=True)

    def _require_path(self) -> Path:
        """Return :attr:`path`, for backends that always store the data in a file."""
        path = self.path
        if path is None:
            raise RuntimeError(
                f"Data node {self.key!r} with storage type {self.storage_type!r} has "
                "no file path. This is a bug in the backend class "
                f"{type(self).__name__}, which must override read() and write()."
            )
        return path

    @contextlib.contextmanager
    def _translate_read_errors(
        self, path: Path, content_errors: tuple[type[Exception], ...]
    ) -> Iterator[None]:
        """Turn the errors of reading ``path`` into errors that name the data node.

        A missing file raises :class:`MissingDataError`. An error of a type in
        ``content_errors`` raises :class:`UnreadableDataError`. Permission errors and
        other errors about the file itself propagate unchanged, because they already
        name the path.
        """
        try:
            yield
        except FileNotFoundError as error:
            raise MissingDataError(
                f"Data node {self.key!r} has no data because the file {path} does "
                "not exist. Write the data node first, or set its 'path' property to "
                "an existing file."
            ) from error
        except (PermissionError, IsADirectoryError, NotADirectoryError):
            raise
        except content_errors as error:
            raise UnreadableDataError(
                f"Failed to read data node {self.key!r} from {path} as storage type "
                f"{self.storage_type!r}: {str(error).rstrip('.')}. Check that the file contains "
                f"{self.storage_type} data, or set the data node's storage_type to the "
                "format of the file."
            ) from error
