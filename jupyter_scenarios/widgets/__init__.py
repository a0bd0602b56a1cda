"""Live notebook widgets for submissions, jobs and task graphs.

- ``SubmissionProgress(submission)``: a bar of jobs finished, the elapsed time and
  the outcome, with the submission's ``JobTable`` in a collapsible section.
- ``JobTable(submission)`` and ``jobs_table()``: one row per job, with errors,
  output and a Cancel button; ``jobs_table()`` covers every job in the store.
- ``GraphView(scenario)`` and ``graph_html(scenario)``: the task graph in SVG, tasks
  coloured by the status of their latest job.

Widgets follow ``jupyter_scenarios.events.bus`` and are redrawn by one timer thread
at most ``settings.max_redraws_per_second`` times a second (see ``refresh``). Each
also has a text and an HTML form for places without a widget front end.

``install_auto_display()`` displays a ``SubmissionProgress`` under each cell that
submits, in a Jupyter kernel only; ``settings.auto_display = False`` turns it off.
Run headless (nbconvert, nbclient, papermill), end the notebook with a cell calling
``refresh_all_widgets()`` so that the saved notebook contains the final state.
"""

from __future__ import annotations

from .._environment import is_kernel
from ._settings import WidgetSettings, settings
from .auto import display_submission, install_auto_display, uninstall_auto_display
from .graph_view import GraphView, graph_html
from .jobtable import JobTable
from .progress import SubmissionProgress
from .refresh import refresh_all_widgets

__all__ = [
    "GraphView",
    "JobTable",
    "SubmissionProgress",
    "WidgetSettings",
    "display_submission",
    "graph_html",
    "install_auto_display",
    "is_kernel",
    "jobs_table",
    "refresh_all_widgets",
    "settings",
    "uninstall_auto_display",
]


def jobs_table(*, max_rows: int | None = None) -> JobTable:
    """Return a live table of every job in the store, used by ``%jobs``.

    Jobs of later submissions join the table as they are created.

    Parameters
    ----------
    max_rows
        Rows shown at most; ``settings.max_rows`` by default.
    """
    return JobTable(max_rows=max_rows)
