"""Helpers shared by the benchmark scripts: engines, scenario shapes, timing, tables.

Task functions live here rather than in the scripts, so that worker processes import
them by reference from this module instead of re-running a script's ``__main__``.

Scenario shapes (every task function is cheap unless the name says otherwise):

fan-out N
    One input data node ``x`` and N independent tasks ``t_i(x) -> out_i``.
chain N
    ``d_0 -> t_1 -> d_1 -> ... -> t_N -> d_N``, where each task needs the previous
    output.
diamond L x W
    L layers of W tasks (L * W tasks in all). Every task of layer 1 reads ``x``.
    Task j of layer k > 1 reads the outputs of tasks j and (j + 1) mod W of layer
    k - 1, so each layer waits for the whole previous one.
"""

from __future__ import annotations

import array
import atexit
import contextlib
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    # Run from a checkout without an installed package.
    sys.path.insert(0, str(REPO_ROOT))

import jupyter_scenarios as tp
from jupyter_scenarios import Config
from jupyter_scenarios.config.sections import ScenarioConfig

# Seconds that one submission may take before a benchmark gives up.
SUBMIT_TIMEOUT = 1800.0
MIB = 1024 * 1024


# -- task functions --------------------------------------------------------------------


def tiny(x: int) -> int:
    return x + 1


def add(left: int, right: int) -> int:
    return left + right


def sleep_one_second(x: int) -> int:
    time.sleep(1.0)
    return x


def big_bytes(x: int) -> bytes:
    """Return 200 MiB of zeros: an output that must not travel through the kernel."""
    return bytes(200 * MIB)


# -- scenario shapes -------------------------------------------------------------------


def fan_out_config(count: int, function: Callable[..., Any] = tiny) -> ScenarioConfig:
    source = Config.configure_data_node("x", default_data=1)
    tasks = [
        Config.configure_task(
            f"t_{index}", function, source, Config.configure_data_node(f"out_{index}")
        )
        for index in range(count)
    ]
    return Config.configure_scenario(f"fan_out_{count}", task_configs=tasks)


def chain_config(length: int) -> ScenarioConfig:
    nodes = [Config.configure_data_node("d_0", default_data=0)]
    nodes += [
        Config.configure_data_node(f"d_{index}") for index in range(1, length + 1)
    ]
    tasks = [
        Config.configure_task(f"t_{index}", tiny, nodes[index - 1], nodes[index])
        for index in range(1, length + 1)
    ]
    return Config.configure_scenario(f"chain_{length}", task_configs=tasks)


def diamond_config(layers: int, width: int) -> ScenarioConfig:
    source = Config.configure_data_node("x", default_data=1)
    previous = [Config.configure_data_node(f"l1_{index}") for index in range(width)]
    tasks = [
        Config.configure_task(f"t1_{index}", tiny, source, previous[index])
        for index in range(width)
    ]
    for layer in range(2, layers + 1):
        outputs = [
            Config.configure_data_node(f"l{layer}_{index}") for index in range(width)
        ]
        for index in range(width):
            inputs = [previous[index], previous[(index + 1) % width]]
            tasks.append(
                Config.configure_task(f"t{layer}_{index}", add, inputs, outputs[index])
            )
        previous = outputs
    return Config.configure_scenario(f"diamond_{layers}x{width}", task_configs=tasks)


def diamond_direct(layers: int, width: int) -> list[int]:
    """Compute the diamond's last layer by calling the functions in a loop."""
    values = [tiny(1) for _ in range(width)]
    for _ in range(2, layers + 1):
        values = [add(values[i], values[(i + 1) % width]) for i in range(width)]
    return values


# -- engines ---------------------------------------------------------------------------


# Storage folders are kept until the script exits. On ext4 without a journal, as on
# the benchmark machine, creating a file is slow for a few minutes after many files
# were deleted in the same block group (benchmarks/README.md, "File creation").
# Removing each case's folder at once would slow the cases after it, and the bare
# pool writes no files.
_storage_parent: str | None = None
_storage_root: Path | None = None
_root_spread = False

# Linux's FS_IOC_GETFLAGS and FS_IOC_SETFLAGS requests and FS_TOPDIR_FL, the flag
# that `chattr +T` sets.
_GET_FLAGS = 0x80086601
_SET_FLAGS = 0x40086602
_TOP_FOLDER_FLAG = 0x00020000


def set_storage_parent(folder: str | None) -> None:
    """Create the storage folders under ``folder`` (None: the system temp folder)."""
    global _storage_parent
    _storage_parent = folder


def storage_parent() -> Path:
    """Return the parent folder of this run's storage root."""
    return Path(_storage_parent or tempfile.gettempdir())


def storage_root() -> Path:
    """Return this run's folder for storage folders, removed when the script exits.

    Its subfolders are spread over the disk where the file system allows it (see
    ``spread_subfolders``).
    """
    global _storage_root, _root_spread
    if _storage_root is None:
        _storage_root = Path(
            tempfile.mkdtemp(prefix="jupyter-scenarios-bench-", dir=storage_parent())
        )
        atexit.register(shutil.rmtree, _storage_root, True)
        _root_spread = spread_subfolders(_storage_root)
    return _storage_root


def storage_root_spread() -> bool:
    """Return whether ``storage_root()`` spreads its subfolders over the disk."""
    storage_root()
    return _root_spread


def spread_subfolders(folder: Path) -> bool:
    """Mark ``folder`` so that ext4 places each new subfolder in a block group of its own.

    ext4 puts a new file in the block group of its folder, and a new folder near its
    parent's. Without a journal it skips, one by one, each inode of the group freed
    in the last minutes (see benchmarks/README.md, "File creation"). After a test suite removed thousands of files under
    ``/tmp``, creating a file in a folder there took 0.75 to 0.93 ms, against 23 to
    28 us in a folder placed elsewhere. With the flag (``chattr +T``), the
    allocator treats ``folder`` like the top of a tree and chooses a group for each
    subfolder among those with many free inodes. Returns whether the flag is set;
    other file systems and systems refuse it, which leaves the folder as it was.
    """
    if sys.platform != "linux":
        return False
    import fcntl

    try:
        descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        flags = array.array("i", [0])
        fcntl.ioctl(descriptor, _GET_FLAGS, flags, True)
        flags[0] |= _TOP_FOLDER_FLAG
        fcntl.ioctl(descriptor, _SET_FLAGS, flags, True)
    except OSError:
        return False
    finally:
        os.close(descriptor)
    return True


def file_creation_microseconds(parent: Path | None = None, count: int = 500) -> float:
    """Return the microseconds that creating and writing one small file takes.

    The files go to a new folder under ``parent`` (default: ``storage_root()``),
    as each job of a benchmark creates one such file (its output). They stay until
    the script exits, like the storage folders.
    """
    folder = Path(tempfile.mkdtemp(prefix="probe-", dir=parent or storage_root()))
    if parent is not None:
        atexit.register(shutil.rmtree, folder, True)
    began = time.perf_counter()
    for index in range(count):
        with open(folder / f"f{index}", "wb") as file:
            file.write(b"x" * 20)
    return (time.perf_counter() - began) / count * 1e6


@contextlib.contextmanager
def fresh_engine(mode: str, workers: int = 2) -> Iterator[Path]:
    """Configure ``mode`` on a new storage folder under ``storage_root()``."""
    tp.Orchestrator().stop(wait=False)
    Config.unblock_update()
    Config._reset()
    folder = Path(tempfile.mkdtemp(prefix="engine-", dir=storage_root()))
    Config.configure_core(storage_folder=str(folder))
    Config.configure_job_executions(mode=mode, max_nb_of_workers=workers)
    try:
        yield folder
    finally:
        tp.Orchestrator().stop(wait=False)
        Config._reset()


def warm_up_workers() -> None:
    """Start the orchestrator and run one tiny job, so timings exclude start-up."""
    scenario = tp.create_scenario(fan_out_config(1))
    submit_and_check(scenario)


def submit_and_check(scenario: tp.Scenario) -> tp.Submission:
    """Submit ``scenario``, wait, and raise unless every job completed."""
    submission = scenario.submit(wait=True, timeout=SUBMIT_TIMEOUT)
    if submission.submission_status is not tp.SubmissionStatus.COMPLETED:
        failed = [job for job in submission.jobs if not job.is_completed()]
        first = failed[0] if failed else None
        detail = "".join(first.stacktrace)[-2000:] if first is not None else ""
        raise RuntimeError(
            f"submission ended {submission.submission_status.name}; "
            f"{len(failed)} jobs did not complete. First:\n{detail}"
        )
    return submission


# -- timing and output -----------------------------------------------------------------


def median_of(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def start_clock() -> float:
    """Collect garbage, then return ``time.perf_counter()``.

    A full collection visits every object of the process and took 40 to 70 ms in
    these scripts. Started only by allocations, it would land in one timed run out
    of a few, and more often in the engine's runs, which allocate more. Each timed
    run starts after a collection, so the runs compare alike; a collection during a
    run still counts.
    """
    gc.collect()
    return time.perf_counter()


def time_call(function: Callable[[], object]) -> float:
    began = start_clock()
    function()
    return time.perf_counter() - began


def print_table(
    title: str, header: Sequence[str], rows: Sequence[Sequence[str]]
) -> None:
    """Print ``rows`` as an aligned text table under ``title``."""
    widths = [
        max(len(str(row[column])) for row in [header, *rows])
        for column in range(len(header))
    ]
    print()
    print(title)
    print("  " + "  ".join(f"{name:>{widths[i]}}" for i, name in enumerate(header)))
    for row in rows:
        print("  " + "  ".join(f"{cell:>{widths[i]}}" for i, cell in enumerate(row)))


def machine_description() -> str:
    """Return the CPU count, CPU model and Python version, for the output header."""
    import os
    import platform

    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )
