"""Adversarial engine-level tests of the lazy log capture in standalone mode."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from engine_fixtures import WAIT_SECONDS, wait_for_file, wait_status
from engine_fixtures import engine as engine_fixture  # noqa: F401 - fixture
from engine_fixtures import forkserver_started as forkserver_fixture  # noqa: F401
from engine_fixtures import standalone as standalone_fixture  # noqa: F401 - fixture

import jupyter_scenarios as tp
from jupyter_scenarios import Config, Status

pytestmark = [pytest.mark.usefixtures("standalone"), pytest.mark.timeout(240)]


def print_and_hold(folder: str) -> str:
    print("printed before the cancel", flush=True)
    Path(folder, "printed").write_text("yes")
    time.sleep(60)
    return folder


@pytest.mark.parametrize("attempt", range(10))
def test_cancelled_job_logs_at_canceled(tmp_path: Path, attempt: int) -> None:
    folder = Config.configure_data_node("folder", default_data=str(tmp_path))
    result = Config.configure_data_node("result")
    task = Config.configure_task("hold", print_and_hold, folder, result)
    scenario = tp.create_scenario(Config.configure_scenario("talker", [task]))
    job = scenario.submit().jobs[0]
    wait_for_file(tmp_path / "printed")
    wait_status(job, Status.RUNNING)

    tp.cancel_job(job)
    wait_status(job, Status.CANCELED, timeout=WAIT_SECONDS)

    assert "printed before the cancel" in job.logs, repr(job.logs)
