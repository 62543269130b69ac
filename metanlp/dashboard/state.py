"""Session-state keys and the resources pages share, loaded once per dashboard process.

Everything heavy (the pretrained encoder, the run manager and its worker processes, reloaded
run checkpoints) lives in ``st.cache_resource``; pages call these functions instead of building
their own. The run manager is cached per runs folder, so ``METANLP_RUNS_DIR`` decides the store.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import streamlit as st

from metanlp.dashboard.store_fault import show_reset_outcome, show_store_error
from metanlp.encoders import Encoder, build_encoder
from metanlp.methods.base import Method
from metanlp.runs.manager import RunManager
from metanlp.runs.store import RunStore, StoreError, default_runs_dir

# ----------------------------------------------------------------- st.session_state keys
SELECTED_RUNS = "runs_selected"  # run ids shown on the Runs page
RUNS_FILTERS = "runs_filter_"  # + field: the Runs page filters (status, method, dataset, tag, search)
RUNS_MANAGED = "runs_managed"  # run ids picked for tagging or bulk delete
RUNS_CONFIRM_DELETE = "runs_confirm_delete"  # run ids awaiting the delete confirmation
RUNS_TAG_INPUT = "runs_tag_text"  # the tag to add to or remove from the picked runs
RUNS_TABLE_SHOWN = "runs_table_shown"  # the table of all runs is drawn only when asked for
RUNS_SMOOTHING = "runs_smoothing"  # running-mean window of the Runs page's curves
RUNS_QUERY_SEEN = "runs_query_seen"  # the ?run= ids already applied to the selection
LAST_LAUNCHED = "train_last_launched"  # id of the run the Train page just queued
LIVE_RESULT = "live_result"  # AdaptationResult of the last Adapt click
LIVE_CLASS_COUNT = "live_class_count"
LIVE_ORIGIN = "live_origin"  # adapt a fresh method, or a finished run's trained one
LIVE_FILL_ERROR = "live_fill_error"  # message when classes could not be drawn from a dataset
LIVE_SENTENCES = "live_sentences"  # new sentences to classify
LIVE_RUNNING = "live_running"  # an adaptation in progress: method, total steps, steps so far (kept if stopped)
LIVE_STOP = "live_stop"  # the Stop button shown while adapting
LIVE_NAME_PREFIX = "live_name_"  # + class index: text inputs of class names
LIVE_EXAMPLES_PREFIX = "live_examples_"  # + class index: text areas of examples
LIVE_CLASSIFY_FILE = "live_classify_file"  # the uploaded file to classify with the adapted model
LIVE_CLASSIFIED = "live_classified"  # (file hash, result id) → predictions, so reruns do not classify again
LIVE_SAVED = "live_saved"  # folder where the adapted model was last saved
EPISODE_SEED = "episodes_seed"
ATTENTION_SOURCE = "attention_source"
BASE_MODEL = "Pretrained MiniLM (no training)"

def runs_root() -> Path:
    return default_runs_dir().resolve()


@st.cache_resource(show_spinner=False)
def _store_for(root: str) -> RunStore:
    return RunStore(root)


def _shutdown(manager: RunManager) -> None:
    manager.shutdown(timeout=2.0)  # then busy workers are terminated; their runs are marked failed


@st.cache_resource(show_spinner=False, on_release=_shutdown)
def _manager_for(root: str) -> RunManager:
    # RunManager hides Streamlit's page module from spawned workers itself, and reads
    # $METANLP_PRELOAD_ENCODERS for what the workers load while idle.
    return RunManager(_store_for(root))


def release_run_managers() -> None:
    """Shut down every cached run manager and its workers (tests; the app itself never needs it)."""
    _manager_for.clear()
    _store_for.clear()


Opened = TypeVar("Opened")


def _open_or_stop(opener: Callable[[str], Opened]) -> Opened:
    """``opener(runs folder)``; a store that cannot be opened ends the page with the error box.

    Pages get their store only through here, so every page shows the same box with the same way
    on, even when Streamlit runs a page file directly (without app.py's own handler). After a
    click on the box's reset button, the first page to open the fresh store says what it did.
    """
    try:
        opened = opener(str(runs_root()))
    except StoreError as error:
        show_store_error(error)
        st.stop()
        raise  # st.stop() raises; this keeps type checkers sure nothing is returned
    show_reset_outcome()
    return opened


def run_store() -> RunStore:
    """The run store of the current runs folder (SQLite; safe to share across sessions)."""
    return _open_or_stop(_store_for)


def run_manager() -> RunManager:
    """The run manager of the current runs folder; it starts the worker processes."""
    return _open_or_stop(_manager_for)


@st.cache_resource(show_spinner="Loading the pretrained MiniLM encoder…")
def pretrained_encoder() -> Encoder:
    """all-MiniLM-L6-v2 on CPU, frozen: shared read-only by every session's live features."""
    encoder = build_encoder("minilm")
    encoder.set_trainable_layers(0)
    return encoder.eval()


@st.cache_resource(show_spinner="Loading the run's checkpoint…", max_entries=2)
def run_method(root: str, run_id: str, finished_at: float | None) -> Method:
    """A finished run's trained method, on CPU (``finished_at`` keys the cache to that result).

    A damaged checkpoint raises ``CheckpointError`` naming the run (and is not cached: a retrained
    run loads at the next call).
    """
    from metanlp.engine.checkpoint import load_method

    del finished_at  # only part of the cache key
    method = load_method(_store_for(root).checkpoint_dir(run_id), "cpu", owner=f"run {run_id}")
    return method.eval()


def run_is_active(run_id: str) -> bool:
    """True while a run is queued or running (pages refresh their live parts only then)."""
    try:
        return run_store().get_run(run_id).status in ("queued", "running")
    except ValueError:
        return False


def available_devices() -> list[str]:
    """Device choices this machine can honour: auto and cpu, plus cuda / mps where present."""
    import torch

    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return devices
