"""Text and HTML snapshots of submissions and jobs, without any widget.

The live widgets render their labels and table rows with these functions. They use
them again for the ``text/plain`` and ``text/html`` parts of their display bundle,
which nbconvert, GitHub and terminal IPython show when no widget front end runs. Every
function here is pure: it reads the snapshot objects it is given and returns a string.
"""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from ..enums import FINAL_STATUSES, Status

#: Colour of each job status in tables, labels and the graph view.
STATUS_COLOURS: dict[str, str] = {
    "SUBMITTED": "#757575",
    "BLOCKED": "#757575",
    "PENDING": "#757575",
    "RUNNING": "#1565c0",
    "COMPLETED": "#2e7d32",
    "SKIPPED": "#558b2f",
    "FAILED": "#c62828",
    "CANCELED": "#ef6c00",
    "ABANDONED": "#8d6e63",
    "UNDEFINED": "#8d6e63",
}

#: Statuses from which a job can still be cancelled.
CANCELLABLE_STATUSES = frozenset(
    {Status.SUBMITTED, Status.BLOCKED, Status.PENDING, Status.RUNNING}
)

#: Width of the bar in the text progress line, in characters.
TEXT_BAR_WIDTH = 20

# Columns of the job table: heading and width. Error and output share what is left.
# Widths fit the longest values ("COMPLETED", "12:34:56", a pid) in bold 12 px
# text with the cell padding; Error and Output share the rest of the width.
_COLUMNS: tuple[tuple[str, str | None], ...] = (
    ("Job", "80px"),
    ("Task", "96px"),
    ("Scenario", "96px"),
    ("Status", "100px"),
    ("Started", "76px"),
    ("Duration", "72px"),
    ("Worker", "64px"),
    ("Error", None),
    ("Output", None),
)

# Below min-width the table scrolls sideways instead of cutting the fixed columns.
_TABLE_STYLE = (
    "table-layout:fixed;width:100%;min-width:720px;border-collapse:collapse;"
    "font-size:12px;line-height:1.4;margin:0"
)
_CELL_STYLE = (
    "text-align:left;vertical-align:top;padding:1px 4px;overflow:hidden;"
    "text-overflow:ellipsis;white-space:nowrap"
)
_PRE_STYLE = (
    "white-space:pre-wrap;word-break:break-all;max-height:20em;overflow:auto;"
    "margin:2px 0;font-size:11px"
)


@dataclasses.dataclass(frozen=True)
class JobRow:
    """The values one row of a job table shows for one job."""

    job_id: str
    task_config_id: str
    scenario: str
    status: Status
    started: datetime | None
    duration: float | None
    worker_pid: int | None
    error: str
    traceback: str
    output_tail: str

    @property
    def short_id(self) -> str:
        """The job id without its ``JOB_<task>_`` prefix, cut to 8 characters."""
        return self.job_id.rsplit("_", 1)[-1][:8]

    @property
    def cancellable(self) -> bool:
        return self.status in CANCELLABLE_STATUSES


@dataclasses.dataclass(frozen=True)
class ProgressSnapshot:
    """The state of one submission at one moment, as its progress widget shows it."""

    label: str
    submission_id: str
    status: str
    total: int
    counts: Mapping[Status, int]
    elapsed: float | None
    final: bool

    @property
    def finished(self) -> int:
        """Number of jobs in a final status."""
        return sum(n for status, n in self.counts.items() if status in FINAL_STATUSES)

    @property
    def bar_style(self) -> str:
        """The ipywidgets ``bar_style`` for the outcome so far."""
        if self.counts.get(Status.FAILED):
            return "danger"
        if self.counts.get(Status.CANCELED) or self.counts.get(Status.ABANDONED):
            return "warning"
        if self.final and self.status == "COMPLETED":
            return "success"
        return ""


def format_duration(seconds: float | None, *, running: bool = False) -> str:
    """Format ``seconds`` for a table cell or a progress line.

    A running duration is shown in whole seconds, so its text changes once a second
    rather than at every redraw.
    """
    if seconds is None:
        return "-"
    if running:
        seconds = float(int(seconds))
        if seconds < 60:
            return f"{seconds:.0f} s"
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {rest:02d} s"


def format_counts(counts: Mapping[Status, int]) -> str:
    """Return ``"2 COMPLETED, 1 RUNNING"`` with statuses in their life-cycle order."""
    parts = [
        f"{counts[status]:,} {status.name}" for status in Status if counts.get(status)
    ]
    return ", ".join(parts) or "no jobs"


def _coloured(status: str) -> str:
    colour = STATUS_COLOURS.get(status, "#757575")
    return f'<span style="color:{colour};font-weight:bold">{html.escape(status)}</span>'


# -- progress ----------------------------------------------------------------------------


def progress_text(snapshot: ProgressSnapshot) -> str:
    """Return the one-line text form, e.g. ``sc [####] 4/4 COMPLETED in 10.2 s``."""
    total = snapshot.total
    done = snapshot.finished
    filled = TEXT_BAR_WIDTH if total == 0 else TEXT_BAR_WIDTH * done // total
    bar = "#" * filled + "-" * (TEXT_BAR_WIDTH - filled)
    line = f"{snapshot.label} [{bar}] {done}/{total} {snapshot.status}"
    if snapshot.elapsed is not None:
        elapsed = format_duration(snapshot.elapsed, running=not snapshot.final)
        line += f" in {elapsed}" if snapshot.final else f" {elapsed}"
    return line


def progress_label_html(snapshot: ProgressSnapshot) -> str:
    """Return the label shown beside the live progress bar."""
    parts = [
        f"<b>{html.escape(snapshot.label)}</b>",
        f"{snapshot.finished}/{snapshot.total} jobs finished",
        _coloured(snapshot.status),
    ]
    if snapshot.elapsed is not None:
        parts.append(format_duration(snapshot.elapsed, running=not snapshot.final))
    others: dict[Status, int] = {
        status: n
        for status, n in snapshot.counts.items()
        if status not in (Status.COMPLETED,) and n
    }
    if others and snapshot.final:
        parts.append(html.escape(format_counts(others)))
    return " &middot; ".join(parts)


def progress_html(snapshot: ProgressSnapshot, table: str = "") -> str:
    """Return the HTML snapshot of a submission: a bar, the progress line, a table."""
    total = snapshot.total
    percent = 100 if total == 0 else 100 * snapshot.finished // total
    colour = {
        "success": STATUS_COLOURS["COMPLETED"],
        "danger": STATUS_COLOURS["FAILED"],
        "warning": STATUS_COLOURS["CANCELED"],
    }.get(snapshot.bar_style, STATUS_COLOURS["RUNNING"])
    bar = (
        '<div style="display:inline-block;width:200px;height:12px;background:#e0e0e0;'
        'vertical-align:middle;margin-right:8px">'
        f'<div style="width:{percent}%;height:100%;background:{colour}"></div></div>'
    )
    text = html.escape(progress_text(snapshot))
    return (
        f'<div class="jupyter-scenarios-progress" title="{html.escape(snapshot.submission_id)}">'
        f"{bar}<code>{text}</code>{table}</div>"
    )


# -- job tables ------------------------------------------------------------------------

# Class of the live table rows. Their styles come from one <style> element in the
# table's header, which keeps each row's HTML, sent at every change, small.
_LIVE_CLASS = "jupyter-scenarios-jobs"
# Class of a live row with a traceback or output: a click on the row opens them
# below it, across the whole table width.
_MORE_CLASS = "jupyter-scenarios-jobs-more"


def _colgroup() -> str:
    cols = "".join(
        f'<col style="width:{width}">' if width else "<col>" for _, width in _COLUMNS
    )
    return f"<colgroup>{cols}</colgroup>"


def _live_style() -> str:
    widths = "".join(
        f".{_LIVE_CLASS} td:nth-child({index}),.{_LIVE_CLASS} th:nth-child({index})"
        f"{{width:{width}}}"
        for index, (_, width) in enumerate(_COLUMNS, start=1)
        if width
    )
    return (
        f"<style>.{_LIVE_CLASS}{{{_TABLE_STYLE}}}"
        f".{_LIVE_CLASS} td,.{_LIVE_CLASS} th{{{_CELL_STYLE}}}"
        f".{_LIVE_CLASS} th{{border-bottom:1px solid #bdbdbd}}"
        f".{_MORE_CLASS} pre{{{_PRE_STYLE}}}"
        f".{_MORE_CLASS}>summary{{display:block;cursor:pointer;list-style:none}}"
        f".{_MORE_CLASS}>summary::-webkit-details-marker{{display:none}}"
        f".{_MORE_CLASS}>summary td:first-child::before{{content:'\\25B8 '}}"
        f".{_MORE_CLASS}[open]>summary td:first-child::before{{content:'\\25BE '}}"
        f"{widths}</style>"
    )


def jobs_header_html() -> str:
    """Return the header line of a live job table, with the style of its rows."""
    cells = "".join(f"<th>{name}</th>" for name, _ in _COLUMNS)
    return f'{_live_style()}<table class="{_LIVE_CLASS}"><tr>{cells}</tr></table>'


def job_row_html(row: JobRow) -> str:
    """Return one row of a live job table, styled by ``jobs_header_html``.

    A row with a traceback or output is a ``<details>`` element: a click on it opens
    the full traceback and the output tail below it, with no round trip to the kernel.
    """
    summaries = [html.escape(row.error), html.escape(_last_line(row.output_tail))]
    cells = "".join(f"<td>{value}</td>" for value in _fixed_cells(row) + summaries)
    table = f'<table class="{_LIVE_CLASS}"><tr>{cells}</tr></table>'
    more = ""
    if row.traceback.strip():
        more += f"<pre>{html.escape(row.traceback)}</pre>"
    if row.output_tail.strip():
        lines = len(row.output_tail.splitlines())
        more += f"<b>Output, last {lines} lines</b><pre>{html.escape(row.output_tail)}</pre>"
    if not more:
        return table
    return f'<details class="{_MORE_CLASS}"><summary>{table}</summary>{more}</details>'


def _fixed_cells(row: JobRow) -> list[str]:
    running = row.status is Status.RUNNING
    started = row.started.strftime("%H:%M:%S") if row.started else "-"
    return [
        f'<span title="{html.escape(row.job_id)}">{html.escape(row.short_id)}</span>',
        html.escape(row.task_config_id),
        html.escape(row.scenario),
        _coloured(row.status.name),
        started,
        format_duration(row.duration, running=running),
        "-" if row.worker_pid is None else str(row.worker_pid),
    ]


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _details(summary: str, body: str) -> str:
    if not body.strip() or body.strip() == summary.strip():
        return html.escape(summary)
    return (
        '<details style="white-space:normal">'
        f"<summary>{html.escape(summary) or 'show'}</summary>"
        f'<pre style="{_PRE_STYLE}">{html.escape(body)}</pre></details>'
    )


def _snapshot_cells(row: JobRow) -> list[str]:
    return [
        *_fixed_cells(row),
        _details(row.error, row.traceback),
        _details(_last_line(row.output_tail), row.output_tail),
    ]


def jobs_table_html(rows: Iterable[JobRow], note: str = "") -> str:
    """Return a whole job table (header, rows and ``note``) as one HTML table."""
    header = "".join(f'<th style="{_CELL_STYLE}">{name}</th>' for name, _ in _COLUMNS)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td style="{_CELL_STYLE}">{value}</td>' for value in _snapshot_cells(row)
        )
        + "</tr>"
        for row in rows
    )
    caption = f"<p style='font-size:12px;margin:2px 0'>{html.escape(note)}</p>"
    return (
        f'<table style="{_TABLE_STYLE}">{_colgroup()}<thead><tr>{header}</tr></thead>'
        f"<tbody>{body}</tbody></table>{caption if note else ''}"
    )


def jobs_table_text(rows: Sequence[JobRow], note: str = "") -> str:
    """Return the job table as aligned plain text, one line per job."""
    table = [("job", "task", "status", "duration", "error")]
    for row in rows:
        running = row.status is Status.RUNNING
        table.append(
            (
                row.short_id,
                row.task_config_id,
                row.status.name,
                format_duration(row.duration, running=running),
                row.error,
            )
        )
    widths = [max(len(line[column]) for line in table) for column in range(4)]
    lines = [
        "  ".join(
            [*(cell.ljust(width) for cell, width in zip(line, widths)), line[4]]
        ).rstrip()
        for line in table
    ]
    if note:
        lines.append(note)
    return "\n".join(lines)
