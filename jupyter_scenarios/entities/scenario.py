"""Scenarios and their sequences.

A scenario is an instance of a scenario configuration: its own tasks and data nodes
(plus the shared ones of CYCLE and GLOBAL scope), an optional cycle, tags, a primary
flag and named sequences. A sequence is a named subset of the scenario's tasks that can
be submitted alone; sequences are stored inside their scenario.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from ..exceptions import NonExistingSequence
from ..reasons import ReasonCollection, unready_inputs
from ._base import Entity, from_iso, new_id, submit_entity, to_iso
from ._values import PersistedProperties, decode_mapping, encode_mapping

if TYPE_CHECKING:
    from ..store import Store
    from .cycle import Cycle
    from .data_node import DataNode
    from .submission import Submission
    from .task import Task

SEQUENCE_PREFIX = "SEQUENCE_"

#: (callback, params) pairs subscribed to every scenario through
#: ``subscribe_scenario(callback)``; kept in memory for the life of the process.
ALL_SCENARIO_SUBSCRIBERS: list[tuple[Callable[..., Any], list[Any]]] = []


def sequence_id(name: str, scenario_id: str) -> str:
    return f"{SEQUENCE_PREFIX}{name}_{scenario_id}"


def _read_and_written(tasks: Iterable[Task]) -> tuple[set[DataNode], set[DataNode]]:
    """Return the data nodes that ``tasks`` read and those that they write."""
    read: set[DataNode] = set()
    written: set[DataNode] = set()
    for task in tasks:
        read.update(task.input.values())
        written.update(task.output.values())
    return read, written


class _TaskGraph:
    """The data node roles of a scenario's or sequence's task graph, as in Taipy.

    Additional data nodes belong to no task, so they have no role.
    """

    @property
    def tasks(self) -> dict[str, Task]:
        raise NotImplementedError

    def get_inputs(self) -> set[DataNode]:
        """Return the data nodes that some task reads and no task writes."""
        read, written = _read_and_written(self.tasks.values())
        return read - written

    def get_outputs(self) -> set[DataNode]:
        """Return the data nodes that some task writes and no task reads."""
        read, written = _read_and_written(self.tasks.values())
        return written - read

    def get_intermediate(self) -> set[DataNode]:
        """Return the data nodes that one task writes and another reads."""
        read, written = _read_and_written(self.tasks.values())
        return read & written

    def is_ready_to_run(self) -> ReasonCollection:
        """Check that every input (see ``get_inputs``) is written and not being edited.

        Returns
        -------
        ReasonCollection
            True when the tasks can run now; otherwise it names each input in the
            way ("my_input is not written.", "my_input is being edited.").
        """
        return unready_inputs(self.get_inputs())

    def data_nodes_being_edited(self) -> set[DataNode]:
        """Return the data nodes of the tasks that are locked by an edit."""
        read, written = _read_and_written(self.tasks.values())
        return {node for node in read | written if node.edit_in_progress}


class Scenario(_TaskGraph, Entity):
    """A set of tasks and data nodes created from a scenario configuration.

    Data nodes, tasks and sequences are also attributes named by their config id or
    name: ``scenario.my_input.read()``.
    """

    _kind = "scenario"
    _ID_PREFIX = "SCENARIO_"

    def __init__(
        self,
        store: Store,
        *,
        config_id: str,
        task_ids: list[str],
        additional_data_node_ids: list[str],
        creation_date: datetime | None = None,
        name: str | None = None,
        cycle_id: str | None = None,
        properties: dict[str, Any] | None = None,
        id: str | None = None,
    ) -> None:
        super().__init__(store)
        self.id = id or new_id(self._ID_PREFIX, config_id)
        self._config_id = config_id
        self._task_ids = list(task_ids)
        self._additional_data_node_ids = list(additional_data_node_ids)
        self._creation_date = creation_date or datetime.now()
        self._name = name
        self._cycle_id = cycle_id
        self._properties = PersistedProperties(properties or {}, self._save)
        self._is_primary = False
        self._tags: set[str] = set()
        # name -> {"task_ids": [...], "properties": {...}}
        self._sequences: dict[str, dict[str, Any]] = {}
        self._version = ""
        self._init_runtime()

    def _init_runtime(self) -> None:
        # (callback, params) pairs notified of every job status change of this
        # scenario; kept in memory only, like any function given at run time.
        self._subscribers: list[tuple[Callable[..., Any], list[Any]]] = []

    # -- attributes -------------------------------------------------------------------

    @property
    def config_id(self) -> str:
        return self._config_id

    @property
    def creation_date(self) -> datetime:
        return self._creation_date

    @property
    def name(self) -> str | None:
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        self._name = value
        self._save()

    @property
    def properties(self) -> dict[str, Any]:
        return self._properties

    @property
    def is_primary(self) -> bool:
        return self._is_primary

    @property
    def tags(self) -> set[str]:
        return set(self._tags)

    @property
    def version(self) -> str:
        return self._version

    @property
    def cycle(self) -> Cycle | None:
        return self._store.get(self._cycle_id) if self._cycle_id else None

    @property
    def owner_id(self) -> str | None:
        return self._cycle_id

    @property
    def subscribers(self) -> list[tuple[Callable[..., Any], list[Any]]]:
        return list(self._subscribers)

    @property
    def tasks(self) -> dict[str, Task]:
        """Tasks by config id."""
        tasks = (self._store.get(task_id) for task_id in self._task_ids)
        return {task.config_id: task for task in tasks if task is not None}

    @property
    def task_ids(self) -> list[str]:
        return list(self._task_ids)

    @property
    def additional_data_nodes(self) -> dict[str, DataNode]:
        nodes = (self._store.get(dn_id) for dn_id in self._additional_data_node_ids)
        return {node.config_id: node for node in nodes if node is not None}

    @property
    def data_nodes(self) -> dict[str, DataNode]:
        """Every data node of the scenario by config id."""
        nodes: dict[str, DataNode] = {}
        for task in self.tasks.values():
            nodes.update(task.data_nodes)
        nodes.update(self.additional_data_nodes)
        return nodes

    @property
    def sequences(self) -> dict[str, Sequence]:
        return {name: Sequence(self, name) for name in self._sequences}

    # -- submission -----------------------------------------------------------------

    def submit(
        self,
        callbacks: list[Callable[..., Any]] | None = None,
        force: bool = False,
        wait: bool = False,
        timeout: float | None = None,
        **properties: Any,
    ) -> Submission:
        """Run every task of the scenario; see ``jupyter_scenarios.submit``."""
        return submit_entity(self, callbacks, force, wait, timeout, properties)

    def subscribe(
        self, callback: Callable[..., Any], params: list[Any] | None = None
    ) -> None:
        """Call ``callback(*params, scenario, job)`` on each job status change."""
        self._subscribers.append((callback, list(params or [])))

    def unsubscribe(
        self, callback: Callable[..., Any], params: list[Any] | None = None
    ) -> None:
        """Remove a subscription added by ``subscribe``; raise ValueError if absent."""
        for index, (known, known_params) in enumerate(self._subscribers):
            if known == callback and (params is None or known_params == list(params)):
                del self._subscribers[index]
                return
        raise ValueError(
            f"{callback!r} is not subscribed to scenario {self.id!r}; nothing to "
            "unsubscribe."
        )

    # -- tags -------------------------------------------------------------------------

    def add_tag(self, tag: str) -> None:
        from ..api import tag as tag_scenario

        tag_scenario(self, tag)

    def remove_tag(self, tag: str) -> None:
        self._tags.discard(tag)
        self._save()

    def has_tag(self, tag: str) -> bool:
        return tag in self._tags

    def _set_primary(self, value: bool) -> None:
        self._is_primary = value
        self._save()

    def _set_tags(self, tags: set[str]) -> None:
        self._tags = set(tags)
        self._save()

    def is_deletable(self) -> bool:
        """Return whether ``tp.delete`` would delete the scenario now.

        See ``jupyter_scenarios.is_deletable``, which this calls.
        """
        from ..deletion import is_deletable

        return is_deletable(self)

    # -- sequences ----------------------------------------------------------------------

    def add_sequence(
        self,
        name: str,
        tasks: Iterable[Task | str],
        properties: dict[str, Any] | None = None,
    ) -> Sequence:
        """Add (or replace) a sequence made of some of this scenario's tasks."""
        task_ids = []
        own = set(self._task_ids)
        for task in tasks:
            task_id = task if isinstance(task, str) else task.id
            if task_id not in own:
                by_config = {t.config_id: t.id for t in self.tasks.values()}
                if task_id in by_config:
                    task_id = by_config[task_id]
                else:
                    raise ValueError(
                        f"Task {task_id!r} is not part of scenario {self.id!r}; a "
                        "sequence can only hold tasks of its own scenario."
                    )
            task_ids.append(task_id)
        from ..graph import check_acyclic

        # Every id in task_ids was checked above against this scenario's tasks.
        stored_tasks = [self._store.get(task_id) for task_id in task_ids]
        check_acyclic(name, cast("list[Task]", stored_tasks))
        self._sequences[name] = {
            "task_ids": task_ids,
            "properties": dict(properties or {}),
        }
        self._save()
        for task_id in task_ids:
            task = cast("Task", self._store.get(task_id))
            task._parent_ids.add(sequence_id(name, self.id))
            task._save()
        return Sequence(self, name)

    def add_sequences(self, sequences: dict[str, Iterable[Task | str]]) -> None:
        """Add several sequences, each a name mapped to tasks."""
        for name, tasks in sequences.items():
            self.add_sequence(name, tasks)

    def remove_sequence(self, name: str) -> None:
        """Remove the sequence called ``name``."""
        if name not in self._sequences:
            raise NonExistingSequence(
                f"Scenario {self.id!r} has no sequence {name!r}; its sequences are "
                f"{sorted(self._sequences) or 'none'}."
            )
        removed = self._sequences.pop(name)
        for task_id in removed["task_ids"]:
            task = self._store.get(task_id)
            if task is not None:
                task._parent_ids.discard(sequence_id(name, self.id))
                task._save()
        self._save()

    def remove_sequences(self, names: list[str]) -> None:
        for name in names:
            self.remove_sequence(name)

    def rename_sequence(self, old_name: str, new_name: str) -> None:
        """Give the sequence ``old_name`` the name ``new_name``."""
        if old_name not in self._sequences:
            raise NonExistingSequence(
                f"Scenario {self.id!r} has no sequence {old_name!r}."
            )
        entry = self._sequences[old_name]
        self.remove_sequence(old_name)
        self.add_sequence(new_name, entry["task_ids"], entry["properties"])

    # -- labels and lookup --------------------------------------------------------------

    def get_label(self) -> str:
        return self.get_simple_label()

    def get_simple_label(self) -> str:
        return self._name or self._config_id

    def __getattr__(self, item: str) -> Any:
        if item.startswith("_"):
            raise AttributeError(item)
        nodes = self.data_nodes
        if item in nodes:
            return nodes[item]
        tasks = self.tasks
        if item in tasks:
            return tasks[item]
        sequences = self.__dict__.get("_sequences", {})
        if item in sequences:
            return Sequence(self, item)
        properties = self.__dict__.get("_properties", {})
        if item in properties:
            return properties[item]
        if not nodes and not tasks and self._was_deleted():
            raise AttributeError(
                f"Scenario {self.__dict__.get('id')!r} has no {item!r} any more: it "
                "was deleted (tp.delete or tp.clean_all_entities). Create a new one "
                "with tp.create_scenario()."
            )
        raise AttributeError(
            f"Scenario {self.__dict__.get('id')!r} has no data node, task, sequence "
            f"or property {item!r}; its data nodes are {sorted(nodes)} and its tasks "
            f"{sorted(tasks)}."
        )

    def _was_deleted(self) -> bool:
        store = self.__dict__.get("_store")
        scenario_id = self.__dict__.get("id")
        if store is None or scenario_id is None:
            return False
        try:
            return store.get(scenario_id) is None
        except Exception:  # noqa: BLE001 - a closed store: keep the general message
            return False

    def __repr__(self) -> str:
        return f"Scenario({self.id!r})"

    # -- persistence --------------------------------------------------------------------

    def _to_doc(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "config_id": self._config_id,
            "task_ids": self._task_ids,
            "additional_data_node_ids": self._additional_data_node_ids,
            "creation_date": to_iso(self._creation_date),
            "name": self._name,
            "cycle_id": self._cycle_id,
            "properties": encode_mapping(self._properties),
            "is_primary": self._is_primary,
            "tags": sorted(self._tags),
            "sequences": {
                name: {
                    "task_ids": entry["task_ids"],
                    "properties": encode_mapping(entry["properties"]),
                }
                for name, entry in self._sequences.items()
            },
            "version": self._version,
        }

    def _load_doc(self, doc: dict[str, Any]) -> None:
        self._config_id = doc["config_id"]
        self._task_ids = list(doc["task_ids"])
        self._additional_data_node_ids = list(doc["additional_data_node_ids"])
        self._creation_date = from_iso(doc["creation_date"])  # type: ignore[assignment]
        self._name = doc.get("name")
        self._cycle_id = doc.get("cycle_id")
        self._properties = PersistedProperties(
            decode_mapping(doc["properties"]), self._save
        )
        self._is_primary = doc["is_primary"]
        self._tags = set(doc["tags"])
        self._sequences = {
            name: {
                "task_ids": list(entry["task_ids"]),
                "properties": decode_mapping(entry["properties"]),
            }
            for name, entry in doc["sequences"].items()
        }
        self._version = doc.get("version", "")

    @classmethod
    def _from_doc(cls, store: Store, doc: dict[str, Any]) -> Scenario:
        scenario = cls.__new__(cls)
        Entity.__init__(scenario, store)
        scenario.id = doc["id"]
        scenario._load_doc(doc)
        scenario._init_runtime()
        return scenario


class Sequence(_TaskGraph):
    """A named subset of a scenario's tasks that can be submitted alone."""

    def __init__(self, scenario: Scenario, name: str) -> None:
        if name not in scenario._sequences:
            raise NonExistingSequence(
                f"Scenario {scenario.id!r} has no sequence {name!r}."
            )
        self._scenario = scenario
        self.name = name
        self.id = sequence_id(name, scenario.id)

    @property
    def owner_id(self) -> str:
        return self._scenario.id

    @property
    def scenario(self) -> Scenario:
        return self._scenario

    @property
    def properties(self) -> dict[str, Any]:
        return self._scenario._sequences[self.name]["properties"]  # type: ignore[no-any-return]

    @property
    def task_ids(self) -> list[str]:
        return list(self._scenario._sequences[self.name]["task_ids"])

    @property
    def tasks(self) -> dict[str, Task]:
        store = self._scenario._store
        tasks = (store.get(task_id) for task_id in self.task_ids)
        return {task.config_id: task for task in tasks if task is not None}

    @property
    def data_nodes(self) -> dict[str, DataNode]:
        nodes: dict[str, DataNode] = {}
        for task in self.tasks.values():
            nodes.update(task.data_nodes)
        return nodes

    def submit(
        self,
        callbacks: list[Callable[..., Any]] | None = None,
        force: bool = False,
        wait: bool = False,
        timeout: float | None = None,
        **properties: Any,
    ) -> Submission:
        """Run the sequence's tasks; see ``jupyter_scenarios.submit``."""
        return submit_entity(self, callbacks, force, wait, timeout, properties)

    def get_label(self) -> str:
        return f"{self._scenario.get_simple_label()} > {self.name}"

    def get_simple_label(self) -> str:
        return self.name

    def __getattr__(self, item: str) -> Any:
        if item.startswith("_"):
            raise AttributeError(item)
        nodes = self.data_nodes
        if item in nodes:
            return nodes[item]
        tasks = self.tasks
        if item in tasks:
            return tasks[item]
        raise AttributeError(f"Sequence {self.id!r} has no data node or task {item!r}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"Sequence({self.id!r})"
