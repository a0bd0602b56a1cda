"""``ReasonCollection``: the result of the ``is_*`` checks, true when nothing is in the way."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .entities.data_node import DataNode


class ReasonCollection:
    """Reasons that keep an action from being taken; true when there are none.

    ``reasons`` maps each entity id to a sentence such as "my_input is not
    written."; ``str()`` joins them.
    """

    def __init__(self) -> None:
        self.reasons: dict[str, str] = {}

    def __bool__(self) -> bool:
        return not self.reasons

    def __str__(self) -> str:
        return " ".join(self.reasons.values())

    def __repr__(self) -> str:
        return f"ReasonCollection({self.reasons!r})"


def unready_inputs(nodes: Iterable[DataNode]) -> ReasonCollection:
    """Return a reason for each of ``nodes`` that a task cannot read now."""
    result = ReasonCollection()
    for node in sorted(nodes, key=lambda node: node.id):
        if node.last_edit_date is None:
            result.reasons[node.id] = f"{node.config_id} is not written."
        elif node.edit_in_progress:
            result.reasons[node.id] = f"{node.config_id} is being edited."
    return result
