"""Configuration sections: data nodes, tasks, scenarios, job executions and core.

Each section keeps the values exactly as they were given (``ENV[NAME]`` templates
included) and resolves templates when an attribute is read, so that exporting writes
back what the user wrote. Unknown keyword arguments become custom properties, readable
as attributes (``data_node_config.default_data``) and exported with the section.

This module imports nothing from the entity, scheduler or notebook layers.
"""

from __future__ import annotations

import copy
import keyword
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any, ClassVar

from ..enums import Frequency, Scope
from ..exceptions import ConfigurationError
from . import templates

DEFAULT_ID = "default"


def check_identifier(kind: str, section_id: object) -> str:
    """Return ``section_id`` after checking that it can name a section.

    Ids become attribute names (``scenario.my_input``), so they must be Python
    identifiers that are not keywords.
    """
    if not isinstance(section_id, str) or not section_id.isidentifier():
        raise ConfigurationError(
            f"The {kind} id {section_id!r} is not a valid identifier; use letters, "
            "digits and underscores, not starting with a digit (for example "
            f"'my_{kind.replace(' ', '_')}')."
        )
    if keyword.iskeyword(section_id):
        raise ConfigurationError(
            f"The {kind} id {section_id!r} is a Python keyword; choose another name."
        )
    return section_id


class Section:
    """Base of all sections: an id plus custom properties readable as attributes."""

    name: ClassVar[str]
    _fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, id: str, **properties: Any) -> None:
        self.id = id
        self._properties: dict[str, Any] = dict(properties)

    @property
    def properties(self) -> dict[str, Any]:
        """Custom properties with their ``ENV[...]`` templates resolved."""
        where = f"section {self.name}.{self.id}"
        return {
            k: templates.resolve(v, where=where) for k, v in self._properties.items()
        }

    def __getattr__(self, item: str) -> Any:
        # Called only when normal lookup fails: custom properties read as attributes,
        # and None for a property that was never set, as in Taipy.
        if item.startswith("__") or item == "_properties":
            raise AttributeError(item)
        value = self.__dict__.get("_properties", {}).get(item)
        return templates.resolve(value, where=f"{self.name}.{self.id}.{item}")

    def __copy__(self) -> Section:
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone._properties = dict(self._properties)
        return clone

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.id!r})"


class DataNodeConfig(Section):
    """Configuration of a data node: where its data is stored and how it is shared.

    Parameters
    ----------
    id
        Identifier of the data node configuration; also the attribute name of the
        data node on its scenario.
    storage_type
        One of ``pickle`` (default), ``csv``, ``excel``, ``json``, ``parquet``,
        ``in_memory`` or ``generic``.
    scope
        ``Scope.SCENARIO`` (one data node per scenario, the default), ``Scope.CYCLE``
        (shared by the scenarios of a cycle) or ``Scope.GLOBAL`` (shared by all).
    validity_period
        How long written data stays valid; a skippable task whose outputs are older
        runs again. None means forever.
    **properties
        Storage properties (``default_data``, ``default_path``, ``encoding`` ...) and
        custom properties.
    """

    name = "DATA_NODE"

    def __init__(
        self,
        id: str,
        storage_type: str = "pickle",
        scope: Scope | str | None = None,
        validity_period: timedelta | str | None = None,
        **properties: Any,
    ) -> None:
        super().__init__(id, **properties)
        self._storage_type: Any = storage_type
        self._scope: Any = scope if scope is not None else Scope.SCENARIO
        self._validity_period: Any = validity_period

    @property
    def storage_type(self) -> str:
        value = templates.resolve(self._storage_type, where=f"{self.id}.storage_type")
        return str(value)

    @storage_type.setter
    def storage_type(self, value: str) -> None:
        self._storage_type = value

    @property
    def scope(self) -> Scope:
        value = templates.resolve(self._scope, where=f"{self.id}.scope")
        if isinstance(value, str):
            try:
                return Scope[value.upper()]
            except KeyError:
                raise ConfigurationError(
                    f"Scope {value!r} of data node {self.id!r} is not valid; use "
                    "SCENARIO, CYCLE or GLOBAL."
                ) from None
        return value  # type: ignore[no-any-return]

    @scope.setter
    def scope(self, value: Scope) -> None:
        self._scope = value

    @property
    def validity_period(self) -> timedelta | None:
        value = templates.resolve(self._validity_period, where=f"{self.id}.validity")
        if isinstance(value, str):
            return templates.parse_timedelta(value)
        return value  # type: ignore[no-any-return]

    @validity_period.setter
    def validity_period(self, value: timedelta | None) -> None:
        self._validity_period = value

    @property
    def raw_fields(self) -> dict[str, Any]:
        """Section fields as given, templates unresolved, for export."""
        return {
            "storage_type": self._storage_type,
            "scope": self._scope,
            "validity_period": self._validity_period,
        }


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple, set, frozenset)):
        return list(value)
    return [value]


class TaskConfig(Section):
    """Configuration of a task: a function with its input and output data nodes.

    Parameters
    ----------
    id
        Identifier of the task configuration.
    function
        The callable to run. Its positional arguments are the contents of the input
        data nodes in order; its return value is written to the outputs (a tuple or
        list is spread over several outputs).
    input, output
        A data node configuration or a list of them.
    skippable
        If True, the task is skipped when its outputs are valid and no input has
        been edited since they were written.
    """

    name = "TASK"

    def __init__(
        self,
        id: str,
        function: Callable[..., Any] | None,
        input: DataNodeConfig | Iterable[DataNodeConfig] | None = None,
        output: DataNodeConfig | Iterable[DataNodeConfig] | None = None,
        skippable: bool | str = False,
        **properties: Any,
    ) -> None:
        super().__init__(id, **properties)
        if function is not None and not callable(function):
            raise ConfigurationError(
                f"The function of task {id!r} must be callable, got {function!r} of "
                f"type {type(function).__name__}; pass the function itself, not the "
                "result of calling it."
            )
        self.function = function
        self._inputs: list[DataNodeConfig] = _check_data_node_configs(
            id, "input", input
        )
        self._outputs: list[DataNodeConfig] = _check_data_node_configs(
            id, "output", output
        )
        self._skippable: Any = skippable

    @property
    def input_configs(self) -> list[DataNodeConfig]:
        return list(self._inputs)

    @property
    def output_configs(self) -> list[DataNodeConfig]:
        return list(self._outputs)

    @property
    def inputs(self) -> list[DataNodeConfig]:
        return list(self._inputs)

    @property
    def outputs(self) -> list[DataNodeConfig]:
        return list(self._outputs)

    @property
    def skippable(self) -> bool:
        value = templates.resolve(self._skippable, where=f"{self.id}.skippable")
        if isinstance(value, str):
            return templates.convert_typed(value, "bool", where=f"{self.id}.skippable")  # type: ignore[no-any-return]
        return bool(value)

    @skippable.setter
    def skippable(self, value: bool) -> None:
        self._skippable = value


def _check_data_node_configs(
    task_id: str, role: str, value: Any
) -> list[DataNodeConfig]:
    configs = _as_list(value)
    for item in configs:
        if not isinstance(item, DataNodeConfig):
            raise ConfigurationError(
                f"The {role} {item!r} of task {task_id!r} is not a data node "
                "configuration; pass the object returned by "
                "Config.configure_data_node(...)."
            )
    return configs


class ScenarioConfig(Section):
    """Configuration of a scenario: its tasks, extra data nodes, cycle and sequences.

    Parameters
    ----------
    id
        Identifier of the scenario configuration.
    task_configs
        The tasks of the scenario; their data nodes come with them.
    additional_data_node_configs
        Data nodes that belong to the scenario without being read or written by any
        of its tasks.
    frequency
        If set, each scenario belongs to the cycle of that period that contains its
        creation date.
    comparators
        Maps a data node config id to a function (or list of functions) that compare
        the data of that node across scenarios.
    sequences
        Maps a sequence name to the list of task configurations it runs.
    """

    name = "SCENARIO"

    def __init__(
        self,
        id: str,
        task_configs: Iterable[TaskConfig] | None = None,
        additional_data_node_configs: Iterable[DataNodeConfig] | None = None,
        frequency: Frequency | str | None = None,
        comparators: Mapping[str, Callable[..., Any] | list[Callable[..., Any]]]
        | None = None,
        sequences: Mapping[str, Iterable[TaskConfig]] | None = None,
        **properties: Any,
    ) -> None:
        super().__init__(id, **properties)
        self._tasks: list[TaskConfig] = []
        for task in _as_list(task_configs):
            if not isinstance(task, TaskConfig):
                raise ConfigurationError(
                    f"Task {task!r} of scenario {id!r} is not a task configuration; "
                    "pass objects returned by Config.configure_task(...)."
                )
            self._tasks.append(task)
        self._additional: list[DataNodeConfig] = _check_data_node_configs(
            id, "additional data node", additional_data_node_configs
        )
        self._frequency: Any = frequency
        self.comparators: dict[str, list[Callable[..., Any]]] = {}
        for dn_id, functions in (comparators or {}).items():
            self.add_comparator(dn_id, functions)
        self.sequences: dict[str, list[TaskConfig]] = {}
        self.add_sequences(dict(sequences or {}))

    @property
    def task_configs(self) -> list[TaskConfig]:
        return list(self._tasks)

    @property
    def tasks(self) -> list[TaskConfig]:
        return list(self._tasks)

    @property
    def additional_data_node_configs(self) -> list[DataNodeConfig]:
        return list(self._additional)

    @property
    def additional_data_nodes(self) -> list[DataNodeConfig]:
        return list(self._additional)

    @property
    def data_node_configs(self) -> list[DataNodeConfig]:
        """Every data node configuration of the scenario, without repeats."""
        seen: dict[str, DataNodeConfig] = {}
        for task in self._tasks:
            for dn in [*task.input_configs, *task.output_configs]:
                seen.setdefault(dn.id, dn)
        for dn in self._additional:
            seen.setdefault(dn.id, dn)
        return list(seen.values())

    @property
    def frequency(self) -> Frequency | None:
        value = templates.resolve(self._frequency, where=f"{self.id}.frequency")
        if isinstance(value, str):
            try:
                return Frequency[value.upper()]
            except KeyError:
                raise ConfigurationError(
                    f"Frequency {value!r} of scenario {self.id!r} is not valid; use "
                    f"one of {', '.join(f.name for f in Frequency)}."
                ) from None
        return value  # type: ignore[no-any-return]

    @frequency.setter
    def frequency(self, value: Frequency | None) -> None:
        self._frequency = value

    def add_comparator(
        self,
        dn_config_id: str,
        comparator: Callable[..., Any] | list[Callable[..., Any]],
    ) -> None:
        """Add a function comparing the data of ``dn_config_id`` across scenarios."""
        functions = _as_list(comparator)
        for function in functions:
            if not callable(function):
                raise ConfigurationError(
                    f"Comparator {function!r} for data node {dn_config_id!r} of "
                    f"scenario {self.id!r} is not callable; pass a function taking "
                    "the data of each compared scenario."
                )
        self.comparators.setdefault(dn_config_id, []).extend(functions)

    def delete_comparator(self, dn_config_id: str) -> None:
        """Remove every comparator of ``dn_config_id``."""
        self.comparators.pop(dn_config_id, None)

    def add_sequences(self, sequences: Mapping[str, Iterable[TaskConfig]]) -> None:
        """Add sequences, each a name mapped to a list of task configurations."""
        for name, tasks in sequences.items():
            task_list = _as_list(tasks)
            for task in task_list:
                if not isinstance(task, TaskConfig):
                    raise ConfigurationError(
                        f"Sequence {name!r} of scenario {self.id!r} lists {task!r}, "
                        "which is not a task configuration."
                    )
            self.sequences[name] = task_list

    def remove_sequences(self, sequence_names: str | list[str]) -> None:
        """Remove the named sequences."""
        for name in _as_list(sequence_names):
            self.sequences.pop(name, None)


MODES = ("development", "standalone", "dask")


class JobConfig(Section):
    """Configuration of job execution.

    Parameters
    ----------
    mode
        ``development`` runs jobs synchronously in the kernel; ``standalone`` runs
        them on worker processes; ``dask`` runs them on a ``distributed`` cluster.
    max_nb_of_workers
        Number of worker processes in standalone mode (default 2).
    **properties
        ``dask_address`` (an existing scheduler address, or none for an embedded
        local cluster) and custom properties.
    """

    name = "JOB"

    def __init__(
        self,
        mode: str = "development",
        max_nb_of_workers: int | str | None = None,
        **properties: Any,
    ) -> None:
        super().__init__("JOB", **properties)
        self._mode: Any = mode
        self._max_nb_of_workers: Any = max_nb_of_workers

    @property
    def mode(self) -> str:
        value = templates.resolve(self._mode, where="JOB.mode")
        # None when a file's [JOB] table leaves the mode out.
        return str(value) if value is not None else "development"

    @mode.setter
    def mode(self, value: str) -> None:
        self._mode = value

    @property
    def max_nb_of_workers(self) -> int:
        value = templates.resolve(
            self._max_nb_of_workers, where="JOB.max_nb_of_workers"
        )
        if value is None:
            return 2
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigurationError(
                f"JOB.max_nb_of_workers = {value!r} is not a whole number. Set it to "
                "the number of worker processes, for example 2."
            ) from None

    @max_nb_of_workers.setter
    def max_nb_of_workers(self, value: int) -> None:
        self._max_nb_of_workers = value

    @property
    def is_development(self) -> bool:
        return self.mode == "development"

    @property
    def is_standalone(self) -> bool:
        return self.mode == "standalone"


DEFAULT_STORAGE_FOLDER = ".scenarios"


class CoreSection(Section):
    """Configuration of the engine itself: where entities and data are stored.

    Parameters
    ----------
    storage_folder
        Folder holding the SQLite store and data files, relative to ``root_folder``
        (default ``.scenarios``).
    root_folder
        Folder that relative storage paths start from (default the working
        directory).
    """

    name = "CORE"

    def __init__(
        self,
        storage_folder: str | None = None,
        root_folder: str | None = None,
        **properties: Any,
    ) -> None:
        super().__init__("CORE", **properties)
        self._storage_folder: Any = storage_folder
        self._root_folder: Any = root_folder

    @property
    def storage_folder(self) -> str:
        value = templates.resolve(self._storage_folder, where="CORE.storage_folder")
        return str(value) if value else DEFAULT_STORAGE_FOLDER

    @storage_folder.setter
    def storage_folder(self, value: str) -> None:
        self._storage_folder = value

    @property
    def root_folder(self) -> str:
        value = templates.resolve(self._root_folder, where="CORE.root_folder")
        return str(value) if value else "./"

    @root_folder.setter
    def root_folder(self, value: str) -> None:
        self._root_folder = value


def clone_section(section: Section) -> Section:
    """Return a shallow copy of ``section`` with its own property dict."""
    return copy.copy(section)
