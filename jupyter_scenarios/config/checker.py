"""Checks of a whole configuration, collected as errors, warnings and infos.

:func:`check_layer` runs every check on a :class:`~.config.ConfigLayer` and returns an
:class:`IssueCollector`. Each issue names the section, the field and the value, and its
message states the fix. Errors are also logged, warnings and infos too at their
own levels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import networkx as nx

from ..enums import Frequency, Scope
from ..exceptions import ConfigurationError
from ..storage import STORAGE_TYPES
from ..storage._tabular import EXPOSED_TYPE_NAMES
from . import templates
from .config import ConfigLayer
from .sections import (
    DEFAULT_ID,
    MODES,
    DataNodeConfig,
    JobConfig,
    ScenarioConfig,
    TaskConfig,
)

logger = logging.getLogger(__name__)

IssueLevel = Literal["error", "warning", "info"]

#: Storage types whose data an ``exposed_type`` property converts.
TABULAR_STORAGE_TYPES = ("csv", "excel", "parquet")

_LOG_LEVELS = {"error": logging.ERROR, "warning": logging.WARNING, "info": logging.INFO}


@dataclass(frozen=True)
class Issue:
    """One problem found in a configuration.

    Attributes
    ----------
    level
        ``error`` (the configuration cannot run as is), ``warning`` (it runs but
        probably not as intended) or ``info``.
    section
        The section, as ``KIND.id`` (for example ``DATA_NODE.sales``) or ``JOB``.
    field
        The field or property of the section.
    value
        The offending value, as configured.
    message
        A sentence that names the section, field and value, and states the fix.
    """

    level: IssueLevel
    section: str
    field: str
    value: Any
    message: str

    def __str__(self) -> str:
        return f"{self.level.upper()}: {self.message}"


@dataclass
class IssueCollector:
    """The issues found by :func:`check_layer`, by level.

    ``len()`` counts all issues, and the collector is true when it contains any.
    Use :attr:`has_errors` to test for errors only.
    """

    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    infos: list[Issue] = field(default_factory=list)

    def add(
        self, level: IssueLevel, section: str, field: str, value: Any, message: str
    ) -> Issue:
        """Record an issue and return it."""
        issue = Issue(level, section, field, value, message)
        {"error": self.errors, "warning": self.warnings, "info": self.infos}[
            level
        ].append(issue)
        return issue

    @property
    def has_errors(self) -> bool:
        """Whether at least one error was found."""
        return bool(self.errors)

    @property
    def all(self) -> list[Issue]:
        """Errors, then warnings, then infos."""
        return [*self.errors, *self.warnings, *self.infos]

    def __iter__(self) -> Iterator[Issue]:
        return iter(self.all)

    def __len__(self) -> int:
        return len(self.errors) + len(self.warnings) + len(self.infos)

    def __bool__(self) -> bool:
        return len(self) > 0

    def raise_if_errors(self) -> None:
        """Raise :class:`ConfigurationError` listing the errors, if there are any."""
        if self.errors:
            lines = "\n".join(f"- {issue.message}" for issue in self.errors)
            raise ConfigurationError(
                f"The configuration has {_count(len(self.errors), 'error')}:\n{lines}"
            )

    def __str__(self) -> str:
        if not self:
            return "The configuration check found no issues."
        summary = ", ".join(
            [
                _count(len(self.errors), "error"),
                _count(len(self.warnings), "warning"),
                _count(len(self.infos), "info"),
            ]
        )
        lines = [f"The configuration check found {summary}."]
        lines.extend(str(issue) for issue in self.all)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"IssueCollector(errors={len(self.errors)}, "
            f"warnings={len(self.warnings)}, infos={len(self.infos)})"
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self) if cycle else str(self))


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def check_layer(layer: ConfigLayer) -> IssueCollector:
    """Check every section of ``layer`` and return the issues found.

    Parameters
    ----------
    layer
        The configuration to check, usually the applied one.

    Returns
    -------
    IssueCollector
        Errors, warnings and infos. Each issue is also logged at its level.
    """
    collector = IssueCollector()
    _Checker(layer, collector).run()
    for issue in collector:
        logger.log(_LOG_LEVELS[issue.level], "%s", issue.message)
    return collector


_UNREADABLE = object()


class _Checker:
    def __init__(self, layer: ConfigLayer, collector: IssueCollector) -> None:
        self.layer = layer
        self.issues = collector

    def run(self) -> None:
        mode = self.check_job()
        for data_node in self.layer.data_nodes.values():
            self.check_data_node(data_node, mode)
        for task in self.layer.tasks.values():
            self.check_task(task)
        for scenario in self.layer.scenarios.values():
            self.check_scenario(scenario)
        self.check_unused_data_nodes()

    def read(self, section: str, field: str, read: Callable[[], Any], raw: Any) -> Any:
        """Return ``read()``, or record an error and return a marker if it raises.

        Reading resolves ``ENV[NAME]`` templates and converts text, which raises
        :class:`ConfigurationError` for a missing variable or an invalid value.
        """
        try:
            return read()
        except (ConfigurationError, ValueError, TypeError) as error:
            self.issues.add(
                "error",
                section,
                field,
                raw,
                f"{section}.{field} = {raw!r} cannot be read: {error}",
            )
            return _UNREADABLE

    # -- job -----------------------------------------------------------------------

    def check_job(self) -> str | None:
        job = self.layer.job_config
        if job is None:
            return "development"
        section = JobConfig.name
        mode = self.read(section, "mode", lambda: job.mode, job._mode)
        if mode is not _UNREADABLE and mode not in MODES:
            self.issues.add(
                "error",
                section,
                "mode",
                job._mode,
                f"{section}.mode = {mode!r} is not a job execution mode. Set it to "
                f"one of {', '.join(repr(m) for m in MODES)}.",
            )
            mode = _UNREADABLE
        raw_workers = job._max_nb_of_workers
        if raw_workers is not None:
            workers = self.read(
                section,
                "max_nb_of_workers",
                lambda: templates.resolve(raw_workers, where="JOB.max_nb_of_workers"),
                raw_workers,
            )
            if workers is not _UNREADABLE and not _is_positive_int(workers):
                self.issues.add(
                    "error",
                    section,
                    "max_nb_of_workers",
                    raw_workers,
                    f"{section}.max_nb_of_workers = {workers!r} is not a whole "
                    "number of at least 1. Set it to the number of worker processes, "
                    "for example 2.",
                )
        return mode if isinstance(mode, str) else None

    # -- data nodes ----------------------------------------------------------------

    def check_data_node(self, data_node: DataNodeConfig, mode: str | None) -> None:
        section = f"{DataNodeConfig.name}.{data_node.id}"
        raw = data_node.raw_fields
        storage_type = self.read(
            section, "storage_type", lambda: data_node.storage_type, raw["storage_type"]
        )
        if storage_type is not _UNREADABLE and storage_type not in STORAGE_TYPES:
            self.issues.add(
                "error",
                section,
                "storage_type",
                raw["storage_type"],
                f"{section}.storage_type = {storage_type!r} is not a storage type. "
                f"Set it to one of {', '.join(repr(t) for t in STORAGE_TYPES)}.",
            )
        scope = self.read(section, "scope", lambda: data_node.scope, raw["scope"])
        if scope is not _UNREADABLE and not isinstance(scope, Scope):
            self.issues.add(
                "error",
                section,
                "scope",
                raw["scope"],
                f"{section}.scope = {scope!r} is not a Scope. Set it to "
                f"{', '.join(f'Scope.{s.name}' for s in Scope)}.",
            )
        validity = self.read(
            section,
            "validity_period",
            lambda: data_node.validity_period,
            raw["validity_period"],
        )
        if validity is not _UNREADABLE and not (
            validity is None or isinstance(validity, timedelta)
        ):
            self.issues.add(
                "error",
                section,
                "validity_period",
                raw["validity_period"],
                f"{section}.validity_period = {validity!r} is not a timedelta. Set "
                "it to a datetime.timedelta, or to None for data that never expires.",
            )
        if storage_type == "in_memory" and mode is not None and mode != "development":
            self.issues.add(
                "error",
                section,
                "storage_type",
                raw["storage_type"],
                f"{section}.storage_type = 'in_memory' cannot be used in {mode!r} "
                "job mode, because worker processes cannot read the kernel's memory. "
                "Use 'pickle' (the default) or another file storage type, or set "
                "JOB.mode to 'development'.",
            )
        if storage_type == "generic":
            self.check_generic(data_node, section)
        if storage_type in TABULAR_STORAGE_TYPES:
            self.check_exposed_type(data_node, section, storage_type)

    def check_generic(self, data_node: DataNodeConfig, section: str) -> None:
        properties = data_node._properties
        read_fct = properties.get("read_fct")
        write_fct = properties.get("write_fct")
        if read_fct is None and write_fct is None:
            self.issues.add(
                "error",
                section,
                "read_fct",
                None,
                f"{section} has storage type 'generic' but neither read_fct nor "
                "write_fct is set (both are None). Set read_fct to the function that "
                "returns the data and write_fct to the one that stores it.",
            )
        for name, function in (("read_fct", read_fct), ("write_fct", write_fct)):
            if function is not None and not callable(function):
                self.issues.add(
                    "error",
                    section,
                    name,
                    function,
                    f"{section}.{name} = {function!r} is not callable. Set it to a "
                    "function.",
                )

    def check_exposed_type(
        self, data_node: DataNodeConfig, section: str, storage_type: str
    ) -> None:
        raw = data_node._properties.get("exposed_type")
        if raw is None:
            return
        value = self.read(
            section,
            "exposed_type",
            lambda: templates.resolve(raw, where=f"{section}.exposed_type"),
            raw,
        )
        if value is _UNREADABLE:
            return
        # An Excel data node may give one exposed type per sheet.
        values = (
            list(value.values())
            if storage_type == "excel" and isinstance(value, dict)
            else [value]
        )
        for item in values:
            if isinstance(item, type) or item in EXPOSED_TYPE_NAMES:
                continue
            names = ", ".join(repr(name) for name in EXPOSED_TYPE_NAMES)
            self.issues.add(
                "error",
                section,
                "exposed_type",
                raw,
                f"{section}.exposed_type = {item!r} is not a valid exposed type for "
                f"storage type {storage_type!r}. Set it to {names}, or a class whose "
                "constructor takes one argument per column.",
            )

    # -- tasks ---------------------------------------------------------------------

    def check_task(self, task: TaskConfig) -> None:
        if task.id == DEFAULT_ID:
            return
        section = f"{TaskConfig.name}.{task.id}"
        if task.function is None:
            self.issues.add(
                "error",
                section,
                "function",
                None,
                f"{section}.function is not set (None). Set it to the function the "
                "task runs.",
            )
        elif not callable(task.function):
            self.issues.add(
                "error",
                section,
                "function",
                task.function,
                f"{section}.function = {task.function!r} is not callable. Set it to "
                "the function itself, not the result of calling it.",
            )
        for field_name, configs in (
            ("inputs", task._inputs),
            ("outputs", task._outputs),
        ):
            for config in configs:
                if not isinstance(config, DataNodeConfig):
                    self.issues.add(
                        "error",
                        section,
                        field_name,
                        config,
                        f"{section}.{field_name} contains {config!r}, which is not a "
                        "DataNodeConfig. Use the objects returned by "
                        "Config.configure_data_node().",
                    )
        self.read(section, "skippable", lambda: task.skippable, task._skippable)

    # -- scenarios -----------------------------------------------------------------

    def check_scenario(self, scenario: ScenarioConfig) -> None:
        section = f"{ScenarioConfig.name}.{scenario.id}"
        tasks = self.check_scenario_tasks(scenario, section)
        for config in scenario._additional:
            if not isinstance(config, DataNodeConfig):
                self.issues.add(
                    "error",
                    section,
                    "additional_data_nodes",
                    config,
                    f"{section}.additional_data_nodes contains {config!r}, which is "
                    "not a DataNodeConfig. Use the objects returned by "
                    "Config.configure_data_node().",
                )
        frequency = self.read(
            section, "frequency", lambda: scenario.frequency, scenario._frequency
        )
        if frequency is not _UNREADABLE and not (
            frequency is None or isinstance(frequency, Frequency)
        ):
            self.issues.add(
                "error",
                section,
                "frequency",
                scenario._frequency,
                f"{section}.frequency = {frequency!r} is not a Frequency. Set it to "
                f"{', '.join(f'Frequency.{f.name}' for f in Frequency)}, or None.",
            )
        self.check_writers(tasks, section)
        self.check_cycle(tasks, section)
        self.check_sequences(scenario, tasks, section)
        self.check_comparators(scenario, tasks, section)

    def check_scenario_tasks(
        self, scenario: ScenarioConfig, section: str
    ) -> list[TaskConfig]:
        tasks = []
        for task in scenario._tasks:
            if isinstance(task, TaskConfig):
                tasks.append(task)
                continue
            self.issues.add(
                "error",
                section,
                "tasks",
                task,
                f"{section}.tasks contains {task!r}, which is not a TaskConfig. Use "
                "the objects returned by Config.configure_task().",
            )
        return tasks

    def check_writers(self, tasks: list[TaskConfig], section: str) -> None:
        writers: dict[str, list[str]] = {}
        for task in tasks:
            for config in _data_nodes_only(task._outputs):
                writers.setdefault(config.id, []).append(task.id)
        for data_node_id, task_ids in writers.items():
            if len(task_ids) < 2:
                continue
            names = " and ".join(repr(task_id) for task_id in task_ids)
            self.issues.add(
                "warning",
                section,
                "tasks",
                task_ids,
                f"{section}.tasks has {names} all writing data node "
                f"{data_node_id!r}, so the last one to run decides its value. Give "
                "each task its own output data node.",
            )

    def check_cycle(self, tasks: list[TaskConfig], section: str) -> None:
        graph = nx.DiGraph()
        for task in tasks:
            graph.add_node(("task", task.id))
            for config in _data_nodes_only(task._inputs):
                graph.add_edge(("data node", config.id), ("task", task.id))
            for config in _data_nodes_only(task._outputs):
                graph.add_edge(("task", task.id), ("data node", config.id))
        try:
            cycle = nx.find_cycle(graph)
        except nx.NetworkXNoCycle:
            return
        steps = [f"{kind} {node_id!r}" for (kind, node_id), _ in cycle]
        steps.append(steps[0])
        task_ids = [node_id for (kind, node_id), _ in cycle if kind == "task"]
        self.issues.add(
            "error",
            section,
            "tasks",
            task_ids,
            f"{section}.tasks form a cycle: {' -> '.join(steps)}. A task cannot "
            "read, directly or through other tasks, a data node that it writes. "
            "Split that data node into an input and an updated copy.",
        )

    def check_sequences(
        self, scenario: ScenarioConfig, tasks: list[TaskConfig], section: str
    ) -> None:
        task_ids = {task.id for task in tasks}
        for name, sequence in scenario.sequences.items():
            for task in sequence:
                task_id = task.id if isinstance(task, TaskConfig) else None
                if task_id in task_ids:
                    continue
                self.issues.add(
                    "error",
                    section,
                    f"sequences.{name}",
                    task,
                    f"{section}.sequences[{name!r}] contains {task!r}, which is not "
                    f"a task of scenario {scenario.id!r}. Add the task to the "
                    "scenario's tasks, or remove it from the sequence.",
                )

    def check_comparators(
        self, scenario: ScenarioConfig, tasks: list[TaskConfig], section: str
    ) -> None:
        data_node_ids = {config.id for config in _scenario_data_nodes(scenario, tasks)}
        for data_node_id, functions in scenario.comparators.items():
            field_name = f"comparators.{data_node_id}"
            if data_node_id not in data_node_ids:
                self.issues.add(
                    "error",
                    section,
                    field_name,
                    data_node_id,
                    f"{section}.comparators has a comparator for {data_node_id!r}, "
                    f"which is not a data node of scenario {scenario.id!r}. Use the "
                    "id of one of its data nodes.",
                )
            for function in functions:
                if callable(function):
                    continue
                self.issues.add(
                    "error",
                    section,
                    field_name,
                    function,
                    f"{section}.comparators[{data_node_id!r}] contains {function!r}, "
                    "which is not callable. Use a function that takes the data of "
                    "each compared scenario.",
                )

    # -- whole configuration -------------------------------------------------------

    def check_unused_data_nodes(self) -> None:
        used: set[str] = set()
        for scenario in self.layer.scenarios.values():
            tasks = [task for task in scenario._tasks if isinstance(task, TaskConfig)]
            used.update(config.id for config in _scenario_data_nodes(scenario, tasks))
        for data_node_id in self.layer.data_nodes:
            if data_node_id == DEFAULT_ID or data_node_id in used:
                continue
            section = f"{DataNodeConfig.name}.{data_node_id}"
            self.issues.add(
                "info",
                section,
                "id",
                data_node_id,
                f"{section} (id {data_node_id!r}) is not used by any scenario, so no "
                "scenario will create it. Add it to a task or to a scenario's "
                "additional_data_node_configs, or remove it.",
            )


def _data_nodes_only(configs: list[Any]) -> list[DataNodeConfig]:
    return [config for config in configs if isinstance(config, DataNodeConfig)]


def _scenario_data_nodes(
    scenario: ScenarioConfig, tasks: list[TaskConfig]
) -> list[DataNodeConfig]:
    configs: list[DataNodeConfig] = []
    for task in tasks:
        configs.extend(_data_nodes_only([*task._inputs, *task._outputs]))
    configs.extend(_data_nodes_only(scenario._additional))
    return configs


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
