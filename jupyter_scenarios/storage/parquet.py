"""Storage of a table in a Parquet file, through pandas and pyarrow."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jupyter_scenarios.exceptions import ConfigurationError
from jupyter_scenarios.storage import _tabular
from jupyter_scenarios.storage.atomic import atomic_path
from jupyter_scenarios.storage.base import StorageBackend

DEFAULT_ENGINE = "pyarrow"
DEFAULT_COMPRESSION = "snappy"
# Values of the engine property, as pandas.read_parquet accepts them.
ENGINES = ("pyarrow", "fastparquet", "auto")

# pyarrow raises ArrowInvalid, a ValueError subclass, on a file that is not Parquet,
# and OSError on some corrupt footers.
_PARQUET_ERRORS: tuple[type[Exception], ...] = (ValueError, OSError)


class ParquetBackend(_tabular.OneTableColumnNames, StorageBackend):
    """Store a data node's table in a Parquet file.

    It needs pandas and pyarrow (the ``pandas`` extra), or
    fastparquet when ``engine`` is ``"fastparquet"``. The backend reads these data
    node properties:

    ``engine``
        Parquet library used by pandas: ``"pyarrow"`` (default), ``"fastparquet"`` or
        ``"auto"``.
    ``compression``
        Compression codec of the written file, such as ``"snappy"`` (default),
        ``"gzip"``, ``"zstd"``, or None for none.
    ``read_kwargs``
        Extra keyword arguments of :func:`pandas.read_parquet`, such as ``columns``.
    ``write_kwargs``
        Extra keyword arguments of :meth:`pandas.DataFrame.to_parquet`. They override
        ``engine`` and ``compression``.
    ``exposed_type``
        What read() returns: ``"pandas"`` (default), ``"numpy"``, or a class, as in
        the csv backend.

    read() also reads a folder of Parquet files, but write() only writes one file:
    ``partition_cols`` is rejected because a folder cannot be replaced atomically.
    Column names are written as strings, because Parquet requires them.
    ``append`` adds rows at the end of the table.
    """

    storage_type = "parquet"
    extension = ".parquet"

    def __init__(self, key: str, properties: Mapping[str, Any], folder: Path) -> None:
        super().__init__(key, properties, folder)
        self.engine: str = self.properties.get("engine") or DEFAULT_ENGINE
        if self.engine not in ENGINES:
            raise ConfigurationError(
                f"Data node {key!r} has an invalid engine {self.engine!r}. Set engine "
                f"to one of {', '.join(repr(name) for name in ENGINES)}."
            )
        self.compression: str | None = self.properties.get(
            "compression", DEFAULT_COMPRESSION
        )
        self.read_kwargs = self._kwargs("read_kwargs")
        self.write_kwargs = self._kwargs("write_kwargs")
        if "partition_cols" in self.write_kwargs:
            raise ConfigurationError(
                f"Data node {key!r} sets partition_cols in write_kwargs, which writes "
                "a folder of files that cannot be replaced atomically. Remove "
                "partition_cols to write a single Parquet file."
            )
        self.exposed_type = _tabular.validate_exposed_type(
            key, self.properties.get("exposed_type")
        )

    def _kwargs(self, name: str) -> dict[str, Any]:
        value = self.properties.get(name)
        if value is None:
            return {}
        if not isinstance(value, Mapping) or not all(
            isinstance(argument, str) for argument in value
        ):
            raise ConfigurationError(
                f"Data node {self.key!r} has an invalid {name!r} property: {value!r}. "
                f"Set {name!r} to a dict of keyword arguments."
            )
        return dict(value)

    def _import_pandas(self) -> Any:
        pd = _tabular.import_pandas(self.key, self.storage_type)
        if self.engine == "pyarrow":
            _tabular.import_module("pyarrow", self.key, self.storage_type)
        elif self.engine == "fastparquet":
            _tabular.import_module(
                "fastparquet", self.key, self.storage_type, "pip install fastparquet"
            )
        return pd

    def _read_frame(self, path: Path, read_kwargs: Mapping[str, Any]) -> Any:
        pd = self._import_pandas()
        with self._translate_read_errors(path, _PARQUET_ERRORS):
            return pd.read_parquet(path, engine=self.engine, **read_kwargs)

    def read(self) -> Any:
        """Read the file and return it as the configured ``exposed_type``."""
        frame = self._read_frame(self._require_path(), self.read_kwargs)
        return _tabular.expose(frame, self.exposed_type, True, self.key)

    def write(self, data: Any) -> None:
        """Replace the file with the table ``data`` atomically.

        ``data`` may be a DataFrame, a numpy array, a dict of columns, a list of rows,
        or a list of objects such as instances of ``exposed_type``.
        """
        frame = _tabular.to_frame(data, self.key, self.storage_type)
        self._write_frame(frame)

    def append(self, data: Any) -> None:
        """Add the rows of ``data`` at the end of the table, atomically.

        The whole table is read, extended and written again. ``read_kwargs`` are not
        used for that read, so that no column or row is lost. The columns of ``data``
        must be those of the table, in any order. When the file is missing,
        ``append`` writes ``data`` as write() does.

        Raises
        ------
        ValueError
            If the columns of ``data`` do not match those of the table.
        """
        rows = _tabular.to_frame(data, self.key, self.storage_type)
        path = self._require_path()
        if not path.exists():
            self._write_frame(rows)
            return
        pd = self._import_pandas()
        stored = self._read_frame(path, {})
        rows = _string_columns(rows)
        row_columns = list(rows.columns)
        table_columns = list(stored.columns)
        if sorted(row_columns) != sorted(table_columns):
            raise ValueError(
                f"Cannot append to data node {self.key!r}: the rows have the columns "
                f"{row_columns} but {path} has the columns {table_columns}. Append "
                "rows with the table's columns, or use write() to replace the file."
            )
        # A default RangeIndex carries no data, so it is renumbered. Any other index
        # of the stored table is kept.
        ignore_index = isinstance(stored.index, pd.RangeIndex) and isinstance(
            rows.index, pd.RangeIndex
        )
        combined = pd.concat([stored, rows[table_columns]], ignore_index=ignore_index)
        self._write_frame(combined)

    def _write_frame(self, frame: Any) -> None:
        self._import_pandas()
        path = self._require_path()
        arguments = {"engine": self.engine, "compression": self.compression}
        arguments.update(self.write_kwargs)
        frame = _string_columns(frame)
        try:
            with atomic_path(path) as temp:
                frame.to_parquet(temp, **arguments)
        except (OverflowError, TypeError, ValueError) as error:
            raise self._unstorable_error(frame, error) from error

    def _unstorable_error(self, frame: Any, error: Exception) -> Exception:
        """Return ``error`` reworded to name the data node, the column and the fix.

        pyarrow raises OverflowError for an int beyond 64 bits, ArrowInvalid (a
        ValueError) or ArrowTypeError (a TypeError) for a column of mixed or unknown
        types. The returned error has the same built-in type.
        """
        error_type = next(
            kind
            for kind in (OverflowError, TypeError, ValueError)
            if isinstance(error, kind)
        )
        column = self._failing_column(frame)
        if column is None:
            return error_type(
                f"Data node {self.key!r} failed to write its Parquet file: {error}. "
                "Check the values of the table and the engine, compression and "
                "write_kwargs properties."
            )
        return error_type(
            f"Data node {self.key!r} failed to store column {column!r} as Parquet: "
            f"{error}. Convert the values of the column to one type that Parquet "
            "stores (for example str, or float for an int beyond 64 bits), or use a "
            "pickle data node to store any Python value."
        )

    def _failing_column(self, frame: Any) -> Any:
        """Return the first column that pyarrow cannot convert, or None."""
        if self.engine == "fastparquet":
            return None
        try:
            import pyarrow
        except ImportError:
            return None
        for column in frame.columns:
            try:
                pyarrow.array(frame[column], from_pandas=True)
            except (OverflowError, TypeError, ValueError, pyarrow.ArrowException):
                return column
        return None

    def delete(self) -> None:
        """Remove the stored file, or the folder of files that read() accepts."""
        path = self._require_path()
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _string_columns(frame: Any) -> Any:
    """Return ``frame`` with string column names, renaming only when needed."""
    if all(isinstance(column, str) for column in frame.columns):
        return frame
    return frame.set_axis([str(column) for column in frame.columns], axis="columns")
