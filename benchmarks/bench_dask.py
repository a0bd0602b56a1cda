"""Measure dask mode (embedded LocalCluster, 2 workers) against a bare Dask client.

Run from the repository root::

    python benchmarks/bench_dask.py [--repeats 5]

The engine case times ``scenario.submit(wait=True)`` for a fan-out of 200 tiny tasks
and a chain of 50, outputs written to storage included, on a warmed-up cluster. The
baseline, measured in the same run, is a bare ``distributed.Client`` on an identical
``LocalCluster`` (2 worker processes, 1 thread each, 127.0.0.1): the fan-out submits
200 calls at once and gathers them, and the chain passes each future to the next
call, so Dask itself tracks the dependency. Each repeat uses a new storage folder
and a new cluster, and the table shows the median. Nothing is asserted.
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
    submit_and_check,
    tiny,
    warm_up_workers,
)

import jupyter_scenarios as tp
from jupyter_scenarios.config.sections import ScenarioConfig

WORKERS = 2


def run_engine(build: Callable[[], ScenarioConfig]) -> float:
    with fresh_engine("dask", WORKERS):
        warm_up_workers()
        scenario = tp.create_scenario(build())
        began = time.perf_counter()
        submit_and_check(scenario)
        return time.perf_counter() - began


def run_bare(shape: str, count: int) -> float:
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=WORKERS,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        client.gather(client.map(tiny, range(WORKERS * 2), pure=False))
        began = time.perf_counter()
        if shape == "fan-out":
            futures = [client.submit(tiny, 1, pure=False) for _ in range(count)]
            client.gather(futures)
        else:
            future = client.submit(tiny, 0, pure=False)
            for _ in range(count - 1):
                future = client.submit(tiny, future, pure=False)
            future.result()
        return time.perf_counter() - began


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per case")
    arguments = parser.parse_args(argv)
    repeats = arguments.repeats

    print(f"Machine: {machine_description()}")
    print(f"Dask mode, LocalCluster with {WORKERS} workers; median of {repeats} runs")

    cases = [
        ("fan-out 200", 200, lambda: fan_out_config(200), "fan-out"),
        ("chain 50", 50, lambda: chain_config(50), "chain"),
    ]
    rows = []
    for name, jobs, build, shape in cases:
        ours = median_of([run_engine(build) for _ in range(repeats)])
        theirs = median_of([run_bare(shape, jobs) for _ in range(repeats)])
        rows.append(
            [
                name,
                str(jobs),
                f"{ours:.3f}",
                f"{theirs:.3f}",
                f"{ours / jobs * 1000:.2f}",
                f"{theirs / jobs * 1000:.2f}",
                f"{ours / theirs:.1f}",
            ]
        )
    print_table(
        "Makespan, submit(wait=True) to all COMPLETED (seconds; ms per job)",
        [
            "case",
            "jobs",
            "engine s",
            "bare client s",
            "engine/job",
            "bare/job",
            "ratio",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
