"""Data nodes: named, stored values that tasks read and write.

A data node's metadata (edits, locks, validity) lives in the store; its contents live
in a storage backend (a file in the storage folder for most types). Reading and writing
happen here for a person, and in the worker for a job (through the same backends).

Locking: a data node is locked for edition (``edit_in_progress``) while a job that
writes it is unfinished, and while a person holds it through ``lock_edit``. A job whose
input is locked or was never written stays BLOCKED. Every write and unlock publishes an
event, which is how the scheduler learns that blocked jobs may run.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import logging
import warnings
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..enums import JoinOperator, Scope
from ..events import Event, EventEntityType, EventOperation, bus
from ..exceptions import DataNodeIsBeingEdited, NoData, NonExistingDataNode
from ._base import Entity, from_iso, from_seconds, new_id, to_iso, to_seconds
from ._values import (
    PersistedProperties,
    decode_mapping,
    encode_mapping,
    encode_value,
)

if TYPE_CHECKING:
    from ..storage.base import StorageBackend
    from ..store import Store

logger = logging.getLogger(__name__)

#: How long a lock taken with an editor id lasts unless renewed.
EDITOR_LOCK_DURATION = timedelta(minutes=30)

#: Properties that configure the data node itself, not its storage.
_NON_STORAGE_PROPERTIES = ("default_data",)

# A node's row keeps at most _INLINE_EDITS_MAX edits. Past that, a write moves all
# but the newest _INLINE_EDITS_KEEP to the store's edit archive. So the row, which
# each job writes twice, stays small however often the node is written. With every
# edit in the row, a node written 800 times took 0.9 ms to encode at each write.
_INLINE_EDITS_MAX = 64
_INLINE_EDITS_KEEP = 32


class DataNode(Entity):
    """A stored value read and written by tasks and people.

    Use ``read()`` and ``write()`` for the contents; the other attributes describe
    the data node and its history.
    """

    _kind = "data_node"
    _ID_PREFIX = "DATANODE_"

    def __init__(
        self,
        store: Store,
        *,
        config_id: str,
        storage_type: str,
        scope: Scope = Scope.SCENARIO,
        owner_id: str | None = None,
        parent_ids: set[str] | None = None,
        properties: dict[str, Any] | None = None,
        validity_period: timedelta | None = None,
        name: str | None = None,
        id: str | None = None,
    ) -> None:
        super().__init__(store)
        self.id = id or new_id(self._ID_PREFIX, config_id)
        self._config_id = config_id
        self._storage_type = storage_type
        self._scope = scope
        self._owner_id = owner_id
        self._parent_ids = set(parent_ids or ())
        storage_properties = {
            key: value
            for key, value in (properties or {}).items()
            if key not in _NON_STORAGE_PROPERTIES
        }
        self._properties = PersistedProperties(
            storage_properties, self._properties_changed
        )
        self._validity_period = validity_period
        self._name = name
        self._last_edit_date: datetime | None = None
        self._edits: list[dict[str, Any]] = []
        self._archive_cache: list[dict[str, Any]] | None
        self._init_archive(0)
        self._edit_in_progress = False
        self._editor_id: str | None = None
        self._editor_expiration_date: datetime | None = None
        self._version = ""
        self._backend_cache: StorageBackend | None = None

    # -- attributes -----------------------------------------------------------------

    @property
    def config_id(self) -> str:
        return self._config_id

    @property
    def storage_type(self) -> str:
        return self._storage_type

    @property
    def scope(self) -> Scope:
        return self._scope

    @property
    def owner_id(self) -> str | None:
        """Id of the scenario or cycle that owns this node; None for global nodes."""
        return self._owner_id

    @property
    def parent_ids(self) -> set[str]:
        """Ids of the tasks that read or write this node."""
        return set(self._parent_ids)

    @property
    def properties(self) -> dict[str, Any]:
        return self._properties

    def _properties_changed(self) -> None:
        # A changed path or storage setting needs a new backend.
        self._backend_cache = None
        self._save()

    @property
    def name(self) -> str | None:
        return self._name or self._properties.get("name")

    @name.setter
    def name(self, value: str) -> None:
        self._name = value
        self._save()

    @property
    def validity_period(self) -> timedelta | None:
        return self._validity_period

    @validity_period.setter
    def validity_period(self, value: timedelta | None) -> None:
        self._validity_period = value
        self._save()

    # The edits and the lock change when a job or a person writes the node, maybe in
    # another process sharing the storage folder. Their properties read the row again
    # when another connection committed since (see Store.refresh), which costs one
    # PRAGMA query when nothing changed.

    def _sync(self) -> None:
        self._store.refresh(self)

    @property
    def last_edit_date(self) -> datetime | None:
        self._sync()
        return self._last_edit_date

    @property
    def edits(self) -> list[dict[str, Any]]:
        """Edit history, oldest first: ``timestamp``, ``job_id`` or ``editor_id``, extras."""
        self._sync()
        return [dict(edit) for edit in self._all_edits()]

    @property
    def job_ids(self) -> list[str]:
        """Ids of the jobs that wrote this node, oldest first."""
        self._sync()
        return [edit["job_id"] for edit in self._all_edits() if edit.get("job_id")]

    def _all_edits(self) -> list[dict[str, Any]]:
        """Return the archived edits, then those of the row, oldest first."""
        if not self._archived_count:
            return self._edits
        older = self._archive_cache
        if older is None or len(older) < self._archived_count:
            older = self._store.archived_edits(self.id)
            self._archive_cache = older
        return older + self._edits

    def _init_archive(self, archived: int) -> None:
        # How many edits were moved to the store's archive, and how many of the
        # oldest in _edits the write in progress moves there (_edits_to_archive).
        # The archived edits as this object last read or moved them, or None.
        # How many of the first edits in _edits the stored row contains.
        self._archived_count = archived
        self._archiving = 0
        self._archive_cache = [] if not archived else None
        self._written_edits = len(self._edits)

    def _edits_to_archive(self) -> list[tuple[str, str, str]]:
        """Return ``(key, timestamp, JSON)`` of the edits that this write archives.

        The store calls this inside the transaction that writes the node, then
        ``_archive_written`` with the outcome of the transaction. Until then the
        edits stay in memory, so a failed write loses none. The key is a digest of
        the edit and its place in the history, the same in every kernel that
        archives it, and different for equal edits.
        """
        if len(self._edits) <= _INLINE_EDITS_MAX:
            self._archiving = 0
            return []
        self._archiving = len(self._edits) - _INLINE_EDITS_KEEP
        return [
            (
                hashlib.sha1(_edit_key(edit).encode()).hexdigest()
                + f":{self._archived_count + index}",
                edit["timestamp"],
                json.dumps(edit),
            )
            for index, edit in enumerate(self._edits[: self._archiving])
        ]

    def _archive_written(self, committed: bool) -> None:
        if committed and self._archiving:
            moved = self._edits[: self._archiving]
            del self._edits[: self._archiving]
            cache = self._archive_cache
            if cache is not None and len(cache) == self._archived_count:
                cache.extend(moved)
            else:
                self._archive_cache = None
            self._archived_count += self._archiving
        if committed:
            self._written_edits = len(self._edits)
        self._archiving = 0

    @property
    def edit_in_progress(self) -> bool:
        self._sync()
        return self._edit_in_progress

    @property
    def editor_id(self) -> str | None:
        self._sync()
        return self._editor_id

    @property
    def editor_expiration_date(self) -> datetime | None:
        self._sync()
        return self._editor_expiration_date

    @property
    def version(self) -> str:
        return self._version

    @property
    def path(self) -> Path | None:
        """File holding the contents, or None for storage without a file."""
        return self.backend.path

    @property
    def backend(self) -> StorageBackend:
        """The storage backend that reads and writes the contents."""
        if self._backend_cache is None:
            from ..storage import make_backend

            self._backend_cache = make_backend(
                self._storage_type, self.id, self._properties, self._store.data_folder
            )
        return self._backend_cache

    @property
    def expiration_date(self) -> datetime:
        """When the data stops being valid; raises NoData if it was never written."""
        self._sync()
        if self._last_edit_date is None:
            raise NoData(
                f"Data node {self.id!r} ({self._config_id}) has never been written, "
                "so it has no expiration date; write it first."
            )
        if self._validity_period is None:
            return datetime.max
        return self._last_edit_date + self._validity_period

    @property
    def is_ready_for_reading(self) -> bool:
        """True when the node has been written and is not locked for edition."""
        self._sync()
        return not self._edit_in_progress and self._last_edit_date is not None

    @property
    def is_valid(self) -> bool:
        """True when the node has been written and its validity period has not run out."""
        self._sync()
        if self._last_edit_date is None:
            return False
        if self._validity_period is None:
            return True
        return datetime.now() < self._last_edit_date + self._validity_period

    @property
    def is_up_to_date(self) -> bool:
        """True when valid and no upstream data node was edited after this one."""
        if not self.is_valid:
            return False
        assert self._last_edit_date is not None
        for task in self._store_tasks_writing_me():
            for dn in task.input.values():
                if dn.last_edit_date and dn.last_edit_date > self._last_edit_date:
                    return False
        return True

    def _store_tasks_writing_me(self) -> Iterator[Any]:
        for parent_id in self._parent_ids:
            task = self._store.get(parent_id)
            if task is not None and self.id in task.output_ids:
                yield task

    # -- contents ---------------------------------------------------------------------

    def read(self) -> Any:
        """Return the contents, or None with a warning if never written."""
        if not self._has_data():
            message = (
                f"Data node {self.id!r} ({self._config_id}) has not been written yet; "
                "read() returns None. Write it, run the task that produces it, or "
                "use read_or_raise() to get an error instead."
            )
            warnings.warn(message, stacklevel=2)
            return None
        return self.backend.read()

    def read_or_raise(self) -> Any:
        """Return the contents; raise NoData if the node was never written."""
        if not self._has_data():
            raise NoData(
                f"Data node {self.id!r} ({self._config_id}) has not been written yet; "
                "write it or run the task that produces it before reading."
            )
        return self.backend.read()

    def _has_data(self) -> bool:
        self._sync()
        if self._last_edit_date is not None:
            return True
        if self._storage_type != "in_memory" and self.backend.exists():
            # A file put in place by hand counts as written.
            self._record_existing_file()
            return True
        return False

    def write(
        self,
        data: Any,
        job_id: str | None = None,
        editor_id: str | None = None,
        comment: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Replace the contents with ``data`` and record the edit.

        Raises DataNodeIsBeingEdited if another editor holds the lock.
        """
        self._check_editor(editor_id)
        with self._explained_file_errors():
            self.backend.write(data)
        self.track_edit(job_id=job_id, editor_id=editor_id, comment=comment, **kwargs)
        self._unlock()

    def write_with_column_names(
        self,
        data: Any,
        columns: Sequence[Any] | None = None,
        job_id: str | None = None,
    ) -> None:
        """Replace the table with the rows ``data``, named by ``columns``, as in Taipy.

        Parameters
        ----------
        data
            A list of rows, a numpy array, a DataFrame or a dict of columns. An excel
            data node also takes a dict of such tables keyed by sheet name.
        columns
            New names of the columns, in order. They replace the names that a
            DataFrame or a dict of columns has, as in Taipy. None writes ``data`` as
            write() does.
        job_id
            Id of the job that writes, recorded in the edit.

        Raises
        ------
        NotImplementedError
            If the storage type is not csv, excel or parquet.
        ValueError
            If a table has more or fewer columns than ``columns`` has names. The
            stored data is left unchanged.
        DataNodeIsBeingEdited
            If an editor holds the lock.
        """
        self._check_editor(None)
        with self._explained_file_errors():
            self.backend.write_with_column_names(data, columns)
        self.track_edit(job_id=job_id)
        self._unlock()

    def filter(
        self,
        operators: Sequence[Any],
        join_operator: JoinOperator = JoinOperator.AND,
    ) -> Any:
        """Read the contents and return the rows that match ``operators``, as in Taipy.

        Parameters
        ----------
        operators
            One condition ``(key, value, Operator)``, or a list of them, such as
            ``[("year", 2024, Operator.EQUAL), ("sales", 100, Operator.GREATER_THAN)]``.
            ``key`` is a column name for a DataFrame, a column number for a 2-D numpy
            array, and a dict key or attribute name for the items of a list.
        join_operator
            ``JoinOperator.AND`` keeps the rows that match every condition,
            ``JoinOperator.OR`` the rows that match any.

        Returns
        -------
        Any
            Data of the type read() returns, with the matching rows in their stored
            order. A DataFrame keeps its index. A dict of tables, such as the sheets
            of an Excel data node, is filtered table by table.

        Raises
        ------
        NoData
            If the data node was never written.
        NotImplementedError
            If the contents are not a table or a list.
        TypeError
            If the rows of a list are plain lists or tuples, which have no field
            names, or if a condition cannot be applied to the stored values.
        """
        from ..storage._filter import filter_data

        return filter_data(self.read_or_raise(), operators, join_operator, self.id)

    def append(
        self,
        data: Any,
        editor_id: str | None = None,
        comment: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Add ``data`` to the contents (types that support it) and record the edit."""
        self._check_editor(editor_id)
        with self._explained_file_errors():
            self.backend.append(data)
        self.track_edit(editor_id=editor_id, comment=comment, **kwargs)
        self._unlock()

    @contextlib.contextmanager
    def _explained_file_errors(self) -> Iterator[None]:
        """Name this node and its folder in a file system error of a write.

        The error itself goes on, with its class, errno, file name, arguments and
        other attributes, so that callers that catch it still do: only its
        ``strerror`` changes, or a note is added when it has none. The original
        text named only a hidden temporary file.
        """
        try:
            yield
        except OSError as error:
            from ..storage.errors import write_failure_advice

            marker = f"Writing data node {self.id!r}"
            if marker in str(error) or any(
                marker in note for note in getattr(error, "__notes__", ())
            ):
                raise  # raised again by a caller, and explained already

            try:
                path = None if self._storage_type == "generic" else self.backend.path
            except Exception:  # noqa: BLE001 - the message goes on without it
                path = None
            advice = write_failure_advice(path)
            if path is not None:
                advice += " Its stored data is unchanged."
            text = (
                f"Writing data node {self.id!r} ({self._config_id}) failed: "
                f"{error.strerror or error}. {advice}"
            )
            if error.strerror:
                # str() adds ": 'file name'" after it, when the error has one.
                error.strerror = text.removesuffix(".") if error.filename else text
            elif hasattr(error, "add_note"):
                # Its arguments may be data that callers read (shutil.Error lists
                # the failed copies in them), so the text goes in a note, shown
                # with the traceback (Python 3.11 and later).
                error.add_note(text)
            raise

    def track_edit(
        self,
        job_id: str | None = None,
        editor_id: str | None = None,
        timestamp: datetime | None = None,
        comment: str | None = None,
        **options: Any,
    ) -> None:
        """Record an edit made by a job or a person.

        Raises NonExistingDataNode if the node was deleted, in this kernel or
        another one that shares the storage folder.
        """
        self._refresh_before_edit()
        self._record_edit(job_id, editor_id, timestamp, comment, options)

    def _record_edit(
        self,
        job_id: str | None = None,
        editor_id: str | None = None,
        timestamp: datetime | None = None,
        comment: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> None:
        """Record an edit; for callers that handle a deleted node themselves."""
        # Another kernel may have edited this node since it was loaded.
        self._store.refresh(self)
        when = timestamp or datetime.now()
        edit: dict[str, Any] = {"timestamp": when.isoformat()}
        if job_id:
            edit["job_id"] = job_id
        if editor_id:
            edit["editor_id"] = editor_id
        if comment:
            edit["comment"] = comment
        edit.update(
            {key: encode_value(value) for key, value in (options or {}).items()}
        )
        self._edits.append(edit)
        self._last_edit_date = when
        self._save()
        self._publish("last_edit_date", self._last_edit_date)

    def _record_existing_file(self) -> None:
        path = self.backend.path
        if path is None:
            return
        modified = datetime.fromtimestamp(path.stat().st_mtime)
        if not self._store.refresh(self):
            return  # deleted: recording the edit would store the node again
        self._record_edit(timestamp=modified, comment="existing file")

    # -- locks ------------------------------------------------------------------------

    def _refresh_before_edit(self) -> None:
        """Read the stored lock, and raise if the node was deleted.

        Another kernel sharing the storage folder may have locked or deleted the node
        since this object last read its row. A write checked against the old lock
        replaced a locked node's data and dropped the lock. A write to a deleted node
        brought its row and file back.
        """
        if not self._store.refresh(self):
            raise NonExistingDataNode(
                f"Data node {self.id!r} ({self._config_id}) was deleted, in this "
                "kernel or another one that shares the storage folder; nothing was "
                "written. Find the current data nodes with tp.get_data_nodes(), or "
                "create its scenario again."
            )

    def _check_editor(self, editor_id: str | None) -> None:
        self._refresh_before_edit()
        if (
            self._editor_id
            and editor_id != self._editor_id
            and self._editor_expiration_date is not None
            and self._editor_expiration_date > datetime.now()
        ):
            raise DataNodeIsBeingEdited(
                f"Data node {self.id!r} is being edited by {self._editor_id!r} until "
                f"{self._editor_expiration_date:%Y-%m-%d %H:%M}; wait for that editor "
                "to unlock it or for the lock to expire."
            )

    def lock_edit(self, editor_id: str | None = None) -> None:
        """Lock the node for edition; with ``editor_id``, only that editor may write."""
        if editor_id:
            self._check_editor(editor_id)
            self._editor_id = editor_id
            self._editor_expiration_date = datetime.now() + EDITOR_LOCK_DURATION
        else:
            self._refresh_before_edit()
            self._editor_id = None
            self._editor_expiration_date = None
        self._edit_in_progress = True
        self._save()
        self._publish("edit_in_progress", True)

    def unlock_edit(self, editor_id: str | None = None) -> None:
        """Release the edition lock taken by ``lock_edit``."""
        if editor_id:
            self._check_editor(editor_id)
        self._unlock()

    def _unlock(self) -> None:
        was_locked = self._edit_in_progress
        self._edit_in_progress = False
        self._editor_id = None
        self._editor_expiration_date = None
        self._save()
        if was_locked:
            self._publish("edit_in_progress", False)

    def _publish(self, attribute: str, value: Any) -> None:
        bus.publish(
            Event(
                EventEntityType.DATA_NODE,
                EventOperation.UPDATE,
                self.id,
                attribute,
                value,
                {"config_id": self._config_id},
            )
        )

    # -- relations ----------------------------------------------------------------------

    def get_parents(self) -> dict[str, set[Any]]:
        """Return the scenarios, sequences and tasks this node belongs to."""
        from ..api import get_parents

        return get_parents(self)

    def get_label(self) -> str:
        owner = self._store.get(self._owner_id) if self._owner_id else None
        prefix = f"{owner.get_simple_label()} > " if owner is not None else ""
        return prefix + self.get_simple_label()

    def get_simple_label(self) -> str:
        return self.name or self._config_id

    def __getattr__(self, item: str) -> Any:
        properties = self.__dict__.get("_properties")
        if properties is not None and item in properties:
            return properties[item]
        raise AttributeError(
            f"{type(self).__name__} {self.__dict__.get('id')!r} has no attribute "
            f"or property {item!r}"
        )

    # -- persistence ----------------------------------------------------------------------

    def _to_doc(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "config_id": self._config_id,
            "storage_type": self._storage_type,
            "scope": self._scope.name,
            "owner_id": self._owner_id,
            "parent_ids": sorted(self._parent_ids),
            "properties": encode_mapping(self._properties),
            "validity_period": to_seconds(self._validity_period),
            "name": self._name,
            "last_edit_date": to_iso(self._last_edit_date),
            "edits": self._edits[self._archiving :],
            "archived_edits": self._archived_count + self._archiving,
            "edit_in_progress": self._edit_in_progress,
            "editor_id": self._editor_id,
            "editor_expiration_date": to_iso(self._editor_expiration_date),
            "version": self._version,
        }

    def _refresh_doc(self, doc: dict[str, Any]) -> None:
        # Only what changes after creation: edits and locks.
        self._last_edit_date = from_iso(doc["last_edit_date"])
        self._edits = list(doc["edits"])
        self._init_archive(doc.get("archived_edits", 0))
        self._edit_in_progress = doc["edit_in_progress"]
        self._editor_id = doc["editor_id"]
        self._editor_expiration_date = from_iso(doc["editor_expiration_date"])

    def _merge_stored(self, doc: dict[str, Any]) -> None:
        """Add the edits in ``doc``, this node's stored row, that this object lacks.

        The store calls this inside the transaction that writes the node, when
        another process may have written it since this object last read it: two
        kernels writing one GLOBAL node each saved their own history over the
        other's. Edits are only ever appended, so the union, in time order, is the
        history.
        """
        stored_archived = doc.get("archived_edits", 0)
        if stored_archived > self._archived_count:
            # Another kernel moved edits of its row, which this object may still
            # list, to the archive: take its row, and keep only the edits made
            # here since this object last wrote or read the row.
            unwritten = self._edits[self._written_edits :]
            self._edits = list(doc["edits"])
            self._init_archive(stored_archived)
            self._written_edits = len(self._edits)
            self._edits.extend(unwritten)
            self._last_edit_date = max(
                (
                    d
                    for d in (from_iso(doc["last_edit_date"]), self._last_edit_date)
                    if d
                ),
                default=None,
            )
            return
        # The row contains what this object last wrote or read, and the other
        # kernel's edits since. Equal edits are kept apart: each edit of that
        # earlier state counts for one equal edit of the row.
        known = collections.Counter(
            _edit_key(edit) for edit in self._edits[: self._written_edits]
        )
        theirs = []
        for edit in doc["edits"]:
            key = _edit_key(edit)
            if known[key]:
                known[key] -= 1
            else:
                theirs.append(edit)
        if not theirs:
            return
        # The row's edits, in time order, then the edits made here since: the
        # first _written_edits stay what the row contains, even if this write fails.
        # sorted() is stable: edits with one timestamp keep their order.
        stored = sorted(
            self._edits[: self._written_edits] + theirs,
            key=lambda edit: edit["timestamp"],
        )
        self._edits = stored + self._edits[self._written_edits :]
        self._written_edits = len(stored)
        stored_last = from_iso(doc["last_edit_date"])
        if stored_last is not None and (
            self._last_edit_date is None or stored_last > self._last_edit_date
        ):
            self._last_edit_date = stored_last

    def _load_doc(self, doc: dict[str, Any]) -> None:
        self._config_id = doc["config_id"]
        self._storage_type = doc["storage_type"]
        self._scope = Scope[doc["scope"]]
        self._owner_id = doc["owner_id"]
        self._parent_ids = set(doc["parent_ids"])
        self._properties = PersistedProperties(
            decode_mapping(doc["properties"]), self._properties_changed
        )
        self._validity_period = from_seconds(doc["validity_period"])
        self._name = doc.get("name")
        self._last_edit_date = from_iso(doc["last_edit_date"])
        self._edits = list(doc["edits"])
        self._init_archive(doc.get("archived_edits", 0))
        self._edit_in_progress = doc["edit_in_progress"]
        self._editor_id = doc["editor_id"]
        self._editor_expiration_date = from_iso(doc["editor_expiration_date"])
        self._version = doc.get("version", "")
        self._backend_cache = None

    @classmethod
    def _from_doc(cls, store: Store, doc: dict[str, Any]) -> DataNode:
        node = cls.__new__(cls)
        Entity.__init__(node, store)
        node.id = doc["id"]
        node._load_doc(doc)
        return node


def _edit_key(edit: dict[str, Any]) -> str:
    """Text that two equal edits share, whether read from JSON or built here."""
    return json.dumps(edit, sort_keys=True, default=str)
