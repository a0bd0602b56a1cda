"""Storage through functions that the user provides."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jupyter_scenarios.exceptions import ConfigurationError
from jupyter_scenarios.storage.base import StorageBackend


class GenericBackend(StorageBackend):
    """Read and write a data node's value with functions given as properties.

    The backend reads these data node properties:

    ``read_fct``, ``read_fct_args``
        read() returns ``read_fct(*read_fct_args)``.
    ``write_fct``, ``write_fct_args``
        write(data) calls ``write_fct(data, *write_fct_args)``.
    ``append_fct``, ``append_fct_args``
        append(data) calls ``append_fct(data, *append_fct_args)``. ``append_fct`` is
        optional, and ``append_fct_args`` defaults to ``write_fct_args``.

    Each ``*_args`` property is a list, and defaults to an empty one. The functions
    must be picklable, for example defined at the top level of a module, so that
    worker processes can receive them.

    The backend cannot see where the functions keep the data, so :attr:`path` is the
    ``path`` property or None, exists() returns whether ``read_fct`` is set, and
    delete() does nothing.
    """

    storage_type = "generic"

    @property
    def path(self) -> Path | None:
        """The ``path`` or ``default_path`` property, or None when neither is set."""
        configured = self.properties.get("path") or self.properties.get("default_path")
        return Path(configured) if configured else None

    def _function(self, name: str, operation: str, role: str) -> Callable[..., Any]:
        function = self.properties.get(name)
        if function is None:
            raise ConfigurationError(
                f"Data node {self.key!r} with storage type 'generic' cannot {operation} "
                f"because its {name!r} property is missing. Set {name!r} to a "
                f"function that {role}."
            )
        if not callable(function):
            raise ConfigurationError(
                f"Data node {self.key!r} has a {name!r} property that is not callable: "
                f"{function!r}. Set {name!r} to a function."
            )
        return function  # type: ignore[no-any-return]

    def _arguments(self, name: str, default: Sequence[Any] = ()) -> list[Any]:
        value = self.properties.get(name)
        if value is None:
            return list(default)
        if not isinstance(value, (list, tuple)):
            raise ConfigurationError(
                f"Data node {self.key!r} has an invalid {name!r} property: {value!r}. "
                f"Set {name!r} to a list of positional arguments, such as [{value!r}]."
            )
        return list(value)

    def read(self) -> Any:
        """Return ``read_fct(*read_fct_args)``."""
        read_fct = self._function("read_fct", "read", "returns the data")
        return read_fct(*self._arguments("read_fct_args"))

    def write(self, data: Any) -> None:
        """Call ``write_fct(data, *write_fct_args)``."""
        write_fct = self._function("write_fct", "write", "takes the data to write")
        write_fct(data, *self._arguments("write_fct_args"))

    def append(self, data: Any) -> None:
        """Call ``append_fct(data, *append_fct_args)``.

        Raises
        ------
        NotImplementedError
            If the ``append_fct`` property is not set.
        """
        append_fct = self.properties.get("append_fct")
        if append_fct is None:
            raise NotImplementedError(
                f"Data node {self.key!r} with storage type 'generic' cannot append "
                "because its 'append_fct' property is missing. Set 'append_fct' to a "
                "function that takes the data to append, or use write() instead."
            )
        append_fct = self._function("append_fct", "append", "takes the data to append")
        write_arguments = self._arguments("write_fct_args")
        append_fct(data, *self._arguments("append_fct_args", write_arguments))

    def exists(self) -> bool:
        """Return whether ``read_fct`` is set.

        The backend cannot check where the functions keep the data, so a set
        ``read_fct`` counts as stored data.
        """
        return self.properties.get("read_fct") is not None

    def delete(self) -> None:
        """Do nothing, because the data lives wherever the functions keep it."""
