"""Storage of one or more tables in an Excel workbook, through pandas and openpyxl."""

from __future__ import annotations

import sys
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jupyter_scenarios.exceptions import ConfigurationError
from jupyter_scenarios.storage import _tabular
from jupyter_scenarios.storage.atomic import atomic_path
from jupyter_scenarios.storage.base import StorageBackend

# Errors of pandas and openpyxl on a file that is not an xlsx workbook: zipfile's
# BadZipFile, KeyError for missing workbook parts, and ValueError subclasses for the
# rest, including a missing sheet.
_WORKBOOK_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    KeyError,
    zipfile.BadZipFile,
)


class ExcelBackend(StorageBackend):
    """Store a data node's tables in the sheets of an Excel (xlsx) workbook.

    It needs pandas and openpyxl (the ``pandas`` extra). The
    backend reads these data node properties:

    ``sheet_name``
        A sheet name, for which read() returns one table, or a list of names, for
        which read() returns a dict of tables keyed by sheet name. None (default)
        reads every sheet into a dict keyed by sheet name.
    ``has_header``
        Whether the first row of each sheet names the columns. Default: True.
    ``exposed_type``
        What each table is: ``"pandas"`` (default) for a DataFrame, ``"numpy"`` for a
        numpy array, or a class for a list with one instance per row, as in the csv
        backend.

    write() replaces the whole workbook. A dict is written as one sheet per key when
    ``sheet_name`` is None or a list, or when all its values are DataFrames or 2-D
    numpy arrays. Any other
    value is written as one sheet, named by ``sheet_name`` or else ``"Sheet1"``.
    ``append`` adds rows at the end of a sheet and keeps the other sheets.
    """

    storage_type = "excel"
    extension = ".xlsx"

    def __init__(self, key: str, properties: Mapping[str, Any], folder: Path) -> None:
        super().__init__(key, properties, folder)
        self.sheet_name = self._validate_sheet_name(self.properties.get("sheet_name"))
        self.has_header = _tabular.validate_flag(
            key, "has_header", self.properties.get("has_header"), default=True
        )
        self.exposed_type = _tabular.validate_exposed_type(
            key, self.properties.get("exposed_type")
        )

    def _validate_sheet_name(self, value: Any) -> str | list[str] | None:
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, (list, tuple)) and all(
            isinstance(name, str) for name in value
        ):
            return list(value)
        raise ConfigurationError(
            f"Data node {self.key!r} has an invalid sheet_name {value!r}. Set "
            "sheet_name to a sheet name, a list of sheet names, or None to read "
            "every sheet."
        )

    def _import_pandas(self) -> Any:
        pd = _tabular.import_pandas(self.key, self.storage_type)
        _tabular.import_module("openpyxl", self.key, self.storage_type)
        return pd

    def _read_sheets(self, path: Path, sheet_name: str | list[str] | None) -> Any:
        pd = self._import_pandas()
        with self._translate_read_errors(path, _WORKBOOK_ERRORS):
            return pd.read_excel(
                path,
                sheet_name=sheet_name,
                header=0 if self.has_header else None,
                engine="openpyxl",
            )

    def read(self) -> Any:
        """Read the configured sheets and return them as the ``exposed_type``.

        Returns
        -------
        Any
            One table when ``sheet_name`` is a sheet name, else a dict of tables keyed
            by sheet name.
        """
        path = self._require_path()
        sheets = self._read_sheets(path, self.sheet_name)
        if not isinstance(sheets, dict):
            return self._expose(sheets)
        return {name: self._expose(frame) for name, frame in sheets.items()}

    def _expose(self, frame: Any) -> Any:
        return _tabular.expose(frame, self.exposed_type, self.has_header, self.key)

    def write(self, data: Any) -> None:
        """Replace the workbook with ``data`` atomically.

        ``data`` is a table, or a dict of tables keyed by sheet name. A table may be a
        DataFrame, a numpy array, a list of rows, or a list of objects such as
        instances of ``exposed_type``.
        """
        if self._is_sheet_dict(data):
            self._write_sheets(self._frames_by_sheet(data))
        else:
            table = _tabular.to_frame(data, self.key, self.storage_type)
            self._write_sheets({self._sheet_for_table(None): table})

    def write_with_column_names(self, data: Any, columns: Sequence[Any] | None) -> None:
        """Replace the workbook with ``data``, whose columns ``columns`` names.

        ``data`` is a table, or a dict of tables keyed by sheet name that write()
        would write as one sheet per key, or a dict of DataFrames or 2-D numpy
        arrays, as in Taipy. ``columns`` replaces the names of the columns of each
        table in order. None writes ``data`` as write() does. Every table is
        converted before the workbook is replaced, so an error leaves it unchanged.

        Raises
        ------
        ValueError
            If a table has more or fewer columns than ``columns`` has names.
        """
        if self._is_sheet_dict(data):
            frames = {}
            for name, table in self._check_sheet_names(data).items():
                frames[name] = _tabular.to_frame_with_columns(
                    table, columns, self.key, self.storage_type, sheet=name
                )
            self._write_sheets(frames)
        else:
            frame = _tabular.to_frame_with_columns(
                data, columns, self.key, self.storage_type
            )
            self._write_sheets({self._sheet_for_table(None): frame})

    def append(self, data: Any) -> None:
        """Add the rows of ``data`` at the end of a sheet, atomically.

        ``data`` is a table or a dict of tables keyed by sheet name. A table goes to
        the sheet named by ``sheet_name``, or to the only sheet of the workbook when
        ``sheet_name`` is None. A missing sheet is created, and the other sheets are
        kept. With a header, the columns of the rows must be those of the sheet, in
        any order. When the file is missing, ``append`` writes ``data`` as write()
        does.

        Raises
        ------
        ValueError
            If the sheet of a table is ambiguous, or if the columns of the rows do not
            match those of the sheet.
        """
        path = self._require_path()
        if not path.exists():
            self.write(data)
            return
        pd = self._import_pandas()
        sheets: dict[str, Any] = dict(self._read_sheets(path, None))
        if self._is_sheet_dict(data):
            additions = self._frames_by_sheet(data)
        else:
            table = _tabular.to_frame(data, self.key, self.storage_type)
            additions = {self._sheet_for_table(list(sheets)): table}
        for name, rows in additions.items():
            if name in sheets:
                rows = self._match_columns(rows, sheets[name], name)
                sheets[name] = pd.concat([sheets[name], rows], ignore_index=True)
            else:
                sheets[name] = rows
        self._write_sheets(sheets)

    def _is_sheet_dict(self, data: Any) -> bool:
        if not isinstance(data, Mapping):
            return False
        if self.sheet_name is None or isinstance(self.sheet_name, list):
            return True
        pd = self._import_pandas()
        return all(_is_table(value, pd) for value in data.values())

    def _check_sheet_names(self, data: Mapping[Any, Any]) -> Mapping[str, Any]:
        for name in data:
            if not isinstance(name, str):
                raise TypeError(
                    f"Data node {self.key!r} received a dict of sheets with the key "
                    f"{name!r}, which is not a sheet name. Use strings as keys."
                )
        return data

    def _frames_by_sheet(self, data: Mapping[Any, Any]) -> dict[str, Any]:
        return {
            name: _tabular.to_frame(table, self.key, self.storage_type)
            for name, table in self._check_sheet_names(data).items()
        }

    def _sheet_for_table(self, existing_sheets: list[str] | None) -> str:
        """Return the sheet that a single table goes to.

        ``existing_sheets`` lists the sheets of the workbook when appending, and is
        None when writing a new workbook.
        """
        if isinstance(self.sheet_name, str):
            return self.sheet_name
        if isinstance(self.sheet_name, list) and len(self.sheet_name) == 1:
            return self.sheet_name[0]
        if self.sheet_name is None and existing_sheets is None:
            return "Sheet1"
        if self.sheet_name is None and existing_sheets and len(existing_sheets) == 1:
            return existing_sheets[0]
        raise ValueError(
            f"Data node {self.key!r} has sheet_name {self.sheet_name!r}, so a single "
            "table does not say which sheet it goes to. Pass a dict of tables keyed "
            "by sheet name, or set sheet_name to one sheet name."
        )

    def _match_columns(self, rows: Any, sheet: Any, name: str) -> Any:
        """Return ``rows`` with the columns of ``sheet``, in the same order."""
        if not self.has_header:
            if len(rows.columns) != len(sheet.columns):
                raise ValueError(
                    f"Cannot append to sheet {name!r} of data node {self.key!r}: the "
                    f"rows have {len(rows.columns)} columns but the sheet has "
                    f"{len(sheet.columns)}. Append rows with {len(sheet.columns)} "
                    "columns, or use write() to replace the workbook."
                )
            return rows.set_axis(sheet.columns, axis="columns")
        row_columns = [str(column) for column in rows.columns]
        sheet_columns = [str(column) for column in sheet.columns]
        if sorted(row_columns) != sorted(sheet_columns):
            raise ValueError(
                f"Cannot append to sheet {name!r} of data node {self.key!r}: the rows "
                f"have the columns {row_columns} but the sheet has the columns "
                f"{sheet_columns}. Append rows with the sheet's columns, or use "
                "write() to replace the workbook."
            )
        renamed = rows.set_axis(row_columns, axis="columns")[sheet_columns]
        return renamed.set_axis(sheet.columns, axis="columns")

    def _write_sheets(self, frames: Mapping[str, Any]) -> None:
        if not frames:
            raise ValueError(
                f"Data node {self.key!r} cannot write an empty dict of sheets because "
                "an Excel workbook needs at least one sheet. Write at least one table."
            )
        pd = self._import_pandas()
        path = self._require_path()
        with (
            atomic_path(path) as temp,
            pd.ExcelWriter(temp, engine="openpyxl") as writer,
        ):
            for name, frame in frames.items():
                frame.to_excel(
                    writer, sheet_name=name, index=False, header=self.has_header
                )


def _is_table(value: Any, pd: Any) -> bool:
    """Return whether ``value`` is a DataFrame or a 2-D numpy array."""
    if isinstance(value, pd.DataFrame):
        return True
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(value, numpy.ndarray) and value.ndim == 2
