"""Episodic evaluation: mean query accuracy over E episodes with a 95% confidence interval.

Intervals use Student's t with the sample standard deviation: exact for normal data at any
size (a handful of training seeds), and within half a percent of 1.96 · s / √n from 300
episodes on. Paired comparisons demand the identical episodes, checked by content hash.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from metanlp.data.types import Episode
from metanlp.encoders.cache import memoise_while_unchanged
from metanlp.methods.base import Method

CONFIDENCE = 0.95


@functools.lru_cache(maxsize=1024)
def t_quantile(probability: float, degrees_of_freedom: int) -> float:
    """Quantile of Student's t distribution, e.g. t(0.975, 2) = 4.303 (what a 3-seed interval uses)."""
    from scipy.stats import t  # imported here: only statistics need it, and it costs ~0.2 s

    return float(t.ppf(probability, degrees_of_freedom))


def sample_std(values: Sequence[float]) -> float:
    """Standard deviation with Bessel's correction (ddof=1); nan below two values."""
    n = len(values)
    if n < 2:
        return float("nan")
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def mean_and_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the 95% half-width t(0.975, n-1) · s / √n, s the sample std (nan below two values)."""
    if not len(values):
        return float("nan"), float("nan")
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, float("nan")
    spread = sample_std(values)
    return mean, t_quantile(0.5 + CONFIDENCE / 2, len(values) - 1) * spread / math.sqrt(len(values))


def episodes_fingerprint(episodes: Sequence[Episode]) -> str:
    """SHA-256 (first 16 hex digits) of the episodes' classes, texts and labels, in order.

    Two runs with the same fingerprint were scored on identical tasks, whatever file, path or
    seed produced them; a paired comparison needs exactly that.
    """
    digest = hashlib.sha256()
    for episode in episodes:
        content = {key: value for key, value in episode.to_dict().items() if key != "meta"}
        digest.update(json.dumps(content, sort_keys=True, ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()[:16]


@dataclass
class EvaluationResult:
    mean_accuracy: float
    ci95: float
    episodes: int
    mean_query_loss: float
    seconds: float
    per_episode: list[dict] = field(default_factory=list)
    episodes_hash: str = ""  # ``episodes_fingerprint`` of the episodes scored

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
    with memoise_while_unchanged(method.encoder):  # a trained encoder embeds each test sentence once
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
        episodes_hash=episodes_fingerprint(episodes[: len(results)]),
    )


class EpisodeMismatch(ValueError):
    """Two results that a paired comparison would pair were not scored on the identical episodes."""


def check_same_episodes(hash_a: str | None, hash_b: str | None, detail: str = "") -> None:
    """Raise ``EpisodeMismatch`` unless both episode fingerprints exist and are equal."""
    if not hash_a or not hash_b:
        raise EpisodeMismatch(
            "a paired comparison needs the identical episodes, but a result has no episode fingerprint "
            "(it was evaluated before fingerprints were recorded): evaluate it again" + detail
        )
    if hash_a != hash_b:
        raise EpisodeMismatch(
            f"a paired comparison needs the identical episodes, but these were evaluated on different ones "
            f"(episode fingerprints {hash_a} and {hash_b})" + detail
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


def paired_comparison(accuracies_a: Sequence[float], accuracies_b: Sequence[float]) -> PairedComparison:
    """Paired statistic over per-episode differences (valid only if both saw the same episodes).

    Pairing removes the episode-to-episode difficulty that both methods share, so the interval
    is much narrower than comparing two independent means. Callers holding whole results should
    use ``compare_results``, which checks that the episodes are the same.
    """
    if len(accuracies_a) != len(accuracies_b):
        raise EpisodeMismatch(
            f"paired comparison needs the same episodes for both methods, got {len(accuracies_a)} and {len(accuracies_b)}"
        )
    differences = [a - b for a, b in zip(accuracies_a, accuracies_b, strict=True)]
    mean, ci95 = mean_and_ci95(differences)
    return PairedComparison(mean_difference=mean, ci95=ci95, episodes=len(differences))


def compare_results(result_a: EvaluationResult, result_b: EvaluationResult) -> PairedComparison:
    """A minus B, episode by episode; refuses results scored on different episodes."""
    check_same_episodes(result_a.episodes_hash, result_b.episodes_hash)
    return paired_comparison(
        [r["query_accuracy"] for r in result_a.per_episode], [r["query_accuracy"] for r in result_b.per_episode]
    )
