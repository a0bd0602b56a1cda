"""Storage of any Python object in a pickle file."""

from __future__ import annotations

import pickle
from typing import Any

import cloudpickle

from jupyter_scenarios.storage.atomic import atomic_path
from jupyter_scenarios.storage.base import StorageBackend

#: Pickle protocol of the files written. Protocol 5 needs Python 3.8 or later.
PICKLE_PROTOCOL = 5
# With an explicit buffer size, open() skips two system calls per file (the
# terminal check and the block size query). A tiny job opens two files.
_BUFFER_SIZE = 64 * 1024

# Errors that pickle.load raises on a file that is truncated or not a pickle, or that
# refers to a class or module missing from this process. OverflowError comes from a
# garbage frame length.
_UNPICKLING_ERRORS: tuple[type[Exception], ...] = (
    pickle.UnpicklingError,
    EOFError,
    OverflowError,
    ValueError,
    TypeError,
    AttributeError,
    ImportError,
    IndexError,
    KeyError,
)


class PickleBackend(StorageBackend):
    """Store a data node's value in a pickle file.

    The value is written with cloudpickle, using pickle protocol 5. Objects defined in
    importable modules are pickled by reference, exactly as :mod:`pickle` does.
    Functions and classes defined in a notebook are pickled by value, so that a worker
    process can load them. :func:`pickle.load` reads every file, but a file that
    contains objects pickled by value needs cloudpickle installed where it is loaded.

    ``append`` is not supported.
    """

    storage_type = "pickle"
    extension = ".p"

    def read(self) -> Any:
        """Load and return the pickled value."""
        path = self._require_path()
        with (
            self._translate_read_errors(path, _UNPICKLING_ERRORS),
            open(path, "rb", buffering=_BUFFER_SIZE) as file,
        ):
            return pickle.load(file)

    def write(self, data: Any) -> None:
        """Pickle ``data`` and replace the file with it atomically."""
        path = self._require_path()
        with (
            atomic_path(path) as temp,
            open(temp, "wb", buffering=_BUFFER_SIZE) as file,
        ):
            cloudpickle.dump(data, file, protocol=PICKLE_PROTOCOL)
