"""The ``Config`` registry: every section declared by code, magics or files.

``Config`` mirrors Taipy's class of the same name: ``configure_*`` functions add or
replace sections, ``export``/``backup`` write TOML, ``load``/``override`` read it, and
``check`` collects issues. All state lives in one ``ConfigRegistry`` instance per
process; ``Config`` only delegates to it.

Two layers are kept. The code layer contains what ``configure_*`` calls declared and is
what ``export`` writes. The file layer holds sections read by ``override``; a file
section replaces the code section of the same id, and the file's job and core fields
replace the code's ones. ``Config.<attribute>`` always reads the applied result.

Calling a ``configure_*`` function again with an id that exists replaces the section,
so notebook cells can be re-run. Existing scenarios keep the data nodes and tasks they
were created with; a task's function is looked up through its config id each time the
task is submitted, so a redefined function runs in existing scenarios too.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..enums import Frequency, Scope
from ..exceptions import ConfigurationError, ConfigurationUpdateBlocked
from .sections import (
    DEFAULT_ID,
    CoreSection,
    DataNodeConfig,
    JobConfig,
    ScenarioConfig,
    Section,
    TaskConfig,
    check_identifier,
)
from .templates import is_template

if TYPE_CHECKING:
    from .checker import IssueCollector


class ConfigLayer:
    """One set of sections: data nodes, tasks, scenarios, job and core."""

    def __init__(self) -> None:
        self.data_nodes: dict[str, DataNodeConfig] = {}
        self.tasks: dict[str, TaskConfig] = {}
        self.scenarios: dict[str, ScenarioConfig] = {}
        self.job_config: JobConfig | None = None
        self.core: CoreSection | None = None
        self.global_properties: dict[str, Any] = {}

    def copy(self) -> ConfigLayer:
        clone = ConfigLayer()
        clone.data_nodes = dict(self.data_nodes)
        clone.tasks = dict(self.tasks)
        clone.scenarios = dict(self.scenarios)
        clone.job_config = self.job_config
        clone.core = self.core
        clone.global_properties = dict(self.global_properties)
        return clone


class ConfigRegistry:
    """Process-wide store of configuration layers."""

    def __init__(self) -> None:
        # Guards the layers and the blocked flag; any thread that configures or
        # reads the applied configuration takes it.
        self.lock = threading.RLock()
        self.code = ConfigLayer()
        self.file: ConfigLayer | None = None
        self.blocked = False
        #: Incremented on each change; lets caches notice a new configuration.
        self.generation = 0
        self._applied: ConfigLayer | None = None
        self._install_defaults()

    def _install_defaults(self) -> None:
        self.code.data_nodes[DEFAULT_ID] = DataNodeConfig(DEFAULT_ID)
        self.code.tasks[DEFAULT_ID] = TaskConfig(DEFAULT_ID, None)
        self.code.scenarios[DEFAULT_ID] = ScenarioConfig(DEFAULT_ID)
        self.code.job_config = JobConfig()
        self.code.core = CoreSection()

    def reset(self) -> None:
        with self.lock:
            self.code = ConfigLayer()
            self.file = None
            self.blocked = False
            self._install_defaults()
            self._changed()

    def _changed(self) -> None:
        self.generation += 1
        self._applied = None

    def check_not_blocked(self) -> None:
        if self.blocked:
            raise ConfigurationUpdateBlocked(
                "The configuration cannot be changed while it is blocked: jobs "
                "running in worker processes read it and must not modify it. Change "
                "the configuration in the notebook or script that submits the jobs."
            )

    def update(self, change: Callable[[ConfigLayer], None]) -> None:
        with self.lock:
            self.check_not_blocked()
            change(self.code)
            self._changed()

    @property
    def applied(self) -> ConfigLayer:
        with self.lock:
            if self._applied is None:
                self._applied = self._merge()
            return self._applied

    def _merge(self) -> ConfigLayer:
        result = self.code.copy()
        if self.file is None:
            return result
        result.data_nodes.update(self.file.data_nodes)
        result.tasks.update(self.file.tasks)
        result.scenarios.update(self.file.scenarios)
        result.global_properties.update(self.file.global_properties)
        result.job_config = _merge_section(result.job_config, self.file.job_config)
        result.core = _merge_section(result.core, self.file.core)
        return result

    def replace_code_layer(self, layer: ConfigLayer) -> None:
        with self.lock:
            self.check_not_blocked()
            for kind, default in (
                ("data_nodes", DataNodeConfig(DEFAULT_ID)),
                ("tasks", TaskConfig(DEFAULT_ID, None)),
                ("scenarios", ScenarioConfig(DEFAULT_ID)),
            ):
                getattr(layer, kind).setdefault(DEFAULT_ID, default)
            layer.job_config = layer.job_config or JobConfig()
            layer.core = layer.core or CoreSection()
            self.code = layer
            self.file = None
            self._changed()

    def set_file_layer(self, layer: ConfigLayer | None) -> None:
        with self.lock:
            self.check_not_blocked()
            self.file = layer
            self._changed()


_SectionT = Any


def _merge_section(base: _SectionT, override: _SectionT) -> _SectionT:
    # Fields set in the file replace the code's; fields the file leaves unset (None)
    # keep the code's value.
    if override is None:
        return base
    if base is None:
        return override
    merged = copy.copy(base)
    for name, value in vars(override).items():
        if name == "_properties":
            merged._properties = {**base._properties, **value}
        elif name.startswith("_") and value is not None:
            setattr(merged, name, value)
    return merged


registry = ConfigRegistry()


def _default_data_node() -> DataNodeConfig:
    return registry.applied.data_nodes[DEFAULT_ID]


class _ConfigMeta(type):
    """Gives ``Config`` read-only class attributes over the applied configuration."""

    @property
    def data_nodes(cls) -> dict[str, DataNodeConfig]:
        return dict(registry.applied.data_nodes)

    @property
    def tasks(cls) -> dict[str, TaskConfig]:
        return dict(registry.applied.tasks)

    @property
    def scenarios(cls) -> dict[str, ScenarioConfig]:
        return dict(registry.applied.scenarios)

    @property
    def job_config(cls) -> JobConfig:
        job = registry.applied.job_config
        assert job is not None
        return job

    @property
    def core(cls) -> CoreSection:
        core = registry.applied.core
        assert core is not None
        return core

    @property
    def global_config(cls) -> dict[str, Any]:
        return dict(registry.applied.global_properties)

    @property
    def sections(cls) -> dict[str, dict[str, Section]]:
        applied = registry.applied
        return {
            DataNodeConfig.name: dict(applied.data_nodes),
            TaskConfig.name: dict(applied.tasks),
            ScenarioConfig.name: dict(applied.scenarios),
        }

    @property
    def unique_sections(cls) -> dict[str, Section]:
        applied = registry.applied
        assert applied.job_config is not None and applied.core is not None
        return {JobConfig.name: applied.job_config, CoreSection.name: applied.core}


class Config(metaclass=_ConfigMeta):
    """Declare, read, check, export and load the configuration.

    Every method is a class method, as in Taipy: ``Config.configure_data_node(...)``.
    """

    # -- data nodes ---------------------------------------------------------------

    @classmethod
    def configure_data_node(
        cls,
        id: str,
        storage_type: str | None = None,
        scope: Scope | None = None,
        validity_period: timedelta | None = None,
        **properties: Any,
    ) -> DataNodeConfig:
        """Declare a data node, or replace the one with the same id.

        Parameters
        ----------
        id
            Identifier; also the attribute name on the scenario.
        storage_type
            ``pickle`` (default), ``csv``, ``excel``, ``json``, ``parquet``,
            ``in_memory`` or ``generic``.
        scope
            Sharing scope; ``Scope.SCENARIO`` by default.
        validity_period
            How long written data stays valid for skippable tasks.
        **properties
            ``default_data``, ``default_path`` and the storage type's own settings.

        Returns
        -------
        DataNodeConfig
        """
        check_identifier("data node", id)
        default = _default_data_node()
        from ..storage import get_backend_class

        chosen_type = storage_type if storage_type is not None else default.storage_type
        if not is_template(chosen_type):
            get_backend_class(chosen_type)
        section = DataNodeConfig(
            id,
            storage_type=chosen_type,
            scope=scope if scope is not None else default.scope,
            validity_period=(
                validity_period
                if validity_period is not None
                else default.validity_period
            ),
            **{**default._properties, **properties},
        )
        where = f"data node {id!r}"
        _check_now(
            lambda: section.scope,
            section._scope,
            Scope,
            f"scope of {where}",
            "Scope.SCENARIO, Scope.CYCLE or Scope.GLOBAL",
        )
        _check_now(
            lambda: section.validity_period,
            section._validity_period,
            timedelta,
            f"validity_period of {where}",
            "a datetime.timedelta such as timedelta(days=1), text such as '1d', "
            "'2h30m' or '45s', or None for data that never expires",
        )
        return cls._add_data_node(section)

    @classmethod
    def _add_data_node(cls, section: DataNodeConfig) -> DataNodeConfig:
        def change(layer: ConfigLayer) -> None:
            replaced = section.id in layer.data_nodes
            layer.data_nodes[section.id] = section
            if replaced:
                _relink_data_node(layer, section)

        registry.update(change)
        return section

    @classmethod
    def configure_default_data_node(
        cls,
        storage_type: str = "pickle",
        scope: Scope | None = None,
        validity_period: timedelta | None = None,
        **properties: Any,
    ) -> DataNodeConfig:
        """Set the defaults that later data node configurations start from."""
        from ..storage import get_backend_class

        get_backend_class(storage_type)
        section = DataNodeConfig(
            DEFAULT_ID,
            storage_type,
            scope or Scope.SCENARIO,
            validity_period,
            **properties,
        )
        registry.update(lambda layer: layer.data_nodes.__setitem__(DEFAULT_ID, section))
        return section

    @classmethod
    def configure_pickle_data_node(
        cls,
        id: str,
        default_path: str | None = None,
        default_data: Any = None,
        scope: Scope | None = None,
        validity_period: timedelta | None = None,
        **properties: Any,
    ) -> DataNodeConfig:
        """Declare a data node stored as a pickle file."""
        extra = _without_none(default_path=default_path, default_data=default_data)
        return cls.configure_data_node(
            id, "pickle", scope, validity_period, **extra, **properties
        )

    @classmethod
    def configure_json_data_node(
        cls,
        id: str,
        default_path: str | None = None,
        encoding: str | None = None,
        encoder: type | None = None,
        decoder: type | None = None,
        scope: Scope | None = None,
        validity_period: timedelta | None = None,
        **properties: Any,
    ) -> DataNodeConfig:
        """Declare a data node stored as a JSON file."""
        extra = _without_none(
            default_path=default_path,
            encoding=encoding,
            encoder=encoder,
            decoder=decoder,
        )
        return cls.configure_data_node(
            id, "json", scope, validity_period, **extra, **properties
        )

    @classmethod
    def configure_csv_data_node(
        cls,
        id: str,
        default_path: str | None = None,
        encoding: str | None = None,
        has_header: bool | None = None,
        exposed_type: Any = None,
        scope: Scope | None = None,
        validity_period: timedelta | None = None,
        **properties: Any,
    ) -> DataNodeConfig:
        """Declare a data node stored as a CSV file (needs pandas)."""
        extra = _without_none(
            default_path=default_path,
            encoding=encoding,
            has_header=has_header,
            exposed_type=exposed_type,
        )
        return cls.configure_data_node(
            id, "csv", scope, validity_period, **extra, **properties
        )

    @classmethod
    def configure_excel_data_node(
        cls,
        id: str,
        default_path: str | None = None,
        has_header: bool | None = None,
        sheet_name: str | list[str] | None = None,
        exposed_type: Any = None,
        scope: Scope | None = None,
        validity_period: timedelta | None = None,
        **properties: Any,
    ) -> DataNodeConfig:
        """Declare a data node stored as an Excel workbook (needs pandas, openpyxl)."""
        extra = _without_none(
            default_path=default_path,
            has_header=has_header,
            sheet_name=sheet_name,
            exposed_type=exposed_type,
        )
        return cls.configure_data_node(
            id, "excel", scope, validity_period, **extra, **properties
        )

    @classmethod
    def configure_parquet_data_node(
        cls,
        id: str,
        default_path: str | None = None,
        engine: str | None = None,
        compression: str | None = None,
        read_kwargs: dict[str, Any] | None = None,
        write_kwargs: dict[str, Any] | None = None,
        exposed_type: Any = None,
        scope: Scope | None = None,
        validity_period: timedelta | None = None,
        **properties: Any,
    ) -> DataNodeConfig:
        """Declare a data node stored as a Parquet file (needs pandas, pyarrow)."""
        extra = _without_none(
            default_path=default_path,
            engine=engine,
            compression=compression,
            read_kwargs=read_kwargs,
            write_kwargs=write_kwargs,
            exposed_type=exposed_type,
        )
        return cls.configure_data_node(
            id, "parquet", scope, validity_period, **extra, **properties
        )

    @classmethod
    def configure_in_memory_data_node(
        cls,
        id: str,
        default_data: Any = None,
        scope: Scope | None = None,
        validity_period: timedelta | None = None,
        **properties: Any,
    ) -> DataNodeConfig:
        """Declare a data node kept in the kernel's memory (development mode only)."""
        extra = _without_none(default_data=default_data)
        return cls.configure_data_node(
            id, "in_memory", scope, validity_period, **extra, **properties
        )

    @classmethod
    def configure_generic_data_node(
        cls,
        id: str,
        read_fct: Callable[..., Any] | None = None,
        write_fct: Callable[..., Any] | None = None,
        read_fct_args: list[Any] | None = None,
        write_fct_args: list[Any] | None = None,
        scope: Scope | None = None,
        validity_period: timedelta | None = None,
        **properties: Any,
    ) -> DataNodeConfig:
        """Declare a data node read and written by user functions."""
        extra = _without_none(
            read_fct=read_fct,
            write_fct=write_fct,
            read_fct_args=read_fct_args,
            write_fct_args=write_fct_args,
        )
        return cls.configure_data_node(
            id, "generic", scope, validity_period, **extra, **properties
        )

    # -- tasks and scenarios ------------------------------------------------------

    @classmethod
    def configure_task(
        cls,
        id: str,
        function: Callable[..., Any] | None = None,
        input: DataNodeConfig | Iterable[DataNodeConfig] | None = None,
        output: DataNodeConfig | Iterable[DataNodeConfig] | None = None,
        skippable: bool = False,
        **properties: Any,
    ) -> TaskConfig:
        """Declare a task, or replace the one with the same id.

        Parameters
        ----------
        id
            Identifier of the task configuration.
        function
            The callable to run; it receives the input data in order.
        input, output
            A data node configuration or a list of them.
        skippable
            Skip the task when its outputs are valid and no input is newer.

        Returns
        -------
        TaskConfig
        """
        check_identifier("task", id)
        if function is None:
            raise ConfigurationError(
                f"Task {id!r} has no function; pass the callable to run, for example "
                f"Config.configure_task({id!r}, my_function, input_cfg, output_cfg)."
            )
        section = TaskConfig(id, function, input, output, skippable, **properties)
        # Text is read as a TOML file gives it, and other values count by their truth.
        _check_now(
            lambda: section.skippable,
            skippable,
            object,
            f"skippable setting of task {id!r}",
            "True or False",
        )

        def change(layer: ConfigLayer) -> None:
            replaced = section.id in layer.tasks
            layer.tasks[section.id] = section
            if replaced:
                _relink_task(layer, section)

        registry.update(change)
        return section

    @classmethod
    def configure_scenario(
        cls,
        id: str,
        task_configs: Iterable[TaskConfig] | None = None,
        additional_data_node_configs: Iterable[DataNodeConfig] | None = None,
        frequency: Frequency | None = None,
        comparators: Mapping[str, Callable[..., Any] | list[Callable[..., Any]]]
        | None = None,
        sequences: Mapping[str, Iterable[TaskConfig]] | None = None,
        **properties: Any,
    ) -> ScenarioConfig:
        """Declare a scenario, or replace the one with the same id.

        The task graph is checked here: a graph with a cycle raises an error that
        names the cycle.

        Returns
        -------
        ScenarioConfig
        """
        check_identifier("scenario", id)
        section = ScenarioConfig(
            id,
            task_configs,
            additional_data_node_configs,
            frequency,
            comparators,
            sequences,
            **properties,
        )
        _check_now(
            lambda: section.frequency,
            frequency,
            Frequency,
            f"frequency of scenario {id!r}",
            f"one of {', '.join(f'Frequency.{f.name}' for f in Frequency)}, or None",
        )
        from ..graph import check_acyclic

        check_acyclic(section.id, section.task_configs)
        registry.update(lambda layer: layer.scenarios.__setitem__(section.id, section))
        return section

    @classmethod
    def configure_job_executions(
        cls,
        mode: str | None = None,
        max_nb_of_workers: int | str | None = None,
        **properties: Any,
    ) -> JobConfig:
        """Choose how jobs run.

        Parameters
        ----------
        mode
            ``development`` (synchronous, in the kernel; the default), ``standalone``
            (worker processes) or ``dask`` (a ``distributed`` cluster).
        max_nb_of_workers
            Worker processes in standalone mode (default 2), at least 1.
        **properties
            ``dask_address``: address of an existing Dask scheduler.

        Returns
        -------
        JobConfig
        """
        from .sections import MODES

        current = Config.job_config
        chosen = mode if mode is not None else current._mode
        if (
            isinstance(chosen, str)
            and chosen not in MODES
            and not chosen.startswith("ENV[")
        ):
            from ..exceptions import ModeNotAvailable

            raise ModeNotAvailable(
                f"Job execution mode {chosen!r} is not available; use one of "
                f"{', '.join(MODES)}."
            )
        workers = (
            max_nb_of_workers
            if max_nb_of_workers is not None
            else current._max_nb_of_workers
        )
        if not _is_worker_count(workers):
            raise ConfigurationError(
                f"max_nb_of_workers must be a whole number of at least 1, got "
                f"{workers!r}. Give the number of worker processes, for example "
                "max_nb_of_workers=2, or an ENV[NAME] template."
            )
        section = JobConfig(chosen, workers, **{**current._properties, **properties})
        registry.update(lambda layer: setattr(layer, "job_config", section))
        return section

    @classmethod
    def configure_core(
        cls,
        root_folder: str | None = None,
        storage_folder: str | None = None,
        **properties: Any,
    ) -> CoreSection:
        """Set where entities and data files are stored.

        Parameters
        ----------
        root_folder
            Folder that relative storage paths start from (default the working
            directory).
        storage_folder
            Folder for the SQLite store and data files (default ``.scenarios``),
            relative to ``root_folder`` unless absolute.

        Returns
        -------
        CoreSection
        """
        current = Config.core
        section = CoreSection(
            storage_folder if storage_folder is not None else current._storage_folder,
            root_folder if root_folder is not None else current._root_folder,
            **{**current._properties, **properties},
        )
        registry.update(lambda layer: setattr(layer, "core", section))
        return section

    @classmethod
    def configure_global_app(cls, **properties: Any) -> dict[str, Any]:
        """Set global properties, available as ``Config.global_config``."""
        registry.update(lambda layer: layer.global_properties.update(properties))
        return Config.global_config

    # -- files ---------------------------------------------------------------------

    @classmethod
    def export(cls, filename: str | Path) -> None:
        """Write the configuration declared in code to a TOML file.

        Functions defined in a notebook or in ``__main__`` are written to a module
        beside the file so that the file loads in another process.
        """
        from .toml_format import write_layer

        with registry.lock:
            write_layer(registry.code, Path(filename))

    @classmethod
    def backup(cls, filename: str | Path) -> None:
        """Write the applied configuration (code plus overriding file) to TOML."""
        from .toml_format import write_layer

        with registry.lock:
            write_layer(registry.applied, Path(filename))

    @classmethod
    def load(cls, filename: str | Path) -> None:
        """Replace the configuration declared in code with the one in ``filename``."""
        from .toml_format import read_layer

        registry.replace_code_layer(read_layer(Path(filename)))

    restore = load

    @classmethod
    def override(cls, filename: str | Path) -> None:
        """Apply the sections of ``filename`` over the configuration declared in code."""
        from .toml_format import read_layer

        # The file may refer to data nodes and tasks that only the code declares.
        registry.set_file_layer(read_layer(Path(filename), known=registry.code))

    # -- checks and state ----------------------------------------------------------

    @classmethod
    def check(cls) -> IssueCollector:
        """Check the applied configuration and return the issues found.

        Errors are also logged; the collector lists ``errors``, ``warnings`` and
        ``infos``, each naming the section, the field and the value.
        """
        from .checker import check_layer

        return check_layer(registry.applied)

    @classmethod
    def block_update(cls) -> None:
        """Forbid configuration changes (used inside worker processes)."""
        registry.blocked = True

    @classmethod
    def unblock_update(cls) -> None:
        """Allow configuration changes again."""
        registry.blocked = False

    @classmethod
    def _reset(cls) -> None:
        """Forget every section; for tests and ``tp.clean_all_entities``-like resets."""
        registry.reset()


def _without_none(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def _relink_data_node(layer: ConfigLayer, section: DataNodeConfig) -> None:
    # A replaced data node section must also be the one that existing tasks and
    # scenarios point to, otherwise re-running a declaration cell would leave tasks
    # reading the old settings.
    for task in layer.tasks.values():
        task._inputs = [section if dn.id == section.id else dn for dn in task._inputs]
        task._outputs = [section if dn.id == section.id else dn for dn in task._outputs]
    for scenario in layer.scenarios.values():
        scenario._additional = [
            section if dn.id == section.id else dn for dn in scenario._additional
        ]


def _relink_task(layer: ConfigLayer, section: TaskConfig) -> None:
    for scenario in layer.scenarios.values():
        scenario._tasks = [
            section if t.id == section.id else t for t in scenario._tasks
        ]
        for name, tasks in scenario.sequences.items():
            scenario.sequences[name] = [
                section if t.id == section.id else t for t in tasks
            ]


def _is_worker_count(value: Any) -> bool:
    """Return whether ``value`` can be ``max_nb_of_workers``, or may be once resolved.

    Valid values are None (the default), an int of at least 1 and a string of such
    an int, as TOML files and environment variables give. An ``ENV[NAME]`` template
    is valid too: it is read when the orchestrator starts.
    """
    if value is None:
        return True
    if isinstance(value, str):
        if value.startswith("ENV["):
            return True
        try:
            value = int(value.strip())
        except ValueError:
            return False
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_now(
    read: Callable[[], Any], raw: Any, kind: type, what: str, expected: str
) -> None:
    """Raise ConfigurationError now for a value that would fail when it is used.

    ``read`` converts text such as ``"GLOBAL"`` as a TOML file gives it, and
    raises for text that names nothing. An ``ENV[NAME]`` template is left for
    when it is read, since its variable may be set later.
    """
    if is_template(raw):
        return
    try:
        value = read()
    except (ValueError, TypeError, OverflowError) as error:
        raise ConfigurationError(
            f"The {what} is {raw!r}, which cannot be read; set it to {expected}."
        ) from error
    if isinstance(value, timedelta) and value < timedelta(0):
        raise ConfigurationError(
            f"The {what} is {raw!r}, which is negative; set it to a positive "
            "duration such as timedelta(days=1) or '1d'."
        )
    if value is not None and not isinstance(value, kind):
        raise ConfigurationError(
            f"The {what} is {raw!r} ({type(raw).__name__}); set it to {expected}."
        )
