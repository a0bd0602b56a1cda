"""Environment templates in configuration values.

A value written as ``"ENV[NAME]"`` or ``"ENV[NAME]:int"`` is kept as written in the
configuration (so that exporting writes the template back) and resolved from the
environment each time the value is used.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from typing import Any

from ..exceptions import ConfigurationError

TEMPLATE_PATTERN = re.compile(r"^ENV\[([A-Za-z_][A-Za-z0-9_]*)\](?::([A-Za-z]+))?$")


def is_template(value: object) -> bool:
    """Return whether ``value`` is an ``ENV[NAME]`` template."""
    return isinstance(value, str) and TEMPLATE_PATTERN.match(value) is not None


def resolve(value: Any, *, where: str = "") -> Any:
    """Return ``value`` with an ``ENV[NAME]`` template replaced by the variable.

    Values that are not templates are returned unchanged; lists, tuples and dicts are
    resolved item by item.
    """
    if isinstance(value, str):
        match = TEMPLATE_PATTERN.match(value)
        if match is None:
            return value
        name, type_name = match.group(1), match.group(2)
        if name not in os.environ:
            location = f" in {where}" if where else ""
            raise ConfigurationError(
                f"Environment variable {name!r} used by the template {value!r}"
                f"{location} is not set; set it before using this value or replace "
                "the template with a literal value."
            )
        raw = os.environ[name]
        return convert_typed(raw, type_name or "str", where=f"{value!r}")
    if isinstance(value, list):
        return [resolve(item, where=where) for item in value]
    if isinstance(value, tuple):
        return tuple(resolve(item, where=where) for item in value)
    if isinstance(value, dict):
        return {key: resolve(item, where=where) for key, item in value.items()}
    return value


def convert_typed(raw: str, type_name: str, *, where: str = "") -> Any:
    """Convert the text ``raw`` to the scalar type named ``type_name``.

    Handles the scalar suffixes of Taipy's TOML format: str, int, float, bool and
    timedelta. Other suffixes are handled by the TOML reader itself.
    """
    lowered = type_name.lower()
    try:
        if lowered == "str":
            return raw
        if lowered == "int":
            return int(raw)
        if lowered == "float":
            return float(raw)
        if lowered == "bool":
            if raw.strip().lower() in ("true", "1", "yes"):
                return True
            if raw.strip().lower() in ("false", "0", "no"):
                return False
            raise ValueError(raw)
        if lowered == "timedelta":
            return parse_timedelta(raw)
    except ValueError:
        raise ConfigurationError(
            f"Value {raw!r} of {where or 'a configuration entry'} is not a valid "
            f"{type_name}; write it as a {type_name} (for example "
            f"{_EXAMPLES.get(lowered, '...')})."
        ) from None
    raise ConfigurationError(
        f"Type suffix {type_name!r} of {where or 'a configuration entry'} is not "
        f"supported here; use one of {', '.join(sorted(_EXAMPLES))}."
    )


_EXAMPLES = {
    "str": "'text'",
    "int": "'21'",
    "float": "'0.5'",
    "bool": "'True'",
    "timedelta": "'1d2h0m0s'",
}

_TIMEDELTA_PATTERN = re.compile(
    r"^\s*(?:(?P<days>-?\d+(?:\.\d+)?)d)?\s*(?:(?P<hours>-?\d+(?:\.\d+)?)h)?\s*"
    r"(?:(?P<minutes>-?\d+(?:\.\d+)?)m)?\s*(?:(?P<seconds>-?\d+(?:\.\d+)?)s)?\s*$"
)


def parse_timedelta(text: str) -> timedelta:
    """Parse Taipy's duration text such as ``1d2h0m0s`` into a timedelta."""
    match = _TIMEDELTA_PATTERN.match(text)
    if match is None or not any(match.groupdict().values()):
        raise ValueError(text)
    parts = {key: float(value) for key, value in match.groupdict().items() if value}
    return timedelta(**parts)


def format_timedelta(value: timedelta) -> str:
    """Format a timedelta as Taipy's duration text, for example ``1d2h0m0s``."""
    total = int(value.total_seconds())
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{days}d{hours}h{minutes}m{seconds}s"
