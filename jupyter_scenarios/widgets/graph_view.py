"""A static drawing of a scenario's task graph, in SVG written here.

Columns are the topological generations of the graph of data nodes and tasks, read
left to right: data nodes without a producer first, then the tasks that read them,
their outputs, and so on. Tasks are boxes coloured by the status of their latest
job, data nodes are ellipses. Within a column, nodes are ordered by the mean row of
their predecessors, which keeps most edges short and few crossing.
"""

from __future__ import annotations

import dataclasses
import html
import logging
import threading
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING

import ipywidgets as widgets
import networkx as nx

from .. import _runtime, api
from ..entities import Job, Scenario, Sequence, Task
from ..enums import Status
from ..events import Event, EventEntityType, EventOperation
from ..graph import build_graph
from ._live import LiveWidgetMixin
from .refresh import assign, timer
from .render import STATUS_COLOURS, format_counts

if TYPE_CHECKING:
    from ..store import Store

logger = logging.getLogger(__name__)

#: Tasks drawn at most; larger graphs are summarised in one line instead.
MAX_DRAWN_TASKS = 300

# Geometry, in SVG pixels.
_COLUMN_WIDTH = 190
_ROW_HEIGHT = 62
_BOX_WIDTH = 150
_BOX_HEIGHT = 44
_ELLIPSE_RX = 72
_ELLIPSE_RY = 20
_MARGIN = 12
_LABEL_CHARS = 20

Drawable = Scenario | Sequence | Task
NodeKey = tuple[str, str]


@dataclasses.dataclass(frozen=True)
class _Node:
    key: NodeKey
    label: str
    x: float
    y: float


@dataclasses.dataclass(frozen=True)
class GraphLayout:
    """Positions of the nodes and edges of one entity's graph; no statuses."""

    title: str
    nodes: tuple[_Node, ...]
    edges: tuple[tuple[NodeKey, NodeKey], ...]
    width: float
    height: float
    task_count: int


def _tasks_of(entity: Drawable) -> list[Task]:
    if isinstance(entity, Task):
        return [entity]
    return list(entity.tasks.values())


def _label(text: str) -> str:
    return text if len(text) <= _LABEL_CHARS else text[: _LABEL_CHARS - 1] + "\u2026"


def layout_graph(entity: Drawable) -> GraphLayout:
    """Place the tasks and data nodes of ``entity`` in columns; reads the store."""
    tasks = _tasks_of(entity)
    graph = build_graph(tasks)
    if isinstance(entity, Scenario):
        for node in entity.additional_data_nodes.values():
            graph.add_node(("data", node.id))

    labels: dict[NodeKey, str] = {("task", task.id): task.config_id for task in tasks}
    for task in tasks:
        for node in task.data_nodes.values():
            labels[("data", node.id)] = node.get_simple_label()
    if isinstance(entity, Scenario):
        for node in entity.additional_data_nodes.values():
            labels[("data", node.id)] = node.get_simple_label()

    columns = [list(generation) for generation in nx.topological_generations(graph)]
    rows: dict[NodeKey, float] = {}
    for column in columns:
        column.sort(
            key=lambda key: (_mean_row(graph, key, rows), labels.get(key, key[1]))
        )
        for index, key in enumerate(column):
            rows[key] = index

    tallest = max((len(column) for column in columns), default=1)
    height = 2 * _MARGIN + tallest * _ROW_HEIGHT
    nodes = []
    for column_index, column in enumerate(columns):
        top = (tallest - len(column)) * _ROW_HEIGHT / 2
        for row_index, key in enumerate(column):
            nodes.append(
                _Node(
                    key=key,
                    label=labels.get(key, key[1]),
                    x=_MARGIN + column_index * _COLUMN_WIDTH + _BOX_WIDTH / 2,
                    y=_MARGIN + top + row_index * _ROW_HEIGHT + _ROW_HEIGHT / 2,
                )
            )
    width = (
        2 * _MARGIN
        + max(1, len(columns)) * _COLUMN_WIDTH
        - (_COLUMN_WIDTH - _BOX_WIDTH)
    )
    return GraphLayout(
        title=entity.get_simple_label(),
        nodes=tuple(nodes),
        edges=tuple(graph.edges()),
        width=width,
        height=height,
        task_count=len(tasks),
    )


def _mean_row(graph: nx.DiGraph, key: NodeKey, rows: Mapping[NodeKey, float]) -> float:
    placed = [rows[p] for p in graph.predecessors(key) if p in rows]
    return sum(placed) / len(placed) if placed else float("inf")


def render_svg(layout: GraphLayout, statuses: Mapping[str, Status | None]) -> str:
    """Return the SVG drawing of ``layout`` with tasks coloured by ``statuses``.

    ``statuses`` maps task ids to the status of their latest job (None: never ran).
    """
    if layout.task_count > MAX_DRAWN_TASKS:
        counts: dict[Status, int] = {}
        for status in statuses.values():
            if status is not None:
                counts[status] = counts.get(status, 0) + 1
        return (
            f"<p>{html.escape(layout.title)}: {layout.task_count:,} tasks, more than "
            f"the {MAX_DRAWN_TASKS} this view draws. Latest jobs: "
            f"{html.escape(format_counts(counts))}.</p>"
        )

    # Marker ids are global to the page, so each drawing gets its own.
    marker = f"arrow-{uuid.uuid4().hex[:8]}"
    positions = {node.key: node for node in layout.nodes}
    width, height = f"{layout.width:.0f}", f"{layout.height:.0f}"
    opening = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">'
    )
    arrow = (
        f'<defs><marker id="{marker}" viewBox="0 0 10 10" refX="10" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        '<path d="M 0 0 L 10 5 L 0 10 z" fill="#616161"/></marker></defs>'
    )
    parts = [opening, f"<title>{html.escape(layout.title)}</title>", arrow]
    for source, target in layout.edges:
        parts.append(_edge(positions[source], positions[target], marker))
    for node in layout.nodes:
        if node.key[0] == "task":
            parts.append(_task_box(node, statuses.get(node.key[1])))
        else:
            parts.append(_data_ellipse(node))
    parts.append("</svg>")
    return "".join(parts)


def _half_width(node: _Node) -> float:
    return _BOX_WIDTH / 2 if node.key[0] == "task" else _ELLIPSE_RX


def _edge(source: _Node, target: _Node, marker: str) -> str:
    x1 = source.x + _half_width(source)
    x2 = target.x - _half_width(target)
    middle = (x1 + x2) / 2
    return (
        f'<path d="M {x1:.1f} {source.y:.1f} C {middle:.1f} {source.y:.1f} '
        f'{middle:.1f} {target.y:.1f} {x2:.1f} {target.y:.1f}" fill="none" '
        f'stroke="#9e9e9e" stroke-width="1.2" marker-end="url(#{marker})"/>'
    )


def _task_box(node: _Node, status: Status | None) -> str:
    name = status.name if status is not None else "NOT RUN"
    colour = STATUS_COLOURS.get(name, "#9e9e9e")
    left = node.x - _BOX_WIDTH / 2
    top = node.y - _BOX_HEIGHT / 2
    return (
        f'<g class="task" data-status="{name}"><title>task {html.escape(node.label)}'
        f" ({html.escape(node.key[1])}): {name}</title>"
        f'<rect x="{left:.1f}" y="{top:.1f}" width="{_BOX_WIDTH}" '
        f'height="{_BOX_HEIGHT}" rx="4" fill="{colour}" fill-opacity="0.15" '
        f'stroke="{colour}" stroke-width="2"/>'
        f'<text x="{node.x:.1f}" y="{node.y - 3:.1f}" text-anchor="middle" '
        f'font-weight="bold">{html.escape(_label(node.label))}</text>'
        f'<text x="{node.x:.1f}" y="{node.y + 13:.1f}" text-anchor="middle" '
        f'font-size="10" fill="{colour}">{name}</text></g>'
    )


def _data_ellipse(node: _Node) -> str:
    return (
        f'<g class="data-node"><title>data node {html.escape(node.label)} '
        f"({html.escape(node.key[1])})</title>"
        f'<ellipse cx="{node.x:.1f}" cy="{node.y:.1f}" rx="{_ELLIPSE_RX}" '
        f'ry="{_ELLIPSE_RY}" fill="#f5f5f5" stroke="#9e9e9e" stroke-width="1.2"/>'
        f'<text x="{node.x:.1f}" y="{node.y + 4:.1f}" text-anchor="middle">'
        f"{html.escape(_label(node.label))}</text></g>"
    )


def graph_html(
    entity: Drawable, *, latest_jobs: Mapping[str, Job | None] | None = None
) -> str:
    """Draw the task graph of a scenario, sequence or task as HTML with inline SVG.

    Parameters
    ----------
    entity
        The scenario, sequence or task to draw.
    latest_jobs
        The latest job of each task, by task id. By default each task's
        ``jupyter_scenarios.get_latest_job(task)``.

    Returns
    -------
    str
        A ``<div>`` holding one ``<svg>`` element; graphs of more than
        ``MAX_DRAWN_TASKS`` tasks get a one-line summary instead.
    """
    layout = layout_graph(entity)
    if latest_jobs is None:
        latest_jobs = {task.id: api.get_latest_job(task) for task in _tasks_of(entity)}
    return _wrap(render_svg(layout, _statuses(latest_jobs)))


def _statuses(latest_jobs: Mapping[str, Job | None]) -> dict[str, Status | None]:
    return {
        task_id: job.status if job is not None else None
        for task_id, job in latest_jobs.items()
    }


def _wrap(svg: str) -> str:
    return f'<div class="jupyter-scenarios-graph" style="overflow-x:auto">{svg}</div>'


class GraphView(LiveWidgetMixin, widgets.HTML):  # type: ignore[misc]
    """The task graph of a scenario as a live HTML widget.

    Task colours follow the status of each task's latest job: the view redraws when
    a job of one of its tasks is created or changes status. The layout is computed
    once; create a new view after changing the scenario's tasks.

    Parameters
    ----------
    entity
        The scenario, sequence or task to draw.
    """

    def __init__(self, entity: Drawable) -> None:
        tasks = _tasks_of(entity)
        self.entity = entity
        self._layout = layout_graph(entity)
        self._task_ids = {task.id for task in tasks}
        self._task_config_ids = {task.config_id for task in tasks}
        # The latest job of each task, by task id; guarded by the redraw lock.
        self._latest: dict[str, Job | None] = {
            task.id: api.get_latest_job(task) for task in tasks
        }
        # Looked up from the timer thread without going through the public API,
        # which could start the runtime from there.
        self._store: Store = _runtime.store()
        # Guards _new_job_ids. Taken by the publishing thread, which appends, and by
        # the redrawing thread, which takes the list.
        self._new_ids_lock = threading.Lock()
        self._new_job_ids: list[str] = []
        super().__init__()
        self._init_live([self.layout, self.style])
        # Follow events before the first drawing, so that no change falls between.
        timer.register(self)
        self._redraw()

    def _render(self) -> str:
        return _wrap(render_svg(self._layout, _statuses(self._latest)))

    # -- Refreshable ---------------------------------------------------------------------

    def _routing_key(self) -> str | None:
        return None

    def _accepts_event(self, event: Event) -> bool:
        if event.entity_type is not EventEntityType.JOB:
            return False
        if event.metadata.get("task_config_id") not in self._task_config_ids:
            return False
        if event.operation is EventOperation.CREATION:
            with self._new_ids_lock:
                self._new_job_ids.append(event.entity_id)
        return True

    def _is_live(self) -> bool:
        return not self._closed

    def _needs_clock(self) -> bool:
        return False

    def _redraw(self) -> None:
        with self._redraw_lock:
            if self._closed:
                return
            self.redraws += 1
            with self._new_ids_lock:
                new_ids, self._new_job_ids = self._new_job_ids, []
            for job_id in new_ids:
                self._consider(job_id)
            assign(self, value=self._render())

    def _consider(self, job_id: str) -> None:
        if self._store.closed:
            return
        job = self._store.get(job_id)
        if not isinstance(job, Job) or job.task_id not in self._task_ids:
            return
        current = self._latest.get(job.task_id)
        if current is None or job.creation_date >= current.creation_date:
            self._latest[job.task_id] = job

    def _text_repr(self) -> str:
        with self._redraw_lock:
            statuses = _statuses(self._latest)
        lines = [f"Task graph of {self._layout.title}:"]
        for node in self._layout.nodes:
            if node.key[0] == "task":
                status = statuses.get(node.key[1])
                lines.append(f"  {node.label}: {status.name if status else 'NOT RUN'}")
        return "\n".join(lines)

    def _html_repr(self) -> str:
        with self._redraw_lock:
            return self._render()

    def __repr__(self) -> str:
        return f"GraphView({self._layout.title!r})"
