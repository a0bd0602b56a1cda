"""Measure the engine's own cost per job and per task created, in development mode.

Run from the repository root::

    python benchmarks/bench_engine.py [--repeats 5]

Development mode runs every job in the calling thread, so a submission's wall time
is the engine's work (statuses, store writes, reading inputs and writing outputs to
storage) plus the task functions. The baseline calls the same functions directly in
a loop, in this run. "Engine cost per job" is (submission time - baseline) / jobs,
from the median wall time. "CPU/job" is the same from the process's CPU time, which
leaves out waiting for the disk and for other processes on a shared machine.

Cases: a fan-out of 200 and of 1,000 tiny tasks, a chain of 50, and the creation of
scenarios of 50 and 1,000 tasks (fan-out shape). Each repeat uses a new storage
folder and a new orchestrator, and the table shows the median of the repeats.
Nothing is asserted. The last columns compare with the targets.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

from _harness import (
    chain_config,
    fan_out_config,
    fresh_engine,
    machine_description,
    median_of,
    print_table,
    start_clock,
    submit_and_check,
    time_call,
    tiny,
)

import jupyter_scenarios as tp
from jupyter_scenarios.config.sections import ScenarioConfig

# Engine cost per tiny job that development mode aims to stay under, in seconds.
TARGET_COST_PER_JOB = 0.001


def time_submission(
    build: Callable[[], ScenarioConfig], repeats: int
) -> tuple[float, float, float]:
    """Time submit(wait=True), each repeat on a new engine.

    Returns the median and the minimum wall time and the median CPU time of this
    process, in seconds. CPU time leaves out waiting for the disk (fsync) and for
    other processes on a shared machine.
    """
    wall = []
    cpu = []
    for _ in range(repeats):
        with fresh_engine("development"):
            scenario = tp.create_scenario(build())
            began = start_clock()
            cpu_began = time.process_time()
            submit_and_check(scenario)
            wall.append(time.perf_counter() - began)
            cpu.append(time.process_time() - cpu_began)
    return median_of(wall), min(wall), median_of(cpu)


def time_creation(build: Callable[[], ScenarioConfig], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        with fresh_engine("development"):
            config = build()
            tp.Orchestrator().run()
            began = start_clock()
            tp.create_scenario(config)
            samples.append(time.perf_counter() - began)
    return median_of(samples)


def direct_fan_out(count: int) -> Callable[[], object]:
    return lambda: [tiny(1) for _ in range(count)]


def direct_chain(length: int) -> Callable[[], object]:
    def run() -> int:
        value = 0
        for _ in range(length):
            value = tiny(value)
        return value

    return run


def time_direct(function: Callable[[], object], repeats: int) -> float:
    return median_of([time_call(function) for _ in range(max(repeats, 20))])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per case")
    arguments = parser.parse_args(argv)
    repeats = arguments.repeats

    print(f"Machine: {machine_description()}")
    print(f"Development mode, median of {repeats} runs per case")

    cases = [
        ("fan-out 200", 200, lambda: fan_out_config(200), direct_fan_out(200)),
        ("fan-out 1000", 1000, lambda: fan_out_config(1000), direct_fan_out(1000)),
        ("chain 50", 50, lambda: chain_config(50), direct_chain(50)),
    ]
    rows = []
    per_job: dict[str, float] = {}
    for name, jobs, build, direct in cases:
        seconds, fastest, cpu = time_submission(build, repeats)
        baseline = time_direct(direct, repeats)
        cost = (seconds - baseline) / jobs
        per_job[name] = cost
        rows.append(
            [
                name,
                str(jobs),
                f"{seconds:.4f}",
                f"{fastest:.4f}",
                f"{baseline * 1e6:.1f}",
                f"{cost * 1000:.3f}",
                f"{(cpu - baseline) / jobs * 1000:.3f}",
                f"{seconds / baseline:.0f}",
                "< 1 ms",
                "yes" if cost < TARGET_COST_PER_JOB else "NO",
            ]
        )
    print_table(
        "Submissions: submit(wait=True) until every job is COMPLETED",
        [
            "case",
            "jobs",
            "engine s",
            "min s",
            "direct loop us",
            "cost/job ms",
            "CPU/job ms",
            "ratio",
            "target",
            "met",
        ],
        rows,
    )
    growth = per_job["fan-out 1000"] / per_job["fan-out 200"]
    print(
        f"  cost per job at 1000 tasks / at 200 tasks: {growth:.2f} "
        "(1.00 = flat with scenario size)"
    )

    creation_rows = []
    for tasks in (50, 1000):
        seconds = time_creation(lambda tasks=tasks: fan_out_config(tasks), repeats)
        creation_rows.append(
            [
                f"create scenario of {tasks} tasks",
                f"{seconds:.4f}",
                f"{seconds / tasks * 1000:.3f}",
            ]
        )
    print_table(
        "Creation: tp.create_scenario (data nodes, tasks and scenario stored)",
        ["case", "seconds", "ms per task"],
        creation_rows,
    )


if __name__ == "__main__":
    main()
