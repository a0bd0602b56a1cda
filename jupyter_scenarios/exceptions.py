"""Exceptions raised by jupyter_scenarios.

Each message is a full sentence that names the offending value and the fix.
"""

from __future__ import annotations


def clause(error: object) -> str:
    """Return ``str(error)`` without its final full stop, to go before ". " in a message.

    Some errors end with a full stop and some do not, so a message that quotes one
    and goes on would otherwise show two.
    """
    return str(error).rstrip().removesuffix(".")


class ScenarioError(Exception):
    """Base class of every error raised by jupyter_scenarios."""


class ConfigurationError(ScenarioError, ValueError):
    """A configuration value is invalid or refers to something that does not exist."""


class ConfigurationUpdateBlocked(ConfigurationError):
    """The configuration was changed while it is blocked (inside a worker)."""


class LoadingError(ConfigurationError):
    """A configuration file could not be read or parsed."""


class CycleInGraphError(ConfigurationError):
    """The task graph of a scenario or sequence contains a cycle."""


class NonExistingEntity(ScenarioError, KeyError):
    """An entity id was not found in the store."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class NonExistingScenario(NonExistingEntity):
    pass


class NonExistingTask(NonExistingEntity):
    pass


class NonExistingDataNode(NonExistingEntity):
    pass


class NonExistingJob(NonExistingEntity):
    pass


class NonExistingSequence(NonExistingEntity):
    pass


class NonExistingCycle(NonExistingEntity):
    pass


class NonExistingSubmission(NonExistingEntity):
    pass


class NoData(ScenarioError):
    """A data node was read before anything was written to it."""


class DataNodeIsBeingEdited(ScenarioError):
    """A data node is locked for edition by another editor."""


class DataNodeWritingError(ScenarioError):
    """Writing the outputs of a task failed."""


class InvalidStorageType(ConfigurationError):
    """A data node configuration names a storage type that does not exist."""


class ModeNotAvailable(ConfigurationError):
    """A job execution mode is unknown or cannot be used here."""


class JobNotDeletedException(ScenarioError):
    """A job that is not finished cannot be deleted without force=True."""


class SubmissionNotDeletedException(ScenarioError):
    """A submission that is not finished cannot be deleted."""


class OrchestratorNotBuilt(ScenarioError):
    """The orchestrator service was used before it was started."""


class WorkerDied(ScenarioError):
    """The worker process running a job exited before it returned a result."""


class SubmissionTimeout(ScenarioError, TimeoutError):
    """Waiting for a submission ran past its timeout."""


class SubmissionTimeoutWarning(UserWarning):
    """``submit(wait=True, timeout=...)`` returned before the submission finished."""


class TaskFailed(ScenarioError):
    """A job failed; carries the traceback formatted where the task ran.

    IPython shows the worker-side traceback, every frame, as it would a local error
    (through ``_render_traceback_``).
    """

    def __init__(self, job_id: str, task_config_id: str, stacktrace: list[str]) -> None:
        self.job_id = job_id
        self.task_config_id = task_config_id
        self.stacktrace = list(stacktrace)
        last = stacktrace[-1].strip().splitlines()[-1] if stacktrace else "no traceback"
        super().__init__(f"Job {job_id} of task {task_config_id!r} failed: {last}")

    def _render_traceback_(self) -> list[str]:
        header = (
            f"Job {self.job_id} of task {self.task_config_id!r} failed in its worker:"
        )
        lines = [header]
        for trace in self.stacktrace:
            lines.extend(trace.rstrip("\n").splitlines())
        return lines
