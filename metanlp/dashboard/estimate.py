"""How long a run will take, estimated before Launch from runs that finished on this machine.

A run's cost is meta-training steps plus evaluation episodes, each proportional to the sentences
in an episode (N × (K + Q)). Finished runs of the same method with the same encoder settings give
the seconds per step and per episode on *this* machine, which is what the user wants to know; a
configuration never run here gets no number, only what is known to be slow.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from metanlp.engine.config import RunConfig
from metanlp.methods.registry import resolved_options
from metanlp.runs.queue import RunRecord

PRETRAINED_ENCODERS = ("minilm",)


@dataclass(frozen=True)
class RunCost:
    """Seconds per meta-training step and per evaluation episode, per sentence of an episode."""

    step_seconds_per_sentence: float | None
    episode_seconds_per_sentence: float | None


@dataclass(frozen=True)
class TimeEstimate:
    seconds: float | None  # None: no comparable run has finished here
    runs: int  # finished runs the estimate is based on
    note: str = ""  # what is known without a measurement (e.g. MiniLM trained in the loop)


def sentences_per_episode(config: RunConfig) -> int:
    return config.n_way * (config.k_shot + config.n_query)


def resolved_config_options(config: RunConfig) -> dict | None:
    """Every option value the method will use, defaults included (None if they no longer validate)."""
    try:
        return resolved_options(config.method, config.method_options)
    except ValueError:
        return None


def comparable(config: RunConfig, other: RunConfig, options: dict | None) -> bool:
    """Same method, encoder, options (``config``'s, resolved once by the caller) and device: the cost carries over."""
    if (other.method, other.encoder, other.encoder_options, other.device) != (
        config.method, config.encoder, config.encoder_options, config.device
    ):
        return False
    return options is not None and options == resolved_config_options(other)


def run_cost(record: RunRecord) -> RunCost | None:
    """What one finished run cost, per sentence of its episodes (None when it has no timing to read)."""
    evaluation = record.evaluation or {}
    duration = record.duration()
    if duration is None or not evaluation:
        return None
    config = RunConfig.from_dict(record.config)
    sentences = sentences_per_episode(config)
    eval_seconds = float(evaluation.get("seconds") or 0.0)
    episodes = int(evaluation.get("episodes") or 0)
    steps = config.train_steps if evaluation.get("meta_trained", True) else 0
    train_seconds = max(0.0, duration - eval_seconds)
    return RunCost(
        step_seconds_per_sentence=train_seconds / steps / sentences if steps else None,
        episode_seconds_per_sentence=eval_seconds / episodes / sentences if episodes else None,
    )


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def estimate_run_time(config: RunConfig, finished: list[RunRecord], meta_trains: bool | None) -> TimeEstimate:
    """Seconds ``config`` should take here, from ``finished`` runs (``meta_trains``: will it meta-train)."""
    options = resolved_config_options(config)
    costs = [cost for record in finished
             if record.status == "done" and comparable(config, RunConfig.from_dict(record.config), options)
             and (cost := run_cost(record)) is not None]
    steps = config.train_steps if meta_trains is not False else 0
    sentences = sentences_per_episode(config)
    per_step = _median([c.step_seconds_per_sentence for c in costs if c.step_seconds_per_sentence is not None])
    per_episode = _median([c.episode_seconds_per_sentence for c in costs if c.episode_seconds_per_sentence is not None])
    note = slow_note(config, steps)
    if (steps and per_step is None) or (config.eval_episodes and per_episode is None):
        return TimeEstimate(None, len(costs), note)
    seconds = (per_step or 0.0) * steps * sentences + (per_episode or 0.0) * config.eval_episodes * sentences
    return TimeEstimate(seconds, len(costs), note)


def slow_note(config: RunConfig, steps: int) -> str:
    """What makes a run slow on a CPU, known without timing it here."""
    finetune = str(config.method_options.get("finetune", "auto"))
    trains_minilm = config.encoder in PRETRAINED_ENCODERS and finetune in ("top", "full")
    if trains_minilm and steps:
        return ("MiniLM is trained inside every step here: on a 2-core CPU that costs about a second per 25 "
                "sentences per step (a ProtoNet episode of 100 sentences took 3–4 s), so expect minutes per 100 steps.")
    return ""


def describe_estimate(estimate: TimeEstimate) -> str:
    """One sentence for the Train page."""
    if estimate.seconds is None:
        text = ("No run with this method and these encoder settings has finished here yet, so there is no time "
                "estimate; the Runs page shows the progress and an ETA once it starts.")
    else:
        basis = f"{estimate.runs} finished run{'s' if estimate.runs != 1 else ''} like it on this machine"
        text = f"Estimated time: about {format_seconds(estimate.seconds)} (from {basis}, scaled to these settings)."
    return f"{text} {estimate.note}".strip()


def format_seconds(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"
