"""Prove that the kernel, JupyterLab and browser fixtures work, using plain ipywidgets."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.kernel import (
    WIDGET_VIEW_MIMETYPE,
    JupyterDirs,
    KernelSession,
    cell_stdout,
    kernel_session,
    make_notebook,
    run_cells,
    stored_widget_models,
)
from helpers.lab import LabNotebookPage, LabServer
from helpers.processes import pid_running

# A thread moves the bar from 0 to 10. The notebook tests rely on the first cell
# finishing while the thread still runs.
PROGRESS_CELL = """\
import threading
import time

import ipywidgets as widgets
from IPython.display import display

bar = widgets.IntProgress(value=0, min=0, max=10, description="work")
display(bar)


def advance(step_seconds):
    for step in range(1, 11):
        time.sleep(step_seconds)
        bar.value = step


worker = threading.Thread(target=advance, args=({step_seconds},), name="progress-worker")
worker.start()
"""

# nbclient keeps only messages sent while a cell runs, so this cell waits for the
# thread and sends the final state again.
RESEND_STATE_CELL = """\
worker.join(timeout=30)
assert not worker.is_alive(), "progress worker still running"
bar.send_state()
print("final value", bar.value)
"""


def test_nbclient_stores_final_widget_state(
    tmp_path: Path, jupyter_dirs: JupyterDirs
) -> None:
    notebook = run_cells(
        [PROGRESS_CELL.format(step_seconds=0.05), RESEND_STATE_CELL],
        tmp_path,
        dirs=jupyter_dirs,
        timeout=60,
    )

    views = [
        output["data"][WIDGET_VIEW_MIMETYPE]
        for output in notebook.cells[0].outputs
        if WIDGET_VIEW_MIMETYPE in output.get("data", {})
    ]
    assert len(views) == 1
    assert cell_stdout(notebook.cells[1]) == "final value 10\n"

    bars = stored_widget_models(notebook, "IntProgressModel")
    assert list(bars) == [views[0]["model_id"]]
    assert bars[views[0]["model_id"]]["state"]["value"] == 10


def test_kernel_session_returns_stream_output(
    kernel: KernelSession, tmp_path: Path
) -> None:
    result = kernel.execute("import os, sys\nprint(sys.executable)\nprint(os.getcwd())")

    assert result.status == "ok"
    assert result.errors == []
    assert result.stdout.splitlines() == [sys.executable, str(tmp_path)]


def test_kernel_session_returns_errors(kernel: KernelSession) -> None:
    result = kernel.execute("import sys\nprint('to stderr', file=sys.stderr)\n1 / 0")

    assert result.status == "error"
    assert [error["ename"] for error in result.errors] == ["ZeroDivisionError"]
    assert result.stderr == "to stderr\n"
    with pytest.raises(AssertionError, match="ZeroDivisionError"):
        result.check()


def test_kernel_session_tracks_widget_comms(kernel: KernelSession) -> None:
    result = kernel.execute(PROGRESS_CELL.format(step_seconds=0.05)).check()

    assert any(m["msg_type"] == "comm_open" for m in result.comm_messages)
    assert len(result.display_data) == 1
    assert WIDGET_VIEW_MIMETYPE in result.display_data[0]

    # The thread's updates arrive after the cell finished.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        kernel.collect(0.2)
        if kernel.widgets("IntProgressModel")[0]["value"] == 10:
            break
    assert kernel.widgets("IntProgressModel")[0]["value"] == 10


def test_kernel_session_stops_kernel_processes(
    tmp_path: Path, jupyter_dirs: JupyterDirs
) -> None:
    code = (
        "import subprocess\nchild = subprocess.Popen(['sleep', '60'])\nprint(child.pid)"
    )
    with kernel_session(tmp_path, dirs=jupyter_dirs) as session:
        kernel_pid = session.pid
        child_pid = int(session.execute(code).check().stdout)
        assert kernel_pid is not None
        assert pid_running(child_pid)

    assert not pid_running(kernel_pid)
    assert not pid_running(child_pid)


@pytest.mark.browser
def test_lab_shows_progress_from_thread(
    jupyter_lab: LabServer, lab_page: Callable[..., LabNotebookPage]
) -> None:
    notebook = make_notebook([PROGRESS_CELL.format(step_seconds=0.2)])
    path = jupyter_lab.add_notebook("progress.ipynb", notebook)
    page = lab_page(path)
    page.screenshot("opened")

    page.run_all()
    samples: list[tuple[float, str]] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        widths = page.progress_widths()
        if widths:
            samples.append((widths[0], page.kernel_status()))
            if len(samples) == 5:
                page.screenshot("running")
            if widths[0] >= 100:
                break
        time.sleep(0.1)
    page.screenshot("finished")

    widths_seen = [width for width, _ in samples]
    assert widths_seen, "no progress bar appeared"
    assert not any(math.isnan(width) for width in widths_seen)
    assert widths_seen == sorted(widths_seen), f"bar moved backwards: {widths_seen}"
    assert widths_seen[-1] == 100
    partial_while_idle = {
        width for width, status in samples if 0 < width < 100 and status == "idle"
    }
    assert len(partial_while_idle) >= 3, f"samples (width, kernel status): {samples}"
    assert page.blocked_urls == []
