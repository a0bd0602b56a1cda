"""Run every teaching notebook headless through a real kernel and check its results.

Each notebook is copied to a temporary working folder and executed there with nbclient,
with the environment variables that shorten its sleeps. A cell that raises fails the
test; the notebooks show their deliberate errors with try/except, so no cell has an
error output. The kernel imports ``jupyter_scenarios`` from this checkout through
``PYTHONPATH``, which the worker processes and the notebooks' own subprocesses inherit.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
from helpers.kernel import (
    WIDGET_STATE_MIMETYPE,
    JupyterDirs,
    cell_stdout,
    execute_notebook,
    stored_widget_models,
)
from nbformat import NotebookNode

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
NOTEBOOK_PATHS = sorted(NOTEBOOKS_DIR.glob("0*.ipynb"))

# Seconds one cell may run. The slowest cell sleeps a few seconds with the settings
# below; the margin covers worker start-up on a loaded machine.
CELL_TIMEOUT = 120.0

# Shortened sleeps: notebook 01 reads SCENARIOS_ADD_SECONDS, the others multiply their
# sleeps by SCENARIOS_SLEEP_SCALE.
ADD_SECONDS = 1.0
SHORT_SETTINGS = {
    "SCENARIOS_ADD_SECONDS": f"{ADD_SECONDS:g}",
    "SCENARIOS_SLEEP_SCALE": "0.2",
}


def run_notebook(
    name: str, work_dir: Path, dirs: JupyterDirs, monkeypatch: pytest.MonkeyPatch
) -> NotebookNode:
    """Copy ``notebooks/name`` to ``work_dir``, execute it there and return it."""
    for variable, value in SHORT_SETTINGS.items():
        monkeypatch.setenv(variable, value)
    # The notebook's default storage folder, .scenarios in work_dir, is the one used.
    monkeypatch.delenv("SCENARIOS_STORAGE", raising=False)
    python_path = [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, python_path)))

    copy = work_dir / name
    shutil.copyfile(NOTEBOOKS_DIR / name, copy)
    notebook = nbformat.read(copy, as_version=4)
    execute_notebook(notebook, work_dir, dirs=dirs, timeout=CELL_TIMEOUT)
    return notebook


def all_stdout(notebook: NotebookNode) -> str:
    return "".join(
        cell_stdout(cell) for cell in notebook.cells if cell.cell_type == "code"
    )


def code_cell(notebook: NotebookNode, prefix: str) -> NotebookNode:
    """Return the first code cell whose source starts with ``prefix``."""
    for cell in notebook.cells:
        if cell.cell_type == "code" and cell.source.startswith(prefix):
            return cell
    raise AssertionError(f"No code cell starts with {prefix!r}")


def plain_text_results(cell: NotebookNode) -> str:
    """Return the text/plain data of a cell's execute_result and display_data outputs."""
    return "".join(
        output["data"].get("text/plain", "")
        for output in cell.outputs
        if output["output_type"] in ("execute_result", "display_data")
    )


def check_common(notebook: NotebookNode) -> None:
    """Check what every executed teaching notebook must have."""
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output["output_type"] == "error"
    ]
    assert errors == []

    assert WIDGET_STATE_MIMETYPE in notebook.metadata.get("widgets", {})
    bars = stored_widget_models(notebook, "IntProgressModel")
    assert bars, "no progress bar state was stored"
    for bar in bars.values():
        assert bar["state"]["value"] == bar["state"]["max"], bar["state"]


# ---------------------------------------------------------------------------------
# What each notebook must print
# ---------------------------------------------------------------------------------


def check_job_execution(notebook: NotebookNode) -> None:
    text = all_stdout(notebook)
    assert "my_output = 52" in text
    assert "scenario_1.my_output = 52" in text
    assert "scenario_2.my_output = 52" in text
    # What add printed in a worker, read back from its job's log.
    assert re.search(
        rf"JOB_add_\w+ printed:\nWait {ADD_SECONDS:g} seconds in add function", text
    ), text

    timeout_line = re.search(
        r"wait=True, timeout=([\d.]+) returned after ([\d.]+) s: SubmissionStatus\.(\w+)",
        text,
    )
    assert timeout_line is not None, text
    timeout, elapsed, status = timeout_line.groups()
    assert float(timeout) == ADD_SECONDS / 2
    assert float(elapsed) < ADD_SECONDS
    assert status != "COMPLETED"


def check_data_nodes(notebook: NotebookNode) -> None:
    text = all_stdout(notebook)
    assert "read() returned None" in text
    assert "read_or_raise() raised NoData" in text
    assert "summary = {'total': 37.0, 'best': 'apple'}" in text
    assert "written by: ['JOB_summarize_" in text
    assert "bob cannot write:" in text
    assert "after alice's write, locked: False" in text
    assert "unlocked, ready for reading: True" in text
    assert "notes = ['apples sell best in autumn', 'order more plums']" in text
    assert "item_count = 3" in text
    assert "ConfigurationError: Data node 'scratch'" in text
    assert "summary = {'total': 39.4, 'best': 'apple'}" in text

    warnings = "".join(
        output.get("text", "")
        for output in code_cell(
            notebook, "from jupyter_scenarios.exceptions import NoData"
        ).outputs
        if output.get("name") == "stderr"
    )
    assert "has not been written yet" in warnings

    # revenue.parquet is missing at submission, but a task of the same submission
    # writes it, so the missing-input warning must not name it.
    submit_stderr = "".join(
        output.get("text", "")
        for output in code_cell(notebook, "submission = shop.submit()").outputs
        if output.get("name") == "stderr"
    )
    assert "does not exist" not in submit_stderr


def check_tasks_and_scenarios(notebook: NotebookNode) -> None:
    text = all_stdout(notebook)
    assert "total = 111.0  count = 6" in text
    assert "mean_value = 18.5" in text
    assert "value_range = 38.0" in text
    assert "SEQUENCE ['stats']" in text
    assert "total = 114.0  mean_value still 18.5" in text
    assert "mean_value = 19.0" in text
    assert "sequences: ['spread_only', 'summary', 'totals']" in text
    assert "reviewed: ['bench A']" in text
    assert "Configuration written to measures.toml." in text
    assert "average comes from measures_functions" in text
    assert "unit = cm  mean_value = 18.5" in text
    assert "FAILED - the task returned the wrong number of results" in text
    assert "CycleInGraphError: The tasks of 'round_trip' form a cycle" in text


def check_scopes_and_cycles(notebook: NotebookNode) -> None:
    text = all_stdout(notebook)
    assert "January target seen by shop B: 1200" in text
    assert "February target: 1000" in text
    assert "same data node as the scenarios': True" in text
    assert "{'sales': 1300, 'target': 1200, 'reached': True, 'tax': 325.0}" in text
    assert "{'sales': 900, 'target': 1200, 'reached': False, 'tax': 225.0}" in text
    assert "{'sales': 1100, 'target': 1000, 'reached': True, 'tax': 275.0}" in text
    assert "exchange_rate = 1.08  scope: GLOBAL" in text
    assert "primary: ['January, shop B', 'February, shop A']" in text
    assert "shop B deletable: False" in text
    for line in (
        "DAILY     Wednesday, 15. May 2024 2024-05-15 00:00 .. 2024-05-15 23:59:59",
        "WEEKLY    Week 20 2024            2024-05-13 00:00 .. 2024-05-19 23:59:59",
        "MONTHLY   May 2024                2024-05-01 00:00 .. 2024-05-31 23:59:59",
        "QUARTERLY 2024 Q2                 2024-04-01 00:00 .. 2024-06-30 23:59:59",
        "YEARLY    2024                    2024-01-01 00:00 .. 2024-12-31 23:59:59",
    ):
        assert line in text


def statuses_after(text: str, label: str) -> list[str]:
    """Return the job lines printed under the ``label:`` line of notebook 05."""
    block = text.split(f"{label}:", 1)[1].splitlines()[1:3]
    return [" ".join(line.split()) for line in block]


def check_skippable_tasks(notebook: NotebookNode) -> None:
    text = all_stdout(notebook)
    assert statuses_after(text, "first submission") == [
        "clean COMPLETED",
        "summarize COMPLETED",
    ]
    assert statuses_after(text, "second submission") == [
        "clean SKIPPED",
        "summarize COMPLETED",
    ]
    assert (
        "forced submission: [('clean', 'COMPLETED'), ('summarize', 'COMPLETED')]"
        in text
    )
    assert statuses_after(text, "after editing the input")[0] == "clean COMPLETED"
    assert "summary = {'n': 3, 'mean': 13.5}" in text
    assert statuses_after(text, "while the readings are valid")[0] == "clean SKIPPED"
    assert "valid: False" in text
    assert statuses_after(text, "after they expired")[0] == "clean COMPLETED"


def check_callbacks_and_events(notebook: NotebookNode) -> None:
    text = all_stdout(notebook)
    assert "submittable: False" in text
    assert "submission: BLOCKED" in text
    assert re.search(r"price_order +BLOCKED", text)
    assert "finished: True" in text
    assert "invoice = Amount due: 42.00 EUR" in text
    # price_order stayed BLOCKED while the cell looked the price up.
    blocked = re.search(
        r"price_order on worker \d+\n(?:.*\n)*? +blocked ([\d.]+) s", text
    )
    assert blocked is not None, text
    scale = float(SHORT_SETTINGS["SCENARIOS_SLEEP_SCALE"])
    assert float(blocked.group(1)) >= scale
    for change in (
        "('price_order', 'BLOCKED')",
        "('price_order', 'PENDING')",
        "('price_order', 'RUNNING')",
        "('price_order', 'COMPLETED')",
        "('write_invoice', 'COMPLETED')",
        "('audit-log', 'order 1', 'price_order', 'COMPLETED')",
        "('SUBMISSION', 'COMPLETED')",
    ):
        assert change in text
    assert "invoice = Amount due: 24.00 EUR" in text
    assert "new notifications: 0 0" in text


def check_comparing_scenarios(notebook: NotebookNode) -> None:
    text = all_stdout(notebook)
    assert "final_year   [110408.08, 127628.16, 153862.4, 191442.23]" in text
    assert "side_by_side [0.02, 0.05, 0.09, 0.05]" in text
    assert (
        "ValueError: Only scenarios of the same configuration can be compared" in text
    )

    summary = plain_text_results(code_cell(notebook, "summary = pd.DataFrame("))
    assert "expected, larger shop" in summary
    assert "870286.92" in summary


def check_failures_and_cancellation(notebook: NotebookNode) -> None:
    text = all_stdout(notebook)
    assert "submission: FAILED" in text
    assert re.search(
        r"parse_orders +FAILED +the task function raised: ValueError", text
    )
    assert re.search(r"sum_quantities +ABANDONED", text)
    assert re.search(r"count_orders +COMPLETED", text)
    assert "order_count = 4" in text
    assert "ValueError: invalid literal for int() with base 10: 'x3'" in text
    assert re.search(r"FAILED - worker process \d+ exited with code 1", text)
    assert "never_written is locked: False" in text
    assert "order_total = 47" in text
    assert "cancelled before it started" in text
    assert "cancelled while running; its worker was stopped" in text
    assert "Cancelled 1 job." in text
    assert sorted(re.findall(r"batch [123]: (CANCELED|COMPLETED)\n", text)) == [
        "CANCELED",
        "CANCELED",
        "COMPLETED",
    ]

    returned = re.search(
        r"submit returned after ([\d.]+) s \(timeout ([\d.]+) s\); the submission is (\w+)",
        text,
    )
    assert returned is not None, text
    assert float(returned.group(1)) < 4 * float(SHORT_SETTINGS["SCENARIOS_SLEEP_SCALE"])
    assert returned.group(3) == "RUNNING"
    assert "submission: CANCELED" in text

    # The listing made by a second process, as a restarted kernel would see it.
    assert re.search(r"order_stats +FAILED +COMPLETED, FAILED, ABANDONED", text)
    assert re.search(r"slow_batch +COMPLETED +COMPLETED, COMPLETED", text)
    assert "the process ended with exit code 1" in text
    assert re.search(r"end_process: (FAILED|ABANDONED) because the process", text)
    assert "lost: locked=False" in text


CHECKS: dict[str, Callable[[NotebookNode], None]] = {
    "01_job_execution.ipynb": check_job_execution,
    "02_data_nodes.ipynb": check_data_nodes,
    "03_tasks_and_scenarios.ipynb": check_tasks_and_scenarios,
    "04_scopes_and_cycles.ipynb": check_scopes_and_cycles,
    "05_skippable_tasks.ipynb": check_skippable_tasks,
    "06_callbacks_and_events.ipynb": check_callbacks_and_events,
    "07_comparing_scenarios.ipynb": check_comparing_scenarios,
    "08_failures_and_cancellation.ipynb": check_failures_and_cancellation,
}


# ---------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------


def test_every_notebook_has_checks() -> None:
    assert sorted(CHECKS) == [path.name for path in NOTEBOOK_PATHS]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CHECKS))
def test_notebook_runs_headless(
    name: str,
    tmp_path: Path,
    jupyter_dirs: JupyterDirs,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repository_files = sorted(path.name for path in NOTEBOOKS_DIR.iterdir())

    notebook = run_notebook(name, tmp_path, jupyter_dirs, monkeypatch)

    check_common(notebook)
    CHECKS[name](notebook)
    # Every file the notebook wrote is in its working folder, none in the checkout.
    assert sorted(path.name for path in NOTEBOOKS_DIR.iterdir()) == repository_files


@pytest.mark.parametrize("path", NOTEBOOK_PATHS, ids=lambda path: path.name)
def test_committed_notebook_layout(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]

    assert [cell.outputs for cell in code_cells if cell.outputs] == []
    assert [cell.execution_count for cell in code_cells if cell.execution_count] == []
    assert "widgets" not in notebook.metadata
    assert "%load_ext jupyter_scenarios" in code_cells[0].source
    parameters = [
        cell for cell in code_cells if "parameters" in cell.metadata.get("tags", [])
    ]
    assert len(parameters) == 1
    assert "tp.clean_all_entities()" in parameters[0].source
    assert code_cells[-1].source.startswith("%wait")


def test_generated_notebooks_are_current() -> None:
    spec = importlib.util.spec_from_file_location(
        "notebook_build", NOTEBOOKS_DIR / "_build.py"
    )
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)

    for name, cells in build.NOTEBOOKS.items():
        expected = json.loads(nbformat.writes(build.build_notebook(name, cells)))
        committed = json.loads((NOTEBOOKS_DIR / name).read_text(encoding="utf-8"))
        assert committed == expected, f"{name} differs from notebooks/_build.py; run it"


def test_index_lists_every_notebook() -> None:
    index = (NOTEBOOKS_DIR / "README.md").read_text(encoding="utf-8")
    for path in NOTEBOOK_PATHS:
        assert f"]({path.name})" in index, path.name
