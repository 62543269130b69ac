"""What a page shows when the run store fails: an error box that says what to do, never a traceback.

``app.py`` runs every page inside ``guard_store``'s handler, so a ``StoreError`` raised anywhere in a
page (opening the store, listing runs, drawing curves) ends that page with ``show_store_error``;
fragments, which rerun on their own, wrap themselves with ``guard_store``. A damaged database
also gets a button that moves it aside and starts a fresh store: the only way the dashboard ever
replaces it, and only on a click (behind the access token when the dashboard is on a network).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import streamlit as st

from metanlp.dashboard.access import write_access
from metanlp.dashboard.text import plain_markdown
from metanlp.runs.store import StoreCorrupted, StoreError

RESET_LABEL = "Move the damaged store aside and start a fresh one"
RESET_OUTCOME = "store_reset_outcome"  # session key: ("success" | "error", lines) of the last reset click


def show_store_error(error: StoreError) -> None:
    """The error box, plus the reset button for a damaged database."""
    st.error(plain_markdown(error), icon=":material/database:")
    if isinstance(error, StoreCorrupted) and write_access("move the damaged run store aside"):
        st.button(RESET_LABEL, type="primary", on_click=_reset, args=(str(error.root),), key="store_reset")


def _reset(root: str) -> None:
    from metanlp.runs.doctor import reset_store

    try:
        lines = reset_store(root).lines()
    except StoreError as error:
        st.session_state[RESET_OUTCOME] = ("error", [str(error)])
    else:
        st.session_state[RESET_OUTCOME] = ("success", lines)


def show_reset_outcome() -> None:
    """What the last click on the reset button did, shown once, above the page it reloaded."""
    outcome = st.session_state.pop(RESET_OUTCOME, None)
    if outcome is not None:
        kind, lines = outcome
        box = st.success if kind == "success" else st.error
        box("  \n".join(plain_markdown(line) for line in lines), icon=":material/database:")


def guard_store(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` (a fragment), with a store fault shown as the error box instead of raised."""

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except StoreError as error:
            show_store_error(error)
            return None

    return guarded
