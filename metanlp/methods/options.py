"""Validated method options: dataclasses built from plain (JSON) dictionaries."""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from typing import Any


class OptionError(ValueError):
    """A bad option value; the message names the option, the value and what is allowed."""


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    kind = annotation if isinstance(annotation, type) else None
    if isinstance(annotation, str):
        kind = {"int": int, "float": float, "bool": bool, "str": str}.get(annotation)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise OptionError(f"option {name!r} must be true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise OptionError(f"option {name!r} must be an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise OptionError(f"option {name!r} must be an integer, got {value!r}") from None
    if kind is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise OptionError(f"option {name!r} must be a number, got {value!r}") from None
    if kind is str:
        return str(value)
    return value


def build_options(options_class: type, values: dict | None) -> Any:
    """Build ``options_class`` from ``values``, rejecting unknown names and wrong types.

    The dataclass may define ``validate()`` to check ranges; it raises ``OptionError``.
    """
    values = dict(values or {})
    fields = {field.name: field for field in dataclasses.fields(options_class)}
    hints = typing.get_type_hints(options_class)
    for name in values:
        if name not in fields:
            close = difflib.get_close_matches(name, list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise OptionError(
                f"unknown option {name!r}{hint}; allowed: {', '.join(sorted(fields)) or 'none'}"
            )
    coerced = {name: _coerce(name, value, hints.get(name, fields[name].type)) for name, value in values.items()}
    for name, value in coerced.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise OptionError(f"option {name!r} must be a finite number, got {value!r}")
    options = options_class(**coerced)
    validate = getattr(options, "validate", None)
    if validate is not None:
        validate()
    return options


def check_range(name: str, value: float, low: float | None = None, high: float | None = None) -> None:
    """Raise ``OptionError`` unless low <= value <= high (either bound may be None); NaN never passes."""
    if value != value or (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        raise OptionError(f"option {name!r} must be in {bounds}, got {value}")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise OptionError(f"option {name!r} must be one of {', '.join(choices)}; got {value!r}")
