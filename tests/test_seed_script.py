"""Taipy's job execution tutorial, run as a script with only its imports changed.

The test reads the tutorial's full code from a copy kept beside the repository and
skips when that copy is absent. Its two Taipy imports are replaced and nothing else:
standalone mode with 2 workers, a 10-second task, and an exit while the last
submission still runs.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

REPOSITORY = Path(__file__).resolve().parent.parent
SEED = REPOSITORY.parent / "shared" / "seed" / "job_execution_tutorial.md"

pytestmark = pytest.mark.timeout(240)


def tutorial_script() -> str:
    text = SEED.read_text(encoding="utf-8")
    heading = text.index("## Entire code")
    code = re.search(r"```\n(.*?)```", text[heading:], re.DOTALL)
    assert code is not None, (
        "the seed has no code block after its 'Entire code' heading"
    )
    script = code.group(1)
    script = script.replace(
        "from taipy.core.config import Config", "from jupyter_scenarios import Config"
    )
    script = script.replace("import taipy as tp", "import jupyter_scenarios as tp")
    assert "taipy" not in script.replace("jupyter_scenarios", "")
    return script


@pytest.mark.skipif(not SEED.exists(), reason=f"{SEED} is not present")
def test_seed_tutorial_runs_as_script(tmp_path: Path) -> None:
    (tmp_path / "job_execution.py").write_text(tutorial_script(), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(REPOSITORY))

    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "job_execution.py"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    children: set[int] = set()
    while process.poll() is None and time.monotonic() - started < 180:
        try:
            children |= {
                child.pid for child in psutil.Process(process.pid).children(True)
            }
        except psutil.NoSuchProcess:
            break
        time.sleep(0.2)
    stdout, stderr = process.communicate(timeout=60)

    assert process.returncode == 0, stderr[-3000:]
    assert "timed out after 5 s" in stderr
    # The job still running at exit is cancelled, and the script prints that.
    assert "exiting with 1 unfinished job (JOB_" in stderr, stderr[-3000:]
    # What the tasks print reaches the terminal, as with Taipy's workers.
    assert "Wait 10 seconds in add function" in stdout, stdout
    assert (tmp_path / "config_07.toml").exists()

    # The worker processes ended with the script.
    deadline = time.monotonic() + 10
    while (
        any(psutil.pid_exists(pid) for pid in children) and time.monotonic() < deadline
    ):
        time.sleep(0.1)
    alive = [pid for pid in children if psutil.pid_exists(pid)]
    assert alive == []

    database = tmp_path / ".scenarios" / "entities.db"
    with sqlite3.connect(database) as connection:
        statuses = [
            row[0]
            for row in connection.execute("SELECT status FROM job ORDER BY rowid")
        ]
        scenarios = connection.execute("SELECT COUNT(*) FROM scenario").fetchone()[0]
    assert scenarios == 3
    # Three submissions ran to completion (the two parallel ones and wait=True);
    # the one that timed out was cancelled when the script exited.
    assert statuses.count("COMPLETED") >= 7
    assert "RUNNING" not in statuses
    assert "PENDING" not in statuses
    assert set(statuses) <= {"COMPLETED", "CANCELED", "ABANDONED"}


UNGUARDED_SCRIPT = """\
import IPython  # as a script exported from a notebook may
import jupyter_scenarios as tp
from jupyter_scenarios import Config

Config.configure_core(storage_folder="store")
Config.configure_job_executions(mode="standalone", max_nb_of_workers=2)
x = Config.configure_data_node("x", default_data=-1)
task = Config.configure_task("t", abs, x, Config.configure_data_node("y"))
scenario = tp.create_scenario(Config.configure_scenario("s", [task]))
print(scenario.submit(wait=True).jobs[0].status)
"""


def test_script_without_main_guard_is_told_why(tmp_path: Path) -> None:
    # The workers import the script again, so each of them tries to start workers
    # of its own while multiprocessing bootstraps it, and exits.
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED_SCRIPT, encoding="utf-8")
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY)}

    completed = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
        cwd=tmp_path,
        check=False,
    )

    assert completed.returncode != 0, completed.stdout
    last_line = completed.stderr.strip().splitlines()[-1]
    assert "before it became ready" in last_line, completed.stderr
    assert 'if __name__ == "__main__":' in last_line, last_line


TALKING_SCRIPT = """\
import os, sys, time
import jupyter_scenarios as tp
from jupyter_scenarios import Config


def talk(gate):
    print("task says hello", flush=True)
    deadline = time.monotonic() + 60
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    print("task says bye", flush=True)
    return gate


if __name__ == "__main__":
    Config.configure_core(storage_folder="store")
    Config.configure_job_executions(mode="standalone", max_nb_of_workers=1)
    gate = Config.configure_data_node("gate", default_data=sys.argv[1])
    task = Config.configure_task("t", talk, gate, Config.configure_data_node("y"))
    scenario = tp.create_scenario(Config.configure_scenario("s", [task]))
    submission = scenario.submit(wait=True, timeout=60)
    print("logs:", repr(submission.jobs[0].logs), flush=True)
"""


def test_script_shows_task_output_while_job_runs(tmp_path: Path) -> None:
    # Taipy's workers print to the script's terminal; so do these, line by line
    # as the job goes, and the job's log keeps the output too.
    script = tmp_path / "talking.py"
    script.write_text(TALKING_SCRIPT, encoding="utf-8")
    gate = tmp_path / "gate"
    process = subprocess.Popen(
        [sys.executable, str(script), str(gate)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        # Bounded: without its gate the task gives up after 60 s.
        first = process.stdout.readline()
        assert first == "task says hello\n", first
        gate.touch()
        rest, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)

    assert process.returncode == 0, stderr
    assert rest == ("task says bye\nlogs: 'task says hello\\ntask says bye\\n'\n"), rest


UNREAD_OUTPUT_SCRIPT = """\
import os, sys
import jupyter_scenarios as tp
from jupyter_scenarios import Config


def flood(index):
    sys.stdout.write("".join(f"line {index} " + "x" * 60 + "\\n" for _ in range(40_000)))
    sys.stdout.flush()
    return index


def move_stdout(secret_path):
    print("printed by the job", flush=True)
    # Code that sends descriptor 1 elsewhere, as some C libraries and daemons do.
    os.dup2(os.open(secret_path, os.O_RDWR), 1)
    return secret_path


if __name__ == "__main__":
    function = {"flood": flood, "move": move_stdout}[sys.argv[1]]
    Config.configure_core(storage_folder="store")
    Config.configure_job_executions(mode="standalone", max_nb_of_workers=2)
    tasks = [
        Config.configure_task(
            f"t{index}",
            function,
            Config.configure_data_node(f"in{index}", default_data=sys.argv[2]),
            Config.configure_data_node(f"out{index}"),
        )
        for index in range(2 if sys.argv[1] == "flood" else 1)
    ]
    scenario = tp.create_scenario(Config.configure_scenario("s", tasks))
    submission = scenario.submit(wait=True, timeout=60)
    statuses = sorted(job.status.name for job in submission.jobs)
    lengths = [len(job.logs) for job in submission.jobs]
    with open("result.txt", "w") as result:
        result.write(f"{statuses} {lengths}")
"""


def run_unread_output_script(
    tmp_path: Path, *args: str
) -> tuple[subprocess.Popen[bytes], str]:
    script = tmp_path / "unread.py"
    script.write_text(UNREAD_OUTPUT_SCRIPT, encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, str(script), *args],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    return process, str(script)


def test_unread_stdout_does_not_stop_jobs(tmp_path: Path) -> None:
    # Two jobs print 2.9 MB each to a pipe that is not read until the script
    # ends. The copy to the terminal must give up, not the jobs.
    process, _ = run_unread_output_script(tmp_path, "flood", "unused")
    try:
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
        assert process.stdout is not None
        process.stdout.read()
        process.wait(10)

    result = (tmp_path / "result.txt").read_text(encoding="utf-8")
    # 40,000 lines of 73 bytes each ("line unused ", 60 x and a line end).
    assert result == "['COMPLETED', 'COMPLETED'] [2920000, 2920000]", result


def test_echo_copies_job_output_not_descriptor_one(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("NOT THE JOB'S OUTPUT\n" * 5, encoding="utf-8")

    process, _ = run_unread_output_script(tmp_path, "move", str(secret))
    stdout, _ = process.communicate(timeout=120)

    assert process.returncode == 0
    assert stdout.decode() == "printed by the job\n", stdout
    result = (tmp_path / "result.txt").read_text(encoding="utf-8")
    assert result == "['COMPLETED'] [19]", result


ECHO_SCRIPT = """\
import os, sys, time
import jupyter_scenarios as tp
from jupyter_scenarios import Config


def prompt_then_wait(gate):
    # A prompt without a line end, then a wait: it must show before the wait ends.
    sys.stdout.write("waiting for the gate...")
    sys.stdout.flush()
    deadline = time.monotonic() + 60
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    return gate  # and no line end ever comes


def flood_at_once(gate):
    # More than the echo's 8 MiB queue in one write, to a fast reader.
    sys.stdout.write("".join(f"row {index:07d}\\n" for index in range(900_000)))
    return gate


if __name__ == "__main__":
    function = {"prompt": prompt_then_wait, "flood": flood_at_once}[sys.argv[1]]
    Config.configure_core(storage_folder="store")
    Config.configure_job_executions(mode="standalone", max_nb_of_workers=1)
    gate = Config.configure_data_node("gate", default_data=sys.argv[2])
    task = Config.configure_task("t", function, gate, Config.configure_data_node("y"))
    scenario = tp.create_scenario(Config.configure_scenario("s", [task]))
    job = scenario.submit(wait=True, timeout=60).jobs[0]
    print(f"after: {job.status.name} {len(job.logs)}", flush=True)
"""


def start_echo_script(tmp_path: Path, mode: str, stdout: Any) -> subprocess.Popen[str]:
    script = tmp_path / "echo.py"
    script.write_text(ECHO_SCRIPT, encoding="utf-8")
    return subprocess.Popen(
        [sys.executable, str(script), mode, str(tmp_path / "gate")],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
        stdout=stdout,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def test_echo_shows_waiting_prompt(tmp_path: Path) -> None:
    process = start_echo_script(tmp_path, "prompt", subprocess.PIPE)
    try:
        assert process.stdout is not None
        # Bounded: without its gate the task gives up after 60 s.
        prompt = process.stdout.read(len("waiting for the gate..."))
        assert prompt == "waiting for the gate...", prompt
        (tmp_path / "gate").touch()
        rest, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)

    # The prompt went out while the job waited; its line end comes at the job's end.
    assert rest == "\nafter: COMPLETED 23\n", rest


def test_echo_keeps_big_file_write(tmp_path: Path) -> None:
    with open(tmp_path / "out.txt", "w", encoding="utf-8") as out:
        process = start_echo_script(tmp_path, "flood", out)
        assert process.wait(timeout=120) == 0

    lines = (tmp_path / "out.txt").read_text(encoding="utf-8").splitlines()
    assert lines[-1] == "after: COMPLETED 10800000", lines[-1][:200]
    rows = [f"row {index:07d}" for index in range(900_000)]
    assert lines[:-1] == rows, f"{len(lines) - 1} lines; first: {lines[:2]}"
