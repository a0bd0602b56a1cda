"""Cycles: the period (day, week, month, quarter or year) a scenario belongs to."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..enums import Frequency
from ._base import Entity, from_iso, new_id, to_iso

if TYPE_CHECKING:
    from ..store import Store


def cycle_bounds(frequency: Frequency, date: datetime) -> tuple[datetime, datetime]:
    """Return the first and last instants of the ``frequency`` period holding ``date``.

    The end is one microsecond before the next period starts. Weeks start on Monday.
    """
    day = date.replace(hour=0, minute=0, second=0, microsecond=0)
    if frequency is Frequency.DAILY:
        start = day
        following = start + timedelta(days=1)
    elif frequency is Frequency.WEEKLY:
        start = day - timedelta(days=day.weekday())
        following = start + timedelta(days=7)
    elif frequency is Frequency.MONTHLY:
        start = day.replace(day=1)
        following = _add_months(start, 1)
    elif frequency is Frequency.QUARTERLY:
        start = day.replace(month=3 * ((day.month - 1) // 3) + 1, day=1)
        following = _add_months(start, 3)
    elif frequency is Frequency.YEARLY:
        start = day.replace(month=1, day=1)
        following = start.replace(year=start.year + 1)
    else:
        raise ValueError(f"Unknown frequency {frequency!r}")
    return start, following - timedelta(microseconds=1)


def _add_months(start: datetime, months: int) -> datetime:
    month_index = start.month - 1 + months
    return start.replace(
        year=start.year + month_index // 12, month=month_index % 12 + 1
    )


class Cycle(Entity):
    """A period of time that groups the scenarios created during it.

    Attributes
    ----------
    frequency : Frequency
    creation_date : datetime
    start_date, end_date : datetime
        First and last instants of the period.
    name : str
    """

    _kind = "cycle"
    _ID_PREFIX = "CYCLE_"

    def __init__(
        self,
        store: Store,
        *,
        frequency: Frequency,
        start_date: datetime,
        end_date: datetime,
        creation_date: datetime | None = None,
        name: str | None = None,
        properties: dict[str, Any] | None = None,
        id: str | None = None,
    ) -> None:
        super().__init__(store)
        self.id = id or new_id(self._ID_PREFIX, f"{frequency.name}_{start_date:%Y%m%d}")
        self._frequency = frequency
        self._start_date = start_date
        self._end_date = end_date
        self._creation_date = creation_date or datetime.now()
        self._name = name or _default_name(frequency, start_date)
        self._properties = dict(properties or {})

    @property
    def frequency(self) -> Frequency:
        return self._frequency

    @property
    def start_date(self) -> datetime:
        return self._start_date

    @property
    def end_date(self) -> datetime:
        return self._end_date

    @property
    def creation_date(self) -> datetime:
        return self._creation_date

    @property
    def name(self) -> str:
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        self._name = value
        self._save()

    @property
    def properties(self) -> dict[str, Any]:
        return self._properties

    def get_label(self) -> str:
        return self._name

    def get_simple_label(self) -> str:
        return self._name

    def _to_doc(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "frequency": self._frequency.name,
            "start_date": to_iso(self._start_date),
            "end_date": to_iso(self._end_date),
            "creation_date": to_iso(self._creation_date),
            "name": self._name,
            "properties": self._properties,
        }

    def _load_doc(self, doc: dict[str, Any]) -> None:
        self._frequency = Frequency[doc["frequency"]]
        self._start_date = from_iso(doc["start_date"])  # type: ignore[assignment]
        self._end_date = from_iso(doc["end_date"])  # type: ignore[assignment]
        self._creation_date = from_iso(doc["creation_date"])  # type: ignore[assignment]
        self._name = doc["name"]
        self._properties = doc.get("properties", {})

    @classmethod
    def _from_doc(cls, store: Store, doc: dict[str, Any]) -> Cycle:
        cycle = cls.__new__(cls)
        Entity.__init__(cycle, store)
        cycle.id = doc["id"]
        cycle._load_doc(doc)
        return cycle


def _default_name(frequency: Frequency, start: datetime) -> str:
    if frequency is Frequency.DAILY:
        return start.strftime("%A, %d. %B %Y")
    if frequency is Frequency.WEEKLY:
        return f"Week {start.isocalendar()[1]} {start.year}"
    if frequency is Frequency.MONTHLY:
        return start.strftime("%B %Y")
    if frequency is Frequency.QUARTERLY:
        return f"{start.year} Q{(start.month - 1) // 3 + 1}"
    return str(start.year)
