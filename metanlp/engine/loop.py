"""The one training loop: every run, pretraining and supervised fine-tuning go through ``train_loop``.

What differs between them (meta-training a method on episodes, MLM + NSP on a corpus, a classifier
on an ordinary split) is a *step function*: ``step_fn(step) -> metrics`` does one update and says
what it measured. Everything else lives here once: the stop flag, step / inner / progress /
validation / attention / checkpoint events, and the history.

Seeding is the caller's first act (``seed_everything``), before it builds what the step function
trains, because building draws the initial weights; the loop itself draws nothing.

Events (plain JSON-serialisable dicts; ``phase`` names what is trained, e.g. "train", "pretrain"):

- ``{"event": "step", "phase", "step", **metrics, "elapsed"}`` after each step
- ``{"event": "step", "phase": "inner", "step", "inner_step", "support_loss", "query_loss"}`` for
  each inner step a method reported (``inner_support_losses`` / ``inner_query_losses``)
- ``{"event": "progress", "stage": phase, "done", "total"}``
- ``{"event": "validation", "phase", "step", **validate_fn()}`` every ``validate_every`` steps
- ``{"event": "attention", "phase", "step", "tokens", "attentions"}`` at ``snapshot_steps`` (0: before the first)
- ``{"event": "checkpoint", "phase", "step"}`` after ``save_checkpoint`` ran
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

EventCallback = Callable[[dict], None]
StepFunction = Callable[[int], Mapping[str, object]]  # step number (1, 2, ...) → that step's metrics


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch: what a run draws afterwards follows ``seed`` alone."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def inner_step_events(step: int, metrics: dict) -> list[dict]:
    """Turn a step's ``inner_support_losses`` / ``inner_query_losses`` lists into events.

    Methods with an inner loop (MAML, the LSTM meta-learner, ...) return those lists, one
    value per inner step (averaged over the meta-batch); they are removed from ``metrics``.
    """
    support = metrics.pop("inner_support_losses", None) or []
    query = metrics.pop("inner_query_losses", None) or []
    events = []
    for index in range(max(len(support), len(query))):
        event = {"event": "step", "phase": "inner", "step": step, "inner_step": index + 1}
        if index < len(support):
            event["support_loss"] = float(support[index])
        if index < len(query):
            event["query_loss"] = float(query[index])
        events.append(event)
    return events


def attention_snapshot(encoder: torch.nn.Module, text: str) -> dict:
    """Tokens and (layers × heads × S × S) attention of ``text``, as nested lists for an event.

    Taken without dropout, and the encoder's mode restored: a snapshot is the attention the model
    would use, and watching a run (it draws no random numbers) never changes what it learns.
    """
    modes = [(module, module.training) for module in encoder.modules()]
    encoder.eval()
    try:
        maps = encoder.attention_maps(text)
    finally:
        for module, training in modes:
            module.training = training
    return {"tokens": maps.tokens, "attentions": maps.attentions.numpy().round(4).tolist()}


@dataclass
class LoopResult:
    """What the loop did: its recorded step and validation events, and whether it was stopped."""

    history: list[dict] = field(default_factory=list)
    steps_done: int = 0
    stopped: bool = False
    seconds: float = 0.0


def train_loop(
    step_fn: StepFunction,
    steps: int,
    *,
    phase: str = "train",
    on_event: EventCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    validate_every: int = 0,
    validate_fn: Callable[[], Mapping[str, object]] | None = None,
    snapshot_steps: Collection[int] = (),
    snapshot_fn: Callable[[], Mapping[str, object]] | None = None,
    checkpoint_steps: Collection[int] = (),
    save_checkpoint: Callable[[int], None] | None = None,
    started: float | None = None,
    first_step: int = 1,
) -> LoopResult:
    """Call ``step_fn(first_step) … step_fn(steps)``, streaming events; the only training loop in metanlp.

    ``should_stop`` is asked before every step: once it is true no further step runs and the
    result says ``stopped`` (the caller decides whether that is an error). ``validate_fn`` runs
    after every ``validate_every``-th step; ``snapshot_fn`` (attention) at ``snapshot_steps``;
    ``save_checkpoint(step)`` at ``checkpoint_steps`` and after the last step done, finished or
    stopped. ``started`` (a ``time.perf_counter()`` value) is where ``elapsed`` counts from.
    ``first_step`` > 1 continues a run resumed from a checkpoint at step ``first_step - 1``.
    """
    emit = on_event or (lambda event: None)
    stop = should_stop or (lambda: False)
    started = time.perf_counter() if started is None else started
    result = LoopResult()
    snapshots = set(snapshot_steps) if snapshot_fn is not None else set()
    checkpoints = set(checkpoint_steps) if save_checkpoint is not None else set()
    saved_at = first_step - 1

    def record(event: dict) -> None:
        result.history.append(event)
        emit(event)

    def checkpoint(step: int) -> None:
        nonlocal saved_at
        save_checkpoint(step)
        saved_at = step
        emit({"event": "checkpoint", "phase": phase, "step": step})

    if 0 in snapshots:
        emit({"event": "attention", "phase": phase, "step": 0, **snapshot_fn()})
    for step in range(first_step, steps + 1):
        if stop():
            result.stopped = True
            break
        metrics = dict(step_fn(step))
        for inner_event in inner_step_events(step, metrics):
            record(inner_event)
        record({"event": "step", "phase": phase, "step": step, **metrics, "elapsed": time.perf_counter() - started})
        emit({"event": "progress", "stage": phase, "done": step, "total": steps})
        result.steps_done = step
        if validate_fn is not None and validate_every and step % validate_every == 0:
            record({"event": "validation", "phase": phase, "step": step, **validate_fn()})
        if step in snapshots:
            emit({"event": "attention", "phase": phase, "step": step, **snapshot_fn()})
        if step in checkpoints:
            checkpoint(step)
    if save_checkpoint is not None and result.steps_done and saved_at != result.steps_done:
        checkpoint(result.steps_done)
    result.seconds = time.perf_counter() - started
    return result
