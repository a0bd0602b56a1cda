"""Find and stop the child processes that tests start (kernels, servers, browsers)."""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterable

import psutil

# PIDs of processes that live for the whole test session (the Playwright driver and
# the Chromium it starts). The per-test leak check ignores them and their descendants.
SESSION_PROCESS_PIDS: set[int] = set()


def descendants(pid: int) -> list[psutil.Process]:
    """Return the live descendants of ``pid``, or an empty list if it has exited."""
    try:
        children: list[psutil.Process] = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return children


def process_tree(pid: int) -> list[psutil.Process]:
    """Return ``pid`` followed by its live descendants."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def is_running(process: psutil.Process) -> bool:
    """Tell whether ``process`` still runs. A zombie counts as exited."""
    try:
        status: str = process.status()
    except psutil.NoSuchProcess:
        return False
    return bool(process.is_running()) and status != psutil.STATUS_ZOMBIE


def pid_running(pid: int) -> bool:
    """Tell whether a process with this PID runs and is not a zombie."""
    try:
        return is_running(psutil.Process(pid))
    except psutil.NoSuchProcess:
        return False


def describe(process: psutil.Process) -> str:
    """Format a process as ``pid (command line)`` for error messages."""
    try:
        command = " ".join(process.cmdline())[:160]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        command = "<exited>"
    return f"{process.pid} ({command})"


def wait_for_exit(
    processes: Iterable[psutil.Process], timeout: float
) -> list[psutil.Process]:
    """Wait up to ``timeout`` seconds and return the processes still running then."""
    remaining = [p for p in processes if is_running(p)]
    deadline = time.monotonic() + timeout
    while remaining and time.monotonic() < deadline:
        time.sleep(0.1)
        remaining = [p for p in remaining if is_running(p)]
    return remaining


def terminate(
    processes: Iterable[psutil.Process], timeout: float = 5.0
) -> list[psutil.Process]:
    """Send SIGTERM, then SIGKILL after ``timeout`` seconds, to each live process.

    Returns the processes that were still running when this was called.
    """
    alive = [p for p in processes if is_running(p) and p.pid != os.getpid()]
    for process in alive:
        try:
            process.terminate()
        except psutil.NoSuchProcess:
            pass
    for process in wait_for_exit(alive, timeout):
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    wait_for_exit(alive, timeout)
    return alive


def is_multiprocessing_helper(process: psutil.Process) -> bool:
    """Return whether ``process`` is multiprocessing's forkserver or resource tracker.

    Both are started once per Python process and stay until it exits.
    """
    try:
        command = " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return (
        "multiprocessing.forkserver import main" in command
        or "multiprocessing.resource_tracker import main" in command
    )


def session_owned_pids() -> set[int]:
    """Return the registered session-long PIDs together with all their descendants."""
    owned = set(SESSION_PROCESS_PIDS)
    for pid in SESSION_PROCESS_PIDS:
        owned.update(p.pid for p in descendants(pid))
    return owned


def new_non_daemon_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    """Return the live non-daemon threads that are not in ``before``.

    Workers of an asyncio loop's default executor (named ``asyncio_N``) are left out:
    they live as long as their loop, and the Playwright loop lives for the session.
    Playwright starts one when it saves a screenshot file.
    """
    return [
        thread
        for thread in threading.enumerate()
        if thread not in before
        and not thread.daemon
        and thread.is_alive()
        and not re.fullmatch(r"asyncio_\d+", thread.name)
    ]
