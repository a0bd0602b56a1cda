"""The progress widget of one submission: a bar, a label and its job table."""

from __future__ import annotations

import collections
import time
from datetime import datetime

import ipywidgets as widgets

from .. import api
from ..entities import Job, Submission
from ..entities.submission import FINISHED_SUBMISSION_STATUSES, derive_status
from ..enums import FINAL_STATUSES, Status, SubmissionStatus
from ..events import Event
from ._live import LiveWidgetMixin
from .jobtable import JobTable, submitted_label
from .refresh import assign, timer, wait_for_jobs
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


class SubmissionProgress(LiveWidgetMixin, widgets.VBox):  # type: ignore[misc]
    """Live progress of one submission: jobs finished, elapsed time and outcome.

    The bar counts the jobs in a final status. Its colour gives the outcome: green
    when every job completed or was skipped, red as soon as a job failed, orange
    when a job was cancelled or abandoned. The job table sits in a collapsed
    section below.

    Displayed in a notebook, the widget updates itself while the kernel is idle and
    while another cell runs. Its text and HTML forms (for nbconvert, GitHub and
    terminal IPython) are replaced by the final ones when the submission finishes.

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
    table : JobTable
        The jobs of the submission.
    details : ipywidgets.Accordion
        The collapsible section that contains ``table``.
    """

    def __init__(self, submission: Submission, *, max_rows: int | None = None) -> None:
        self.submission = submission
        # Resolved once on this thread; the list does not change after submit.
        self._jobs: list[Job] = submission.jobs
        total = len(self._jobs)

        self.bar = widgets.IntProgress(
            min=0, max=total, value=0, layout=widgets.Layout(width="240px")
        )
        self.label = widgets.HTML()
        line = widgets.HBox((self.bar, self.label))
        self.table = JobTable(submission, max_rows=max_rows, follow=False)
        self.details = widgets.Accordion(
            children=(self.table,), titles=(f"Jobs ({total})",), selected_index=None
        )
        super().__init__(children=(line, self.details))
        self._title = submitted_label(submission.entity_id, api.get)

        self._init_live([self.bar, self.label, line, self.table, self.details])
        # Both written under the redraw lock; the timer thread reads them without it
        # and only needs a recent value.
        self._final = False
        self._running_clock = True
        # Follow events before the first redraw, so that no change falls between.
        timer.register(self)
        self._redraw()
        if self._final:
            timer.unregister(self)

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

    def _redraw(self) -> None:
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
            self.table._redraw()
            self._running_clock = not snapshot.final
            if snapshot.final and not self._final:
                self._final = became_final = True
        if became_final:
            self._update_displays()

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
            table = self.table._html_repr()
        return progress_html(snapshot, table)
