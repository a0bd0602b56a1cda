"""The live job table: one row per job, with a Cancel button on unfinished jobs.

Rows are made once, when the table is created, and reused: a redraw only changes the
HTML of the rows whose job changed and which rows are listed, so it stays cheap at any
job count. A table shows at most ``max_rows`` rows. When there are more jobs,
unfinished jobs come first (running ones on top), then the most recently finished,
and a line under the table gives the number of jobs not shown.
"""

from __future__ import annotations

import collections
import heapq
import html
import logging
import os
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
from ipywidgets.widgets.widget_string import HTMLStyle

from .. import _runtime, api
from ..entities import Job, Submission
from ..enums import FINAL_STATUSES, Status
from ..events import Event, EventEntityType, EventOperation
from ._live import LiveWidgetMixin
from ._settings import settings
from .refresh import assign, timer, wait_for_jobs
from .render import (
    CANCELLABLE_STATUSES,
    JobRow,
    format_counts,
    job_row_html,
    jobs_header_html,
    jobs_table_html,
    jobs_table_text,
)

if TYPE_CHECKING:
    from ..store import Store

logger = logging.getLogger(__name__)

#: Lines of captured output shown per job.
OUTPUT_TAIL_LINES = 5

# Bytes read from the end of a job's log to find its last lines. A running job's log
# can be large, and only its tail is shown.
_TAIL_BYTES = 16 * 1024


def read_output_tail(path: Path, lines: int = OUTPUT_TAIL_LINES) -> str:
    """Return the last ``lines`` lines of the log file at ``path``.

    Reads at most the last 16 KiB, so it costs the same for any log size. The result
    equals ``Job.logs_tail(lines)`` whenever those lines fit in that many bytes.
    """
    try:
        with open(path, "rb") as log:
            size = log.seek(0, os.SEEK_END)
            log.seek(max(0, size - _TAIL_BYTES))
            data = log.read()
    except FileNotFoundError:
        return ""
    text = data.decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def submitted_label(entity_id: str, resolve: Callable[[str], Any]) -> str:
    """Return the simple label of the submitted entity, or its id if it is gone."""
    entity = resolve(entity_id)
    if entity is None:
        return entity_id
    return str(entity.get_simple_label())


# -- where the jobs come from ------------------------------------------------------------


class _SubmissionJobs:
    """The fixed list of jobs of one submission."""

    def __init__(self, submission: Submission) -> None:
        self.submission = submission
        # Resolved on the creating thread, once: the list never changes after submit.
        self._jobs = submission.jobs
        self.label = submitted_label(submission.entity_id, api.get)

    def routing_key(self) -> str | None:
        return self.submission.id

    def accepts(self, event: Event) -> bool:
        return True

    def jobs(self) -> list[Job]:
        return self._jobs

    def scenario_label(self, job: Job) -> str:
        return self.label


class _StoreJobs:
    """Every job in the store, including the jobs of later submissions.

    The table follows the store that was current when it was created; after the
    orchestrator restarts with another storage folder, create a new table.
    """

    def __init__(self) -> None:
        # Resolved on the creating thread. Later lookups go to this store object
        # directly: the public API would start (or restart) the runtime from the
        # timer thread.
        self._store: Store = _runtime.store()
        self._jobs: list[Job] = api.get_jobs()
        self._known = {job.id for job in self._jobs}
        self._labels: dict[str, str] = {}
        # Guards _new_ids. Taken by the publishing thread (scheduler or submitter),
        # which appends, and by the redrawing thread, which takes the list.
        self._new_ids_lock = threading.Lock()
        self._new_ids: list[str] = []

    def routing_key(self) -> str | None:
        return None

    def accepts(self, event: Event) -> bool:
        if event.entity_type is not EventEntityType.JOB:
            return False
        if event.operation is EventOperation.CREATION:
            with self._new_ids_lock:
                self._new_ids.append(event.entity_id)
        return True

    def jobs(self) -> list[Job]:
        with self._new_ids_lock:
            new_ids, self._new_ids = self._new_ids, []
        for job_id in new_ids:
            if job_id in self._known or self._store.closed:
                continue
            job = self._store.get(job_id)
            if isinstance(job, Job):
                self._jobs.append(job)
                self._known.add(job_id)
        return self._jobs

    def scenario_label(self, job: Job) -> str:
        entity_id = job.submit_entity_id
        label = self._labels.get(entity_id)
        if label is None:
            resolve = self._store.get if not self._store.closed else _no_entity
            label = self._labels[entity_id] = submitted_label(entity_id, resolve)
        return label


def _no_entity(entity_id: str) -> None:
    return None


# -- rows --------------------------------------------------------------------------------


class _SharedParts:
    """Layouts and styles shared by every row of one table, to save widgets."""

    def __init__(self) -> None:
        # The cells' tables need 720 px (see render._TABLE_STYLE); the table widget
        # scrolls sideways below that instead of cutting columns.
        self.cell_layout = widgets.Layout(flex="1 1 0%", min_width="720px", margin="0")
        self.row_layout = widgets.Layout(margin="0", align_items="flex-start")
        self.button_layout = widgets.Layout(
            width="76px", height="22px", margin="0 0 0 4px", padding="0"
        )
        self.button_style = widgets.ButtonStyle()
        self.html_style = HTMLStyle()
        # Fills the button column of rows without a button, and of the header.
        self.spacer = widgets.HTML(layout=widgets.Layout(width="80px", margin="0"))

    def widgets(self) -> list[Any]:
        return [
            self.cell_layout,
            self.row_layout,
            self.button_layout,
            self.button_style,
            self.html_style,
            self.spacer,
        ]


class _Row:
    """The widgets of one table row and the job they show now."""

    def __init__(self, shared: _SharedParts, on_cancel: Callable[[_Row], None]) -> None:
        self.html = widgets.HTML(layout=shared.cell_layout, style=shared.html_style)
        self.button = widgets.Button(
            description="Cancel",
            tooltip="Cancel this job and abandon the jobs that need its outputs",
            button_style="warning",
            layout=shared.button_layout,
            style=shared.button_style,
        )
        self.button.on_click(lambda _button: on_cancel(self))
        self._spacer = shared.spacer
        self.box = widgets.HBox((self.html, self._spacer), layout=shared.row_layout)
        self.job: Job | None = None

    def show(self, job: Job, row: JobRow) -> None:
        self.job = job
        assign(self.html, value=job_row_html(row))
        assign(self.button, description="Cancel", disabled=False)
        tail = self.button if row.cancellable else self._spacer
        assign(self.box, children=(self.html, tail))

    def widgets(self) -> list[Any]:
        return [self.html, self.button, self.box]


# -- the table -----------------------------------------------------------------------


class JobTable(LiveWidgetMixin, widgets.VBox):  # type: ignore[misc]
    """A live table of jobs with their status, timings, errors and output.

    Each row shows the job id, task, submitted scenario, status, start time, running
    time, worker process id, error and the last lines the task printed. The short job
    id has the full id as its tooltip, and a click on the error opens the full
    traceback. Unfinished jobs have a Cancel button that calls
    ``jupyter_scenarios.cancel_job``.

    Parameters
    ----------
    submission
        Show the jobs of this submission. Without it, show every job in the store,
        including the jobs of later submissions.
    max_rows
        Rows shown at most; ``settings.max_rows`` by default. When there are more
        jobs, unfinished ones come first, then the most recently finished.
    follow
        Redraw on job changes. ``SubmissionProgress`` passes False for its own table,
        which it redraws itself.

    Attributes
    ----------
    rows_box : ipywidgets.VBox
        The box listing the rows currently shown.
    note : ipywidgets.HTML
        The line under the table: counts by status and how many jobs are hidden.
    """

    def __init__(
        self,
        submission: Submission | None = None,
        *,
        max_rows: int | None = None,
        follow: bool = True,
        _listing: JobListing | None = None,
    ) -> None:
        # _listing: made by SubmissionProgress on the submitting thread, which then
        # builds this table on the timer thread (see SubmissionProgress.table).
        if _listing is None:
            _listing = JobListing(submission, max_rows=max_rows)
        self._listing = _listing
        self.max_rows = _listing.capacity

        shared = _SharedParts()
        self._rows = [_Row(shared, self._cancel_row) for _ in range(self.max_rows)]
        header_html = widgets.HTML(
            jobs_header_html(), layout=shared.cell_layout, style=shared.html_style
        )
        header = widgets.HBox((header_html, shared.spacer), layout=shared.row_layout)
        self.rows_box = widgets.VBox(layout=widgets.Layout(margin="0"))
        self.note = widgets.HTML(style=shared.html_style)
        super().__init__(
            children=(header, self.rows_box, self.note),
            # Scrolls sideways when the columns are wider than the output area.
            layout=widgets.Layout(width="100%", overflow="auto hidden"),
        )

        owned = [header_html, header, self.rows_box, self.note, *shared.widgets()]
        for row in self._rows:
            owned.extend(row.widgets())
        self._init_live(owned)
        # Written under the redraw lock; read without it by the timer thread, which
        # only needs a recent value.
        self._has_unfinished = False
        # Follow events before the first redraw, so that no change falls between.
        if follow:
            timer.register(self)
        self._redraw()
        if follow and not self._is_live():
            timer.unregister(self)

    # -- Refreshable ---------------------------------------------------------------------

    def _routing_key(self) -> str | None:
        return self._listing.source.routing_key()

    def _accepts_event(self, event: Event) -> bool:
        return self._listing.source.accepts(event)

    def _is_live(self) -> bool:
        if self._closed:
            return False
        # A submission's table is done once its jobs are; the store-wide table
        # follows new submissions until it is closed.
        return isinstance(self._listing.source, _StoreJobs) or self._has_unfinished

    def _needs_clock(self) -> bool:
        return self._has_unfinished

    def _wait(self, deadline: float | None) -> bool:
        return wait_for_jobs(self._listing.jobs(), deadline)

    def _redraw(self) -> None:
        with self._redraw_lock:
            if self._closed:
                return
            self.redraws += 1
            shown, rows, note, unfinished = self._listing.collect()
            for widget_row, job, row in zip(self._rows, shown, rows):
                widget_row.show(job, row)
            used = tuple(widget_row.box for widget_row in self._rows[: len(shown)])
            assign(self.rows_box, children=used)
            assign(self.note, value=f"<small>{html.escape(note)}</small>")
            self._has_unfinished = unfinished

    # -- reprs ------------------------------------------------------------------------

    def _text_repr(self) -> str:
        return self._listing.text()

    def _html_repr(self) -> str:
        return self._listing.html()

    # -- cancelling (kernel main thread, on a click) -----------------------------------------

    def _cancel_row(self, row: _Row) -> None:
        with self._redraw_lock:
            job = row.job
            if job is None or job.status not in CANCELLABLE_STATUSES:
                return
            assign(row.button, description="Cancelling", disabled=True)
        try:
            api.cancel_job(job)
        except Exception:
            logger.exception("Cancelling job %s from the job table failed", job.id)
        # A job that could not be cancelled gets its button back at once.
        self._redraw()


# -- what to show ------------------------------------------------------------------------


class JobListing:
    """The jobs a table lists, their order and the text of each row.

    The part of a ``JobTable`` that needs no widget: its text and HTML forms come
    from here too, so a ``SubmissionProgress`` can show them before its table's
    widgets exist. Safe to call from any thread.

    Parameters
    ----------
    submission
        List the jobs of this submission; without it, every job in the store.
    max_rows
        Rows listed at most; ``settings.max_rows`` by default.
    """

    def __init__(
        self, submission: Submission | None = None, *, max_rows: int | None = None
    ) -> None:
        capacity = settings.max_rows if max_rows is None else max_rows
        if capacity < 1:
            raise ValueError(f"max_rows must be at least 1, got {capacity}.")
        if submission is not None:
            capacity = min(capacity, max(1, len(submission.job_ids)))
        #: Rows listed at most.
        self.capacity = capacity
        self.source: _SubmissionJobs | _StoreJobs
        if submission is not None:
            self.source = _SubmissionJobs(submission)
            #: The submitted entity's label, or its id if it is gone; empty when
            #: the listing is of every job.
            self.title = self.source.label
        else:
            self.source = _StoreJobs()
            self.title = ""
        # Guards _log_tails and the source's job list. Taken by the thread that
        # redraws the table and by the threads that ask for its text or HTML.
        self._lock = threading.Lock()
        # Last lines of each listed job's log, with the log's size and modification
        # time when read.
        self._log_tails: dict[str, tuple[int, int, str]] = {}

    def jobs(self) -> list[Job]:
        """Return every job the listing chooses from, listed or not."""
        with self._lock:
            return list(self.source.jobs())

    def text(self) -> str:
        """Return the listing as plain-text lines."""
        _, rows, note, _ = self.collect()
        return jobs_table_text(rows, note)

    def html(self) -> str:
        """Return the listing as an HTML table."""
        _, rows, note, _ = self.collect()
        return jobs_table_html(rows, note)

    def collect(self) -> tuple[list[Job], list[JobRow], str, bool]:
        """Return the jobs listed, their rows, the note and whether any job is unfinished."""
        with self._lock:
            return self._collect()

    def _collect(self) -> tuple[list[Job], list[JobRow], str, bool]:
        # Caller holds _lock.
        jobs = self.source.jobs()
        # Read each status once, so that the rows and counts of one redraw agree.
        statuses = [job.status for job in jobs]
        indices = _select(jobs, statuses, self.capacity)
        shown = [jobs[index] for index in indices]
        rows = [self._describe(jobs[index], statuses[index]) for index in indices]
        self._forget_tails({job.id for job in shown})

        counts = collections.Counter(statuses)
        note = f"{len(jobs):,} job{'' if len(jobs) == 1 else 's'}: {format_counts(counts)}."
        hidden = len(jobs) - len(shown)
        if hidden:
            note += (
                f" {hidden:,} more are not shown: unfinished jobs come first, then "
                "the most recently finished. Raise "
                "jupyter_scenarios.widgets.settings.max_rows for larger tables."
            )
        unfinished = any(status not in FINAL_STATUSES for status in statuses)
        return shown, rows, note, unfinished

    def _describe(self, job: Job, status: Status) -> JobRow:
        error, traceback = _error_of(job, status)
        return JobRow(
            job_id=job.id,
            task_config_id=job.task_config_id,
            scenario=self.source.scenario_label(job),
            status=status,
            started=job.run_at,
            duration=job.execution_duration,
            worker_pid=job.worker_pid,
            error=error,
            traceback=traceback,
            output_tail=self._output_tail(job),
        )

    def _output_tail(self, job: Job) -> str:
        path = job.log_path
        try:
            stat = path.stat()
        except FileNotFoundError:
            return ""
        cached = self._log_tails.get(job.id)
        if cached is not None and cached[:2] == (stat.st_size, stat.st_mtime_ns):
            return cached[2]
        tail = read_output_tail(path)
        self._log_tails[job.id] = (stat.st_size, stat.st_mtime_ns, tail)
        return tail

    def _forget_tails(self, shown_ids: set[str]) -> None:
        for job_id in [job_id for job_id in self._log_tails if job_id not in shown_ids]:
            del self._log_tails[job_id]


def _error_of(job: Job, status: Status) -> tuple[str, str]:
    """Return the one-line error of ``job`` and its full traceback, if any."""
    if status is Status.FAILED:
        traceback = "".join(job.stacktrace)
        lines = [line for line in traceback.splitlines() if line.strip()]
        summary = job.reason or (lines[-1] if lines else "failed")
        return summary, traceback
    if status in (Status.CANCELED, Status.ABANDONED):
        return job.reason or "", ""
    return "", ""


def _select(
    jobs: Sequence[Job], statuses: Sequence[Status], capacity: int
) -> list[int]:
    """Return the indices of the jobs to show, in display order.

    All jobs in their own order when they fit. Otherwise unfinished jobs first
    (running ones on top), keeping at least half the rows for the most recently
    finished jobs when there are that many, newest first.
    """
    if len(jobs) <= capacity:
        return list(range(len(jobs)))
    running = [i for i, status in enumerate(statuses) if status is Status.RUNNING]
    waiting = [
        i
        for i, status in enumerate(statuses)
        if status not in FINAL_STATUSES and status is not Status.RUNNING
    ]
    finished = [i for i, status in enumerate(statuses) if status in FINAL_STATUSES]

    finished_quota = min(len(finished), capacity // 2)
    unfinished = (running + waiting)[: capacity - finished_quota]
    recent = heapq.nlargest(
        capacity - len(unfinished),
        finished,
        key=lambda i: jobs[i].finished_at or datetime.min,
    )
    return unfinished + recent
