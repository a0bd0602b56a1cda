"""The Taipy-shaped functions: create, submit, check, get, tag, compare and cancel.

Deletion lives in ``deletion``.

Every function starts the runtime on first use (see ``_runtime``), so
``tp.Orchestrator().run()`` is optional in a notebook.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from . import _runtime
from .config import Config
from .config.sections import DataNodeConfig, ScenarioConfig, TaskConfig
from .entities import Cycle, DataNode, Job, Scenario, Sequence, Submission, Task
from .entities._base import checked_timeout, why_missing
from .entities.cycle import cycle_bounds
from .entities.scenario import ALL_SCENARIO_SUBSCRIBERS, SEQUENCE_PREFIX
from .enums import Frequency, Scope
from .events import Event, EventEntityType, EventOperation, bus
from .exceptions import (
    ConfigurationError,
    NonExistingJob,
    NonExistingScenario,
)
from .reasons import ReasonCollection, unready_inputs
from .store import Store

logger = logging.getLogger(__name__)

Submittable = Scenario | Sequence | Task


class Orchestrator:
    """The service that runs jobs; ``Orchestrator().run()`` starts it.

    Starting is optional in a notebook: the first call that needs the service starts
    it with the current configuration.
    """

    def run(self, force_restart: bool = False) -> None:
        """Start the store and the scheduler with the current configuration."""
        _runtime.start(force_restart=force_restart)

    def stop(self, wait: bool = True, timeout: float | None = None) -> None:
        """Stop the scheduler and its workers.

        With ``wait``, running jobs get up to ``timeout`` seconds to finish; the jobs
        still unfinished after that are cancelled, with a reason recorded.
        """
        _runtime.stop(wait=wait, timeout=timeout)


#: The older name of ``Orchestrator``, kept for code written for Taipy 3.
Core = Orchestrator


# -- creation --------------------------------------------------------------------------


def _scenario_config(config: ScenarioConfig | str) -> ScenarioConfig:
    if isinstance(config, ScenarioConfig):
        return config
    known = Config.scenarios
    if isinstance(config, str) and config in known:
        return known[config]
    names = sorted(name for name in known if name != "default")
    if not isinstance(config, str):
        declared = (
            f"declared ones are {names}"
            if names
            else "none is declared yet: call Config.configure_scenario(...) first"
        )
        raise TypeError(
            "Expected a scenario configuration or its id, got "
            f"{config!r} ({type(config).__name__}); {declared}."
        )
    raise ConfigurationError(
        f"Scenario configuration {config!r} is not declared; declared ones are "
        f"{names or 'none'}. Declare it with Config.configure_scenario(...) or "
        "%%scenario first."
    )


def create_scenario(
    config: ScenarioConfig | str,
    creation_date: datetime | None = None,
    name: str | None = None,
) -> Scenario:
    """Create a scenario, with its tasks and data nodes, from a configuration.

    Parameters
    ----------
    config
        The scenario configuration, or its id.
    creation_date
        The date that picks the scenario's cycle; now by default.
    name
        A display name.

    Returns
    -------
    Scenario
    """
    section = _scenario_config(config)
    store = _runtime.store()
    creation_date = creation_date or datetime.now()

    # All or nothing: an interrupt halfway stores none of the new entities.
    with store.shared_creation(), store.batch(all_or_nothing=True):
        cycle = (
            _cycle_for(section.frequency, creation_date) if section.frequency else None
        )
        scenario_id = Scenario._ID_PREFIX + f"{section.id}_" + _fresh_suffix()
        nodes = {
            dn_config.id: _data_node_for(dn_config, scenario_id, cycle, store)
            for dn_config in section.data_node_configs
        }
        tasks = [
            _task_for(task_config, nodes, scenario_id, cycle, store)
            for task_config in section.task_configs
        ]
        additional = [nodes[dn.id].id for dn in section.additional_data_node_configs]
        scenario = Scenario(
            store,
            id=scenario_id,
            config_id=section.id,
            task_ids=[task.id for task in tasks],
            additional_data_node_ids=additional,
            creation_date=creation_date,
            name=name,
            cycle_id=cycle.id if cycle else None,
            properties=section.properties,
        )
        if cycle is not None:
            siblings = store.get_all("scenario", cycle_id=cycle.id)
            scenario._is_primary = not siblings
        for task in tasks:
            task._parent_ids.add(scenario.id)
            task._save()
        scenario._save()
        for sequence_name, task_configs in section.sequences.items():
            by_config = {task.config_id: task for task in tasks}
            scenario.add_sequence(
                sequence_name, [by_config[t.id] for t in task_configs]
            )

    bus.publish(Event(EventEntityType.SCENARIO, EventOperation.CREATION, scenario.id))
    return scenario


def _fresh_suffix() -> str:
    import uuid

    return uuid.uuid4().hex


def _cycle_for(frequency: Frequency, date: datetime) -> Cycle:
    store = _runtime.store()
    for cycle in store.get_all("cycle", frequency=frequency.name):
        if cycle.start_date <= date <= cycle.end_date:
            return cycle  # type: ignore[no-any-return]
    start, end = cycle_bounds(frequency, date)
    cycle = Cycle(store, frequency=frequency, start_date=start, end_date=end)
    cycle._save()
    bus.publish(Event(EventEntityType.CYCLE, EventOperation.CREATION, cycle.id))
    return cycle


def _owner_for(
    scope: Scope, scenario_id: str | None, cycle: Cycle | None
) -> str | None:
    if scope is Scope.SCENARIO:
        return scenario_id
    if scope is Scope.CYCLE and cycle is not None:
        return cycle.id
    return None


def _data_node_for(
    dn_config: DataNodeConfig,
    scenario_id: str | None,
    cycle: Cycle | None,
    store: Store | None = None,
) -> DataNode:
    # Callers that create many entities pass the store: finding it checks the
    # configuration, which resolves the storage folder's path each time.
    store = store or _runtime.store()
    scope = dn_config.scope
    owner = _owner_for(scope, scenario_id, cycle)
    if scope is not Scope.SCENARIO:
        for node in store.get_all("data_node", config_id=dn_config.id):
            if node.owner_id == owner:
                return node  # type: ignore[no-any-return]
    properties = dn_config.properties
    from .storage import get_backend_class

    get_backend_class(dn_config.storage_type)
    node = DataNode(
        store,
        config_id=dn_config.id,
        storage_type=dn_config.storage_type,
        scope=scope,
        owner_id=owner,
        properties=properties,
        validity_period=dn_config.validity_period,
    )
    node._save()
    if properties.get("default_data") is not None and not node.backend.exists():
        node.write(properties["default_data"], comment="default data")
    elif node.storage_type not in ("in_memory", "generic") and node.backend.exists():
        node._record_existing_file()
    elif node.storage_type == "generic" and properties.get("read_fct") is not None:
        # Its data lives outside, behind the read function, and is there already,
        # so tasks that read it need not wait for a write (Taipy does the same).
        node._record_edit(comment="read through its read function")
    bus.publish(Event(EventEntityType.DATA_NODE, EventOperation.CREATION, node.id))
    return node


def _task_for(
    task_config: TaskConfig,
    nodes: dict[str, DataNode],
    scenario_id: str,
    cycle: Cycle | None,
    store: Store | None = None,
) -> Task:
    store = store or _runtime.store()
    inputs = [nodes[dn.id] for dn in task_config.input_configs]
    outputs = [nodes[dn.id] for dn in task_config.output_configs]
    scopes = [node.scope for node in inputs + outputs]
    scope = min(scopes) if scopes else Scope.SCENARIO
    owner = _owner_for(scope, scenario_id, cycle)
    if scope is not Scope.SCENARIO:
        for task in store.get_all("task", config_id=task_config.id):
            if task.owner_id == owner:
                return task  # type: ignore[no-any-return]
    if task_config.function is None:
        raise ConfigurationError(
            f"Task configuration {task_config.id!r} has no function; declare it with "
            "Config.configure_task(id, function, input, output)."
        )
    task = Task(
        store,
        config_id=task_config.id,
        function=task_config.function,
        input_ids=[node.id for node in inputs],
        output_ids=[node.id for node in outputs],
        owner_id=owner,
        skippable=task_config.skippable,
        properties=task_config.properties,
    )
    for node in inputs + outputs:
        node._parent_ids.add(task.id)
        node._save()
    task._save()
    bus.publish(Event(EventEntityType.TASK, EventOperation.CREATION, task.id))
    return task


def create_global_data_node(config: DataNodeConfig) -> DataNode:
    """Create (or return the existing) data node of a GLOBAL-scoped configuration."""
    if config.scope is not Scope.GLOBAL:
        raise ConfigurationError(
            f"Data node configuration {config.id!r} has scope {config.scope.name}; "
            "only GLOBAL data nodes can be created on their own. Use "
            "scope=Scope.GLOBAL, or create a scenario that holds it."
        )
    store = _runtime.store()
    with store.shared_creation(), store.batch(all_or_nothing=True):
        return _data_node_for(config, None, None)


# -- submission ------------------------------------------------------------------------


def submit(
    entity: Submittable,
    callbacks: list[Callable[..., Any]] | None = None,
    force: bool = False,
    wait: bool = False,
    timeout: float | None = None,
    **properties: Any,
) -> Submission:
    """Submit a scenario, sequence or task for execution.

    Parameters
    ----------
    entity
        What to run: every task of a scenario or sequence, or one task.
    callbacks
        Functions called with the job at each status change of each job.
    force
        Run skippable tasks even when their outputs are up to date.
    wait
        Return only when every job has finished, or when ``timeout`` runs out.
    timeout
        Seconds to wait at most when ``wait`` is True (None: no limit). When it
        runs out, a warning is logged and the submission is returned while its jobs
        go on.
    **properties
        Stored as the submission's properties.

    Returns
    -------
    Submission
    """
    entity = _resolve_submittable(entity)
    return _runtime.orchestrator().submit(
        entity,
        callbacks=callbacks,
        force=force,
        wait=wait,
        timeout=timeout,
        **properties,
    )


def _resolve_submittable(entity: Any) -> Submittable:
    if isinstance(entity, str):
        found = get(entity)
        if found is None:
            raise NonExistingScenario(
                f"Nothing with id {entity!r} exists to submit; use the id of a "
                "scenario, sequence or task from tp.get_scenarios()."
            )
        entity = found
    if isinstance(entity, Scenario):
        if not exists(entity.id):
            raise NonExistingScenario(
                f"Scenario {entity.id!r} does not exist in the store; "
                + why_missing(
                    entity,
                    _runtime.store(),
                    "Create a new one with tp.create_scenario().",
                )
            )
        return entity
    if isinstance(entity, (Sequence, Task)):
        return entity
    raise TypeError(
        f"Cannot submit {entity!r}: submit a Scenario, a Sequence or a Task."
    )


def wait_all(timeout: float | None = None) -> bool:
    """Wait for every unfinished submission, then refresh every live widget.

    End a notebook with ``tp.wait_all()`` (or ``%wait``) so that a headless run
    (nbconvert, nbclient) stores each widget's final state.

    Parameters
    ----------
    timeout
        Seconds to wait at most (None: no limit).

    Returns
    -------
    bool
        Whether every submission finished in time.
    """
    timeout = checked_timeout(timeout)
    deadline = None if timeout is None else time.monotonic() + timeout
    scheduler = _runtime.orchestrator()
    finished = True
    for submission in get_submissions():
        # A submission whose wait() would return at once is finished and stored.
        # Only this process's jobs count: another kernel's may never finish here.
        if submission.wait(0) or not any(
            job._owner == scheduler.owner for job in submission.jobs
        ):
            continue
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        waited = scheduler.wait(submission, remaining, reported_timeout=timeout)
        finished = waited and finished
    if "jupyter_scenarios.widgets" in sys.modules:
        from .widgets import refresh_all_widgets

        refresh_all_widgets(wait=False)
    return finished


def cancel_job(job: Job | str) -> None:
    """Cancel a job; its downstream jobs in the same submission are abandoned.

    A SUBMITTED, BLOCKED or PENDING job becomes CANCELED at once. A RUNNING job in
    standalone mode has its worker process (and that process's children) killed,
    then becomes CANCELED and a fresh worker takes its place. A finished job is left
    as it is.
    """
    found = _job(job)
    _runtime.orchestrator().cancel(found)


def _job(job: Job | str) -> Job:
    if isinstance(job, Job):
        return job
    found = get(job)
    if not isinstance(found, Job):
        raise NonExistingJob(f"Job {job!r} does not exist; see tp.get_jobs() for ids.")
    return found


def is_submittable(entity: Submittable | str) -> ReasonCollection:
    """Check that every task and data node of ``entity`` exists and inputs are ready.

    Returns
    -------
    ReasonCollection
        True when ``entity`` can run now; otherwise it names each task or data node
        in the way ("TASK_... of SCENARIO_... does not exist.", "my_input is not
        written.", "my_input is being edited.", "DATANODE_... of task double does
        not exist."). ``submit`` raises for a missing task or data node.
    """
    resolved = _resolve_submittable(entity)
    store = _runtime.store()
    result = ReasonCollection()
    task_ids = [resolved.id] if isinstance(resolved, Task) else resolved.task_ids
    tasks: list[Task] = []
    for task_id in task_ids:
        task = store.get(task_id)
        if task is None:
            result.reasons[task_id] = f"{task_id} of {resolved.id} does not exist."
        else:
            tasks.append(task)

    produced = {node_id for task in tasks for node_id in task.output_ids}
    inputs = [
        node
        for task in tasks
        for node in task.input.values()
        if node.id not in produced
    ]
    result.reasons.update(unready_inputs(inputs).reasons)
    for task in tasks:
        for node_id in [*task.input_ids, *task.output_ids]:
            if store.get(node_id) is None:
                result.reasons[node_id] = (
                    f"{node_id} of task {task.config_id} does not exist."
                )
    return result


def is_promotable(scenario: Scenario | str) -> ReasonCollection:
    """Check that ``scenario`` can become the primary scenario of its cycle.

    Returns
    -------
    ReasonCollection
        True when ``scenario`` exists, belongs to a cycle and is not its primary
        scenario already. Otherwise it names the condition that fails.
    """
    scenario_id = scenario if isinstance(scenario, str) else scenario.id
    found = get(scenario_id)
    result = ReasonCollection()
    if not isinstance(found, Scenario):
        result.reasons[scenario_id] = f"Scenario {scenario_id} does not exist."
    elif found.cycle is None:
        result.reasons[scenario_id] = (
            f"Scenario {scenario_id} has no cycle, because its configuration has no "
            "frequency."
        )
    elif found.is_primary:
        result.reasons[scenario_id] = (
            f"Scenario {scenario_id} is already the primary scenario of its cycle."
        )
    return result


def is_readable(entity: Any) -> ReasonCollection:
    """Check that ``entity`` (an entity or its id) exists, so it can be read.

    The only check, as in Taipy 4's entity managers: there are no user permissions.
    """
    return _existence(entity)


def is_editable(entity: Any) -> ReasonCollection:
    """Check that ``entity`` (an entity or its id) exists, so it can be edited.

    The only check, as in Taipy 4's entity managers. A data node locked by an edit
    in progress still counts, because its ``lock_edit`` and ``write`` report the lock.
    """
    return _existence(entity)


def _existence(entity: Any) -> ReasonCollection:
    entity_id = entity if isinstance(entity, str) else getattr(entity, "id", entity)
    result = ReasonCollection()
    if not isinstance(entity_id, str) or get(entity_id) is None:
        result.reasons[str(entity_id)] = f"Entity {entity_id} does not exist."
    return result


# -- lookup ----------------------------------------------------------------------------


def get(entity_id: str) -> Any:
    """Return the entity with ``entity_id``, or None if there is none."""
    if not isinstance(entity_id, str):
        entity_id = getattr(entity_id, "id", entity_id)
    if entity_id.startswith(SEQUENCE_PREFIX):
        return _get_sequence(entity_id)
    # Another kernel sharing the storage folder may have deleted it.
    return _runtime.store().get_current(entity_id)


def _get_sequence(sequence_id: str) -> Sequence | None:
    marker = "_" + Scenario._ID_PREFIX
    position = sequence_id.rfind(marker)
    if position < 0:
        return None
    name = sequence_id[len(SEQUENCE_PREFIX) : position]
    scenario = _runtime.store().get(sequence_id[position + 1 :])
    if scenario is None or name not in scenario._sequences:
        return None
    return Sequence(scenario, name)


def exists(entity_id: str) -> bool:
    """Return whether an entity with ``entity_id`` is stored."""
    return get(entity_id) is not None


def get_scenarios(
    cycle: Cycle | None = None,
    tag: str | None = None,
    is_sorted: bool = False,
    descending: bool = False,
    sort_key: str = "name",
) -> list[Scenario]:
    """Return scenarios, optionally of one cycle or with one tag, optionally sorted."""
    store = _runtime.store()
    if cycle is not None:
        scenarios = store.get_all("scenario", cycle_id=cycle.id)
    else:
        scenarios = store.get_all("scenario")
    if tag is not None:
        scenarios = [s for s in scenarios if s.has_tag(tag)]
    scenarios.sort(key=lambda s: s.creation_date)
    if is_sorted:
        if sort_key == "creation_date":
            scenarios.sort(key=lambda s: s.creation_date, reverse=descending)
        else:
            scenarios.sort(
                key=lambda s: (s.name or s.config_id, s.id), reverse=descending
            )
    return scenarios


def get_cycles_scenarios() -> dict[Cycle | None, list[Scenario]]:
    """Return every scenario grouped by cycle, oldest first, with None for no cycle."""
    grouped: dict[Cycle | None, list[Scenario]] = {}
    for scenario in get_scenarios():
        grouped.setdefault(scenario.cycle, []).append(scenario)
    return grouped


def get_primary(cycle: Cycle) -> Scenario | None:
    """Return the primary scenario of ``cycle``."""
    for scenario in get_scenarios(cycle):
        if scenario.is_primary:
            return scenario
    return None


def get_primary_scenarios(
    is_sorted: bool = False, descending: bool = False, sort_key: str = "name"
) -> list[Scenario]:
    """Return the primary scenario of every cycle."""
    scenarios = get_scenarios(
        is_sorted=is_sorted, descending=descending, sort_key=sort_key
    )
    return [scenario for scenario in scenarios if scenario.is_primary]


def set_primary(scenario: Scenario) -> None:
    """Make ``scenario`` the primary scenario of its cycle."""
    cycle = scenario.cycle
    if cycle is None:
        raise ConfigurationError(
            f"Scenario {scenario.id!r} has no cycle, so it cannot be primary; give "
            "its configuration a frequency."
        )
    for other in get_scenarios(cycle):
        if other.is_primary and other != scenario:
            other._set_primary(False)
    scenario._set_primary(True)


def tag(scenario: Scenario, tag: str) -> None:
    """Add ``tag`` to ``scenario``; other scenarios of its cycle lose that tag.

    A tag names at most one scenario per cycle, as in Taipy.
    """
    cycle = scenario.cycle
    if cycle is not None:
        for other in get_scenarios(cycle):
            if other != scenario and other.has_tag(tag):
                other.remove_tag(tag)
    scenario._set_tags(scenario.tags | {tag})


def untag(scenario: Scenario, tag: str) -> None:
    """Remove ``tag`` from ``scenario``."""
    scenario.remove_tag(tag)


def get_sequences() -> list[Sequence]:
    """Return every sequence of every scenario."""
    sequences: list[Sequence] = []
    for scenario in get_scenarios():
        sequences.extend(scenario.sequences.values())
    return sequences


def get_tasks() -> list[Task]:
    return _runtime.store().get_all("task")


def get_data_nodes() -> list[DataNode]:
    return _runtime.store().get_all("data_node")


def get_cycles() -> list[Cycle]:
    return _runtime.store().get_all("cycle")


def get_jobs() -> list[Job]:
    """Return every job, oldest first."""
    jobs = _runtime.store().get_all("job")
    return sorted(jobs, key=lambda job: job.creation_date)


def get_latest_job(task: Task) -> Job | None:
    """Return the newest job of ``task``, or None if it never ran."""
    jobs = _runtime.store().get_all("job", task_id=task.id)
    return max(jobs, key=lambda job: job.creation_date) if jobs else None


def get_submissions() -> list[Submission]:
    """Return every submission, oldest first."""
    submissions = _runtime.store().get_all("submission")
    return sorted(submissions, key=lambda submission: submission.creation_date)


def get_latest_submission(entity: Submittable) -> Submission | None:
    """Return the newest submission of ``entity``."""
    submissions = _runtime.store().get_all("submission", entity_id=entity.id)
    if not submissions:
        return None
    return max(submissions, key=lambda submission: submission.creation_date)  # type: ignore[no-any-return]


def get_entities_by_config_id(config_id: str) -> list[Any]:
    """Return the scenarios, tasks and data nodes created from ``config_id``."""
    store = _runtime.store()
    found: list[Any] = []
    for kind in ("scenario", "task", "data_node"):
        found.extend(store.get_all(kind, config_id=config_id))
    return found


def get_parents(entity: Any) -> dict[str, set[Any]]:
    """Return the tasks, sequences and scenarios that ``entity`` belongs to."""
    parents: dict[str, set[Any]] = {}
    if isinstance(entity, str):
        entity = get(entity)
    if isinstance(entity, DataNode):
        tasks = {get(task_id) for task_id in entity.parent_ids} - {None}
        if tasks:
            parents["task"] = tasks
        for task in tasks:
            for kind, items in get_parents(task).items():
                parents.setdefault(kind, set()).update(items)
    elif isinstance(entity, Task):
        for parent_id in entity.parent_ids:
            parent = get(parent_id)
            if isinstance(parent, Scenario):
                parents.setdefault("scenario", set()).add(parent)
            elif isinstance(parent, Sequence):
                parents.setdefault("sequence", set()).add(parent)
    elif isinstance(entity, Sequence):
        parents["scenario"] = {entity.scenario}
    return parents


# -- comparison and subscription ---------------------------------------------------------


def compare_scenarios(
    *scenarios: Scenario, data_node_config_id: str | None = None
) -> dict[str, dict[str, Any]]:
    """Compare the data of scenarios of one configuration with its comparators.

    Returns
    -------
    dict
        ``{data node config id: {comparator name: result}}``.
    """
    if len(scenarios) < 2:
        raise ValueError(
            f"compare_scenarios needs at least two scenarios, got {len(scenarios)}."
        )
    config_ids = {scenario.config_id for scenario in scenarios}
    if len(config_ids) > 1:
        raise ValueError(
            "Only scenarios of the same configuration can be compared; got "
            f"{sorted(config_ids)}."
        )
    section = _scenario_config(scenarios[0].config_id)
    comparators = section.comparators
    if not comparators:
        raise ValueError(
            f"Scenario configuration {section.id!r} has no comparators; add some with "
            "configure_scenario(..., comparators={'data_node_id': function})."
        )
    if data_node_config_id is not None:
        if data_node_config_id not in comparators:
            raise ValueError(
                f"Scenario configuration {section.id!r} has no comparator for data "
                f"node {data_node_config_id!r}; it has comparators for "
                f"{sorted(comparators)}."
            )
        comparators = {data_node_config_id: comparators[data_node_config_id]}
    results: dict[str, dict[str, Any]] = {}
    for dn_id, functions in comparators.items():
        data = [scenario.data_nodes[dn_id].read() for scenario in scenarios]
        results[dn_id] = {function.__name__: function(*data) for function in functions}
    return results


def subscribe_scenario(
    callback: Callable[..., Any],
    params: list[Any] | None = None,
    scenario: Scenario | None = None,
) -> None:
    """Call ``callback(*params, scenario, job)`` on each job status change.

    Without ``scenario``, the callback follows every scenario. Only jobs created
    after subscribing notify it.
    """
    if scenario is None:
        ALL_SCENARIO_SUBSCRIBERS.append((callback, list(params or [])))
    else:
        scenario.subscribe(callback, params)


def unsubscribe_scenario(
    callback: Callable[..., Any],
    params: list[Any] | None = None,
    scenario: Scenario | None = None,
) -> None:
    """Remove a subscription; raise ValueError if there is none."""
    if scenario is not None:
        scenario.unsubscribe(callback, params)
        return
    for index, (known, known_params) in enumerate(ALL_SCENARIO_SUBSCRIBERS):
        if known == callback and (params is None or known_params == list(params)):
            del ALL_SCENARIO_SUBSCRIBERS[index]
            return
    raise ValueError(f"{callback!r} is not subscribed to all scenarios.")
