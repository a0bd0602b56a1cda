"""The progress widget of one submission: a bar, a label and its job table."""

from __future__ import annotations

import collections
import time
from datetime import datetime

import ipywidgets as widgets

from ..entities import Job, Submission
from ..entities.submission import FINISHED_SUBMISSION_STATUSES, derive_status
from ..enums import FINAL_STATUSES, Status, SubmissionStatus
from ..events import Event
from ._live import LiveWidgetMixin
from .jobtable import JobListing, JobTable
from .refresh import Pacer, assign, timer, wait_for_jobs
from .render import ProgressSnapshot, progress_html, progress_label_html, progress_text

# Submission statuses that can still change. Once every job is final, the
# submission's own status may lag behind for a moment (the scheduler refreshes it
# after the job's event), so the widget waits for a status outside this set.
_UNFINISHED_SUBMISSION_STATUSES = frozenset(
    {
        SubmissionStatus.SUBMITTED,
        SubmissionStatus.BLOCKED,
        SubmissionStatus.PENDING,
        SubmissionStatus.RUNNING,
    }
)

#: Failed jobs listed under the progress line in the text form, at most.
TEXT_FAILURES_SHOWN = 5

#: Seconds after its creation before the timer adds a progress widget's job table,
#: unless the submission finishes first. Each row takes the kernel's interpreter for
#: about 2 ms (measured on a 2-core machine), so the wait keeps that work away from
#: the code that follows ``submit()``, such as a second ``submit()`` in the cell.
TABLE_DELAY_SECONDS = 0.5


class SubmissionProgress(LiveWidgetMixin, widgets.VBox):  # type: ignore[misc]
    """Live progress of one submission: jobs finished, elapsed time and outcome.

    The bar counts the jobs in a final status. Its colour gives the outcome: green
    when every job completed or was skipped, red as soon as a job failed, orange
    when a job was cancelled or abandoned. The job table sits in a collapsed
    section below.

    Displayed in a notebook, the widget updates itself while the kernel is idle and
    while another cell runs. Its text and HTML forms (for nbconvert, GitHub and
    terminal IPython) are replaced by the final ones when the submission finishes.

    Creating it makes only the bar and its label, so that ``submit()`` returns
    quickly. Each widget costs about a millisecond in a kernel, and a table of 50
    rows has more than 150 widgets. The timer thread adds the collapsed job table
    ``TABLE_DELAY_SECONDS`` after creation, or when the submission finishes;
    reading ``table`` or ``details`` adds it at once.

    Parameters
    ----------
    submission
        The submission to follow.
    max_rows
        Rows of its job table; ``settings.max_rows`` by default.

    Attributes
    ----------
    submission : Submission
    bar : ipywidgets.IntProgress
        Jobs finished (``value``) out of all jobs (``max``).
    label : ipywidgets.HTML
        Scenario, counts, status and elapsed time.
    """

    def __init__(self, submission: Submission, *, max_rows: int | None = None) -> None:
        self.submission = submission
        # Made on this thread: it resolves the jobs and the submitted entity, which
        # the timer thread must not do through the public API.
        self._listing = JobListing(submission, max_rows=max_rows)
        # The list does not change after submit.
        self._jobs: list[Job] = self._listing.jobs()
        self._title = self._listing.title
        total = len(self._jobs)

        snapshot = self.snapshot()
        # One layout for every part that needs no layout of its own: each default
        # layout would be one more widget to open.
        self._plain_layout = widgets.Layout()
        self.bar = widgets.IntProgress(
            min=0,
            max=total,
            value=snapshot.finished,
            bar_style=snapshot.bar_style,
            layout=widgets.Layout(width="240px"),
        )
        self.label = widgets.HTML(
            progress_label_html(snapshot), layout=self._plain_layout
        )
        self._line = widgets.HBox((self.bar, self.label), layout=self._plain_layout)
        super().__init__(children=(self._line,), layout=self._plain_layout)

        # Both built by _add_table, under the redraw lock.
        self._table: JobTable | None = None
        self._details: widgets.Accordion | None = None
        self._table_due = time.monotonic() + TABLE_DELAY_SECONDS
        self._init_live([self.bar, self.label, self._line, self._plain_layout])
        # Both written under the redraw lock; the timer thread reads them without it
        # and only needs a recent value.
        self._final = False
        self._running_clock = True
        # Follow events before the first redraw, so that no change falls between.
        timer.register(self)
        self._redraw(add_table=False)
        if self._final:
            self._add_table()
            timer.unregister(self)
        else:
            timer.mark_dirty_at(self, self._table_due)

    @property
    def table(self) -> JobTable:
        """The ``JobTable`` of the submission's jobs, made on first use."""
        return self._add_table()[0]

    @property
    def details(self) -> widgets.Accordion:
        """The collapsible section that contains ``table``, made on first use."""
        return self._add_table()[1]

    def _add_table(self) -> tuple[JobTable, widgets.Accordion]:
        with self._redraw_lock:
            if self._table is None or self._details is None:
                table = JobTable(follow=False, _listing=self._listing)
                details = widgets.Accordion(
                    children=(table,),
                    titles=(f"Jobs ({len(self._jobs)})",),
                    selected_index=None,
                    layout=self._plain_layout,
                )
                self._owned.extend([table, details])
                self._table, self._details = table, details
                if self._closed:
                    table.close()
                    details.close()
                else:
                    self.children = (self._line, details)
            return self._table, self._details

    # -- Refreshable ---------------------------------------------------------------------

    def _routing_key(self) -> str | None:
        return self.submission.id

    def _accepts_event(self, event: Event) -> bool:
        return True

    def _is_live(self) -> bool:
        return not self._final and not self._closed

    def _needs_clock(self) -> bool:
        return self._running_clock

    def _wait(self, deadline: float | None) -> bool:
        if not wait_for_jobs(self._jobs, deadline):
            return False
        # The scheduler sets the submission's status just after the last job's; wait
        # for it too, when the job statuses add up to a finished one.
        if (
            derive_status(job.status for job in self._jobs)
            in FINISHED_SUBMISSION_STATUSES
        ):
            remaining = (
                None if deadline is None else max(0.0, deadline - time.monotonic())
            )
            return self.submission.wait(remaining)
        return True

    def _redraw(self, *, add_table: bool = True) -> None:
        became_final = False
        with self._redraw_lock:
            if self._closed:
                return
            self.redraws += 1
            snapshot = self.snapshot()
            assign(
                self.bar,
                max=snapshot.total,
                value=snapshot.finished,
                bar_style=snapshot.bar_style,
            )
            assign(self.label, value=progress_label_html(snapshot))
            table = self._table
            if table is not None:
                table._redraw()
            elif add_table and (snapshot.final or time.monotonic() >= self._table_due):
                self._add_table()  # a new table draws itself
            self._running_clock = not snapshot.final
            if snapshot.final and not self._final:
                self._final = became_final = True
        if became_final:
            self._update_displays()

    def _resend(self, pacer: Pacer) -> None:
        # A headless run keeps only the state that was sent, so send the table too.
        self._add_table()
        super()._resend(pacer)

    # -- state -----------------------------------------------------------------------

    def snapshot(self) -> ProgressSnapshot:
        """Return the submission's progress as of now."""
        statuses = [job.status for job in self._jobs]
        counts = collections.Counter(statuses)
        all_final = all(status in FINAL_STATUSES for status in statuses)
        status = self.submission.submission_status
        final = all_final and status not in _UNFINISHED_SUBMISSION_STATUSES

        end = datetime.now()
        if all_final and self._jobs:
            end = max(job.finished_at or end for job in self._jobs)
        elapsed = (end - self.submission.creation_date).total_seconds()
        return ProgressSnapshot(
            label=self._title,
            submission_id=self.submission.id,
            status=status.name,
            total=len(statuses),
            counts=counts,
            elapsed=max(0.0, elapsed),
            final=final,
        )

    def _text_repr(self) -> str:
        with self._redraw_lock:
            snapshot = self.snapshot()
        lines = [progress_text(snapshot)]
        failed = [job for job in self._jobs if job.status is Status.FAILED]
        for job in failed[:TEXT_FAILURES_SHOWN]:
            lines.append(
                f"  FAILED {job.task_config_id} ({job.id}): {job.reason or ''}"
            )
        if len(failed) > TEXT_FAILURES_SHOWN:
            lines.append(
                f"  ... and {len(failed) - TEXT_FAILURES_SHOWN} more failed jobs"
            )
        return "\n".join(lines)

    def _html_repr(self) -> str:
        with self._redraw_lock:
            snapshot = self.snapshot()
            table = self._listing.html()
        return progress_html(snapshot, table)
