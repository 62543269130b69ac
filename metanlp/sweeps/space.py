"""A sweep's search space: method options with ranges (or choices), checked against their declared schema.

Every parameter must be an option of the method and stay inside the range (or choices) the
option declares (``methods.options.option``), so a trial can never ask for a value the method
would refuse. Each method has a small default space: the options that matter most for it, over
ranges narrower than what the option accepts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from metanlp.engine.config import ConfigError
from metanlp.methods.options import OptionSpec, option_specs
from metanlp.methods.registry import get_method_class


@dataclass(frozen=True)
class Param:
    """One dimension: a float or int range (``log`` for a log scale), or categorical ``choices``."""

    name: str
    kind: str  # "float", "int" or "choice"
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.kind == "choice":
            return f"{self.name}={'|'.join(self.choices)}"
        return f"{self.name}={self.low:g}:{self.high:g}" + (":log" if self.log else "")


_LR = ("lr", 1e-4, 3e-2, True)
DEFAULT_SPACES: dict[str, tuple[tuple, ...]] = {
    "protonet": (("lr", 1e-5, 1e-2, True), ("scale", 1.0, 100.0, True)),
    "matching": (_LR, ("scale", 1.0, 100.0, True)),
    "relation": (_LR, ("scale", 1.0, 100.0, True)),
    "induction": (_LR, ("scale", 1.0, 100.0, True)),
    "hypernetwork": (_LR, ("scale", 1.0, 100.0, True)),
    "maml": (("lr", 1e-3, 1e-1, True), ("inner_lr", 0.01, 1.0, True), ("prototype_scale", 1.0, 30.0, True),
             ("body_decay", 0.3, 10.0, True)),
    "fomaml": (("lr", 1e-3, 1e-1, True), ("inner_lr", 0.01, 1.0, True), ("prototype_scale", 1.0, 30.0, True),
               ("body_decay", 0.3, 10.0, True)),
    "anil": (("lr", 1e-3, 1e-1, True), ("inner_lr", 0.01, 1.0, True), ("prototype_scale", 1.0, 30.0, True)),
    "mann": (_LR,),
    "lstm_meta_learner": (_LR, ("initial_step_size", 0.01, 0.5, True)),
    "finetune": (("head_lr", 1e-3, 1.0, True), ("adapt_steps", 20, 200, False)),
    "meta_transfer": (("lr", 1e-4, 1e-2, True),),
}
FALLBACK_SPACE = (("lr", 1e-5, 1e-2, True),)


def _declared(method: str) -> dict[str, OptionSpec]:
    return {spec.name: spec for spec in option_specs(get_method_class(method).Options)}


def check_param(method: str, param: Param) -> Param:
    """``ConfigError`` unless ``param`` names an option of ``method`` and stays within what it declares."""
    declared = _declared(method)
    spec = declared.get(param.name)
    if spec is None:
        raise ConfigError(f"{method} has no option {param.name!r}; its options: {', '.join(declared)}")
    if param.kind == "choice" or spec.kind == "choice":
        if spec.kind != "choice":
            raise ConfigError(f"option {param.name!r} is a {spec.kind}: give a range low:high, not choices")
        if param.kind != "choice":
            raise ConfigError(f"option {param.name!r} takes one of {', '.join(spec.choices)}: give them as a|b")
        unknown = [choice for choice in param.choices if choice not in spec.choices]
        if unknown:
            raise ConfigError(f"option {param.name!r} has no choice {', '.join(unknown)}; "
                              f"choose from {', '.join(spec.choices)}")
        return param
    if spec.kind not in ("int", "float"):
        raise ConfigError(f"option {param.name!r} ({spec.kind}) cannot be searched")
    low, high = float(param.low), float(param.high)
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise ConfigError(f"the range of {param.name!r} needs low < high, got {low:g}:{high:g}")
    if (spec.low is not None and low < spec.low) or (spec.high is not None and high > spec.high):
        raise ConfigError(f"option {param.name!r} accepts {spec.low:g} to {spec.high:g}; {low:g}:{high:g} is outside")
    if param.log and low <= 0:
        raise ConfigError(f"a log range for {param.name!r} must start above 0, got {low:g}")
    kind = spec.kind
    if kind == "int" and not (low.is_integer() and high.is_integer()):
        raise ConfigError(f"option {param.name!r} is a whole number: give whole bounds, got {low:g}:{high:g}")
    return Param(param.name, kind, int(low) if kind == "int" else low, int(high) if kind == "int" else high, param.log)


def parse_param(text: str) -> Param:
    """``name=low:high[:log]`` or ``name=a|b|c`` (not yet checked against a method)."""
    name, separator, value = text.partition("=")
    name = name.strip()
    if not separator or not name or not value:
        raise ConfigError(f"--param needs name=low:high[:log] or name=a|b, got {text!r}")
    if "|" in value:
        return Param(name, "choice", choices=tuple(part.strip() for part in value.split("|") if part.strip()))
    parts = value.split(":")
    log = len(parts) == 3 and parts[2].strip().lower() == "log"
    if len(parts) not in (2, 3) or (len(parts) == 3 and not log):
        raise ConfigError(f"--param needs name=low:high or name=low:high:log, got {text!r}")
    try:
        low, high = float(parts[0]), float(parts[1])
    except ValueError:
        raise ConfigError(f"--param {name}: bounds must be numbers, got {value!r}") from None
    return Param(name, "float", low, high, log)


def default_space(method: str) -> list[Param]:
    """The method's default search space (a learning rate where nothing better is known), checked."""
    rows = DEFAULT_SPACES.get(method, FALLBACK_SPACE)
    declared = _declared(method)
    return [check_param(method, Param(name, "float", low, high, log))
            for name, low, high, log in rows if name in declared]


def search_space(method: str, params: list[Param] | None) -> list[Param]:
    """The given parameters checked (a name twice is refused), else the default space."""
    if not params:
        space = default_space(method)
        if not space:
            raise ConfigError(f"{method} has no default search space: give --param name=low:high")
        return space
    names = [param.name for param in params]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"--param names {', '.join(repeated)} more than once")
    return [check_param(method, param) for param in params]
