"""Parsing of magic lines: IPython's ``magic_arguments`` with messages for notebooks.

Every error is IPython's ``UsageError`` naming the option and the value as the user
typed it, and the fix.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, TypeVar

from IPython.core.error import UsageError

from .config.templates import is_template
from .exceptions import clause
from .magic_notes import did_you_mean
from .storage import STORAGE_TYPES

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

    _Function = TypeVar("_Function", bound=Callable[..., Any])
    _Member = TypeVar("_Member", bound=enum.Enum)

    # IPython.core.magic_arguments has no annotations. Each of its decorators returns
    # the function it decorates. IPython types line_magic(function) as returning
    # "function or decorator" although it returns the function, so these decorators
    # accept that union too.
    def magic_arguments(
        name: str | None = None,
    ) -> Callable[[_Function | Callable[[_Function], _Function]], _Function]: ...

    def argument(
        *args: Any, **kwargs: Any
    ) -> Callable[[_Function | Callable[[_Function], _Function]], _Function]: ...

    def parse_argstring(
        magic_func: Callable[..., Any], argstring: str, *, partial: bool = False
    ) -> argparse.Namespace: ...

else:
    from IPython.core.magic_arguments import parse_argstring

# Options whose values are Python source keep their quotes, because in
# ``--default 'text'`` the quotes make a string literal.
_PYTHON_SOURCE_OPTIONS = frozenset({"default", "property"})


def parse_args(magic: Any, line: str) -> Any:
    """Parse a magic's line with its ``magic_arguments``, splitting it like a shell.

    IPython's splitting keeps a quoted span with spaces as one word, quotes
    included. The quotes are removed here from every value except Python source
    ones, so that ``%export_config "my config.toml"`` names ``my config.toml``.
    """
    name = magic.__name__
    try:
        args = parse_argstring(magic, line)
    except ValueError as error:
        # Raised by shlex, for example "No closing quotation".
        raise UsageError(
            f"Could not split %{name} {line.strip()}: {error}. Close every quote "
            f"and run %{name}? for the options."
        ) from None
    except UsageError as error:
        raise UsageError(
            f"%{name} {line.strip()}: {clause(error)}. "
            + _parse_error_hint(name, line, str(error))
        ) from None
    except SystemExit:
        raise UsageError(
            f"Could not parse {line!r}; run %{name}? for the options."
        ) from None
    for key, value in vars(args).items():
        if key in _PYTHON_SOURCE_OPTIONS:
            continue
        if isinstance(value, str):
            setattr(args, key, _unquote(value))
        elif isinstance(value, list):
            setattr(args, key, [_unquote(item) for item in value])
    return args


def _parse_error_hint(name: str, line: str, error: str) -> str:
    """Return the advice for a line that argparse could not parse."""
    _, found, extra = error.partition("unrecognized arguments:")
    if found and extra.strip().startswith("-"):
        return f"Run %{name}? for the options."  # a misspelt option
    words = line.split()
    if any(
        word.split("=", 1)[0] in ("--default", "-p", "--property") for word in words
    ):
        # Quotes cannot help there: they would make a string of the expression.
        return (
            "The values of --default and -p are Python expressions: write them "
            "without spaces (--default [1,2]), or put the default data in the "
            "body of a %%datanode cell. Quotes would make a string of them. Run "
            f"%{name}? for the options."
        )
    if found:
        # A value with spaces, read as several arguments.
        return f"Quote a value that contains spaces and run %{name}? for the options."
    return f"Run %{name}? for the options."


def enum_option(
    enum_class: type[_Member], option: str, typed: str | None
) -> _Member | None:
    """Return the member of ``enum_class`` named ``typed`` in any case, or None.

    The error names the value as the user typed it.
    """
    if typed is None:
        return None
    try:
        return enum_class[typed.upper()]
    except KeyError:
        names = [member.name for member in enum_class]
        spelled = [name.lower() for name in names] if typed.islower() else names
        raise UsageError(
            f"{option} {typed!r} is not valid; give one of {', '.join(names)}, in "
            f"any case.{did_you_mean(typed, spelled)}"
        ) from None


def check_storage_option(typed: str | None) -> None:
    if typed is None or typed in STORAGE_TYPES or is_template(typed):
        return
    names = ", ".join(repr(name) for name in STORAGE_TYPES)
    raise UsageError(
        f"--storage {typed!r} is not a storage type; give one of {names}."
        f"{did_you_mean(typed, STORAGE_TYPES)}"
    )


def _unquote(word: str) -> str:
    if len(word) >= 2 and word[0] == word[-1] and word[0] in "'\"":
        return word[1:-1]
    return word
