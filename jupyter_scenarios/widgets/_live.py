"""The base of the live widgets: display ids, text and HTML forms, and closing.

Each live widget is displayed under a display id of its own, so that its text and
HTML forms can be replaced by the final ones once its jobs finish (see
``LiveWidgetMixin._update_displays``).
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

from ipywidgets import Accordion, Layout
from ipywidgets.widgets.widget_style import Style

from .._environment import is_kernel
from .refresh import Pacer, timer

#: The MIME type under which a front end finds the model of a widget to show.
WIDGET_VIEW_MIMETYPE = "application/vnd.jupyter.widget-view+json"

# Widgets whose state is fixed once created.
_FIXED = (Layout, Style)

logger = logging.getLogger(__name__)


def _parts(widget: Any) -> list[Any]:
    """Return ``widget`` with its layout and style, the widgets it always holds."""
    parts = [widget]
    for name in ("layout", "style"):
        part = getattr(widget, name, None)
        if isinstance(part, _FIXED):
            parts.append(part)
    return parts


def _resent_keys(widget: Any) -> list[str] | None:
    """Return the traits of ``widget`` that a resend may overwrite, or None for all.

    An Accordion's ``selected_index`` changes in the front end on a click. The
    kernel learns of it only when its main thread handles the message, after the
    running cell, so resending the kernel's value would close a section that a
    person opened while ``submit(wait=True)`` blocked.
    """
    if isinstance(widget, Accordion):
        return [key for key in widget.keys if key != "selected_index"]
    return None


def _send_with_parts(widget: Any, pacer: Pacer, sent: set[str]) -> None:
    for part in _parts(widget):
        if part.comm is not None and part.model_id not in sent:
            sent.add(part.model_id)
            pacer.send_state(part, _resent_keys(part))


class LiveWidgetMixin:
    """Display, representation and closing shared by the live widgets.

    Put it before the ipywidgets base class. Subclasses call ``_init_live`` at the
    end of ``__init__`` and implement ``_text_repr``, ``_html_repr`` and the
    ``refresh.Refreshable`` methods.
    """

    _redraw_lock: threading.RLock
    _display_id: str
    _displayed: bool
    _closed: bool
    _owned: list[Any]
    #: Number of redraws since creation, from any thread.
    redraws: int

    def _init_live(self, owned: list[Any]) -> None:
        # Guards the child widgets' traits, the row assignments and the cached
        # snapshots. Taken by the timer thread (redraws), by the thread that calls
        # refresh_all_widgets or a repr, and by the kernel's main thread (button
        # clicks). Never held while cancelling a job or sending a display update.
        self._redraw_lock = threading.RLock()
        self._display_id = f"jupyter-scenarios-{uuid.uuid4().hex}"
        self._displayed = False
        self._closed = False
        self._owned = owned
        self.redraws = 0

    # -- representations ---------------------------------------------------------------

    def _text_repr(self) -> str:
        raise NotImplementedError

    def _html_repr(self) -> str:
        raise NotImplementedError

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle: dict[str, Any] = {}
        if not self._closed:
            # ipywidgets' own bundle also contains a text form, the repr of every
            # child widget, which took half of a display's time under cProfile.
            bundle[WIDGET_VIEW_MIMETYPE] = {
                "version_major": 2,
                "version_minor": 0,
                "model_id": self.model_id,  # type: ignore[attr-defined]
            }
        bundle["text/plain"] = self._text_repr()
        bundle["text/html"] = self._html_repr()
        return bundle

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(self._text_repr())

    def _ipython_display_(self) -> None:
        from IPython.display import display

        self._displayed = True
        display(  # type: ignore[no-untyped-call]
            self._repr_mimebundle_(), raw=True, display_id=self._display_id
        )

    def _update_displays(self) -> None:
        """Replace the text and HTML forms of every display of this widget.

        Only in a kernel: terminal IPython would print the text again.
        """
        # NOTE: JupyterLab 4 renders the output again on update_display, with new
        # views of the same models, so a traceback opened in the table closes then.
        if not self._displayed or self._closed or not is_kernel():
            return
        from IPython.display import update_display

        update_display(  # type: ignore[no-untyped-call]
            self._repr_mimebundle_(), raw=True, display_id=self._display_id
        )

    # -- state and closing -----------------------------------------------------------

    def _resend(self, pacer: Pacer) -> None:
        self._send_state_tree(pacer)
        self._update_displays()

    def _send_state_tree(self, pacer: Pacer, sent: set[str] | None = None) -> None:
        """Send the state of this widget and of every widget it contains.

        Every trait is sent except an Accordion's ``selected_index`` (see
        ``_resent_keys``).

        Layouts and styles too, although they never change: the timer thread adds
        a progress widget's table, and nbclient loses the messages it sends
        between two cells, the opening of those widgets among them. ``sent``
        contains the model ids already sent by this call, because parts are shared.
        """
        sent = set() if sent is None else sent
        with self._redraw_lock:
            if self._closed:
                return
            for widget in self._owned:
                if isinstance(widget, LiveWidgetMixin):
                    widget._send_state_tree(pacer, sent)
                else:
                    _send_with_parts(widget, pacer, sent)
            _send_with_parts(self, pacer, sent)

    def _wait(self, deadline: float | None) -> bool:
        return True

    def close(self) -> None:
        """Stop following job changes and close this widget and its children."""
        lock = getattr(self, "_redraw_lock", None)
        if lock is None:  # closed by ipywidgets before _init_live ran
            super().close()  # type: ignore[misc]
            return
        with lock:
            if self._closed:
                return
            self._closed = True
        timer.close(self)  # type: ignore[arg-type]
        for widget in self._owned:
            for part in _parts(widget):
                part.close()
        layout_and_style = _parts(self)[1:]
        super().close()  # type: ignore[misc]
        # ipywidgets 8.1's close() sets _repr_mimebundle_ to None on the instance,
        # which would hide this class's text and HTML forms of a closed widget.
        vars(self).pop("_repr_mimebundle_", None)
        for part in layout_and_style:
            part.close()
