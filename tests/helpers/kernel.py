"""Run notebook code through a real IPython kernel started from the test interpreter.

Kernels are started from a kernelspec written into a temporary ``JUPYTER_DATA_DIR``
whose argv names ``sys.executable``, so they import the packages of the virtualenv
running pytest, never whatever ``python`` is first on ``PATH``. Config, runtime and
IPython folders are temporary too, so a developer's profile does not leak in.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty
from tempfile import TemporaryDirectory
from typing import Any, TypeVar

import nbformat
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager, KernelManager
from jupyter_core.utils import run_sync
from nbclient import NotebookClient
from nbformat import NotebookNode

from .processes import process_tree, terminate

KERNEL_NAME = "python3"
WIDGET_STATE_MIMETYPE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW_MIMETYPE = "application/vnd.jupyter.widget-view+json"
WIDGET_COMM_TARGET = "jupyter.widget"

KernelManagerT = TypeVar("KernelManagerT", KernelManager, AsyncKernelManager)

# Keeps IPython history in memory so that kernels write no sqlite file.
_KERNEL_EXTRA_ARGUMENTS = ["--HistoryManager.hist_file=:memory:"]


@dataclass(frozen=True)
class JupyterDirs:
    """Temporary Jupyter and IPython folders, with a kernelspec for this interpreter."""

    root: Path
    config: Path
    data: Path
    runtime: Path
    ipython: Path

    @classmethod
    def create(cls, root: Path) -> JupyterDirs:
        """Create the folders under ``root`` and write the ``python3`` kernelspec."""
        dirs = cls(
            root=root,
            config=root / "config",
            data=root / "data",
            runtime=root / "runtime",
            ipython=root / "ipython",
        )
        for path in (dirs.config, dirs.data, dirs.runtime, dirs.ipython):
            path.mkdir(parents=True, exist_ok=True)
        write_kernelspec(dirs.kernels)
        return dirs

    @property
    def kernels(self) -> Path:
        return self.data / "kernels"

    def environ(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Return a copy of ``os.environ`` that points Jupyter and IPython at these folders."""
        env = dict(os.environ)
        env.pop("JUPYTER_PATH", None)
        env.update(
            {
                "JUPYTER_CONFIG_DIR": str(self.config),
                "JUPYTER_DATA_DIR": str(self.data),
                "JUPYTER_RUNTIME_DIR": str(self.runtime),
                "IPYTHONDIR": str(self.ipython),
                "PYTHONUNBUFFERED": "1",
                # debugpy warns on stderr about frozen modules in every kernel otherwise.
                "PYDEVD_DISABLE_FILE_VALIDATION": "1",
            }
        )
        if extra:
            env.update(extra)
        return env

    def kernel_spec_manager(self) -> KernelSpecManager:
        """Return a manager that finds only the kernelspec written by :meth:`create`."""
        return KernelSpecManager(
            kernel_dirs=[str(self.kernels)], ensure_native_kernel=False
        )


def write_kernelspec(kernels_dir: Path, name: str = KERNEL_NAME) -> Path:
    """Write a kernelspec that starts ipykernel with ``sys.executable`` and return its folder."""
    spec_dir = kernels_dir / name
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
        "metadata": {"debugger": True},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1), encoding="utf-8")
    return spec_dir


def _new_kernel_manager(
    manager_class: type[KernelManagerT], dirs: JupyterDirs
) -> KernelManagerT:
    """Create a manager for the ``python3`` kernel that talks over Unix sockets.

    IPC transport opens no TCP port, and both the sockets and the connection file
    live in ``dirs.runtime``. A socket path must stay under about 100 bytes, so
    ``dirs`` should not be nested deeply.
    """
    name = f"kernel-{uuid.uuid4().hex[:12]}"
    return manager_class(
        kernel_name=KERNEL_NAME,
        kernel_spec_manager=dirs.kernel_spec_manager(),
        transport="ipc",
        ip=str(dirs.runtime / name),
        connection_file=str(dirs.runtime / f"{name}.json"),
    )


def _kernel_pid(km: KernelManager | AsyncKernelManager) -> int | None:
    provisioner = km.provisioner
    pid = getattr(provisioner, "pid", None)
    return pid if isinstance(pid, int) else None


# ---------------------------------------------------------------------------------
# Headless notebook execution with nbclient
# ---------------------------------------------------------------------------------


def make_notebook(cells: Iterable[str | NotebookNode]) -> NotebookNode:
    """Build a notebook from cell sources, where a string becomes a code cell.

    Cells made with ``nbformat.v4.new_markdown_cell`` and friends are added as they are.
    The notebook names the ``python3`` kernel so that JupyterLab starts it unasked.
    """
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {
        "name": KERNEL_NAME,
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    notebook.metadata["language_info"] = {"name": "python"}
    for cell in cells:
        if isinstance(cell, str):
            notebook.cells.append(nbformat.v4.new_code_cell(cell))
        else:
            notebook.cells.append(cell)
    return notebook


def execute_notebook(
    notebook: NotebookNode,
    cwd: Path,
    *,
    dirs: JupyterDirs | None = None,
    timeout: float = 60.0,
    startup_timeout: float = 60.0,
    allow_errors: bool = False,
) -> NotebookNode:
    """Execute ``notebook`` in place with nbclient and return it.

    ``timeout`` bounds each cell in seconds and ``startup_timeout`` bounds the kernel
    start. Widget state is stored in ``notebook.metadata.widgets``. Raises
    ``nbclient.exceptions.CellExecutionError`` on the first failing cell unless
    ``allow_errors`` is true. The kernel and every process it started are stopped
    before this returns.
    """
    with ExitStack() as stack:
        if dirs is None:
            dirs = JupyterDirs.create(
                Path(stack.enter_context(TemporaryDirectory(prefix="jupyter-")))
            )
        _execute_with_nbclient(
            notebook, cwd, dirs, timeout, startup_timeout, allow_errors
        )
    return notebook


def _execute_with_nbclient(
    notebook: NotebookNode,
    cwd: Path,
    dirs: JupyterDirs,
    timeout: float,
    startup_timeout: float,
    allow_errors: bool,
) -> None:
    km = _new_kernel_manager(AsyncKernelManager, dirs)
    client = NotebookClient(
        notebook,
        km=km,
        kernel_name=KERNEL_NAME,
        timeout=int(timeout),
        startup_timeout=int(startup_timeout),
        allow_errors=allow_errors,
        store_widget_state=True,
        extra_arguments=list(_KERNEL_EXTRA_ARGUMENTS),
        resources={"metadata": {"path": str(cwd)}},
    )
    try:
        client.execute(cwd=str(cwd), env=dirs.environ())
    finally:
        _shutdown_notebook_kernel(client, km)


def _shutdown_notebook_kernel(client: NotebookClient, km: AsyncKernelManager) -> None:
    pid = _kernel_pid(km) if km.has_kernel else None
    processes = process_tree(pid) if pid is not None else []

    async def shutdown() -> None:
        if client.kc is not None:
            client.kc.stop_channels()
            client.kc = None
        if km.has_kernel:
            await km.shutdown_kernel(now=False)

    try:
        run_sync(shutdown)()
    finally:
        terminate(processes, timeout=5.0)


def run_cells(
    cells: Iterable[str | NotebookNode],
    cwd: Path,
    *,
    dirs: JupyterDirs | None = None,
    timeout: float = 60.0,
    allow_errors: bool = False,
) -> NotebookNode:
    """Build a notebook from ``cells``, execute it in ``cwd`` and return the result."""
    return execute_notebook(
        make_notebook(cells), cwd, dirs=dirs, timeout=timeout, allow_errors=allow_errors
    )


def stored_widget_models(
    notebook: NotebookNode, model_name: str | None = None
) -> dict[str, dict[str, Any]]:
    """Return the widget models saved in the notebook metadata, keyed by model id.

    Each value has ``model_name``, ``model_module`` and ``state`` keys. Pass
    ``model_name`` (for example ``"IntProgressModel"``) to keep only that kind.
    """
    saved = notebook.metadata.get("widgets", {}).get(WIDGET_STATE_MIMETYPE, {})
    models: dict[str, dict[str, Any]] = saved.get("state", {})
    return {
        model_id: model
        for model_id, model in models.items()
        if model_name is None or model.get("model_name") == model_name
    }


def cell_stdout(cell: NotebookNode) -> str:
    """Return the stdout stream text of an executed code cell."""
    return "".join(
        output.get("text", "")
        for output in cell.get("outputs", [])
        if output.get("output_type") == "stream" and output.get("name") == "stdout"
    )


# ---------------------------------------------------------------------------------
# Interactive kernel sessions with jupyter_client
# ---------------------------------------------------------------------------------


@dataclass
class ExecutionResult:
    """The iopub messages and reply that one ``execute_request`` produced."""

    msg_id: str
    status: str = "unknown"
    execution_count: int | None = None
    outputs: list[NotebookNode] = field(default_factory=list)
    comm_messages: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)

    def _stream(self, name: str) -> str:
        return "".join(
            output["text"]
            for output in self.outputs
            if output["output_type"] == "stream" and output["name"] == name
        )

    @property
    def stdout(self) -> str:
        return self._stream("stdout")

    @property
    def stderr(self) -> str:
        return self._stream("stderr")

    @property
    def errors(self) -> list[NotebookNode]:
        return [output for output in self.outputs if output["output_type"] == "error"]

    @property
    def display_data(self) -> list[dict[str, Any]]:
        """The ``data`` bundles of display_data and execute_result outputs, in order."""
        return [
            dict(output["data"])
            for output in self.outputs
            if output["output_type"] in ("display_data", "execute_result")
        ]

    def check(self) -> ExecutionResult:
        """Raise ``AssertionError`` with the traceback if the code raised; return self."""
        if self.errors or self.status == "error":
            tracebacks = "\n".join(
                "\n".join(error["traceback"]) for error in self.errors
            )
            raise AssertionError(
                f"Kernel code failed with status {self.status}:\n{tracebacks}"
            )
        return self


class KernelSession:
    """A started kernel and a blocking client, with widget state tracked from comms.

    Every iopub message read by :meth:`execute` or :meth:`collect` updates
    :attr:`widget_states`, including messages sent by threads in the kernel after
    their cell finished.
    """

    def __init__(self, km: KernelManager, client: BlockingKernelClient) -> None:
        self.km = km
        self.client = client
        self.messages: list[dict[str, Any]] = []
        self.widget_states: dict[str, dict[str, Any]] = {}

    @property
    def pid(self) -> int | None:
        return _kernel_pid(self.km)

    def execute(self, code: str, timeout: float = 30.0) -> ExecutionResult:
        """Run ``code`` and collect its outputs until the kernel is idle again.

        Raises ``TimeoutError`` if the reply does not arrive within ``timeout`` seconds.
        Errors raised by the code are returned in :attr:`ExecutionResult.errors`.
        """
        msg_id = self.client.execute(code, allow_stdin=False, stop_on_error=False)
        result = ExecutionResult(msg_id=msg_id)
        deadline = time.monotonic() + timeout
        idle = False
        while not idle:
            message = self._next_iopub(deadline, code)
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            result.messages.append(message)
            msg_type = message["msg_type"]
            content = message["content"]
            if msg_type == "status":
                idle = content["execution_state"] == "idle"
            elif msg_type in ("stream", "display_data", "execute_result", "error"):
                result.outputs.append(nbformat.v4.output_from_msg(message))
            elif msg_type.startswith("comm_"):
                result.comm_messages.append(message)
        reply = self._shell_reply(msg_id, deadline, code)
        result.status = reply["content"]["status"]
        result.execution_count = reply["content"].get("execution_count")
        return result

    def collect(self, seconds: float) -> list[dict[str, Any]]:
        """Read iopub messages for ``seconds`` seconds and return them.

        Use this to receive widget updates that kernel threads send after their cell
        finished. The updates also land in :attr:`widget_states`.
        """
        deadline = time.monotonic() + seconds
        received = []
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                message = self.client.get_iopub_msg(timeout=remaining)
            except Empty:
                break
            self._record(message)
            received.append(message)
        return received

    def widgets(self, model_name: str) -> list[dict[str, Any]]:
        """Return the current state of every widget model named ``model_name``."""
        return [
            state
            for state in self.widget_states.values()
            if state.get("_model_name") == model_name
        ]

    def _next_iopub(self, deadline: float, code: str) -> dict[str, Any]:
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise Empty
            message: dict[str, Any] = self.client.get_iopub_msg(timeout=remaining)
        except Empty:
            raise TimeoutError(
                f"Kernel did not finish within the timeout running:\n{code}"
            ) from None
        self._record(message)
        return message

    def _shell_reply(self, msg_id: str, deadline: float, code: str) -> dict[str, Any]:
        while True:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise Empty
                reply: dict[str, Any] = self.client.get_shell_msg(timeout=remaining)
            except Empty:
                raise TimeoutError(
                    f"No execute_reply within the timeout for:\n{code}"
                ) from None
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply

    def _record(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        msg_type = message["msg_type"]
        content = message["content"]
        if msg_type == "comm_open" and content.get("target_name") == WIDGET_COMM_TARGET:
            self.widget_states[content["comm_id"]] = dict(
                content["data"].get("state", {})
            )
        elif msg_type == "comm_msg":
            data = content.get("data", {})
            state = self.widget_states.get(content["comm_id"])
            if state is not None and data.get("method") in ("update", "echo_update"):
                state.update(data.get("state", {}))
        elif msg_type == "comm_close":
            self.widget_states.pop(content["comm_id"], None)


@contextmanager
def kernel_session(
    cwd: Path,
    *,
    dirs: JupyterDirs | None = None,
    startup_timeout: float = 60.0,
    env: Mapping[str, str] | None = None,
) -> Iterator[KernelSession]:
    """Start a kernel in ``cwd``, yield a :class:`KernelSession`, then stop it.

    The kernel, and every process it started that is still running at exit, is stopped
    even when the body raises. ``env`` adds variables to the kernel environment.
    """
    with ExitStack() as stack:
        if dirs is None:
            dirs = JupyterDirs.create(
                Path(stack.enter_context(TemporaryDirectory(prefix="jupyter-")))
            )
        yield stack.enter_context(_started_kernel(cwd, dirs, startup_timeout, env))


@contextmanager
def _started_kernel(
    cwd: Path, dirs: JupyterDirs, startup_timeout: float, env: Mapping[str, str] | None
) -> Iterator[KernelSession]:
    km = _new_kernel_manager(KernelManager, dirs)
    km.start_kernel(
        cwd=str(cwd),
        env=dirs.environ(env),
        extra_arguments=list(_KERNEL_EXTRA_ARGUMENTS),
    )
    client = km.client()
    try:
        client.start_channels()
        client.wait_for_ready(timeout=startup_timeout)
        yield KernelSession(km, client)
    finally:
        pid = _kernel_pid(km)
        processes = process_tree(pid) if pid is not None else []
        try:
            client.stop_channels()
            km.shutdown_kernel(now=False)
        finally:
            terminate(processes, timeout=5.0)
