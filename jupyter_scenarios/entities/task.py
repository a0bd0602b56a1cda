"""Tasks: a function with its input and output data nodes, inside a scenario.

The function is found at each submission, in this order: the function of the task's
configuration in the current ``Config``, the function imported from its recorded
``module.qualname``, and the copy pickled by value when the task was created (for
functions defined in a notebook, used by another process that shares the store).
For a configured function of ``__main__``, the object its name is bound to now runs,
so a function redefined in a notebook cell runs in existing scenarios even if the
configuration cell is not run again.
"""

from __future__ import annotations

import base64
import importlib
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import cloudpickle

from ..enums import Scope
from ..exceptions import ConfigurationError
from ._base import Entity, new_id, submit_entity
from ._values import PersistedProperties, decode_mapping, encode_mapping

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from ..store import Store
    from .data_node import DataNode
    from .submission import Submission


def function_reference(function: Callable[..., Any]) -> str:
    """Return ``module.qualname`` for ``function``."""
    module = getattr(function, "__module__", None) or "__main__"
    qualname = getattr(function, "__qualname__", None) or repr(function)
    return f"{module}.{qualname}"


def is_importable(function: Callable[..., Any]) -> bool:
    """Return whether ``function`` can be found again by importing its reference."""
    module_name = getattr(function, "__module__", None)
    qualname = getattr(function, "__qualname__", "")
    if not module_name or module_name == "__main__" or "<" in qualname:
        return False
    try:
        found: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        return False
    return found is function


def latest_main_definition(function: Callable[..., Any]) -> Callable[..., Any]:
    """Return the function now bound to ``function``'s name in ``__main__``.

    Running a notebook cell again binds its function names to new objects, while the
    configuration keeps the old ones. Taipy looks ``__main__`` functions up by name
    at each submission, so the newest definition runs; this does the same. Functions
    defined elsewhere, lambdas and closures are returned unchanged.
    """
    main = sys.modules.get("__main__")
    qualname = getattr(function, "__qualname__", "")
    if main is None or "<" in qualname:
        return function
    if getattr(function, "__globals__", None) is not vars(main):
        return function
    found: Any = main
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return found if callable(found) else function


def import_reference(reference: str) -> Callable[..., Any]:
    """Import ``module.qualname`` and return the object it names."""
    parts = reference.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            found: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for part in parts[split:]:
                found = getattr(found, part)
        except AttributeError:
            break
        return found  # type: ignore[no-any-return]
    raise ImportError(reference)


class Task(Entity):
    """A function with its input and output data nodes."""

    _kind = "task"
    _ID_PREFIX = "TASK_"

    def __init__(
        self,
        store: Store,
        *,
        config_id: str,
        function: Callable[..., Any],
        input_ids: list[str],
        output_ids: list[str],
        owner_id: str | None = None,
        parent_ids: set[str] | None = None,
        skippable: bool = False,
        properties: dict[str, Any] | None = None,
        id: str | None = None,
    ) -> None:
        super().__init__(store)
        self.id = id or new_id(self._ID_PREFIX, config_id)
        self._config_id = config_id
        self._input_ids = list(input_ids)
        self._output_ids = list(output_ids)
        self._owner_id = owner_id
        self._parent_ids = set(parent_ids or ())
        self._skippable = skippable
        self._properties = PersistedProperties(properties or {}, self._save)
        self._version = ""
        self._set_function(function)

    def _set_function(self, function: Callable[..., Any]) -> None:
        self._function_ref = function_reference(function)
        self._function_blob: str | None = None
        if is_importable(function):
            return
        try:
            blob = cloudpickle.dumps(function)
        except Exception as error:  # noqa: BLE001 - pickling raises many types
            # The task still runs in this kernel, in development mode.
            logger.warning(
                "The function %s of task %r cannot be pickled (%s: %s), so it runs "
                "only in this kernel in development mode: not in worker processes "
                "and not after a restart. Move what cannot be pickled (locks, open "
                "files, connections) into the function's body.",
                self._function_ref,
                self._config_id,
                type(error).__name__,
                error,
            )
            return
        self._function_blob = base64.b64encode(blob).decode("ascii")

    # -- attributes -------------------------------------------------------------------

    @property
    def config_id(self) -> str:
        return self._config_id

    @property
    def owner_id(self) -> str | None:
        return self._owner_id

    @property
    def parent_ids(self) -> set[str]:
        return set(self._parent_ids)

    @property
    def skippable(self) -> bool:
        return self._skippable

    @skippable.setter
    def skippable(self, value: bool) -> None:
        self._skippable = bool(value)
        self._save()

    @property
    def properties(self) -> dict[str, Any]:
        return self._properties

    @property
    def version(self) -> str:
        return self._version

    @property
    def input_ids(self) -> list[str]:
        return list(self._input_ids)

    @property
    def output_ids(self) -> list[str]:
        return list(self._output_ids)

    @property
    def input(self) -> dict[str, DataNode]:
        """Input data nodes by config id, in the function's argument order."""
        return self._nodes(self._input_ids)

    @property
    def output(self) -> dict[str, DataNode]:
        """Output data nodes by config id, in the order results are written."""
        return self._nodes(self._output_ids)

    @property
    def data_nodes(self) -> dict[str, DataNode]:
        return {**self.input, **self.output}

    def _nodes(self, ids: list[str]) -> dict[str, DataNode]:
        nodes = {}
        for dn_id in ids:
            node = self._store.get(dn_id)
            if node is not None:
                nodes[node.config_id] = node
        return nodes

    @property
    def scope(self) -> Scope:
        """The narrowest scope of the task's data nodes."""
        scopes = [dn.scope for dn in self.data_nodes.values()]
        return min(scopes) if scopes else Scope.GLOBAL

    @property
    def function_reference(self) -> str:
        return self._function_ref

    @property
    def function(self) -> Callable[..., Any]:
        """The callable that runs; see the module docstring for where it comes from."""
        from ..config import registry

        config = registry.applied.tasks.get(self._config_id)
        if config is not None and config.function is not None:
            return latest_main_definition(config.function)
        try:
            return import_reference(self._function_ref)
        except ImportError:
            pass
        if self._function_blob is not None:
            function: Callable[..., Any] = cloudpickle.loads(
                base64.b64decode(self._function_blob)
            )
            return function
        raise ConfigurationError(
            f"The function {self._function_ref!r} of task {self.id!r} cannot be "
            "found: it is not in the current configuration and cannot be imported. "
            f"Declare task {self._config_id!r} again with Config.configure_task, or "
            "make its module importable."
        )

    def submit(
        self,
        callbacks: list[Callable[..., Any]] | None = None,
        force: bool = False,
        wait: bool = False,
        timeout: float | None = None,
        **properties: Any,
    ) -> Submission:
        """Run this task alone; see ``jupyter_scenarios.submit``."""
        return submit_entity(self, callbacks, force, wait, timeout, properties)

    def get_parents(self) -> dict[str, set[Any]]:
        from ..api import get_parents

        return get_parents(self)

    def get_label(self) -> str:
        owner = self._store.get(self._owner_id) if self._owner_id else None
        prefix = f"{owner.get_simple_label()} > " if owner is not None else ""
        return prefix + self.get_simple_label()

    def get_simple_label(self) -> str:
        return str(self._properties.get("name") or self._config_id)

    def __getattr__(self, item: str) -> Any:
        if item.startswith("_"):
            raise AttributeError(item)
        for node in self.data_nodes.values():
            if node.config_id == item:
                return node
        properties = self.__dict__.get("_properties", {})
        if item in properties:
            return properties[item]
        raise AttributeError(
            f"Task {self.__dict__.get('id')!r} has no data node, attribute or "
            f"property {item!r}"
        )

    # -- persistence ------------------------------------------------------------------

    def _to_doc(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "config_id": self._config_id,
            "function_ref": self._function_ref,
            "function_blob": self._function_blob,
            "input_ids": self._input_ids,
            "output_ids": self._output_ids,
            "owner_id": self._owner_id,
            "parent_ids": sorted(self._parent_ids),
            "skippable": self._skippable,
            "properties": encode_mapping(self._properties),
            "version": self._version,
        }

    def _load_doc(self, doc: dict[str, Any]) -> None:
        self._config_id = doc["config_id"]
        self._function_ref = doc["function_ref"]
        self._function_blob = doc.get("function_blob")
        self._input_ids = list(doc["input_ids"])
        self._output_ids = list(doc["output_ids"])
        self._owner_id = doc["owner_id"]
        self._parent_ids = set(doc["parent_ids"])
        self._skippable = doc["skippable"]
        self._properties = PersistedProperties(
            decode_mapping(doc["properties"]), self._save
        )
        self._version = doc.get("version", "")

    @classmethod
    def _from_doc(cls, store: Store, doc: dict[str, Any]) -> Task:
        task = cls.__new__(cls)
        Entity.__init__(task, store)
        task.id = doc["id"]
        task._load_doc(doc)
        return task
