"""Compare WorkerPool with a bare ProcessPoolExecutor, and forkserver with spawn.

Run from the repository root::

    python benchmarks/bench_pool.py

Part 1 times WorkerPool(2) with each start method: start() with the forkserver not
yet running (cold) and running (warm), and the median round trip of one tiny call
submitted alone. It also times a replacement in WorkerPool(1), from cancel() of a
running job to the outcome of the next tiny call.

Part 2 runs the same functions through WorkerPool(2) (forkserver) and
concurrent.futures.ProcessPoolExecutor(2) with its default start method (fork on
Linux with Python 3.11): 200 tiny calls submitted at once, 4 calls of sleep(1), and
1000 tiny calls. Each pool first runs one call, so that worker start-up is excluded.
A ratio above 1 means WorkerPool took longer.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

try:
    from jupyter_scenarios.executors.pool import WorkerPool, WorkOutcome
except ImportError:  # run from a checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from jupyter_scenarios.executors.pool import WorkerPool, WorkOutcome

# Seconds to wait for one batch before the benchmark gives up.
BATCH_TIMEOUT = 300.0


def tiny(x: int) -> int:
    return x + 1


def sleep_one_second(x: int) -> int:
    time.sleep(1.0)
    return x


class OutcomeCounter:
    """Counts on_finished calls so that the benchmark can wait for a batch."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self.outcomes: dict[str, WorkOutcome] = {}

    def on_started(self, key: str, pid: int) -> None:
        pass

    def on_finished(self, key: str, outcome: WorkOutcome) -> None:
        with self._condition:
            self.outcomes[key] = outcome
            self._condition.notify_all()

    def wait_for(self, keys: Sequence[str]) -> None:
        with self._condition:
            done = self._condition.wait_for(
                lambda: all(key in self.outcomes for key in keys), BATCH_TIMEOUT
            )
        if not done:
            raise TimeoutError(f"the batch did not finish within {BATCH_TIMEOUT} s")
        failed = [self.outcomes[key] for key in keys if not self.outcomes[key].ok]
        if failed:
            raise RuntimeError(f"{len(failed)} calls failed, first: {failed[0].error}")


def new_pool(start_method: str) -> tuple[WorkerPool, OutcomeCounter]:
    counter = OutcomeCounter()
    pool = WorkerPool(
        2,
        on_started=counter.on_started,
        on_finished=counter.on_finished,
        start_method=start_method,
    )
    return pool, counter


def run_batch(
    pool: WorkerPool,
    counter: OutcomeCounter,
    fn: Callable[[int], Any],
    count: int,
    prefix: str,
) -> float:
    """Submit ``count`` calls at once and return the seconds until the last outcome."""
    keys = [f"{prefix}-{index}" for index in range(count)]
    began = time.perf_counter()
    for index, key in enumerate(keys):
        pool.submit(key, fn, (index,), None)
    counter.wait_for(keys)
    return time.perf_counter() - began


def round_trip(pool: WorkerPool, counter: OutcomeCounter, key: str) -> float:
    began = time.perf_counter()
    pool.submit(key, tiny, (1,), None)
    counter.wait_for([key])
    return time.perf_counter() - began


def measure_start_method(start_method: str, label: str) -> dict[str, float]:
    pool, counter = new_pool(start_method)
    began = time.perf_counter()
    pool.start()
    start_seconds = time.perf_counter() - began
    try:
        round_trip(pool, counter, "warm-up")
        trips = [round_trip(pool, counter, f"trip-{index}") for index in range(200)]
    finally:
        pool.shutdown()
    return {
        f"start() {label}".strip(): start_seconds,
        "round trip of one tiny call, median": statistics.median(trips),
        "replacement after cancel, median": measure_replacement(start_method),
    }


def measure_replacement(start_method: str) -> float:
    """Return the median seconds from cancel() to the next call's outcome."""
    counter = OutcomeCounter()
    pool = WorkerPool(
        1,
        on_started=counter.on_started,
        on_finished=counter.on_finished,
        start_method=start_method,
    )
    pool.start()
    samples = []
    try:
        for index in range(5):
            victim = f"victim-{index}"
            pool.submit(victim, time.sleep, (60,), None)
            deadline = time.monotonic() + BATCH_TIMEOUT
            while victim not in pool.running():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"job {victim} did not start")
                time.sleep(0.001)
            began = time.perf_counter()
            pool.cancel(victim)
            round_trip(pool, counter, f"after-cancel-{index}")
            samples.append(time.perf_counter() - began)
    finally:
        pool.shutdown()
    return statistics.median(samples)


def bench_worker_pool() -> dict[str, float]:
    pool, counter = new_pool("forkserver")
    pool.start()
    try:
        round_trip(pool, counter, "warm-up")
        return {
            "fan-out 200 tiny": run_batch(pool, counter, tiny, 200, "a"),
            "4 x sleep(1)": run_batch(pool, counter, sleep_one_second, 4, "b"),
            "fan-out 1000 tiny": run_batch(pool, counter, tiny, 1000, "c"),
        }
    finally:
        pool.shutdown()


def executor_batch(
    executor: concurrent.futures.ProcessPoolExecutor,
    fn: Callable[[int], Any],
    count: int,
) -> float:
    began = time.perf_counter()
    futures = [executor.submit(fn, index) for index in range(count)]
    for future in concurrent.futures.as_completed(futures, timeout=BATCH_TIMEOUT):
        future.result()
    return time.perf_counter() - began


def bench_process_pool_executor() -> dict[str, float]:
    with concurrent.futures.ProcessPoolExecutor(2) as executor:
        executor_batch(executor, tiny, 2)  # starts both workers
        return {
            "fan-out 200 tiny": executor_batch(executor, tiny, 200),
            "4 x sleep(1)": executor_batch(executor, sleep_one_second, 4),
            "fan-out 1000 tiny": executor_batch(executor, tiny, 1000),
        }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)

    print("Part 1: WorkerPool(2) start methods")
    for start_method in ("forkserver", "spawn"):
        label = "cold" if start_method == "forkserver" else ""
        results = measure_start_method(start_method, label)
        if start_method == "forkserver":
            warm, _ = new_pool("forkserver")
            began = time.perf_counter()
            warm.start()
            results["start() warm"] = time.perf_counter() - began
            warm.shutdown()
        print(f"  {start_method}")
        for name, seconds in results.items():
            print(f"    {name:<40} {seconds * 1000:9.2f} ms")

    print()
    print("Part 2: WorkerPool(2) vs ProcessPoolExecutor(2) (seconds)")
    ours = bench_worker_pool()
    theirs = bench_process_pool_executor()
    print(f"  {'case':<20} {'WorkerPool':>12} {'PPE':>12} {'ratio':>8}")
    for name, seconds in ours.items():
        ratio = seconds / theirs[name]
        print(f"  {name:<20} {seconds:12.3f} {theirs[name]:12.3f} {ratio:8.2f}")


if __name__ == "__main__":
    main()
