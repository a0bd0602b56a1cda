"""Notes and warnings that the magics print about names a user may have mistyped.

``%%task`` and ``%%scenario`` declare, with default settings, each data node that they
name and that is not declared yet. That saves a ``%datanode`` line for an intermediate
result, but a misspelt name creates a data node that no task writes, and the job
reading it stays BLOCKED. The functions here find the declared name the user may have
meant and word the messages; the magics decide when to print them.

This module imports nothing from IPython.
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Iterable, Mapping

from .config import Config
from .config.sections import DEFAULT_ID, DataNodeConfig, ScenarioConfig, TaskConfig
from .entities import Job
from .enums import Scope, Status


def count(number: int, noun: str) -> str:
    """Return ``"1 job"`` or ``"2 jobs"``: the number with the noun in its number."""
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """Return ``" Did you mean 'name'?"`` for the candidate nearest ``word``, or ``""``.

    ``difflib.get_close_matches`` picks it, with its default cutoff of 0.6.
    """
    match = _nearest(word, candidates)
    return f" Did you mean {match!r}?" if match is not None else ""


def _nearest(word: str, candidates: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(word, sorted(set(candidates)), n=1)
    return matches[0] if matches else None


def _similarity(word: str, candidate: str) -> float:
    # The score get_close_matches ranks by.
    return difflib.SequenceMatcher(None, word, candidate).ratio()


def unused_data_nodes(replaced_task: str | None = None) -> set[str]:
    """Return the ids of declared data nodes that no task reads or writes.

    A data node that a scenario lists as additional counts as used. The task
    ``replaced_task``, which the running magic declares again, does not count.
    """
    used: set[str] = set()
    for task in Config.tasks.values():
        if task.id != replaced_task:
            used.update(config.id for config in task.input_configs)
            used.update(config.id for config in task.output_configs)
    for scenario in Config.scenarios.values():
        used.update(config.id for config in scenario.additional_data_node_configs)
    return set(Config.data_nodes) - used - {DEFAULT_ID}


def has_default_data(config: DataNodeConfig) -> bool:
    """Return whether a data node of ``config`` has data before any task writes it."""
    properties = config.properties
    return (
        properties.get("default_data") is not None
        or properties.get("default_path") is not None
    )


def _settings(config: DataNodeConfig) -> str:
    fields = config.raw_fields
    scope = fields["scope"]
    scope_name = scope.name if isinstance(scope, Scope) else str(scope)
    settings = f"{fields['storage_type']} storage, {scope_name} scope"
    if not has_default_data(config):
        settings += ", no default data"
    return settings


def _role(name: str, tasks: list[TaskConfig], scenario: ScenarioConfig | None) -> str:
    """Describe what the data node ``name`` is to ``tasks``: 'an input of task 'f''."""
    for task in tasks:
        if name in (config.id for config in task.input_configs):
            return f"an input of task {task.id!r}"
        if name in (config.id for config in task.output_configs):
            return f"an output of task {task.id!r}"
    if scenario is not None:
        return f"an additional data node of scenario {scenario.id!r}"
    return "a data node"


def new_data_node_notes(
    new_names: Iterable[str],
    candidates: set[str],
    tasks: Iterable[TaskConfig],
    scenario: ScenarioConfig | None = None,
) -> list[str]:
    """Return a note for each data node in ``new_names`` whose name is near a candidate.

    A candidate near several new names is suggested for the nearest one only.

    ``new_names`` are the data nodes that a magic declared with default settings for
    ``tasks``, or for ``scenario`` and its tasks. ``candidates`` are the declared,
    unused names the user may have meant, less those that ``tasks`` and ``scenario``
    use. A new name near none of them is a new data node, as the README's Magics
    section promises, so it gets no note.
    """
    tasks = list(tasks)
    new_names = list(new_names)
    used = set(new_names)
    for task in tasks:
        used.update(config.id for config in task.input_configs)
        used.update(config.id for config in task.output_configs)
    if scenario is not None:
        used.update(config.id for config in scenario.additional_data_node_configs)
    # Each candidate is suggested once, for the new name nearest it. With an input
    # misspelt as my_inptu, the new output my_output is near my_input too, but it
    # is a new name, not a second typo.
    nearest: dict[str, str] = {}
    for name in new_names:
        match = _nearest(name, candidates - used)
        if match is None:
            continue
        chosen = nearest.get(match)
        if chosen is None or _similarity(name, match) > _similarity(chosen, match):
            nearest[match] = name
    notes = []
    for match, name in sorted(
        nearest.items(), key=lambda item: new_names.index(item[1])
    ):
        config = Config.data_nodes[name]
        notes.append(
            f"Data node {name!r}, {_role(name, tasks, scenario)}, was not "
            f"declared, so it is declared now with default settings: "
            f"{_settings(config)}. Did you mean {match!r}? If so, fix the name and "
            "run the cell again."
        )
    return notes


def unwritten_input_warnings(
    scenario: ScenarioConfig, auto_declared: Mapping[str, DataNodeConfig]
) -> dict[str, str]:
    """Return a warning for each input of ``scenario`` that stays empty, by node id.

    Such an input was declared by a magic with default settings (``auto_declared``
    maps those declarations by id), has no default data, and no task of the scenario
    writes it. The jobs reading it stay BLOCKED until someone writes it.
    """
    written = {
        config.id for task in scenario.task_configs for config in task.output_configs
    }
    declared_by_user = {
        name
        for name, config in Config.data_nodes.items()
        if auto_declared.get(name) is not config and name != DEFAULT_ID
    }
    warnings: dict[str, str] = {}
    for task in scenario.task_configs:
        for config in task.input_configs:
            name = config.id
            current = Config.data_nodes.get(name)
            if (
                name in warnings
                or name in written
                or current is None
                or auto_declared.get(name) is not current
                or has_default_data(current)
            ):
                continue
            hint = did_you_mean(name, declared_by_user)
            warnings[name] = (
                f"Warning: data node {name!r}, an input of task {task.id!r}, was "
                "declared with default settings and no default data, and no task of "
                f"scenario {scenario.id!r} writes it. Its jobs stay BLOCKED until it "
                f"is written.{hint} {'If not, give' if hint else 'Give'} it data with "
                f"%datanode {name} --default VALUE, or write it before submitting."
            )
    return warnings


def unfinished_jobs_summary(jobs: Iterable[Job]) -> str:
    """Return ``"1 job is still BLOCKED and 2 jobs are still RUNNING"``.

    Statuses come in their life-cycle order. Returns ``""`` when no job is given.
    """
    counts = Counter(job.status for job in jobs)
    parts = []
    for status in Status:
        number = counts.get(status)
        if number:
            verb = "is" if number == 1 else "are"
            parts.append(f"{count(number, 'job')} {verb} still {status.name}")
    if len(parts) > 1:
        return f"{', '.join(parts[:-1])} and {parts[-1]}"
    return "".join(parts)
