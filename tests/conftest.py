"""Shared fixtures: real kernels, a JupyterLab server, Chromium, and a leak check.

Screenshots and server logs go to ``$SCENARIOS_ARTIFACTS`` or ``test-artifacts/``
under the repository, one folder per test.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import psutil
import pytest
from helpers.kernel import JupyterDirs, KernelSession, kernel_session
from helpers.lab import (
    CHROMIUM_PATH,
    LabNotebookPage,
    LabServer,
    launch_chromium,
    open_notebook,
)
from helpers.processes import (
    SESSION_PROCESS_PIDS,
    descendants,
    describe,
    is_multiprocessing_helper,
    new_non_daemon_threads,
    process_tree,
    session_owned_pids,
    terminate,
    wait_for_exit,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser

# Seconds a test's threads and child processes get to finish after the test body.
LEAK_GRACE_SECONDS = 10.0

_CALL_FAILED = pytest.StashKey[bool]()
_ARTIFACTS_ROOT = pytest.StashKey[Path]()


def running_in_ci() -> bool:
    """Tell whether the CI environment variable is set to a true value."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def pytest_configure(config: pytest.Config) -> None:
    configured = os.environ.get("SCENARIOS_ARTIFACTS")
    root = Path(configured) if configured else config.rootpath / "test-artifacts"
    config.stash[_ARTIFACTS_ROOT] = root.resolve()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[_CALL_FAILED] = True
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    root = terminalreporter.config.stash[_ARTIFACTS_ROOT]
    if root.is_dir() and any(path.is_file() for path in root.rglob("*")):
        terminalreporter.write_line(f"Test artifacts (screenshots, logs): {root}")


# ---------------------------------------------------------------------------------
# Leak check
# ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_leaked_processes_or_threads() -> Iterator[None]:
    """Fail a test that leaves child processes or non-daemon threads running.

    Processes and threads started during the test get ``LEAK_GRACE_SECONDS`` to end.
    Leftover processes are then terminated by PID, so one leaky test does not
    affect the next. The session's Playwright driver and browser are exempt, and so
    are multiprocessing's forkserver and resource tracker, which live once per process
    (their worker children are still checked).
    """
    me = os.getpid()
    pids_before = {process.pid for process in descendants(me)}
    threads_before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + LEAK_GRACE_SECONDS
    for thread in new_non_daemon_threads(threads_before):
        thread.join(max(0.0, deadline - time.monotonic()))
    leaked_threads = new_non_daemon_threads(threads_before)

    exempt = pids_before | session_owned_pids()
    started = [
        process
        for process in descendants(me)
        if process.pid not in exempt and not is_multiprocessing_helper(process)
    ]
    leaked = wait_for_exit(started, max(1.0, deadline - time.monotonic()))
    problems = []
    if leaked:
        names = ", ".join(describe(process) for process in leaked)
        terminate(leaked)
        problems.append(f"Test left child processes running (now terminated): {names}")
    if leaked_threads:
        names = ", ".join(thread.name for thread in leaked_threads)
        problems.append(f"Test left non-daemon threads running: {names}")
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


# ---------------------------------------------------------------------------------
# Artifacts and kernels
# ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def artifacts_root(pytestconfig: pytest.Config) -> Path:
    """Folder that contains one artifacts folder per test. It may not exist yet."""
    return pytestconfig.stash[_ARTIFACTS_ROOT]


@pytest.fixture
def artifacts_dir(request: pytest.FixtureRequest, artifacts_root: Path) -> Path:
    """This test's artifacts folder, emptied now and created on first write."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid).strip("_")
    path = artifacts_root / name
    shutil.rmtree(path, ignore_errors=True)
    return path


@pytest.fixture(scope="session")
def jupyter_dirs(tmp_path_factory: pytest.TempPathFactory) -> JupyterDirs:
    """Temporary Jupyter and IPython folders with a kernelspec for this interpreter."""
    return JupyterDirs.create(tmp_path_factory.mktemp("jupyter"))


@pytest.fixture
def kernel(tmp_path: Path, jupyter_dirs: JupyterDirs) -> Iterator[KernelSession]:
    """A started IPython kernel whose working directory is ``tmp_path``."""
    with kernel_session(tmp_path, dirs=jupyter_dirs) as session:
        yield session


# ---------------------------------------------------------------------------------
# Browser and JupyterLab
# ---------------------------------------------------------------------------------


def _skip_or_fail(reason: str) -> NoReturn:
    if running_in_ci():
        pytest.fail(f"{reason} (browser tests must run when CI is set)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium_browser() -> Iterator[Browser]:
    """Headless Debian Chromium shared by the whole session.

    Skips when ``/usr/bin/chromium`` or Playwright is missing, but fails under CI.
    """
    if not CHROMIUM_PATH.exists():
        _skip_or_fail(
            f"{CHROMIUM_PATH} is missing; install it with `apt-get install chromium`"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as error:
        _skip_or_fail(f"Playwright is not installed: {error}")

    me = psutil.Process()
    children_before = {child.pid for child in me.children()}
    playwright = sync_playwright().start()
    driver_pids = {child.pid for child in me.children()} - children_before
    SESSION_PROCESS_PIDS.update(driver_pids)
    try:
        browser = launch_chromium(playwright)
        try:
            yield browser
        finally:
            browser.close()
    finally:
        processes = [process for pid in driver_pids for process in process_tree(pid)]
        playwright.stop()
        terminate(wait_for_exit(processes, timeout=5.0))
        SESSION_PROCESS_PIDS.difference_update(driver_pids)


@pytest.fixture(scope="module")
def jupyter_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    """A JupyterLab server on 127.0.0.1, shared by the tests of one module.

    Add notebooks with ``jupyter_lab.add_notebook(name, notebook_or_path)``.
    """
    server = LabServer.start(tmp_path_factory.mktemp("lab"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def lab_page(
    request: pytest.FixtureRequest,
    chromium_browser: Browser,
    jupyter_lab: LabServer,
    artifacts_dir: Path,
) -> Iterator[Callable[..., LabNotebookPage]]:
    """Open notebooks from the server root in Chromium: ``page = lab_page(path)``.

    Pages are closed and their kernels stopped after the test. When the test fails,
    each page gets a ``failure.png`` screenshot and the server log is saved beside it.
    """
    pages: list[LabNotebookPage] = []
    with ExitStack() as stack:

        def open_page(path: str, *, ready_timeout: float = 90.0) -> LabNotebookPage:
            page = stack.enter_context(
                open_notebook(
                    chromium_browser,
                    jupyter_lab,
                    path,
                    artifacts_dir=artifacts_dir,
                    ready_timeout=ready_timeout,
                )
            )
            pages.append(page)
            return page

        yield open_page
        if request.node.stash.get(_CALL_FAILED, False):
            _save_failure_artifacts(pages, jupyter_lab, artifacts_dir)


def _save_failure_artifacts(
    pages: list[LabNotebookPage], server: LabServer, artifacts_dir: Path
) -> None:
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(server.log_path, artifacts_dir / "jupyterlab.log")
    for index, page in enumerate(pages):
        try:
            page.screenshot(f"failure-{index}")
        except Exception as error:  # noqa: BLE001 - a dead page must not hide the failure
            print(f"Could not take a failure screenshot of {page.path}: {error}")
