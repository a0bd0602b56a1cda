"""Storage of a table in a CSV file, through pandas."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jupyter_scenarios.storage import _tabular
from jupyter_scenarios.storage.atomic import atomic_path
from jupyter_scenarios.storage.base import StorageBackend

DEFAULT_ENCODING = "utf-8"
# The same line ending on every platform, so that appended rows match earlier rows.
_LINE_TERMINATOR = "\n"
# Suffixes for which pandas infers a compression (pandas.io.common, pandas 1.5 to 3.1).
_COMPRESSED_SUFFIXES = frozenset({".gz", ".bz2", ".zip", ".xz", ".zst", ".tar"})


class CSVBackend(_tabular.OneTableColumnNames, StorageBackend):
    """Store a data node's table in a CSV file.

    It needs pandas (the ``pandas`` extra). The backend reads
    these data node properties:

    ``has_header``
        Whether the first row of the file names the columns. Default: True.
    ``exposed_type``
        What read() returns: ``"pandas"`` (default) for a DataFrame, ``"numpy"`` for a
        numpy array, or a class for a list with one instance per row. The instances
        are built with one keyword argument per column, or with positional arguments
        when ``has_header`` is False.
    ``encoding``
        Text encoding of the file. Default: ``"utf-8"``.

    ``append`` adds rows at the end of the file.
    """

    storage_type = "csv"
    extension = ".csv"

    def __init__(self, key: str, properties: Mapping[str, Any], folder: Path) -> None:
        super().__init__(key, properties, folder)
        self.has_header = _tabular.validate_flag(
            key, "has_header", self.properties.get("has_header"), default=True
        )
        self.exposed_type = _tabular.validate_exposed_type(
            key, self.properties.get("exposed_type")
        )
        self.encoding: str = self.properties.get("encoding") or DEFAULT_ENCODING

    def read(self) -> Any:
        """Read the file and return it as the configured ``exposed_type``."""
        frame = self._read_frame(self._require_path())
        return _tabular.expose(frame, self.exposed_type, self.has_header, self.key)

    def _read_frame(self, path: Path) -> Any:
        """Read the whole file into a DataFrame.

        A file without any column, which write() produces for an empty DataFrame,
        reads as an empty DataFrame, as in Taipy.
        """
        pd = _tabular.import_pandas(self.key, self.storage_type)
        # pandas' ParserError and UnicodeDecodeError are ValueError subclasses.
        with self._translate_read_errors(path, (ValueError,)):
            try:
                return pd.read_csv(
                    path,
                    header=0 if self.has_header else None,
                    encoding=self.encoding,
                )
            except pd.errors.EmptyDataError:
                return pd.DataFrame()

    def write(self, data: Any) -> None:
        """Replace the file with the table ``data`` atomically.

        ``data`` may be a DataFrame, a numpy array, a dict of columns, a list of rows,
        or a list of objects such as instances of ``exposed_type``.
        """
        frame = _tabular.to_frame(data, self.key, self.storage_type)
        path = self._require_path()
        with atomic_path(path) as temp:
            self._write_rows(frame, temp, mode="w", header=self.has_header)

    def append(self, data: Any) -> None:
        """Add the rows of ``data`` at the end of the file, atomically.

        The file is copied, the rows are added to the copy, and the copy replaces the
        file. A compressed file, recognized by its suffix (``.gz``, ``.zip`` ...), is
        read and written again in full instead. With a header, the columns of ``data`` must be those of the file, in any
        order. Without one, ``data`` must have as many columns as the file. When the
        file is missing or empty, ``append`` writes ``data`` as write() does.

        Raises
        ------
        ValueError
            If the columns of ``data`` do not match those of the file.
        """
        frame = _tabular.to_frame(data, self.key, self.storage_type)
        path = self._require_path()
        if not path.exists() or path.stat().st_size == 0:
            self.write(frame)
            return
        file_columns = self._file_columns(path)
        if not file_columns:
            # The file contains an empty table without columns, so the rows replace it.
            self.write(frame)
            return
        frame = self._match_columns(frame, file_columns, path)
        if path.suffix.lower() in _COMPRESSED_SUFFIXES:
            self._append_by_rewrite(frame, path)
            return
        with atomic_path(path) as temp:
            shutil.copyfile(path, temp)
            with open(temp, "rb") as copy:
                copy.seek(-1, 2)
                ends_with_newline = copy.read(1) == b"\n"
            if not ends_with_newline:
                with open(temp, "a", encoding=self.encoding, newline="") as file:
                    file.write(_LINE_TERMINATOR)
            self._write_rows(frame, temp, mode="a", header=False)

    def _append_by_rewrite(self, frame: Any, path: Path) -> None:
        pd = _tabular.import_pandas(self.key, self.storage_type)
        stored = self._read_frame(path)
        frame = frame.set_axis(stored.columns, axis="columns")
        combined = pd.concat([stored, frame], ignore_index=True)
        with atomic_path(path) as temp:
            self._write_rows(combined, temp, mode="w", header=self.has_header)

    def _write_rows(self, frame: Any, path: Path, mode: str, header: bool) -> None:
        frame.to_csv(
            path,
            mode=mode,
            header=header,
            index=False,
            encoding=self.encoding,
            lineterminator=_LINE_TERMINATOR,
        )

    def _file_columns(self, path: Path) -> list[Any]:
        """Return the columns of the file: its header, or the numbers of its columns."""
        pd = _tabular.import_pandas(self.key, self.storage_type)
        with self._translate_read_errors(path, (ValueError,)):
            try:
                first_row = pd.read_csv(
                    path,
                    header=0 if self.has_header else None,
                    nrows=0 if self.has_header else 1,
                    encoding=self.encoding,
                )
            except pd.errors.EmptyDataError:
                return []
        return list(first_row.columns)

    def _match_columns(self, frame: Any, file_columns: list[Any], path: Path) -> Any:
        """Return ``frame`` with its columns in the order of ``file_columns``."""
        if not self.has_header:
            if len(frame.columns) != len(file_columns):
                raise ValueError(
                    f"Cannot append to data node {self.key!r}: the rows have "
                    f"{len(frame.columns)} columns but {path} has "
                    f"{len(file_columns)}. Append rows with {len(file_columns)} "
                    "columns, or use write() to replace the file."
                )
            return frame
        data_columns = [str(column) for column in frame.columns]
        if sorted(data_columns) != sorted(file_columns):
            raise ValueError(
                f"Cannot append to data node {self.key!r}: the rows have the columns "
                f"{data_columns} but {path} has the columns {file_columns}. Append "
                "rows with the file's columns, or use write() to replace the file."
            )
        renamed = frame.set_axis(data_columns, axis="columns")
        return renamed[file_columns]
