"""The live widgets in JupyterLab, driven from Chromium through Playwright.

Each notebook gets a first cell that puts this checkout on ``sys.path`` and
``PYTHONPATH`` (the kernel and its worker processes import ``jupyter_scenarios``
from there) and sets the environment variables the notebook reads. The
``jupyter_lab`` fixture starts kernels with the server's environment and has no way
to add variables per notebook, so that cell does it.

Screenshots of each stage are saved in the test's artifacts folder.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest
from helpers.kernel import make_notebook
from helpers.lab import LabNotebookPage, LabServer
from helpers.processes import pid_running

REPO_ROOT = Path(__file__).resolve().parents[1]
JOB_EXECUTION_NOTEBOOK = REPO_ROOT / "notebooks" / "01_job_execution.ipynb"

# Seconds the tutorial's add task sleeps in the browser test; the notebook reads it
# from SCENARIOS_ADD_SECONDS. The `%jobs` cell runs after a wait that times out at
# half of it, so its table shows RUNNING rows for the other half. With 4, those 2 s
# ran out before a sample on a loaded 2-core machine, and the test missed them.
ADD_SECONDS = 8
# Seconds a whole notebook run may take. The tutorial needs about 4 * ADD_SECONDS.
RUN_TIMEOUT = 180.0
# Seconds to wait for one widget change to show in the page.
WIDGET_TIMEOUT = 60.0
# Seconds between two samples of the page while cells run.
SAMPLE_INTERVAL = 0.2

pytestmark = pytest.mark.browser

# Rows of every visible job table in page order. A row is an HBox containing an HTML
# widget with one table row and, for unfinished jobs, a Cancel button. Rows inside a
# collapsed accordion are hidden and left out.
_JOB_ROWS_JS = """() => {
  const rows = [];
  for (const box of document.querySelectorAll('.jp-OutputArea-output .widget-hbox')) {
    const cells = box.querySelectorAll(':scope > .widget-html td');
    if (cells.length < 9 || !box.checkVisibility()) continue;
    const button = box.querySelector(':scope > button');
    const idSpan = cells[0].querySelector('span[title]');
    rows.push({
      job_id: idSpan ? idSpan.title : '',
      task: cells[1].textContent.trim(),
      status: cells[3].textContent.trim(),
      worker: cells[6].textContent.trim(),
      in_progress_widget: Boolean(box.closest('.widget-accordion')),
      button: button ? button.textContent.trim() : null,
    });
  }
  return rows;
}"""

# Runs code in the notebook's kernel outside any cell and returns its stdout, or
# the error name and value. Resolves when the kernel has finished the request.
_KERNEL_EXECUTE_JS = """async ([path, code]) => {
  const app = window.jupyterapp;
  let panel = null;
  for (const widget of app.shell.widgets('main')) {
    if (widget.context && widget.context.path === path && widget.sessionContext) {
      panel = widget;
    }
  }
  if (!panel) throw new Error('notebook ' + path + ' is not open');
  const kernel = panel.sessionContext.session.kernel;
  const future = kernel.requestExecute({code, store_history: false});
  let output = '';
  future.onIOPub = (message) => {
    const kind = message.header.msg_type;
    if (kind === 'stream') output += message.content.text;
    if (kind === 'error') output += message.content.ename + ': ' + message.content.evalue;
  };
  await future.done;
  return output;
}"""


def setup_cell(environment: dict[str, str]) -> str:
    """Return cell code that makes the package importable and sets ``environment``."""
    lines = [
        "import os",
        "import sys",
        f"sys.path.insert(0, {str(REPO_ROOT)!r})",
        f"os.environ['PYTHONPATH'] = {str(REPO_ROOT)!r}",
    ]
    lines += [f"os.environ[{key!r}] = {value!r}" for key, value in environment.items()]
    return "\n".join(lines)


def job_rows(page: LabNotebookPage) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = page.page.evaluate(_JOB_ROWS_JS)
    return rows


def kernel_execute(page: LabNotebookPage, code: str) -> str:
    """Run ``code`` in the page's kernel without a cell and return what it printed."""
    output: str = page.page.evaluate(_KERNEL_EXECUTE_JS, [page.path, code])
    return output


def scroll_to(page: LabNotebookPage, selector: str, index: int = 0) -> None:
    """Scroll the notebook so that the ``index``-th match of ``selector`` is visible."""
    page.page.locator(selector).nth(index).scroll_into_view_if_needed(timeout=10_000)


def scroll_to_cell_output(page: LabNotebookPage, source: str) -> None:
    """Scroll the notebook to the output of the code cell whose source is ``source``."""
    cell = page.page.locator(".jp-CodeCell").filter(
        has=page.page.locator(".jp-InputArea-editor", has_text=source)
    )
    cell.locator(".jp-OutputArea").last.scroll_into_view_if_needed(timeout=10_000)


def error_outputs(page: LabNotebookPage) -> list[str]:
    return page.texts(
        '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]'
    )


def wait_for_rows(
    page: LabNotebookPage,
    accept: Callable[[list[dict[str, Any]]], bool],
    timeout: float = WIDGET_TIMEOUT,
) -> list[dict[str, Any]]:
    """Wait until ``accept(job_rows(page))`` is true and return those rows."""
    deadline = time.monotonic() + timeout
    rows = job_rows(page)
    while not accept(rows):
        if time.monotonic() > deadline:
            raise AssertionError(f"Job tables did not reach the expected state: {rows}")
        time.sleep(SAMPLE_INTERVAL)
        rows = job_rows(page)
    return rows


def test_job_execution_notebook_live_widgets(
    jupyter_lab: LabServer,
    lab_page: Callable[..., LabNotebookPage],
    capsys: Any,
) -> None:
    tutorial = nbformat.read(JOB_EXECUTION_NOTEBOOK, as_version=4)  # type: ignore[no-untyped-call]
    notebook = make_notebook(
        [setup_cell({"SCENARIOS_ADD_SECONDS": str(ADD_SECONDS)}), *tutorial.cells]
    )
    path = jupyter_lab.add_notebook("job_execution/01_job_execution.ipynb", notebook)
    page = lab_page(path, ready_timeout=90)
    page.screenshot("01-opened")

    started = time.monotonic()
    page.run_all()
    width_samples: list[tuple[float, list[float]]] = []
    statuses_seen: dict[str, list[str]] = {}
    opened_tables = 0
    shots: set[str] = set()
    deadline = started + RUN_TIMEOUT
    while time.monotonic() < deadline:
        now = time.monotonic() - started
        widths = page.progress_widths()
        width_samples.append((now, widths))
        rows = job_rows(page)
        for row in rows:
            seen = statuses_seen.setdefault(row["job_id"], [])
            if not seen or seen[-1] != row["status"]:
                seen.append(row["status"])

        # The standalone cell shows bars 1 and 2 (bar 0 is development mode). Open
        # their job tables, which start collapsed, to watch the rows change.
        headers = page.page.locator(".jupyter-widget-Collapse-header")
        while opened_tables < 2 and len(widths) >= 3 and headers.count() >= 3:
            headers.nth(1 + opened_tables).click()
            opened_tables += 1
        if "standalone" not in shots and any(0 < w < 100 for w in widths[1:3]):
            scroll_to(page, ".widget-hprogress", 1)
            page.screenshot("02-standalone-running")
            shots.add("standalone")
        if "table" not in shots and any(
            row["status"] == "RUNNING" and row["in_progress_widget"] for row in rows
        ):
            page.screenshot("03-progress-table-running")
            shots.add("table")
        if "jobs" not in shots and any(
            row["status"] == "RUNNING" and not row["in_progress_widget"] for row in rows
        ):
            scroll_to_cell_output(page, "%jobs")
            page.screenshot("04-jobs-magic-running")
            shots.add("jobs")

        counts = page.execution_counts()
        if (
            counts
            and all(c is not None for c in counts)
            and page.kernel_status() == "idle"
        ):
            break
        time.sleep(SAMPLE_INTERVAL)
    run_seconds = time.monotonic() - started
    page.wait_for_all_cells(timeout=10)

    final_widths = page.progress_widths()
    final_rows = wait_for_rows(
        page, lambda rows: bool(rows) and all(r["status"] == "COMPLETED" for r in rows)
    )
    scroll_to(page, ".widget-hprogress", 1)
    page.screenshot("05-finished-bars")
    scroll_to_cell_output(page, "%jobs")
    page.screenshot("06-finished-jobs-table")
    last_output = page.texts(".jp-Cell:last-child .jp-OutputArea-output")

    bar_1 = [widths[1] for _, widths in width_samples if len(widths) > 1]
    with capsys.disabled():
        print(
            f"\nRun All took {run_seconds:.1f} s; {len(width_samples)} samples; bar 1 "
            f"widths seen: {sorted(set(bar_1))}; statuses per job: "
            f"{sorted(set(map(tuple, statuses_seen.values())))}"
        )
    assert error_outputs(page) == []
    assert page.blocked_urls == []
    assert bar_1, "the standalone progress bar never appeared"
    assert bar_1 == sorted(bar_1), f"bar 1 moved backwards: {bar_1}"
    assert any(0 < width < 100 for width in bar_1), (
        f"bar 1 was never partly full: {bar_1}"
    )
    assert bar_1[-1] == 100
    assert any(
        statuses[-2:] == ["RUNNING", "COMPLETED"] for statuses in statuses_seen.values()
    ), f"no job table row went from RUNNING to COMPLETED: {statuses_seen}"
    assert shots == {"standalone", "table", "jobs"}, f"stages seen: {shots}"
    # Development, scenario_1, scenario_2 and the two submissions of scenario_3.
    assert len(final_widths) == 5, final_widths
    assert final_widths == [100.0] * 5
    assert {row["task"] for row in final_rows} == {"double", "add"}
    assert all(row["button"] is None for row in final_rows), final_rows
    assert last_output, "the last cell printed nothing"
    assert "COMPLETED" in last_output[-1]


CANCEL_SETUP_CELL = """\
import json
import time

import psutil

import jupyter_scenarios as tp
from jupyter_scenarios import Config

%load_ext jupyter_scenarios


def long_task(value):
    time.sleep(300)
    return value


source_cfg = Config.configure_data_node("source", default_data=1)
target_cfg = Config.configure_data_node("target")
long_cfg = Config.configure_task("long_task", long_task, source_cfg, target_cfg)
scenario_cfg = Config.configure_scenario("long_scenario", task_configs=[long_cfg])
Config.configure_job_executions(mode="standalone", max_nb_of_workers=1)
scenario = tp.create_scenario(scenario_cfg)
submission = scenario.submit()
"""

CANCEL_CHECK_CODE = """\
job = submission.jobs[0]
job.wait(30)
print(json.dumps({
    "status": job.status.name,
    "reason": job.reason,
    "worker_pid": job.worker_pid,
    "worker_alive": job.worker_pid is not None and psutil.pid_exists(job.worker_pid),
}))
"""


def test_cancel_button_stops_running_job(
    jupyter_lab: LabServer,
    lab_page: Callable[..., LabNotebookPage],
    capsys: Any,
) -> None:
    notebook = make_notebook([setup_cell({}), CANCEL_SETUP_CELL, "%jobs"])
    path = jupyter_lab.add_notebook("cancel/cancel.ipynb", notebook)
    page = lab_page(path, ready_timeout=90)
    page.run_all()
    page.wait_for_all_cells(timeout=WIDGET_TIMEOUT)

    running = wait_for_rows(
        page,
        lambda rows: any(
            r["status"] == "RUNNING"
            and r["worker"].isdigit()
            and not r["in_progress_widget"]
            for r in rows
        ),
    )
    row = next(r for r in running if not r["in_progress_widget"])
    job_id = row["job_id"]
    worker_pid = int(row["worker"])
    from_kernel = json.loads(
        kernel_execute(page, "print(json.dumps(submission.jobs[0].worker_pid))")
    )
    button = page.page.locator(
        f'.widget-hbox:has(> .widget-html span[title="{job_id}"]) > button:visible'
    )
    button.scroll_into_view_if_needed(timeout=10_000)
    page.screenshot("01-running-with-cancel-button")

    clicked_at = time.monotonic()
    button.click()
    cancelled = wait_for_rows(
        page,
        # The status and the button are separate widgets, so the page may show
        # CANCELED one update before the button goes: wait for both.
        lambda rows: any(
            r["job_id"] == job_id
            and r["status"] == "CANCELED"
            and r["button"] is None
            and not r["in_progress_widget"]
            for r in rows
        ),
    )
    shown_seconds = time.monotonic() - clicked_at
    page.screenshot("02-canceled")
    check = json.loads(kernel_execute(page, CANCEL_CHECK_CODE).strip().splitlines()[-1])
    deadline = time.monotonic() + 10
    while pid_running(worker_pid) and time.monotonic() < deadline:
        time.sleep(0.1)

    with capsys.disabled():
        print(f"\nCANCELED showed {shown_seconds:.2f} s after the click")
    assert from_kernel == worker_pid, "the table shows another worker pid"
    row_after = next(
        r for r in cancelled if r["job_id"] == job_id and not r["in_progress_widget"]
    )
    assert row_after["button"] is None, "the cancelled row still has a Cancel button"
    assert check["status"] == "CANCELED"
    assert check["reason"], "the cancelled job has no reason"
    assert check["worker_alive"] is False
    assert not pid_running(worker_pid), f"worker {worker_pid} still runs"
    assert error_outputs(page) == []
    assert page.blocked_urls == []
