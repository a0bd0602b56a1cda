"""Tests of the job table that the timer thread adds to a progress widget.

The kernel tests run notebooks through nbclient, which keeps only the widget
messages sent while a cell runs, so a message that the timer thread sends between
two cells is lost. The saved widget state must still refer only to models it contains.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers.kernel import JupyterDirs, run_cells, stored_widget_models

REPO_ROOT = Path(__file__).resolve().parents[1]

# Jobs of the blocked scenario: 50 rows make a table of more than 150 widgets, which
# the timer thread takes long enough to open that cell boundaries fall inside.
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


@pytest.fixture
def kernel_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Put the repository on the kernels' PYTHONPATH."""
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))


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
