"""Small Streamlit building blocks that several pages share (layout only, no logic)."""

from __future__ import annotations

from typing import Any

import streamlit as st

from metanlp.dashboard.attention import MEAN_OVER_HEADS
from metanlp.dashboard.forms import GENERAL, OptionSpec, float_format, float_step
from metanlp.dashboard.text import plain_markdown


class FieldMessages:
    """Empty slots placed right under widgets, filled with that field's validation message.

    Pages lay out every widget first (each followed by ``slot(field)``), validate, then call
    ``show(errors)``: each message lands beside its own field in the same rerun.
    """

    def __init__(self) -> None:
        self._slots: dict[str, Any] = {}

    def slot(self, field: str) -> None:
        self._slots[field] = st.empty()

    def show(self, errors: dict[str, str]) -> None:
        for field, message in errors.items():
            target = self._slots.get(field) or self._slots.get(GENERAL)
            if target is None:
                target = st.empty()
            target.error(plain_markdown(message), icon=":material/warning:")


def option_widget(spec: OptionSpec, key: str) -> Any:
    """Draw one method option generically from its kind; returns the value chosen."""
    label = spec.name.replace("_", " ")
    if spec.kind == "bool":
        return st.checkbox(label, value=spec.default, key=key)
    if spec.kind == "int":
        return int(st.number_input(label, value=spec.default, step=1, key=key))
    if spec.kind == "float":
        return float(
            st.number_input(
                label, value=spec.default, step=float_step(spec.default), format=float_format(spec.default), key=key
            )
        )
    if spec.kind == "choice":
        return st.selectbox(label, spec.choices, index=spec.choices.index(spec.default), key=key)
    return st.text_input(label, value=str(spec.default), key=key)


def layer_head_selector(layers: int, heads: int, key: str) -> tuple[int, int | str]:
    """Layer (0-based) and head (0-based, or the mean over heads) pickers side by side."""
    left, right = st.columns(2)
    layer = left.selectbox("Layer", range(layers), index=layers - 1, format_func=lambda i: f"layer {i + 1}", key=f"{key}_layer")
    head = right.selectbox(
        "Head",
        [MEAN_OVER_HEADS, *range(heads)],
        format_func=lambda h: h if h == MEAN_OVER_HEADS else f"head {h + 1}",
        key=f"{key}_head",
    )
    return layer, head
