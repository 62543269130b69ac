"""Small Streamlit building blocks that several pages share (layout only, no logic)."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import streamlit as st

from metanlp.dashboard.attention import MEAN_OVER_HEADS, grid_choice
from metanlp.dashboard.charts import attention_grid
from metanlp.dashboard.forms import GENERAL, float_format, float_step
from metanlp.dashboard.run_view import STATUS_ICONS, RunFilter, filter_values
from metanlp.dashboard.text import plain_markdown
from metanlp.methods.options import OptionSpec


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


def option_help(spec: OptionSpec) -> str | None:
    """The declared range of a numeric option, shown as the widget's help (None when undeclared)."""
    if spec.low is None and spec.high is None:
        return None
    low = "no lower bound" if spec.low is None else f"{spec.low:g}"
    high = "no upper bound" if spec.high is None else f"{spec.high:g}"
    return f"Allowed: {low} to {high}."


def option_widget(spec: OptionSpec, key: str) -> Any:
    """Draw one method option from its declared kind, choices and range; returns the value chosen."""
    label = spec.name.replace("_", " ")
    if spec.kind == "bool":
        return st.checkbox(label, value=spec.default, key=key)
    if spec.kind == "int":
        return int(st.number_input(label, value=spec.default, step=1, key=key, help=option_help(spec)))
    if spec.kind == "float":
        return float(
            st.number_input(
                label, value=spec.default, step=float_step(spec.default), format=float_format(spec.default), key=key,
                help=option_help(spec),
            )
        )
    if spec.kind == "choice":
        return st.selectbox(label, spec.choices, index=spec.choices.index(spec.default), key=key)
    return st.text_input(label, value=str(spec.default), key=key)


# Streamlit ≥ 1.5x lays a multiselect's chosen values out on one scrolling line unless told to
# wrap, so a long run name hides the ones after it; older versions always wrap.
WRAP_TAGS: dict = {"wrap": True} if "wrap" in inspect.signature(st.multiselect).parameters else {}
WRAP_MIN_ROW_HEIGHT = 72  # px: st.dataframe wraps text only in rows taller than 4rem
LINE_HEIGHT = 22  # px per wrapped line of table text


def text_row_height(texts: Iterable[object], chars_per_line: int = 80, max_lines: int = 4) -> int | None:
    """A ``row_height`` for ``st.dataframe`` that lets the longest text wrap instead of being cut off.

    None (the default one-line rows) when every text fits on one line of about ``chars_per_line``
    characters (a "large" column); the rest of a text too long for ``max_lines`` shows on hover.
    """
    longest = max((len(str(text)) for text in texts), default=0)
    lines = min(max_lines, -(-longest // chars_per_line))
    if lines <= 1:
        return None
    return max(WRAP_MIN_ROW_HEIGHT, LINE_HEIGHT * lines + 12)


def layer_head_selector(layers: int, heads: int, key: str) -> tuple[int, int | str]:
    """Layer (0-based) and head (0-based, or the mean over heads) pickers side by side.

    A click on a map of the all-heads grid (``all_heads_grid`` with the same ``key``) picks its
    layer and head here on the next run of the page.
    """
    clicked = grid_choice(st.session_state.get(f"{key}_grid"), heads)
    if clicked is not None and clicked != st.session_state.get(f"{key}_grid_seen"):
        st.session_state[f"{key}_grid_seen"] = clicked
        st.session_state[f"{key}_layer"], st.session_state[f"{key}_head"] = min(clicked[0], layers - 1), clicked[1]
    left, right = st.columns(2)
    layer = left.selectbox("Layer", range(layers), index=layers - 1, format_func=lambda i: f"layer {i + 1}", key=f"{key}_layer")
    head = right.selectbox(
        "Head",
        [MEAN_OVER_HEADS, *range(heads)],
        format_func=lambda h: h if h == MEAN_OVER_HEADS else f"head {h + 1}",
        key=f"{key}_head",
    )
    return layer, head


def all_heads_grid(tokens: Sequence[str], attentions, title: str, key: str) -> None:
    """The layers × heads grid of small maps, folded; a click on one enlarges it (``layer_head_selector``)."""
    with st.expander("All heads at a glance", icon=":material/grid_view:"):
        st.caption("Every head of every layer (rows: layers L1…, columns: heads H1…), on one colour scale. "
                   "Click a map to enlarge it above, or pick its layer and head there.")
        st.plotly_chart(attention_grid(tokens, attentions, title), key=f"{key}_grid", on_select="rerun",
                        selection_mode="points")


def run_filter_form(records: Sequence, tags: Mapping[str, Sequence[str]], key_prefix: str) -> RunFilter:
    """Search box and status / method / dataset / tag pickers in one row; returns the filter."""
    search, status, method, dataset, tag = st.columns([2, 1, 1, 1, 1])
    text = search.text_input(
        "Search", key=f"{key_prefix}text", placeholder="name, id, method, dataset, tag or error",
    )
    statuses = status.multiselect("Status", list(STATUS_ICONS), key=f"{key_prefix}status")
    methods = method.multiselect("Method", filter_values(records, "method"), key=f"{key_prefix}method")
    datasets = dataset.multiselect("Dataset", filter_values(records, "dataset"), key=f"{key_prefix}dataset")
    all_tags = sorted({value for values in tags.values() for value in values})
    chosen_tags = tag.multiselect("Tag", all_tags, key=f"{key_prefix}tag", disabled=not all_tags,
                                  help=None if all_tags else "No run has a tag yet: add tags under 'Tag or delete runs'.")
    return RunFilter(tuple(statuses), tuple(methods), tuple(datasets), tuple(chosen_tags), text)


def runs_table_columns() -> dict:
    """Column widths and formats of the runs table: names get the room, ids and numbers stay narrow."""
    return {
        "status": st.column_config.TextColumn(width="small"),
        "name": st.column_config.TextColumn(width="large"),
        "method": st.column_config.TextColumn(width="small"),
        "dataset": st.column_config.TextColumn(width="small"),
        "setting": st.column_config.TextColumn(width="small"),
        "encoder": st.column_config.TextColumn(width="small"),
        "test accuracy": st.column_config.NumberColumn(format="%.2f %%", width="small"),
        "tags": st.column_config.TextColumn(width="medium"),
        "created": st.column_config.TextColumn(width="small"),
        "id": st.column_config.TextColumn(width="small"),
    }
