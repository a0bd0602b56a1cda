"""Tests of the job table that the timer thread adds to a progress widget.

The kernel tests run notebooks through nbclient, which keeps only the widget
messages sent while a cell runs, so a message that the timer thread sends between
two cells is lost. The saved widget state must still refer only to models it contains.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers.kernel import (
    JupyterDirs,
    KernelSession,
    cell_stdout,
    kernel_session,
    run_cells,
    stored_widget_models,
)
from test_widgets import (  # noqa: F401 (pytest finds fixtures by name)
    blocked_scenario,
    engine,
    kernel_path,
    widgets_closed,
)

import jupyter_scenarios as tp
from jupyter_scenarios.widgets import SubmissionProgress
from jupyter_scenarios.widgets._live import WIDGET_VIEW_MIMETYPE

# Jobs in the blocked scenario. Their 50 rows make a table of more than 150
# widgets, which the timer thread takes long enough to open that cell boundaries
# fall inside.
BLOCKED_TASKS = 50

BLOCKED_SETUP = """\
import jupyter_scenarios as tp
from jupyter_scenarios import Config
from jupyter_scenarios.widgets import install_auto_display

Config.configure_core(storage_folder={storage!r})
missing = Config.configure_data_node("missing")
tasks = [
    Config.configure_task(
        f"t{{index}}", str, missing, Config.configure_data_node(f"out{{index}}")
    )
    for index in range({tasks})
]
scenario_config = Config.configure_scenario("blocked", tasks)
install_auto_display()
"""

# Short cells that keep nbclient moving from one cell to the next while the timer
# thread opens the table, for about as long as the build takes.
SHORT_CELLS = ["import time; time.sleep(0.002)"] * 400


# Seconds to wait for the kernel or its timer thread; generous for 2-core machines.
WAIT_SECONDS = 120.0

# Records the errors that the package logs in the kernel, from any thread.
LOGGED_ERRORS_SETUP = """\
import logging

class ErrorRecords(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.messages = []

    def emit(self, record):
        self.messages.append(self.format(record))

logged_errors = ErrorRecords()
logging.getLogger("jupyter_scenarios").addHandler(logged_errors)
"""

QUICK_SETUP = """\
import jupyter_scenarios as tp
from jupyter_scenarios import Config
from jupyter_scenarios.widgets import SubmissionProgress, install_auto_display
from jupyter_scenarios.widgets.refresh import timer

Config.configure_core(storage_folder={storage!r})
Config.configure_job_executions(mode="standalone", max_nb_of_workers=2)
a = Config.configure_data_node("a", default_data=21)
b = Config.configure_data_node("b")
c = Config.configure_data_node("c")
first = Config.configure_task("first", str, a, b)
second = Config.configure_task("second", len, b, c)
scenario_config = Config.configure_scenario("quick", [first, second])
install_auto_display()

def progress_widgets():
    return [w for w in timer.open_widgets() if isinstance(w, SubmissionProgress)]
"""


def wait_until(check: Callable[[], bool], what: str) -> None:
    """Poll ``check`` every 0.2 s; fail after ``WAIT_SECONDS``."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {WAIT_SECONDS} s waiting for {what}")
        time.sleep(0.2)


def kernel_prints(kernel: KernelSession, code: str) -> str:
    """Run ``code`` in the kernel and return what it printed."""
    return kernel.execute(code, timeout=WAIT_SECONDS).check().stdout


def dangling_references(models: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Return, per saved model, the model ids it refers to that were not saved."""
    dangling: dict[str, list[str]] = {}
    for model_id, model in models.items():
        for value in model["state"].values():
            values = value if isinstance(value, (list, tuple)) else [value]
            missing = [
                item.removeprefix("IPY_MODEL_")
                for item in values
                if isinstance(item, str)
                and item.startswith("IPY_MODEL_")
                and item.removeprefix("IPY_MODEL_") not in models
            ]
            if missing:
                dangling.setdefault(f"{model['model_name']} {model_id}", []).extend(
                    missing
                )
    return dangling


@pytest.mark.slow
@pytest.mark.usefixtures("kernel_path")
def test_saved_state_between_cells_resolves(
    tmp_path: Path, jupyter_dirs: JupyterDirs
) -> None:
    setup = BLOCKED_SETUP.format(storage=str(tmp_path / "store"), tasks=BLOCKED_TASKS)
    notebook = run_cells(
        [
            setup,
            # Three tables opened in the same pass of the timer thread.
            "for _ in range(3): tp.submit(tp.create_scenario(scenario_config))",
            *SHORT_CELLS,
            "tp.Orchestrator().stop()",
        ],
        tmp_path,
        dirs=jupyter_dirs,
        timeout=120,
    )

    models = stored_widget_models(notebook)
    assert stored_widget_models(notebook, "IntProgressModel")
    assert dangling_references(models) == {}


@pytest.mark.slow
@pytest.mark.usefixtures("kernel_path")
def test_many_submits_all_get_tables(tmp_path: Path, jupyter_dirs: JupyterDirs) -> None:
    with kernel_session(tmp_path, dirs=jupyter_dirs) as kernel:
        kernel.execute(LOGGED_ERRORS_SETUP, timeout=WAIT_SECONDS).check()
        setup = QUICK_SETUP.format(storage=str(tmp_path / "store"))
        kernel.execute(setup, timeout=WAIT_SECONDS).check()

        submitted = kernel.execute(
            "submissions = [\n"
            "    tp.submit(tp.create_scenario(scenario_config)) for _ in range(50)\n"
            "]",
            timeout=WAIT_SECONDS,
        ).check()
        assert len(submitted.display_data) == 50

        # The kernel still runs cells while the timer thread builds the tables.
        assert kernel_prints(kernel, "print(len(progress_widgets()))") == "50\n"
        wait_until(
            lambda: (
                kernel_prints(
                    kernel, "print(all(s.is_finished() for s in submissions))"
                )
                == "True\n"
            ),
            "the 50 submissions to finish",
        )
        wait_until(
            lambda: kernel_prints(kernel, "print(timer.thread is None)") == "True\n",
            "the timer thread to end",
        )

        tables = kernel_prints(
            kernel, "print(sum(len(w.children) == 2 for w in progress_widgets()))"
        )
        assert tables == "50\n"
        finals = kernel_prints(
            kernel, "print(sum(w.bar.value == 2 for w in progress_widgets()))"
        )
        assert finals == "50\n"
        assert kernel_prints(kernel, "print(logged_errors.messages)") == "[]\n"
        kernel.execute("tp.Orchestrator().stop()", timeout=WAIT_SECONDS).check()


DEVELOPMENT_SETUP = """\
import jupyter_scenarios as tp
from jupyter_scenarios import Config
from jupyter_scenarios.widgets import install_auto_display, refresh_all_widgets

def fail(value):
    raise ValueError(f"cannot use {{value}}")

Config.configure_core(storage_folder={storage!r})
Config.configure_job_executions(mode="development")
a = Config.configure_data_node("a", default_data=21)
b = Config.configure_data_node("b")
missing = Config.configure_data_node("missing")
failing = Config.configure_scenario(
    "failing", [Config.configure_task("fail", fail, a, b)]
)
blocked = Config.configure_scenario(
    "blocked", [Config.configure_task("wait", str, missing, b)]
)
empty = Config.configure_scenario("empty", [])
install_auto_display()
"""


@pytest.mark.slow
@pytest.mark.usefixtures("kernel_path")
def test_saved_state_after_refresh_complete(
    tmp_path: Path, jupyter_dirs: JupyterDirs
) -> None:
    setup = DEVELOPMENT_SETUP.format(storage=str(tmp_path / "store"))
    notebook = run_cells(
        [
            setup,
            "tp.submit(tp.create_scenario(failing))",
            "tp.submit(tp.create_scenario(blocked))",
            "tp.submit(tp.create_scenario(empty))",
            "print(refresh_all_widgets(wait=False))",
            "tp.Orchestrator().stop()",
        ],
        tmp_path,
        dirs=jupyter_dirs,
        timeout=120,
    )

    models = stored_widget_models(notebook)
    assert dangling_references(models) == {}
    assert cell_stdout(notebook.cells[4]) == "False\n"
    bars = [
        model["state"]
        for model in stored_widget_models(notebook, "IntProgressModel").values()
    ]
    assert [(bar["value"], bar["max"]) for bar in bars] == [(1, 1), (0, 1), (0, 0)]
    assert [bar["bar_style"] for bar in bars] == ["danger", "", "success"]
    accordions = stored_widget_models(notebook, "AccordionModel")
    assert len(accordions) == 3
    roots = [
        model["state"]
        for model in models.values()
        if model["model_name"] == "VBoxModel"
        and len(model["state"]["children"]) == 2
        and model["state"]["children"][1].removeprefix("IPY_MODEL_") in accordions
    ]
    assert len(roots) == 3


@pytest.mark.usefixtures("engine")
def test_closed_progress_shows_text() -> None:
    progress = SubmissionProgress(tp.submit(blocked_scenario()))
    progress.close()

    bundle = progress._repr_mimebundle_()
    assert WIDGET_VIEW_MIMETYPE not in bundle
    assert "0/2 BLOCKED" in bundle["text/plain"]
    assert bundle["text/html"].count("BLOCKED") >= 2
    progress._ipython_display_()  # outside a kernel it prints the text form
