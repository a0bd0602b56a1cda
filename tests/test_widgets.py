"""Tests of the notebook widgets with real entities, real workers and real kernels.

Unit tests drive the widgets in this process: ipywidgets sends nothing without a
kernel, but every trait and every redraw is real. Tests wait for the timer thread's
redraws with ``timer.flush``. The throttle test counts redraws and compares them with
a bound computed from the measured duration, never with a fixed time. The kernel
tests run notebooks through nbclient and jupyter_client, with the repository on the
kernel's ``PYTHONPATH``. Every wait has a timeout, and the fixture below fails a
test that leaves a live widget or the timer thread behind.
"""

from __future__ import annotations

import math
import multiprocessing
import multiprocessing.forkserver
import re
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import traitlets
from helpers.kernel import (
    WIDGET_VIEW_MIMETYPE,
    JupyterDirs,
    KernelSession,
    kernel_session,
    make_notebook,
    run_cells,
    stored_widget_models,
)
from helpers.lab import LabNotebookPage, LabServer

import jupyter_scenarios as tp
from jupyter_scenarios import Config, Status, _runtime
from jupyter_scenarios.events import Event, EventEntityType, EventOperation, bus
from jupyter_scenarios.widgets import (
    GraphView,
    JobTable,
    SubmissionProgress,
    display_submission,
    graph_html,
    install_auto_display,
    is_kernel,
    jobs_table,
    refresh_all_widgets,
    settings,
    uninstall_auto_display,
)
from jupyter_scenarios.widgets.jobtable import read_output_tail
from jupyter_scenarios.widgets.progress import TABLE_DELAY_SECONDS
from jupyter_scenarios.widgets.refresh import THREAD_NAME, timer

REPO_ROOT = Path(__file__).resolve().parents[1]

# Seconds to wait for the timer thread to redraw.
FLUSH_SECONDS = 10.0
# Seconds to wait for a job or a submission; generous for slow 2-core machines.
WAIT_SECONDS = 60.0
# Seconds the runtime gets to stop after a test.
STOP_SECONDS = 15.0
# Modules the standalone executor preloads in the forkserver (see
# executors/standalone.py); the forkserver started here must use the same list.
WORKER_PRELOAD = [
    "jupyter_scenarios.executors._worker_main",
    "jupyter_scenarios.worker",
]

FINAL_LINE = re.compile(r"^sc \[#{20}\] 2/2 COMPLETED in \d")


# -- task functions (importable, so workers find them by reference) -------------------


def double(value: int) -> int:
    print(f"doubling {value}")
    return 2 * value


def fail(value: int) -> int:
    raise ValueError(f"cannot use {value}")


def wait_for_gate(path: str) -> str:
    deadline = time.monotonic() + 120
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {path} was never opened")
        time.sleep(0.01)
    return path


# -- fixtures and builders ---------------------------------------------------------------


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Path]:
    """Development mode on a fresh storage folder; stopped and reset afterwards."""
    storage = tmp_path / "store"
    tp.Orchestrator().stop(wait=False)
    Config.unblock_update()
    Config._reset()
    Config.configure_core(storage_folder=str(storage))
    yield storage
    tp.Orchestrator().stop(wait=True, timeout=STOP_SECONDS)
    Config._reset()


@pytest.fixture(scope="module")
def forkserver_started() -> None:
    """Start the interpreter-wide forkserver before the tests of this module.

    It lives until the interpreter exits, so the leak check of ``conftest.py``
    counts it as already running.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(WORKER_PRELOAD)
    multiprocessing.forkserver.ensure_running()


@pytest.fixture
def standalone(engine: Path, forkserver_started: None) -> Iterator[Path]:
    """Standalone mode with 2 worker processes; the leak check covers the workers."""
    Config.configure_job_executions(mode="standalone", max_nb_of_workers=2)
    yield engine
    tp.Orchestrator().stop(wait=False)


def wait_until(check: Callable[[], bool], what: str) -> None:
    """Poll ``check`` every 20 ms; fail after ``WAIT_SECONDS``."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {WAIT_SECONDS} s waiting for {what}")
        time.sleep(0.02)


def wait_status(job: tp.Job, status: Status) -> None:
    wait_until(lambda: job.status is status, f"{job.id} to be {status.name}")


@pytest.fixture(autouse=True)
def widgets_closed() -> Iterator[None]:
    """Close the widgets a test opened, then check that the timer thread ended."""
    before = set(map(id, timer.open_widgets()))
    yield
    for widget in timer.open_widgets():
        if id(widget) not in before:
            widget.close()  # type: ignore[attr-defined]
    thread = timer.thread
    if thread is not None:
        thread.join(FLUSH_SECONDS)
    assert timer.thread is None, "the widget timer thread still runs"
    assert THREAD_NAME not in {thread.name for thread in threading.enumerate()}


@pytest.fixture
def default_settings() -> Iterator[None]:
    """Restore the widget settings a test changes."""
    saved = settings.trait_values()
    yield
    settings.set_trait("max_rows", saved["max_rows"])
    settings.set_trait("max_redraws_per_second", saved["max_redraws_per_second"])
    settings.set_trait("auto_display", saved["auto_display"])


def chain_scenario(second: Any = double) -> tp.Scenario:
    """``a -> double -> b -> second -> c``, with ``a`` = 21."""
    a = Config.configure_data_node("a", default_data=21)
    b = Config.configure_data_node("b")
    c = Config.configure_data_node("c")
    first_task = Config.configure_task("double", double, a, b)
    second_task = Config.configure_task("second", second, b, c)
    return tp.create_scenario(
        Config.configure_scenario("sc", [first_task, second_task])
    )


def blocked_scenario(task_count: int = 2) -> tp.Scenario:
    """Tasks that all read ``missing``, which nothing writes: their jobs stay BLOCKED."""
    missing = Config.configure_data_node("missing")
    tasks = [
        Config.configure_task(
            f"t{index}", double, missing, Config.configure_data_node(f"out{index}")
        )
        for index in range(task_count)
    ]
    return tp.create_scenario(Config.configure_scenario("blocked", tasks))


def gated_scenario(gate: Path) -> tp.Scenario:
    """``gate -> wait -> waited -> double -> after``; ``wait`` runs until ``gate`` exists."""
    gate_node = Config.configure_data_node("gate", default_data=str(gate))
    waited = Config.configure_data_node("waited")
    after = Config.configure_data_node("after")
    tasks = [
        Config.configure_task("wait", wait_for_gate, gate_node, waited),
        Config.configure_task("follow", str.upper, waited, after),
    ]
    return tp.create_scenario(Config.configure_scenario("gated", tasks))


def row_html(table: JobTable) -> list[str]:
    """Return the HTML of the rows a table lists now."""
    return [box.children[0].value for box in table.rows_box.children]


def flush() -> None:
    assert timer.flush(FLUSH_SECONDS), "the timer did not redraw in time"


# -- progress ---------------------------------------------------------------------------


@pytest.mark.usefixtures("engine")
def test_progress_completed_submission() -> None:
    submission = tp.submit(chain_scenario(), wait=True)

    progress = SubmissionProgress(submission)

    assert progress.bar.max == 2
    assert progress.bar.value == 2
    assert progress.bar.bar_style == "success"
    assert "COMPLETED" in progress.label.value
    assert not timer.is_live(progress)


@pytest.mark.usefixtures("engine")
def test_progress_failed_submission() -> None:
    submission = tp.submit(chain_scenario(second=fail), wait=True)

    progress = SubmissionProgress(submission)

    assert progress.bar.value == 2
    assert progress.bar.bar_style == "danger"
    failed_row = row_html(progress.table)[1]
    assert "FAILED" in failed_row
    assert "ValueError: cannot use 42" in failed_row
    assert "<details" in failed_row
    assert "Traceback (most recent call last)" in failed_row
    assert "  FAILED second (" in progress._repr_mimebundle_()["text/plain"]


@pytest.mark.usefixtures("engine")
def test_progress_follows_live_submission() -> None:
    scenario = blocked_scenario()
    submission = tp.submit(scenario)
    progress = SubmissionProgress(submission)
    assert timer.is_live(progress)
    assert progress.bar.value == 0

    tp.cancel_job(submission.jobs[0])
    flush()

    assert progress.bar.value == 1
    assert progress.bar.bar_style == "warning"
    assert timer.is_live(progress)

    tp.cancel_job(submission.jobs[1])
    flush()

    assert progress.bar.value == 2
    assert "CANCELED" in progress.label.value
    assert not timer.is_live(progress)


@pytest.mark.usefixtures("engine")
def test_cancel_button_cancels_job() -> None:
    submission = tp.submit(blocked_scenario())
    progress = SubmissionProgress(submission)
    first_row = progress.table._rows[0]
    assert first_row.button in first_row.box.children

    first_row.button.click()

    job = submission.jobs[0]
    assert job.status is Status.CANCELED
    assert job.reason == "cancelled before it started"
    assert submission.jobs[1].status is Status.BLOCKED
    assert first_row.button not in first_row.box.children
    assert "CANCELED" in row_html(progress.table)[0]


@pytest.mark.usefixtures("engine")
def test_cancel_button_ignores_finished_job() -> None:
    submission = tp.submit(chain_scenario(), wait=True)
    table = JobTable(submission)
    row = table._rows[0]

    row.button.click()

    assert submission.jobs[0].status is Status.COMPLETED
    assert row.button not in row.box.children


# -- throttling -------------------------------------------------------------------------


@pytest.mark.usefixtures("engine")
def test_throttle_bounds_redraws(default_settings: None) -> None:
    settings.max_redraws_per_second = 4.0
    submission = tp.submit(blocked_scenario())
    progress = SubmissionProgress(submission)
    redraws_before = progress.redraws

    # 10,000 job events in 10 bursts, as a fast fan-out would publish them.
    start = time.monotonic()
    for _ in range(10):
        for _ in range(1_000):
            bus.publish(
                Event(
                    EventEntityType.JOB,
                    EventOperation.UPDATE,
                    submission.job_ids[0],
                    "status",
                    Status.BLOCKED,
                    {"submit_id": submission.id},
                )
            )
        time.sleep(0.1)
    flush()
    elapsed = time.monotonic() - start

    redraws = progress.redraws - redraws_before
    # One pass may start at once, then one per interval; the clock adds none,
    # because it shares the same passes.
    bound = 1 + math.ceil(elapsed * settings.max_redraws_per_second)
    assert redraws >= 1
    assert redraws <= bound, f"{redraws} redraws in {elapsed:.2f} s (bound {bound})"


@pytest.mark.usefixtures("engine")
def test_events_of_other_submissions_ignored() -> None:
    first = tp.submit(blocked_scenario())
    progress = SubmissionProgress(first)
    flush()
    redraws_before = progress.redraws

    for _ in range(100):
        bus.publish(
            Event(
                EventEntityType.JOB,
                EventOperation.UPDATE,
                "JOB_other_1",
                "status",
                Status.RUNNING,
                {"submit_id": "SUBMISSION_other"},
            )
        )
    timer.flush(FLUSH_SECONDS)

    # flush() waits for one turn of the timer, in which only the running clock
    # may redraw the widget.
    assert progress.redraws - redraws_before <= 1
    assert timer.is_live(progress)


@pytest.mark.usefixtures("engine")
def test_timer_thread_stops_when_idle() -> None:
    submission = tp.submit(blocked_scenario())
    progress = SubmissionProgress(submission)
    thread = timer.thread
    assert thread is not None
    assert thread.daemon
    assert thread.name == THREAD_NAME

    for job in submission.jobs:
        tp.cancel_job(job)
    thread.join(FLUSH_SECONDS)

    assert not thread.is_alive()
    assert timer.thread is None
    assert progress.bar.value == 2


def test_settings_reject_invalid_values(default_settings: None) -> None:
    with pytest.raises(traitlets.TraitError, match="max_redraws_per_second"):
        settings.max_redraws_per_second = 0.0
    with pytest.raises(traitlets.TraitError, match="max_rows"):
        settings.max_rows = 0
    assert "unit: rows" in settings.traits()["max_rows"].help


# -- text and HTML forms ---------------------------------------------------------------


@pytest.mark.usefixtures("engine")
def test_reprs_carry_final_state() -> None:
    submission = tp.submit(chain_scenario(), wait=True)
    progress = SubmissionProgress(submission)

    bundle = progress._repr_mimebundle_()

    assert FINAL_LINE.match(bundle["text/plain"]), bundle["text/plain"]
    assert "2/2 COMPLETED in" in bundle["text/html"]
    assert "<table" in bundle["text/html"]
    assert "doubling 21" in bundle["text/html"]
    assert bundle[WIDGET_VIEW_MIMETYPE]["model_id"] == progress.model_id


@pytest.mark.usefixtures("engine")
def test_progress_adds_its_table_later() -> None:
    submission = tp.submit(blocked_scenario())
    progress = SubmissionProgress(submission)
    started = time.monotonic()

    # Only the bar line at first; the HTML form lists the jobs all the same.
    assert progress.children == (progress.children[0],)
    assert progress.children[0].children == (progress.bar, progress.label)
    assert progress._html_repr().count("BLOCKED") >= 2

    wait_until(lambda: len(progress.children) == 2, "the timer to add the table")
    assert time.monotonic() - started >= TABLE_DELAY_SECONDS
    assert progress.children[1] is progress.details
    assert progress.details.children == (progress.table,)
    assert len(row_html(progress.table)) == 2


@pytest.mark.usefixtures("engine")
def test_table_added_without_clock_tick(monkeypatch: pytest.MonkeyPatch) -> None:
    # No job changes and no clock tick within the wait: only the table's own due
    # time can wake the timer.
    monkeypatch.setattr("jupyter_scenarios.widgets.refresh.CLOCK_SECONDS", 3600.0)
    progress = SubmissionProgress(tp.submit(blocked_scenario()))

    wait_until(lambda: len(progress.children) == 2, "the timer to add the table")
    assert progress.details.children == (progress.table,)


@pytest.mark.usefixtures("engine")
def test_progress_table_made_on_first_use() -> None:
    progress = SubmissionProgress(tp.submit(blocked_scenario()))

    table = progress.table  # before the timer's delay has passed

    assert progress.children[1].children == (table,)
    assert progress.details.titles == ("Jobs (2)",)
    assert all("BLOCKED" in row for row in row_html(table))


@pytest.mark.usefixtures("engine")
def test_reprs_follow_unfinished_submission() -> None:
    submission = tp.submit(blocked_scenario())
    progress = SubmissionProgress(submission)

    text = progress._repr_mimebundle_()["text/plain"]

    assert text.startswith("blocked [--------------------] 0/2 BLOCKED ")
    assert " in " not in text


@pytest.mark.usefixtures("engine")
def test_job_table_text_lists_jobs() -> None:
    submission = tp.submit(chain_scenario(second=fail), wait=True)
    table = JobTable(submission)

    lines = table._text_repr().splitlines()

    assert lines[0].split() == ["job", "task", "status", "duration", "error"]
    assert lines[1].split()[1:3] == ["double", "COMPLETED"]
    assert lines[2].split()[1:3] == ["second", "FAILED"]
    assert lines[2].endswith("ValueError: cannot use 42")
    assert lines[3] == "2 jobs: 1 FAILED, 1 COMPLETED."


def test_output_tail_reads_end_of_large_log(tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    log.write_text("".join(f"line {number}\n" for number in range(200_000)))

    assert read_output_tail(log) == "\n".join(
        f"line {number}" for number in range(199_995, 200_000)
    )
    assert read_output_tail(tmp_path / "missing.log") == ""


# -- row cap ------------------------------------------------------------------------------


@pytest.mark.usefixtures("engine")
def test_row_cap_large_job_count(default_settings: None) -> None:
    settings.max_rows = 50
    # 10,000 BLOCKED jobs in 100 submissions of 100 jobs.
    # NOTE: the scheduler's stop and cancel cost grows with the square of one
    # submission's job count, so one submission of 10,000 jobs takes minutes to stop.
    scenario = blocked_scenario(task_count=100)
    submissions = [tp.submit(scenario) for _ in range(100)]
    table = jobs_table()

    assert len(table._rows) == 50
    assert len(table.rows_box.children) == 50
    assert "10,000 jobs: 10,000 BLOCKED." in table.note.value
    assert "9,950 more are not shown" in table.note.value

    for job in submissions[0].jobs[:10]:
        tp.cancel_job(job)
    flush()

    shown = row_html(table)
    assert len(shown) == 50
    assert sum("CANCELED" in row for row in shown) == 10
    assert sum("BLOCKED" in row for row in shown) == 40
    assert "10 CANCELED" in table.note.value
    progress = SubmissionProgress(submissions[0])
    assert progress.bar.value == 10
    assert progress.bar.max == 100
    assert len(progress.table.rows_box.children) == 50


@pytest.mark.usefixtures("engine")
def test_row_cap_keeps_small_tables_in_order() -> None:
    submission = tp.submit(chain_scenario(), wait=True)

    table = JobTable(submission, max_rows=1)

    assert len(table.rows_box.children) == 1
    assert "1 more are not shown" in table.note.value
    with pytest.raises(ValueError, match="max_rows must be at least 1, got 0"):
        JobTable(submission, max_rows=0)


# -- the store-wide table ------------------------------------------------------------------


@pytest.mark.usefixtures("engine")
def test_jobs_table_follows_new_submissions() -> None:
    table = jobs_table()
    assert table.rows_box.children == ()
    assert timer.is_live(table)

    submission = tp.submit(chain_scenario(), wait=True)
    flush()

    shown = row_html(table)
    assert len(shown) == 2
    assert all("COMPLETED" in row for row in shown)
    assert all(">sc<" in row for row in shown)
    assert "doubling 21" in shown[0]
    assert submission.jobs[0].id in shown[0]
    assert timer.is_live(table)


# -- graph ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("engine")
def test_graph_html_colours_tasks() -> None:
    scenario = chain_scenario(second=fail)
    tp.submit(scenario, wait=True)

    drawing = graph_html(scenario)

    assert drawing.count("<rect") == 2
    assert drawing.count("<ellipse") == 3
    assert 'data-status="COMPLETED"' in drawing
    assert 'data-status="FAILED"' in drawing
    assert drawing.count("marker-end") == 4


@pytest.mark.usefixtures("engine")
def test_graph_view_follows_jobs() -> None:
    scenario = chain_scenario()
    view = GraphView(scenario)
    assert view.value.count('data-status="NOT RUN"') == 2

    tp.submit(scenario, wait=True)
    flush()

    assert view.value.count('data-status="COMPLETED"') == 2
    assert view._text_repr().splitlines()[1:] == [
        "  double: COMPLETED",
        "  second: COMPLETED",
    ]
    assert timer.is_live(view)


# -- auto display and refresh ------------------------------------------------------------------


@pytest.mark.usefixtures("engine")
def test_auto_display_install_idempotent() -> None:
    scheduler = _runtime.orchestrator()
    try:
        install_auto_display()
        install_auto_display()

        assert _runtime.submit_hooks.count(display_submission) == 1
        assert scheduler.submit_hooks.count(display_submission) == 1
    finally:
        uninstall_auto_display()

    assert display_submission not in _runtime.submit_hooks
    assert display_submission not in scheduler.submit_hooks


@pytest.mark.usefixtures("engine")
def test_auto_display_silent_outside_kernel() -> None:
    install_auto_display()
    try:
        before = len(timer.open_widgets())
        submission = tp.submit(chain_scenario(), wait=True)
    finally:
        uninstall_auto_display()

    assert not is_kernel()
    assert submission.is_completed
    assert len(timer.open_widgets()) == before


@pytest.mark.usefixtures("standalone")
def test_refresh_all_widgets_waits_for_jobs(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    submission = tp.submit(gated_scenario(gate))
    progress = SubmissionProgress(submission)

    assert refresh_all_widgets(timeout=0.2) is False
    assert progress.bar.value == 0

    gate.touch()
    assert refresh_all_widgets(timeout=WAIT_SECONDS) is True

    assert progress.bar.value == 2
    assert progress.bar.bar_style == "success"
    assert "2/2 COMPLETED in" in progress._repr_mimebundle_()["text/plain"]


# -- standalone mode with worker processes ------------------------------------------------


@pytest.mark.usefixtures("standalone")
def test_standalone_progress_shows_worker() -> None:
    submission = tp.submit(chain_scenario(second=fail))
    progress = SubmissionProgress(submission)

    assert refresh_all_widgets(timeout=WAIT_SECONDS)

    assert progress.bar.value == 2
    assert progress.bar.bar_style == "danger"
    first = submission.jobs[0]
    rows = row_html(progress.table)
    assert first.worker_pid is not None
    assert f">{first.worker_pid}<" in rows[0]
    assert "doubling 21" in rows[0]
    assert "ValueError: cannot use 42" in rows[1]


@pytest.mark.usefixtures("standalone")
def test_cancel_button_stops_running_job(tmp_path: Path) -> None:
    submission = tp.submit(gated_scenario(tmp_path / "never-opened"))
    progress = SubmissionProgress(submission)
    running = submission.jobs[0]
    wait_status(running, Status.RUNNING)
    flush()
    row = progress.table._rows[0]
    assert row.job is running
    assert "RUNNING" in row.html.value

    row.button.click()

    wait_status(running, Status.CANCELED)
    assert submission.jobs[1].status is Status.ABANDONED
    assert refresh_all_widgets(timeout=WAIT_SECONDS)
    assert progress.bar.value == 2
    assert progress.bar.bar_style == "warning"
    assert "cancelled while running" in row.html.value


# -- real kernels ---------------------------------------------------------------------------


NOTEBOOK_SETUP = """\
import time
import jupyter_scenarios as tp
from jupyter_scenarios import Config
from jupyter_scenarios.widgets import install_auto_display, refresh_all_widgets

def double(value):
    time.sleep({seconds})
    print("doubling", value)
    return 2 * value

Config.configure_core(storage_folder={storage!r})
Config.configure_job_executions(mode="standalone", max_nb_of_workers=2)
a = Config.configure_data_node("a", default_data=21)
b = Config.configure_data_node("b")
c = Config.configure_data_node("c")
first = Config.configure_task("double", double, a, b)
second = Config.configure_task("second", double, b, c)
scenario_config = Config.configure_scenario("sc", [first, second])
install_auto_display()
"""


@pytest.fixture
def kernel_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Put the repository on the kernels' PYTHONPATH."""
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))


@pytest.mark.slow
@pytest.mark.usefixtures("kernel_path")
def test_notebook_stores_final_widget_state(
    tmp_path: Path, jupyter_dirs: JupyterDirs
) -> None:
    setup = NOTEBOOK_SETUP.format(seconds=0.5, storage=str(tmp_path / "store"))
    notebook = run_cells(
        [
            setup,
            "submission = tp.submit(tp.create_scenario(scenario_config))",
            "print(refresh_all_widgets(timeout=60))",
            "tp.Orchestrator().stop()",
        ],
        tmp_path,
        dirs=jupyter_dirs,
        timeout=120,
    )

    submit_outputs = notebook.cells[1].outputs
    views = [
        output for output in submit_outputs if WIDGET_VIEW_MIMETYPE in output["data"]
    ]
    assert len(views) == 1
    assert FINAL_LINE.match(views[0]["data"]["text/plain"]), views[0]["data"]
    assert "2/2 COMPLETED in" in views[0]["data"]["text/html"]
    assert notebook.cells[2].outputs[0]["text"] == "True\n"

    bars = list(stored_widget_models(notebook, "IntProgressModel").values())
    assert len(bars) == 1
    assert bars[0]["state"]["value"] == 2
    assert bars[0]["state"]["max"] == 2
    assert bars[0]["state"]["bar_style"] == "success"
    rows = [
        model["state"]["value"]
        for model in stored_widget_models(notebook, "HTMLModel").values()
        if "doubling 42" in model["state"].get("value", "")
    ]
    assert len(rows) == 1


def progress_states(kernel: KernelSession) -> list[dict[str, Any]]:
    return kernel.widgets("IntProgressModel")


def bar_reaches(kernel: KernelSession, index: int, value: int) -> bool:
    """Read IOPub for a moment, then tell whether bar ``index`` shows ``value``."""
    kernel.collect(0.2)
    return bool(progress_states(kernel)[index]["value"] == value)


@pytest.mark.slow
@pytest.mark.usefixtures("kernel_path")
def test_kernel_widgets_update_from_thread(
    tmp_path: Path, jupyter_dirs: JupyterDirs
) -> None:
    with kernel_session(tmp_path, dirs=jupyter_dirs) as kernel:
        # Each job runs 1 s, so the first job's update (at most 1/4 s after it
        # finishes) is sent while the second job still runs.
        setup = NOTEBOOK_SETUP.format(seconds=1.0, storage=str(tmp_path / "store"))
        kernel.execute(setup, timeout=60).check()

        # The kernel is idle while the jobs run: updates come from the timer thread.
        result = kernel.execute(
            "idle = tp.submit(tp.create_scenario(scenario_config))"
        ).check()
        assert len(result.display_data) == 1
        assert progress_states(kernel)[0]["value"] == 0
        wait_until(
            lambda: bar_reaches(kernel, 0, 2),
            what="the idle kernel's progress bar to reach 2",
        )
        assert progress_states(kernel)[0]["bar_style"] == "success"

        # Updates also arrive while a cell blocks in submit(wait=True).
        result = kernel.execute(
            "busy = tp.submit(tp.create_scenario(scenario_config), wait=True)",
            timeout=60,
        ).check()
        bar_ids = {
            comm_id
            for comm_id, state in kernel.widget_states.items()
            if state.get("_model_name") == "IntProgressModel"
        }
        updates = [
            message["content"]["data"]["state"]
            for message in result.comm_messages
            if message["msg_type"] == "comm_msg"
            and message["content"]["comm_id"] in bar_ids
            and message["content"]["data"].get("method") == "update"
            and "value" in message["content"]["data"].get("state", {})
        ]
        assert 1 in [state["value"] for state in updates]
        wait_until(
            lambda: bar_reaches(kernel, 1, 2),
            what="the second progress bar to reach 2",
        )

        final = kernel.execute(
            textwrap.dedent(
                """\
                from jupyter_scenarios.widgets.refresh import timer
                print(refresh_all_widgets(timeout=30))
                tp.Orchestrator().stop()
                if timer.thread is not None:
                    timer.thread.join(10)
                print(timer.thread is None)
                """
            ),
            timeout=60,
        ).check()
        assert final.stdout == "True\nTrue\n"


# The models a submit may open in the kernel: the bar line, not the job table.
BAR_LINE_MODELS = {
    "VBoxModel",
    "HBoxModel",
    "IntProgressModel",
    "ProgressStyleModel",
    "HTMLModel",
    "HTMLStyleModel",
    "LayoutModel",
}


def referenced_models(state: dict[str, Any]) -> set[str]:
    """Return the model ids that a widget state refers to."""
    found: set[str] = set()
    for value in state.values():
        values = value if isinstance(value, (list, tuple)) else [value]
        found.update(
            item.removeprefix("IPY_MODEL_")
            for item in values
            if isinstance(item, str) and item.startswith("IPY_MODEL_")
        )
    return found


def model_tree(kernel: KernelSession, root: str) -> set[str]:
    """Return ``root`` and every model it refers to, directly or not."""
    tree, todo = set(), [root]
    while todo:
        model_id = todo.pop()
        if model_id not in tree:
            tree.add(model_id)
            todo.extend(referenced_models(kernel.widget_states[model_id]))
    return tree


@pytest.mark.slow
@pytest.mark.usefixtures("kernel_path")
def test_kernel_submit_opens_bar_then_table(
    tmp_path: Path, jupyter_dirs: JupyterDirs
) -> None:
    with kernel_session(tmp_path, dirs=jupyter_dirs) as kernel:
        setup = NOTEBOOK_SETUP.format(seconds=3.0, storage=str(tmp_path / "store"))
        kernel.execute(setup, timeout=60).check()

        result = kernel.execute(
            "running = tp.submit(tp.create_scenario(scenario_config))"
        ).check()
        opened = [
            message["content"]["data"]["state"]["_model_name"]
            for message in result.comm_messages
            if message["msg_type"] == "comm_open"
        ]
        assert set(opened) <= BAR_LINE_MODELS, opened
        root = result.display_data[0][WIDGET_VIEW_MIMETYPE]["model_id"]

        # The timer adds the table, with a row and a Cancel button per job.
        def table_added() -> bool:
            kernel.collect(0.2)
            return len(kernel.widget_states[root]["children"]) == 2

        wait_until(table_added, "the timer to add the job table")
        tree = model_tree(kernel, root)
        names = [kernel.widget_states[model_id]["_model_name"] for model_id in tree]
        assert names.count("AccordionModel") == 1
        assert names.count("ButtonModel") == 2

        # A resend covers every model of the tree, layouts and styles included:
        # a headless run may have missed their opening.
        resend = kernel.execute("print(refresh_all_widgets(timeout=60))", timeout=90)
        assert resend.check().stdout == "True\n"
        updated = {
            message["content"]["comm_id"]
            for message in resend.comm_messages
            if message["msg_type"] == "comm_msg"
            and "_model_name" in message["content"]["data"].get("state", {})
        }
        assert model_tree(kernel, root) <= updated
        kernel.execute("tp.Orchestrator().stop()", timeout=60).check()


BROWSER_SETUP = """\
import sys
sys.path.insert(0, {repo!r})
"""

BROWSER_BLOCKING_CELL = """\
blocking = tp.submit(tp.create_scenario(scenario_config), wait=True)
"""


@pytest.mark.browser
@pytest.mark.slow
def test_lab_shows_live_progress(
    tmp_path: Path,
    jupyter_lab: LabServer,
    lab_page: Callable[..., LabNotebookPage],
) -> None:
    setup = BROWSER_SETUP.format(repo=str(REPO_ROOT)) + NOTEBOOK_SETUP.format(
        seconds=1.0, storage=str(tmp_path / "store")
    )
    notebook = make_notebook(
        [
            setup,
            "idle = tp.submit(tp.create_scenario(scenario_config))",
            "time.sleep(0.1)",
        ]
    )
    path = jupyter_lab.add_notebook("live_progress.ipynb", notebook)
    page = lab_page(path)

    # The first submission runs while the kernel is idle.
    page.run_all()
    samples: list[tuple[float, str]] = []
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        widths = page.progress_widths()
        if widths:
            samples.append((widths[0], page.kernel_status()))
            if widths[0] >= 100:
                break
        time.sleep(0.05)
    page.wait_for_all_cells()
    page.screenshot("idle-finished")

    widths_seen = [width for width, _ in samples]
    assert widths_seen, "no progress bar appeared"
    assert widths_seen[-1] == 100
    assert any(width == 50 and status == "idle" for width, status in samples), (
        f"samples (width, kernel status): {samples}"
    )
    assert page.page.locator(".widget-hprogress .progress-bar-success").count() == 1

    # The job table opens in the accordion and lists both jobs.
    page.page.get_by_text("Jobs (2)").click()
    page.page.wait_for_function(
        "() => document.body.innerText.includes('doubling 42')", timeout=30_000
    )
    page.screenshot("table-open")
    assert page.blocked_urls == []


BROWSER_MIXED_CELL = """\
def hold(value):
    time.sleep(120)
    return value

def fail(value):
    raise ValueError(f"cannot use {value}")

held = Config.configure_task("hold", hold, a, Config.configure_data_node("held"))
failing = Config.configure_task("failing", fail, a, Config.configure_data_node("bad"))
scenario = tp.create_scenario(Config.configure_scenario("mixed", [held, failing]))
submission = tp.submit(scenario)
"""

BROWSER_GRAPH_CELL = """\
from jupyter_scenarios.widgets import GraphView
GraphView(scenario)
"""


def wait_for_graph(browser: Any, status: str, count: int) -> None:
    """Wait until the page's graph views show ``count`` tasks in ``status``."""
    selector = f".jupyter-scenarios-graph g.task[data-status={status}]"
    browser.wait_for_function(
        f"() => document.querySelectorAll({selector!r}).length === {count}",
        timeout=30_000,
    )


@pytest.mark.browser
@pytest.mark.slow
def test_lab_cancel_button_and_graph(
    tmp_path: Path,
    jupyter_lab: LabServer,
    lab_page: Callable[..., LabNotebookPage],
) -> None:
    setup = BROWSER_SETUP.format(repo=str(REPO_ROOT)) + NOTEBOOK_SETUP.format(
        seconds=0, storage=str(tmp_path / "store")
    )
    notebook = make_notebook([setup, BROWSER_MIXED_CELL, BROWSER_GRAPH_CELL])
    path = jupyter_lab.add_notebook("cancel_and_graph.ipynb", notebook)
    page = lab_page(path)
    page.run_all()
    page.wait_for_all_cells()
    browser = page.page

    # The failed job's traceback opens from its row; the held job can be cancelled.
    browser.get_by_text("Jobs (2)").click()
    browser.get_by_text("the task function raised: ValueError: cannot use 21").click()
    browser.wait_for_function(
        "() => document.body.innerText.includes('Traceback (most recent call last)')",
        timeout=30_000,
    )
    wait_for_graph(browser, "RUNNING", 1)
    wait_for_graph(browser, "FAILED", 1)
    page.screenshot("running")

    browser.get_by_role("button", name="Cancel", exact=True).click()
    wait_for_graph(browser, "CANCELED", 1)
    browser.wait_for_function(
        "() => document.body.innerText.includes('cancelled while running')",
        timeout=30_000,
    )
    page.screenshot("cancelled")
    assert browser.locator(".widget-hprogress .progress-bar-danger").count() == 1
    assert browser.get_by_role("button", name="Cancel", exact=True).count() == 0
    assert page.blocked_urls == []
