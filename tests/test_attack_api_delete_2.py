"""Deletion and submission checks that agree with what ``delete`` and ``submit`` do.

``tp.is_deletable(x)`` is true exactly when ``tp.delete(x)`` succeeds, and
``tp.is_submittable(x)`` is false when ``submit(x)`` raises because a task or data
node was deleted. A deletion leaves no stored row that names a missing entity.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from engine_fixtures import WAIT_SECONDS, use_workers, wait_for_gate, wait_status
from engine_fixtures import engine as engine_fixture  # noqa: F401 - fixture
from engine_fixtures import forkserver_started as forkserver_fixture  # noqa: F401
from engine_fixtures import standalone as standalone_fixture  # noqa: F401 - fixture
from test_attack_shared_folder import finish, start_interpreter

import jupyter_scenarios as tp
from jupyter_scenarios import Config, Frequency, Scope, Status

pytestmark = pytest.mark.timeout(300)


def double(value: int) -> int:
    return 2 * value


def dangling_references(*, whole_graph: bool = True) -> list[str]:
    """Return "row -> id" for each stored reference that names a missing entity.

    Without ``whole_graph`` only submissions and jobs are checked: a scenario or
    task that names a deleted task or data node is expected, and ``is_submittable``
    reports it.
    """
    found: list[str] = []

    def check(owner_id: str, referenced: list[str | None]) -> None:
        for entity_id in referenced:
            if entity_id is not None and tp.get(entity_id) is None:
                found.append(f"{owner_id} -> {entity_id}")

    for submission in tp.get_submissions():
        check(submission.id, [submission.entity_id, *submission.job_ids])
    for job in tp.get_jobs():
        check(job.id, [job.task_id, job.submit_id, job.submit_entity_id])
    if not whole_graph:
        return found
    for task in tp.get_tasks():
        parents = sorted(task.parent_ids)
        check(task.id, [*task.input_ids, *task.output_ids, *parents, task.owner_id])
    for node in tp.get_data_nodes():
        check(node.id, [*sorted(node.parent_ids), node.owner_id])
    for scenario in tp.get_scenarios():
        additional = scenario._additional_data_node_ids
        check(scenario.id, [*scenario.task_ids, *additional, scenario.owner_id])
    return found


def one_task_scenario() -> tp.Scenario:
    number = Config.configure_data_node("number")
    result = Config.configure_data_node("result")
    task = Config.configure_task("doubling", double, number, result)
    return tp.create_scenario(Config.configure_scenario("single", [task]))


@pytest.mark.usefixtures("engine")
def test_deletable_scenario_agrees_with_delete() -> None:
    scenario = one_task_scenario()
    # "number" was never written, so the job waits for it, BLOCKED.
    [job] = scenario.submit().jobs
    assert job.status is Status.BLOCKED

    deletable = bool(tp.is_deletable(scenario))
    try:
        tp.delete(scenario.id)
        deleted = True
    except Exception:  # noqa: BLE001 - any refusal counts as "not deleted"
        deleted = False

    tp.cancel_job(job)
    assert deletable is deleted, (
        f"is_deletable returned {deletable}, but delete "
        f"{'succeeded' if deleted else 'raised'}"
    )


@pytest.mark.usefixtures("engine")
def test_submittable_false_after_task_deleted() -> None:
    scenario = one_task_scenario()
    scenario.number.write(21)
    task_id = scenario.doubling.id

    tp.delete(task_id)
    submittable = tp.is_submittable(scenario)

    assert not submittable, (
        "is_submittable is true, but submit() raises NonExistingTask"
    )
    assert task_id in str(submittable)


@pytest.mark.usefixtures("engine")
def test_delete_scenario_removes_task_submissions() -> None:
    # A task submitted on its own has a submission whose entity is the task. The
    # scenario's deletion removes the task and its jobs but kept that submission,
    # which then named a missing task and listed no jobs.
    scenario = one_task_scenario()
    scenario.number.write(21)
    submission = scenario.doubling.submit(wait=True, timeout=60)
    assert submission.jobs[0].status is Status.COMPLETED

    tp.delete(scenario.id)

    left = [(kept.id, kept.entity_id) for kept in tp.get_submissions()]
    assert left == [], f"submissions left after deleting their scenario: {left}"


@pytest.mark.usefixtures("engine")
def test_delete_task_removes_its_submissions() -> None:
    scenario = one_task_scenario()
    scenario.number.write(21)
    submission = scenario.doubling.submit(wait=True, timeout=60)
    assert submission.jobs[0].status is Status.COMPLETED

    tp.delete(scenario.doubling.id)

    assert tp.get_jobs() == []
    left = [(kept.id, kept.entity_id) for kept in tp.get_submissions()]
    assert left == [], f"submissions left after deleting their task: {left}"


@pytest.mark.usefixtures("engine")
def test_submittable_names_missing_parts() -> None:
    scenario = one_task_scenario()
    scenario.add_sequence("front", [scenario.doubling])
    task = scenario.doubling
    output_id = scenario.result.id

    tp.delete(output_id)
    after_node = tp.is_submittable(scenario)
    tp.delete(task.id)

    assert output_id in after_node.reasons
    for entity in (scenario, scenario.sequences["front"], task):
        reasons = tp.is_submittable(entity)
        assert not reasons, f"is_submittable({entity.id}) is true"
        assert task.id in reasons.reasons, f"reasons for {entity.id}: {reasons}"
        with pytest.raises(tp.exceptions.NonExistingEntity):
            tp.submit(entity)


# -- is_deletable agrees with delete, kind by kind and state by state ------------------


def table_scenario(name: str) -> tp.Scenario:
    """A daily scenario ``number -> doubling -> result`` with sequence ``front``."""
    number = Config.configure_data_node("number")
    result = Config.configure_data_node("result")
    task = Config.configure_task("doubling", double, number, result)
    config = Config.configure_scenario(
        name, [task], frequency=Frequency.DAILY, sequences={"front": [task]}
    )
    return tp.create_scenario(config, creation_date=datetime(2024, 7, 1))


def blocked_by(part: str) -> Callable[[tp.Scenario], tp.Submission | None]:
    """Submit ``part`` with "number" unwritten, so that its job is BLOCKED."""

    def submit(scenario: tp.Scenario) -> tp.Submission:
        entity = {"scenario": scenario, "task": scenario.doubling}.get(
            part, scenario.sequences["front"]
        )
        submission = tp.submit(entity)
        assert submission.jobs[0].status is Status.BLOCKED
        return submission

    return submit


def completed(scenario: tp.Scenario) -> tp.Submission:
    scenario.number.write(21)
    submission = scenario.doubling.submit(wait=True, timeout=WAIT_SECONDS)
    assert submission.jobs[0].status is Status.COMPLETED
    return submission


def canceled(scenario: tp.Scenario) -> tp.Submission:
    submission = scenario.submit()
    tp.cancel_job(submission.jobs[0])
    assert submission.jobs[0].status is Status.CANCELED
    return submission


def idle(scenario: tp.Scenario) -> None:
    return None


def primary_with_sibling(scenario: tp.Scenario) -> None:
    assert scenario.is_primary
    table_scenario(scenario.config_id)


def secondary(scenario: tp.Scenario) -> None:
    # The scenario under test is the second of its cycle, so it is not primary.
    other = table_scenario(scenario.config_id)
    tp.set_primary(other)


STATES: dict[str, Callable[[tp.Scenario], tp.Submission | None]] = {
    "idle": idle,
    "blocked_scenario_submission": blocked_by("scenario"),
    "blocked_sequence_submission": blocked_by("sequence"),
    "blocked_task_submission": blocked_by("task"),
    "completed_task_submission": completed,
    "canceled_submission": canceled,
    "primary_with_sibling": primary_with_sibling,
    "secondary_scenario": secondary,
}

ENTITY_KINDS: dict[str, Callable[[tp.Scenario, tp.Submission | None], Any]] = {
    "scenario": lambda scenario, _: scenario,
    "sequence": lambda scenario, _: scenario.sequences["front"],
    "task": lambda scenario, _: scenario.doubling,
    "input_node": lambda scenario, _: scenario.number,
    "output_node": lambda scenario, _: scenario.result,
    "cycle": lambda scenario, _: scenario.cycle,
    "job": lambda _, submission: submission.jobs[0],
    "submission": lambda _, submission: submission,
}

CASES = [
    (state, kind)
    for state in STATES
    for kind in ENTITY_KINDS
    if kind not in ("job", "submission")
    or state not in ("idle", "primary_with_sibling", "secondary_scenario")
]


def deleted_without_error(entity: Any) -> bool:
    try:
        tp.delete(entity.id)
    except (tp.exceptions.ScenarioError, tp.exceptions.ConfigurationError):
        return False
    return True


@pytest.mark.usefixtures("engine")
@pytest.mark.parametrize(("state", "kind"), CASES, ids=[f"{s}-{k}" for s, k in CASES])
def test_deletable_agrees_with_delete(state: str, kind: str) -> None:
    scenario = table_scenario("table")
    submission = STATES[state](scenario)
    entity = ENTITY_KINDS[kind](scenario, submission)

    deletable = tp.is_deletable(entity)
    deletable_by_id = tp.is_deletable(entity.id)
    method_deletable = scenario.is_deletable()
    deleted = deleted_without_error(entity)

    assert deletable is deleted, f"is_deletable is {deletable}, delete ran: {deleted}"
    assert deletable_by_id is deletable
    if kind == "scenario":
        assert method_deletable is deletable
    if deleted:
        assert tp.get(entity.id) is None, f"{entity.id} is still stored"
        assert not tp.is_deletable(entity), "a deleted entity is deletable"
    else:
        assert tp.get(entity.id) is not None, f"{entity.id} was deleted"
    if kind != "job":
        # Deleting a job leaves its id in its submission's job list.
        dangling = dangling_references(whole_graph=False)
        assert dangling == [], f"references to missing entities: {dangling}"


def gated_config(name: str, gate: Path) -> Any:
    gate_node = Config.configure_data_node(f"{name}_gate", default_data=str(gate))
    output = Config.configure_data_node(f"{name}_out")
    task = Config.configure_task(f"{name}_wait", wait_for_gate, gate_node, output)
    return Config.configure_scenario(name, [task], sequences={"front": [task]})


RUNNING_CASE_KINDS = ("scenario", "sequence", "task", "input", "output", "job")
RUNNING_CASE_KINDS += ("submission",)


@pytest.mark.usefixtures("standalone")
@pytest.mark.parametrize("status", [Status.RUNNING, Status.PENDING])
def test_deletable_agrees_while_job_runs(tmp_path: Path, status: Status) -> None:
    # One worker: a job of "holder" occupies it, so a second job stays PENDING.
    use_workers(1)
    holder_gate = tmp_path / "holder_gate"
    holder = tp.create_scenario(gated_config("holder", holder_gate))
    if status is Status.PENDING:
        holder_job = holder.submit().jobs[0]
        wait_status(holder_job, Status.RUNNING)

    for kind in RUNNING_CASE_KINDS:
        gate = tmp_path / f"{kind}_gate"
        scenario = tp.create_scenario(gated_config(f"case_{kind}", gate))
        submitted = scenario.sequences["front"] if kind == "sequence" else scenario
        submission = tp.submit(submitted)
        [job] = submission.jobs
        wait_status(job, status)
        entity = {
            "scenario": scenario,
            "sequence": scenario.sequences["front"],
            "task": job.task,
            "input": job.task.input[f"case_{kind}_gate"],
            "output": job.task.output[f"case_{kind}_out"],
            "job": job,
            "submission": submission,
        }[kind]

        deletable = tp.is_deletable(entity)
        deleted = deleted_without_error(entity)

        assert deletable is deleted, (
            f"{kind}: is_deletable {deletable}, deleted {deleted}"
        )
        assert not deleted, f"{kind} was deleted while its job was {status.name}"
        if status is Status.PENDING:
            tp.cancel_job(job)
        gate.touch()
        assert submission.wait(WAIT_SECONDS)

    holder_gate.touch()


# -- nothing dangles in a fresh process ------------------------------------------------

SCOPED_SETUP = """
def double(value):
    return 2 * value

per_day = Config.configure_data_node("per_day", scope=Scope.CYCLE, default_data=3)
rate = Config.configure_data_node("rate", scope=Scope.GLOBAL, default_data=2)
scaled = Config.configure_data_node("scaled", scope=Scope.CYCLE)
result = Config.configure_data_node("result")
notes = Config.configure_data_node("notes")
scale = Config.configure_task("scale", double, rate, scaled)
apply = Config.configure_task("apply", double, per_day, result)
config = Config.configure_scenario(
    "scoped",
    [scale, apply],
    additional_data_node_configs=[notes],
    frequency=Frequency.DAILY,
    sequences={"front": [scale], "back": [apply]},
)
"""


def test_fresh_process_finds_nothing_dangling(engine: Path) -> None:
    # The deleted scenario shares its cycle with the kept one, so the CYCLE and
    # GLOBAL tasks and data nodes stay and must forget the deleted scenario, its
    # sequences and its task.
    namespace: dict[str, Any] = {"Config": Config, "Scope": Scope}
    namespace["Frequency"] = Frequency
    exec(SCOPED_SETUP, namespace)  # noqa: S102 - the test's own source
    config = namespace["config"]
    created = datetime(2024, 7, 1)
    kept_scenario = tp.create_scenario(config, creation_date=created)
    deleted_scenario = tp.create_scenario(config, creation_date=created)
    deleted_scenario.submit(wait=True, timeout=WAIT_SECONDS)
    deleted_scenario.sequences["front"].submit(wait=True, timeout=WAIT_SECONDS)
    deleted_scenario.sequences["back"].submit(wait=True, timeout=WAIT_SECONDS)
    deleted_scenario.apply.submit(wait=True, timeout=WAIT_SECONDS)
    deleted_scenario.scale.submit(wait=True, timeout=WAIT_SECONDS)
    kept_scenario.scale.submit(wait=True, timeout=WAIT_SECONDS)
    deleted_apply = deleted_scenario.apply.id

    tp.delete(deleted_scenario.id)
    tp.Orchestrator().stop(wait=True, timeout=WAIT_SECONDS)

    checker = """
        import json
        import test_attack_api_delete_2 as checks
        print(json.dumps({
            "dangling": checks.dangling_references(),
            "scenarios": [scenario.id for scenario in tp.get_scenarios()],
            "submitted": sorted(s.entity_id for s in tp.get_submissions()),
            "tasks": sorted(task.id for task in tp.get_tasks()),
        }))
        tp.Orchestrator().stop()
        """
    report = json.loads(finish(start_interpreter(checker, engine)).splitlines()[-1])

    assert report["dangling"] == [], f"references to missing entities: {report}"
    assert report["scenarios"] == [kept_scenario.id]
    # Both scenarios ran the shared CYCLE task on its own; it stays, and so do
    # its submissions.
    assert report["submitted"] == [kept_scenario.scale.id, kept_scenario.scale.id]
    assert deleted_apply not in report["tasks"]
    assert kept_scenario.scale.id in report["tasks"]
