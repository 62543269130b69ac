"""Plain data types shared by every layer: labelled examples, datasets, episodes."""

from __future__ import annotations

from dataclasses import dataclass, field

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Example:
    """One labelled text. For relation data the entity markers are already in ``text``."""

    text: str
    label: str


@dataclass
class TextDataset:
    """A labelled corpus plus its meta-train / meta-val / meta-test class split.

    ``class_splits`` maps each of ``SPLITS`` to a list of label names; the three lists are
    disjoint, so classes used for meta-testing never appear in meta-training.
    """

    name: str
    examples: list[Example]
    class_splits: dict[str, list[str]]
    description: str = ""
    language: str = "en"
    task: str = "text classification"
    source: str = ""
    licence: str = ""
    split_note: str = ""

    def labels(self) -> list[str]:
        return sorted({example.label for example in self.examples})

    def by_label(self) -> dict[str, list[Example]]:
        grouped: dict[str, list[Example]] = {}
        for example in self.examples:
            grouped.setdefault(example.label, []).append(example)
        return grouped


@dataclass
class Episode:
    """An N-way K-shot task: support and query sets with labels remapped to 0..N-1.

    ``classes[i]`` is the original label name of class ``i``.
    """

    classes: list[str]
    support_texts: list[str]
    support_labels: list[int]
    query_texts: list[str]
    query_labels: list[int]
    meta: dict = field(default_factory=dict)

    @property
    def n_way(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict:
        return {
            "classes": self.classes,
            "support_texts": self.support_texts,
            "support_labels": self.support_labels,
            "query_texts": self.query_texts,
            "query_labels": self.query_labels,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Episode:
        return cls(
            classes=list(data["classes"]),
            support_texts=list(data["support_texts"]),
            support_labels=[int(x) for x in data["support_labels"]],
            query_texts=list(data["query_texts"]),
            query_labels=[int(x) for x in data["query_labels"]],
            meta=dict(data.get("meta", {})),
        )
