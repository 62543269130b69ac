"""N-way K-shot episode sampling, and fixed episode lists shared by every method."""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Iterator
from pathlib import Path

from metanlp.data.errors import DataError
from metanlp.data.feasibility import check_texts_feasible, classes_that_fit, group_by_label
from metanlp.data.types import Episode, Example

EPISODES_FORMAT = "metanlp-episodes/1"


class EpisodeSampler:
    """Draws N-way K-shot episodes with Q queries per class from one class split.

    Repeated texts within a class are dropped and classes with fewer than K+Q distinct texts are
    skipped; if fewer than N classes remain, ``check_texts_feasible`` raises the ``DataError`` that
    the Train form shows too. Seeded: the same seed yields the same episodes in the same order.
    """

    def __init__(
        self,
        texts_by_label: dict[str, list[str]],
        n_way: int,
        k_shot: int,
        n_query: int,
        seed: int = 0,
        split: str = "",
    ) -> None:
        check_texts_feasible(texts_by_label, n_way, k_shot, n_query, split)
        self.n_way, self.k_shot, self.n_query, self.seed, self.split = n_way, k_shot, n_query, seed, split
        self.texts_by_label = classes_that_fit(texts_by_label, k_shot + n_query)
        self.labels = sorted(self.texts_by_label)
        self._rng = random.Random(seed)

    @classmethod
    def from_examples(cls, examples: list[Example], n_way: int, k_shot: int, n_query: int, **kwargs) -> EpisodeSampler:
        return cls(group_by_label(examples), n_way, k_shot, n_query, **kwargs)

    def sample(self) -> Episode:
        rng = self._rng
        classes = rng.sample(self.labels, self.n_way)
        support_texts: list[str] = []
        support_labels: list[int] = []
        query_texts: list[str] = []
        query_labels: list[int] = []
        for index, label in enumerate(classes):
            chosen = rng.sample(self.texts_by_label[label], self.k_shot + self.n_query)
            support_texts += chosen[: self.k_shot]
            support_labels += [index] * self.k_shot
            query_texts += chosen[self.k_shot :]
            query_labels += [index] * self.n_query
        return Episode(
            classes=classes,
            support_texts=support_texts,
            support_labels=support_labels,
            query_texts=query_texts,
            query_labels=query_labels,
            meta={"split": self.split},
        )

    def __iter__(self) -> Iterator[Episode]:
        while True:
            yield self.sample()

    def take(self, count: int) -> list[Episode]:
        return [self.sample() for _ in range(count)]


def save_episodes(episodes: list[Episode], path: str | Path, description: dict | None = None) -> Path:
    """Write episodes as (gzipped, if the name ends in .gz) JSON, so others reuse them exactly."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": EPISODES_FORMAT, "description": description or {}, "episodes": [e.to_dict() for e in episodes]}
    text = json.dumps(payload, ensure_ascii=False)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def load_episodes(path: str | Path) -> tuple[list[Episode], dict]:
    """Read a file written by ``save_episodes``; returns (episodes, description)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"episode file {str(path)!r} does not exist.")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8") as handle:
                payload = json.load(handle)
        else:
            payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"episode file {str(path)!r} is not a readable episode file: {error}.") from None
    if not isinstance(payload, dict) or payload.get("format") != EPISODES_FORMAT:
        raise DataError(f"episode file {str(path)!r} is not in the {EPISODES_FORMAT} format.")
    try:
        episodes = [Episode.from_dict(item) for item in payload["episodes"]]
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(f"episode file {str(path)!r} has a malformed episode: {error}.") from None
    return episodes, payload.get("description", {})
