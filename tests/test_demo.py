"""The ``make demo`` runner: notebook 01 headless in a real kernel, then a report."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import zmq

REPOSITORY = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(300)


def test_demo_prints_results_and_exports(tmp_path: Path) -> None:
    output_dir = tmp_path / "executed"
    env = dict(os.environ, PYTHONPATH=str(REPOSITORY))
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "jupyter_scenarios.demo",
            "--add-seconds",
            "1",
            "--output-dir",
            str(output_dir),
        ],
        cwd=REPOSITORY,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = completed.stdout
    assert "== Jobs ==" in report
    assert "== Results ==" in report
    results = report.split("== Results ==", 1)[1]
    assert results.count("my_output = 52") == 4
    assert "FAILED" not in report
    # The kernel gets CurveZMQ keys where pyzmq supports them, so ipykernel does
    # not warn that it runs without encryption.
    if zmq.has("curve"):
        assert "without encryption" not in completed.stderr

    # Exported where the tutorial exports it: after choosing standalone mode.
    exported = (output_dir / "config_07.toml").read_text(encoding="utf-8")
    assert 'mode = "standalone"' in exported, exported
    assert 'max_nb_of_workers = "2:int"' in exported, exported

    executed = output_dir / "01_job_execution.ipynb"
    html = (output_dir / "01_job_execution.html").read_text(encoding="utf-8")
    assert executed.exists()
    # The HTML shows the widgets' final state without any script from a CDN.
    assert "2/2 COMPLETED" in html
    assert "widget-view+json" not in html
    assert "unpkg.com" not in html
