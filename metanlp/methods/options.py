"""Validated method options: dataclasses built from plain (JSON) dictionaries.

Each option declares its range or choices where it is defined (``option(default, low=…, high=…)``
or ``option(default, choices=…)``), so the checks, the dashboard's widgets and the error's field
all come from one declaration; ``validate()`` is left for rules between options.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass
from typing import Any


class OptionError(ValueError):
    """A bad option value; the message names the option, the value and what is allowed.

    ``option`` is the name of the option it is about (None when it concerns no single option), so
    a form can put the message beside the right widget without reading the message.
    """

    def __init__(self, message: str, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


_SCHEMA = "metanlp.option"  # key of an option's declaration in its dataclass field's metadata


@dataclass(frozen=True)
class OptionSpec:
    """What an option accepts: its kind (bool, int, float, choice or text), default, range and choices."""

    name: str
    kind: str
    default: Any
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()

    def check(self, value: Any) -> None:
        """Raise ``OptionError`` (naming this option) when ``value`` is outside the declared range or choices."""
        if self.choices:
            check_choice(self.name, value, self.choices)
        elif self.low is not None or self.high is not None:
            check_range(self.name, value, self.low, self.high)


def option(default: Any, *, low: float | None = None, high: float | None = None, choices: tuple[str, ...] = ()) -> Any:
    """A dataclass field with its allowed range (``low``/``high``, inclusive) or ``choices`` declared."""
    if choices and default not in choices:
        raise ValueError(f"default {default!r} is not one of {choices}")
    return dataclasses.field(default=default, metadata={_SCHEMA: {"low": low, "high": high, "choices": tuple(choices)}})


def _declaration(options_class: type, name: str) -> dict:
    """The range/choices declared for ``name`` by the nearest class that declares any.

    A subclass that only changes a default (``head_init: str = "prototype"``) keeps its base's declaration.
    """
    for klass in options_class.__mro__:
        declared = getattr(klass, "__dataclass_fields__", {}).get(name)
        if declared is not None and _SCHEMA in declared.metadata:
            return declared.metadata[_SCHEMA]
    return {}


def _kind(annotation: Any, choices: tuple[str, ...]) -> str:
    kind = {"bool": "bool", "int": "int", "float": "float"}.get(getattr(annotation, "__name__", str(annotation)))
    return kind or ("choice" if choices else "text")


def option_specs(options_class: type) -> list[OptionSpec]:
    """The declared schema of every option of ``options_class``, in field order."""
    hints = typing.get_type_hints(options_class)
    defaults = options_class()
    specs = []
    for declared in dataclasses.fields(options_class):
        info = _declaration(options_class, declared.name)
        choices = tuple(info.get("choices", ()))
        specs.append(OptionSpec(
            name=declared.name,
            kind=_kind(hints.get(declared.name, declared.type), choices),
            default=getattr(defaults, declared.name),
            low=info.get("low"),
            high=info.get("high"),
            choices=choices,
        ))
    return specs


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    kind = annotation if isinstance(annotation, type) else None
    if isinstance(annotation, str):
        kind = {"int": int, "float": float, "bool": bool, "str": str}.get(annotation)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise OptionError(f"option {name!r} must be true or false, got {value!r}", name)
    if kind is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise OptionError(f"option {name!r} must be an integer, got {value!r}", name)
        try:
            return int(value)
        except (TypeError, ValueError):
            raise OptionError(f"option {name!r} must be an integer, got {value!r}", name) from None
    if kind is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise OptionError(f"option {name!r} must be a number, got {value!r}", name) from None
    if kind is str:
        return str(value)
    return value


def build_options(options_class: type, values: dict | None) -> Any:
    """Build ``options_class`` from ``values``, rejecting unknown names and wrong types.

    Declared ranges and choices are checked here (see ``option``); the dataclass may define
    ``validate()`` for rules between options; both raise ``OptionError``.
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
            raise OptionError(f"option {name!r} must be a finite number, got {value!r}", name)
    options = options_class(**coerced)
    for spec in option_specs(options_class):
        spec.check(getattr(options, spec.name))
    validate = getattr(options, "validate", None)
    if validate is not None:
        validate()
    return options


def check_range(name: str, value: float, low: float | None = None, high: float | None = None) -> None:
    """Raise ``OptionError`` unless low <= value <= high (either bound may be None); NaN never passes."""
    if value != value or (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        raise OptionError(f"option {name!r} must be in {bounds}, got {value}", name)


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise OptionError(f"option {name!r} must be one of {', '.join(choices)}; got {value!r}", name)
