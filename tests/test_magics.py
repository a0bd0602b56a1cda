"""Tests of the IPython magics and of notebook use, each through a real IPython kernel.

The kernels import ``jupyter_scenarios`` from this checkout: the first cell puts the
repository root on ``sys.path``, which the forkserver and worker processes of
standalone mode inherit. Timings measured inside the kernel are printed, never
bounded from above.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import psutil
import pytest
from helpers.kernel import (
    WIDGET_VIEW_MIMETYPE,
    JupyterDirs,
    KernelSession,
    kernel_session,
)
from helpers.processes import is_running, terminate, wait_for_exit

REPO_ROOT = Path(__file__).resolve().parents[1]

# Seconds any single cell, job or process exit is waited for.
CELL_TIMEOUT = 60.0
# Seconds the worker processes of a shut-down kernel get to exit.
WORKER_EXIT_SECONDS = 15.0

LINE_MAGICS = [
    "scenario_config",
    "datanode",
    "submit",
    "jobs",
    "cancel",
    "scenario_graph",
    "export_config",
    "wait",
]
CELL_MAGICS = ["datanode", "task", "scenario"]

SETUP_CELL = f"""\
import sys
if {str(REPO_ROOT)!r} not in sys.path:
    sys.path.insert(0, {str(REPO_ROOT)!r})
import json
import time

import jupyter_scenarios as tp
from jupyter_scenarios import Config

%load_ext jupyter_scenarios
"""

# The tutorial scenario declared with magics: my_input -> double -> intermediate ->
# add -> my_output, computing 21 * 2 + 10 = 52.
DECLARE_DATA_NODES_CELL = """\
%scenario_config --mode standalone --workers 2
%datanode my_input --default 21
%datanode intermediate --default 21
%datanode my_output
"""

DOUBLE_TASK_CELL = """\
%%task double --inputs my_input --outputs intermediate
def double(nb):
    return nb * {factor}
"""

ADD_FUNCTION_CELL = """\
def add(nb):
    return nb + 10
"""

PIPELINE_SCENARIO_CELL = """\
%%scenario my_scenario --create scenario
my_input -> double -> intermediate -> add -> my_output
"""


def print_json(expression: str) -> str:
    """Return a line of cell code that prints ``expression`` as one JSON line."""
    return f"print(json.dumps({expression}, default=str))"


def run_json(kernel: KernelSession, code: str, timeout: float = CELL_TIMEOUT) -> Any:
    """Run ``code``, which must print one JSON line last, and return the decoded value."""
    result = kernel.execute(code, timeout=timeout).check()
    lines = result.stdout.strip().splitlines()
    assert lines, f"Cell printed nothing on stdout. stderr:\n{result.stderr}"
    return json.loads(lines[-1])


def start_scenarios(kernel: KernelSession) -> None:
    """Import the package in the kernel and load the extension with ``%load_ext``."""
    kernel.execute(SETUP_CELL).check()


def declare_tutorial(kernel: KernelSession, factor: int = 2) -> None:
    """Declare the tutorial scenario with magics and create it as ``scenario``."""
    kernel.execute(DECLARE_DATA_NODES_CELL).check()
    kernel.execute(DOUBLE_TASK_CELL.format(factor=factor)).check()
    kernel.execute(ADD_FUNCTION_CELL).check()
    kernel.execute(PIPELINE_SCENARIO_CELL).check()


def page_text(kernel: KernelSession, query: str, timeout: float = 10.0) -> str:
    """Run ``query`` (such as ``%wait?``) and return the help text it pages.

    ``?`` sends its help as a ``page`` payload in the execute reply, not as output.
    """
    msg_id = kernel.client.execute(query, allow_stdin=False)
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"No execute reply for {query!r} within {timeout} s"
        reply = kernel.client.get_shell_msg(timeout=remaining)
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    assert reply["content"]["status"] == "ok", reply["content"]
    pages = [
        payload["data"]["text/plain"]
        for payload in reply["content"].get("payload", [])
        if payload.get("source") == "page"
    ]
    # IPython colours the headings with ANSI escape sequences.
    return re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(pages))


# ---------------------------------------------------------------------------------
# Registration and help
# ---------------------------------------------------------------------------------


def test_load_ext_registers_every_magic(kernel: KernelSession) -> None:
    start_scenarios(kernel)
    registered = run_json(
        kernel,
        "magics = get_ipython().magics_manager.magics\n"
        + print_json(
            "{'line': sorted(magics['line']), 'cell': sorted(magics['cell'])}"
        ),
    )

    for name in LINE_MAGICS:
        assert name in registered["line"], f"line magic %{name} is not registered"
    for name in CELL_MAGICS:
        assert name in registered["cell"], f"cell magic %%{name} is not registered"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("%scenario_config?", "Set how jobs run"),
        ("%datanode?", "Declare a data node"),
        ("%%task?", "declare it as a task"),
        ("%%scenario?", "Declare a scenario"),
        ("%submit?", "Submit a scenario"),
        ("%jobs?", "table of every job"),
        ("%cancel?", "Cancel jobs"),
        ("%scenario_graph?", "task graph"),
        ("%export_config?", "TOML file"),
        ("%wait?", "Wait for every submission"),
    ],
)
def test_magic_help(kernel: KernelSession, query: str, expected: str) -> None:
    start_scenarios(kernel)

    text = page_text(kernel, query)

    assert expected in text, f"{query} help does not contain {expected!r}:\n{text}"
    usage = "%" + query.strip("%?")
    assert usage in text, f"{query} help shows no usage or example:\n{text}"


# ---------------------------------------------------------------------------------
# Running the tutorial declared with magics
# ---------------------------------------------------------------------------------


def test_magic_tutorial_standalone_gives_52(kernel: KernelSession) -> None:
    start_scenarios(kernel)
    declare_tutorial(kernel)

    kernel.execute(
        f"submission = %submit scenario --wait --timeout {CELL_TIMEOUT}",
        timeout=CELL_TIMEOUT + 10,
    ).check()
    outcome = run_json(
        kernel,
        "import os\n"
        + print_json(
            "{'mode': Config.job_config.mode,"
            " 'workers': Config.job_config.max_nb_of_workers,"
            " 'status': submission.submission_status.name,"
            " 'output': scenario.my_output.read(),"
            " 'job_statuses': [job.status.name for job in submission.jobs],"
            " 'worker_pids': [job.worker_pid for job in submission.jobs],"
            " 'kernel_pid': os.getpid()}"
        ),
    )

    assert outcome["mode"] == "standalone"
    assert outcome["workers"] == 2
    assert outcome["status"] == "COMPLETED"
    assert outcome["job_statuses"] == ["COMPLETED", "COMPLETED"]
    assert outcome["output"] == 52
    for pid in outcome["worker_pids"]:
        assert pid is not None, "a standalone job has no worker pid"
        assert pid != outcome["kernel_pid"], "a standalone job ran in the kernel"


def test_rerun_task_cell_runs_new_code(kernel: KernelSession) -> None:
    start_scenarios(kernel)
    declare_tutorial(kernel, factor=2)
    first = run_json(
        kernel,
        f"scenario.submit(wait=True, timeout={CELL_TIMEOUT})\n"
        + print_json("scenario.my_output.read()"),
    )

    kernel.execute(DOUBLE_TASK_CELL.format(factor=3)).check()
    second = run_json(
        kernel,
        f"resubmission = scenario.submit(wait=True, timeout={CELL_TIMEOUT})\n"
        + print_json(
            "{'status': resubmission.submission_status.name,"
            " 'output': scenario.my_output.read()}"
        ),
    )

    assert first == 52
    assert second["status"] == "COMPLETED"
    assert second["output"] == 21 * 3 + 10, "the re-run %%task cell's code did not run"


# ---------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cell", "token"),
    [
        ("%scenario_config --mode bogus", "bogus"),
        ("%scenario_config --workers 0", "--workers 0"),
        ("%%scenario broken\nnot_a_task", "not_a_task"),
        (
            "%%scenario broken\nmy_input -> missing_function -> my_output",
            "missing_function",
        ),
        (
            "%%task no_function --inputs my_input --outputs my_output\nx = 1",
            "no_function",
        ),
        ("%datanode valid_for --validity soon", "soon"),
        ("%datanode 1abc", "1abc"),
        ("%submit no_such_scenario", "no_such_scenario"),
        ("%submit no_such_scenario --wait --timeout -2", "-2"),
        ("%wait --timeout -1", "-1"),
    ],
    ids=[
        "bad-mode",
        "zero-workers",
        "unknown-task",
        "pipeline-missing-function",
        "task-without-function",
        "bad-validity",
        "invalid-data-node-id",
        "unknown-entity",
        "negative-submit-timeout",
        "negative-wait-timeout",
    ],
)
def test_bad_magic_line_raises_usage_error(
    kernel: KernelSession, cell: str, token: str
) -> None:
    start_scenarios(kernel)
    kernel.execute(DECLARE_DATA_NODES_CELL).check()

    result = kernel.execute(cell)

    assert result.status == "error", f"{cell!r} was accepted"
    assert "UsageError:" in result.stderr, f"stderr of {cell!r}: {result.stderr!r}"
    assert token in result.stderr, f"message does not name {token!r}: {result.stderr}"
    assert "Traceback" not in result.stderr
    assert result.errors == [], "a traceback was shown instead of a UsageError"
    assert len(result.stderr.strip().splitlines()) <= 3, result.stderr


def test_task_error_stacktrace_shows_cell_line(kernel: KernelSession) -> None:
    start_scenarios(kernel)
    kernel.execute(DECLARE_DATA_NODES_CELL).check()
    failing_line = 'raise ValueError(f"no good: {nb}")'
    kernel.execute(
        "%%task explode --inputs my_input --outputs my_output\n"
        "def explode(nb):\n"
        "    halved = nb / 2\n"
        f"    {failing_line}\n"
    ).check()
    kernel.execute("%%scenario exploding --create scenario\nexplode").check()

    outcome = run_json(
        kernel,
        f"submission = scenario.submit(wait=True, timeout={CELL_TIMEOUT})\n"
        "job = submission.jobs[0]\n"
        + print_json(
            "{'status': job.status.name, 'stacktrace': job.stacktrace,"
            " 'cell_file': explode.__code__.co_filename}"
        ),
    )

    assert outcome["status"] == "FAILED"
    stacktrace = outcome["stacktrace"][0]
    assert "ValueError: no good: 21" in stacktrace
    assert f'"{outcome["cell_file"]}", line 3' in stacktrace, (
        f"stacktrace does not name the cell's line 3:\n{stacktrace}"
    )
    assert failing_line in stacktrace, (
        f"stacktrace does not show the failing source line:\n{stacktrace}"
    )


def test_raise_for_status_shows_worker_traceback(kernel: KernelSession) -> None:
    start_scenarios(kernel)
    kernel.execute(DECLARE_DATA_NODES_CELL).check()
    failing_line = 'raise KeyError(f"missing {nb}")'
    kernel.execute(
        "%%task lookup --inputs my_input --outputs my_output\n"
        "def lookup(nb):\n"
        f"    {failing_line}\n"
    ).check()
    kernel.execute("%%scenario looking --create scenario\nlookup").check()
    kernel.execute(
        f"submission = scenario.submit(wait=True, timeout={CELL_TIMEOUT})"
    ).check()

    result = kernel.execute("submission.raise_for_status()")

    assert len(result.errors) == 1
    error = result.errors[0]
    assert error["ename"] == "TaskFailed"
    rendered = "\n".join(error["traceback"])
    assert "failed in its worker" in rendered
    assert failing_line in rendered
    assert "KeyError: 'missing 21'" in rendered


def test_scenario_magic_additional_data_nodes(kernel: KernelSession) -> None:
    start_scenarios(kernel)
    kernel.execute("def double(nb):\n    return nb * 2").check()
    kernel.execute(
        "%%scenario noted --additional notes --create scenario\n"
        "my_input -> double -> my_output"
    ).check()

    names = run_json(kernel, print_json("sorted(scenario.additional_data_nodes)"))

    assert names == ["notes"]


# ---------------------------------------------------------------------------------
# Loading from IPython configuration
# ---------------------------------------------------------------------------------


def test_extension_loads_from_ipython_config(tmp_path: Path) -> None:
    # A profile of its own: the session-wide IPython folder of ``jupyter_dirs`` must
    # not load the extension into every other test's kernel.
    with TemporaryDirectory(prefix="ipy-") as folder:
        dirs = JupyterDirs.create(Path(folder))
        profile = dirs.ipython / "profile_default"
        profile.mkdir(parents=True, exist_ok=True)
        (profile / "ipython_config.py").write_text(
            "c.InteractiveShellApp.extensions = ['jupyter_scenarios']\n",
            encoding="utf-8",
        )
        # The extension is imported before any cell runs, so the path comes from
        # the environment.
        environment = {"PYTHONPATH": str(REPO_ROOT)}
        with kernel_session(tmp_path, dirs=dirs, env=environment) as kernel:
            state = run_json(
                kernel,
                "import json\n"
                "shell = get_ipython()\n"
                + print_json(
                    "{'loaded': sorted(shell.extension_manager.loaded),"
                    " 'line': sorted(shell.magics_manager.magics['line']),"
                    " 'cell': sorted(shell.magics_manager.magics['cell'])}"
                ),
            )

    assert "jupyter_scenarios" in state["loaded"]
    for name in LINE_MAGICS:
        assert name in state["line"], f"line magic %{name} is not registered"
    for name in CELL_MAGICS:
        assert name in state["cell"], f"cell magic %%{name} is not registered"


# ---------------------------------------------------------------------------------
# The Python API tutorial, run as notebook cells in standalone mode
# ---------------------------------------------------------------------------------

# Seconds the add task sleeps; long enough that two scenarios visibly overlap.
ADD_SECONDS = 3.0
# Seconds submit(wait=True, timeout=...) waits; shorter than ADD_SECONDS.
WAIT_TIMEOUT = 1.0

API_CONFIG_CELL = f"""\
def double(nb):
    return nb * 2


def add(nb):
    time.sleep({ADD_SECONDS})
    return nb + 10


input_cfg = Config.configure_data_node("my_input", default_data=21)
intermediate_cfg = Config.configure_data_node("intermediate", default_data=21)
output_cfg = Config.configure_data_node("my_output")
first_task_cfg = Config.configure_task("double", double, input_cfg, intermediate_cfg)
second_task_cfg = Config.configure_task("add", add, intermediate_cfg, output_cfg)
scenario_cfg = Config.configure_scenario(
    id="my_scenario", task_configs=[first_task_cfg, second_task_cfg]
)
Config.configure_job_executions(mode="standalone", max_nb_of_workers=2)
tp.Orchestrator().run()
"""

API_SUBMIT_CELL = """\
scenario_1 = tp.create_scenario(scenario_cfg)
scenario_2 = tp.create_scenario(scenario_cfg)

started = time.perf_counter()
submission_1 = scenario_1.submit()
submit_1_seconds = time.perf_counter() - started
started = time.perf_counter()
submission_2 = scenario_2.submit()
submit_2_seconds = time.perf_counter() - started
finished_at_return = [
    job.is_finished() for job in submission_1.jobs + submission_2.jobs
]
"""

API_WAIT_CELL = f"""\
for submission in (submission_1, submission_2):
    submission.wait({CELL_TIMEOUT})


def add_job(submission):
    return next(job for job in submission.jobs if job.task_config_id == "add")


add_1 = add_job(submission_1)
add_2 = add_job(submission_2)
"""

API_TIMEOUT_CELL = f"""\
scenario_3 = tp.create_scenario(scenario_cfg)
started = time.perf_counter()
submission_3 = scenario_3.submit(wait=True, timeout={WAIT_TIMEOUT})
wait_seconds = time.perf_counter() - started
status_at_return = submission_3.submission_status.name
"""


def test_api_tutorial_standalone(kernel: KernelSession, capsys: Any) -> None:
    start_scenarios(kernel)
    kernel.execute(API_CONFIG_CELL).check()
    kernel.execute(API_SUBMIT_CELL).check()
    submitted = run_json(
        kernel,
        print_json(
            "{'submit_1': submit_1_seconds, 'submit_2': submit_2_seconds,"
            " 'finished_at_return': finished_at_return}"
        ),
    )
    kernel.execute(API_WAIT_CELL, timeout=CELL_TIMEOUT + 10).check()
    add_jobs = run_json(
        kernel,
        print_json(
            "{'statuses': [add_1.status.name, add_2.status.name],"
            " 'outputs': [scenario_1.my_output.read(), scenario_2.my_output.read()],"
            " 'run_at': [add_1.run_at.timestamp(), add_2.run_at.timestamp()],"
            " 'finished_at': [add_1.finished_at.timestamp(),"
            " add_2.finished_at.timestamp()]}"
        ),
    )
    timeout_result = kernel.execute(API_TIMEOUT_CELL, timeout=CELL_TIMEOUT).check()
    magic_timeout_result = kernel.execute(
        "scenario_4 = tp.create_scenario(scenario_cfg)\n"
        f"%submit scenario_4 --wait --timeout {WAIT_TIMEOUT}",
        timeout=CELL_TIMEOUT,
    ).check()
    waited = run_json(
        kernel,
        print_json("{'seconds': wait_seconds, 'status': status_at_return}"),
    )

    with capsys.disabled():
        print(
            f"\nsubmit() returned after {submitted['submit_1'] * 1000:.2f} ms and "
            f"{submitted['submit_2'] * 1000:.2f} ms; submit(wait=True, "
            f"timeout={WAIT_TIMEOUT}) returned after {waited['seconds']:.2f} s"
        )
    assert not all(submitted["finished_at_return"]), (
        "every job had finished before submit() returned"
    )
    assert add_jobs["statuses"] == ["COMPLETED", "COMPLETED"]
    assert add_jobs["outputs"] == [52, 52]
    run_1, run_2 = add_jobs["run_at"]
    end_1, end_2 = add_jobs["finished_at"]
    assert run_1 < end_2, "add of scenario_2 finished before add of scenario_1 ran"
    assert run_2 < end_1, "add of scenario_1 finished before add of scenario_2 ran"
    assert waited["status"] not in ("COMPLETED", "FAILED", "CANCELED")
    assert "timed out" in timeout_result.stderr, (
        f"no timeout warning in the cell output: {timeout_result.outputs}"
    )
    assert "keep running" in timeout_result.stderr
    # The warning of a magic names the cell, as the API's does, not IPython's code.
    assert "SubmissionTimeoutWarning" in magic_timeout_result.stderr
    assert "interactiveshell.py" not in magic_timeout_result.stderr, (
        magic_timeout_result.stderr
    )


def test_kernel_shutdown_stops_workers(kernel: KernelSession, capsys: Any) -> None:
    start_scenarios(kernel)
    kernel.execute(API_CONFIG_CELL).check()
    kernel.execute(API_SUBMIT_CELL).check()
    assert kernel.pid is not None
    children = psutil.Process(kernel.pid).children(recursive=True)
    described = [" ".join(child.cmdline())[:120] for child in children]
    assert any("forkserver" in command for command in described), described

    # Shut down as KernelManager.shutdown_kernel(now=False) does, but leave the
    # manager's sockets open because the fixture's teardown shuts down again.
    started = time.monotonic()
    kernel.km.request_shutdown()
    kernel.km.finish_shutdown()
    shutdown_seconds = time.monotonic() - started
    try:
        leftovers = wait_for_exit(children, WORKER_EXIT_SECONDS)
        left_described = [
            f"{child.pid} {' '.join(child.cmdline())[:100]}"
            for child in leftovers
            if is_running(child)
        ]
    finally:
        terminate(children)

    with capsys.disabled():
        print(
            f"\nkernel shutdown took {shutdown_seconds:.2f} s with "
            f"{len(children)} child processes running"
        )
    assert left_described == [], "processes outlived the kernel"


def test_jobs_magic_shows_table(kernel: KernelSession) -> None:
    start_scenarios(kernel)
    declare_tutorial(kernel)
    kernel.execute(f"scenario.submit(wait=True, timeout={CELL_TIMEOUT})").check()

    result = kernel.execute("%jobs").check()

    bundles = result.display_data
    assert len(bundles) == 1, result.outputs
    assert WIDGET_VIEW_MIMETYPE in bundles[0]
    assert "COMPLETED" in bundles[0]["text/plain"]
    assert "double" in bundles[0]["text/plain"]
    assert "add" in bundles[0]["text/plain"]


SLEEPY_TASK_CELL = """\
%%task sleepy --inputs my_input --outputs my_output
def sleepy(nb):
    time.sleep(120)
    return nb
"""

WAIT_UNTIL_RUNNING_CELL = f"""\
job = submission.jobs[0]
deadline = time.monotonic() + {CELL_TIMEOUT}
while not job.is_running() and time.monotonic() < deadline:
    time.sleep(0.05)
print(json.dumps(job.status.name))
"""


def test_runtime_magics(kernel: KernelSession, tmp_path: Path) -> None:
    start_scenarios(kernel)
    kernel.execute(DECLARE_DATA_NODES_CELL).check()
    kernel.execute(SLEEPY_TASK_CELL).check()
    kernel.execute("%%scenario sleepy_scenario --create scenario\nsleepy").check()

    graph = kernel.execute("%scenario_graph scenario").check()
    export = kernel.execute("%export_config exported.toml").check()
    kernel.execute("submission = %submit scenario").check()
    status_before = run_json(kernel, WAIT_UNTIL_RUNNING_CELL)
    cancel = kernel.execute("%cancel submission").check()
    kernel.execute(f"%wait --timeout {CELL_TIMEOUT}", timeout=CELL_TIMEOUT + 10).check()
    cancelled = run_json(
        kernel,
        print_json(
            "{'status': job.status.name, 'reason': job.reason,"
            " 'submission': submission.submission_status.name}"
        ),
    )

    assert len(graph.display_data) == 1, graph.outputs
    assert WIDGET_VIEW_MIMETYPE in graph.display_data[0]
    assert "sleepy" in graph.display_data[0]["text/plain"]
    assert "<svg" in graph.display_data[0]["text/html"]
    assert "exported.toml" in export.stdout
    exported = tmp_path / "exported.toml"
    assert exported.is_file()
    assert "sleepy" in exported.read_text(encoding="utf-8")
    assert status_before == "RUNNING"
    assert cancel.stdout == "Cancelled 1 job.\n"
    assert cancelled["status"] == "CANCELED"
    assert "worker was stopped" in cancelled["reason"]
    assert cancelled["submission"] == "CANCELED"
