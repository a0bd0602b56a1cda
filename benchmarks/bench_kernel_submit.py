"""Measure how long ``submit()`` takes in a real Jupyter kernel, progress widget included.

Run from the repository root::

    python benchmarks/bench_kernel_submit.py [--rounds 10]

A kernel started through jupyter_client runs the job execution tutorial's scenario
(``double`` then ``add``) in standalone mode with 2 workers, with ``%load_ext
jupyter_scenarios``, so each submission displays its progress widget as in a
notebook. Each submit runs in a cell of its own, 0.7 s after the one before, as a
person runs cells. The rounds alternate three ways of submitting:

- ``widget``: ``scenario.submit()`` with the progress widget (the default);
- ``no widget``: the same with ``settings.auto_display = False``, the baseline;
- ``bare pool``: ``concurrent.futures.ProcessPoolExecutor(2).submit`` of the two
  task functions, which returns at once and runs them without dependencies,
  storage or widget.

The same is done for a fan-out of 200 tiny tasks, whose job table has 50 rows.
The table gives the median and the largest time of the rounds, the ratio of the
medians to the ``no widget`` baseline, and the number of widgets opened during
the submitting cell. The target for each submit of the tutorial's scenario is
under 50 ms.
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from queue import Empty
from typing import Any

from _harness import machine_description, print_table

REPO_ROOT = Path(__file__).resolve().parents[1]

#: Seconds between two submitting cells.
PAUSE_SECONDS = 0.7
#: Seconds one cell may take before the benchmark stops.
CELL_TIMEOUT = 120.0
#: The target for one submit of the tutorial's scenario, in milliseconds.
TARGET_MS = 50.0

SETUP = """\
import concurrent.futures
import time

import jupyter_scenarios as tp
from jupyter_scenarios import Config
from jupyter_scenarios.widgets import settings

%load_ext jupyter_scenarios


def double(nb):
    return nb * 2


def add(nb):
    time.sleep(0.2)
    return nb + 10


def tiny(x):
    return x


Config.configure_core(storage_folder=".scenarios")
input_cfg = Config.configure_data_node("my_input", default_data=21)
intermediate_cfg = Config.configure_data_node("intermediate", default_data=21)
output_cfg = Config.configure_data_node("my_output")
first_task_cfg = Config.configure_task("double", double, input_cfg, intermediate_cfg)
second_task_cfg = Config.configure_task("add", add, intermediate_cfg, output_cfg)
tutorial_cfg = Config.configure_scenario(
    id="my_scenario", task_configs=[first_task_cfg, second_task_cfg]
)
source_cfg = Config.configure_data_node("source", default_data=1)
fan_out_cfg = Config.configure_scenario(
    id="fan_out",
    task_configs=[
        Config.configure_task(
            f"tiny_{i}", tiny, source_cfg, Config.configure_data_node(f"out_{i}")
        )
        for i in range(200)
    ],
)
Config.configure_job_executions(mode="standalone", max_nb_of_workers=2)
tp.Orchestrator().run()
pool = concurrent.futures.ProcessPoolExecutor(2)
pool.submit(tiny, 1).result()
tp.submit(tp.create_scenario(tutorial_cfg), wait=True)
"""

PREPARE = "scenario = tp.create_scenario({config})\nsettings.auto_display = {widget}"

SUBMIT = """\
started = time.perf_counter()
scenario.submit()
print((time.perf_counter() - started) * 1000)
"""

BARE_SUBMIT = """\
started = time.perf_counter()
futures = [pool.submit(double, 21), pool.submit(add, 42)]
print((time.perf_counter() - started) * 1000)
"""


class Kernel:
    """A kernel started with jupyter_client, and a client that runs cells in it."""

    def __init__(self, cwd: str) -> None:
        from jupyter_client.manager import start_new_kernel

        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        self.manager, self.client = start_new_kernel(
            kernel_name="python3", cwd=cwd, env=env
        )

    def run(self, code: str) -> tuple[str, int]:
        """Run ``code`` and return its output and the number of widgets it opened.

        Raises ``RuntimeError`` with the traceback if the code fails.
        """
        msg_id = self.client.execute(code)
        output: list[str] = []
        opened = 0
        error = None
        while True:
            try:
                message: dict[str, Any] = self.client.get_iopub_msg(
                    timeout=CELL_TIMEOUT
                )
            except Empty:
                raise RuntimeError(
                    f"Timed out: the kernel was not idle {CELL_TIMEOUT} s after "
                    f"starting to run:\n{code}"
                ) from None
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            kind = message["msg_type"]
            content = message["content"]
            if kind == "stream":
                output.append(content["text"])
            elif kind == "comm_open":
                opened += 1
            elif kind == "error":
                error = "\n".join(content["traceback"])
            elif kind == "status" and content["execution_state"] == "idle":
                break
        self.client.get_shell_msg(timeout=CELL_TIMEOUT)
        if error is not None:
            raise RuntimeError(f"The kernel failed running:\n{code}\n{error}")
        return "".join(output), opened

    def stop(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


def measure(
    kernel: Kernel, rounds: int
) -> dict[tuple[str, str], list[tuple[float, int]]]:
    """Time the submits of every case, alternating the ways in each round."""
    samples: dict[tuple[str, str], list[tuple[float, int]]] = {}
    for _ in range(rounds):
        for config, case in (
            ("tutorial_cfg", "tutorial"),
            ("fan_out_cfg", "fan-out 200"),
        ):
            for way in ("widget", "no widget", "bare pool"):
                if way == "bare pool":
                    code = BARE_SUBMIT
                else:
                    widget = way == "widget"
                    kernel.run(PREPARE.format(config=config, widget=widget))
                    code = SUBMIT
                time.sleep(PAUSE_SECONDS)
                output, opened = kernel.run(code)
                samples.setdefault((case, way), []).append(
                    (float(output.split()[-1]), opened)
                )
        # Let the workers catch up, so that each round starts alike.
        kernel.run("%wait")
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args(argv)

    print(machine_description())
    with tempfile.TemporaryDirectory(prefix="bench-kernel-") as folder:
        kernel = Kernel(folder)
        try:
            kernel.run(SETUP)
            samples = measure(kernel, args.rounds)
            kernel.run("pool.shutdown()\ntp.Orchestrator().stop()")
        finally:
            kernel.stop()

    rows = []
    for (case, way), values in samples.items():
        times = [value for value, _ in values]
        baseline = statistics.median(value for value, _ in samples[(case, "no widget")])
        median = statistics.median(times)
        rows.append(
            [
                case,
                way,
                f"{median:.1f}",
                f"{max(times):.1f}",
                f"{median / baseline:.2f}x",
                str(max(opened for _, opened in values)),
                "yes" if max(times) < TARGET_MS else "no",
            ]
        )
    print_table(
        f"submit() in a kernel, {args.rounds} rounds (ms)",
        ["case", "way", "median", "max", "vs no widget", "widgets", "< 50 ms"],
        rows,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
