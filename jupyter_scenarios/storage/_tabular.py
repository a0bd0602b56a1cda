"""Helpers shared by the csv, excel and parquet backends, which store tables.

pandas and the file format libraries are imported when a backend first reads or writes,
so that importing the storage package works without them.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any, ClassVar

from jupyter_scenarios.exceptions import ConfigurationError, clause

# The package is installed from a checkout, so the extra is named with its path.
PANDAS_INSTALL_COMMAND = (
    "run `pip install -e '.[pandas]'` in the jupyter-scenarios checkout, or "
    "`pip install pandas pyarrow openpyxl`"
)

#: Values of the ``exposed_type`` property other than a class.
EXPOSED_TYPE_NAMES = ("pandas", "numpy")
DEFAULT_EXPOSED_TYPE = "pandas"


def import_module(
    name: str,
    key: str,
    storage_type: str,
    install_command: str = PANDAS_INSTALL_COMMAND,
) -> ModuleType:
    """Import and return the module ``name``.

    Raises
    ------
    ImportError
        If the import fails. The message names the data node, its storage type and
        ``install_command``.
    """
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise ImportError(
            f"Data node {key!r} uses storage type {storage_type!r}, which needs the "
            f"{name!r} package, but importing it failed: {clause(error)}. To install it, "
            f"{install_command}.",
            name=name,
        ) from error


def import_pandas(key: str, storage_type: str) -> Any:
    """Import and return pandas, raising an ImportError that gives the install command."""
    return import_module("pandas", key, storage_type)


def validate_exposed_type(key: str, value: Any) -> str | type[Any]:
    """Return the ``exposed_type`` property, or its default when it is None.

    Raises
    ------
    ConfigurationError
        If the value is neither ``"pandas"``, ``"numpy"`` nor a class.
    """
    if value is None:
        return DEFAULT_EXPOSED_TYPE
    if isinstance(value, type) or value in EXPOSED_TYPE_NAMES:
        return value  # type: ignore[no-any-return]
    raise ConfigurationError(
        f"Data node {key!r} has an invalid exposed_type {value!r}. Set exposed_type "
        "to 'pandas', 'numpy', or a class whose constructor takes one keyword "
        "argument per column."
    )


def validate_flag(key: str, name: str, value: Any, default: bool) -> bool:
    """Return the boolean property ``name``, or ``default`` when it is None.

    Raises
    ------
    ConfigurationError
        If the value is not a bool.
    """
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ConfigurationError(
            f"Data node {key!r} has an invalid {name!r} property: {value!r}. Set "
            f"{name!r} to True or False."
        )
    return value


def expose(
    frame: Any, exposed_type: str | type[Any], has_header: bool, key: str
) -> Any:
    """Convert a DataFrame read from a file to the data node's ``exposed_type``.

    Parameters
    ----------
    frame
        The table as read by pandas.
    exposed_type
        ``"pandas"`` returns ``frame``, ``"numpy"`` returns ``frame.to_numpy()``. A
        class returns a list with one instance per row, built with one keyword
        argument per column, or with positional arguments when the table has no header.
    has_header
        Whether the columns of ``frame`` are named by a header row.
    key
        Id of the data node, for the error message.

    Raises
    ------
    TypeError
        If the class rejects the arguments built from a row.
    """
    if exposed_type == "pandas":
        return frame
    if exposed_type == "numpy":
        return frame.to_numpy()
    assert isinstance(exposed_type, type)
    instances = []
    if has_header:
        rows: list[Any] = frame.to_dict(orient="records")
    else:
        rows = list(frame.itertuples(index=False, name=None))
    for number, row in enumerate(rows):
        try:
            if has_header:
                instances.append(exposed_type(**row))
            else:
                instances.append(exposed_type(*row))
        except TypeError as error:
            arguments = "keyword arguments" if has_header else "positional arguments"
            raise TypeError(
                f"Data node {key!r} failed to build {exposed_type.__qualname__} from "
                f"row {number} with the {arguments} {row!r}: {clause(error)}. Make the "
                "constructor of exposed_type accept one argument per column, or set "
                "exposed_type to 'pandas' or 'numpy'."
            ) from error
    return instances


def _record_fields(item: Any) -> dict[str, Any] | None:
    """Return the fields of a dataclass or plain object as a dict, else None."""
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return {
            field.name: getattr(item, field.name) for field in dataclasses.fields(item)
        }
    if isinstance(item, (Mapping, type)):
        return None
    attributes = getattr(item, "__dict__", None)
    if isinstance(attributes, dict):
        return dict(attributes)
    return None


def to_frame(data: Any, key: str, storage_type: str) -> Any:
    """Convert the value written to a data node to a DataFrame.

    Parameters
    ----------
    data
        A DataFrame, a Series, a numpy array, a dict of columns, a list of rows, or a
        list of objects such as instances of ``exposed_type``. An object gives a row
        with one column per dataclass field, or per attribute in its ``__dict__``.
    key
        Id of the data node, for the error message.
    storage_type
        Storage type of the data node, for the error message.

    Raises
    ------
    TypeError
        If pandas cannot build a table from ``data``.
    """
    pd = import_pandas(key, storage_type)
    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, pd.Series):
        return data.to_frame()
    if isinstance(data, (list, tuple)) and data:
        records = [_record_fields(item) for item in data]
        if all(record is not None for record in records):
            return pd.DataFrame.from_records(records)
    try:
        return pd.DataFrame(data)
    except (ValueError, TypeError) as error:
        raise TypeError(
            f"Data node {key!r} (storage type {storage_type!r}) cannot store a "
            f"{type(data).__name__} because pandas failed to build a table from it: "
            f"{clause(error)}. Write a DataFrame, a numpy array, a dict of columns, or a list "
            "of rows."
        ) from error


def to_frame_with_columns(
    data: Any,
    columns: Sequence[Any] | None,
    key: str,
    storage_type: str,
    sheet: str | None = None,
) -> Any:
    """Convert ``data`` to a DataFrame whose columns are named ``columns``.

    ``data`` is converted as :func:`to_frame` does, and then ``columns`` replaces the
    names of its columns in order, as in Taipy. So ``columns`` renames the columns of
    a DataFrame or of a dict of columns, and names those of a list of rows or a numpy
    array. ``data`` itself is not changed. Empty ``data`` gives an empty table with
    the columns ``columns``. None converts ``data`` as :func:`to_frame` does.

    Parameters
    ----------
    sheet
        Name of the Excel sheet that ``data`` goes to, for the error message.

    Raises
    ------
    TypeError
        If ``columns`` is a single string instead of a list of names, or if pandas
        cannot build a table from ``data``.
    ValueError
        If ``columns`` has more or fewer names than the table has columns.
    """
    if columns is None:
        return to_frame(data, key, storage_type)
    if isinstance(columns, str) or not isinstance(columns, Sequence):
        raise TypeError(
            f"Data node {key!r} received columns={columns!r}, which is not a list of "
            f"column names. Pass a list such as [{columns!r}]."
        )
    names = list(columns)
    frame = to_frame(data, key, storage_type)
    if frame.empty and len(frame.columns) == 0:
        return frame.reindex(columns=names)
    if len(names) != len(frame.columns):
        where = f" for sheet {sheet!r}" if sheet is not None else ""
        raise ValueError(
            f"Data node {key!r} received {len(names)} column names {names!r}{where}, "
            f"but the table has {len(frame.columns)} columns. Pass one name per "
            "column, in the order of the columns."
        )
    return frame.set_axis(names, axis="columns")


class OneTableColumnNames:
    """``write_with_column_names`` for the backends whose write() stores one table."""

    key: str
    storage_type: ClassVar[str]

    def write(self, data: Any) -> None:
        raise NotImplementedError  # the backend's own write() comes first

    def write_with_column_names(self, data: Any, columns: Sequence[Any] | None) -> None:
        """Replace the file with the rows ``data``, whose columns ``columns`` names.

        ``data`` is converted as write() converts it, and then ``columns`` replaces
        the names of its columns in order, as in Taipy. None writes ``data`` as
        write() does.

        Raises
        ------
        ValueError
            If the table has more or fewer columns than ``columns`` has names. The
            file is left unchanged.
        """
        self.write(to_frame_with_columns(data, columns, self.key, self.storage_type))
