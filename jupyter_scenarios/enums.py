"""Enumerations shared by every layer: statuses, scopes, frequencies, filter operators.

The member names match Taipy's so that code written for Taipy compares and prints the
same values here.
"""

from __future__ import annotations

import enum


class Status(enum.Enum):
    """Status of a job.

    A job moves SUBMITTED -> BLOCKED or PENDING -> RUNNING -> one of the five final
    statuses (COMPLETED, SKIPPED, FAILED, CANCELED, ABANDONED).
    """

    SUBMITTED = 1
    BLOCKED = 2
    PENDING = 3
    RUNNING = 4
    CANCELED = 5
    FAILED = 6
    COMPLETED = 7
    SKIPPED = 8
    ABANDONED = 9

    # Members are singletons, so identity hashing is correct, and it runs in C:
    # Enum's own __hash__ is a Python call, made many times per job by the sets
    # and counters of statuses.
    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return f"Status.{self.name}"

    @property
    def is_finished(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset(
    {
        Status.COMPLETED,
        Status.SKIPPED,
        Status.FAILED,
        Status.CANCELED,
        Status.ABANDONED,
    }
)


class SubmissionStatus(enum.Enum):
    """Status of a submission, derived from the statuses of its jobs."""

    SUBMITTED = 0
    UNDEFINED = 1
    BLOCKED = 2
    PENDING = 3
    RUNNING = 4
    CANCELED = 5
    FAILED = 6
    COMPLETED = 7

    __hash__ = object.__hash__  # see Status

    def __repr__(self) -> str:
        return f"SubmissionStatus.{self.name}"


class Scope(enum.Enum):
    """Sharing scope of a data node: one per scenario, per cycle, or one for all."""

    SCENARIO = 1
    CYCLE = 2
    GLOBAL = 3

    def __repr__(self) -> str:
        return f"Scope.{self.name}"

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Scope):
            return NotImplemented
        return self.value < other.value

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Scope):
            return NotImplemented
        return self.value <= other.value


class Frequency(enum.Enum):
    """Period of the cycles a scenario belongs to."""

    DAILY = 1
    WEEKLY = 2
    MONTHLY = 3
    QUARTERLY = 4
    YEARLY = 5

    def __repr__(self) -> str:
        return f"Frequency.{self.name}"


class EntityType(enum.Enum):
    """Kind of entity a submission was made for."""

    SCENARIO = "SCENARIO"
    SEQUENCE = "SEQUENCE"
    TASK = "TASK"


class Operator(enum.Enum):
    """Comparison of one filter condition of ``DataNode.filter``."""

    EQUAL = 1
    NOT_EQUAL = 2
    LESS_THAN = 3
    LESS_OR_EQUAL = 4
    GREATER_THAN = 5
    GREATER_OR_EQUAL = 6

    def __repr__(self) -> str:
        return f"Operator.{self.name}"


class JoinOperator(enum.Enum):
    """Join of the conditions of ``DataNode.filter``: all of them (AND) or any (OR)."""

    AND = 1
    OR = 2

    def __repr__(self) -> str:
        return f"JoinOperator.{self.name}"
