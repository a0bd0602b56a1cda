"""What the magics print to a user who makes a mistake, and what they keep quiet about.

Each test runs the magics in a real IPython kernel: a misspelt data node name, a wait
for jobs that stay BLOCKED, counts of one, and a misspelt option value.
"""

from __future__ import annotations

import pytest
from helpers.kernel import ExecutionResult, KernelSession
from test_magics import SETUP_CELL, print_json, run_json

pytestmark = pytest.mark.timeout(300)

# Seconds a cell that starts worker processes may take on a loaded machine.
CELL_TIMEOUT = 60.0

TYPO_TASK_CELL = """\
%%task double --inputs my_inptu --outputs intermediate
def double(nb):
    return nb * 2
"""

DOUBLE_TASK_CELL = """\
%%task double --inputs my_input --outputs {output}
def double(nb):
    return nb * 2
"""


def usage_error(result: ExecutionResult) -> str:
    """Return the UsageError message of a failed cell, checking it has no traceback."""
    assert result.status == "error", "the cell was accepted"
    assert result.errors == [], "a traceback was shown instead of a UsageError"
    assert "UsageError:" in result.stderr, result.stderr
    return result.stderr


def assert_quiet(result: ExecutionResult, cell: str) -> None:
    assert result.stdout == "", f"{cell!r} printed {result.stdout!r}"
    assert result.stderr == "", f"{cell!r} printed on stderr {result.stderr!r}"


# ---------------------------------------------------------------------------------
# Data node names that a magic declares on the way
# ---------------------------------------------------------------------------------


def test_task_input_typo_suggests_name(kernel: KernelSession) -> None:
    kernel.execute(SETUP_CELL).check()
    kernel.execute("%datanode my_input --default 21").check()

    result = kernel.execute(TYPO_TASK_CELL).check()

    note = result.stdout
    assert "'my_inptu'" in note, note
    assert "did you mean 'my_input'?" in note.lower(), note
    assert "pickle" in note, "the note does not give the default storage type"
    assert "SCENARIO" in note, "the note does not give the default scope"
    assert "intermediate" not in note, "an output without a near name was reported"
    declared = run_json(kernel, print_json("'my_inptu' in Config.data_nodes"))
    assert declared is True, "the note replaced the declaration"


def test_suggestion_goes_to_nearest_name(kernel: KernelSession) -> None:
    kernel.execute(SETUP_CELL).check()
    kernel.execute("%datanode my_input --default 21").check()

    result = kernel.execute(
        DOUBLE_TASK_CELL.replace("my_input", "my_inptu").format(output="my_output")
    ).check()

    # my_output is near my_input too, but my_inptu is nearer: one note, for it.
    assert result.stdout.count("Did you mean 'my_input'?") == 1, result.stdout
    assert "'my_inptu'" in result.stdout, result.stdout
    assert "'my_output'" not in result.stdout, result.stdout


def test_task_output_typo_suggests_name(kernel: KernelSession) -> None:
    kernel.execute(SETUP_CELL).check()
    kernel.execute("%datanode my_input --default 21\n%datanode result").check()

    result = kernel.execute(
        "%%task double --inputs my_input --outputs reslut\n"
        "def double(nb):\n"
        "    return nb * 2\n"
    ).check()

    assert "'reslut'" in result.stdout, result.stdout
    assert "did you mean 'result'?" in result.stdout.lower(), result.stdout
    assert result.stderr == "", "an output was reported as a warning"


def test_used_name_is_not_suggested(kernel: KernelSession) -> None:
    # price_a is already read by a task, so price_b is a new node, not a typo.
    kernel.execute(SETUP_CELL).check()
    kernel.execute("%datanode price_a --default 1").check()
    kernel.execute(
        "%%task first --inputs price_a --outputs out_a\ndef first(x):\n    return x\n"
    ).check()

    cell = (
        "%%task second --inputs price_b --outputs out_b\ndef second(x):\n    return x\n"
    )
    result = kernel.execute(cell).check()

    assert_quiet(result, cell)


def test_name_near_own_input_is_quiet(kernel: KernelSession) -> None:
    # Notebook 05: readings is near raw_readings, which the same task reads.
    kernel.execute(SETUP_CELL).check()
    kernel.execute("%datanode raw_readings --default [1,2]").check()

    cell = (
        "%%task clean --inputs raw_readings --outputs readings\n"
        "def clean(values):\n"
        "    return values\n"
    )
    result = kernel.execute(cell).check()

    assert_quiet(result, cell)


def test_scenario_warns_unwritten_input(kernel: KernelSession) -> None:
    kernel.execute(SETUP_CELL).check()
    kernel.execute("%datanode my_input --default 21").check()
    kernel.execute(TYPO_TASK_CELL).check()

    result = kernel.execute("%%scenario broken\ndouble").check()

    warning = result.stderr
    assert "'my_inptu'" in warning, warning
    assert "'double'" in warning, "the warning does not name the task reading it"
    assert "BLOCKED" in warning, "the warning does not say what happens to the job"
    assert "did you mean 'my_input'?" in warning.lower(), warning
    assert "%datanode my_inptu --default" in warning, "no fix is given"


def test_pipeline_warns_unwritten_input(kernel: KernelSession) -> None:
    kernel.execute(SETUP_CELL).check()
    kernel.execute("def double(nb):\n    return nb * 2\n").check()

    result = kernel.execute("%%scenario loose\nsource -> double -> target").check()

    assert "'source'" in result.stderr, result.stderr
    assert "BLOCKED" in result.stderr, result.stderr
    assert "'target'" not in result.stderr, "a written output was reported"
    assert result.stdout == ""


def test_readme_first_notebook_is_quiet(kernel: KernelSession) -> None:
    # The README declares the task before its input data node.
    kernel.execute(SETUP_CELL).check()
    cells = [
        DOUBLE_TASK_CELL.format(output="my_output"),
        "%datanode my_input --default 21",
        "%%scenario my_scenario\ndouble",
    ]
    for cell in cells:
        assert_quiet(kernel.execute(cell).check(), cell)


def test_magic_tutorial_is_quiet(kernel: KernelSession) -> None:
    kernel.execute(SETUP_CELL).check()
    cells = [
        "%datanode my_input --default 21",
        DOUBLE_TASK_CELL.format(output="intermediate"),
        "def add(nb):\n    return nb + 10\n",
        "%%scenario my_scenario\nmy_input -> double -> intermediate -> add -> my_output",
    ]
    for cell in cells:
        assert_quiet(kernel.execute(cell).check(), cell)


# ---------------------------------------------------------------------------------
# Waiting for jobs that stay BLOCKED
# ---------------------------------------------------------------------------------


def submit_blocked(kernel: KernelSession) -> None:
    """Declare and submit a scenario whose only job stays BLOCKED."""
    kernel.execute(SETUP_CELL).check()
    kernel.execute("%scenario_config --mode standalone --workers 1").check()
    kernel.execute("%datanode my_input --default 21").check()
    kernel.execute(TYPO_TASK_CELL).check()
    kernel.execute("%%scenario broken --create scenario\ndouble").check()
    kernel.execute("submission = tp.submit(scenario)", timeout=CELL_TIMEOUT).check()


def test_wait_timeout_names_blocked_jobs(kernel: KernelSession) -> None:
    submit_blocked(kernel)

    result = kernel.execute("%wait --timeout 1", timeout=CELL_TIMEOUT).check()

    assert "timed out after 1 s" in result.stderr, result.stderr
    assert "1 of 1 job is not finished" in result.stderr, result.stderr
    assert "stay BLOCKED until their inputs are written" in result.stderr
    assert "keep running" not in result.stderr, result.stderr
    assert "%cancel --all" in result.stderr, "the stuck warning gives no way out"
    assert "1 job is still BLOCKED" in result.stdout, result.stdout
    assert "running" not in result.stdout.lower(), result.stdout
    cancel = kernel.execute("%cancel --all", timeout=CELL_TIMEOUT).check()
    assert cancel.stdout == "Cancelled 1 job.\n"


def test_storage_switch_says_unfinished_jobs_keep_old_one(
    kernel: KernelSession,
) -> None:
    submit_blocked(kernel)
    current = run_json(
        kernel,
        print_json("str(__import__('jupyter_scenarios')._runtime.storage_folder())"),
    )

    result = kernel.execute("%scenario_config --storage other_store").check()

    lines = result.stdout.splitlines()
    assert "other_store once the scheduler's unfinished job ends" in lines[0], lines
    assert f"stores entities in {current}" in lines[0], lines
    assert lines[1] == (
        "That job is BLOCKED until its inputs are written; %cancel --all cancels it."
    ), lines
    kernel.execute("%cancel --all", timeout=CELL_TIMEOUT).check()
    switched = kernel.execute("%scenario_config --storage other_store").check()
    assert switched.stdout.startswith("Jobs run in standalone mode"), switched.stdout
    assert switched.stdout.rstrip().endswith("other_store."), switched.stdout


@pytest.mark.parametrize(
    ("cell", "shown"),
    [
        ("%wait --timeout nan", "--timeout nan"),
        ("%wait --timeout -2", "--timeout -2"),
        ("%submit scenario --wait --timeout nan", "--timeout nan"),
    ],
)
def test_bad_timeout_option_is_usage_error(
    kernel: KernelSession, cell: str, shown: str
) -> None:
    submit_blocked(kernel)

    message = usage_error(kernel.execute(cell, timeout=CELL_TIMEOUT))

    assert f"{shown} is not valid" in message, message
    kernel.execute("%cancel --all", timeout=CELL_TIMEOUT).check()


def test_development_wait_names_blocked_jobs(kernel: KernelSession) -> None:
    # In development mode %wait returns at once: no job will write my_inptu.
    kernel.execute(SETUP_CELL).check()
    kernel.execute("%datanode my_input --default 21").check()
    kernel.execute(TYPO_TASK_CELL).check()
    kernel.execute("%%scenario broken --create scenario\ndouble").check()
    kernel.execute("submission = tp.submit(scenario)").check()

    for cell in ("%wait", "%wait --timeout 5"):
        result = kernel.execute(cell).check()

        assert result.stdout.startswith("Stopped waiting: 1 job is still BLOCKED."), (
            f"{cell!r} printed {result.stdout!r}"
        )
        assert "1 BLOCKED job (double)" in result.stderr, result.stderr


def test_submit_timeout_matches_wait(kernel: KernelSession) -> None:
    submit_blocked(kernel)

    result = kernel.execute(
        "%submit scenario --wait --timeout 0.5", timeout=CELL_TIMEOUT
    ).check()

    assert "timed out after 0.5 s" in result.stderr, result.stderr
    assert "%cancel --all" in result.stderr, result.stderr
    kernel.execute("%cancel --all", timeout=CELL_TIMEOUT).check()


def test_jobs_note_counts_one_job(kernel: KernelSession) -> None:
    submit_blocked(kernel)

    result = kernel.execute("%jobs").check()

    text = result.display_data[0]["text/plain"]
    assert "1 job: 1 BLOCKED." in text, text
    kernel.execute("%cancel --all", timeout=CELL_TIMEOUT).check()


# ---------------------------------------------------------------------------------
# Option values
# ---------------------------------------------------------------------------------


def test_task_cell_with_helpers_names_chosen_function(kernel: KernelSession) -> None:
    kernel.execute(SETUP_CELL).check()
    cell = (
        "%%task scaled --inputs my_input --outputs out\n"
        "def helper(x):\n    return x * 3\n\n"
        "def main(x):\n    return helper(x)\n"
    )

    result = kernel.execute(cell).check()

    assert "runs main(), the last of the functions this cell defines" in (
        result.stdout
    ), result.stdout
    assert "(helper, main)" in result.stdout, result.stdout
    named = kernel.execute(cell.replace("def main", "def scaled")).check()
    assert "runs" not in named.stdout, named.stdout


def test_storage_typo_names_option(kernel: KernelSession) -> None:
    kernel.execute(SETUP_CELL).check()

    message = usage_error(kernel.execute("%datanode x --storage jsn"))

    assert "--storage 'jsn'" in message, message
    assert "storage_type" not in message, "the message names the Python argument"
    assert "'json'" in message, message


@pytest.mark.parametrize(
    ("cell", "typed"),
    [
        ("%datanode y --scope scenaro", "'scenaro'"),
        ("%%scenario s --frequency dayly\ndouble", "'dayly'"),
    ],
    ids=["scope", "frequency"],
)
def test_choice_typo_echoes_value(kernel: KernelSession, cell: str, typed: str) -> None:
    kernel.execute(SETUP_CELL).check()

    message = usage_error(kernel.execute(cell))

    assert typed in message, message
    assert typed.upper() not in message, "the message shows the value upper-cased"


def test_default_with_spaces_says_not_to_quote(kernel: KernelSession) -> None:
    # Quoting "[1, 2]" would make the default the string '[1, 2]'.
    kernel.execute(SETUP_CELL).check()

    for cell in ("%datanode t --default [1, 2]", "%datanode t --default=[1, 2]"):
        message = usage_error(kernel.execute(cell))
        assert "--default [1,2]" in message, message
        assert "%%datanode" in message, message
        assert "Quote a value" not in message, message
    misspelt = usage_error(kernel.execute("%datanode t --default [1,2] --bogus x"))
    assert "Run %datanode? for the options." in misspelt, misspelt
    assert "spaces" not in misspelt, misspelt
    kernel.execute("%datanode t --default [1,2]").check()
    default = run_json(kernel, print_json("Config.data_nodes['t'].default_data"))
    assert default == [1, 2]


def test_path_with_spaces_says_to_quote(kernel: KernelSession) -> None:
    kernel.execute(SETUP_CELL).check()

    message = usage_error(kernel.execute("%datanode t --path my data.csv"))

    assert "Quote a value that contains spaces" in message, message


def test_invalid_choice_skips_quote_advice(kernel: KernelSession) -> None:
    kernel.execute(SETUP_CELL).check()

    message = usage_error(kernel.execute("%scenario_config --mode standlone"))

    assert "standlone" in message, message
    assert "Run %scenario_config? for the options." in message, message
    assert "Quote a value" not in message, message


def test_scope_any_case_accepted(kernel: KernelSession) -> None:
    kernel.execute(SETUP_CELL).check()
    kernel.execute("%datanode target --scope cycle --default 1").check()

    scope = run_json(kernel, print_json("Config.data_nodes['target'].scope.name"))

    assert scope == "CYCLE"
