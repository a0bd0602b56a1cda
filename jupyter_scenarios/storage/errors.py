"""Errors raised when a storage backend reads a data node."""

from __future__ import annotations

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
