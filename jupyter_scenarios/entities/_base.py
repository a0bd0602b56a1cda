"""Base of every entity: an id, a store, persistence and equality by id."""

from __future__ import annotations

import decimal
import math
import numbers
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, cast

from ..store import encode_doc

if TYPE_CHECKING:
    from ..store import Store
    from .submission import Submission


#: Name of the scheduler's manager thread, on which job callbacks run.
SCHEDULER_THREAD_NAME = "jupyter-scenarios-scheduler"


def checked_timeout(timeout: Any) -> float | None:
    """Return ``timeout`` as the seconds to wait, or None for no limit.

    Raises TypeError for a value that is not a number, ValueError for a negative
    one or NaN. A timeout too long for the platform's locks means no limit.
    """
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(
        timeout, (numbers.Real, decimal.Decimal)
    ):
        raise TypeError(
            f"timeout={timeout!r} is not a number of seconds; give the seconds to "
            "wait (0 or more), or None for no limit."
        )
    try:
        seconds = float(timeout)
    except OverflowError:  # an int or a fraction too large for a float
        seconds = -math.inf if cast(Any, timeout) < 0 else math.inf
    if math.isnan(seconds) or seconds < 0:
        problem = "not a number" if math.isnan(seconds) else "negative"
        raise ValueError(
            f"timeout={timeout!r} is {problem}; give the seconds to wait (0 or "
            "more), or None for no limit."
        )
    return None if seconds >= threading.TIMEOUT_MAX else seconds


def check_wait_allowed(awaited: str, timeout: float | None) -> None:
    """Raise RuntimeError if waiting for ``awaited`` would stop the scheduler's thread.

    A job callback runs on that thread, so a wait there could only time out.
    NOTE: the thread is recognised by its name, so a user thread given the same
    name is rejected too.
    """
    if timeout != 0 and threading.current_thread().name == SCHEDULER_THREAD_NAME:
        raise RuntimeError(
            f"Cannot wait for {awaited} in a job callback: callbacks run on the "
            "scheduler's thread, which must go on to run the jobs. Submit without "
            "wait=True, and act on the result in a callback of the new submission."
        )


def why_missing(entity: Any, store: Store, fix_if_deleted: str) -> str:
    """Return why ``entity``, or a part of it, is not in ``store``, and the fix.

    An entity kept in a variable across a change of storage folder belongs to the
    folder it was created in: nothing was deleted.
    """
    own = getattr(entity, "_store", None)
    if own is not None and own is not store and own.folder != store.folder:
        return (
            f"it belongs to the storage folder {own.folder}, and the orchestrator now "
            f"uses {store.folder}. Configure {own.folder} again "
            "(Config.configure_core(storage_folder=...) or %scenario_config "
            "--storage) to use it."
        )
    return f"it was deleted. {fix_if_deleted}"


#: Interval, in seconds, between two reads of the row of a job or submission that
#: another process runs, while wait() waits for it.
FOREIGN_WAIT_SECONDS = 0.2


def wait_for_other_process(
    is_finished: Callable[[], bool], timeout: float | None
) -> bool:
    """Poll ``is_finished`` until it is true or ``timeout`` seconds pass.

    No event reaches this process when another process, which runs the jobs,
    changes them, so the waiter reads their rows every FOREIGN_WAIT_SECONDS.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while not is_finished():
        if deadline is None:
            time.sleep(FOREIGN_WAIT_SECONDS)
            continue
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(FOREIGN_WAIT_SECONDS, remaining))
    return True


def new_id(prefix: str, name: str) -> str:
    """Return a fresh entity id such as ``SCENARIO_my_scenario_<uuid hex>``."""
    return f"{prefix}{name}_{uuid.uuid4().hex}"


def submit_entity(
    entity: Any,
    callbacks: list[Callable[..., Any]] | None,
    force: bool,
    wait: bool,
    timeout: float | None,
    properties: dict[str, Any],
) -> Submission:
    """Hand ``entity`` to the process's scheduler; the body of every ``submit``."""
    from .. import _runtime

    return _runtime.orchestrator().submit(
        entity,
        callbacks=callbacks,
        force=force,
        wait=wait,
        timeout=timeout,
        **properties,
    )


def to_iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def from_iso(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def to_seconds(value: timedelta | None) -> float | None:
    return value.total_seconds() if value is not None else None


def from_seconds(value: float | None) -> timedelta | None:
    return timedelta(seconds=value) if value is not None else None


class Entity:
    """Base of scenarios, tasks, data nodes, jobs, submissions and cycles.

    Attribute setters call ``_save``, which writes the entity to the store. Inside a
    ``with entity:`` block the writes are deferred and made once when the block ends.
    """

    _kind: ClassVar[str]
    _ID_PREFIX: ClassVar[str]
    id: str

    def __init__(self, store: Store) -> None:
        self._store = store
        self._block_depth = 0
        self._dirty = False

    def _save(self) -> None:
        if self._block_depth:
            self._dirty = True
            return
        self._store.save(self)

    def __enter__(self) -> Any:
        self._block_depth += 1
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._block_depth -= 1
        if self._block_depth == 0 and self._dirty:
            self._dirty = False
            self._store.save(self)

    def _to_doc(self) -> dict[str, Any]:
        raise NotImplementedError

    def _to_row(self) -> tuple[str, Mapping[str, Any]]:
        """Return the document's JSON text and a mapping holding the values of the
        kind's indexed columns (``store.KINDS``), for the store to write."""
        doc = self._to_doc()
        return encode_doc(doc), doc

    def _load_doc(self, doc: dict[str, Any]) -> None:
        raise NotImplementedError

    def _refresh_doc(self, doc: dict[str, Any]) -> None:
        """Take the state another process stored; by default, all of it."""
        self._load_doc(doc)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.id!r})"
