"""The event bus between the scheduler and everything that watches it.

The scheduler and the entities publish ``Event`` objects; widgets, magics and user
callbacks subscribe. ``publish`` calls subscribers synchronously on the publishing
thread (often the scheduler's manager thread), so a subscriber must return quickly and
must not block: widgets only record the change and redraw from their own timer.
A subscriber that raises is logged and skipped; it never stops the scheduler.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

logger = logging.getLogger(__name__)


class EventEntityType(enum.Enum):
    SCENARIO = 1
    SEQUENCE = 2
    TASK = 3
    DATA_NODE = 4
    JOB = 5
    CYCLE = 6
    SUBMISSION = 7


class EventOperation(enum.Enum):
    CREATION = 1
    UPDATE = 2
    DELETION = 3
    SUBMISSION = 4


@dataclasses.dataclass(frozen=True)
class Event:
    """A change to one entity."""

    entity_type: EventEntityType
    operation: EventOperation
    entity_id: str
    attribute_name: str | None = None
    attribute_value: Any = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    creation_date: datetime = dataclasses.field(default_factory=datetime.now)


Subscriber = Callable[[Event], None]


class EventBus:
    """Deliver events to subscribers; safe to use from any thread."""

    def __init__(self) -> None:
        # Guards changes to the subscriber tuple. Each change builds a new tuple, so
        # publishers read it without the lock, and a subscriber may subscribe or
        # unsubscribe while it is called.
        self._lock = threading.Lock()
        self._subscribers: tuple[Subscriber, ...] = ()

    def subscribe(self, subscriber: Subscriber) -> Subscriber:
        """Register ``subscriber`` and return it (handy for unsubscribing)."""
        with self._lock:
            self._subscribers = (*self._subscribers, subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Remove ``subscriber``; does nothing if it is not registered."""
        with self._lock:
            subscribers = list(self._subscribers)
            if subscriber in subscribers:
                subscribers.remove(subscriber)
                self._subscribers = tuple(subscribers)

    def publish(self, event: Event) -> None:
        """Call every subscriber with ``event``."""
        subscribers = self._subscribers
        for subscriber in subscribers:
            try:
                subscriber(event)
            except Exception:
                logger.exception(
                    "Event subscriber %r failed on %s of %s",
                    subscriber,
                    event.operation.name,
                    event.entity_id,
                )


#: The process-wide bus; the orchestrator and the widgets use it.
bus = EventBus()
