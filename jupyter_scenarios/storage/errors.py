"""Errors raised when a storage backend reads a data node, and advice for writes."""

from __future__ import annotations

import os

from jupyter_scenarios.exceptions import NoData, ScenarioError


class MissingDataError(NoData, FileNotFoundError):
    """No data is stored for a data node: its file or in-memory entry is missing.

    It is both a :class:`~jupyter_scenarios.exceptions.NoData` and a
    :class:`FileNotFoundError`, so callers may catch either.
    """


class UnreadableDataError(ScenarioError, ValueError):
    """A data node's file exists but its contents cannot be parsed as its storage type.

    The original parser error is chained as ``__cause__``.
    """


def write_failure_advice(path: str | os.PathLike[str] | None) -> str:
    """Return what to check when the file system refused to write ``path``.

    None stands for a generic data node whose write function chooses the file.
    """
    if path is None:
        return (
            "Check the free space and the permissions of the place that its write "
            "function writes to."
        )
    if os.path.isdir(path):
        return f"{os.path.abspath(path)} is a folder: give the data node a file path."
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.exists(folder) and not os.path.isdir(folder):
        return f"{folder} is a file, not a folder: give the data node another path."
    return f"Check the free space and the permissions of {folder}."
