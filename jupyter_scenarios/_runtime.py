"""The process-wide runtime: one store and one scheduler, started on first use.

``Orchestrator().run()`` starts them explicitly, as in Taipy; any API call that needs
them starts them too, so a notebook can skip that line. When the job execution settings
or the storage folder change after the start (a notebook cell switching from
development to standalone mode), the next call restarts the scheduler with the new
settings, provided no job is unfinished. Otherwise the running scheduler is kept and a
warning gives the reason.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .config import Config
from .entities import register_factories
from .entities._base import checked_timeout
from .scheduler import Scheduler
from .store import Store

if TYPE_CHECKING:
    from .entities import Submission

logger = logging.getLogger(__name__)

# Guards _state; taken by any thread that starts, stops or reads the runtime.
_lock = threading.RLock()


class _State:
    store: Store | None = None
    scheduler: Scheduler | None = None
    settings: tuple[str, int, str, str] | None = None
    #: New settings already warned about while jobs were unfinished.
    deferred_settings: tuple[str, int, str, str] | None = None
    #: The scheduler that stop() is stopping. It stays the runtime's until it has
    #: stopped, so that a job callback run meanwhile reaches it (and its stop
    #: rules) rather than starting a second runtime on the same folder.
    stopping: Scheduler | None = None
    atexit_registered = False


_state = _State()

#: Hooks given to every scheduler this process starts (see Scheduler.submit_hooks
#: and Scheduler.wait_hooks).
submit_hooks: list[Callable[[Submission], None]] = []
wait_hooks: list[Callable[[Submission], None]] = []


# (configured folder, root folder, working directory) -> their resolved folder. Most
# API calls check the configuration (see orchestrator), and resolving a path reads
# every folder on it: 30 us a call.
_resolved_folder: tuple[tuple[str, str, str], Path] | None = None


def storage_folder() -> Path:
    """Return the storage folder the configuration names, as an absolute path."""
    global _resolved_folder
    core = Config.core
    key = (str(core.storage_folder), str(core.root_folder), os.getcwd())
    cached = _resolved_folder
    if cached is not None and cached[0] == key:
        return cached[1]
    folder = Path(core.storage_folder).expanduser()
    if not folder.is_absolute():
        folder = Path(core.root_folder).expanduser() / folder
    resolved = folder.resolve()
    _resolved_folder = (key, resolved)
    return resolved


def _settings() -> tuple[str, int, str, str]:
    job = Config.job_config
    return (job.mode, job.max_nb_of_workers, str(job.properties), str(storage_folder()))


def start(force_restart: bool = False) -> Scheduler:
    """Start the store and scheduler (again, if ``force_restart``)."""
    if os.environ.get("JUPYTER_SCENARIOS_IN_WORKER"):
        raise RuntimeError(
            "A task running in a worker process called the jupyter_scenarios API, "
            "which works on the kernel's store only. Return values from the task "
            "and submit or read entities in the notebook instead."
        )
    with _lock:
        if _state.scheduler is not None and not force_restart:
            return _state.scheduler
        stop(wait=False)
        folder = storage_folder()
        store = Store(folder)
        register_factories(store)
        scheduler = Scheduler(store, Config.job_config)
        _state.store = store
        _state.scheduler = scheduler
        _state.settings = _settings()
        scheduler.submit_hooks.extend(submit_hooks)
        scheduler.wait_hooks.extend(wait_hooks)
        try:
            scheduler.start()
        except BaseException:
            _state.scheduler = None
            _state.store = None
            store.close()
            raise
        _remove_leftover_files(store)
        _install_widgets_in_kernel()
        if not _state.atexit_registered:
            atexit.register(_stop_at_exit)
            _state.atexit_registered = True
        return scheduler


def _remove_leftover_files(store: Store) -> None:
    # Files that an interrupted deletion or a killed write left in the data folder.
    from .deletion import remove_leftover_files

    try:
        removed = remove_leftover_files(store)
    except OSError:
        logger.exception("Could not look for leftover files in %s", store.data_folder)
        return
    if removed:
        logger.info("Removed %d leftover files from %s", removed, store.data_folder)


def _install_widgets_in_kernel() -> None:
    # In a Jupyter kernel, submissions show progress widgets even without
    # %load_ext; plain scripts never import ipywidgets.
    if "ipykernel" not in sys.modules:
        return
    from .widgets import install_auto_display, is_kernel

    if is_kernel():
        install_auto_display()
        _hook_kernel_shutdown()


def _hook_kernel_shutdown() -> None:
    """Stop the runtime when the kernel receives a shutdown or restart request.

    On that request ipykernel signals every child process in its process group and
    waits for them. multiprocessing's resource tracker ignores SIGTERM, so the wait
    lasts until the front end kills the kernel, and the kernel then dies without
    running ``atexit``. Stopping here first cancels the running jobs with a reason and
    ends the workers. The forkserver and the resource tracker are ended too, because
    they serve no purpose once the kernel exits and the shutdown would wait for them.
    """
    from IPython import get_ipython

    shell = get_ipython()
    kernel = getattr(shell, "kernel", None)
    if kernel is None or getattr(kernel, "_jupyter_scenarios_hooked", False):
        return
    original = kernel.do_shutdown

    def do_shutdown(restart: bool) -> object:
        try:
            stop(wait=False)
            _end_multiprocessing_helpers()
        except Exception:
            logger.exception("Stopping jupyter_scenarios at kernel shutdown failed")
        return original(restart)

    kernel.do_shutdown = do_shutdown
    kernel._jupyter_scenarios_hooked = True


def _end_multiprocessing_helpers() -> None:
    # NOTE: reads private attributes of multiprocessing (checked on CPython 3.11 and
    # 3.12); if they move, the helpers simply end when the kernel process exits.
    import signal
    from multiprocessing import forkserver, resource_tracker

    for pid in (
        getattr(getattr(forkserver, "_forkserver", None), "_forkserver_pid", None),
        getattr(getattr(resource_tracker, "_resource_tracker", None), "_pid", None),
    ):
        if isinstance(pid, int) and pid > 0:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                continue
            _reap(pid)


def _reap(pid: int) -> None:
    # A killed child stays a zombie, which ipykernel still counts and waits for,
    # until its parent collects it.
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        time.sleep(0.01)


def stop(wait: bool = True, timeout: float | None = None) -> None:
    """Stop the scheduler and close the store; running jobs are cancelled.

    Until the scheduler has stopped, ``orchestrator()`` returns it: a job callback
    that submits during ``stop(wait=True)`` gets its jobs run and waited for, and
    one that submits while jobs are cancelled gets its jobs cancelled too.
    """
    timeout = checked_timeout(timeout)
    with _lock:
        scheduler, store = _state.scheduler, _state.store
        if scheduler is not None and _state.stopping is scheduler:
            return  # another call is stopping it
        _state.stopping = scheduler
    try:
        if scheduler is not None:
            scheduler.stop(wait=wait, timeout=timeout)
    finally:
        with _lock:
            if _state.scheduler is scheduler:
                _state.scheduler = None
                _state.store = None
                _state.settings = None
            _state.stopping = None
        if store is not None:
            store.close()


def _stop_at_exit() -> None:
    scheduler = _state.scheduler
    if scheduler is not None:
        unfinished = sorted(
            [*scheduler._running, *(job.id for job in scheduler._ready)]
            + list(scheduler._blocked)
        )
        if unfinished:
            _say_cancelled_at_exit(unfinished)
    stop(wait=False)


def _say_cancelled_at_exit(job_ids: list[str]) -> None:
    count = len(job_ids)
    message = (
        f"jupyter_scenarios: the process is exiting with {count} unfinished "
        f"{'job' if count == 1 else 'jobs'} ({', '.join(job_ids[:3])}"
        f"{', ...' if count > 3 else ''}); {'it is' if count == 1 else 'they are'} "
        "cancelled. To let jobs finish, wait for them before the end of the "
        "script: submission.wait() or tp.wait_all()."
    )
    if _logging_shows(logger, logging.WARNING):
        logger.warning("%s", message)
        return
    # Logging shows nothing unless the application configures it, and this is
    # the last chance to say why the jobs ended CANCELED.
    stream = sys.stderr  # None when the script runs with stderr closed
    if stream is not None:
        with contextlib.suppress(Exception):
            print(message, file=stream, flush=True)


def _logging_shows(log: logging.Logger, level: int) -> bool:
    """Return whether a record of ``level`` from ``log`` reaches a real handler."""
    if not log.isEnabledFor(level):
        return False
    current: logging.Logger | None = log
    while current is not None:
        if any(
            not isinstance(handler, logging.NullHandler) and handler.level <= level
            for handler in current.handlers
        ):
            return True
        if not current.propagate:
            return False
        current = current.parent
    return False


def orchestrator() -> Scheduler:
    """Return the running scheduler, starting or restarting it if needed."""
    with _lock:
        scheduler = _state.scheduler
        if scheduler is None:
            return start()
        if scheduler is _state.stopping:
            return scheduler
        requested = _settings()
        if requested != _state.settings:
            unfinished = scheduler._running or scheduler._ready or scheduler._blocked
            if unfinished:
                if _state.deferred_settings != requested:
                    logger.warning(
                        "The job execution or storage settings changed, but jobs are "
                        "still unfinished; the scheduler keeps its settings (%s) "
                        "until they finish.",
                        scheduler.executor.describe(),
                    )
                    _state.deferred_settings = requested
                return scheduler
            logger.info("Settings changed; restarting the scheduler with %s", requested)
            return start(force_restart=True)
        return scheduler


def deferred_switch() -> tuple[int, int, Path] | None:
    """Describe the scheduler that keeps its settings although they changed.

    The scheduler takes new job execution or storage settings only once its jobs
    are finished (see ``orchestrator``). Returns its unfinished jobs, how many of
    them are BLOCKED, and the storage folder that it still uses; None when the
    settings did not change or no unfinished job keeps them.
    """
    with _lock:
        scheduler, store = _state.scheduler, _state.store
        if scheduler is None or store is None or scheduler is _state.stopping:
            return None
        if _settings() == _state.settings:
            return None
        blocked = len(scheduler._blocked)
        unfinished = len(scheduler._running) + len(scheduler._ready) + blocked
        return (unfinished, blocked, store.folder) if unfinished else None


def store() -> Store:
    """Return the store, starting the runtime if needed."""
    orchestrator()
    assert _state.store is not None
    return _state.store


def is_running() -> bool:
    return _state.scheduler is not None
