"""Measure standalone mode (2 worker processes) against a bare process pool.

Run from the repository root::

    python benchmarks/bench_standalone.py [--repeats 5] [--max-fan-out 10000]
        [--storage-parent DIR]

Each case times ``scenario.submit(wait=True)`` until every job is COMPLETED, outputs
written to storage included. The workers are started and have run one job before
the clock starts. Every repeat uses a new storage folder and a new orchestrator,
runs of the engine and of the bare pool alternate, and the tables show the median
of the repeats. The storage folders are removed when the script exits, and the
script prints how long creating a file takes there before and after the cases,
because each job creates one.

The baseline, measured in the same run, is ``concurrent.futures.ProcessPoolExecutor(2)``
with the forkserver start method (the one standalone mode uses), also started and
warmed up first, calling the same functions with no storage. For the fan-outs it
submits every call at once. For the chain and the diamond it respects the
dependencies: each call, or each layer of calls, is submitted after the results of
the previous one came back. "Overhead per job" is (wall time - ideal) / jobs, where
the ideal is the sum of the task functions' run times divided by the 2 workers, that
is 2 s for 4 x sleep(1) and close to 0 for tiny tasks.

The script also prints the resident memory (RSS and USS) of the worker processes
and the kernel's RSS while a task returns 200 MiB. That data goes from the worker to
storage, so the kernel should not grow. Last, it times how long ``submit()`` takes
to return for 10,000 jobs. Nothing is asserted, and the last columns compare with
the targets.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import multiprocessing
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import psutil
from _harness import (
    MIB,
    SUBMIT_TIMEOUT,
    add,
    big_bytes,
    chain_config,
    diamond_config,
    fan_out_config,
    file_creation_microseconds,
    fresh_engine,
    machine_description,
    median_of,
    print_table,
    set_storage_parent,
    sleep_one_second,
    start_clock,
    storage_parent,
    storage_root,
    storage_root_spread,
    submit_and_check,
    tiny,
    warm_up_workers,
)

import jupyter_scenarios as tp
from jupyter_scenarios.config.sections import ScenarioConfig

WORKERS = 2
DIAMOND_LAYERS = 10
DIAMOND_WIDTH = 20
# Targets, from the product's performance goals.
TARGET_FAN_OUT_200_SECONDS = 0.3
TARGET_OVERHEAD_RATIO = 5.0
TARGET_SLEEP_TOLERANCE = 0.02
TARGET_WORKER_RSS_MIB = 60.0
# Above this, creating a file costs more than the bare pool's whole time per job.
SLOW_FILE_CREATION_US = 100.0


@dataclasses.dataclass
class Case:
    """One scenario shape, its bare-pool equivalent and how often to run both."""

    name: str
    jobs: int
    build: Callable[[], ScenarioConfig]
    bare: Callable[[], float]
    runs: int
    #: Seconds that the task functions need on 2 workers with no overhead.
    ideal: float = 0.0


# -- engine runs -----------------------------------------------------------------------


def run_standalone(build: Callable[[], ScenarioConfig]) -> float:
    """Return the seconds of one submit(wait=True) on a fresh, warmed-up engine."""
    with fresh_engine("standalone", WORKERS):
        warm_up_workers()
        scenario = tp.create_scenario(build())
        began = start_clock()
        submit_and_check(scenario)
        return time.perf_counter() - began


# -- bare pool runs --------------------------------------------------------------------


def new_bare_pool() -> concurrent.futures.ProcessPoolExecutor:
    pool = concurrent.futures.ProcessPoolExecutor(
        WORKERS, mp_context=multiprocessing.get_context("forkserver")
    )
    list(pool.map(tiny, range(WORKERS * 2)))  # starts and warms both workers
    return pool


def bare_fan_out(function: Callable[[int], Any], count: int) -> float:
    with new_bare_pool() as pool:
        began = start_clock()
        futures = [pool.submit(function, 1) for _ in range(count)]
        for future in concurrent.futures.as_completed(futures, timeout=SUBMIT_TIMEOUT):
            future.result()
        return time.perf_counter() - began


def bare_chain(length: int) -> float:
    with new_bare_pool() as pool:
        began = start_clock()
        value = 0
        for _ in range(length):
            value = pool.submit(tiny, value).result(timeout=SUBMIT_TIMEOUT)
        return time.perf_counter() - began


def bare_diamond(layers: int, width: int) -> float:
    with new_bare_pool() as pool:
        began = start_clock()
        values = list(pool.map(tiny, [1] * width))
        for _ in range(2, layers + 1):
            rotated = values[1:] + values[:1]
            values = list(pool.map(add, values, rotated))
        return time.perf_counter() - began


def median_pair(case: Case, repeats: int) -> tuple[float, float]:
    """Return the median seconds of the engine and of the bare pool for ``case``.

    Engine and bare pool runs alternate, so that a change in the machine's load
    during the case affects both alike.
    """
    ours, theirs = [], []
    for _ in range(repeats):
        ours.append(run_standalone(case.build))
        theirs.append(case.bare())
    return median_of(ours), median_of(theirs)


# -- memory ----------------------------------------------------------------------------


def worker_memory() -> list[tuple[int, float, float]]:
    """Run a fan-out of 200 and return (pid, RSS MiB, USS MiB) of each worker."""
    with fresh_engine("standalone", WORKERS):
        warm_up_workers()
        submission = submit_and_check(tp.create_scenario(fan_out_config(200)))
        rows = []
        for pid in sorted(
            {job.worker_pid for job in submission.jobs if job.worker_pid}
        ):
            try:
                info = psutil.Process(pid).memory_full_info()
            except psutil.NoSuchProcess:
                continue
            rows.append((pid, info.rss / MIB, info.uss / MIB))
        return rows


class RssSampler:
    """Samples this process's RSS every few milliseconds in a daemon thread."""

    def __init__(self, interval: float = 0.005) -> None:
        self._interval = interval
        self._process = psutil.Process()
        self._stop = threading.Event()
        self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def big_output_kernel_rss() -> tuple[float, float, float]:
    """Return the kernel's RSS before, at peak during and after a 200 MiB output."""
    with fresh_engine("standalone", WORKERS):
        warm_up_workers()
        scenario = tp.create_scenario(fan_out_config(1, big_bytes))
        kernel = psutil.Process()
        before = kernel.memory_info().rss
        sampler = RssSampler()
        sampler.start()
        try:
            submit_and_check(scenario)
        finally:
            sampler.stop()
        after = kernel.memory_info().rss
        return before / MIB, sampler.peak / MIB, after / MIB


def submit_return_seconds(count: int) -> tuple[float, float]:
    """Return the seconds until submit() returns and until all jobs completed."""
    with fresh_engine("standalone", WORKERS):
        warm_up_workers()
        scenario = tp.create_scenario(fan_out_config(count))
        began = start_clock()
        submission = scenario.submit()
        returned = time.perf_counter() - began
        if not submission.wait(SUBMIT_TIMEOUT):
            raise TimeoutError(f"{count} jobs did not finish in {SUBMIT_TIMEOUT} s")
        return returned, time.perf_counter() - began


def print_file_creation(when: str) -> None:
    in_root = file_creation_microseconds()
    in_parent = file_creation_microseconds(storage_parent())
    print(
        f"Creating one small file in a new folder, {when}: {in_root:.0f} us in the "
        f"storage root, {in_parent:.0f} us in {storage_parent()}"
    )
    if in_root > SLOW_FILE_CREATION_US:
        print(
            "  This is slow: every job creates one file, so the ratios below include "
            "it. On ext4 without a journal it comes from many files deleted in the "
            'same block group in the last minutes (benchmarks/README.md, "File '
            'creation").'
        )
    elif in_parent > SLOW_FILE_CREATION_US:
        print(
            f"  {storage_parent()} is slow for new files, as after many deletions "
            "there; the storage folders are placed elsewhere on the disk "
            '(benchmarks/README.md, "File creation").'
        )


# -- report ----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per small case")
    parser.add_argument(
        "--max-fan-out",
        type=int,
        default=10_000,
        help="largest fan-out to run (1000 skips the 10,000-job case)",
    )
    parser.add_argument(
        "--storage-parent",
        default=None,
        help="folder for the storage folders (default: the system temp folder)",
    )
    arguments = parser.parse_args(argv)
    set_storage_parent(arguments.storage_parent)
    repeats = arguments.repeats
    big_repeats = max(1, min(repeats, 3))

    print(f"Machine: {machine_description()}")
    print(f"Standalone mode, {WORKERS} workers; baseline ProcessPoolExecutor(2)")
    spread = (
        " (chattr +T: each in a block group of its own)"
        if storage_root_spread()
        else ""
    )
    print(f"Storage folders under {storage_root()}{spread}")
    print_file_creation("before the cases")

    diamond_jobs = DIAMOND_LAYERS * DIAMOND_WIDTH
    cases = [
        Case("fan-out 200", 200, lambda: fan_out_config(200),
             lambda: bare_fan_out(tiny, 200), repeats),
        Case("chain 50", 50, lambda: chain_config(50), lambda: bare_chain(50), repeats),
        Case(f"diamond {DIAMOND_LAYERS}x{DIAMOND_WIDTH}", diamond_jobs,
             lambda: diamond_config(DIAMOND_LAYERS, DIAMOND_WIDTH),
             lambda: bare_diamond(DIAMOND_LAYERS, DIAMOND_WIDTH), repeats),
        Case("4 x sleep(1)", 4, lambda: fan_out_config(4, sleep_one_second),
             lambda: bare_fan_out(sleep_one_second, 4), big_repeats, ideal=2.0),
        Case("fan-out 1000", 1000, lambda: fan_out_config(1000),
             lambda: bare_fan_out(tiny, 1000), big_repeats),
    ]  # fmt: skip
    if arguments.max_fan_out >= 10_000:
        cases.append(
            Case("fan-out 10000", 10_000, lambda: fan_out_config(10_000),
                 lambda: bare_fan_out(tiny, 10_000), 1)
        )  # fmt: skip

    rows = []
    per_job: dict[str, float] = {}
    for case in cases:
        name, jobs, ideal, runs = case.name, case.jobs, case.ideal, case.runs
        ours, theirs = median_pair(case, runs)
        overhead = (ours - ideal) / jobs
        bare_overhead = (theirs - ideal) / jobs
        per_job[name] = overhead
        ratio = overhead / bare_overhead if bare_overhead > 0 else float("inf")
        if name == "fan-out 200":
            target = (
                f"< {TARGET_FAN_OUT_200_SECONDS} s, ratio <= {TARGET_OVERHEAD_RATIO:g}"
            )
            met = ours < TARGET_FAN_OUT_200_SECONDS and ratio <= TARGET_OVERHEAD_RATIO
        elif ideal:
            target = f"within {TARGET_SLEEP_TOLERANCE:.0%} of {ideal:g} s"
            met = abs(ours - ideal) <= TARGET_SLEEP_TOLERANCE * ideal
        else:
            target = f"ratio <= {TARGET_OVERHEAD_RATIO:g}"
            met = ratio <= TARGET_OVERHEAD_RATIO
        rows.append(
            [
                name,
                str(jobs),
                str(runs),
                f"{ours:.3f}",
                f"{theirs:.3f}",
                f"{overhead * 1000:.2f}",
                f"{bare_overhead * 1000:.3f}",
                f"{ratio:.1f}",
                target,
                "yes" if met else "NO",
            ]
        )
    print_table(
        "Makespan, submit(wait=True) to all COMPLETED (seconds, overhead in ms a job)",
        [
            "case",
            "jobs",
            "runs",
            "engine s",
            "bare pool s",
            "overhead/job",
            "bare/job",
            "ratio",
            "target",
            "met",
        ],
        rows,
    )
    print(
        "  ratio = overhead per job / bare pool's time per job, so a case whose "
        "tasks take long (4 x sleep(1)) can show a large ratio for a small gap"
    )
    if arguments.max_fan_out < 10_000:
        print(
            f"  --max-fan-out {arguments.max_fan_out}: the 10,000-job case and the "
            "submit() timing of 10,000 jobs are left out"
        )
    base = per_job["fan-out 200"]
    growth_rows = [
        [name, f"{per_job[name] * 1000:.2f}", f"{per_job[name] / base:.2f}"]
        for name in ("fan-out 200", "fan-out 1000", "fan-out 10000")
        if name in per_job
    ]
    print_table(
        "Cost per job by scenario size (flat = 1.00)",
        ["case", "ms per job", "vs 200"],
        growth_rows,
    )

    memory_rows = [
        [
            str(pid),
            f"{rss:.1f}",
            f"{uss:.1f}",
            f"< {TARGET_WORKER_RSS_MIB:g}",
            "yes" if rss < TARGET_WORKER_RSS_MIB else "NO",
        ]
        for pid, rss, uss in worker_memory()
    ]
    print_table(
        "Worker memory after the fan-out of 200 (MiB)",
        ["worker pid", "RSS", "USS", "target RSS", "met"],
        memory_rows,
    )

    before, peak, after = big_output_kernel_rss()
    print_table(
        "Kernel RSS while one task returns 200 MiB (MiB)",
        ["before", "peak during", "after", "growth at peak"],
        [[f"{before:.1f}", f"{peak:.1f}", f"{after:.1f}", f"{peak - before:.1f}"]],
    )

    if arguments.max_fan_out >= 10_000:
        returned, finished = submit_return_seconds(10_000)
        print_table(
            "submit() of 10,000 jobs (seconds)",
            ["submit() returned", "all COMPLETED"],
            [[f"{returned:.3f}", f"{finished:.3f}"]],
        )
    print_file_creation("after the cases")


if __name__ == "__main__":
    main()
