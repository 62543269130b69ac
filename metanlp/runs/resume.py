"""Retry a failed, cancelled or interrupted run as a new run, resuming from its last checkpoint if asked.

While a run meta-trains, its learned state is saved about ten times (``partial/`` in its folder,
with the step it was saved at), so a run that is killed, cancelled or fails midway keeps what it
had learned. A retry is a new run with the same configuration whose folder names the run it
retries (``resume.json``); with ``resume`` it starts from that checkpoint and its step count
continues from there. A run that finishes drops its partial checkpoint (the final one is kept).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from metanlp.engine.checkpoint import checkpoint_problem, save_method
from metanlp.engine.config import RunConfig
from metanlp.engine.training import ResumePoint
from metanlp.methods.base import Method
from metanlp.runs.store import RunStore

log = logging.getLogger("metanlp.runs")

PARTIAL_FOLDER = "partial"
PROGRESS_FILE = "progress.json"
RESUME_FILE = "resume.json"
RETRYABLE_STATUSES = ("failed", "cancelled")
CHECKPOINTS_PER_RUN = 10
CHECKPOINT_EVERY_ENV = "METANLP_CHECKPOINT_EVERY"  # steps between partial checkpoints (default: a tenth of the run)


class RetryError(ValueError):
    """The run cannot be retried (or resumed) as asked; the message says why."""


def checkpoint_every(train_steps: int) -> int:
    """Steps between a run's partial checkpoints: ``$METANLP_CHECKPOINT_EVERY``, else a tenth of the run."""
    configured = os.environ.get(CHECKPOINT_EVERY_ENV, "").strip()
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    return max(1, train_steps // CHECKPOINTS_PER_RUN)


def partial_dir(store: RunStore, run_id: str) -> Path:
    return store.run_dir(run_id) / PARTIAL_FOLDER


def save_partial(store: RunStore, run_id: str, method: Method, step: int) -> None:
    """Replace the run's partial checkpoint with the state after ``step`` (written aside, then swapped in)."""
    target = partial_dir(store, run_id)
    fresh = target.with_name(f".{PARTIAL_FOLDER}.new")
    stale = target.with_name(f".{PARTIAL_FOLDER}.old")
    for leftover in (fresh, stale):
        shutil.rmtree(leftover, ignore_errors=True)
    save_method(method, fresh)
    (fresh / PROGRESS_FILE).write_text(json.dumps({"step": step}), encoding="utf-8")
    if target.exists():
        os.replace(target, stale)
    os.replace(fresh, target)
    shutil.rmtree(stale, ignore_errors=True)


def partial_saver(store: RunStore, run_id: str) -> Callable[[Method, int], None]:
    """``save_checkpoint`` for ``run_training``: a checkpoint that cannot be written is a warning, not a failure."""

    def save(method: Method, step: int) -> None:
        try:
            save_partial(store, run_id, method, step)
        except OSError as error:
            log.warning("run %s: the checkpoint at step %d could not be written: %s", run_id, step, error)

    return save


def drop_partial(store: RunStore, run_id: str) -> None:
    shutil.rmtree(partial_dir(store, run_id), ignore_errors=True)


def saved_step(store: RunStore, run_id: str) -> int | None:
    """The step of the run's partial checkpoint when it reads back intact, else None."""
    folder = partial_dir(store, run_id)
    try:
        step = json.loads((folder / PROGRESS_FILE).read_text(encoding="utf-8"))["step"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(step, int) or step < 1 or checkpoint_problem(folder) is not None:
        return None
    return step


def retry_run(
    store: RunStore,
    run_id: str,
    resume: bool = False,
    claimed_by: int | None = None,
    max_running: int | None = None,
) -> str:
    """Queue (or, with ``claimed_by``, start) a new run like ``run_id``; returns its id.

    With ``resume`` the new run starts from the old run's partial checkpoint (``RetryError`` when
    it has none). The old run is left as it is.
    """
    record = store.get_run(run_id)
    if record.status not in RETRYABLE_STATUSES:
        raise RetryError(f"run {run_id} is {record.status}; only failed or cancelled runs can be retried")
    link: dict = {"retry_of": run_id}
    if resume:
        step = saved_step(store, run_id)
        if step is None:
            raise RetryError(f"run {run_id} saved no checkpoint to resume from; retry it from the start instead")
        link |= {"resume_from": str(partial_dir(store, run_id)), "step": step}
    name = f"{record.name} (resumed at step {link['step']})" if resume else f"{record.name} (retry)"
    return store.create_run(
        RunConfig.from_dict(record.config), name, claimed_by=claimed_by, max_running=max_running,
        files={RESUME_FILE: json.dumps(link)},
    )


def retry_link(store: RunStore, run_id: str) -> dict:
    """What ``resume.json`` says of a run: ``retry_of`` and, when resuming, ``resume_from`` and ``step``."""
    try:
        link = json.loads((store.run_dir(run_id) / RESUME_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return link if isinstance(link, dict) else {}


def resume_point(store: RunStore, run_id: str) -> ResumePoint | None:
    """Where a retried run starts, if it resumes (the checkpoint is verified when it is loaded)."""
    link = retry_link(store, run_id)
    if isinstance(link.get("resume_from"), str) and isinstance(link.get("step"), int):
        return ResumePoint(checkpoint=link["resume_from"], step=link["step"])
    return None
