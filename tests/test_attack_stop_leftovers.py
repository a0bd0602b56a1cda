"""Attacks on stopping the scheduler while job callbacks still submit.

Job callbacks run while ``Scheduler.stop()`` cancels or waits for the running
jobs. ``_runtime.stop()`` used to clear the runtime's scheduler first, so a
callback that called the public API started a second runtime on the same folder,
with its own workers. Both tests failed then.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from engine_fixtures import (
    WAIT_SECONDS,
    double_config,
    single_gate_config,
    wait_status,
)
from engine_fixtures import engine as engine_fixture  # noqa: F401 - fixture
from engine_fixtures import forkserver_started as forkserver_fixture  # noqa: F401
from engine_fixtures import standalone as standalone_fixture  # noqa: F401 - fixture

import jupyter_scenarios as tp
from jupyter_scenarios import Status, _runtime

pytestmark = [pytest.mark.timeout(300)]


class ResubmitOnCancel:
    """A job callback that submits ``scenario`` again, itself as the callback, when
    a job is CANCELED; at most ``limit`` times."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.scenario: tp.Scenario | None = None
        self.submissions: list[tp.Submission] = []
        self.errors: list[BaseException] = []

    def __call__(self, job: tp.Job) -> None:
        if job.status is not Status.CANCELED or len(self.submissions) >= self.limit:
            return
        assert self.scenario is not None
        try:
            self.submissions.append(self.scenario.submit(callbacks=[self]))
        except Exception as error:  # noqa: BLE001 - a rejected submit is valid
            self.errors.append(error)


# -- job callbacks that call the API while the runtime stops ------------------------


@pytest.mark.usefixtures("standalone")
def test_cancel_callback_restarts_runtime(standalone: Path, tmp_path: Path) -> None:
    # stop(wait=False) cancels the RUNNING job, and its callback submits again
    # through the public API. That submission must reach the stopping scheduler,
    # which cancels its jobs too, rather than start a new runtime.
    resubmit = ResubmitOnCancel(limit=1)
    scenario = tp.create_scenario(single_gate_config(tmp_path / "gate"))
    resubmit.scenario = scenario
    first = scenario.submit(callbacks=[resubmit])
    wait_status(first.jobs[0], Status.RUNNING)

    tp.Orchestrator().stop(wait=False)
    time.sleep(1.0)

    assert not _runtime.is_running(), "a job callback restarted the runtime in stop()"
    statuses = [
        job.status for submission in resubmit.submissions for job in submission.jobs
    ]
    assert Status.RUNNING not in statuses, f"a job runs after stop(): {statuses}"
    assert len(resubmit.submissions) == 1, resubmit.errors
    assert statuses == [Status.CANCELED]


@pytest.mark.usefixtures("standalone")
def test_stop_wait_chained_submit_restarts(standalone: Path, tmp_path: Path) -> None:
    # stop(wait=True) lets the RUNNING job finish. Its callback chains the next
    # submission on COMPLETED, the usual way to run one scenario after another: the
    # stopping scheduler runs it and waits for it too, and no second runtime starts.
    gate = tmp_path / "gate"
    first = tp.create_scenario(single_gate_config(gate))
    chained: list[tp.Submission] = []
    errors: list[BaseException] = []

    def chain(job: tp.Job) -> None:
        if job.status is Status.COMPLETED and not chained and not errors:
            try:
                chained.append(tp.create_scenario(double_config("next")).submit())
            except Exception as error:  # noqa: BLE001 - a rejected submit is valid
                errors.append(error)

    submission = first.submit(callbacks=[chain])
    wait_status(submission.jobs[0], Status.RUNNING)
    stopper = threading.Thread(
        target=lambda: tp.Orchestrator().stop(wait=True, timeout=WAIT_SECONDS),
        daemon=True,
    )
    stopper.start()
    time.sleep(0.5)
    gate.touch()
    stopper.join(WAIT_SECONDS)

    assert not stopper.is_alive(), "stop(wait=True) did not return"
    assert submission.jobs[0].status is Status.COMPLETED
    assert not _runtime.is_running(), "a job callback restarted the runtime in stop()"
    assert not errors
    assert [job.status for job in chained[0].jobs] == [Status.COMPLETED]
