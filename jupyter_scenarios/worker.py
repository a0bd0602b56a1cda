"""Run one task: read its inputs, call its function, write its outputs.

This code runs inside a worker process in standalone and dask modes, and in the
kernel's submitting thread in development mode. It imports neither IPython, ipywidgets
nor the scheduler, and it touches no entity metadata: it receives plain descriptions of
the data nodes (``NodeSpec``) and returns a ``TaskResult`` that the scheduler applies to
the store.

Outputs stored in files are written to a staging file beside the target
(``.<name>.<job id>.staging<suffixes>``, see ``staging_path``). The scheduler moves each staging file onto its target
only when the whole job succeeded, so a job that fails, is cancelled or whose worker
dies leaves its outputs unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import json
import linecache
import logging
import os
import traceback
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle

from .exceptions import DataNodeWritingError, NoData, clause
from .storage import make_backend
from .storage.atomic import writing_unpublished_files

logger = logging.getLogger(__name__)

# Storage types whose outputs are written where they are read, without a staging
# file (see _write_output).
_WRITTEN_IN_PLACE = frozenset({"generic", "in_memory"})


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    """Description of one data node, enough for a worker to read or write it."""

    id: str
    config_id: str
    storage_type: str
    properties: dict[str, Any]
    folder: str

    def backend(self, path: str | Path | None = None) -> Any:
        properties = dict(self.properties)
        if path is not None:
            properties["path"] = os.fspath(path)
        return make_backend(
            self.storage_type, self.id, properties, _folder_path(self.folder)
        )


@functools.lru_cache(maxsize=64)
def _folder_path(folder: str) -> Path:
    # Each job builds its backends from NodeSpec strings. The folder's Path is built
    # once per worker here, where it used to be built three times per backend.
    return Path(folder)


@dataclasses.dataclass(frozen=True)
class TaskRun:
    """One job's work: the function and the data nodes around it."""

    job_id: str
    task_config_id: str
    function: Callable[..., Any]
    inputs: tuple[NodeSpec, ...]
    outputs: tuple[NodeSpec, ...]
    #: Write file outputs to staging files, committed by the scheduler on success.
    stage_outputs: bool = True
    #: Source lines of notebook cells the function was defined in, by file name, so
    #: that tracebacks formatted in a worker show the cell's lines.
    sources: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    #: Original file name of each notebook function by qualified name.
    code_files: dict[str, str] = dataclasses.field(default_factory=dict)
    #: The submission the job belongs to.
    submit_id: str = ""
    #: The kernel's working directory and import path when the job was submitted;
    #: worker processes run the job with them. None in development mode.
    cwd: str | None = None
    sys_path: tuple[str, ...] | None = None

    def with_function(self, function: Callable[..., Any] | None) -> TaskRun:
        """Return a copy with ``function``, or with None when it is sent separately.

        Copies the fields directly: ``dataclasses.replace`` runs ``__init__`` and
        cost a few microseconds per job, on both sides.
        """
        copy = object.__new__(TaskRun)
        copy.__dict__.update(self.__dict__, function=function)
        return copy


@dataclasses.dataclass
class StagedOutput:
    """An output written by the job: the staging file, or None if written in place."""

    node_id: str
    staged_path: str | None
    final_path: str | None


@dataclasses.dataclass
class TaskResult:
    """The outcome of ``run_task``."""

    job_id: str
    ok: bool
    outputs: list[StagedOutput] = dataclasses.field(default_factory=list)
    #: Formatted tracebacks, one per error, when ``ok`` is False.
    errors: list[str] = dataclasses.field(default_factory=list)
    #: One line naming the error, for tables and logs.
    summary: str = ""


def notebook_sources(function: Callable[..., Any]) -> dict[str, list[str]]:
    """Return the cached source lines of the cells ``function`` was defined in.

    Covers the function and the notebook functions it calls by name, directly or
    through each other; files that exist on disk are left out.
    """
    sources: dict[str, list[str]] = {}
    for item in _notebook_functions(function):
        filename = item.__code__.co_filename
        entry = linecache.cache.get(filename)
        if entry is not None and len(entry) == 4 and not Path(filename).exists():
            sources[filename] = list(entry[2])
    return sources


def _notebook_functions(function: Any) -> list[types.FunctionType]:
    found: list[types.FunctionType] = []
    pending = [function]
    while pending:
        item = pending.pop()
        if not isinstance(item, types.FunctionType) or item in found:
            continue
        found.append(item)
        names = _code_names(item.__code__)
        pending.extend(
            value
            for name, value in item.__globals__.items()
            if name in names and getattr(value, "__module__", None) == item.__module__
        )
    return found


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            names |= _code_names(constant)
    return names


def _restore_code_filenames(function: Any, filenames: dict[str, str]) -> None:
    # cloudpickle gives functions shipped by value a placeholder file name; putting
    # each cell's name back lets tracebacks show the cell's lines from linecache.
    for item in _notebook_functions(function):
        filename = filenames.get(item.__qualname__)
        if filename and item.__code__.co_filename != filename:
            item.__code__ = _renamed_code(item.__code__, filename)


def _renamed_code(code: types.CodeType, filename: str) -> types.CodeType:
    constants = tuple(
        _renamed_code(item, filename) if isinstance(item, types.CodeType) else item
        for item in code.co_consts
    )
    return code.replace(co_filename=filename, co_consts=constants)


def staging_path(final: str | os.PathLike[str], job_id: str) -> str:
    """Return the staging file used for ``final`` by job ``job_id``.

    The name ends with the last two suffixes of ``final`` (``.csv.gz``), so that
    pandas infers the same compression for both files. String operations, not
    pathlib: a worker calls this for every output of every job.
    """
    folder, name = os.path.split(os.fspath(final))
    # The suffixes as pathlib counts them: none for a name ending with a dot, and
    # leading dots are part of the stem.
    parts = [] if name.endswith(".") else name.lstrip(".").split(".")[1:]
    suffixes = "".join("." + part for part in parts[-2:])
    return os.path.join(folder, f".{name}.{job_id}.staging{suffixes}")


def notebook_code_files(function: Callable[..., Any]) -> dict[str, str]:
    """Return the file name of ``function`` and its notebook helpers by qualname."""
    return {
        item.__qualname__: item.__code__.co_filename
        for item in _notebook_functions(function)
        if item.__code__.co_filename in linecache.cache
        and not Path(item.__code__.co_filename).exists()
    }


def run_task(run: TaskRun) -> TaskResult:
    """Execute ``run`` and return its outcome; errors of the task become a result."""
    function = run.function
    for filename, lines in run.sources.items():
        linecache.cache.setdefault(filename, (0, None, lines, filename))
    if run.code_files:
        _restore_code_filenames(function, run.code_files)
    try:
        arguments = [_read_input(run, spec) for spec in run.inputs]
    except Exception as error:  # noqa: BLE001 - a failed read fails the task
        return _failure(run, error, "reading an input failed")

    try:
        result = function(*arguments)
    except Exception as error:  # noqa: BLE001 - the task may raise anything
        return _failure(run, error, "the task function raised", skip_frames=1)

    try:
        values = _split_results(run, result)
    except DataNodeWritingError as error:
        return _failure(run, error, "the task returned the wrong number of results")

    # Generic outputs call the user's write function and in_memory ones change
    # the kernel's value, in place, which no staging file can undo. So they come
    # last: an output that cannot store its value fails the job before they
    # change anything.
    pairs = sorted(
        zip(run.outputs, values),
        key=lambda pair: pair[0].storage_type in _WRITTEN_IN_PLACE,
    )
    written: list[StagedOutput] = []
    try:
        for spec, value in pairs:
            written.append(_write_output(run, spec, value))
    except Exception as error:  # noqa: BLE001 - any storage error fails the task
        discard_staged(written)
        wrapped = DataNodeWritingError(_write_error_message(run, spec, error))
        wrapped.__cause__ = error
        return _failure(run, wrapped, "writing an output failed")
    return TaskResult(run.job_id, True, written)


def _write_error_message(run: TaskRun, spec: NodeSpec, error: Exception) -> str:
    failure = (
        f"Writing output {spec.config_id!r} ({spec.id}) of task "
        f"{run.task_config_id!r} with storage type {spec.storage_type!r} failed: "
        f"{type(error).__name__}: {clause(error)}."
    )
    if spec.storage_type not in _WRITTEN_IN_PLACE:
        # Outputs written in place come last, so none was written yet.
        failure += " No output of the job changed."
    if not isinstance(error, OSError):
        return (
            f"{failure} Return a value that this storage type can store, or choose "
            "another storage type for the data node."
        )
    # The file system refused the write (a full disk, a size limit, permissions):
    # the value is not the problem.
    from .storage.errors import write_failure_advice

    try:
        path = None if spec.storage_type == "generic" else spec.backend().path
    except Exception:  # noqa: BLE001 - the message goes on without the path
        path = None
    return f"{failure} {write_failure_advice(path)}"


def _read_input(run: TaskRun, spec: NodeSpec) -> Any:
    backend = spec.backend()
    try:
        return backend.read()
    except FileNotFoundError as error:
        if spec.storage_type == "generic" or backend.exists():
            raise  # a file that the backend reads besides its own
        raise NoData(
            f"Input {spec.config_id!r} ({spec.id}) of task {run.task_config_id!r} has "
            f"no data at {backend.path}; write the data node or run the task that "
            "produces it first."
        ) from error


def _split_results(run: TaskRun, result: Any) -> list[Any]:
    count = len(run.outputs)
    if count == 0:
        return []
    if count == 1:
        return [result]
    if not isinstance(result, (tuple, list)) or len(result) != count:
        got = len(result) if isinstance(result, (tuple, list)) else 1
        names = ", ".join(spec.config_id for spec in run.outputs)
        raise DataNodeWritingError(
            f"Task {run.task_config_id!r} has {count} outputs ({names}) but its "
            f"function returned {got} value{'s' if got != 1 else ''} "
            f"({type(result).__name__}); return a tuple of {count} values, in the "
            "order of the outputs."
        )
    return list(result)


def _write_output(run: TaskRun, spec: NodeSpec, value: Any) -> StagedOutput:
    backend = spec.backend()
    final = backend.path
    if not run.stage_outputs or final is None or spec.storage_type == "generic":
        backend.write(value)
        return StagedOutput(spec.id, None, str(final) if final else None)
    # Absolute paths: the kernel commits them, maybe after its working folder
    # changed, and a relative path is relative to the one of the submit.
    final = Path(os.path.abspath(final))
    staged = staging_path(final, run.job_id)
    staged_backend = spec.backend(staged)
    try:
        with writing_unpublished_files():
            staged_backend.write(value)
    except FileNotFoundError:
        if final.parent.exists():
            raise
        final.parent.mkdir(parents=True, exist_ok=True)
        with writing_unpublished_files():
            staged_backend.write(value)
    return StagedOutput(spec.id, staged, str(final))


def discard_staged(outputs: list[StagedOutput]) -> None:
    """Delete the staging files of a job that will not be committed."""
    for output in outputs:
        if output.staged_path:
            Path(output.staged_path).unlink(missing_ok=True)


def previous_path(final: str | os.PathLike[str], job_id: str) -> str:
    """Return where ``commit_staged`` keeps the file that job ``job_id`` replaces."""
    folder, name = os.path.split(os.fspath(final))
    return os.path.join(folder, f".{name}.{job_id}.previous")


class CommitFailed(OSError):
    """A staged output could not be renamed onto its data node's file.

    ``changed`` lists the ids of the data nodes whose earlier file could not be
    put back: their new contents stay.
    """

    def __init__(
        self, output: StagedOutput, error: OSError, changed: list[str] | None = None
    ) -> None:
        super().__init__(str(error))
        self.output = output
        self.error = error
        self.changed = changed or []


def file_identity(path: str) -> list[int]:
    """Return the inode, modification time and size of the file at ``path``.

    Together they set one file apart from a later one written at the same path.
    """
    status = os.lstat(path)
    return [status.st_ino, status.st_mtime_ns, status.st_size]


def commit_staged(
    outputs: list[StagedOutput], job_id: str, journal: str | None = None
) -> None:
    """Rename each staging file of ``outputs`` onto its final path: all or none.

    With several files, each final file that exists is first linked under
    ``previous_path``, so that when a later rename fails, the files renamed before
    it get their earlier contents back. A file that cannot be linked (a file
    system without hard links, too many links) keeps its new contents then, and
    ``CommitFailed.changed`` names its data node. Raises ``CommitFailed`` naming
    the output that failed; the caller then discards the staging files.

    Before the first rename, ``journal`` (a JSON file) lists each final path,
    whether it existed, and the identity of the file about to replace it. A
    repair after a crash (``Scheduler._remove_stale_staging``) reads it to set
    the job's files apart from later ones. It is removed when the commit ends.
    """
    staged = [
        (output, output.staged_path, output.final_path)
        for output in outputs
        if output.staged_path and output.final_path
    ]
    if len(staged) == 1:
        # The common case: one rename, which changes nothing when it fails.
        output, source, final = staged[0]
        try:
            os.replace(source, final)
        except OSError as error:
            raise CommitFailed(output, error) from error
        return
    for output, _, final in staged:
        if os.path.isdir(final):
            folder_error = IsADirectoryError(errno.EISDIR, "Is a directory", final)
            raise CommitFailed(output, folder_error)
    if journal is not None and staged:
        entries = []
        for output, source, final in staged:
            try:
                identity = file_identity(source)
            except OSError as error:  # the staging file is gone
                raise CommitFailed(output, error) from error
            entries.append(
                {"final": final, "existed": os.path.lexists(final), "file": identity}
            )
        try:
            Path(journal).write_text(json.dumps(entries), encoding="utf-8")
        except OSError as error:
            raise CommitFailed(staged[0][0], error) from error
    try:
        _rename_all(staged, job_id)
    finally:
        if journal is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(journal)


def _rename_all(staged: list[tuple[StagedOutput, str, str]], job_id: str) -> None:
    # (node id, final path, where its earlier file is kept, whether it existed)
    done: list[tuple[str, str, str | None, bool]] = []
    for output, source, final in staged:
        existed = os.path.lexists(final)
        backup = None
        if existed:
            try:
                backup = _keep_previous(final, job_id)
            except OSError:
                logger.warning("Cannot keep the earlier contents of %s", final)
        try:
            os.replace(source, final)
        except OSError as error:
            if backup is not None:
                os.unlink(backup)
            changed = [
                node_id
                for node_id, done_final, done_backup, done_existed in reversed(done)
                if not _put_back(done_final, done_backup, done_existed)
            ]
            raise CommitFailed(output, error, changed) from error
        done.append((output.node_id, final, backup, existed))
    for _, _, backup, _ in done:
        if backup is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(backup)


def _keep_previous(final: str, job_id: str) -> str:
    """Link ``final`` under ``previous_path`` and return that path."""
    backup = previous_path(final, job_id)
    try:
        os.link(final, backup)
    except FileExistsError:
        # Left by a commit of this job that a crash interrupted.
        os.unlink(backup)
        os.link(final, backup)
    return backup


def _put_back(final: str, backup: str | None, existed: bool) -> bool:
    """Undo one rename of ``commit_staged``; return whether the earlier state is back."""
    try:
        if backup is not None:
            os.replace(backup, final)
        elif not existed:
            os.unlink(final)
        else:
            return False  # its earlier file could not be kept
    except OSError:
        logger.exception("Could not put back the earlier contents of %s", final)
        return False
    return True


def _failure(
    run: TaskRun, error: BaseException, what: str, skip_frames: int = 0
) -> TaskResult:
    tb = error.__traceback__
    # Drop this module's own frames so the traceback starts in the user's code.
    for _ in range(skip_frames):
        if tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
    text = "".join(traceback.format_exception(type(error), error, tb))
    summary = f"{type(error).__name__}: {error}"
    return TaskResult(run.job_id, False, errors=[text], summary=f"{what}: {summary}")


def run_pickled_task(run: TaskRun, function: bytes) -> TaskResult:
    """Run ``run`` in a worker, with its function given as cloudpickle bytes.

    Standalone mode pickles each function once per submission rather than once per
    job: a function defined in a notebook is pickled by value, which costs more
    than the rest of the ``TaskRun``.
    """
    return run_task_in_worker(run.with_function(cloudpickle.loads(function)))


def run_task_in_worker(run: TaskRun) -> TaskResult:
    """Run ``run`` inside a worker process, where the configuration is read-only."""
    from .config import Config

    Config.block_update()
    # Read by _runtime.start: the API's entities live in the kernel's store. Set only
    # when missing: each assignment calls putenv, for every job.
    if os.environ.get("JUPYTER_SCENARIOS_IN_WORKER") != "1":
        os.environ["JUPYTER_SCENARIOS_IN_WORKER"] = "1"
    return run_task(run)
