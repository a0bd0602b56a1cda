"""Write the teaching notebooks 02 to 08 from the cell sources below.

Run ``python notebooks/_build.py`` from the repository root after editing a cell here;
the notebooks are written without outputs, with stable cell ids, so that a rebuild
without changes leaves git clean. Notebook 01 is edited by hand and is not built here.

Every notebook follows the same plan: a title cell that lists what the reader will do,
an imports cell that loads the magics, a ``parameters`` cell whose environment
variables shorten sleeps and pick the storage folder for headless runs, then sections
of prose and code, and a last ``%wait`` cell that stores the widgets' final state.
"""

from __future__ import annotations

import hashlib
import sys
import textwrap
from pathlib import Path

import nbformat

NOTEBOOKS_DIR = Path(__file__).resolve().parent

KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}

Cell = tuple[str, str, list[str]]


def md(text: str) -> Cell:
    return ("markdown", textwrap.dedent(text).strip("\n"), [])


def code(text: str, *tags: str) -> Cell:
    return ("code", textwrap.dedent(text).strip("\n"), list(tags))


def build_notebook(name: str, cells: list[Cell]) -> nbformat.NotebookNode:
    """Return a notebook of ``cells`` whose cell ids derive from ``name`` and position."""
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = dict(KERNELSPEC)
    notebook.metadata["language_info"] = {"name": "python"}
    for index, (kind, source, tags) in enumerate(cells):
        if kind == "markdown":
            cell = nbformat.v4.new_markdown_cell(source)
        else:
            cell = nbformat.v4.new_code_cell(source)
        if tags:
            cell.metadata["tags"] = tags
        cell.id = hashlib.sha1(f"{name}:{index}".encode()).hexdigest()[:8]
        notebook.cells.append(cell)
    nbformat.validate(notebook)
    return notebook


def imports(
    standard: tuple[str, ...] = (),
    third_party: tuple[str, ...] = (),
    names: tuple[str, ...] = ("Config",),
) -> str:
    """Return the imports cell, grouped and ordered as isort does.

    ``standard`` and ``third_party`` are whole import lines; ``os`` is always imported
    and ``names`` are imported from ``jupyter_scenarios``.
    """
    groups = []
    for lines in ({"import os", *standard}, set(third_party)):
        plain = sorted(line for line in lines if line.startswith("import "))
        from_lines = sorted(line for line in lines if line.startswith("from "))
        if plain or from_lines:
            groups.append([*plain, *from_lines])
    groups.append(
        [
            "import jupyter_scenarios as tp",
            f"from jupyter_scenarios import {', '.join(sorted(names))}",
        ]
    )
    groups.append(["%load_ext jupyter_scenarios"])
    return "\n\n".join("\n".join(group) for group in groups)


STORAGE_LINES = """
Config.configure_core(storage_folder=os.environ.get("SCENARIOS_STORAGE", ".scenarios"))
tp.clean_all_entities()  # start this walkthrough from an empty store
"""


def parameters(text: str = "") -> Cell:
    """Return the cell tagged ``parameters``: ``text``, then the storage settings."""
    source = textwrap.dedent(text).strip("\n")
    return code(f"{source}\n{STORAGE_LINES}" if source else STORAGE_LINES, "parameters")


FINAL_WAIT_TEXT = """
The last cell waits for every submission and refreshes every widget, so that a headless
run stores their final state in the notebook.
"""


# ---------------------------------------------------------------------------------
# 02 · Data nodes
# ---------------------------------------------------------------------------------

DATA_NODES = [
    md(
        """
        # 02 · Data nodes and storage types

        A data node is a named value that tasks read and write. Its contents live
        outside the kernel, in a file or wherever its storage type puts them. Its
        metadata (when it was edited and by whom, whether someone holds it locked) lives
        in the store, beside the scenarios. That is why a data node survives a kernel
        restart, and why worker processes can read it.

        You will:

        1. declare data nodes of every storage type: `pickle` (the default), `json`,
           `csv`, `excel`, `parquet`, `generic` and `in_memory`;
        2. write, read and append, and follow each data node's edit history;
        3. see what reading a data node that was never written does;
        4. lock a data node for edition;
        5. see why `in_memory` data nodes work only in development mode.
        """
    ),
    code(
        imports(
            standard=("import shutil", "from pathlib import Path"),
            third_party=("import pandas as pd",),
        )
    ),
    md(
        """
        No task here sleeps, so the parameters only pick the storage folder.
        """
    ),
    parameters(),
    md(
        """
        The csv, excel, json and parquet files of this notebook go to `example_data/`
        beside it. The next cell removes the files of an earlier run: a file that
        already exists when its data node is created counts as written data, which would
        spoil the "never written" example below.
        """
    ),
    code(
        """
        DATA = Path("example_data")
        shutil.rmtree(DATA, ignore_errors=True)
        DATA.mkdir()
        """
    ),
    md(
        """
        ## Declaring data nodes with magics

        `%datanode` declares a data node. `--storage` picks the storage type and
        `--path` the file; without a path, the file goes to the storage folder and is
        named after the data node's id. In the cell form, the cell body is a Python
        expression that gives the default data, which is handy for a dict or a list.
        Without `--storage`, the data node is pickled.
        """
    ),
    code(
        """
        %%datanode prices
        {"apple": 1.20, "pear": 0.80, "plum": 2.50}
        """
    ),
    code(
        """
        %datanode sales --storage csv --path example_data/sales.csv
        %datanode summary --storage json --path example_data/summary.json
        """
    ),
    md(
        """
        ## Declaring data nodes with the Python API

        Each storage type has its own `Config.configure_*_data_node` function, whose
        keyword arguments are that type's settings. `Config.configure_data_node(id,
        storage_type=..., **properties)` does the same with one function.

        - `excel` and `parquet` store pandas DataFrames (they need pandas, plus openpyxl
          or pyarrow). `sheet_name` picks the sheet of the workbook.
        - `generic` calls your own functions: `read_fct(*read_fct_args)` returns the
          data and `write_fct(data, *write_fct_args)` stores it. Here they keep a list
          of lines in a text file.
        - `in_memory` keeps the value in a dict of the kernel process.
        """
    ),
    code(
        """
        report_cfg = Config.configure_excel_data_node(
            "report", default_path="example_data/report.xlsx", sheet_name="revenue"
        )
        revenue_cfg = Config.configure_parquet_data_node(
            "revenue", default_path="example_data/revenue.parquet"
        )

        NOTES = DATA / "notes.txt"


        def read_notes(path):
            file = Path(path)
            return file.read_text().splitlines() if file.exists() else []


        def write_notes(lines, path):
            Path(path).write_text("".join(f"{line}\\n" for line in lines))


        notes_cfg = Config.configure_generic_data_node(
            "notes",
            read_fct=read_notes,
            write_fct=write_notes,
            read_fct_args=[str(NOTES)],
            write_fct_args=[str(NOTES)],
        )
        scratch_cfg = Config.configure_in_memory_data_node("scratch", default_data=[])
        """
    ),
    md(
        """
        ## A scenario that uses them

        Two tasks compute the revenue of each product from the sales and the prices,
        then summarize it. `%%task` runs the function definition in the cell and
        declares the task, with its inputs in the order of the function's arguments.
        """
    ),
    code(
        """
        %%task revenue_by_product --inputs sales prices --outputs revenue
        def revenue_by_product(sales, prices):
            table = sales.assign(price=sales["product"].map(prices))
            table["revenue"] = table["quantity"] * table["price"]
            return table.groupby("product", as_index=False)["revenue"].sum()
        """
    ),
    code(
        """
        %%task summarize --inputs revenue --outputs summary
        def summarize(revenue):
            best = revenue.loc[revenue["revenue"].idxmax(), "product"]
            return {"total": round(float(revenue["revenue"].sum()), 2), "best": best}
        """
    ),
    md(
        """
        The excel, generic and in_memory data nodes belong to no task. A scenario can
        still hold them as *additional* data nodes, which only the Python API declares.
        """
    ),
    code(
        """
        shop_cfg = Config.configure_scenario(
            "shop",
            task_configs=[Config.tasks["revenue_by_product"], Config.tasks["summarize"]],
            additional_data_node_configs=[report_cfg, notes_cfg, scratch_cfg],
        )
        shop = tp.create_scenario(shop_cfg)
        for node in shop.data_nodes.values():
            print(f"{node.config_id:8} {node.storage_type:10} {node.path}")
        """
    ),
    md(
        """
        The pickle file of `prices` sits in the storage folder. The generic and
        in_memory data nodes have no file of their own (`path` is None).

        ## Writing, reading and appending

        `write` replaces the contents and `read` returns them. A csv data node reads back
        as a DataFrame by default.
        """
    ),
    code(
        """
        shop.sales.write(
            pd.DataFrame(
                {"product": ["apple", "pear", "apple", "plum"], "quantity": [10, 4, 6, 2]}
            )
        )
        shop.sales.read()
        """
    ),
    md(
        """
        `append` adds rows to a csv, excel or parquet table, and items to the list (or
        keys to the dict) of a json or in_memory data node; a generic data node calls
        its `append_fct`. Pickle data nodes do not append: write the whole value. Each
        write and append is one edit in the history, with its time and any comment you
        pass.
        """
    ),
    code(
        """
        shop.sales.append(
            pd.DataFrame({"product": ["pear"], "quantity": [12]}), comment="late order"
        )
        print(Path("example_data/sales.csv").read_text())
        for edit in shop.sales.edits:
            print(edit)
        print("last edit:", shop.sales.last_edit_date)
        """
    ),
    md(
        """
        The default data of `prices` was written when the scenario was created, and the
        edit history says so.
        """
    ),
    code(
        """
        print("prices =", shop.prices.read())
        print(shop.prices.edits)
        """
    ),
    md(
        """
        ## Reading a data node that was never written

        `summary` has no default data and no task has written it yet, so it is not
        ready for reading. `read()` then warns and returns None, as in Taipy;
        `read_or_raise()` raises `NoData` instead, which is what code that cannot go on
        without the data should use.
        """
    ),
    code(
        """
        from jupyter_scenarios.exceptions import NoData

        print("ready for reading:", shop.summary.is_ready_for_reading)
        print("read() returned", shop.summary.read())
        try:
            shop.summary.read_or_raise()
        except NoData as error:
            print(f"read_or_raise() raised NoData: {error}")
        """
    ),
    md(
        """
        ## Data written by jobs

        Submitting the scenario runs both tasks. In development mode, the default, the
        jobs run in the kernel before `submit` returns. Each output's edit names the job
        that wrote it, and `job_ids` lists those jobs.
        """
    ),
    code(
        """
        submission = shop.submit()
        print("submission:", submission.submission_status.name)
        print("summary =", shop.summary.read())
        print("written by:", shop.summary.job_ids)
        print("last edit:", shop.summary.edits[-1])
        print(Path("example_data/summary.json").read_text())
        """
    ),
    code(
        """
        shop.revenue.read()
        """
    ),
    md(
        """
        The excel data node takes a DataFrame too; with `sheet_name` set, `read` returns
        that sheet only. The generic data node goes through `write_notes` and
        `read_notes`.
        """
    ),
    code(
        """
        shop.report.write(shop.revenue.read())
        print(shop.report.read())

        shop.notes.write(["apples sell best in autumn", "order more plums"])
        print("notes =", shop.notes.read())
        print(NOTES.read_text())
        """
    ),
    md(
        """
        ## Locking a data node for edition

        While a job is going to write a data node, the data node is locked
        (`edit_in_progress`), so that no other job reads it half-written: a job whose
        input is locked waits in the BLOCKED status. A person takes the same lock with
        `lock_edit`. With an `editor_id`, only that editor may write until the lock is
        released or expires, 30 minutes later. A write by the editor releases the lock.
        """
    ),
    code(
        """
        from jupyter_scenarios.exceptions import DataNodeIsBeingEdited

        shop.prices.lock_edit(editor_id="alice")
        editor = shop.prices.editor_id
        until = shop.prices.editor_expiration_date
        print(f"locked: {shop.prices.edit_in_progress} by {editor} until {until:%H:%M}")
        print("ready for reading:", shop.prices.is_ready_for_reading)
        try:
            shop.prices.write({"apple": 0.0}, editor_id="bob")
        except DataNodeIsBeingEdited as error:
            print(f"bob cannot write: {error}")

        shop.prices.write({**shop.prices.read(), "apple": 1.35}, editor_id="alice")
        print("after alice's write, locked:", shop.prices.edit_in_progress)
        print("last edit:", shop.prices.edits[-1])
        """
    ),
    md(
        """
        Without an editor id, `lock_edit` and `unlock_edit` simply set and clear the
        lock.
        """
    ),
    code(
        """
        shop.prices.lock_edit()
        print("locked, ready for reading:", shop.prices.is_ready_for_reading)
        shop.prices.unlock_edit()
        print("unlocked, ready for reading:", shop.prices.is_ready_for_reading)
        """
    ),
    md(
        """
        ## in_memory data nodes need development mode

        An `in_memory` data node keeps its value in the kernel's memory. In development
        mode jobs run in the kernel, so tasks can read and write it. A pipeline line of
        `%%scenario` turns the plain function `count_items` into a task.
        """
    ),
    code(
        """
        def count_items(items):
            return len(items)
        """
    ),
    code(
        """
        %%scenario scratchpad
        scratch -> count_items -> item_count
        """
    ),
    code(
        """
        pad = tp.create_scenario("scratchpad")
        pad.scratch.write(["a", "b"])
        pad.scratch.append("c")
        pad.submit()
        print("item_count =", pad.item_count.read())
        """
    ),
    md(
        """
        In standalone mode, jobs run in worker processes, which cannot see the kernel's
        memory. Submitting the same scenario is then rejected before any job is created,
        with an error that names the data node and the two ways out. The scheduler
        restarts in the new mode on the next call, because no job is unfinished.
        """
    ),
    code(
        """
        %scenario_config --mode standalone --workers 2
        """
    ),
    code(
        """
        from jupyter_scenarios.exceptions import ConfigurationError

        try:
            pad.submit()
        except ConfigurationError as error:
            print(f"ConfigurationError: {error}")
        """
    ),
    md(
        """
        The data nodes that use files work the same in both modes: the shop scenario runs
        on the worker processes too.
        """
    ),
    code(
        """
        submission = shop.submit(wait=True)
        print("submission:", submission.submission_status.name)
        print("summary =", shop.summary.read())
        """
    ),
    md(FINAL_WAIT_TEXT),
    code("%wait"),
]


# ---------------------------------------------------------------------------------
# 03 · Tasks and scenarios
# ---------------------------------------------------------------------------------

TASKS_AND_SCENARIOS = [
    md(
        """
        # 03 · Tasks and scenarios

        A task is a function together with the data nodes it reads and writes. A
        scenario is a graph of tasks, linked through their data nodes. Creating a
        scenario creates its own copy of each task and data node (of the default
        scenario scope; notebook 04 shows the other scopes).

        You will:

        1. declare a task with several inputs and several outputs;
        2. build a scenario with the `%%task` and `%%scenario` magics, then with the
           Python API;
        3. submit a whole scenario, one of its sequences, and a single task;
        4. use scenario properties and tags, and list scenarios;
        5. export the configuration to TOML and load it back;
        6. read the errors for a task that returns the wrong number of results and for a
           graph with a cycle.
        """
    ),
    code(imports(standard=("from pathlib import Path",))),
    md(
        """
        No task here sleeps, so the parameters only pick the storage folder.
        """
    ),
    parameters(),
    md(
        """
        ## A task with several inputs and outputs

        The function receives one argument per input, in the order of `--inputs`. With
        several outputs, it returns a tuple whose items are written to the outputs in
        the order of `--outputs`.
        """
    ),
    code(
        """
        %%datanode measurements
        [4.0, 8.0, 15.0, 16.0, 23.0, 42.0]
        """
    ),
    code(
        """
        %datanode offset --default 0.5
        """
    ),
    code(
        """
        %%task stats --inputs measurements offset --outputs total count
        def stats(values, offset):
            \"\"\"Return the sum of the shifted values and how many values there are.\"\"\"
            return sum(value + offset for value in values), len(values)
        """
    ),
    md(
        """
        ## A scenario from magics

        Each line of a `%%scenario` cell is either the id of a declared task, or a
        pipeline `inputs -> function -> outputs` that turns a function of the notebook
        into a task, with commas between several data nodes. Data nodes that were not
        declared get the default settings (pickled, one per scenario).

        `--sequence NAME=TASK,TASK` adds a *sequence*: a named subset of the tasks that
        can be submitted alone.
        """
    ),
    code(
        """
        def average(total, count):
            return total / count


        def spread(values):
            return max(values) - min(values)
        """
    ),
    code(
        """
        %%scenario measures --sequence totals=stats --sequence summary=stats,average
        stats
        total, count -> average -> mean_value
        measurements -> spread -> value_range
        """
    ),
    md(
        """
        ## The same scenario with the Python API

        `Config.configure_task` takes one data node configuration or a list for the
        inputs and for the outputs. `Config.configure_scenario` takes the tasks, the
        sequences, and any extra keyword argument as a property of the scenario.
        Declaring an id again replaces the declaration, so the cells below replace what
        the magics declared, and add the property `unit`. With the Python API, `stats`
        is a plain function.
        """
    ),
    code(
        """
        def stats(values, offset):
            \"\"\"Return the sum of the shifted values and how many values there are.\"\"\"
            return sum(value + offset for value in values), len(values)
        """
    ),
    code(
        """
        measurements_cfg = Config.data_nodes["measurements"]
        offset_cfg = Config.data_nodes["offset"]
        total_cfg = Config.configure_data_node("total")
        count_cfg = Config.configure_data_node("count")
        mean_cfg = Config.configure_data_node("mean_value")
        range_cfg = Config.configure_data_node("value_range")

        stats_cfg = Config.configure_task(
            "stats", stats, [measurements_cfg, offset_cfg], [total_cfg, count_cfg]
        )
        average_cfg = Config.configure_task(
            "average", average, [total_cfg, count_cfg], mean_cfg
        )
        spread_cfg = Config.configure_task("spread", spread, measurements_cfg, range_cfg)

        measures_cfg = Config.configure_scenario(
            "measures",
            task_configs=[stats_cfg, average_cfg, spread_cfg],
            sequences={"totals": [stats_cfg], "summary": [stats_cfg, average_cfg]},
            unit="cm",
        )
        """
    ),
    md(
        """
        ## Creating and submitting a scenario

        Data nodes, tasks, sequences and properties are attributes of the scenario,
        named by their ids.
        """
    ),
    code(
        """
        bench_a = tp.create_scenario(measures_cfg, name="bench A")
        print("measurements =", bench_a.measurements.read())
        print("offset =", bench_a.offset.read(), " unit =", bench_a.unit)
        print("tasks:", sorted(bench_a.tasks))
        print("sequences:", sorted(bench_a.sequences))
        """
    ),
    code(
        """
        submission = bench_a.submit()
        print("submission:", submission.submission_status.name)
        print("total =", bench_a.total.read(), " count =", bench_a.count.read())
        print("mean_value =", bench_a.mean_value.read())
        print("value_range =", bench_a.value_range.read())
        """
    ),
    md(
        """
        ## Submitting a sequence or a single task

        A sequence runs only its tasks; the submission records that a sequence was
        submitted. After a new offset, the `totals` sequence recomputes `total` and
        leaves `mean_value` as it was.
        """
    ),
    code(
        """
        bench_a.offset.write(1.0)
        totals = bench_a.totals
        submission = totals.submit()
        print(submission.entity_type.name, [job.task_config_id for job in submission.jobs])
        print("total =", bench_a.total.read(), " mean_value still", bench_a.mean_value.read())
        """
    ),
    md(
        """
        `%submit` takes the name of a notebook variable holding a scenario, a sequence
        or a task. Submitting the single task `average` brings `mean_value` up to date.
        """
    ),
    code(
        """
        average_task = bench_a.average
        """
    ),
    code(
        """
        %submit average_task
        """
    ),
    code(
        """
        print("mean_value =", bench_a.mean_value.read())
        """
    ),
    md(
        """
        Sequences can also be added to an existing scenario, from its own tasks.
        """
    ),
    code(
        """
        bench_a.add_sequence("spread_only", [bench_a.spread])
        print("sequences:", sorted(bench_a.sequences))
        spread_only = bench_a.spread_only
        """
    ),
    code(
        """
        %submit spread_only --wait
        """
    ),
    md(
        """
        ## Tags and finding scenarios

        A second scenario of the same configuration gets its own data nodes. Tags mark
        scenarios, and `tp.get_scenarios` filters by tag and sorts by name or by
        creation date.
        """
    ),
    code(
        """
        bench_b = tp.create_scenario(measures_cfg, name="bench B")
        bench_b.measurements.write([10.0, 12.0, 11.0])
        bench_b.submit()

        tp.tag(bench_a, "reviewed")
        bench_b.add_tag("draft")

        for found in tp.get_scenarios(is_sorted=True):
            mean_value = found.mean_value.read()
            print(f"{found.name:8} tags={sorted(found.tags)}  mean_value={mean_value}")
        print("reviewed:", [found.name for found in tp.get_scenarios(tag="reviewed")])
        """
    ),
    md(
        """
        ## Exporting the configuration to TOML

        `%export_config FILE` (or `Config.export(FILE)`) writes the configuration in
        Taipy's TOML format. The functions defined in this notebook cannot be imported
        by another process, so their source goes to a module beside the file,
        `measures_functions.py`, which the TOML file names.
        """
    ),
    code(
        """
        %export_config measures.toml
        """
    ),
    code(
        """
        print(Path("measures.toml").read_text())
        """
    ),
    md(
        """
        `Config.load` replaces the configuration with the file's. The tasks now run the
        functions of `measures_functions.py`, and new scenarios work as before.
        """
    ),
    code(
        """
        Config.load("measures.toml")
        loaded = Config.tasks["average"].function
        print("average comes from", loaded.__module__)

        from_file = tp.create_scenario("measures", name="from TOML")
        from_file.submit()
        print("unit =", from_file.unit, " mean_value =", from_file.mean_value.read())
        """
    ),
    md(
        """
        ## Two mistakes and their messages

        A task with two outputs whose function returns one value fails its job. The
        outputs are left untouched, and the last line of the job's traceback explains
        what to return.
        """
    ),
    code(
        """
        def broken_stats(values, offset):
            return sum(values)  # one value for two outputs


        broken_cfg = Config.configure_scenario(
            "broken",
            [
                Config.configure_task(
                    "broken_stats",
                    broken_stats,
                    [Config.data_nodes["measurements"], Config.data_nodes["offset"]],
                    [Config.data_nodes["total"], Config.data_nodes["count"]],
                )
            ],
        )
        broken = tp.create_scenario(broken_cfg)
        job = broken.submit().jobs[0]
        print(job.status.name, "-", job.reason)
        print("last line of the traceback:", job.stacktrace[-1].strip().splitlines()[-1])
        """
    ),
    md(
        """
        A scenario whose tasks form a cycle (here a task reads what another task writes
        from its own output) cannot run. `configure_scenario` rejects it at once and
        names the cycle; `%%scenario` reports the same message as a usage error.
        """
    ),
    code(
        """
        from jupyter_scenarios.exceptions import CycleInGraphError


        def to_fahrenheit(celsius):
            return celsius * 9 / 5 + 32


        def to_celsius(fahrenheit):
            return (fahrenheit - 32) * 5 / 9


        celsius_cfg = Config.configure_data_node("celsius", default_data=20.0)
        fahrenheit_cfg = Config.configure_data_node("fahrenheit")
        try:
            Config.configure_scenario(
                "round_trip",
                [
                    Config.configure_task(
                        "to_fahrenheit", to_fahrenheit, celsius_cfg, fahrenheit_cfg
                    ),
                    Config.configure_task(
                        "to_celsius", to_celsius, fahrenheit_cfg, celsius_cfg
                    ),
                ],
            )
        except CycleInGraphError as error:
            print(f"CycleInGraphError: {error}")
        """
    ),
    md(FINAL_WAIT_TEXT),
    code("%wait"),
]


# ---------------------------------------------------------------------------------
# 04 · Scopes and cycles
# ---------------------------------------------------------------------------------

SCOPES_AND_CYCLES = [
    md(
        """
        # 04 · Scopes and cycles

        Two settings decide which scenarios share what.

        - A data node's **scope** says who shares one copy of it: each scenario has its
          own (`Scope.SCENARIO`, the default), the scenarios of one cycle share one
          (`Scope.CYCLE`), or every scenario shares one (`Scope.GLOBAL`).
        - A scenario configuration's **frequency** (daily, weekly, monthly, quarterly or
          yearly) puts each scenario in the **cycle**, the period, of its creation date.
          Each cycle has one **primary** scenario.

        You will:

        1. declare data nodes of the three scopes and see which scenarios share them;
        2. create scenarios in different months with `creation_date`;
        3. list cycles with their start and end dates, for every frequency;
        4. choose the primary scenario of a cycle;
        5. create a global data node without any scenario.
        """
    ),
    code(
        imports(
            standard=("from datetime import datetime",),
            names=("Config", "Frequency", "Scope"),
        )
    ),
    md(
        """
        No task here sleeps, so the parameters only pick the storage folder.
        """
    ),
    parameters(),
    md(
        """
        ## Three scopes

        A monthly sales report reads three values:

        | data node | scope | why |
        | --- | --- | --- |
        | `sales` | SCENARIO | each shop has its own sales |
        | `monthly_target` | CYCLE | one target per month, for every shop |
        | `tax_rate` | GLOBAL | one rate for every month and shop |

        `%datanode --scope` takes the scope's name in any case.
        """
    ),
    code(
        """
        %datanode sales --default 800
        %datanode monthly_target --scope cycle --default 1000
        %datanode tax_rate --scope global --default 0.2
        """
    ),
    md(
        """
        The Python API takes a `Scope` member. These lines declare the same three data
        nodes again, which replaces the declarations above with identical ones.
        """
    ),
    code(
        """
        sales_cfg = Config.configure_data_node("sales", default_data=800)
        target_cfg = Config.configure_data_node(
            "monthly_target", scope=Scope.CYCLE, default_data=1000
        )
        tax_rate_cfg = Config.configure_data_node(
            "tax_rate", scope=Scope.GLOBAL, default_data=0.2
        )
        """
    ),
    code(
        """
        def make_report(sales, target, tax_rate):
            return {
                "sales": sales,
                "target": target,
                "reached": sales >= target,
                "tax": round(sales * tax_rate, 2),
            }
        """
    ),
    md(
        """
        `--frequency monthly` makes every scenario of this configuration belong to the
        cycle of its month. With the Python API, that is
        `Config.configure_scenario(..., frequency=Frequency.MONTHLY)`.
        """
    ),
    code(
        """
        %%scenario monthly_report --frequency monthly
        sales, monthly_target, tax_rate -> make_report -> report
        """
    ),
    md(
        """
        ## Scenarios in different months

        `creation_date` sets the date that picks the cycle; it defaults to now. Two
        shops report for January 2024 and one for February 2024.
        """
    ),
    code(
        """
        jan_a = tp.create_scenario(
            "monthly_report", creation_date=datetime(2024, 1, 8), name="January, shop A"
        )
        jan_b = tp.create_scenario(
            "monthly_report", creation_date=datetime(2024, 1, 22), name="January, shop B"
        )
        feb_a = tp.create_scenario(
            "monthly_report", creation_date=datetime(2024, 2, 5), name="February, shop A"
        )
        reports = [jan_a, jan_b, feb_a]

        for scenario in reports:
            ids = "  ".join(
                f"{name}=…{scenario.data_nodes[name].id[-6:]}"
                for name in ("sales", "monthly_target", "tax_rate")
            )
            print(f"{scenario.name:17} {scenario.cycle.name:14} {ids}")
        """
    ),
    md(
        """
        The ids show the sharing: three `sales` data nodes, two `monthly_target` ones
        (one per month) and one `tax_rate`. Writing a shared data node through one
        scenario changes it for the others: raising January's target through shop A
        raises it for shop B too, and leaves February's target alone.
        """
    ),
    code(
        """
        jan_a.monthly_target.write(1200)
        jan_a.sales.write(1300)
        jan_b.sales.write(900)
        feb_a.sales.write(1100)
        print("January target seen by shop B:", jan_b.monthly_target.read())
        print("February target:", feb_a.monthly_target.read())
        """
    ),
    md(
        """
        ## Global data nodes

        `tp.create_global_data_node` returns the one data node of a GLOBAL
        configuration, creating it if no scenario has done so yet. Here the scenarios
        already created it, so the same data node comes back; a new tax rate then
        applies to every report.
        """
    ),
    code(
        """
        tax_rate = tp.create_global_data_node(Config.data_nodes["tax_rate"])
        print("same data node as the scenarios':", tax_rate.id == jan_a.tax_rate.id)
        tax_rate.write(0.25)

        for scenario in reports:
            scenario.submit()
            print(f"{scenario.name:17} report = {scenario.report.read()}")
        """
    ),
    md(
        """
        A global data node does not need a scenario at all, which suits reference data
        that several scenario configurations read. Other scopes belong to a scenario or
        a cycle, so creating them alone is rejected.
        """
    ),
    code(
        """
        %datanode exchange_rate --scope global --default 1.08
        """
    ),
    code(
        """
        from jupyter_scenarios.exceptions import ConfigurationError

        exchange_rate = tp.create_global_data_node(Config.data_nodes["exchange_rate"])
        print("exchange_rate =", exchange_rate.read(), " scope:", exchange_rate.scope.name)
        try:
            tp.create_global_data_node(Config.data_nodes["sales"])
        except ConfigurationError as error:
            print(f"ConfigurationError: {error}")
        """
    ),
    md(
        """
        ## Cycles

        A cycle is created with the first scenario of its period. Its `start_date` and
        `end_date` are the first and the last instants of the period.
        """
    ),
    code(
        """
        for cycle in sorted(tp.get_cycles(), key=lambda cycle: cycle.start_date):
            names = [scenario.name for scenario in tp.get_scenarios(cycle=cycle)]
            print(
                f"{cycle.name:14} {cycle.frequency.name:8} "
                f"{cycle.start_date:%Y-%m-%d %H:%M} .. {cycle.end_date:%Y-%m-%d %H:%M:%S}  "
                f"{names}"
            )
        """
    ),
    md(
        """
        ## Primary scenarios

        The first scenario created in a cycle is its primary scenario: the one that
        counts, when several variants exist for the same month. `tp.set_primary` moves
        the title. A primary scenario that shares its cycle with others cannot be
        deleted until another one is made primary.
        """
    ),
    code(
        """
        print("primary:", [scenario.name for scenario in tp.get_primary_scenarios()])
        tp.set_primary(jan_b)
        print("primary:", [scenario.name for scenario in tp.get_primary_scenarios()])
        print("primary of", jan_a.cycle.name, "is", tp.get_primary(jan_a.cycle).name)
        print("shop B deletable:", tp.is_deletable(jan_b))
        print("shop A deletable:", tp.is_deletable(jan_a))
        """
    ),
    md(
        """
        ## Every frequency

        One scenario configuration per frequency, each with a scenario created on
        Wednesday 15 May 2024 at 14:30, shows the period of each cycle. Weeks start on
        Monday.
        """
    ),
    code(
        """
        def copy_sales(sales):
            return sales


        copy_cfg = Config.configure_task(
            "copy_sales",
            copy_sales,
            Config.data_nodes["sales"],
            Config.configure_data_node("sales_copy"),
        )
        for frequency in Frequency:
            period_cfg = Config.configure_scenario(
                f"every_{frequency.name.lower()}", [copy_cfg], frequency=frequency
            )
            scenario = tp.create_scenario(
                period_cfg, creation_date=datetime(2024, 5, 15, 14, 30)
            )
            cycle = scenario.cycle
            print(
                f"{frequency.name:9} {cycle.name:23} "
                f"{cycle.start_date:%Y-%m-%d %H:%M} .. {cycle.end_date:%Y-%m-%d %H:%M:%S}"
            )
        """
    ),
    md(FINAL_WAIT_TEXT),
    code("%wait"),
]


# ---------------------------------------------------------------------------------
# 05 · Skippable tasks
# ---------------------------------------------------------------------------------

SKIPPABLE_TASKS = [
    md(
        """
        # 05 · Skippable tasks

        A skippable task is not run again when its outputs are still valid and no input
        changed since they were written: its job ends SKIPPED at once. That saves the
        time of expensive steps whose results are already up to date.

        You will:

        1. declare a slow skippable task followed by a quick one;
        2. see the skippable job SKIPPED on the second submission;
        3. force a run with `force=True`;
        4. edit an input, which makes the task run again;
        5. give the output a validity period, after which the task runs again.
        """
    ),
    code(
        imports(standard=("import time", "from datetime import timedelta")),
    ),
    md(
        """
        `clean` sleeps to stand for an expensive step. `SCENARIOS_SLEEP_SCALE`
        multiplies every sleep of this notebook; a headless run in CI sets it below 1.
        """
    ),
    parameters(
        """
        SLEEP_SCALE = float(os.environ.get("SCENARIOS_SLEEP_SCALE", "1"))
        CLEAN_SECONDS = 2 * SLEEP_SCALE
        VALIDITY_SECONDS = 5 * SLEEP_SCALE
        """
    ),
    md(
        """
        ## A slow skippable task

        `--skippable` on `%%task` (or `skippable=True` in `Config.configure_task`) marks
        the task. `summarize` is not skippable, so it runs at every submission.
        """
    ),
    code(
        """
        %%datanode raw_readings
        [12.5, None, 11.0, 13.2, None, 12.8]
        """
    ),
    code(
        """
        %%task clean --inputs raw_readings --outputs readings --skippable
        def clean(values):
            time.sleep(CLEAN_SECONDS)  # stands for an expensive step
            return [value for value in values if value is not None]
        """
    ),
    code(
        """
        %%task summarize --inputs readings --outputs summary
        def summarize(values):
            return {"n": len(values), "mean": round(sum(values) / len(values), 2)}
        """
    ),
    code(
        """
        %%scenario sensor
        clean
        summarize
        """
    ),
    md(
        """
        ## Submitting twice

        The first submission runs both tasks. The second finds `readings` written,
        still valid, and newer than `raw_readings`: `clean` is SKIPPED and the
        submission ends much sooner. A submission whose jobs are COMPLETED or SKIPPED
        is COMPLETED.
        """
    ),
    code(
        """
        def show(label, submission, started):
            \"\"\"Print how long a submission took, then each job's task and status.\"\"\"
            elapsed = time.monotonic() - started
            print(f"{label}: {submission.submission_status.name} in {elapsed:.1f} s")
            for job in submission.jobs:
                print(f"    {job.task_config_id:10} {job.status.name}")


        sensor = tp.create_scenario("sensor")

        started = time.monotonic()
        show("first submission", sensor.submit(), started)

        started = time.monotonic()
        show("second submission", sensor.submit(), started)
        print("summary =", sensor.summary.read())
        """
    ),
    md(
        """
        ## Forcing a run

        `force=True`, or `--force` on `%submit`, runs skippable tasks whatever the
        state of their outputs.
        """
    ),
    code(
        """
        %submit sensor --force
        """
    ),
    code(
        """
        forced = tp.get_latest_submission(sensor)
        statuses = [(job.task_config_id, job.status.name) for job in forced.jobs]
        print("forced submission:", statuses)
        """
    ),
    md(
        """
        ## Editing an input

        Writing `raw_readings` makes it newer than `readings`, so `clean` runs again on
        the next submission.
        """
    ),
    code(
        """
        sensor.raw_readings.write([12.5, 14.1, None, 13.9])
        started = time.monotonic()
        show("after editing the input", sensor.submit(), started)
        print("summary =", sensor.summary.read())
        """
    ),
    md(
        """
        ## A validity period

        By default written data stays valid forever. A validity period makes it expire:
        `is_valid` turns False and `expiration_date` says when. Here the period is set
        on the existing data node; in the configuration it is `%datanode readings
        --validity 1h` or `Config.configure_data_node("readings",
        validity_period=timedelta(hours=1))`.
        """
    ),
    code(
        """
        sensor.readings.validity_period = timedelta(seconds=VALIDITY_SECONDS)
        expires = sensor.readings.expiration_date
        print(f"valid: {sensor.readings.is_valid}, until {expires:%H:%M:%S}")

        started = time.monotonic()
        show("while the readings are valid", sensor.submit(), started)

        time.sleep(VALIDITY_SECONDS)
        print("valid:", sensor.readings.is_valid)
        started = time.monotonic()
        show("after they expired", sensor.submit(), started)
        """
    ),
    md(
        """
        ## Every job

        The job table lists each job of the scenario with its status and duration:
        SKIPPED jobs took no time.
        """
    ),
    code(
        """
        %jobs
        """
    ),
    md(FINAL_WAIT_TEXT),
    code(
        """
        %wait
        for job in tp.get_jobs():
            duration = job.execution_duration or 0
            print(f"{job.task_config_id:10} {job.status.name:10} {duration:5.2f} s")
        """
    ),
]


# ---------------------------------------------------------------------------------
# 06 · Callbacks and events
# ---------------------------------------------------------------------------------

CALLBACKS_AND_EVENTS = [
    md(
        """
        # 06 · Callbacks and events

        Code can follow jobs as they move from status to status, in three ways, from the
        most specific to the most general:

        - callbacks given to `submit`, called for each status change of that
          submission's jobs;
        - scenario subscribers (`tp.subscribe_scenario`), called for the jobs of one
          scenario or of every scenario;
        - the event bus, which carries every change to every entity; the progress bars
          and job tables are built on it.

        You will also see a job wait in the BLOCKED status on an input that was never
        written, and run as soon as you write that input by hand. Jobs run in
        **standalone** mode on two worker processes, so the kernel stays free while they
        wait and run.
        """
    ),
    code(imports()),
    md(
        """
        `SCENARIOS_SLEEP_SCALE` multiplies the sleep of `price_order`; a headless run in
        CI sets it below 1.
        """
    ),
    parameters(
        """
        SLEEP_SCALE = float(os.environ.get("SCENARIOS_SLEEP_SCALE", "1"))
        TASK_SECONDS = 1 * SLEEP_SCALE
        """
    ),
    code(
        """
        %scenario_config --mode standalone --workers 2
        """
    ),
    md(
        """
        ## An order with a missing price

        `unit_price` has no default data: until someone writes it, it is not ready for
        reading.
        """
    ),
    code(
        """
        %datanode unit_price
        %datanode quantity --default 12
        """
    ),
    code(
        """
        %%task price_order --inputs unit_price quantity --outputs order_total
        import time


        def price_order(price, quantity):
            time.sleep(TASK_SECONDS)
            return round(price * quantity, 2)
        """
    ),
    code(
        """
        %%task write_invoice --inputs order_total --outputs invoice
        def write_invoice(total):
            return f"Amount due: {total:.2f} EUR"
        """
    ),
    code(
        """
        %%scenario order
        price_order
        write_invoice
        """
    ),
    md(
        """
        ## Callbacks given to submit

        A callback receives the job after each of its status changes. In standalone
        mode it runs on the scheduler's thread, not in the cell that submitted, and
        often after that cell has finished. So a callback must return quickly, and
        should neither print (the text would land in whatever cell runs at that moment,
        or nowhere) nor touch widgets. Appending to a list, setting a `threading.Event`
        or putting on a queue are the safe things to do; the notebook reads the result
        later.
"""
    ),
    code(
        """
        job_changes = []


        def record_job(job):
            job_changes.append((job.task_config_id, job.status.name))
        """
    ),
    md(
        """
        ## Scenario subscribers

        `tp.subscribe_scenario(callback, params)` calls `callback(*params, scenario,
        job)` for the jobs of every scenario, or of one scenario with
        `scenario=...`. Only jobs created after subscribing call it, and subscriptions
        live in the kernel's memory: after a restart, subscribe again.
        """
    ),
    code(
        """
        scenario_changes = []


        def audit(channel, scenario, job):
            scenario_changes.append(
                (channel, scenario.name, job.task_config_id, job.status.name)
            )


        tp.subscribe_scenario(audit, ["audit-log"])
        """
    ),
    md(
        """
        ## The event bus

        `jupyter_scenarios.events.bus` calls each subscriber with an `Event` for every
        creation, update and deletion of an entity: `entity_type`, `operation`,
        `entity_id`, and for updates the `attribute_name` and `attribute_value`. The
        same threading rules apply. This subscriber keeps the status changes of jobs and
        submissions.
        """
    ),
    code(
        """
        from jupyter_scenarios.events import EventEntityType, bus

        status_events = []


        KINDS = (EventEntityType.JOB, EventEntityType.SUBMISSION)
        STATUS_ATTRIBUTES = ("status", "submission_status")


        def on_event(event):
            if event.entity_type in KINDS and event.attribute_name in STATUS_ATTRIBUTES:
                status_events.append((event.entity_type.name, event.attribute_value.name))


        subscriber = bus.subscribe(on_event)
        """
    ),
    md(
        """
        ## A job BLOCKED on an unwritten input

        `tp.is_submittable` tells whether every input is ready: it is false here, and
        its `reasons` name each data node in the way. Submitting anyway is
        allowed: `submit` returns once the scheduler has placed each job, and here both
        jobs are BLOCKED. `price_order` waits for the price, and `write_invoice` for
        `order_total`, which has not been computed yet. No worker is busy.
        """
    ),
    code(
        """
        order = tp.create_scenario("order", name="order 1")
        ready = tp.is_submittable(order)
        print("submittable:", bool(ready), "-", ready)

        submission = order.submit(callbacks=[record_job])
        print("submission:", submission.submission_status.name)
        for job in submission.jobs:
            print(f"    {job.task_config_id:14} {job.status.name}")
        """
    ),
    md(
        """
        Writing the price by hand releases the job: it becomes PENDING, then RUNNING on
        a worker, and `write_invoice` follows once `order_total` is written. The cell
        first waits `TASK_SECONDS`, as a person would take a moment to look the price
        up; the jobs stay BLOCKED meanwhile.
        """
    ),
    code(
        """
        import time

        time.sleep(TASK_SECONDS)
        order.unit_price.write(3.5)
        print("finished:", submission.wait(timeout=30))
        print("submission:", submission.submission_status.name)
        print("invoice =", order.invoice.read())
        """
    ),
    md(
        """
        ## What the callbacks saw

        Each list contains the status changes in the order they happened.
        """
    ),
    code(
        """
        print("callbacks given to submit:")
        for change in job_changes:
            print("   ", change)
        print("scenario subscriber:")
        for change in scenario_changes:
            print("   ", change)
        print("event bus:")
        for change in status_events:
            print("   ", change)
        """
    ),
    md(
        """
        ## Status history and timings

        A job records the time of each status change. The durations are derived from
        that history: `blocked_duration` is the time spent waiting for an input (about
        `TASK_SECONDS` for `price_order`, which waited for the price, and longer for
        `write_invoice`, which also waited for `price_order`), and
        `execution_duration` the time on the worker.
        """
    ),
    code(
        """
        for job in submission.jobs:
            print(f"{job.task_config_id} on worker {job.worker_pid}")
            for status, when in job.status_history:
                print(f"    {when:%H:%M:%S.%f}  {status.name}")
            print(
                f"    blocked {job.blocked_duration or 0:.2f} s, "
                f"pending {job.pending_duration or 0:.3f} s, "
                f"running {job.execution_duration or 0:.2f} s"
            )
        print(
            f"submission: first job started {submission.run_at:%H:%M:%S}, "
            f"last finished {submission.finished_at:%H:%M:%S}, "
            f"{submission.execution_duration:.2f} s in all"
        )
        """
    ),
    md(
        """
        ## Unsubscribing

        `tp.unsubscribe_scenario` and `bus.unsubscribe` stop the notifications. A
        second order then runs unobserved.
        """
    ),
    code(
        """
        tp.unsubscribe_scenario(audit, ["audit-log"])
        bus.unsubscribe(subscriber)
        seen_before = len(scenario_changes), len(status_events)

        second_order = tp.create_scenario("order", name="order 2")
        second_order.unit_price.write(2.0)
        second_order.submit(wait=True)
        print("invoice =", second_order.invoice.read())
        print(
            "new notifications:",
            len(scenario_changes) - seen_before[0],
            len(status_events) - seen_before[1],
        )
        """
    ),
    code(
        """
        %jobs
        """
    ),
    md(FINAL_WAIT_TEXT),
    code("%wait"),
]


# ---------------------------------------------------------------------------------
# 07 · Comparing scenarios
# ---------------------------------------------------------------------------------

COMPARING_SCENARIOS = [
    md(
        """
        # 07 · Comparing scenarios

        Scenarios of one configuration answer the same question under different
        assumptions. *Comparators* are functions attached to the configuration that
        take one data node's value from each scenario and return a comparison.

        You will:

        1. declare a revenue forecast and comparators for two of its data nodes;
        2. create scenarios with different growth rates and starting revenues;
        3. compare them with `tp.compare_scenarios`;
        4. gather the results in a small pandas table.
        """
    ),
    code(imports(third_party=("import pandas as pd",))),
    md(
        """
        No task here sleeps, so the parameters only pick the storage folder.
        """
    ),
    parameters(),
    md(
        """
        ## A revenue forecast
        """
    ),
    code(
        """
        %datanode base_revenue --default 100000.0
        %datanode growth_rate --default 0.05
        %datanode years --default 5
        """
    ),
    code(
        """
        %%task project --inputs base_revenue growth_rate years --outputs forecast
        def project(base, growth, years):
            \"\"\"Return the revenue of each coming year, with compound growth.\"\"\"
            return [round(base * (1 + growth) ** year, 2) for year in range(1, years + 1)]
        """
    ),
    md(
        """
        ## Comparators

        A comparator receives the data node's value from each compared scenario, in the
        order the scenarios are given, and returns anything. `comparators` in
        `Config.configure_scenario` maps a data node id to one comparator or a list of
        them; the `%%scenario` magic has no option for them, so this configuration uses
        the Python API.
        """
    ),
    code(
        """
        def final_year(*forecasts):
            return [forecast[-1] for forecast in forecasts]


        def gap_to_first(*forecasts):
            reference = sum(forecasts[0])
            return [round(sum(forecast) - reference, 2) for forecast in forecasts]


        def side_by_side(*values):
            return list(values)


        plan_cfg = Config.configure_scenario(
            "revenue_plan",
            task_configs=[Config.tasks["project"]],
            comparators={"forecast": [final_year, gap_to_first], "growth_rate": side_by_side},
        )
        """
    ),
    md(
        """
        ## Scenarios with different inputs

        Three scenarios differ by their growth rate only. Each is created, given its
        rate, and submitted.
        """
    ),
    code(
        """
        plans = []
        for name, rate in {"cautious": 0.02, "expected": 0.05, "ambitious": 0.09}.items():
            plan = tp.create_scenario(plan_cfg, name=name)
            plan.growth_rate.write(rate)
            plan.submit()
            plans.append(plan)
        """
    ),
    md(
        """
        A fourth scenario keeps the expected growth but starts from a larger shop; it is
        submitted with the magic.
        """
    ),
    code(
        """
        larger_shop = tp.create_scenario(plan_cfg, name="expected, larger shop")
        larger_shop.base_revenue.write(150000.0)
        plans.append(larger_shop)
        """
    ),
    code(
        """
        %submit larger_shop --wait
        """
    ),
    md(
        """
        ## Comparing

        `tp.compare_scenarios` runs every comparator and returns `{data node id:
        {comparator name: result}}`. `data_node_config_id` limits it to one data node.
        """
    ),
    code(
        """
        comparison = tp.compare_scenarios(*plans)
        for node_id, results in comparison.items():
            for comparator, result in results.items():
                print(f"{node_id:11} {comparator:12} {result}")
        """
    ),
    code(
        """
        tp.compare_scenarios(*plans, data_node_config_id="growth_rate")
        """
    ),
    md(
        """
        ## A pandas summary

        The comparison results line up with the scenarios, so they make columns of a
        DataFrame indexed by scenario name.
        """
    ),
    code(
        """
        summary = pd.DataFrame(
            {
                "base revenue": [plan.base_revenue.read() for plan in plans],
                "growth": comparison["growth_rate"]["side_by_side"],
                "final year": comparison["forecast"]["final_year"],
                "total": [round(sum(plan.forecast.read()), 2) for plan in plans],
                "gap to cautious": comparison["forecast"]["gap_to_first"],
            },
            index=pd.Index([plan.name for plan in plans], name="scenario"),
        )
        summary
        """
    ),
    md(
        """
        The forecasts year by year, one column per scenario:
        """
    ),
    code(
        """
        pd.DataFrame(
            {plan.name: plan.forecast.read() for plan in plans},
            index=pd.RangeIndex(1, plans[0].years.read() + 1, name="year"),
        )
        """
    ),
    md(
        """
        ## What cannot be compared

        Only scenarios of one configuration can be compared, because the comparators
        belong to it.
        """
    ),
    code(
        """
        copy_cfg = Config.configure_scenario("revenue_plan_copy", [Config.tasks["project"]])
        copy = tp.create_scenario(copy_cfg)
        try:
            tp.compare_scenarios(plans[0], copy)
        except ValueError as error:
            print(f"ValueError: {error}")
        """
    ),
    md(FINAL_WAIT_TEXT),
    code("%wait"),
]


# ---------------------------------------------------------------------------------
# 08 · Failures and cancellation
# ---------------------------------------------------------------------------------

RESTARTED_KERNEL_SCRIPT = """
import sys

import jupyter_scenarios as tp
from jupyter_scenarios import Config

Config.configure_core(storage_folder=sys.argv[1])
for submission in tp.get_submissions():
    statuses = ", ".join(job.status.name for job in submission.jobs)
    print(
        f"{submission.entity_config_id:12} "
        f"{submission.submission_status.name:9} {statuses}"
    )
"""

CRASHING_KERNEL_SCRIPT = """
import os
import sys

import jupyter_scenarios as tp
from jupyter_scenarios import Config

Config.configure_core(storage_folder=sys.argv[1])
tp.clean_all_entities()


def end_process(orders):
    os._exit(1)  # the whole process ends while its job runs


orders_cfg = Config.configure_data_node("orders", default_data=["1"])
lost_cfg = Config.configure_data_node("lost")
task_cfg = Config.configure_task("end_process", end_process, orders_cfg, lost_cfg)
scenario = tp.create_scenario(Config.configure_scenario("kernel_crash", [task_cfg]))
scenario.submit()
"""

NEXT_START_SCRIPT = """
import sys

import jupyter_scenarios as tp
from jupyter_scenarios import Config

Config.configure_core(storage_folder=sys.argv[1])
for job in tp.get_jobs():
    print(f"{job.task_config_id}: {job.status.name} because {job.reason}")
for node in tp.get_data_nodes():
    print(f"{node.config_id}: locked={node.edit_in_progress}")
"""


def script_constant(name: str, script: str) -> str:
    """Return Python source that assigns ``script`` to ``name`` as a triple-quoted string."""
    return f'{name} = """{script}"""'


FAILURES_AND_CANCELLATION = [
    md(
        """
        # 08 · Failures and cancellation

        Jobs fail, workers die, and people change their minds. This notebook shows what
        each of those does to a job, to the jobs downstream of it, and to the rest of
        the submission, in **standalone** mode with two worker processes.

        You will:

        1. run a task that raises: its job is FAILED with a traceback, the jobs that
           need its output are ABANDONED, and other branches complete;
        2. run a task that kills its worker process: only that job fails, and a new
           worker takes the dead one's place;
        3. cancel a PENDING job and a RUNNING job;
        4. see `submit(wait=True, timeout=...)` return at the timeout with a warning;
        5. see what a restarted kernel finds in the store, including jobs that were
           running when a kernel died.
        """
    ),
    code(
        imports(
            standard=(
                "import subprocess",
                "import sys",
                "import time",
                "from pathlib import Path",
            )
        )
    ),
    md(
        """
        `SCENARIOS_SLEEP_SCALE` multiplies every sleep of this notebook; a headless run
        in CI sets it below 1.
        """
    ),
    parameters(
        """
        SLEEP_SCALE = float(os.environ.get("SCENARIOS_SLEEP_SCALE", "1"))
        SHORT_SECONDS = 1 * SLEEP_SCALE
        SLOW_SECONDS = 4 * SLEEP_SCALE
        WAIT_TIMEOUT = SLOW_SECONDS / 4
        """
    ),
    code(
        """
        %scenario_config --mode standalone --workers 2
        """
    ),
    md(
        """
        ## A task that raises

        `parse_orders` fails on the order `"x3"`. `sum_quantities` needs its output;
        `count_orders` does not, and takes a moment, so it is still running when the
        failure comes.
        """
    ),
    code(
        """
        %%datanode orders
        ["12", "7", "x3", "25"]
        """
    ),
    code(
        """
        def parse_orders(orders):
            return [int(order) for order in orders]


        def sum_quantities(quantities):
            return sum(quantities)


        def count_orders(orders):
            time.sleep(SHORT_SECONDS)
            return len(orders)
        """
    ),
    code(
        """
        %%scenario order_stats
        orders -> parse_orders -> quantities -> sum_quantities -> order_total
        orders -> count_orders -> order_count
        """
    ),
    md(
        """
        The submission is FAILED as soon as one job fails, but `submit(wait=True)`
        returns only when every job has finished: `count_orders` completes and writes
        its output. The progress bar and the job table show the failure; the loop
        below prints each job's status and reason. (The scheduler also logs it through
        Python's `logging`, under the `jupyter_scenarios` logger, which shows nothing
        until you configure logging, for example with `logging.basicConfig()`.)
        """
    ),
    code(
        """
        stats = tp.create_scenario("order_stats")
        submission = stats.submit(wait=True)
        print("submission:", submission.submission_status.name)
        for job in submission.jobs:
            print(f"    {job.task_config_id:15} {job.status.name:10} {job.reason or ''}")
        print("order_count =", stats.order_count.read())
        """
    ),
    md(
        """
        `job.stacktrace` holds the traceback, formatted in the worker process. The job
        table shows it too.
        """
    ),
    code(
        """
        failed = next(job for job in submission.jobs if job.is_failed())
        print(failed.stacktrace[-1])
        """
    ),
    md(
        """
        ## A worker that dies

        `os._exit(1)` ends the worker process at once, as a segmentation fault or the
        out-of-memory killer would. The job fails with a reason that names the exit
        code, its output is unlocked, and the pool starts a new worker.
        """
    ),
    code(
        """
        %%task crash --inputs orders --outputs never_written
        def crash(orders):
            os._exit(1)
        """
    ),
    code(
        """
        %%scenario crash_test
        crash
        """
    ),
    code(
        """
        crash_test = tp.create_scenario("crash_test")
        job = crash_test.submit(wait=True).jobs[0]
        print(job.status.name, "-", job.reason)
        print("never_written is locked:", crash_test.never_written.edit_in_progress)
        """
    ),
    md(
        """
        The pool is whole again: with the bad order fixed, the first scenario runs to
        the end, on two live workers.
        """
    ),
    code(
        """
        stats.orders.write(["12", "7", "3", "25"])
        submission = stats.submit(wait=True)
        for job in submission.jobs:
            print(f"    {job.task_config_id:15} {job.status.name:10} worker {job.worker_pid}")
        print("order_total =", stats.order_total.read())
        """
    ),
    md(
        """
        ## Cancelling jobs

        Three submissions of a slow scenario compete for the two workers: two
        `slow_copy` jobs run, the third waits PENDING, and each `count_copies` job is
        BLOCKED until its `slow_copy` has written `orders_copy`.
        """
    ),
    code(
        """
        def slow_copy(orders):
            time.sleep(SLOW_SECONDS)
            return list(orders)


        def count_copies(orders):
            return len(orders)
        """
    ),
    code(
        """
        %%scenario slow_batch
        orders -> slow_copy -> orders_copy -> count_copies -> copy_count
        """
    ),
    code(
        """
        def wait_until(condition, timeout=10.0):
            \"\"\"Poll ``condition()`` every 20 ms; return whether it became true in time.\"\"\"
            deadline = time.monotonic() + timeout
            while not condition():
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.02)
            return True


        def show_jobs(submission):
            for job in submission.jobs:
                print(f"    {job.task_config_id:12} {job.status.name:10} {job.reason or ''}")


        batches = [tp.create_scenario("slow_batch", name=f"batch {n}") for n in (1, 2, 3)]
        batch_submissions = [batch.submit() for batch in batches]
        copy_jobs = [submission.jobs[0] for submission in batch_submissions]
        wait_until(
            lambda: (
                sum(job.is_running() for job in copy_jobs) == 2
                and any(job.is_pending() for job in copy_jobs)
            )
        )
        for batch, job in zip(batches, copy_jobs):
            print(f"{batch.name}: {job.task_config_id} is {job.status.name}")
        """
    ),
    md(
        """
        `tp.cancel_job` on a job that has not started makes it CANCELED at once. The
        jobs downstream of it in the same submission are ABANDONED, since their input
        will never come.
        """
    ),
    code(
        """
        pending = next(job for job in copy_jobs if job.is_pending())
        tp.cancel_job(pending)
        show_jobs(tp.get(pending.submit_id))
        """
    ),
    md(
        """
        A RUNNING job is cancelled by killing its worker process (and any process the
        task started); a new worker replaces it. `%cancel` takes job ids, submission ids
        or notebook variables; `%cancel --all` cancels every unfinished job. (Taipy
        4.1.1 cannot stop a running job: it lets the job finish.)
        """
    ),
    code(
        """
        running = next(job for job in copy_jobs if job.is_running())
        """
    ),
    code(
        """
        %cancel running
        """
    ),
    code(
        """
        show_jobs(tp.get(running.submit_id))
        """
    ),
    md(
        """
        The batch that was not cancelled completes.
        """
    ),
    code(
        """
        for batch, submission in zip(batches, batch_submissions):
            submission.wait(timeout=60)
            print(f"{batch.name}: {submission.submission_status.name}")
        """
    ),
    md(
        """
        ## Cancelling from the job table

        `%jobs` shows every job with its status, timings, worker, error and output. Each
        unfinished job has a cancel button, which calls `tp.cancel_job` for that job.
        The job table under each submission's progress bar has the same buttons. In a
        headless run no one can click them, so this notebook cancels through code.
        """
    ),
    code(
        """
        %jobs
        """
    ),
    md(
        """
        ## Waiting with a timeout

        `submit(wait=True, timeout=T)` returns after at most `T` seconds. When jobs are
        still unfinished then, it warns, naming them, and they go on. Here the
        submission is then cancelled as a whole: `%cancel` with a submission cancels
        its running and pending jobs, and the jobs that wait for them become
        ABANDONED.
        """
    ),
    code(
        """
        late = tp.create_scenario("slow_batch", name="batch 4")
        started = time.monotonic()
        late_submission = late.submit(wait=True, timeout=WAIT_TIMEOUT)
        print(
            f"submit returned after {time.monotonic() - started:.2f} s "
            f"(timeout {WAIT_TIMEOUT:g} s); the submission is "
            f"{late_submission.submission_status.name}"
        )
        """
    ),
    code(
        """
        %cancel late_submission
        """
    ),
    code(
        """
        print("submission:", late_submission.submission_status.name)
        show_jobs(late_submission)
        """
    ),
    md(
        """
        ## After a kernel restart

        Scenarios, jobs and submissions are kept in an SQLite database in the storage
        folder, so a restarted kernel finds them all. Run the imports and the
        parameters cell again, leaving out its `tp.clean_all_entities()` line, then
        `tp.get_submissions()`, `tp.get_jobs()` or `%jobs` list them. Callbacks and
        subscriptions are not kept: subscribe again.

        A separate Python process plays the restarted kernel here, because a notebook
        cannot restart its own kernel and go on. It opens the same storage folder and
        lists the submissions.
        """
    ),
    code(
        script_constant("RESTARTED_KERNEL", RESTARTED_KERNEL_SCRIPT)
        + "\n\n"
        + textwrap.dedent(
            """
            STORAGE = Path(Config.core.storage_folder).resolve()
            listing = subprocess.run(
                [sys.executable, "-c", RESTARTED_KERNEL, str(STORAGE)],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            print(listing.stdout or listing.stderr)
            """
        ).strip("\n")
    ),
    md(
        """
        A kernel can also die while its jobs run: a crash, a `kill -9`, a machine that
        stops. The next process that opens the store settles the jobs that the dead
        process left unfinished. A job recorded as RUNNING becomes FAILED and a job
        recorded as waiting becomes ABANDONED, each with a reason. The outputs they
        locked are unlocked. Taipy 4.1.1 leaves such jobs RUNNING and their outputs
        locked for good.

        The first process below dies in the middle of a job (in development mode, so
        the job runs in the process itself). It uses a storage folder of its own,
        inside this notebook's.
        """
    ),
    code(
        script_constant("CRASHING_KERNEL", CRASHING_KERNEL_SCRIPT)
        + "\n\n"
        + textwrap.dedent(
            """
            CRASH_STORAGE = STORAGE / "crash-demo"
            crashed = subprocess.run(
                [sys.executable, "-c", CRASHING_KERNEL, str(CRASH_STORAGE)],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            print("the process ended with exit code", crashed.returncode)
            """
        ).strip("\n")
    ),
    md(
        """
        The next process to open that store, like a restarted kernel, finds the job
        settled, with the reason, and the output `lost` unlocked.
        """
    ),
    code(
        script_constant("NEXT_START", NEXT_START_SCRIPT)
        + "\n\n"
        + textwrap.dedent(
            """
            next_start = subprocess.run(
                [sys.executable, "-c", NEXT_START, str(CRASH_STORAGE)],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            print(next_start.stdout or next_start.stderr)
            """
        ).strip("\n")
    ),
    md(FINAL_WAIT_TEXT),
    code("%wait"),
]


NOTEBOOKS = {
    "02_data_nodes.ipynb": DATA_NODES,
    "03_tasks_and_scenarios.ipynb": TASKS_AND_SCENARIOS,
    "04_scopes_and_cycles.ipynb": SCOPES_AND_CYCLES,
    "05_skippable_tasks.ipynb": SKIPPABLE_TASKS,
    "06_callbacks_and_events.ipynb": CALLBACKS_AND_EVENTS,
    "07_comparing_scenarios.ipynb": COMPARING_SCENARIOS,
    "08_failures_and_cancellation.ipynb": FAILURES_AND_CANCELLATION,
}


def main(argv: list[str]) -> int:
    """Write the notebooks named in ``argv`` (all of them by default)."""
    names = argv or list(NOTEBOOKS)
    unknown = sorted(set(names) - set(NOTEBOOKS))
    if unknown:
        print(f"Unknown notebooks {unknown}; choose from {sorted(NOTEBOOKS)}.")
        return 2
    for name in names:
        notebook = build_notebook(name, NOTEBOOKS[name])
        path = NOTEBOOKS_DIR / name
        nbformat.write(notebook, path)
        print(
            f"Wrote {path.relative_to(NOTEBOOKS_DIR.parent)} ({len(notebook.cells)} cells)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
