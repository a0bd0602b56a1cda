"""Storage of a data node's value in the kernel's memory."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from jupyter_scenarios.storage._append import merge_appended
from jupyter_scenarios.storage.base import StorageBackend
from jupyter_scenarios.storage.errors import MissingDataError

# Guards _VALUES against concurrent access from the kernel's threads, and makes
# append(), a read followed by a write, atomic.
_VALUES_LOCK = threading.Lock()
_VALUES: dict[str, Any] = {}


class InMemoryBackend(StorageBackend):
    """Store a data node's value in a dict of this process, keyed by data node id.

    The value itself is stored, not a copy. Worker processes see a different dict, so
    a task that reads or writes such a data node must run in the kernel's process.
    ``append`` adds to a stored list, or updates a stored dict with a dict.
    """

    storage_type = "in_memory"
    reachable_from_workers = False

    @property
    def path(self) -> Path | None:
        """Always None: the value lives in memory only."""
        return None

    def read(self) -> Any:
        """Return the stored value."""
        with _VALUES_LOCK:
            try:
                return _VALUES[self.key]
            except KeyError:
                raise MissingDataError(
                    f"Data node {self.key!r} has no data in memory. Write the data "
                    "node first in this kernel. In-memory data is lost when the "
                    "kernel restarts and is not visible in worker processes."
                ) from None

    def write(self, data: Any) -> None:
        """Replace the stored value with ``data``."""
        with _VALUES_LOCK:
            _VALUES[self.key] = data

    def append(self, data: Any) -> None:
        """Add ``data`` to the stored list, or merge it into the stored dict.

        The stored list or dict is replaced by a new one, so that a reader holding the
        old one does not see it change. The rules are those of the json backend.
        """
        with _VALUES_LOCK:
            stored = _VALUES.get(self.key, [])
            _VALUES[self.key] = merge_appended(
                self.key, self.storage_type, stored, data
            )

    def exists(self) -> bool:
        """Return whether a value has been written and not deleted."""
        with _VALUES_LOCK:
            return self.key in _VALUES

    def delete(self) -> None:
        """Remove the stored value, if any."""
        with _VALUES_LOCK:
            _VALUES.pop(self.key, None)
