"""Method registry: a new method is one module plus one ``@register_method`` line."""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import pkgutil

from metanlp.encoders import Encoder
from metanlp.methods.base import Method, MethodCard
from metanlp.methods.options import OptionError, build_options

_METHODS: dict[str, type[Method]] = {}

# Modules of this package that hold no method; every other module is imported (lazily, so
# `import metanlp` stays light) and registers its methods itself.
_NOT_METHOD_MODULES = {"base", "conformance", "options", "registry"}


def register_method(method_class: type[Method]) -> type[Method]:
    """Class decorator: make a method available under ``method_class.card.name``."""
    name = method_class.card.name
    if name in _METHODS and _METHODS[name] is not method_class:
        raise ValueError(f"a method named {name!r} is already registered")
    _METHODS[name] = method_class
    return method_class


def _load_builtin_methods() -> None:
    import metanlp.methods as package

    for module in pkgutil.iter_modules(package.__path__):
        if module.name not in _NOT_METHOD_MODULES and not module.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{module.name}")


def method_names() -> list[str]:
    _load_builtin_methods()
    return list(_METHODS)


def method_cards() -> list[MethodCard]:
    _load_builtin_methods()
    return [method_class.card for method_class in _METHODS.values()]


def get_method_class(name: str) -> type[Method]:
    _load_builtin_methods()
    if name not in _METHODS:
        close = difflib.get_close_matches(name, list(_METHODS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise OptionError(f"unknown method {name!r}{hint}; available: {', '.join(_METHODS)}")
    return _METHODS[name]


def method_caveat(name: str) -> str:
    """The card's measured shortcoming of the method's defaults: '' for none, or for a method not registered
    (stored results may name one that has since gone)."""
    _load_builtin_methods()
    return _METHODS[name].card.caveat if name in _METHODS else ""


def default_options(name: str) -> dict:
    """The method's options with their defaults, as a plain dictionary."""
    return dataclasses.asdict(get_method_class(name).Options())


def resolved_options(name: str, options: dict | None) -> dict:
    """Every option value the method will use, defaults filled in (``OptionError`` if they do not validate)."""
    return dataclasses.asdict(build_options(get_method_class(name).Options, options))


def create_method(name: str, encoder: Encoder, options: dict | None = None) -> Method:
    """Build a registered method on ``encoder`` with validated ``options``."""
    method_class = get_method_class(name)
    return method_class(encoder, build_options(method_class.Options, options))


# A stand-in encoder small enough to build on every Train-page render: whether a configuration
# meta-learns depends on the encoder's kind (auto → frozen pretrained, trained from scratch), not its size.
_STAND_IN = {"num_layers": 2, "hidden_size": 16, "num_heads": 2, "feedforward_size": 32, "max_length": 16}


def would_meta_learn(name: str, options: dict | None, encoder_kind: str) -> bool:
    """Whether ``name`` with ``options`` has anything to meta-learn on an encoder of ``encoder_kind``.

    Built on a small stand-in encoder of that kind, so the answer comes without loading weights;
    raises ``OptionError`` for bad options, like ``create_method``.
    """
    from metanlp.encoders import build_encoder

    stand_in = build_encoder("scratch", **_STAND_IN)
    stand_in.kind = encoder_kind
    return create_method(name, stand_in, options).learns_across_tasks
