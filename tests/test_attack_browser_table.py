"""The job table that the timer thread adds to a progress widget, seen in JupyterLab.

``SubmissionProgress`` shows only its bar line at first; the timer thread adds the
collapsed "Jobs (N)" section half a second later or when the submission finishes.
These tests watch that section in Chromium while the kernel is busy, idle, saving
and reloading.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers.kernel import WIDGET_STATE_MIMETYPE, make_notebook
from helpers.lab import LabNotebookPage, LabServer
from test_browser import error_outputs, job_rows, kernel_execute, setup_cell

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Seconds to wait for one change to show in the page.
WIDGET_TIMEOUT = 60.0
# Seconds between two samples of the page.
SAMPLE_INTERVAL = 0.1
# Seconds after its bar within which a progress widget's "Jobs (N)" section must
# show. The product adds it 0.5 s after creation; the rest is slack for a loaded
# 2-core machine.
SECTION_TIMEOUT = 5.0

# Seconds the busy test's cell goes on after submit(wait=True) returns.
WORK_AFTER_WAIT_SECONDS = 3
# Animation frames (about 17 ms each) for which an opened section may read closed.
# A person does not see a section that is closed for under 0.1 s.
CLOSED_FRAMES_ALLOWED = 5

SETUP = """\
import time

import jupyter_scenarios as tp
from jupyter_scenarios import Config

%load_ext jupyter_scenarios


def nap(value):
    time.sleep({seconds})
    return value


Config.configure_core(storage_folder={storage!r})
Config.configure_job_executions(mode={mode!r}, max_nb_of_workers=2)
source_cfg = Config.configure_data_node("source", default_data=1)
tasks = [
    Config.configure_task(
        f"nap{{index}}", nap, source_cfg, Config.configure_data_node(f"out{{index}}")
    )
    for index in range({tasks})
]
scenario_cfg = Config.configure_scenario("naps", task_configs=tasks)
"""

# Waits for the jobs, then goes on working, as a cell that uses the results would.
BUSY_CELL = """\
submission = tp.submit(tp.create_scenario(scenario_cfg), wait=True)
time.sleep({seconds})
"""

SUBMIT_MANY_CELL = "submissions = [tp.submit(tp.create_scenario(scenario_cfg)) for _ in range({count})]"

# Text that ipywidgets' renderer shows in place of a widget it cannot draw.
_WIDGET_ERRORS_JS = """() => Array.from(
  document.querySelectorAll('.jp-OutputArea-output'),
  (output) => output.innerText,
).filter((text) => text.includes('Error displaying widget')
  || text.includes('model not found') || text.includes('IOPub'))"""

# For each progress widget in page order: whether its "Jobs (N)" section exists,
# its title, and whether the section is open.
_SECTIONS_JS = """() => Array.from(
  document.querySelectorAll('.jp-OutputArea-output .widget-hprogress'),
  (bar) => {
    const root = bar.parentElement.parentElement;
    const header = root.querySelector(':scope > .widget-accordion'
      + ' .jupyter-widget-Collapse-header');
    const collapse = root.querySelector(':scope > .widget-accordion'
      + ' .jupyter-widget-Collapse');
    return {
      title: header ? header.innerText.trim() : null,
      open: collapse ? collapse.classList.contains('jupyter-widget-Collapse-open')
        : false,
      width: bar.querySelector('.progress-bar').style.width,
    };
  },
)"""

# Counts, at every animation frame, whether the page shows an open "Jobs" section.
_WATCH_OPEN_JS = """() => {
  window.__sectionFrames = {open: 0, closed: 0, absent: 0};
  const sample = () => {
    const section = document.querySelector('.jupyter-widget-Collapse');
    const state = !section ? 'absent'
      : section.classList.contains('jupyter-widget-Collapse-open') ? 'open' : 'closed';
    window.__sectionFrames[state] += 1;
    requestAnimationFrame(sample);
  };
  requestAnimationFrame(sample);
}"""

_SAVE_JS = """async () => {
  await window.jupyterapp.commands.execute('docmanager:save');
}"""


def sections(page: LabNotebookPage) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = page.page.evaluate(_SECTIONS_JS)
    return found


def widget_errors(page: LabNotebookPage) -> list[str]:
    errors: list[str] = page.page.evaluate(_WIDGET_ERRORS_JS)
    return errors


def wait_for(
    page: LabNotebookPage,
    read: Callable[[], Any],
    accept: Callable[[Any], bool],
    what: str,
    timeout: float = WIDGET_TIMEOUT,
) -> Any:
    """Sample ``read()`` until ``accept`` takes it; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    value = read()
    while not accept(value):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"Timed out after {timeout} s waiting for {what}: {value}"
            )
        time.sleep(SAMPLE_INTERVAL)
        value = read()
    return value


def write_notebook(
    server: LabServer,
    name: str,
    tmp_path: Path,
    cells: list[str],
    *,
    seconds: float,
    mode: str = "standalone",
    tasks: int = 2,
) -> str:
    setup = SETUP.format(
        seconds=seconds, storage=str(tmp_path / "store"), mode=mode, tasks=tasks
    )
    notebook = make_notebook([setup_cell({}), setup, *cells])
    return server.add_notebook(name, notebook)


def test_section_opens_while_cell_waits(
    tmp_path: Path,
    jupyter_lab: LabServer,
    lab_page: Callable[..., LabNotebookPage],
) -> None:
    path = write_notebook(
        jupyter_lab,
        "table_busy/busy.ipynb",
        tmp_path,
        [BUSY_CELL.format(seconds=WORK_AFTER_WAIT_SECONDS)],
        seconds=8,
    )
    page = lab_page(path)
    page.run_all()

    bar_seen = wait_for(page, lambda: sections(page), bool, "the progress bar")
    assert bar_seen[0]["title"] is None or bar_seen[0]["title"] == "Jobs (2)"
    bar_at = time.monotonic()
    wait_for(
        page,
        lambda: sections(page),
        lambda found: found[0]["title"] == "Jobs (2)",
        "the Jobs (2) section",
        timeout=SECTION_TIMEOUT,
    )
    section_after = time.monotonic() - bar_at
    # The kernel status is no guide here: ipykernel 7.4 sends an idle status after
    # each of JupyterLab's subshell requests, also while the cell still runs.
    assert page.execution_counts()[-1] is None, "the cell ended before the section"
    page.screenshot("01-section-while-busy")

    # Expanding is front-end only, so it works while the kernel waits.
    page.page.locator(".jupyter-widget-Collapse-header").first.click()
    running = wait_for(
        page,
        lambda: job_rows(page),
        lambda rows: len(rows) == 2 and all(r["status"] == "RUNNING" for r in rows),
        "two RUNNING rows in the opened section",
    )
    assert all(row["button"] == "Cancel" for row in running), running
    assert page.execution_counts()[-1] is None, "the cell ended before the rows"
    page.screenshot("02-opened-while-busy")
    page.page.evaluate(_WATCH_OPEN_JS)

    # submit() has returned and the cell goes on: the section must stay open.
    wait_for(
        page,
        lambda: sections(page),
        lambda found: found[0]["width"] == "100%",
        "the full bar",
    )
    page.screenshot("03-wait-returned")
    page.wait_for_all_cells(timeout=WIDGET_TIMEOUT)
    finished = wait_for(
        page,
        lambda: job_rows(page),
        lambda rows: len(rows) == 2 and all(r["status"] == "COMPLETED" for r in rows),
        "two COMPLETED rows in the section the user opened",
    )
    page.screenshot("04-finished-still-open")
    frames = page.page.evaluate("() => window.__sectionFrames")
    print(f"section showed {section_after:.2f} s after the bar; frames {frames}")
    assert frames["closed"] <= CLOSED_FRAMES_ALLOWED, f"the section closed: {frames}"
    assert all(row["button"] is None for row in finished), finished
    assert sections(page)[0]["open"] is True
    assert sections(page)[0]["width"] == "100%"
    assert widget_errors(page) == []
    assert error_outputs(page) == []
    assert page.blocked_urls == []


def test_cancel_in_new_table_while_idle(
    tmp_path: Path,
    jupyter_lab: LabServer,
    lab_page: Callable[..., LabNotebookPage],
) -> None:
    path = write_notebook(
        jupyter_lab,
        "table_cancel/cancel.ipynb",
        tmp_path,
        ["submission = tp.submit(tp.create_scenario(scenario_cfg))"],
        seconds=300,
        tasks=1,
    )
    page = lab_page(path)
    page.run_all()
    page.wait_for_all_cells(timeout=WIDGET_TIMEOUT)

    wait_for(
        page,
        lambda: sections(page),
        lambda found: bool(found) and found[0]["title"] == "Jobs (1)",
        "the Jobs (1) section",
    )
    assert page.kernel_status() == "idle"
    page.page.locator(".jupyter-widget-Collapse-header").first.click()
    wait_for(
        page,
        lambda: job_rows(page),
        lambda rows: len(rows) == 1 and rows[0]["status"] == "RUNNING",
        "a RUNNING row",
    )
    page.screenshot("01-running")
    page.page.get_by_role("button", name="Cancel", exact=True).click()
    cancelled = wait_for(
        page,
        lambda: job_rows(page),
        lambda rows: (
            len(rows) == 1
            and rows[0]["status"] == "CANCELED"
            and rows[0]["button"] is None
        ),
        "the row to read CANCELED without a button",
    )
    page.screenshot("02-cancelled")
    status = kernel_execute(page, "print(submission.jobs[0].status.name)").strip()
    assert status == "CANCELED", cancelled
    assert widget_errors(page) == []
    assert error_outputs(page) == []


def test_many_submits_in_one_cell(
    tmp_path: Path,
    jupyter_lab: LabServer,
    lab_page: Callable[..., LabNotebookPage],
) -> None:
    path = write_notebook(
        jupyter_lab,
        "table_many/many.ipynb",
        tmp_path,
        [SUBMIT_MANY_CELL.format(count=20)],
        seconds=2,
    )
    page = lab_page(path)
    page.run_all()
    page.wait_for_all_cells(timeout=WIDGET_TIMEOUT)
    found = wait_for(
        page,
        lambda: sections(page),
        lambda found: (
            len(found) == 20
            and all(section["title"] == "Jobs (2)" for section in found)
        ),
        "20 progress widgets, each with its Jobs (2) section",
    )
    page.screenshot("01-sections")

    wait_for(
        page,
        lambda: sections(page),
        lambda found: all(section["width"] == "100%" for section in found),
        "every bar to be full",
    )

    last_header = page.page.locator(".jupyter-widget-Collapse-header").nth(19)
    last_header.scroll_into_view_if_needed(timeout=10_000)
    last_header.click()
    wait_for(
        page,
        lambda: job_rows(page),
        lambda rows: len(rows) == 2 and all(r["status"] == "COMPLETED" for r in rows),
        "the last section's two COMPLETED rows",
    )
    page.screenshot("02-last-section-open")
    assert len(found) == 20
    assert widget_errors(page) == []
    assert error_outputs(page) == []


def test_saved_and_reloaded_notebook(
    tmp_path: Path,
    jupyter_lab: LabServer,
    lab_page: Callable[..., LabNotebookPage],
) -> None:
    path = write_notebook(
        jupyter_lab,
        "table_reload/reload.ipynb",
        tmp_path,
        [SUBMIT_MANY_CELL.format(count=5)],
        seconds=3,
    )
    page = lab_page(path)
    page.run_all()
    page.wait_for_all_cells(timeout=WIDGET_TIMEOUT)
    # Save at once, while the timer thread is adding the tables.
    page.page.evaluate(_SAVE_JS)
    page.screenshot("01-saved")
    wait_for(
        page,
        lambda: sections(page),
        lambda found: len(found) == 5 and all(s["title"] == "Jobs (2)" for s in found),
        "five Jobs (2) sections before the reload",
    )

    page.page.reload()
    page.wait_for_kernel_idle(timeout=WIDGET_TIMEOUT)
    found = wait_for(
        page,
        lambda: sections(page),
        lambda found: len(found) == 5 and all(s["title"] == "Jobs (2)" for s in found),
        "five Jobs (2) sections after the reload",
    )
    page.screenshot("02-reloaded")
    page.page.locator(".jupyter-widget-Collapse-header").first.click()
    wait_for(
        page,
        lambda: job_rows(page),
        lambda rows: len(rows) == 2,
        "two rows in the reloaded section",
    )
    page.screenshot("03-reloaded-open")
    assert len(found) == 5
    assert widget_errors(page) == []
    assert error_outputs(page) == []


def test_development_mode_section(
    tmp_path: Path,
    jupyter_lab: LabServer,
    lab_page: Callable[..., LabNotebookPage],
) -> None:
    path = write_notebook(
        jupyter_lab,
        "table_dev/dev.ipynb",
        tmp_path,
        [
            "first = tp.submit(tp.create_scenario(scenario_cfg))",
            "quick = [tp.submit(tp.create_scenario(scenario_cfg)) for _ in range(3)]",
        ],
        seconds=2,
        mode="development",
    )
    page = lab_page(path)
    page.run_all()
    # The first submission runs its jobs on the main thread for 4 s.
    wait_for(
        page,
        lambda: sections(page),
        lambda found: bool(found) and found[0]["title"] == "Jobs (2)",
        "the Jobs (2) section while jobs run on the main thread",
        timeout=SECTION_TIMEOUT + 4,
    )
    page.screenshot("01-first-section")

    page.wait_for_all_cells(timeout=WIDGET_TIMEOUT)
    found = wait_for(
        page,
        lambda: sections(page),
        lambda found: (
            len(found) == 4
            and all(s["title"] == "Jobs (2)" and s["width"] == "100%" for s in found)
        ),
        "four full bars, each with its Jobs (2) section",
    )
    page.screenshot("02-all-sections")

    page.page.locator(".jupyter-widget-Collapse-header").nth(3).click()
    wait_for(
        page,
        lambda: job_rows(page),
        lambda rows: len(rows) == 2 and all(r["status"] == "COMPLETED" for r in rows),
        "two COMPLETED rows",
    )
    assert len(found) == 4
    assert widget_errors(page) == []
    assert error_outputs(page) == []


def enable_widget_state_saving(server: LabServer) -> None:
    """Turn on JupyterLab's "Save Jupyter widget state in notebooks" setting."""
    folder = server.root_dir.parent / "lab-settings" / "@jupyter-widgets"
    folder = folder / "jupyterlab-manager"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plugin.jupyterlab-settings").write_text(
        '{"saveState": true}', encoding="utf-8"
    )


def saved_model_names(server: LabServer, path: str) -> list[str]:
    """Return the model name of each widget state saved in the notebook file."""
    notebook = json.loads((server.root_dir / path).read_text(encoding="utf-8"))
    saved = notebook["metadata"].get("widgets", {}).get(WIDGET_STATE_MIMETYPE, {})
    return [model["model_name"] for model in saved.get("state", {}).values()]


def test_saved_state_renders_without_kernel(
    tmp_path: Path,
    jupyter_lab: LabServer,
    lab_page: Callable[..., LabNotebookPage],
    artifacts_dir: Path,
) -> None:
    enable_widget_state_saving(jupyter_lab)
    path = write_notebook(
        jupyter_lab,
        "table_state/state.ipynb",
        tmp_path,
        [SUBMIT_MANY_CELL.format(count=10)],
        seconds=1,
        tasks=8,
    )
    page = lab_page(path)
    page.run_all()
    page.wait_for_all_cells(timeout=WIDGET_TIMEOUT)
    # Save at once, while the timer thread adds the tables, then once they show.
    page.page.evaluate(_SAVE_JS)
    first_save = saved_model_names(jupyter_lab, path)
    wait_for(
        page,
        lambda: sections(page),
        lambda found: len(found) == 10 and all(s["title"] == "Jobs (8)" for s in found),
        "ten Jobs (8) sections before the reload",
    )
    time.sleep(1)  # while the rows change from PENDING to RUNNING
    page.page.evaluate(_SAVE_JS)
    second_save = saved_model_names(jupyter_lab, path)
    page.screenshot("01-saved")
    shutil.copyfile(jupyter_lab.root_dir / path, artifacts_dir / "saved.ipynb")

    # The new kernel has none of the models, so the page draws them from the file.
    jupyter_lab.delete_sessions(path)
    page.page.reload()
    page.wait_for_kernel_idle(timeout=WIDGET_TIMEOUT)
    try:
        reloaded = wait_for(
            page,
            lambda: sections(page),
            lambda found: (
                len(found) == 10 and all(s["title"] == "Jobs (8)" for s in found)
            ),
            "ten Jobs (8) sections drawn from the saved widget state",
            timeout=30,
        )
    finally:
        page.screenshot("02-reloaded")
    page.page.locator(".jupyter-widget-Collapse-header").first.click()
    rows = wait_for(
        page,
        lambda: job_rows(page),
        lambda rows: len(rows) == 8,
        "eight rows in the first reloaded section",
    )
    page.screenshot("03-reloaded-open")
    assert "IntProgressModel" in first_save
    assert second_save.count("AccordionModel") == 10
    assert len(reloaded) == 10
    assert {row["task"] for row in rows} == {f"nap{index}" for index in range(8)}
    assert page.texts(".jp-OutputArea-output:has-text('Loading widget')") == []
    assert widget_errors(page) == []
