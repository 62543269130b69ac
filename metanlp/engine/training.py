"""Run one method from a ``RunConfig`` and stream metric events through a callback.

This is the single entry point the CLI, the dashboard's worker and the bench share; its steps run
in the engine's one loop (``metanlp.engine.loop.train_loop``). Events are plain JSON-serialisable
dicts with an ``event`` key:

- ``{"event": "step", "phase": "train", "step", "support_loss", "query_loss", "query_accuracy", "lr", "elapsed"}``
  (plus any metric of the method's own, e.g. mlm_pretrain's ``mlm_loss``)
- ``{"event": "step", "phase": "inner", "step", "inner_step", "support_loss", ...}``
- ``{"event": "validation", "phase": "train", "step", "query_accuracy", "ci95"}`` (mean over validation episodes)
- ``{"event": "attention", "phase": "train", "step", "tokens", "attentions"}`` (layers × heads × S × S, nested lists)
- ``{"event": "progress", "stage", "done", "total"}``
- ``{"event": "no_meta_training", "message", "requested_steps"}`` when the configuration has
  nothing to meta-learn (the steps are skipped, and the run is a per-task baseline)
- ``{"event": "evaluation", "mean_accuracy", "ci95", "episodes", "meta_learned_parameters", "meta_trained", ...}``
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from metanlp.data.episodes import EpisodeSampler, load_episodes
from metanlp.data.feasibility import check_split_feasible
from metanlp.data.registry import examples_for_split, load_dataset
from metanlp.data.types import Episode, TextDataset
from metanlp.device import precision_context, resolve_device
from metanlp.encoders import Encoder, build_encoder
from metanlp.encoders.cache import share_cache, shared_cache
from metanlp.engine.auxiliary import check_auxiliary_names, supply_auxiliary_data
from metanlp.engine.checkpoint import restore_state
from metanlp.engine.config import NO_META_TRAINING, ConfigError, RunConfig
from metanlp.engine.loop import attention_snapshot, seed_everything, train_loop
from metanlp.evaluation import EvaluationResult, evaluate
from metanlp.methods.base import Method
from metanlp.methods.registry import create_method

EventCallback = Callable[[dict], None]
NO_META_TRAINING_MESSAGE = (
    NO_META_TRAINING + ": {method} has no parameter that meta-training could change and that changes a "
    "prediction (e.g. a frozen encoder and a per-task head), so the {steps} requested steps were skipped; "
    "it is a per-task baseline here. Choose finetune=top or full, or a method option that adds "
    "meta-learned parameters, to meta-train it."
)


class RunCancelled(Exception):
    """Raised inside a run when ``should_stop`` turns true."""


@dataclass(frozen=True)
class ResumePoint:
    """Continue a run from a checkpoint saved after ``step`` meta-training steps of the same config.

    The learned state comes back and the episode stream goes on where it was; optimiser moments
    (Adam's running averages) start afresh, as they are not part of a checkpoint.
    """

    checkpoint: str
    step: int


@dataclass
class RunResult:
    method: Method
    evaluation: EvaluationResult | None
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    meta_learned_parameters: int = 0  # what meta-training could change that changes predictions
    meta_trained: bool = False  # False: no meta-training step ran (none asked, or nothing to learn)

    def evaluation_summary(self) -> dict:
        """The evaluation's summary plus what was meta-learned: what the run store keeps."""
        if self.evaluation is None:
            return {}
        return {
            **self.evaluation.to_dict(include_episodes=False),
            "meta_learned_parameters": self.meta_learned_parameters,
            "meta_trained": self.meta_trained,
        }


def load_run_dataset(config: RunConfig) -> tuple[TextDataset, list[str]]:
    """The dataset a config names (built-in, or the user's file); returns (dataset, warnings).

    A user's file is split for the config's episodes (N, K, queries): a small file then shares its
    classes and splits their examples when it has too few classes for disjoint N-way splits.
    """
    if config.dataset == "user":
        from metanlp.data.user_data import load_user_dataset

        shape = {"n_way": config.n_way, "k_shot": config.k_shot, "n_query": config.n_query}
        return load_user_dataset(Path(config.data_file), **{**config.data_options, **shape})
    return load_dataset(config.dataset, config.split_id), []


def make_sampler(dataset: TextDataset, split: str, config: RunConfig, seed: int) -> EpisodeSampler:
    """The seeded sampler of ``split``; raises the form's ``EpisodeSettingsError`` when it cannot serve the config."""
    check_split_feasible(dataset, split, config.n_way, config.k_shot, config.n_query)
    return EpisodeSampler.from_examples(
        examples_for_split(dataset, split), config.n_way, config.k_shot, config.n_query, seed=seed, split=split
    )


def evaluation_episodes(dataset: TextDataset, config: RunConfig) -> list[Episode]:
    """The fixed test episodes: from a file, or seeded by ``eval_seed`` alone (not by method or seed)."""
    if config.episodes_file:
        episodes, _ = load_episodes(config.episodes_file)
        return episodes
    if not config.eval_episodes:  # e.g. a sweep's trial: the test classes are not even sampled from
        return []
    return make_sampler(dataset, "test", config, config.eval_seed).take(config.eval_episodes)


class EncoderPool:
    """Keeps loaded encoders warm and hands out fresh copies, so runs never share weights."""

    def __init__(self) -> None:
        self._pristine: dict[str, Encoder] = {}

    def _pristine_encoder(self, name: str, options: dict) -> Encoder:
        key = repr((name, sorted(options.items())))
        if key not in self._pristine:
            self._pristine[key] = build_encoder(name, **options)
        return self._pristine[key]

    def pristine(self, name: str, options: dict) -> Encoder:
        """The pooled encoder itself (never trained): its shared cache is the one every copy reads."""
        return self._pristine_encoder(name, options)

    def get(self, name: str, options: dict, seed: int) -> Encoder:
        if name == "scratch":  # cheap, and its initial weights must follow the run's seed
            torch.manual_seed(seed)
            return build_encoder(name, **options)
        pristine = self._pristine_encoder(name, options)
        fresh = copy.deepcopy(pristine)
        share_cache(pristine, fresh)  # runs on the same frozen encoder embed each sentence once
        return fresh

    def warm(self, name: str, options: dict, texts: list[str], device: torch.device | None = None) -> float:
        """Embed ``texts`` into the shared cache of a pooled encoder ahead of time; returns seconds.

        A benchmark calls this before its cells so that no method's evaluation time includes
        embedding sentences that the shared cache would have given every later method for free.
        """
        if name == "scratch":  # a fresh random encoder per run: nothing to share
            return 0.0
        started = time.perf_counter()
        encoder = self.get(name, options, seed=0)  # a copy that shares the pristine encoder's cache
        if device is not None:
            encoder.to(device)
        shared_cache(encoder).embed(texts)
        return time.perf_counter() - started


_DEFAULT_POOL = EncoderPool()


def attention_steps(every: int, steps: int) -> list[int]:
    """Steps with an attention snapshot in a run: before training, every ``every`` steps, and the last."""
    return sorted({0, *(range(every, steps + 1, every) if every else ()), steps})


def run_training(
    config: RunConfig,
    on_event: EventCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    encoder_pool: EncoderPool | None = None,
    *,
    save_checkpoint: Callable[[Method, int], None] | None = None,
    checkpoint_every: int = 0,
    resume: ResumePoint | None = None,
) -> RunResult:
    """Meta-train (or train) ``config.method`` on meta-train classes, then evaluate on meta-test.

    ``save_checkpoint(method, step)`` is called every ``checkpoint_every`` steps and after the last
    step done (a run that stops early can be resumed); ``resume`` continues from such a checkpoint.
    """
    config.validate()
    emit = on_event or (lambda event: None)
    stop = should_stop or (lambda: False)
    started = time.perf_counter()

    def check_stop() -> None:
        if stop():
            raise RunCancelled("run cancelled")

    device = resolve_device(config.device)
    dataset, warnings = load_run_dataset(config)
    for warning in warnings:
        emit({"event": "warning", "message": warning})
    seed_everything(config.seed)
    train_sampler = make_sampler(dataset, "train", config, config.seed) if config.train_steps else None
    test_episodes = evaluation_episodes(dataset, config)
    val_episodes: list[Episode] = []
    if config.eval_every and examples_for_split(dataset, "val"):
        val_episodes = make_sampler(dataset, "val", config, config.eval_seed + 1).take(config.val_episodes)

    encoder = (encoder_pool or _DEFAULT_POOL).get(config.encoder, config.encoder_options, config.seed)
    seed_everything(config.seed)
    try:
        method = create_method(config.method, encoder, config.method_options)
        check_auxiliary_names(type(method), method.options)
        steps = config.train_steps if method.learns_across_tasks else 0
        if steps:  # what it trains on besides episodes (e.g. DANN's target text); adapting never needs it
            supply_auxiliary_data(method)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    method.to(device)
    first_step = 1
    if resume is not None and steps:
        restore_state(method, resume.checkpoint, owner=f"the checkpoint to resume from ({resume.checkpoint})")
        train_sampler.take(min(resume.step, steps))  # skip the episodes the interrupted run had trained on
        first_step = min(resume.step, steps) + 1
        emit({"event": "resumed", "step": first_step - 1, "checkpoint": resume.checkpoint})
    meta_learned = method.meta_learned_parameter_count()
    if config.train_steps and not steps:
        emit({
            "event": "no_meta_training",
            "message": NO_META_TRAINING_MESSAGE.format(method=config.method, steps=config.train_steps),
            "requested_steps": config.train_steps,
        })

    # A method that batches tasks (MAML's vmap path) takes a whole meta-batch of episodes at once and
    # returns one metrics dict per episode; the loop still sees one step per episode. Validation and
    # Stop then act between meta-batches (a few milliseconds apart on cached features).
    per_call = method.episodes_per_call()
    pending: list[dict] = []

    def meta_training_step(step: int) -> dict:
        if not pending:
            episodes = [train_sampler.sample() for _ in range(min(per_call, steps - step + 1))]
            with precision_context(device, config.precision):
                pending.extend(method.train_steps(episodes))
        metrics = pending.pop(0)
        lr = method.optimizer().param_groups[0]["lr"] if method.trainable_parameters() else 0.0
        return {**metrics, "lr": lr}

    def validate() -> dict:
        validation = evaluate(method, val_episodes, should_stop=stop)
        return {"query_accuracy": validation.mean_accuracy, "ci95": validation.ci95}

    loop = train_loop(
        meta_training_step, steps, on_event=emit, should_stop=stop,
        validate_every=config.eval_every if val_episodes else 0, validate_fn=validate,
        snapshot_steps=attention_steps(config.attention_every, steps) if config.attention_text else (),
        snapshot_fn=lambda: attention_snapshot(method.encoder, config.attention_text),
        checkpoint_steps=range(checkpoint_every, steps + 1, checkpoint_every) if checkpoint_every else (),
        save_checkpoint=(lambda step: save_checkpoint(method, step)) if save_checkpoint else None,
        started=started, first_step=first_step,
    )
    if loop.stopped:
        raise RunCancelled("run cancelled")

    evaluation = None
    if test_episodes:
        total = len(test_episodes)

        def on_episode(index: int, _record: dict) -> None:
            emit({"event": "progress", "stage": "evaluate", "done": index + 1, "total": total})

        with precision_context(device, config.precision):
            evaluation = evaluate(method, test_episodes, on_episode=on_episode, should_stop=stop)
        check_stop()
    result = RunResult(
        method=method, evaluation=evaluation, history=loop.history, seconds=time.perf_counter() - started,
        meta_learned_parameters=meta_learned, meta_trained=bool(steps),
    )
    if evaluation is not None:
        emit({"event": "evaluation", **result.evaluation_summary()})
    return result
