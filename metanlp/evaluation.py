"""Episodic evaluation: mean query accuracy over E episodes with a 95% confidence interval."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from metanlp.data.types import Episode
from metanlp.methods.base import Method


def mean_and_ci95(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width 1.96 · std / sqrt(n) (population std, as in few-shot papers)."""
    if not values:
        return float("nan"), float("nan")
    mean = sum(values) / len(values)
    variance = sum((v - mean) ** 2 for v in values) / len(values)
    return mean, 1.96 * math.sqrt(variance) / math.sqrt(len(values))


@dataclass
class EvaluationResult:
    mean_accuracy: float
    ci95: float
    episodes: int
    mean_query_loss: float
    seconds: float
    per_episode: list[dict] = field(default_factory=list)

    def summary(self) -> str:
        return f"{100 * self.mean_accuracy:.2f} ± {100 * self.ci95:.2f}% over {self.episodes} episodes"

    def to_dict(self, include_episodes: bool = True) -> dict:
        data = asdict(self)
        if not include_episodes:
            data.pop("per_episode")
        return data


def evaluate(
    method: Method,
    episodes: list[Episode],
    on_episode: Callable[[int, dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> EvaluationResult:
    """Adapt to each episode's support set and score its queries; same episodes for every method."""
    started = time.perf_counter()
    results: list[dict] = []
    for index, episode in enumerate(episodes):
        if should_stop is not None and should_stop():
            break
        metrics = method.evaluate_episode(episode)
        record = {"episode": index, "query_accuracy": metrics["query_accuracy"], "query_loss": metrics["query_loss"]}
        results.append(record)
        if on_episode is not None:
            on_episode(index, record)
    mean, ci95 = mean_and_ci95([r["query_accuracy"] for r in results])
    losses = [r["query_loss"] for r in results]
    return EvaluationResult(
        mean_accuracy=mean,
        ci95=ci95,
        episodes=len(results),
        mean_query_loss=sum(losses) / len(losses) if losses else float("nan"),
        seconds=time.perf_counter() - started,
        per_episode=results,
    )


@dataclass
class PairedComparison:
    """Method A minus method B on the same episodes."""

    mean_difference: float
    ci95: float
    episodes: int

    @property
    def low(self) -> float:
        return self.mean_difference - self.ci95

    @property
    def high(self) -> float:
        return self.mean_difference + self.ci95

    @property
    def excludes_zero(self) -> bool:
        """True when the 95% interval lies entirely on one side of 0: a real difference."""
        return self.low > 0 or self.high < 0


def paired_comparison(accuracies_a: list[float], accuracies_b: list[float]) -> PairedComparison:
    """Paired statistic over per-episode differences (valid because both saw the same episodes).

    Pairing removes the episode-to-episode difficulty that both methods share, so the interval
    is much narrower than comparing two independent means.
    """
    if len(accuracies_a) != len(accuracies_b):
        raise ValueError(
            f"paired comparison needs the same episodes for both methods, got {len(accuracies_a)} and {len(accuracies_b)}"
        )
    differences = [a - b for a, b in zip(accuracies_a, accuracies_b, strict=True)]
    mean, ci95 = mean_and_ci95(differences)
    return PairedComparison(mean_difference=mean, ci95=ci95, episodes=len(differences))
