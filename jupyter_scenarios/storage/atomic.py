"""Atomic file replacement, so that a reader never sees a half-written file.

The data goes to a temporary file in the target's folder, which is flushed to disk and
then renamed onto the target with :func:`os.replace`. A rename within one file system is
atomic on POSIX and on Windows, so a reader opens either the old or the new file.

NOTE: On Windows, :func:`os.replace` raises PermissionError while another process has
the target open, because Python opens files without ``FILE_SHARE_DELETE`` there.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

_TEMP_NAME_ATTEMPTS = 100


# A temporary file's name: a dot, the target's name, 16 hex digits, ".tmp" and the
# target's last suffixes.
_TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{16}\.tmp(\.[^.]*){0,2}$")


def _create_temp_file(target: Path) -> tuple[Path, int]:
    """Create an empty, hidden temporary file next to ``target``.

    Returns its path and an open descriptor that holds an exclusive ``flock`` on it
    until the caller closes it. A process that dies mid-write drops the lock, so
    ``remove_abandoned_temp_files`` can lock the file and knows it is left over.

    The temporary name ends with the target's last two suffixes (such as ``.csv.gz``
    or ``.tar.gz``), so that pandas and other writers that infer a format or a
    compression from the suffix choose the target's.
    """
    suffixes = "".join(target.suffixes[-2:])
    for _ in range(_TEMP_NAME_ATTEMPTS):
        token = secrets.token_hex(8)
        temp = target.with_name(f".{target.name}.{token}.tmp{suffixes}")
        try:
            # Mode 0o666 lets the umask decide the permissions, as open() would.
            # tempfile.mkstemp would create the file with mode 0o600 instead.
            fd = os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            continue
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        return temp, fd
    raise FileExistsError(
        f"Failed to create a temporary file next to {target} after "
        f"{_TEMP_NAME_ATTEMPTS} attempts because every random name was taken. "
        "Remove the leftover hidden '.tmp' files from that folder."
    )


def _fsync_file(path: Path) -> None:
    # O_RDWR because Windows rejects fsync on a file opened read-only.
    fd = os.open(path, os.O_RDWR)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """Flush the rename to disk, where the platform allows it."""
    if os.name == "nt":
        # Windows cannot open a folder as a file descriptor.
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        # Some file systems (for example some network mounts) reject fsync on a
        # folder. The rename is still atomic, but it may not survive a power loss.
        pass
    finally:
        os.close(fd)


# True inside ``writing_unpublished_files()``.
_UNPUBLISHED: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "jupyter_scenarios_unpublished", default=False
)


@contextlib.contextmanager
def writing_unpublished_files() -> Iterator[None]:
    """Make ``atomic_path`` write straight to its target within this block.

    For files that no reader opens until the caller publishes them, such as the
    staging files of job outputs, which the scheduler renames onto the data node's
    file only when the job succeeded. A temporary file, a rename and fsync would
    protect nothing there, and they cost more than writing a small output. Applies
    to this thread or task only.
    """
    token = _UNPUBLISHED.set(True)
    try:
        yield
    finally:
        _UNPUBLISHED.reset(token)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write to, then move it onto ``path`` atomically.

    The parent folders of ``path`` are created if missing. The temporary file is
    created empty in the same folder as ``path``. When the ``with`` block exits without
    an error, the temporary file is flushed to disk with fsync and renamed onto
    ``path``. When the block raises, the temporary file is removed, ``path`` is left
    unchanged and the error propagates.

    Inside ``writing_unpublished_files()`` the block gets ``path`` itself, and
    ``path`` is removed if the block raises.

    Parameters
    ----------
    path
        File to replace. It is created if it does not exist, and keeps its permission
        bits if it does, even when they make it read-only.

    Yields
    ------
    Path
        The temporary file, which the caller may overwrite or reopen freely.

    Examples
    --------
    >>> with atomic_path("out/table.csv") as temp:  # doctest: +SKIP
    ...     frame.to_csv(temp)
    """
    target = path if isinstance(path, Path) else Path(path)
    if _UNPUBLISHED.get():
        try:
            yield target
        except BaseException:
            with contextlib.suppress(OSError):
                target.unlink(missing_ok=True)
            raise
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        target_mode: int | None = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        target_mode = None
    temp, lock = _create_temp_file(target)
    try:
        yield temp
        _fsync_file(temp)
        # The mode is set last, so that a read-only target does not stop the writes.
        if target_mode is not None:
            os.chmod(temp, target_mode)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    finally:
        os.close(lock)
    _fsync_folder(target.parent)


def remove_abandoned_temp_files(folder: Path) -> int:
    """Remove the temporary files in ``folder`` whose writer died; return how many.

    A writer holds a lock on its temporary file until it renames or removes it, so
    a file that can be locked was left by a process killed mid-write. Files of
    writers that still run, in any process, are kept. Without ``fcntl`` (Windows)
    nothing is removed.
    """
    if fcntl is None:
        return 0
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if not _TEMP_NAME.match(entry.name) or not entry.is_file(follow_symlinks=False):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # its writer still runs
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed += 1
        finally:
            os.close(fd)
    return removed


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace the contents of ``path`` with ``data`` atomically.

    Parameters
    ----------
    path
        File to write. Missing parent folders are created.
    data
        The new contents of the file.
    """
    with atomic_path(path) as temp, open(temp, "wb") as file:
        file.write(data)
