"""Display a progress widget for each submission made in a Jupyter kernel.

``install_auto_display`` adds a submit hook to the runtime: the scheduler calls it on
the submitting thread right after creating the jobs, before any waiting, so the
widget appears under the cell that submitted and updates while
``submit(wait=True)`` blocks.
"""

from __future__ import annotations

import logging

from .. import _runtime
from .._environment import is_kernel
from ..entities import Submission
from ..scheduler import Scheduler
from ._settings import settings
from .progress import SubmissionProgress
from .refresh import refresh_submission_widgets

logger = logging.getLogger(__name__)


def display_submission(submission: Submission) -> None:
    """Display a ``SubmissionProgress`` for ``submission`` when in a kernel.

    This is the submit hook that ``install_auto_display`` installs. It does nothing
    outside a kernel (plain scripts, terminal IPython) and while
    ``settings.auto_display`` is False.
    """
    if not settings.auto_display or not is_kernel():
        return
    from IPython.display import display

    display(SubmissionProgress(submission))  # type: ignore[no-untyped-call]


def install_auto_display() -> None:
    """Display a progress widget for every later submission made in a kernel.

    Adds ``display_submission`` to ``jupyter_scenarios._runtime.submit_hooks``, which
    every scheduler started later copies, and to the running scheduler's hooks.
    Calling it again changes nothing. Turn the display off without uninstalling
    with ``jupyter_scenarios.widgets.settings.auto_display = False``.
    """
    if display_submission not in _runtime.submit_hooks:
        _runtime.submit_hooks.append(display_submission)
    if refresh_submission_widgets not in _runtime.wait_hooks:
        _runtime.wait_hooks.append(refresh_submission_widgets)
    scheduler = _running_scheduler()
    if scheduler is not None and display_submission not in scheduler.submit_hooks:
        scheduler.submit_hooks.append(display_submission)
    if scheduler is not None and refresh_submission_widgets not in scheduler.wait_hooks:
        scheduler.wait_hooks.append(refresh_submission_widgets)
    logger.debug("Progress widgets are displayed for new submissions")


def uninstall_auto_display() -> None:
    """Stop displaying progress widgets for new submissions.

    Widgets already displayed keep updating.
    """
    while display_submission in _runtime.submit_hooks:
        _runtime.submit_hooks.remove(display_submission)
    scheduler = _running_scheduler()
    while scheduler is not None and display_submission in scheduler.submit_hooks:
        scheduler.submit_hooks.remove(display_submission)
    while refresh_submission_widgets in _runtime.wait_hooks:
        _runtime.wait_hooks.remove(refresh_submission_widgets)
    while scheduler is not None and refresh_submission_widgets in scheduler.wait_hooks:
        scheduler.wait_hooks.remove(refresh_submission_widgets)


def _running_scheduler() -> Scheduler | None:
    # Read without _runtime.orchestrator(), which would start a scheduler, or
    # restart it when the settings changed, from inside _runtime.start().
    # TODO: use a public accessor once _runtime offers one.
    return _runtime._state.scheduler
