"""Taipy-style scenario management inside the Jupyter kernel.

Declare data nodes and tasks with ``Config`` (or the cell magics loaded by
``%load_ext jupyter_scenarios``), create scenarios, submit them, and watch their jobs::

    import jupyter_scenarios as tp
    from jupyter_scenarios import Config

    input_cfg = Config.configure_data_node("my_input", default_data=21)
    output_cfg = Config.configure_data_node("my_output")
    task_cfg = Config.configure_task("double", double, input_cfg, output_cfg)
    scenario_cfg = Config.configure_scenario("my_scenario", task_configs=[task_cfg])

    scenario = tp.create_scenario(scenario_cfg)
    scenario.submit(wait=True)
    scenario.my_output.read()
"""

from __future__ import annotations

import logging
from typing import Any

from ._version import __version__
from .api import (
    Core,
    Orchestrator,
    cancel_job,
    compare_scenarios,
    create_global_data_node,
    create_scenario,
    exists,
    get,
    get_cycles,
    get_cycles_scenarios,
    get_data_nodes,
    get_entities_by_config_id,
    get_jobs,
    get_latest_job,
    get_latest_submission,
    get_parents,
    get_primary,
    get_primary_scenarios,
    get_scenarios,
    get_sequences,
    get_submissions,
    get_tasks,
    is_editable,
    is_promotable,
    is_readable,
    is_submittable,
    set_primary,
    submit,
    subscribe_scenario,
    tag,
    unsubscribe_scenario,
    untag,
    wait_all,
)
from .config import Config
from .deletion import (
    clean_all_entities,
    delete,
    delete_job,
    delete_jobs,
    is_deletable,
)
from .entities import Cycle, DataNode, Job, Scenario, Sequence, Submission, Task
from .enums import (
    EntityType,
    Frequency,
    JoinOperator,
    Operator,
    Scope,
    Status,
    SubmissionStatus,
)
from .exceptions import SubmissionTimeoutWarning, TaskFailed

# Library convention: no output unless the application configures logging. Without
# it, logging's last-resort handler would print records of the scheduler thread into
# whichever notebook cell happens to run.
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "Config",
    "Core",
    "Cycle",
    "DataNode",
    "EntityType",
    "Frequency",
    "Job",
    "JoinOperator",
    "Operator",
    "Orchestrator",
    "Scenario",
    "Scope",
    "Sequence",
    "Status",
    "Submission",
    "SubmissionStatus",
    "SubmissionTimeoutWarning",
    "Task",
    "TaskFailed",
    "__version__",
    "cancel_job",
    "clean_all_entities",
    "compare_scenarios",
    "create_global_data_node",
    "create_scenario",
    "delete",
    "delete_job",
    "delete_jobs",
    "exists",
    "get",
    "get_cycles",
    "get_cycles_scenarios",
    "get_data_nodes",
    "get_entities_by_config_id",
    "get_jobs",
    "get_latest_job",
    "get_latest_submission",
    "get_parents",
    "get_primary",
    "get_primary_scenarios",
    "get_scenarios",
    "get_sequences",
    "get_submissions",
    "get_tasks",
    "is_deletable",
    "is_editable",
    "is_promotable",
    "is_readable",
    "is_submittable",
    "load_ipython_extension",
    "set_primary",
    "submit",
    "subscribe_scenario",
    "tag",
    "unload_ipython_extension",
    "unsubscribe_scenario",
    "untag",
    "wait_all",
]


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics and the live widgets in ``ipython``.

    Called by ``%load_ext jupyter_scenarios`` or by IPython's ``extensions`` setting.
    """
    from .magics import load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """Remove what ``load_ipython_extension`` installed."""
    from .magics import unload

    unload(ipython)
