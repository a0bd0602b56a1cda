"""User settings of the notebook widgets, as one traitlets object."""

from __future__ import annotations

from traitlets import Bool, Float, HasTraits, Int


class WidgetSettings(HasTraits):
    """Settings read by the widgets each time they are used.

    Change them on the process-wide instance,
    ``jupyter_scenarios.widgets.settings``; invalid values raise
    ``traitlets.TraitError`` at once.
    """

    auto_display = Bool(
        True,
        help="Display a progress widget below the cell for each submission made in "
        "a Jupyter kernel (needs install_auto_display(), which %load_ext "
        "jupyter_scenarios calls). Set False to display widgets only when you ask.",
    )
    max_redraws_per_second = Float(
        4.0,
        min=0.1,
        max=60.0,
        help="Maximum number of redraw passes per second (unit: passes per second) "
        "over all live widgets, whatever the rate of job changes. Each pass sends "
        "at most one update message per changed widget.",
    )
    max_rows = Int(
        50,
        min=1,
        max=10_000,
        help="Maximum number of job rows (unit: rows) that a job table displays; "
        "each row costs three widgets in the front end. Read when a table is "
        "created.",
    )


#: The settings object of this process.
settings = WidgetSettings()
