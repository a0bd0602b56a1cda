"""Entity metadata in SQLite, with one live object per entity id in each process.

One database file, ``entities.db``, sits in the storage folder, beside the ``data``
folder (data node contents) and the ``logs`` folder (captured job output). Each entity
kind has a table of ``id``, a few indexed columns and a JSON document. The database
runs in WAL mode with a busy timeout, and every write happens in a transaction, so a
process killed at any moment leaves a consistent store and two kernels can share a
folder.

Within a process the store keeps an identity map: ``get`` returns the same object for
the same id, so a change made through one reference is visible through all of them.
``save`` writes at once, except inside ``batch()``, where the saves of the calling
thread are written together when the outermost ``batch`` exits (the scheduler uses
this to persist many job transitions in one transaction). ``handover_batch`` gathers
saves in the same way but leaves them for ``write_handed_over``, which another thread
may call: ``submit`` hands a new submission's entities to the scheduler thread, which
writes them with its own changes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, cast

try:
    import fcntl
except ImportError:  # Windows: threads of one process still take turns
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)


class StoreError(RuntimeError):
    """The SQLite file of a storage folder is damaged, unreadable or kept locked."""


#: How long a connection waits for another process's lock on the database.
BUSY_SECONDS = 30.0
#: File in the storage folder whose lock guards the creation of shared entities.
CREATION_LOCK_NAME = ".creation.lock"


def _is_busy(error: sqlite3.DatabaseError) -> bool:
    """Return whether ``error`` means that another connection holds a lock."""
    return isinstance(error, sqlite3.OperationalError) and (
        "locked" in str(error) or "busy" in str(error)
    )


SCHEMA_VERSION = 1

#: Entity kind -> id prefix and extra indexed columns. Only the columns in
#: _CHANGING_COLUMNS may change after an entity's first write. The others hold ids and
#: settings fixed at creation, so they keep the value of that write.
KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "scenario": ("SCENARIO_", ("config_id", "cycle_id")),
    "task": ("TASK_", ("config_id",)),
    "data_node": ("DATANODE_", ("config_id", "owner_id")),
    "job": ("JOB_", ("submit_id", "task_id", "status")),
    "submission": ("SUBMISSION_", ("entity_id",)),
    "cycle": ("CYCLE_", ("frequency",)),
}
_CHANGING_COLUMNS = {"job": ("status",)}

# Older edits of data nodes, moved out of the nodes' rows (see
# DataNode._edits_to_archive). ``key`` is a digest of the edit and its place in the
# history, so that two kernels moving the same edit store it once.
_EDIT_ARCHIVE = "data_node_edit"
_ARCHIVE_EDITS = (
    f"INSERT OR IGNORE INTO {_EDIT_ARCHIVE} (node_id, key, timestamp, doc) "
    "VALUES (?, ?, ?, ?)"
)


# The statement that writes one row of each kind. An existing row is updated in
# place: INSERT OR REPLACE would delete it and insert it again, which costs one more
# change to each index. The update sets only the columns that can change, because
# SQLite rewrites the index entries of every column it sets, changed or not. A job
# row took 13 us to update with all three indexed columns set, and 10 us with status
# alone (benchmarks/README.md, change 28).
_INSERT = {
    kind: "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT (id) DO UPDATE SET {}".format(
        kind,
        ", ".join(("id", "doc", *columns)),
        ", ".join("?" * (2 + len(columns))),
        ", ".join(
            f"{column} = excluded.{column}"
            for column in ("doc", *_CHANGING_COLUMNS.get(kind, ()))
        ),
    )
    for kind, (_, columns) in KINDS.items()
}


# Kind by id prefix. Every prefix is one word followed by "_".
_KIND_BY_PREFIX = {prefix: kind for kind, (prefix, _) in KINDS.items()}


def kind_of(entity_id: str) -> str | None:
    """Return the entity kind that ``entity_id``'s prefix names, or None."""
    return _KIND_BY_PREFIX.get(entity_id[: entity_id.find("_") + 1])


class Storable(Protocol):
    id: str

    def _to_row(self) -> tuple[str, Mapping[str, Any]]: ...


Factory = Callable[["Store", dict[str, Any]], Any]


class Store:
    """Read and write entities in the storage folder.

    Parameters
    ----------
    folder
        The storage folder; created if missing.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder).resolve()
        self.data_folder = self.folder / "data"
        self.logs_folder = self.folder / "logs"
        for path in (self.folder, self.data_folder, self.logs_folder):
            path.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / "entities.db"

        # Guards the connection and the identity map. Any thread (the kernel's main
        # thread, the scheduler's manager thread, widget callbacks) takes it for each
        # read or write; it is never held while user code runs.
        self._lock = threading.RLock()
        self._connection = sqlite3.connect(
            self.path,
            timeout=BUSY_SECONDS,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            self._set_up_connection()
        except sqlite3.DatabaseError as error:
            self._connection.close()
            if _is_busy(error):
                raise StoreError(
                    f"The entity store {self.path} stayed locked by another process "
                    f"for {BUSY_SECONDS:.0f} s ({error}). The file was not changed. "
                    "Find the kernel or script that holds it, or point "
                    "Config.configure_core(storage_folder=...) at another folder."
                ) from error
            raise StoreError(
                f"The entity store {self.path} cannot be read ({error}). Nothing was "
                "changed or deleted. Restore the file from a backup, or point "
                "Config.configure_core(storage_folder=...) at another folder."
            ) from error

        self._live: dict[str, Any] = {}
        self._factories: dict[str, Factory] = {}
        # Per-thread pending saves of an open batch(); other threads write at once.
        self._local = threading.local()
        # Every thread's open pending dict, so refresh() can skip entities with
        # unsaved changes; guarded by _lock.
        self._open_batches: list[dict[str, Any]] = []
        # id() of each handed-over batch that a thread is writing; guarded by _lock.
        self._claimed: set[int] = set()
        # refresh() reads an entity's row only if another connection may have
        # changed it: SQLite's data_version changes when another connection commits.
        # _synced contains the ids of entities whose state matches their row as of
        # _seen_version; both are guarded by _lock.
        self._seen_version: int = self._connection.execute(
            "PRAGMA data_version"
        ).fetchone()[0]
        self._synced: set[str] = set()
        # See shared_creation().
        self._creation_lock = threading.RLock()
        self._creation_depth = 0
        self.closed = False

    def _set_up_connection(self) -> None:
        # Kernels that open a new folder together race to create the file, switch it
        # to WAL and create the tables. Some of these steps fail with "database is
        # locked" at once, without waiting for the busy timeout, so they are retried
        # here until BUSY_SECONDS have passed.
        deadline = time.monotonic() + BUSY_SECONDS
        delay = 0.001
        while True:
            try:
                self._connection.execute("PRAGMA journal_mode=WAL")
                self._connection.execute("PRAGMA synchronous=NORMAL")
                self._connection.execute(
                    f"PRAGMA busy_timeout={BUSY_SECONDS * 1000:.0f}"
                )
                self._create_tables()
                return
            except sqlite3.OperationalError as error:
                if not _is_busy(error) or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _create_tables(self) -> None:
        with self._transaction() as cursor:
            cursor.execute(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)"
            )
            row = cursor.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'"
            ).fetchone()
            if row is None:
                cursor.execute(
                    "INSERT INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,)
                )
            elif int(row[0]) > SCHEMA_VERSION:
                raise RuntimeError(
                    f"The store {self.path} was written by a newer version of "
                    f"jupyter-scenarios (schema {row[0]}, this one reads "
                    f"{SCHEMA_VERSION}); upgrade jupyter-scenarios or use another "
                    "storage folder."
                )
            cursor.execute(
                f"CREATE TABLE IF NOT EXISTS {_EDIT_ARCHIVE} (node_id TEXT NOT NULL, "
                "key TEXT NOT NULL, timestamp TEXT NOT NULL, doc TEXT NOT NULL, "
                "PRIMARY KEY (node_id, key))"
            )
            for kind, (_, columns) in KINDS.items():
                extra = "".join(f", {column} TEXT" for column in columns)
                cursor.execute(
                    f"CREATE TABLE IF NOT EXISTS {kind} "
                    f"(id TEXT PRIMARY KEY, doc TEXT NOT NULL{extra})"
                )
                for column in columns:
                    cursor.execute(
                        f"CREATE INDEX IF NOT EXISTS {kind}_{column} "
                        f"ON {kind} ({column})"
                    )

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cursor = self._connection.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                yield cursor
                cursor.execute("COMMIT")
            except BaseException:
                # SQLite rolls back by itself after some errors (a full disk), and
                # a ROLLBACK then would hide the error with one of its own.
                if self._connection.in_transaction:
                    cursor.execute("ROLLBACK")
                raise
            finally:
                cursor.close()

    # -- identity map -------------------------------------------------------------

    def register_factory(self, kind: str, factory: Factory) -> None:
        """Set the function that builds live entities of ``kind`` from documents."""
        self._factories[kind] = factory

    def remember(self, entity: Any) -> None:
        """Add a new entity to the identity map (without writing it)."""
        with self._lock:
            self._live[entity.id] = entity

    # peek and get read the identity map without the lock first: one dict lookup is
    # atomic in CPython, and the scheduler makes about ten of them per job.

    def peek(self, entity_id: str) -> Any | None:
        """Return the live entity with ``entity_id`` if loaded, without loading it."""
        return self._live.get(entity_id)

    def get(self, entity_id: str) -> Any | None:
        """Return the live entity with ``entity_id``, loading it if needed."""
        live = self._live.get(entity_id)
        if live is not None:
            return live
        with self._lock:
            live = self._live.get(entity_id)
            if live is not None:
                return live
            kind = kind_of(entity_id)
            if kind is None:
                return None
            row = self._connection.execute(
                f"SELECT doc FROM {kind} WHERE id = ?", (entity_id,)
            ).fetchone()
            if row is None:
                return None
            return self._build(kind, json.loads(row[0]))

    def _build(self, kind: str, doc: dict[str, Any]) -> Any:
        entity = self._factories[kind](self, doc)
        self._live[entity.id] = entity
        self._synced.add(entity.id)
        return entity

    def get_all(self, kind: str, **where: str) -> list[Any]:
        """Return every entity of ``kind`` whose indexed columns equal ``where``."""
        _, columns = KINDS[kind]
        for column in where:
            if column not in columns:
                raise ValueError(f"{column!r} is not an indexed column of {kind}")
        clause = " AND ".join(f"{column} = ?" for column in where)
        sql = f"SELECT id, doc FROM {kind}" + (f" WHERE {clause}" if clause else "")
        with self._lock:
            rows = self._connection.execute(sql, tuple(where.values())).fetchall()
            result = []
            for entity_id, doc in rows:
                live = self._live.get(entity_id)
                result.append(
                    live if live is not None else self._build(kind, json.loads(doc))
                )
            return result

    def ids(self, kind: str) -> set[str]:
        """Return the ids of every stored entity of ``kind``, without loading them."""
        if kind not in KINDS:
            raise ValueError(
                f"{kind!r} is not an entity kind; use one of {list(KINDS)}"
            )
        with self._lock:
            rows = self._connection.execute(f"SELECT id FROM {kind}").fetchall()
        return {entity_id for (entity_id,) in rows}

    def exists(self, entity_id: str) -> bool:
        """Return whether an entity with ``entity_id`` is stored."""
        return self.get(entity_id) is not None

    def reload(self, entity: Any) -> None:
        """Refresh ``entity`` from the database, for changes made by another process."""
        kind = kind_of(entity.id)
        if kind is None:
            return
        with self._lock:
            row = self._connection.execute(
                f"SELECT doc FROM {kind} WHERE id = ?", (entity.id,)
            ).fetchone()
            if row is not None:
                entity._load_doc(json.loads(row[0]))

    # -- writes ---------------------------------------------------------------------

    def save(self, entity: Storable) -> None:
        """Write ``entity``, now or at the end of this thread's open ``batch()``."""
        pending: dict[str, Storable] | None = getattr(self._local, "pending", None)
        if self._live.get(entity.id) is not entity:
            with self._lock:
                self._live[entity.id] = entity
        if pending is not None:
            pending[entity.id] = entity
            return
        self._write([entity])

    def _write(
        self, entities: list[Storable], *, skip_invalid: bool = False
    ) -> list[tuple[Storable, Exception]]:
        """Write ``entities`` in one transaction.

        Each document is built inside the transaction, under ``_lock``: when two
        threads write the same entity, the later commit then contains the later state.
        With ``skip_invalid``, an entity whose document cannot be built is left out
        and returned with its error; otherwise the error propagates and nothing is
        written.
        """
        if self.closed:
            logger.warning(
                "Store %s is closed; %d entity changes were not written",
                self.path,
                len(entities),
            )
            return []
        try:
            with self._transaction() as cursor:
                skipped = self._write_rows(cursor, entities, skip_invalid)
        except BaseException:
            _end_archiving(entities, committed=False)
            raise
        self._mark_written(entities, skipped)
        return skipped

    def _write_rows(
        self,
        cursor: sqlite3.Cursor,
        entities: list[Storable],
        skip_invalid: bool,
    ) -> list[tuple[Storable, Exception]]:
        """Upsert the rows of ``entities`` within the open transaction of ``cursor``."""
        skipped: list[tuple[Storable, Exception]] = []
        # No other connection can commit during this transaction, so this shows
        # whether rows may have changed since this process last read them.
        (version,) = cursor.execute("PRAGMA data_version").fetchone()
        rows: dict[str, list[list[str | None]]] = {}
        for entity in entities:
            kind = kind_of(entity.id)
            if kind is None:
                raise ValueError(f"Entity id {entity.id!r} has no known prefix")
            merge = getattr(entity, "_merge_stored", None)
            if merge is not None and (
                version != self._seen_version or entity.id not in self._synced
            ):
                stored = cursor.execute(
                    f"SELECT doc FROM {kind} WHERE id = ?", (entity.id,)
                ).fetchone()
                if stored is not None:
                    merge(json.loads(stored[0]))
            archive = getattr(entity, "_edits_to_archive", None)
            if archive is not None:
                moved = archive()
                if moved:
                    cursor.executemany(
                        _ARCHIVE_EDITS, [(entity.id, *edit) for edit in moved]
                    )
            try:
                text, doc = entity._to_row()
                values: list[str | None] = [entity.id, text]
            except Exception as error:
                if not skip_invalid:
                    raise
                skipped.append((entity, error))
                continue
            values += [_column_value(doc.get(column)) for column in KINDS[kind][1]]
            rows.setdefault(kind, []).append(values)
        for kind, kind_rows in rows.items():
            cursor.executemany(_INSERT[kind], kind_rows)
        return skipped

    def _mark_written(
        self, entities: list[Storable], skipped: list[tuple[Storable, Exception]]
    ) -> None:
        left_out = {entity.id for entity, _ in skipped}
        _end_archiving(
            [entity for entity in entities if entity.id not in left_out],
            committed=True,
        )
        _end_archiving(
            [entity for entity, _ in skipped],
            committed=False,
        )
        with self._lock:
            # The rows now contain this process's state, whatever another process
            # wrote before.
            self._synced.update(
                entity.id for entity in entities if entity.id not in left_out
            )

    @contextlib.contextmanager
    def batch(self, *, all_or_nothing: bool = False) -> Iterator[None]:
        """Group this thread's saves into one transaction written on exit.

        With ``all_or_nothing``, an exception (a kernel interrupt included) leaves the
        store as it was: the saves are dropped, entities that were never stored leave
        the identity map, and stored ones are read back. Inside another batch of this
        thread, the saves join that batch and the outer one decides.
        """
        pending = self._open_batch()
        if pending is None:
            yield
            return
        try:
            yield
        except BaseException:
            self._local.pending = None
            if all_or_nothing:
                self.undo(pending)
            else:
                self._write_and_forget(pending)
            raise
        self._local.pending = None
        self._write_and_forget(pending)

    def undo(self, pending: dict[str, Storable]) -> None:
        """Drop the unwritten saves of a batch and put their entities back as stored.

        An entity without a row leaves the identity map; one with a row is read
        again. For a creation or a submission that an exception or an interrupt
        stopped halfway, so that none of it is stored or half-applied in memory.
        """
        try:
            with self._lock:
                for entity in pending.values():
                    kind = kind_of(entity.id)
                    row = None
                    if kind is not None and not self.closed:
                        row = self._connection.execute(
                            f"SELECT doc FROM {kind} WHERE id = ?", (entity.id,)
                        ).fetchone()
                    if row is None:
                        if self._live.get(entity.id) is entity:
                            del self._live[entity.id]
                        self._synced.discard(entity.id)
                    else:
                        entity._load_doc(json.loads(row[0]))  # type: ignore[attr-defined]
        finally:
            self._forget_batch(pending)

    def _open_batch(self) -> dict[str, Storable] | None:
        """Start a batch for this thread and return its saves; None inside one."""
        if getattr(self._local, "pending", None) is not None:
            return None
        pending: dict[str, Storable] = {}
        with self._lock:
            self._open_batches.append(pending)
        self._local.pending = pending
        return pending

    @contextlib.contextmanager
    def handover_batch(self) -> Iterator[dict[str, Storable] | None]:
        """Group this thread's saves as ``batch()`` does, but do not write them.

        Yields the saves, which the caller must pass to ``write_handed_over`` or
        ``undo``; until then ``refresh`` skips these entities, as it skips those of an
        open batch. An exception in the block undoes them.
        Inside an open batch of this thread, the saves join that batch and this
        yields None.
        """
        pending = self._open_batch()
        if pending is None:
            yield None
            return
        try:
            yield pending
        except BaseException:  # the caller will not hand them over
            self._local.pending = None
            self.undo(pending)
            raise
        self._local.pending = None

    def write_handed_over(
        self, pending: dict[str, Storable] | None, *, now: bool = False
    ) -> None:
        """Write the saves of a ``handover_batch``, from any thread.

        The first call for the same saves takes them: they join this thread's open
        ``batch()`` if it has one, and are written now otherwise. Later calls do
        nothing, unless ``now`` is true: then the saves are written at once in any
        case, and a failed write leaves them for a later call to take.
        """
        if pending is None:
            return
        with self._lock:
            already_taken = id(pending) in self._claimed or not any(
                batch is pending for batch in self._open_batches
            )
            if already_taken and not now:
                return
            if not already_taken:
                self._claimed.add(id(pending))
        target: dict[str, Storable] | None = getattr(self._local, "pending", None)
        if target is not None and not already_taken and not now:
            target.update(pending)  # target is registered, so refresh still skips them
            self._forget_batch(pending)
            return
        try:
            self._write(list(pending.values()))
        except BaseException:
            if not already_taken:
                with self._lock:
                    self._claimed.discard(id(pending))
            raise
        if not already_taken:
            self._forget_batch(pending)

    def _write_and_forget(self, pending: dict[str, Storable]) -> None:
        try:
            if pending:
                self._write(list(pending.values()))
        finally:
            self._forget_batch(pending)

    def _forget_batch(self, pending: dict[str, Storable]) -> None:
        with self._lock:
            self._open_batches = [
                batch for batch in self._open_batches if batch is not pending
            ]
            self._claimed.discard(id(pending))

    def pending_count(self) -> int:
        """Return how many entities this thread's open ``batch()`` has to write."""
        pending = getattr(self._local, "pending", None)
        return 0 if pending is None else len(pending)

    def flush(self) -> None:
        """Write this thread's pending saves now; the open ``batch()`` goes on.

        An entity whose document cannot be built (a property that cannot be
        pickled, say) is logged and dropped, so that it does not block the others.
        Its row keeps the last state written. Other errors leave every save pending
        and propagate.
        """
        pending = getattr(self._local, "pending", None)
        if pending:
            entities = list(pending.values())
            skipped = self._write(entities, skip_invalid=True)
            pending.clear()
            for entity, error in skipped:
                logger.error(
                    "Could not store the changes of %s, whose stored row keeps its "
                    "previous state: %s: %s",
                    entity.id,
                    type(error).__name__,
                    error,
                )

    @contextlib.contextmanager
    def pinned_version(self) -> Iterator[None]:
        """Make this thread's ``refresh`` calls check for other commits only once.

        The scheduler handles each round of commands inside one. A commit by another
        process during the round is seen in the next round, as if it came later.
        """
        outer = getattr(self._local, "pinned", None) is None
        if outer:
            self._local.pinned = [None]
        try:
            yield
        finally:
            if outer:
                self._local.pinned = None

    def refresh(self, entity: Any) -> bool:
        """Update ``entity``'s changing state from the database.

        Another process sharing the folder may have changed it. Skipped while any
        thread of this process has unsaved changes to the entity in a ``batch()``.
        Returns False when the entity's row was read and is gone: this or another
        process deleted it. True otherwise, without a read when no other connection
        committed since the entity was last synced.
        """
        pinned: list[int | None] | None = getattr(self._local, "pinned", None)
        if (
            pinned is not None
            and pinned[0] is not None
            and pinned[0] == self._seen_version
            and entity.id in self._synced
        ):
            # Checked in this round, and synced since. Without the lock: the
            # scheduler makes this call for every input and output of every job.
            return True
        kind = kind_of(entity.id)
        if kind is None or self.closed:
            return True
        with self._lock:
            if any(entity.id in batch for batch in self._open_batches):
                return True
            if pinned is not None and pinned[0] is not None:
                version = pinned[0]
            else:
                (version,) = self._connection.execute("PRAGMA data_version").fetchone()
                if pinned is not None:
                    pinned[0] = version
            if version != self._seen_version:
                self._seen_version = version
                self._synced.clear()
            elif entity.id in self._synced:
                return True  # no other connection committed since the entity was synced
            row = self._connection.execute(
                f"SELECT doc FROM {kind} WHERE id = ?", (entity.id,)
            ).fetchone()
            if row is None:
                return False
            entity._refresh_doc(json.loads(row[0]))
            self._synced.add(entity.id)
            return True

    def archived_edits(self, node_id: str) -> list[dict[str, Any]]:
        """Return the edits of data node ``node_id`` moved out of its row, oldest first."""
        with self._lock:
            # In the order they were archived, which is the order of the history.
            # The primary key's index finds the node's rows.
            rows = self._connection.execute(
                f"SELECT doc FROM {_EDIT_ARCHIVE} WHERE node_id = ? ORDER BY rowid",
                (node_id,),
            ).fetchall()
        return [json.loads(row[0]) for row in rows]

    def get_current(self, entity_id: str) -> Any | None:
        """Return the entity with ``entity_id`` as stored now, or None.

        Like ``get``, but an entity that another process deleted since this one
        loaded it is forgotten here and gives None.
        """
        entity = self.get(entity_id)
        if entity is None or self.refresh(entity):
            return entity
        with self._lock:
            self._live.pop(entity_id, None)
            self._synced.discard(entity_id)
        return None

    def data_version(self) -> int | None:
        """Return SQLite's data_version, which changes when another connection
        commits; None once the store is closed."""
        with self._lock:
            if self.closed:
                return None
            (version,) = self._connection.execute("PRAGMA data_version").fetchone()
        return int(version)

    def delete(
        self, entity_ids: list[str], *, then_write: Sequence[Storable] = ()
    ) -> None:
        """Remove entities by id, from the database and the identity map.

        ``then_write`` holds entities to write in the same transaction, such as those
        that kept a reference to a deleted one: a crash leaves both or neither.
        """
        then = list(then_write)
        try:
            with self._transaction() as cursor:
                for entity_id in entity_ids:
                    kind = kind_of(entity_id)
                    if kind is not None:
                        cursor.execute(f"DELETE FROM {kind} WHERE id = ?", (entity_id,))
                    if kind == "data_node":
                        cursor.execute(
                            f"DELETE FROM {_EDIT_ARCHIVE} WHERE node_id = ?",
                            (entity_id,),
                        )
                self._write_rows(cursor, then, skip_invalid=False)
                # Still inside the transaction's lock, and only once every statement
                # succeeded: a rolled-back deletion keeps the live objects.
                for entity_id in entity_ids:
                    self._live.pop(entity_id, None)
                    self._synced.discard(entity_id)
        except BaseException:
            _end_archiving(then, committed=False)
            raise
        self._mark_written(then, [])

    def clear(self) -> None:
        """Remove every entity."""
        with self._transaction() as cursor:
            for kind in KINDS:
                cursor.execute(f"DELETE FROM {kind}")
            cursor.execute(f"DELETE FROM {_EDIT_ARCHIVE}")
            self._live.clear()
            self._synced.clear()

    @contextlib.contextmanager
    def shared_creation(self) -> Iterator[None]:
        """Let one process at a time find or create the entities kernels share.

        GLOBAL and CYCLE data nodes, their tasks and cycles are looked up and
        created when missing. Two kernels doing so at the same moment each found
        none and created their own. Callers hold this around the lookup and the
        ``batch()`` that writes what they created, so that the next process's lookup
        finds it. Within a process, threads take turns too. Re-entrant.
        """
        with self._creation_lock:
            outer = self._creation_depth == 0
            self._creation_depth += 1
            lock_file = None
            try:
                if outer and fcntl is not None:
                    lock_file = open(self.folder / CREATION_LOCK_NAME, "a+b")  # noqa: SIM115
                    fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
                yield
            finally:
                self._creation_depth -= 1
                if lock_file is not None:
                    # Closing the file releases the lock.
                    lock_file.close()

    def close(self) -> None:
        """Close the database connection; later saves are logged and dropped.

        Later reads raise a StoreError that names the folder.
        """
        with self._lock:
            if not self.closed:
                self.closed = True
                connection = self._connection
                self._connection = cast(
                    sqlite3.Connection, _ClosedConnection(self.folder)
                )
                connection.close()


class _ClosedConnection:
    """The connection of a closed store: any use raises a StoreError that explains it.

    Entities kept in variables still point at their store after the orchestrator
    stopped or moved to another storage folder.
    """

    def __init__(self, folder: Path) -> None:
        self._folder = folder

    def __getattr__(self, name: str) -> Any:
        raise StoreError(
            f"The entity store in {self._folder} is closed: the orchestrator "
            "stopped, or now uses another storage folder. Get the entity again from "
            f"the store in use (tp.get, tp.get_scenarios()), or configure "
            f"{self._folder} again (Config.configure_core(storage_folder=...))."
        )


def _column_value(value: Any) -> str | None:
    if value is None:
        return None
    return str(value)


def _json_default(value: Any) -> Any:
    raise TypeError(
        f"Value {value!r} of type {type(value).__name__} cannot be stored in entity "
        "metadata; store it in a data node instead."
    )


# One encoder for every row: json.dumps with a ``default`` builds a new one per call.
_ENCODER = json.JSONEncoder(default=_json_default)


def encode_doc(doc: dict[str, Any]) -> str:
    """Return the JSON text of an entity document; TypeError names what cannot be."""
    return _ENCODER.encode(doc)


_local_identity: tuple[int, str] | None = None


def local_process_identity() -> str:
    """Return ``process_identity()`` of this process, computed once per pid."""
    global _local_identity
    pid = os.getpid()
    if _local_identity is None or _local_identity[0] != pid:
        _local_identity = (pid, process_identity(pid))
    return _local_identity[1]


# Identity -> whether that process was alive when first asked. A dead process never
# comes back (the start time distinguishes a reused pid), and a process that dies
# after the first answer only makes its jobs read their rows when they need not.
_liveness: dict[str, bool] = {}


def runs_elsewhere(identity: str | None) -> bool:
    """Return whether ``identity`` names another process that is alive."""
    if identity is None or identity == local_process_identity():
        return False
    alive = _liveness.get(identity)
    if alive is None:
        alive = _liveness[identity] = is_process_alive(identity)
    return alive


def process_identity(pid: int | None = None) -> str:
    """Return ``"<pid>:<start time>"`` naming a live process unambiguously.

    The start time (in clock ticks since boot, from /proc) distinguishes a process from
    a later one that reuses its pid. Where /proc is missing, only the pid is used.
    """
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{_start_time(pid)}"


def _start_time(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return fields[19]
    except (OSError, IndexError):
        return "?"


def is_process_alive(identity: str) -> bool:
    """Return whether the process named by ``process_identity`` output still runs."""
    pid_text, _, start = identity.partition(":")
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if start in ("", "?"):
        return True
    return _start_time(pid) == start


def _end_archiving(entities: Sequence[Storable], *, committed: bool) -> None:
    """Tell data nodes whether the edits they handed to the archive were written."""
    for entity in entities:
        done = getattr(entity, "_archive_written", None)
        if done is not None:
            done(committed)
