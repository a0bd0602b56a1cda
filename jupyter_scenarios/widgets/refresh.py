"""The one timer thread that redraws every live widget at a bounded rate.

Data flow::

    scheduler thread (or the submitting thread in development mode)
      -> events.bus.publish(event)
      -> RefreshTimer._on_event     marks the widgets the event concerns as dirty
                                    and sets the wake-up event; returns at once
    timer thread "jupyter-scenarios-widgets"
      -> waits for the wake-up event, then for the rest of the rate interval
      -> redraws each dirty widget once, with hold_sync(), so that a thousand job
         changes in one interval cost one update message per changed widget

The thread starts when the first widget becomes live and ends when none is left.
While some live widget shows a running clock, the thread also wakes once a second to
advance it; otherwise it sleeps until an event arrives. Widget state is sent from the
timer thread through the kernel's IOPub socket, which ipykernel allows from any thread
(tested with ipykernel 6.31 and 7.4).

``refresh_all_widgets`` redraws and re-sends every open widget from the calling thread
instead. nbclient and nbconvert record only the messages whose parent is the cell that
runs at that moment, so a final cell that calls it stores the final state in the
executed notebook.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import threading
import time
import weakref
from collections.abc import Iterable
from typing import Any, Protocol

from ..entities import Job, Submission
from ..events import Event, EventEntityType, bus
from ._settings import settings

logger = logging.getLogger(__name__)

#: Name of the timer thread.
THREAD_NAME = "jupyter-scenarios-widgets"

#: Seconds between redraws of widgets that show a running clock.
CLOCK_SECONDS = 1.0

#: Messages and bytes per second that ``refresh_all_widgets`` sends at most, after a
#: first burst of ``RESEND_BURST`` messages or kilobytes. This is half of the default
#: IOPub limits of jupyter_server 2.21 (1,000 messages and 1 MB per second, averaged
#: over 3 s), above which the server drops messages and warns in the notebook.
RESEND_MESSAGES_PER_SECOND = 500
RESEND_BYTES_PER_SECOND = 500_000
RESEND_BURST = 200


class Refreshable(Protocol):
    """The methods the timer calls on a live widget."""

    def _routing_key(self) -> str | None:
        """Return the submission id whose events concern this widget, or None.

        With None, ``_accepts_event`` is asked about every event.
        """

    def _accepts_event(self, event: Event) -> bool:
        """Return whether ``event`` changes what the widget shows.

        Runs on the publishing thread: it must not block or take the redraw lock.
        """

    def _redraw(self) -> None:
        """Bring the child widgets up to date with the entities."""

    def _is_live(self) -> bool:
        """Return whether the widget still follows events."""

    def _needs_clock(self) -> bool:
        """Return whether the widget shows a clock that must advance without events.

        Called with the timer's lock held: it must only read a flag.
        """

    def _resend(self, pacer: Pacer) -> None:
        """Send the state of every child widget again and refresh the displays."""

    def _wait(self, deadline: float | None) -> bool:
        """Wait until what the widget shows is final or ``deadline`` passes.

        ``deadline`` is a ``time.monotonic()`` value, None for no limit. Returns
        whether the widget's jobs are finished.
        """


class Pacer:
    """Spread the state messages sent from one thread under the resend rates."""

    def __init__(self) -> None:
        self._start = time.monotonic()
        self._messages = 0
        self._bytes = 0

    def send_state(self, widget: Any, keys: list[str] | None = None) -> None:
        """Send the state of ``widget``, first sleeping if ahead of the rates.

        ``keys`` names the traits to send; None sends them all.
        """
        state = widget.get_state(keys)
        self._messages += 1
        self._bytes += len(json.dumps(state, default=str))
        due = max(
            (self._messages - RESEND_BURST) / RESEND_MESSAGES_PER_SECOND,
            (self._bytes - RESEND_BURST * 1000) / RESEND_BYTES_PER_SECOND,
        )
        ahead = due - (time.monotonic() - self._start)
        if ahead > 0:
            time.sleep(ahead)
        widget.send_state(keys)


def assign(widget: Any, **values: Any) -> None:
    """Set the traits of ``widget`` that differ from ``values``, in one message."""
    changed = {
        name: value for name, value in values.items() if getattr(widget, name) != value
    }
    if not changed:
        return
    with widget.hold_sync():
        for name, value in changed.items():
            setattr(widget, name, value)


class RefreshTimer:
    """Redraw live widgets from one daemon thread, at most a few times a second."""

    def __init__(self) -> None:
        # Guards _live, _keyed, _catch_all, _dirty, _due, _open, _thread,
        # _subscribed, _turns and passes. Taken by the thread that publishes events (the
        # scheduler's manager thread, or the submitting thread in development mode),
        # by the threads that create and close widgets (usually the kernel's main
        # thread) and by the timer thread. Never held while a widget redraws.
        self._lock = threading.Lock()
        self._live: set[Refreshable] = set()
        self._keyed: dict[str, set[Refreshable]] = {}
        self._catch_all: set[Refreshable] = set()
        self._dirty: set[Refreshable] = set()
        # Widgets to redraw at the first pass after a time.monotonic() value.
        self._due: dict[Refreshable, float] = {}
        self._open: weakref.WeakSet[Refreshable] = weakref.WeakSet()
        self._thread: threading.Thread | None = None
        self._subscribed = False
        # Notified by the timer thread after each turn of its loop and when it stops;
        # flush() waits on it.
        self._turn_done = threading.Condition(self._lock)
        self._turns = 0
        # Set by any thread that marks a widget dirty or changes the live set; cleared
        # and waited on by the timer thread only.
        self._wake = threading.Event()
        #: Number of passes that redrew at least one widget, since the process started.
        self.passes = 0

    # -- registration (any thread) --------------------------------------------------

    def register(self, widget: Refreshable) -> None:
        """Make ``widget`` live: its events mark it dirty and the timer redraws it."""
        key = widget._routing_key()
        with self._lock:
            self._open.add(widget)
            if widget in self._live:
                return
            self._live.add(widget)
            if key is None:
                self._catch_all.add(widget)
            else:
                self._keyed.setdefault(key, set()).add(widget)
            if not self._subscribed:
                bus.subscribe(self._on_event)
                self._subscribed = True
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=THREAD_NAME, daemon=True
                )
                self._thread.start()
        self._wake.set()

    def unregister(self, widget: Refreshable) -> None:
        """Stop following events for ``widget``; the thread ends with the last one."""
        with self._lock:
            self._discard(widget)
        self._wake.set()

    def close(self, widget: Refreshable) -> None:
        """Forget ``widget`` entirely, for ``close()``."""
        with self._lock:
            self._discard(widget)
            self._open.discard(widget)
        self._wake.set()

    def _discard(self, widget: Refreshable) -> None:
        # Caller holds _lock.
        self._live.discard(widget)
        self._dirty.discard(widget)
        self._due.pop(widget, None)
        self._catch_all.discard(widget)
        for key, widgets in list(self._keyed.items()):
            widgets.discard(widget)
            if not widgets:
                del self._keyed[key]
        if not self._live and self._subscribed:
            bus.unsubscribe(self._on_event)
            self._subscribed = False

    def mark_dirty(self, widget: Refreshable) -> None:
        """Ask for a redraw of ``widget`` at the next pass."""
        with self._lock:
            if widget in self._live:
                self._dirty.add(widget)
        self._wake.set()

    def mark_dirty_at(self, widget: Refreshable, when: float) -> None:
        """Ask for a redraw of ``widget`` at the first pass after ``when``.

        ``when`` is a ``time.monotonic()`` value. The timer wakes up for it even
        when no event comes and no clock runs.
        """
        with self._lock:
            if widget in self._live:
                self._due[widget] = min(when, self._due.get(widget, when))
        self._wake.set()

    def open_widgets(self) -> list[Refreshable]:
        """Return the widgets created and not closed, live or not."""
        with self._lock:
            return list(self._open)

    def is_live(self, widget: Refreshable) -> bool:
        """Return whether ``widget`` follows events."""
        with self._lock:
            return widget in self._live

    @property
    def thread(self) -> threading.Thread | None:
        """The timer thread, or None while no widget is live."""
        with self._lock:
            return self._thread

    # -- events (publishing thread) -----------------------------------------------------

    def _on_event(self, event: Event) -> None:
        key = _routing_key_of(event)
        with self._lock:
            candidates = list(self._catch_all)
            if key is not None:
                candidates.extend(self._keyed.get(key, ()))
        accepted = [widget for widget in candidates if widget._accepts_event(event)]
        if not accepted:
            return
        with self._lock:
            self._dirty.update(widget for widget in accepted if widget in self._live)
        self._wake.set()

    # -- the timer thread -------------------------------------------------------------

    def _run(self) -> None:
        logger.debug("Widget refresh thread started")
        next_pass = 0.0
        last_clock = time.monotonic()
        while True:
            with self._lock:
                if not self._live:
                    self._thread = None
                    self._turn_done.notify_all()
                    logger.debug("Widget refresh thread stopped: no live widget left")
                    return
                clock = any(widget._needs_clock() for widget in self._live)
                next_due = min(self._due.values(), default=None)

            # Wait for an event, for the next clock tick while a clock runs, or for
            # the first widget that is due.
            timeout = CLOCK_SECONDS if clock else None
            if next_due is not None:
                until_due = max(0.0, next_due - time.monotonic())
                timeout = until_due if timeout is None else min(timeout, until_due)
            self._wake.wait(timeout)
            self._wake.clear()

            # Keep to the rate limit with one bounded sleep; the events that arrive
            # meanwhile join this pass.
            delay = next_pass - time.monotonic()
            if delay > 0:
                time.sleep(delay)

            now = time.monotonic()
            tick = clock and now - last_clock >= CLOCK_SECONDS
            with self._lock:
                targets = self._dirty
                self._dirty = set()
                if tick:
                    targets |= {w for w in self._live if w._needs_clock()}
                due = [w for w, when in self._due.items() if when <= now]
                for widget in due:
                    del self._due[widget]
                targets.update(due)
            if tick:
                last_clock = now
            for widget in targets:
                _context_for_redraw().run(self.redraw, widget)

            next_pass = time.monotonic() + 1.0 / settings.max_redraws_per_second
            with self._lock:
                if targets:
                    self.passes += 1
                self._turns += 1
                self._turn_done.notify_all()

    def redraw(self, widget: Refreshable) -> None:
        """Redraw ``widget`` on the calling thread; stop following it once final.

        A widget whose redraw raises is logged once and no longer followed, so a
        broken widget cannot flood the log at every pass.
        """
        try:
            widget._redraw()
        except Exception:
            logger.exception(
                "Redrawing %s failed; it no longer follows job changes",
                type(widget).__name__,
            )
            self.unregister(widget)
            return
        if not widget._is_live():
            self.unregister(widget)

    def flush(self, timeout: float) -> bool:
        """Wait until the timer has redrawn every dirty widget; return whether it did.

        For tests and benchmarks; waits at most ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            start = self._turns
            while self._thread is not None and (self._dirty or self._turns == start):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._wake.set()
                self._turn_done.wait(remaining)
        return True


def _context_for_redraw() -> contextvars.Context:
    """Return a context in which the kernel's parent header stays the current one.

    ipykernel sends a thread's messages with the parent header of the latest
    request, and nbclient keeps only those whose parent is the cell that runs. When
    one cell ends and the next starts during a redraw (building a job table takes
    long), the messages sent between the two cells are lost, and the later ones,
    which refer to the widgets those opened, are kept. With one parent header for
    the whole redraw, nbclient keeps only the messages sent before that cell's end,
    and each of them refers only to widgets opened before it.
    """
    context = contextvars.copy_context()
    # A kernel has imported IPython already; a plain script pays for no import here.
    if "IPython" not in sys.modules:
        return context
    from IPython import get_ipython

    kernel = getattr(get_ipython(), "kernel", None)
    if kernel is None:
        return context
    # ipykernel 7.4 keeps the shell's parent header in this context variable.
    # NOTE: ipykernel 6.31 has no such variable. There a redraw's
    # messages go under whichever parent header is current, so a cell that starts
    # during a redraw can leave dangling model references in a headless run that
    # does not end with refresh_all_widgets() or %wait.
    parent_header = getattr(kernel, "_shell_parent", None)
    if isinstance(parent_header, contextvars.ContextVar):
        context.run(parent_header.set, kernel.get_parent("shell"))
    return context


def _routing_key_of(event: Event) -> str | None:
    if event.entity_type is EventEntityType.JOB:
        key = event.metadata.get("submit_id")
        return key if isinstance(key, str) else None
    if event.entity_type is EventEntityType.SUBMISSION:
        return event.entity_id
    return None


#: The timer of this process; every widget of this package uses it.
timer = RefreshTimer()


def refresh_all_widgets(wait: bool = True, timeout: float | None = None) -> bool:
    """Wait for the live submissions, then send every widget's state again.

    Call it in the last cell of a notebook that runs headless (nbconvert, nbclient,
    papermill): those tools keep only the widget messages sent while a cell runs, so
    this stores the final bars and tables in the executed notebook. It also replaces
    the text and HTML forms of each displayed widget with the final ones, which
    GitHub and nbconvert show.

    Parameters
    ----------
    wait
        Wait for every job shown by an open widget to finish first; without it,
        send the state as it is now.
    timeout
        Seconds to wait at most (None: no limit). The state is sent either way.

    Returns
    -------
    bool
        Whether every job shown by an open widget is finished.
    """
    widgets = timer.open_widgets()
    deadline = None if timeout is None else time.monotonic() + timeout
    if not wait:
        deadline = time.monotonic()
    finished = True
    for widget in widgets:
        finished = widget._wait(deadline) and finished
    pacer = Pacer()
    for widget in widgets:
        timer.redraw(widget)
        try:
            widget._resend(pacer)
        except Exception:
            logger.exception("Sending the state of %s failed", type(widget).__name__)
    return finished


def refresh_submission_widgets(submission: Submission) -> None:
    """Send the current state of the open widgets of ``submission`` again.

    Called on the waiting thread when ``submit(wait=True)`` returns, so that a
    headless run stores the final state of that submission's progress widget.
    """
    pacer = Pacer()
    for widget in timer.open_widgets():
        if getattr(widget, "submission", None) is not submission:
            continue
        timer.redraw(widget)
        try:
            widget._resend(pacer)
        except Exception:
            logger.exception("Sending the state of %s failed", type(widget).__name__)


def wait_for_jobs(jobs: Iterable[Job], deadline: float | None) -> bool:
    """Wait until each of ``jobs`` is finished or ``deadline`` passes.

    ``deadline`` is a ``time.monotonic()`` value, None for no limit. Returns whether
    every job finished.
    """
    for job in jobs:
        if job.is_finished():
            continue
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not job.wait(remaining):
            logger.info(
                "Stopped waiting for job %s, which is still %s", job.id, job.status.name
            )
            return False
    return True
