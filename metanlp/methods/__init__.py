"""Methods: one ``Method`` interface and a registry of transfer and meta-learning methods."""

from metanlp.methods.base import REQUIRED_METRICS, Method, MethodCard, TaskModel
from metanlp.methods.options import OptionError
from metanlp.methods.registry import (
    create_method,
    default_options,
    get_method_class,
    method_cards,
    method_caveat,
    method_names,
    register_method,
    would_meta_learn,
)

__all__ = [
    "REQUIRED_METRICS",
    "Method",
    "MethodCard",
    "OptionError",
    "TaskModel",
    "create_method",
    "default_options",
    "get_method_class",
    "method_caveat",
    "method_cards",
    "method_names",
    "register_method",
    "would_meta_learn",
]
