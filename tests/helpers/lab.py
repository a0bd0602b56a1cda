"""Drive JupyterLab in Debian's Chromium through the Playwright sync API.

:class:`LabServer` runs ``python -m jupyterlab`` on 127.0.0.1 with temporary Jupyter
folders and no outside traffic. :func:`open_notebook` opens one notebook in a fresh
browser context, aborts every request that is not addressed to 127.0.0.1, and waits
until the notebook's kernel is connected and idle.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import nbformat
from nbformat import NotebookNode

from .kernel import JupyterDirs
from .processes import describe, process_tree, terminate, wait_for_exit

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Playwright, Route, WebSocketRoute

CHROMIUM_PATH = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
    # Any host name other than the loopback address fails to resolve, so even traffic
    # that page routing cannot see (browser services) stays on this machine.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
LOCAL_HOST = "127.0.0.1"

# urllib must not send requests for 127.0.0.1 to a proxy named in the environment.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def launch_chromium(playwright: Playwright) -> Browser:
    """Launch headless Chromium from ``CHROMIUM_PATH``, so Playwright downloads no browser."""
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM_PATH),
        headless=True,
        args=CHROMIUM_ARGS,
        timeout=60_000,
    )


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCAL_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class LabServer:
    """A JupyterLab server started by :meth:`start` and stopped by :meth:`stop`."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        root_dir: Path,
        dirs: JupyterDirs,
        port: int,
        token: str,
        log_path: Path,
    ) -> None:
        self.process = process
        self.root_dir = root_dir
        self.dirs = dirs
        self.port = port
        self.token = token
        self.log_path = log_path

    @property
    def base_url(self) -> str:
        return f"http://{LOCAL_HOST}:{self.port}"

    @classmethod
    def start(cls, work_dir: Path, *, startup_timeout: float = 90.0) -> LabServer:
        """Start JupyterLab with its root, config and data folders under ``work_dir``.

        Raises ``RuntimeError`` with the end of the server log if the server exits or
        ``/api/status`` does not return 200 within ``startup_timeout`` seconds.
        """
        root_dir = work_dir / "root"
        root_dir.mkdir(parents=True, exist_ok=True)
        dirs = JupyterDirs.create(work_dir / "jupyter")
        _write_page_config(dirs.config)
        _write_user_settings(work_dir / "lab-settings")
        port = free_port()
        token = secrets.token_hex(16)
        log_path = work_dir / "jupyterlab.log"
        command = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            f"--ServerApp.ip={LOCAL_HOST}",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={root_dir}",
            f"--IdentityProvider.token={token}",
            "--ServerApp.allow_root=True",
            "--ServerApp.terminals_enabled=False",
            f"--LabApp.user_settings_dir={work_dir / 'lab-settings'}",
            f"--LabApp.workspaces_dir={work_dir / 'lab-workspaces'}",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
            "--LabApp.expose_app_in_browser=True",
        ]
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command,
                cwd=root_dir,
                env=dirs.environ(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        server = cls(process, root_dir, dirs, port, token, log_path)
        try:
            server._wait_until_ready(startup_timeout)
        except BaseException:
            server.stop()
            raise
        return server

    def _wait_until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"JupyterLab exited with code {self.process.returncode} before it was "
                    f"ready. End of {self.log_path}:\n{self.log_tail()}"
                )
            try:
                self.api("GET", "/api/status", timeout=2.0)
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.2)
        raise RuntimeError(
            f"JupyterLab did not answer /api/status within {timeout:.0f} s. "
            f"End of {self.log_path}:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def api(
        self, method: str, path: str, body: Any = None, *, timeout: float = 10.0
    ) -> Any:
        """Send a REST request with the token and return the decoded JSON (or None)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base_url + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"token {self.token}",
                "Content-Type": "application/json",
            },
        )
        with _HTTP.open(request, timeout=timeout) as response:
            payload = response.read()
        return json.loads(payload) if payload else None

    def add_notebook(self, name: str, notebook: NotebookNode | Path) -> str:
        """Write a notebook object, or copy a notebook file, into the server root.

        Returns the path relative to the root, as the JupyterLab URLs and API use it.
        """
        target = self.root_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(notebook, Path):
            shutil.copyfile(notebook, target)
        else:
            nbformat.write(notebook, target)
        return target.relative_to(self.root_dir).as_posix()

    def notebook_url(self, path: str, workspace: str) -> str:
        """Return the URL that opens ``path`` in its own workspace, with the token."""
        return (
            f"{self.base_url}/lab/workspaces/{quote(workspace)}/tree/{quote(path)}"
            f"?token={self.token}"
        )

    def delete_sessions(self, path: str) -> None:
        """Delete every session of ``path``, which shuts its kernel down."""
        for session in self.api("GET", "/api/sessions"):
            if session.get("path") == path:
                self.api("DELETE", f"/api/sessions/{session['id']}")

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the server by its PID, then any kernel or other child it left."""
        children = process_tree(self.process.pid)[1:]
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        leftovers = wait_for_exit(children, timeout=5.0)
        if leftovers:
            print(
                "JupyterLab left processes after it stopped; terminating "
                + ", ".join(describe(p) for p in leftovers)
            )
            terminate(leftovers)


def _write_page_config(config_dir: Path) -> None:
    # Without this, every page load makes the server check whether a JupyterLab build is needed.
    labconfig = config_dir / "labconfig"
    labconfig.mkdir(parents=True, exist_ok=True)
    page_config = {"buildCheck": False, "buildAvailable": False}
    (labconfig / "page_config.json").write_text(
        json.dumps(page_config), encoding="utf-8"
    )


def _write_user_settings(settings_dir: Path) -> None:
    # Without this, JupyterLab 4 shows a toast asking whether to fetch Jupyter news,
    # which covers part of every screenshot.
    notification = settings_dir / "@jupyterlab" / "apputils-extension"
    notification.mkdir(parents=True, exist_ok=True)
    settings = {"fetchNews": "false", "checkForUpdates": False}
    (notification / "notification.jupyterlab-settings").write_text(
        json.dumps(settings), encoding="utf-8"
    )


# JavaScript run in the page. Each snippet is a function of the notebook path and
# finds the notebook panel through ``window.jupyterapp`` (``expose_app_in_browser``).
_FIND_PANEL = """
const findPanel = (path) => {
  const app = window.jupyterapp;
  if (!app || !app.shell) return null;
  for (const widget of app.shell.widgets('main')) {
    if (widget.context && widget.context.path === path && widget.sessionContext) {
      return widget;
    }
  }
  return null;
};
"""

_KERNEL_READY_JS = f"""(path) => {{
  {_FIND_PANEL}
  const panel = findPanel(path);
  if (!panel || !panel.context.isReady || !panel.sessionContext.isReady) return false;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  return Boolean(kernel) && kernel.connectionStatus === 'connected'
    && kernel.status === 'idle';
}}"""

_KERNEL_STATUS_JS = f"""(path) => {{
  {_FIND_PANEL}
  const panel = findPanel(path);
  const kernel = panel && panel.sessionContext.session && panel.sessionContext.session.kernel;
  return kernel ? kernel.status : 'no kernel';
}}"""

# The promise returned by commands.execute settles only after the last cell finished,
# so it is deliberately not awaited: tests watch the page while cells still run.
_RUN_ALL_JS = f"""(path) => {{
  {_FIND_PANEL}
  const panel = findPanel(path);
  if (!panel) return false;
  window.jupyterapp.shell.activateById(panel.id);
  void window.jupyterapp.commands.execute('notebook:run-all-cells');
  return true;
}}"""

_EXECUTION_COUNTS_JS = f"""(path) => {{
  {_FIND_PANEL}
  const panel = findPanel(path);
  if (!panel) return [];
  return panel.content.widgets
    .filter((cell) => cell.model.type === 'code')
    .map((cell) => cell.model.executionCount);
}}"""


class LabNotebookPage:
    """One notebook open in JupyterLab, with helpers to run it and read its widgets."""

    def __init__(
        self, page: Page, server: LabServer, path: str, artifacts_dir: Path
    ) -> None:
        self.page = page
        self.server = server
        self.path = path
        self.artifacts_dir = artifacts_dir
        self.blocked_urls: list[str] = []

    def wait_for_kernel_idle(self, timeout: float = 60.0) -> None:
        """Wait until the notebook's kernel is connected and idle.

        The toolbar can read idle before a kernel exists, so this checks the session's
        kernel object itself.
        """
        self.page.wait_for_function(
            _KERNEL_READY_JS, arg=self.path, timeout=timeout * 1000
        )

    def kernel_status(self) -> str:
        """Return the status of the page's kernel model: idle, busy, starting, and so on."""
        status: str = self.page.evaluate(_KERNEL_STATUS_JS, self.path)
        return status

    def execution_counts(self) -> list[int | None]:
        """Return each code cell's execution count, which is None while queued or not run."""
        counts: list[int | None] = self.page.evaluate(_EXECUTION_COUNTS_JS, self.path)
        return counts

    def run_all(self, start_timeout: float = 30.0) -> None:
        """Start Run All Cells without waiting for the cells to finish.

        Returns once the kernel is busy or a cell has an execution count, and raises
        ``AssertionError`` if neither happens within ``start_timeout`` seconds.
        """
        if not self.page.evaluate(_RUN_ALL_JS, self.path):
            raise AssertionError(f"Notebook {self.path} is not open in JupyterLab")
        deadline = time.monotonic() + start_timeout
        while time.monotonic() < deadline:
            if self.kernel_status() == "busy" or any(
                count is not None for count in self.execution_counts()
            ):
                return
            time.sleep(0.05)
        raise AssertionError(
            f"Run All started no cell of {self.path} in {start_timeout} s"
        )

    def wait_for_all_cells(self, timeout: float = 120.0) -> None:
        """Wait until every code cell has an execution count and the kernel is idle."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            counts = self.execution_counts()
            if (
                counts
                and all(c is not None for c in counts)
                and self.kernel_status() == "idle"
            ):
                return
            time.sleep(0.1)
        raise TimeoutError(
            f"Cells of {self.path} did not all finish within {timeout} s. "
            f"Execution counts: {self.execution_counts()}"
        )

    def progress_widths(self) -> list[float]:
        """Return each progress bar's fill in percent, in page order.

        ipywidgets 8 exposes the value only as the inline ``width`` style of
        ``.widget-hprogress .progress-bar``. A bar without one reads as NaN.
        """
        widths: list[str] = self.page.eval_on_selector_all(
            ".widget-hprogress .progress-bar",
            "bars => bars.map((bar) => bar.style.width)",
        )
        return [_parse_percent(width) for width in widths]

    def texts(self, selector: str) -> list[str]:
        """Return the rendered text of every element matching ``selector``."""
        texts: list[str] = self.page.eval_on_selector_all(
            selector, "elements => elements.map((element) => element.innerText)"
        )
        return texts

    def widget_output_texts(self) -> list[str]:
        """Return the text shown by each ipywidgets ``Output`` widget."""
        return self.texts(".widget-output")

    def screenshot(self, name: str) -> Path:
        """Save a full-page PNG named ``name`` in the test's artifacts folder."""
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        path = self.artifacts_dir / f"{_safe_name(name)}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


def _parse_percent(width: str) -> float:
    match = re.fullmatch(r"\s*([0-9.]+)%\s*", width)
    return float(match.group(1)) if match else math.nan


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "unnamed"


def _is_local(url: str) -> bool:
    return urlsplit(url).hostname == LOCAL_HOST


@contextmanager
def open_notebook(
    browser: Browser,
    server: LabServer,
    path: str,
    *,
    artifacts_dir: Path,
    ready_timeout: float = 90.0,
) -> Iterator[LabNotebookPage]:
    """Open ``path`` in a fresh browser context and wait for its kernel to be idle.

    Uses a new workspace so that JupyterLab restores no other tab. On exit the
    browser context is closed and the notebook's sessions are deleted, which stops
    its kernel.
    """
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        notebook_page = LabNotebookPage(page, server, path, artifacts_dir)

        def route_request(route: Route) -> None:
            if _is_local(route.request.url):
                route.continue_()
            else:
                notebook_page.blocked_urls.append(route.request.url)
                route.abort()

        def route_websocket(websocket: WebSocketRoute) -> None:
            notebook_page.blocked_urls.append(websocket.url)
            websocket.close(code=1008, reason="only 127.0.0.1 is reachable in tests")

        context.route("**/*", route_request)
        context.route_web_socket(lambda url: not _is_local(url), route_websocket)
        page.set_default_timeout(30_000)
        page.goto(server.notebook_url(path, f"test-{uuid.uuid4().hex[:12]}"))
        notebook_page.wait_for_kernel_idle(ready_timeout)
        yield notebook_page
    finally:
        context.close()
        server.delete_sessions(path)
