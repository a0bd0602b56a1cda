"""Configuration files in the TOML format of Taipy 4.1.1, written and read.

A file has the top ``[TAIPY]`` table (global properties), ``[JOB]``, ``[CORE]``, and
one table per section: ``[DATA_NODE.<id>]``, ``[TASK.<id>]`` and ``[SCENARIO.<id>]``,
the ``default`` ones included. A scenario's comparators and sequences are the
sub-tables ``[SCENARIO.<id>.comparators]`` and ``[SCENARIO.<id>.sequences]``.

Values other than text are written as text with a type suffix, as Taipy writes them:
``"21:int"``, ``"0.5:float"``, ``"False:bool"``, ``"2024-01-02T03:04:05:datetime"``,
``"1d2h0m0s:timedelta"``, ``"SCENARIO:SCOPE"``, ``"DAILY:FREQUENCY"``,
``"my_input:SECTION"`` for a reference to another section, ``"module.fn:function"``
and ``"module.Cls:class"``. Lists and tables hold values of the same forms. Text that
would read as a typed value gets a ``:str`` suffix (``"a:int:str"`` is the text
``a:int``). ``ENV[NAME]`` and ``ENV[NAME]:int`` templates are written and read as they
are, and the sections resolve them each time the value is used.

Reading also accepts TOML's own booleans, numbers, dates and times, and section
references written as plain ids. A section that leaves a field out takes it from the
``default`` section of its kind, as Taipy does: a data node takes the default's
properties and scope only when it has the default's storage type.

Tuples and sets are written as lists and read back as lists. Properties set to None
are left out, and read back as None because unset properties read as None.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import numbers
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import tomli_w

from ..enums import Frequency, Scope
from ..exceptions import ConfigurationError, LoadingError, clause
from . import templates
from .config import ConfigLayer
from .functions import (
    ReferenceResolver,
    SidecarModule,
    is_notebook_defined,
    object_reference,
    remove_stale_sidecar,
    sidecar_module_name,
    sidecar_path,
    write_sidecar,
)
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

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

logger = logging.getLogger(__name__)

GLOBAL_SECTION = "TAIPY"

#: Type suffixes of Taipy's TOML format, spelled as Taipy spells them.
TYPE_SUFFIXES = (
    "bool",
    "str",
    "int",
    "float",
    "datetime",
    "timedelta",
    "function",
    "class",
    "SCOPE",
    "FREQUENCY",
    "SECTION",
)

# Suffixes that look like a type name but are not one of TYPE_SUFFIXES. Text ending
# with one of them is rejected on reading, so that a typo such as "0.5:flot" does
# not silently become text. Other suffixes ("host:8080", "db:postgres") are text.
_TYPE_LIKE_WORDS = frozenset(
    {
        "integer",
        "boolean",
        "string",
        "double",
        "list",
        "tuple",
        "dict",
        "set",
        "date",
        "bytes",
        "none",
        *(suffix.lower() for suffix in TYPE_SUFFIXES),
    }
)

# Keys of each section kind that are fields rather than custom properties.
_DATA_NODE_FIELDS = ("storage_type", "scope", "validity_period")
_TASK_FIELDS = ("function", "inputs", "outputs", "skippable")
_SCENARIO_FIELDS = (
    "tasks",
    "additional_data_nodes",
    "frequency",
    "comparators",
    "sequences",
)
_JOB_FIELDS = ("mode", "max_nb_of_workers")
_CORE_FIELDS = ("storage_folder", "root_folder")

# Keys that would clash with a parameter of the section's constructor.
_RESERVED_KEYS: dict[str, tuple[str, ...]] = {
    DataNodeConfig.name: ("id",),
    TaskConfig.name: ("id", "input", "output"),
    ScenarioConfig.name: ("id", "task_configs", "additional_data_node_configs"),
    JobConfig.name: ("id",),
    CoreSection.name: ("id",),
}

_SECTION_KINDS = (DataNodeConfig.name, TaskConfig.name, ScenarioConfig.name)
_KNOWN_TABLES = (GLOBAL_SECTION, JobConfig.name, CoreSection.name, *_SECTION_KINDS)


# -- writing -------------------------------------------------------------------------


def write_layer(layer: ConfigLayer, path: Path) -> None:
    """Write the sections of ``layer`` to the TOML file ``path``.

    The file is replaced atomically. Functions and classes defined in a notebook are
    written to the sidecar module ``<stem>_functions.py`` in the same folder, which
    is written first, and the file refers to them through it. A sidecar left by an
    earlier export that is no longer needed is deleted.

    Parameters
    ----------
    layer
        The sections to write.
    path
        The TOML file to create or replace.

    Raises
    ------
    ConfigurationError
        If a value cannot be written. That is an object other than a function, a
        class or plain data, a lambda, a nested function, or a notebook function
        whose source is not available. A table key that is not text and None
        inside a list or table are rejected too.
    """
    path = Path(path)
    sidecar = SidecarModule(sidecar_module_name(path))
    writer = _LayerWriter(sidecar)
    text = tomli_w.dumps(writer.document(layer))
    side_path = sidecar_path(path)
    if sidecar:
        write_sidecar(side_path, sidecar.render(path.name))
        logger.info(
            "Wrote notebook definitions %s to %s", ", ".join(sidecar.names), side_path
        )
    else:
        remove_stale_sidecar(side_path)
    from ..storage.atomic import atomic_write_bytes

    atomic_write_bytes(path, text.encode("utf-8"))


class _LayerWriter:
    """Turn a layer into the nested dicts that ``tomli_w`` writes."""

    def __init__(self, sidecar: SidecarModule) -> None:
        self.sidecar = sidecar

    def document(self, layer: ConfigLayer) -> dict[str, Any]:
        data_nodes, tasks, scenarios = _sections_to_write(layer)
        document: dict[str, Any] = {
            GLOBAL_SECTION: self.properties(layer.global_properties, GLOBAL_SECTION, ())
        }
        if layer.job_config is not None:
            document[JobConfig.name] = self.job(layer.job_config)
        if layer.core is not None:
            document[CoreSection.name] = self.core(layer.core)
        document[DataNodeConfig.name] = {
            section.id: self.data_node(section) for section in data_nodes
        }
        document[TaskConfig.name] = {
            section.id: self.task(section) for section in tasks
        }
        document[ScenarioConfig.name] = {
            section.id: self.scenario(section) for section in scenarios
        }
        return document

    def table(
        self, where: str, fields: Mapping[str, Any], section: Section
    ) -> dict[str, Any]:
        table = {
            key: self.value(value, f"{where}.{key}")
            for key, value in fields.items()
            if value is not None
        }
        table.update(self.properties(section._properties, where, tuple(fields)))
        return table

    def properties(
        self, properties: Mapping[str, Any], where: str, fields: tuple[str, ...]
    ) -> dict[str, Any]:
        table: dict[str, Any] = {}
        for key, value in properties.items():
            if key in fields:
                raise ConfigurationError(
                    f"The custom property {key!r} of {where} has the name of a field "
                    "of that section, so the file could not tell them apart. Rename "
                    "the property."
                )
            if value is not None:
                table[key] = self.value(value, f"{where}.{key}")
        return table

    def data_node(self, section: DataNodeConfig) -> dict[str, Any]:
        where = f"{DataNodeConfig.name}.{section.id}"
        return self.table(where, section.raw_fields, section)

    def task(self, section: TaskConfig) -> dict[str, Any]:
        where = f"{TaskConfig.name}.{section.id}"
        fields = {
            "function": section.function,
            "inputs": section.input_configs,
            "outputs": section.output_configs,
            "skippable": section._skippable,
        }
        return self.table(where, fields, section)

    def scenario(self, section: ScenarioConfig) -> dict[str, Any]:
        where = f"{ScenarioConfig.name}.{section.id}"
        fields: dict[str, Any] = {
            "tasks": section.task_configs,
            "additional_data_nodes": section.additional_data_node_configs,
            "frequency": section._frequency,
            "comparators": dict(section.comparators) or None,
            "sequences": dict(section.sequences) or None,
        }
        return self.table(where, fields, section)

    def job(self, section: JobConfig) -> dict[str, Any]:
        fields = {
            "mode": section._mode,
            "max_nb_of_workers": section._max_nb_of_workers,
        }
        return self.table(JobConfig.name, fields, section)

    def core(self, section: CoreSection) -> dict[str, Any]:
        fields = {
            "storage_folder": section._storage_folder,
            "root_folder": section._root_folder,
        }
        return self.table(CoreSection.name, fields, section)

    def value(self, value: Any, where: str) -> Any:
        """Return ``value`` in the form written to the file."""
        if isinstance(value, Section):
            return f"{value.id}:SECTION"

        if isinstance(value, Scope):
            return f"{value.name}:SCOPE"
        if isinstance(value, Frequency):
            return f"{value.name}:FREQUENCY"

        if isinstance(value, bool):
            return f"{value}:bool"
        if isinstance(value, numbers.Integral):
            return f"{int(value)}:int"
        if isinstance(value, float):
            return f"{value!r}:float"
        if isinstance(value, datetime):
            return f"{value.isoformat()}:datetime"
        if isinstance(value, (date, time)):
            return value
        if isinstance(value, timedelta):
            return f"{_format_timedelta(value)}:timedelta"

        if isinstance(value, str):
            return _escape_text(value)
        if isinstance(value, os.PathLike):
            return _escape_text(os.fspath(value))

        if isinstance(value, Mapping):
            return self.mapping(value, where)
        if isinstance(value, (list, tuple, set, frozenset)):
            return self.sequence(value, where)

        if inspect.isclass(value):
            return f"{self.reference(value, where)}:class"
        if callable(value):
            return f"{self.reference(value, where)}:function"
        raise ConfigurationError(
            f"The value {value!r} of {where}, of type {type(value).__name__}, cannot "
            "be written to a TOML configuration file. Use text, a number, a boolean, "
            "a date, a timedelta, a list or dict of those, a function or a class; "
            "keep other objects in a data node instead."
        )

    def mapping(self, value: Mapping[Any, Any], where: str) -> dict[str, Any]:
        table: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigurationError(
                    f"The key {key!r} of {where} is a {type(key).__name__}, but TOML "
                    "table keys are text. Use text keys."
                )
            if item is None:
                raise ConfigurationError(
                    f"The entry {key!r} of {where} is None, which TOML cannot write. "
                    "Remove the entry or give it a value."
                )
            table[key] = self.value(item, f"{where}.{key}")
        return table

    def sequence(self, value: Any, where: str) -> list[Any]:
        items = list(value)
        if isinstance(value, (set, frozenset)):
            # Sets have no order, so sorting them keeps the written file stable.
            items.sort(key=repr)
        result = []
        for index, item in enumerate(items):
            if item is None:
                raise ConfigurationError(
                    f"Item {index} of {where} is None, which TOML cannot write. "
                    "Remove it or give it a value."
                )
            result.append(self.value(item, f"{where}[{index}]"))
        return result

    def reference(self, value: Any, where: str) -> str:
        if is_notebook_defined(value):
            return self.sidecar.add(value, where=where)
        return object_reference(value, where=where)


def _sections_to_write(
    layer: ConfigLayer,
) -> tuple[list[DataNodeConfig], list[TaskConfig], list[ScenarioConfig]]:
    """Return the layer's sections, defaults first, plus any section they refer to.

    A task may point to a data node configuration that was never registered in the
    layer; writing it too keeps the file loadable.
    """
    data_nodes = _defaults_first(layer.data_nodes)
    tasks = _defaults_first(layer.tasks)
    scenarios = _defaults_first(layer.scenarios)
    for scenario in scenarios.values():
        for task in scenario.task_configs:
            tasks.setdefault(task.id, task)
        for sequence in scenario.sequences.values():
            for task in sequence:
                tasks.setdefault(task.id, task)
        for data_node in scenario.additional_data_node_configs:
            data_nodes.setdefault(data_node.id, data_node)
    for task in tasks.values():
        for data_node in [*task.input_configs, *task.output_configs]:
            data_nodes.setdefault(data_node.id, data_node)
    return list(data_nodes.values()), list(tasks.values()), list(scenarios.values())


def _defaults_first(sections: Mapping[str, Any]) -> dict[str, Any]:
    ordered = {key: value for key, value in sections.items() if key == DEFAULT_ID}
    ordered.update(sections)
    return ordered


def _format_timedelta(value: timedelta) -> str:
    """Format ``value`` as ``<d>d<h>h<m>m<s>s``, with fractional seconds if needed."""
    whole = timedelta(days=value.days, seconds=value.seconds)
    text = templates.format_timedelta(whole)
    if value.microseconds:
        seconds = f"{value.seconds % 60 + value.microseconds / 1_000_000:.6f}"
        text = f"{text.rsplit('m', 1)[0]}m{seconds.rstrip('0')}s"
    return text


def _suffix_needs_escape(text: str) -> bool:
    """Return whether reading ``text`` back would not give ``text``."""
    head, separator, suffix = text.rpartition(":")
    if not separator or not head:
        return False
    return suffix == "" or suffix in TYPE_SUFFIXES or _looks_like_type(suffix)


def _escape_text(text: str) -> str:
    if templates.is_template(text) or not _suffix_needs_escape(text):
        return text
    return f"{text}:str"


def _looks_like_type(suffix: str) -> bool:
    if not suffix.isidentifier():
        return False
    lowered = suffix.lower()
    if lowered in _TYPE_LIKE_WORDS:
        return True
    if len(lowered) < 4:
        return False
    return bool(difflib.get_close_matches(lowered, _TYPE_LIKE_WORDS, n=1, cutoff=0.85))


# -- reading -------------------------------------------------------------------------


@dataclass(frozen=True)
class _SectionReference:
    """A ``<id>:SECTION`` value, replaced by the section once all are built."""

    id: str


def read_layer(path: Path, *, known: ConfigLayer | None = None) -> ConfigLayer:
    """Read a TOML configuration file written by this package or by Taipy 4.1.1.

    Parameters
    ----------
    path
        The TOML file.
    known
        Sections that the file may refer to without declaring them, such as the
        sections declared in code when the file overrides them.

    Returns
    -------
    ConfigLayer
        The sections of the file. ``ENV[NAME]`` templates are kept as templates.

    Raises
    ------
    LoadingError
        If the file is missing or is not valid TOML, and then the message names the
        line. Also if a value has an unknown type suffix or cannot be converted, if
        a section refers to a section that is not declared, or if a function or
        class cannot be imported. Each message names the file.
    """
    path = Path(path)
    document = _parse_file(path)
    return _LayerReader(path, document, known).build()


def _parse_file(path: Path) -> dict[str, Any]:
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise LoadingError(
            f"The configuration file {path} was not found (the working directory is "
            f"{Path.cwd()}). Check the path, or export a configuration there first."
        ) from None
    except OSError as error:
        raise LoadingError(
            f"The configuration file {path} cannot be read: {error}."
        ) from error
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        raise LoadingError(
            f"The configuration file {path} is not valid UTF-8 ({error}). Save it as "
            "UTF-8 text."
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise LoadingError(
            f"The configuration file {path} is not valid TOML: {clause(error)}. Fix the TOML "
            "syntax at that line."
        ) from None


class _LayerReader:
    """Build a :class:`ConfigLayer` from a parsed TOML document."""

    def __init__(
        self, path: Path, document: dict[str, Any], known: ConfigLayer | None
    ) -> None:
        self.path = path
        self.document = document
        self.known = known
        self.resolver = ReferenceResolver(path)
        self.layer = ConfigLayer()

    def error(self, message: str) -> LoadingError:
        return LoadingError(f"{message.rstrip('.')} (in {self.path}).")

    def build(self) -> ConfigLayer:
        for name, table in self.document.items():
            if name not in _KNOWN_TABLES:
                logger.warning(
                    "Ignored table [%s] of %s: jupyter_scenarios reads only %s",
                    name,
                    self.path,
                    ", ".join(_KNOWN_TABLES),
                )
                continue
            if not isinstance(table, dict):
                raise self.error(
                    f"The key {name!r} must be a table written as [{name}], but it "
                    f"is {table!r}"
                )
        self.layer.global_properties = self.decode_table(
            self.document.get(GLOBAL_SECTION, {}), GLOBAL_SECTION
        )
        self.read_job()
        self.read_core()
        for section_id, table in self.kind_tables(DataNodeConfig.name):
            self.layer.data_nodes[section_id] = self.data_node(section_id, table)
        for section_id, table in self.kind_tables(TaskConfig.name):
            self.layer.tasks[section_id] = self.task(section_id, table)
        for section_id, table in self.kind_tables(ScenarioConfig.name):
            self.layer.scenarios[section_id] = self.scenario(section_id, table)
        self.link_property_references()
        return self.layer

    def kind_tables(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        """Return the sections of ``kind``, the default first, with checked ids."""
        sections = self.document.get(kind, {})
        ordered = sorted(sections.items(), key=lambda item: item[0] != DEFAULT_ID)
        for section_id, table in ordered:
            where = f"{kind}.{section_id}"
            if not isinstance(table, dict):
                raise self.error(
                    f"[{where}] must be a table of settings, but it is {table!r}"
                )
            if section_id != DEFAULT_ID:
                try:
                    check_identifier(kind.lower().replace("_", " "), section_id)
                except ConfigurationError as error:
                    raise self.error(str(error)) from None
            for key in _RESERVED_KEYS[kind]:
                if key in table:
                    raise self.error(
                        f"The key {key!r} is not valid in [{where}]. Remove it, or "
                        "use the keys that Taipy writes (inputs, outputs, tasks, "
                        "additional_data_nodes)"
                    )
        return ordered

    # -- values --------------------------------------------------------------------

    def decode_table(self, table: Mapping[str, Any], where: str) -> dict[str, Any]:
        return {
            key: self.decode(value, f"{where}.{key}") for key, value in table.items()
        }

    def decode(self, value: Any, where: str) -> Any:
        """Return the Python value of a TOML value, section references left marked."""
        if isinstance(value, str):
            return self.decode_text(value, where)
        if isinstance(value, list):
            return [
                self.decode(item, f"{where}[{index}]")
                for index, item in enumerate(value)
            ]
        if isinstance(value, dict):
            return self.decode_table(value, where)
        return value

    def decode_text(self, text: str, where: str) -> Any:
        if templates.is_template(text):
            return text
        head, separator, suffix = text.rpartition(":")
        if not separator or not head:
            return text
        if suffix in TYPE_SUFFIXES:
            return self.convert(head, suffix, text, where)
        if _looks_like_type(suffix):
            raise self.error(
                f"The value {text!r} of {where} has the unknown type suffix "
                f"{suffix!r}. Use one of {', '.join(TYPE_SUFFIXES)}, or add ':str' "
                f"to keep it as text ({text + ':str'!r})"
            )
        return text

    def convert(self, head: str, suffix: str, text: str, where: str) -> Any:
        if suffix == "str":
            return head
        if suffix == "SECTION":
            return _SectionReference(head)
        if suffix in ("function", "class"):
            return self.resolver.resolve(head, kind=suffix, where=where)
        converter = _CONVERTERS[suffix]
        try:
            return converter(head)
        except (ValueError, KeyError):
            raise self.error(
                f"The value {text!r} of {where} is not a valid {suffix}. Write it as "
                f"{_SUFFIX_EXAMPLES[suffix]}"
            ) from None

    # -- references ----------------------------------------------------------------

    def find_section(self, kind: str, value: Any, where: str) -> Any:
        """Return the section of ``kind`` that ``value`` (reference or id) names."""
        if isinstance(value, _SectionReference):
            section_id = value.id
        elif isinstance(value, str):
            section_id = value
        else:
            raise self.error(
                f"The value {value!r} of {where} must name a {kind} section, as "
                "'<id>:SECTION'"
            )
        found = self.section_table(kind).get(section_id)
        if found is None and self.known is not None:
            found = _layer_sections(self.known, kind).get(section_id)
        if found is None:
            raise self.error(
                f"{where} refers to [{kind}.{section_id}], which is not declared. "
                f"Declare [{kind}.{section_id}] in the file, or fix the id"
            )
        return found

    def section_table(self, kind: str) -> dict[str, Any]:
        return _layer_sections(self.layer, kind)

    def find_sections(self, kind: str, values: Any, where: str) -> list[Any]:
        if values is None:
            return []
        if not isinstance(values, list):
            values = [values]
        return [
            self.find_section(kind, value, f"{where}[{index}]")
            for index, value in enumerate(values)
        ]

    def link_property_references(self) -> None:
        sections: list[Section] = [
            *self.layer.data_nodes.values(),
            *self.layer.tasks.values(),
            *self.layer.scenarios.values(),
        ]
        for unique in (self.layer.job_config, self.layer.core):
            if unique is not None:
                sections.append(unique)
        for section in sections:
            where = f"{section.name}.{section.id}"
            section._properties = {
                key: self.link(value, f"{where}.{key}")
                for key, value in section._properties.items()
            }
        self.layer.global_properties = {
            key: self.link(value, f"{GLOBAL_SECTION}.{key}")
            for key, value in self.layer.global_properties.items()
        }

    def link(self, value: Any, where: str) -> Any:
        """Replace section references in a property value by the sections."""
        if isinstance(value, _SectionReference):
            for kind in _SECTION_KINDS:
                found = self.section_table(kind).get(value.id)
                if found is None and self.known is not None:
                    found = _layer_sections(self.known, kind).get(value.id)
                if found is not None:
                    return found
            raise self.error(
                f"{where} refers to the section {value.id!r}, which is not declared. "
                "Declare it in the file, or fix the id"
            )
        if isinstance(value, list):
            return [self.link(item, where) for item in value]
        if isinstance(value, dict):
            return {
                key: self.link(item, f"{where}.{key}") for key, item in value.items()
            }
        return value

    # -- sections ------------------------------------------------------------------

    def build_section(self, where: str, build: Callable[[], Section]) -> Any:
        try:
            return build()
        except ConfigurationError as error:
            if isinstance(error, LoadingError):
                raise
            raise self.error(f"Section [{where}] is not valid: {error}") from error

    def default_of(self, kind: str) -> Any:
        return self.section_table(kind).get(DEFAULT_ID)

    def data_node(self, section_id: str, table: dict[str, Any]) -> DataNodeConfig:
        where = f"{DataNodeConfig.name}.{section_id}"
        values = self.decode_table(table, where)
        fields = {key: values.pop(key, None) for key in _DATA_NODE_FIELDS}
        default: DataNodeConfig | None = self.default_of(DataNodeConfig.name)
        if default is not None:
            default_type = default._storage_type
            if fields["storage_type"] is None:
                fields["storage_type"] = default_type
            same_type = fields["storage_type"] == default_type
            if fields["scope"] is None and same_type:
                fields["scope"] = default._scope
            if fields["validity_period"] is None:
                fields["validity_period"] = default._validity_period
            if same_type:
                values = {**default._properties, **values}
        arguments = {key: value for key, value in fields.items() if value is not None}
        return self.build_section(  # type: ignore[no-any-return]
            where, lambda: DataNodeConfig(section_id, **arguments, **values)
        )

    def task(self, section_id: str, table: dict[str, Any]) -> TaskConfig:
        where = f"{TaskConfig.name}.{section_id}"
        values = self.decode_table(table, where)
        function = values.pop("function", None)
        if function is not None and not callable(function):
            raise self.error(
                f"The function {function!r} of [{where}] is not a function reference. "
                "Write it as 'module.name:function'"
            )
        inputs = self.find_sections(
            DataNodeConfig.name, values.pop("inputs", None), f"{where}.inputs"
        )
        outputs = self.find_sections(
            DataNodeConfig.name, values.pop("outputs", None), f"{where}.outputs"
        )
        skippable = values.pop("skippable", None)
        default: TaskConfig | None = self.default_of(TaskConfig.name)
        if default is not None:
            if skippable is None:
                skippable = default._skippable
            values = {**default._properties, **values}
        return self.build_section(  # type: ignore[no-any-return]
            where,
            lambda: TaskConfig(
                section_id,
                function,
                inputs,
                outputs,
                skippable if skippable is not None else False,
                **values,
            ),
        )

    def scenario(self, section_id: str, table: dict[str, Any]) -> ScenarioConfig:
        where = f"{ScenarioConfig.name}.{section_id}"
        values = self.decode_table(table, where)
        tasks = self.find_sections(
            TaskConfig.name, values.pop("tasks", None), f"{where}.tasks"
        )
        additional = self.find_sections(
            DataNodeConfig.name,
            values.pop("additional_data_nodes", None),
            f"{where}.additional_data_nodes",
        )
        frequency = values.pop("frequency", None)
        comparators = self.comparators(values.pop("comparators", None), where)
        sequences = self.sequences(values.pop("sequences", None), where)
        default: ScenarioConfig | None = self.default_of(ScenarioConfig.name)
        if default is not None:
            if frequency is None:
                frequency = default._frequency
            values = {**default._properties, **values}
        return self.build_section(  # type: ignore[no-any-return]
            where,
            lambda: ScenarioConfig(
                section_id,
                tasks,
                additional,
                frequency,
                comparators,
                sequences,
                **values,
            ),
        )

    def comparators(self, value: Any, where: str) -> dict[str, list[Any]]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(
                f"[{where}.comparators] must be a table mapping data node ids to "
                f"functions, but it is {value!r}"
            )
        result: dict[str, list[Any]] = {}
        for data_node_id, functions in value.items():
            entry = f"{where}.comparators.{data_node_id}"
            functions = functions if isinstance(functions, list) else [functions]
            for function in functions:
                if not callable(function):
                    raise self.error(
                        f"The comparator {function!r} of {entry} is not a function "
                        "reference. Write it as 'module.name:function'"
                    )
            result[data_node_id] = functions
        return result

    def sequences(self, value: Any, where: str) -> dict[str, list[Any]]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(
                f"[{where}.sequences] must be a table mapping sequence names to task "
                f"lists, but it is {value!r}"
            )
        return {
            name: self.find_sections(
                TaskConfig.name, tasks, f"{where}.sequences.{name}"
            )
            for name, tasks in value.items()
        }

    def read_job(self) -> None:
        if JobConfig.name not in self.document:
            return
        values = self.decode_table(self.document[JobConfig.name], JobConfig.name)
        fields = {key: values.pop(key, None) for key in _JOB_FIELDS}
        self.layer.job_config = self.build_section(
            JobConfig.name,
            lambda: JobConfig(
                fields["mode"],
                fields["max_nb_of_workers"],
                **values,
            ),
        )

    def read_core(self) -> None:
        if CoreSection.name not in self.document:
            return
        values = self.decode_table(self.document[CoreSection.name], CoreSection.name)
        fields = {key: values.pop(key, None) for key in _CORE_FIELDS}
        self.layer.core = self.build_section(
            CoreSection.name,
            lambda: CoreSection(
                fields["storage_folder"], fields["root_folder"], **values
            ),
        )


def _layer_sections(layer: ConfigLayer, kind: str) -> dict[str, Any]:
    if kind == DataNodeConfig.name:
        return layer.data_nodes
    if kind == TaskConfig.name:
        return layer.tasks
    return layer.scenarios


def _to_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    raise ValueError(text)


_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "bool": _to_bool,
    "int": int,
    "float": float,
    "datetime": datetime.fromisoformat,
    "timedelta": templates.parse_timedelta,
    "SCOPE": lambda text: Scope[text],
    "FREQUENCY": lambda text: Frequency[text],
}

_SUFFIX_EXAMPLES = {
    "bool": "'True:bool' or 'False:bool'",
    "int": "'21:int'",
    "float": "'0.5:float'",
    "datetime": "'2024-01-31T08:00:00:datetime' (ISO 8601)",
    "timedelta": "'1d2h0m0s:timedelta'",
    "SCOPE": f"one of {', '.join(f'{s.name}:SCOPE' for s in Scope)}",
    "FREQUENCY": f"one of {', '.join(f'{f.name}:FREQUENCY' for f in Frequency)}",
}
