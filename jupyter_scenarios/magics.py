"""Cell and line magics: notebook sugar over the ``Config`` API and the runtime.

Declaration magics::

    %scenario_config --mode standalone --workers 2
    %datanode my_input --default 21

    %%task double --inputs my_input --outputs intermediate
    def double(nb):
        return nb * 2

    %%scenario my_scenario
    my_input -> double -> intermediate -> add -> my_output

Runtime magics: ``%submit``, ``%jobs``, ``%cancel``, ``%scenario_graph``,
``%export_config`` and ``%wait``. Each magic's docstring is its ``%name?`` help.

Every declaration magic calls the same ``Config.configure_*`` function as Python code
would, so re-running a cell replaces the declaration. Bad input raises IPython's
``UsageError`` naming the offending token and the fix.
"""

from __future__ import annotations

import ast
import logging
import re
import sys
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import (
    Magics,
    cell_magic,
    line_cell_magic,
    line_magic,
    magics_class,
)

from . import _runtime, api
from .config import Config
from .config.sections import DataNodeConfig, ScenarioConfig, TaskConfig
from .config.templates import parse_timedelta
from .entities import Job, Scenario, Sequence, Submission, Task
from .enums import Frequency, Scope
from .exceptions import ScenarioError, clause
from .magic_notes import (
    count,
    new_data_node_notes,
    unfinished_jobs_summary,
    unused_data_nodes,
    unwritten_input_warnings,
)
from .magic_parsing import check_storage_option, enum_option, parse_args

if TYPE_CHECKING:
    from .magic_parsing import argument, magic_arguments
else:
    from IPython.core.magic_arguments import argument, magic_arguments

logger = logging.getLogger(__name__)

_ARROW = re.compile(r"\s*->\s*")

_SUBMITTABLE = (Scenario, Sequence, Task)


def _data_node_names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _wiring(inputs: list[str], task_id: str, outputs: list[str]) -> str:
    return f"{', '.join(inputs)} -> {task_id} -> {', '.join(outputs)}"


def _check_wiring(
    declared: TaskConfig,
    declared_by: str,
    inputs: list[str],
    outputs: list[str],
    line_number: int,
) -> None:
    """Raise a UsageError unless a pipeline wires ``declared`` as it is declared."""
    declared_inputs = [config.id for config in declared.input_configs]
    declared_outputs = [config.id for config in declared.output_configs]
    if inputs == declared_inputs and outputs == declared_outputs:
        return
    current = _wiring(declared_inputs, declared.id, declared_outputs)
    requested = _wiring(inputs, declared.id, outputs)
    raise UsageError(
        f"Task {declared.id!r} on line {line_number} is wired as '{requested}', but "
        f"{declared_by} declared it as '{current}'. Write '{current}' in the "
        "pipeline, re-declare the task with the new inputs and outputs first, or "
        "use a function of another name for this step."
    )


@magics_class
class ScenarioMagics(Magics):
    """The jupyter_scenarios magics."""

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        # The task configurations that %%scenario pipelines declared, by id, so that
        # a pipeline replaces its own declarations and keeps all others.
        self._pipeline_tasks: dict[str, TaskConfig] = {}
        # The data node configurations that magics declared with default settings
        # because a line named an undeclared data node, by id.
        self._auto_declared: dict[str, DataNodeConfig] = {}

    # -- settings ---------------------------------------------------------------------

    @magic_arguments()
    @argument(
        "--mode",
        choices=["development", "standalone", "dask"],
        help="development: jobs run synchronously in the kernel; standalone: on "
        "worker processes; dask: on a distributed cluster.",
    )
    @argument(
        "--workers",
        type=int,
        help="Number of worker processes in standalone mode (default 2).",
    )
    @argument(
        "--storage",
        help="Folder holding the entity store and data files (default .scenarios).",
    )
    @argument("--dask-address", help="Address of an existing Dask scheduler.")
    @line_magic
    def scenario_config(self, line: str) -> None:
        """Set how jobs run and where entities are stored.

        Example: ``%scenario_config --mode standalone --workers 2``
        """
        args = parse_args(self.scenario_config, line)
        if args.workers is not None and args.workers < 1:
            raise UsageError(
                f"--workers {args.workers} is not valid; give a number of at least 1."
            )
        if args.mode or args.workers or args.dask_address:
            extra = {"dask_address": args.dask_address} if args.dask_address else {}
            Config.configure_job_executions(
                mode=args.mode, max_nb_of_workers=args.workers, **extra
            )
        if args.storage:
            Config.configure_core(storage_folder=args.storage)
        job = Config.job_config
        workers = job.max_nb_of_workers
        on_workers = f" on {workers} worker{'s' if workers != 1 else ''}"
        settings = f"{job.mode} mode" + (
            on_workers if job.mode != "development" else ""
        )
        folder = _runtime.storage_folder()
        deferred = _runtime.deferred_switch()
        if deferred is None:
            print(f"Jobs run in {settings}; entities are stored in {folder}.")
            return
        unfinished, blocked, current = deferred
        jobs = (
            "unfinished job ends"
            if unfinished == 1
            else f"{unfinished} unfinished jobs end"
        )
        print(
            f"Jobs will run in {settings} and entities will be stored in {folder} "
            f"once the scheduler's {jobs}. Until then it keeps its settings and "
            f"stores entities in {current}, and tp calls use them too."
        )
        if blocked == unfinished == 1:
            print(
                "That job is BLOCKED until its inputs are written; %cancel --all "
                "cancels it."
            )
        elif blocked == unfinished:
            print(
                "They are BLOCKED until their inputs are written; %cancel --all "
                "cancels them."
            )
        else:
            print("%wait waits for them; %cancel --all cancels them.")

    # -- declarations -------------------------------------------------------------------

    @magic_arguments()
    @argument("id", help="Identifier of the data node (a Python identifier).")
    @argument(
        "--default",
        help="Default data: a Python expression evaluated in the notebook, for "
        "example 21, 'text' or my_dataframe.",
    )
    @argument(
        "--storage",
        default=None,
        help="Storage type: pickle (default), csv, excel, json, parquet, in_memory "
        "or generic.",
    )
    @argument(
        "--scope",
        help="SCENARIO (default), CYCLE or GLOBAL, in any case.",
    )
    @argument(
        "--validity",
        help="How long written data stays valid, as 1d2h30m0s or 90m.",
    )
    @argument("--path", help="File holding the data (file-based storage types).")
    @argument(
        "--property",
        "-p",
        action="append",
        default=[],
        metavar="KEY=EXPRESSION",
        help="Extra property; the value is a Python expression. Repeatable.",
    )
    @line_cell_magic
    def datanode(self, line: str, cell: str | None = None) -> DataNodeConfig:
        """Declare a data node (re-running replaces it).

        Line form: ``%datanode my_input --default 21``.
        Cell form: the cell body is a Python expression giving the default data::

            %%datanode prices --storage pickle
            {"apple": 1.2, "pear": 0.8}
        """
        args = parse_args(self.datanode, line)
        check_storage_option(args.storage)
        scope = enum_option(Scope, "--scope", args.scope)
        properties: dict[str, Any] = {}
        if args.default is not None and cell is not None:
            raise UsageError(
                "Give the default data either with --default or as the cell body, "
                "not both."
            )
        if args.default is not None:
            properties["default_data"] = self._evaluate(args.default, "--default")
        if cell is not None and cell.strip():
            properties["default_data"] = self._evaluate(cell, "the cell body")
        if args.path:
            properties["default_path"] = args.path
        properties.update(self._properties(args.property))
        return self._configure_data_node(
            args.id,
            storage_type=args.storage,
            scope=scope,
            validity_period=self._validity(args.validity),
            **properties,
        )

    @magic_arguments()
    @argument("id", help="Identifier of the task (a Python identifier).")
    @argument(
        "--inputs",
        "-i",
        nargs="*",
        default=[],
        help="Input data node ids, in the order of the function's arguments. "
        "Undeclared ones are declared with default settings.",
    )
    @argument(
        "--outputs",
        "-o",
        nargs="*",
        default=[],
        help="Output data node ids, in the order of the function's results.",
    )
    @argument(
        "--function",
        "-f",
        help="Name of the function to run (default: the function named like the "
        "task, else the last function defined in the cell).",
    )
    @argument(
        "--skippable",
        action="store_true",
        help="Skip the task when its outputs are valid and no input is newer.",
    )
    @cell_magic
    def task(self, line: str, cell: str) -> TaskConfig:
        """Define a function in the cell body and declare it as a task.

        Example::

            %%task double --inputs my_input --outputs intermediate
            def double(nb):
                return nb * 2
        """
        args = parse_args(self.task, line)
        defined = self._run_cell_body(cell)
        function = self._pick_function(args.id, args.function, defined)
        declared_before = set(Config.data_nodes)
        candidates = unused_data_nodes(replaced_task=args.id)
        inputs = [self._data_node(name, "--inputs") for name in args.inputs]
        outputs = [self._data_node(name, "--outputs") for name in args.outputs]
        try:
            config = Config.configure_task(
                args.id, function, inputs, outputs, skippable=args.skippable
            )
        except ScenarioError as error:
            raise UsageError(str(error)) from None
        new_names = [name for name in Config.data_nodes if name not in declared_before]
        for note in new_data_node_notes(new_names, candidates, [config]):
            print(note)
        if args.function is None and args.id not in defined and len(defined) > 1:
            print(
                f"Task {args.id!r} runs {defined[-1]}(), the last of the functions "
                f"this cell defines ({', '.join(defined)}); pass --function NAME to "
                "run another."
            )
        return config

    @magic_arguments()
    @argument("id", help="Identifier of the scenario configuration.")
    @argument(
        "--frequency",
        help="Group scenarios in cycles of this period: DAILY, WEEKLY, MONTHLY, "
        "QUARTERLY or YEARLY, in any case.",
    )
    @argument(
        "--sequence",
        action="append",
        default=[],
        metavar="NAME=TASK,TASK",
        help="A sequence: a name and the tasks it runs. Repeatable.",
    )
    @argument(
        "--additional",
        nargs="*",
        default=[],
        metavar="DATA_NODE",
        help="Data nodes that belong to the scenario without being read or written "
        "by its tasks. Undeclared ones are declared with default settings.",
    )
    @argument(
        "--create",
        metavar="VARIABLE",
        help="Also create a scenario and store it in this notebook variable.",
    )
    @cell_magic
    def scenario(self, line: str, cell: str) -> Any:
        """Declare a scenario from task ids or from pipelines.

        Each non-empty line of the body is either a declared task id, or a pipeline
        of data nodes and tasks joined by ``->``, where task names are functions of
        the notebook (declared as tasks on the way)::

            %%scenario my_scenario
            my_input -> double -> intermediate -> add -> my_output

        A task declared with %%task or Config.configure_task keeps its declaration
        and settings, and the pipeline must give it the same inputs and outputs.

        Several inputs or outputs are separated by commas:
        ``a, b -> combine -> c``. Lines starting with ``#`` are comments.
        """
        args = parse_args(self.scenario, line)
        frequency = enum_option(Frequency, "--frequency", args.frequency)
        declared_before = set(Config.data_nodes)
        candidates = unused_data_nodes()
        tasks: dict[str, TaskConfig] = {}
        for number, raw in enumerate(cell.splitlines(), start=1):
            text = raw.split("#", 1)[0].strip()
            if not text:
                continue
            if "->" in text:
                for task in self._pipeline(text, number, args.id, tasks):
                    tasks[task.id] = task
            else:
                for name in (part.strip() for part in text.split(",")):
                    if name:
                        tasks[name] = self._declared_task(name, number)
        if not tasks:
            raise UsageError(
                f"Scenario {args.id!r} lists no tasks; write one task id per line or "
                "a pipeline such as 'my_input -> double -> my_output'."
            )
        sequences = {}
        for item in args.sequence:
            name, _, members = item.partition("=")
            if not name or not members:
                raise UsageError(
                    f"--sequence {item!r} is not valid; write NAME=TASK,TASK."
                )
            sequences[name] = [
                self._declared_task(member.strip(), None)
                for member in members.split(",")
            ]
        try:
            additional = [
                self._data_node(name, "--additional") for name in args.additional
            ]
            config = Config.configure_scenario(
                args.id,
                task_configs=list(tasks.values()),
                additional_data_node_configs=additional,
                frequency=frequency,
                sequences=sequences,
            )
        except ScenarioError as error:
            raise UsageError(str(error)) from None
        self._report_new_data_nodes(config, declared_before, candidates)
        if args.create:
            if not args.create.isidentifier():
                raise UsageError(
                    f"--create {args.create!r} is not a valid variable name."
                )
            self.shell.user_ns[args.create] = api.create_scenario(config)  # type: ignore[union-attr]
            return None
        return config

    # -- runtime ---------------------------------------------------------------------------

    @magic_arguments()
    @argument("entity", help="A scenario, sequence or task: a variable name or an id.")
    @argument("--wait", action="store_true", help="Wait until every job has finished.")
    @argument(
        "--timeout",
        type=float,
        help="With --wait, seconds to wait at most before returning.",
    )
    @argument(
        "--force", action="store_true", help="Run skippable tasks even if up to date."
    )
    @line_magic
    def submit(self, line: str) -> Any:
        """Submit a scenario, sequence or task, and show its progress.

        Example: ``%submit scenario_1 --wait --timeout 5``
        """
        args = parse_args(self.submit, line)
        _check_timeout_option(args.timeout)
        entity = self._entity(args.entity, _SUBMITTABLE, "a scenario, sequence or task")
        return api.submit(
            entity, force=args.force, wait=args.wait, timeout=args.timeout
        )

    @line_magic
    def jobs(self, line: str) -> Any:
        """Show a live table of every job, with cancel buttons.

        Example: ``%jobs``
        """
        if line.strip():
            raise UsageError(f"%jobs takes no arguments, got {line.strip()!r}.")
        from .widgets import jobs_table

        return jobs_table()

    @magic_arguments()
    @argument(
        "ids",
        nargs="*",
        help="Job ids, submission ids, or variables holding jobs or submissions.",
    )
    @argument("--all", action="store_true", help="Cancel every unfinished job.")
    @line_magic
    def cancel(self, line: str) -> None:
        """Cancel jobs: by job, by submission (all its jobs), or all of them.

        Examples: ``%cancel JOB_add_...``, ``%cancel submission``, ``%cancel --all``
        """
        args = parse_args(self.cancel, line)
        if not args.ids and not args.all:
            raise UsageError("Name jobs or submissions to cancel, or pass --all.")
        jobs = []
        if args.all:
            jobs = [job for job in api.get_jobs() if not job.is_finished()]
        for name in args.ids:
            entity = self._entity(name, (Job, Submission), "a job or submission")
            jobs.extend(entity.jobs if isinstance(entity, Submission) else [entity])
        cancelled = 0
        for job in jobs:
            if not job.is_finished():
                api.cancel_job(job)
                cancelled += 1
        print(f"Cancelled {count(cancelled, 'job')}.")

    @magic_arguments()
    @argument(
        "entity",
        nargs="?",
        help="A scenario, sequence or task: a variable name or an id.",
    )
    @line_magic
    def scenario_graph(self, line: str) -> Any:
        """Show a scenario's task graph, each task coloured by its latest job status.

        Example: ``%scenario_graph scenario_1``
        """
        args = parse_args(self.scenario_graph, line)
        if not args.entity:
            raise UsageError("Name a scenario: %scenario_graph scenario_1")
        entity = self._entity(args.entity, _SUBMITTABLE, "a scenario, sequence or task")
        from .widgets import GraphView

        return GraphView(entity)

    @magic_arguments()
    @argument(
        "path",
        nargs="?",
        help="The TOML file to write. Quote a path that contains spaces.",
    )
    @line_magic
    def export_config(self, line: str) -> None:
        """Write the configuration to a TOML file.

        Example: ``%export_config config.toml``
        """
        path = parse_args(self.export_config, line).path
        if not path:
            raise UsageError("Name the file: %export_config config.toml")
        try:
            Config.export(path)
        except ScenarioError as error:
            raise UsageError(str(error)) from None
        print(f"Configuration written to {path}.")

    @magic_arguments()
    @argument("--timeout", type=float, help="Seconds to wait at most.")
    @line_magic
    def wait(self, line: str) -> None:
        """Wait for every submission, then refresh every widget with its final state.

        Put ``%wait`` in a notebook's last cell so that a headless run (nbconvert,
        nbclient) stores the widgets' final state.
        """
        args = parse_args(self.wait, line)
        _check_timeout_option(args.timeout)
        if api.wait_all(timeout=args.timeout):
            return
        # In development mode wait_all returns False at once when BLOCKED jobs wait
        # for inputs that no job writes, so it did not wait for the timeout.
        timed_out = args.timeout is not None and _runtime.orchestrator().is_asynchronous
        waited = f" after {args.timeout:g} s" if timed_out else ""
        unfinished = [job for job in api.get_jobs() if not job.is_finished()]
        summary = unfinished_jobs_summary(unfinished)
        if summary:
            print(
                f"Stopped waiting{waited}: {summary}. Run %jobs to see the jobs, or "
                "%cancel --all to cancel every unfinished job."
            )
        else:
            print(
                f"Stopped waiting{waited}: every job has finished, but not every "
                "final status is stored yet. Run %wait again."
            )

    # -- helpers ---------------------------------------------------------------------------

    def _evaluate(self, expression: str, where: str) -> Any:
        assert self.shell is not None
        try:
            return eval(expression, self.shell.user_ns)
        except Exception as error:  # noqa: BLE001 - user code may raise anything
            raise UsageError(
                f"Could not evaluate {where} {expression.strip()!r}: "
                f"{type(error).__name__}: {clause(error)}. Give a Python expression, for "
                "example 21 or 'text' (quote strings)."
            ) from None

    def _properties(self, items: list[str]) -> dict[str, Any]:
        properties = {}
        for item in items:
            key, sep, expression = item.partition("=")
            if not sep or not key.strip().isidentifier():
                raise UsageError(
                    f"--property {item!r} is not valid; write KEY=EXPRESSION, for "
                    "example --property encoding='utf-8'."
                )
            properties[key.strip()] = self._evaluate(expression, f"--property {key}")
        return properties

    def _validity(self, text: str | None) -> timedelta | None:
        if text is None:
            return None
        try:
            return parse_timedelta(text)
        except ValueError:
            raise UsageError(
                f"--validity {text!r} is not a duration; write it as 1d2h30m0s, 90m "
                "or 45s."
            ) from None

    def _configure_data_node(self, dn_id: str, **kwargs: Any) -> DataNodeConfig:
        try:
            return Config.configure_data_node(dn_id, **kwargs)
        except ScenarioError as error:
            raise UsageError(str(error)) from None

    def _data_node(self, name: str, where: str) -> DataNodeConfig:
        """Return the data node configuration ``name``, declaring it if need be."""
        name = name.strip().rstrip(",")
        known = Config.data_nodes
        if name in known:
            return known[name]
        if not name.isidentifier():
            raise UsageError(
                f"{where} {name!r} is not a valid data node id; use a Python "
                "identifier such as my_input."
            )
        config = self._configure_data_node(name)
        self._auto_declared[name] = config
        return config

    def _report_new_data_nodes(
        self, scenario: ScenarioConfig, declared_before: set[str], candidates: set[str]
    ) -> None:
        """Print what a user of ``%%scenario`` may have mistyped.

        A warning on stderr for each input that no task of ``scenario`` writes and
        that has no data, and a note on stdout for each other data node that the cell
        declared and whose name is near one of ``candidates``.
        """
        warnings = unwritten_input_warnings(scenario, self._auto_declared)
        for message in warnings.values():
            print(message, file=sys.stderr)
        new_names = [
            name
            for name in Config.data_nodes
            if name not in declared_before and name not in warnings
        ]
        notes = new_data_node_notes(
            new_names, candidates, scenario.task_configs, scenario
        )
        for note in notes:
            print(note)

    def _declared_task(self, name: str, line_number: int | None) -> TaskConfig:
        known = Config.tasks
        if name in known and name != "default":
            return known[name]
        where = f" on line {line_number}" if line_number else ""
        declared = sorted(task for task in known if task != "default")
        raise UsageError(
            f"Task {name!r}{where} is not declared; declared tasks are "
            f"{declared or 'none'}. Declare it with %%task, or write a pipeline such "
            f"as 'my_input -> {name} -> my_output' using a function of the notebook."
        )

    def _pipeline(
        self,
        text: str,
        line_number: int,
        scenario_id: str,
        earlier: dict[str, TaskConfig],
    ) -> list[TaskConfig]:
        """Declare or reuse the tasks of one pipeline line of ``%%scenario``.

        ``earlier`` maps the tasks of the cell's previous lines by id.
        """
        steps = [step.strip() for step in _ARROW.split(text)]
        if len(steps) < 3 or len(steps) % 2 == 0:
            raise UsageError(
                f"Line {line_number} {text!r} is not a pipeline: write data nodes and "
                "tasks in turn, starting and ending with data nodes, for example "
                "'my_input -> double -> my_output'."
            )
        tasks: list[TaskConfig] = []
        for position in range(1, len(steps), 2):
            inputs = _data_node_names(steps[position - 1])
            outputs = _data_node_names(steps[position + 1])
            name = steps[position]
            kept = self._declaration_to_keep(name, scenario_id, earlier, tasks)
            if kept is not None:
                declared, declared_by = kept
                _check_wiring(declared, declared_by, inputs, outputs, line_number)
                tasks.append(declared)
                continue
            task = self._pipeline_task(name, inputs, outputs, line_number)
            self._pipeline_tasks[name] = task
            tasks.append(task)
        return tasks

    def _declaration_to_keep(
        self,
        name: str,
        scenario_id: str,
        earlier: dict[str, TaskConfig],
        on_this_line: list[TaskConfig],
    ) -> tuple[TaskConfig, str] | None:
        """Return the task ``name`` that a pipeline must reuse, and who declared it.

        A task declared by ``%%task`` or ``Config.configure_task`` keeps its settings
        (skippable, properties, function). A task that a pipeline declared is kept
        while another scenario or this cell uses it. Otherwise re-running an edited
        ``%%scenario`` cell re-wires the tasks its pipelines declared.
        """
        for task in on_this_line:
            if task.id == name:
                return task, "an earlier step of this line"
        if name in earlier:
            return earlier[name], "an earlier line of this cell"
        declared = Config.tasks.get(name)
        if declared is None or name == "default":
            return None
        if declared is not self._pipeline_tasks.get(name):
            return declared, "%%task or Config.configure_task"
        for scenario in Config.scenarios.values():
            if scenario.id != scenario_id and declared in scenario.task_configs:
                return declared, f"the pipeline of scenario {scenario.id!r}"
        return None

    def _pipeline_task(
        self, name: str, inputs: list[str], outputs: list[str], line_number: int
    ) -> TaskConfig:
        assert self.shell is not None
        function = self.shell.user_ns.get(name)
        if function is None:
            known = Config.tasks.get(name)
            if known is not None and known.function is not None:
                function = known.function
        if not callable(function):
            raise UsageError(
                f"{name!r} on line {line_number} is not a function of this notebook; "
                f"define it first (def {name}(...): ...) or fix the name."
            )
        input_configs = [self._data_node(dn, f"line {line_number}") for dn in inputs]
        output_configs = [self._data_node(dn, f"line {line_number}") for dn in outputs]
        try:
            return Config.configure_task(name, function, input_configs, output_configs)
        except ScenarioError as error:
            raise UsageError(str(error)) from None

    def _run_cell_body(self, cell: str) -> list[str]:
        """Run ``cell`` in the notebook namespace; return the functions it defines."""
        assert self.shell is not None
        try:
            tree = ast.parse(cell)
        except SyntaxError as error:
            raise UsageError(
                f"The cell body has a syntax error on line {error.lineno}: {error.msg}."
            ) from None
        defined = [
            node.name
            for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        ]
        # Compiling under IPython's cell file name keeps the source in linecache, so
        # tracebacks (also those formatted in workers) show the cell's lines.
        filename = self.shell.compile.cache(cell)
        code = compile(cell, filename, "exec")
        exec(code, self.shell.user_ns)  # noqa: S102 - the user's own cell
        return defined

    def _pick_function(
        self, task_id: str, requested: str | None, defined: list[str]
    ) -> Any:
        assert self.shell is not None
        namespace = self.shell.user_ns
        if requested:
            name = requested
        elif task_id in defined:
            name = task_id
        elif defined:
            name = defined[-1]
        else:
            raise UsageError(
                f"The body of %%task {task_id} defines no function; write "
                f"'def {task_id}(...):' in the cell, or pass --function NAME."
            )
        function = namespace.get(name)
        if not callable(function):
            raise UsageError(
                f"--function {name!r} is not a function of this notebook; define it "
                "in the cell or fix the name."
            )
        return function

    def _entity(self, name: str, kinds: tuple[type, ...], expected: str) -> Any:
        """Return the entity that ``name`` refers to: a notebook variable or an id.

        Raise a UsageError unless it is one of ``kinds``, which ``expected`` names.
        """
        assert self.shell is not None
        namespace = self.shell.user_ns
        value = namespace.get(name)
        if name in namespace and not isinstance(value, str):
            entity = value
        else:
            entity = api.get(value if isinstance(value, str) else name)
        if entity is None and isinstance(value, str):
            raise UsageError(
                f"{name!r} contains {value!r}, which is not the id of a stored entity; "
                f"pass {expected}: a notebook variable holding one, or its id."
            )
        if entity is None and name not in namespace:
            raise UsageError(
                f"{name!r} is neither a notebook variable nor the id of a stored "
                f"entity; pass {expected}: a notebook variable holding one, or its id."
            )
        if not isinstance(entity, kinds):
            raise UsageError(
                f"{name!r} is of type {type(entity).__name__}, not {expected}; pass "
                f"{expected}: a notebook variable holding one, or its id."
            )
        return entity


def load(ipython: Any) -> None:
    """Register the magics and turn on widget display for submissions."""
    ipython.register_magics(ScenarioMagics)
    from .widgets import install_auto_display

    install_auto_display()


def unload(ipython: Any) -> None:
    """Turn off widget display; IPython offers no way to unregister magics."""
    from .widgets import uninstall_auto_display

    uninstall_auto_display()


def _check_timeout_option(timeout: float | None) -> None:
    """Raise a UsageError unless ``--timeout`` is a number of seconds, 0 or more."""
    if timeout is not None and not timeout >= 0:  # also NaN
        raise UsageError(
            f"--timeout {timeout:g} is not valid; give the seconds to wait, 0 or "
            "more, or leave --timeout out to wait until the jobs finish."
        )
