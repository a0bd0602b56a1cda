"""Run the job execution notebook headless and print what it did (``make demo``).

The notebook runs in a real kernel through nbclient, in ``notebooks/executed/``. The
executed notebook and an HTML export are written there, then the jobs and the scenario
results are read back from the notebook's store and printed.

Usage: ``python -m jupyter_scenarios.demo [NOTEBOOK] [--add-seconds S]``.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_NOTEBOOK = Path("notebooks") / "01_job_execution.ipynb"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", nargs="?", type=Path, default=DEFAULT_NOTEBOOK)
    parser.add_argument(
        "--add-seconds",
        type=float,
        default=float(os.environ.get("SCENARIOS_ADD_SECONDS", "10")),
        help="Seconds the tutorial's add task sleeps (default 10, as in the tutorial).",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=Path("notebooks") / "executed",
        help="Folder for the executed notebook, its HTML export and its store.",
    )
    parser.add_argument(
        "--cell-timeout",
        type=float,
        default=300.0,
        help="Seconds one cell may run before the run is stopped.",
    )
    args = parser.parse_args(argv)

    try:
        import nbformat
        from nbclient import NotebookClient
        from nbconvert import HTMLExporter
    except ImportError as error:
        print(
            f"The demo needs nbformat, nbclient and nbconvert ({error}); install them "
            "with pip install -e '.[test]' in the checkout, or run make demo.",
            file=sys.stderr,
        )
        return 2

    if not args.notebook.exists():
        print(f"Notebook {args.notebook} not found; run from the repository root.")
        return 2
    output_dir = args.output_dir.resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    store_folder = output_dir / ".scenarios"
    os.environ["SCENARIOS_ADD_SECONDS"] = f"{args.add_seconds:g}"
    os.environ["SCENARIOS_STORAGE"] = str(store_folder)

    notebook = nbformat.read(args.notebook, as_version=4)  # type: ignore[no-untyped-call]
    print(
        f"Running {args.notebook} in a kernel "
        f"(the add task sleeps {args.add_seconds:g} s) ..."
    )
    started = time.monotonic()
    client = NotebookClient(
        notebook,
        timeout=args.cell_timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(output_dir)}},
        config=_kernel_settings(),
    )
    failed = None
    try:
        client.execute()
    except Exception as error:  # noqa: BLE001 - still write and print what ran
        failed = error
    elapsed = time.monotonic() - started

    executed_path = output_dir / args.notebook.name
    nbformat.write(notebook, executed_path)  # type: ignore[no-untyped-call]
    exporter = HTMLExporter()  # type: ignore[no-untyped-call]
    html, _ = exporter.from_notebook_node(_without_widget_views(notebook))
    html_path = executed_path.with_suffix(".html")
    html_path.write_text(html, encoding="utf-8")

    _print_cells(notebook)
    if failed is not None:
        print(f"\nThe notebook failed after {elapsed:.1f} s: {failed}", file=sys.stderr)
        print(f"Executed notebook: {executed_path}", file=sys.stderr)
        return 1
    _print_store(store_folder)
    print(f"\nRan in {elapsed:.1f} s.")
    print(f"Executed notebook: {executed_path}")
    print(f"HTML export:       {html_path}")
    return 0


def _kernel_settings() -> Any:
    """Return the kernel manager settings: CurveZMQ encryption where available.

    ipykernel 7.4 warns at start that it runs over TCP without encryption, unless
    the manager gives it CurveZMQ keys. With "auto", jupyter_client 8.10 provides
    keys when the kernelspec declares support and pyzmq has CurveZMQ, and runs
    without them otherwise. NOTE: older jupyter_client versions lack the setting
    and log that they do not recognize it.
    """
    from traitlets.config import Config

    settings = Config()
    settings.KernelManager.transport_encryption = "auto"
    return settings


def _without_widget_views(notebook: Any) -> Any:
    """Return a copy whose widget outputs fall back to their final text and HTML.

    With the widget views left in, nbconvert's HTML loads a widget renderer from a
    public CDN and shows nothing offline. The HTML forms need no script.
    """
    static = copy.deepcopy(notebook)
    static.metadata.pop("widgets", None)
    for cell in static.cells:
        for output in cell.get("outputs", []):
            output.get("data", {}).pop(WIDGET_VIEW, None)
    return static


def _print_cells(notebook: object) -> None:
    print("\n== What the notebook printed ==")
    for index, cell in enumerate(notebook.cells):  # type: ignore[attr-defined]
        if cell.cell_type != "code":
            continue
        texts = []
        for output in cell.get("outputs", []):
            if output.output_type == "stream":
                texts.append(output.text)
            elif output.output_type == "error":
                texts.append(f"{output.ename}: {output.evalue}\n")
        if texts:
            label = f"[In {cell.get('execution_count') or index}]"
            indent = "\n" + " " * (len(label) + 1)
            print(f"{label} " + "".join(texts).rstrip().replace("\n", indent))


def _print_store(store_folder: Path) -> None:
    import jupyter_scenarios as tp
    from jupyter_scenarios import Config

    Config.configure_core(storage_folder=str(store_folder))
    try:
        jobs = tp.get_jobs()
        print("\n== Jobs ==")
        print(
            f"{'job':44} {'task':8} {'status':10} {'start':12} {'duration':>8}  worker"
        )
        for job in jobs:
            start = job.run_at.strftime("%H:%M:%S.%f")[:12] if job.run_at else "-"
            duration = job.execution_duration
            print(
                f"{job.id:44} {job.task_config_id:8} {job.status.name:10} {start:12} "
                f"{(f'{duration:.2f} s' if duration is not None else '-'):>8}  "
                f"{job.worker_pid or '-'}"
            )
        print("\n== Results ==")
        for scenario in tp.get_scenarios():
            output = scenario.data_nodes.get("my_output")
            value = (
                output.read() if output is not None and output.last_edit_date else None
            )
            submissions = [
                s for s in tp.get_submissions() if s.entity_id == scenario.id
            ]
            statuses = ", ".join(s.submission_status.name for s in submissions)
            print(f"{scenario.id}: my_output = {value}  (submissions: {statuses})")
    finally:
        tp.Orchestrator().stop(wait=False)


if __name__ == "__main__":
    sys.exit(main())
