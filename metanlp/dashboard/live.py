"""Live adaptation inside the dashboard process: a few user sentences → an adapted classifier.

Runs on a shared, frozen pretrained encoder, so sentences are embedded once and a method adapts
in well under a second on CPU. A method that fine-tunes the encoder gets a private copy of it, so
the shared encoder (and every other visitor's session) never changes.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from metanlp.data.episodes import EpisodeSampler
from metanlp.data.registry import examples_for_split, load_dataset
from metanlp.data.types import Episode
from metanlp.encoders import Encoder
from metanlp.methods.base import Method, Metrics, TaskModel
from metanlp.methods.registry import create_method, get_method_class, method_names

PREFERRED_ORDER = ("protonet", "finetune")
LIVE_ADAPT_STEPS = 30  # fine-tuning baseline: enough for a linear head on frozen features
LIVE_TOP_LAYER_STEPS = 15  # when the top encoder layer trains too, each step is a forward pass


def live_method_names() -> list[str]:
    """Methods that can run on a frozen encoder (they have a ``finetune`` option), ProtoNet first."""
    names = [
        name
        for name in method_names()
        if "finetune" in {f.name for f in dataclasses.fields(get_method_class(name).Options)}
    ]
    return sorted(names, key=lambda name: (PREFERRED_ORDER.index(name) if name in PREFERRED_ORDER else 99, name))


def live_options(method: str, tune_top_layer: bool = False) -> dict:
    """Options that keep adaptation interactive: frozen encoder (or only its top layer), few steps."""
    fields = {f.name for f in dataclasses.fields(get_method_class(method).Options)}
    options: dict = {"finetune": "top", "top_k": 1} if tune_top_layer else {"finetune": "frozen"}
    if "adapt_steps" in fields:
        options["adapt_steps"] = LIVE_TOP_LAYER_STEPS if tune_top_layer else LIVE_ADAPT_STEPS
    return options


def build_live_episode(names: list[str], examples: list[list[str]]) -> Episode:
    """Support = every example but the last of each class; query = the last (to report query loss)."""
    support_texts, support_labels, query_texts, query_labels = [], [], [], []
    for index, texts in enumerate(examples):
        support_texts += texts[:-1]
        support_labels += [index] * (len(texts) - 1)
        query_texts.append(texts[-1])
        query_labels.append(index)
    return Episode(
        classes=[name.strip() for name in names],
        support_texts=support_texts,
        support_labels=support_labels,
        query_texts=query_texts,
        query_labels=query_labels,
        meta={"split": "user"},
    )


def examples_from_dataset(dataset: str, n_way: int, per_class: int, seed: int) -> tuple[list[str], list[list[str]]]:
    """Class names and example sentences drawn from a dataset's meta-test classes (to pre-fill the form)."""
    data = load_dataset(dataset)
    sampler = EpisodeSampler.from_examples(examples_for_split(data, "test"), n_way, per_class, 1, seed=seed)
    episode = sampler.sample()
    examples = [
        [text for text, label in zip(episode.support_texts, episode.support_labels, strict=True) if label == index]
        for index in range(episode.n_way)
    ]
    return list(episode.classes), examples


@dataclass
class AdaptationResult:
    method: str
    task_model: TaskModel
    classes: list[str]
    steps: list[Metrics] = field(default_factory=list)
    seconds: float = 0.0
    encoder_before: Encoder | None = None
    encoder_after: Encoder | None = None  # the encoder the task model uses


def adapt_method(
    model: Method,
    episode: Episode,
    on_step: Callable[[Metrics], None] | None = None,
    encoder_before: Encoder | None = None,
) -> AdaptationResult:
    """Adapt an existing method (fresh, or a trained run's) to ``episode``; ``on_step`` sees each inner step.

    ``encoder_before`` is what the attention comparison calls "before" (default: the method's own
    encoder); "after" is the encoder the adapted task model uses.
    """
    started = time.perf_counter()
    steps: list[Metrics] = []

    def record(metrics: Metrics) -> None:
        steps.append(dict(metrics))
        if on_step is not None:
            on_step(dict(metrics))

    task_model = model.adapt(episode, on_inner_step=record)
    adapted_encoder = getattr(task_model, "encoder", None)
    return AdaptationResult(
        method=model.card.name,
        task_model=task_model,
        classes=list(episode.classes),
        steps=steps,
        seconds=time.perf_counter() - started,
        encoder_before=encoder_before or model.encoder,
        encoder_after=adapted_encoder if isinstance(adapted_encoder, Encoder) else model.encoder,
    )


def adapt_live(
    method: str,
    encoder: Encoder,
    episode: Episode,
    options: dict | None = None,
    on_step: Callable[[Metrics], None] | None = None,
) -> AdaptationResult:
    """Adapt a fresh (not meta-trained) method to ``episode``; ``on_step`` sees each inner step.

    ``encoder`` is treated as read-only: unless the options keep it frozen, the method works on
    a deep copy.
    """
    options = dict(options or {})
    frozen = options.get("finetune", "frozen") == "frozen"
    working_encoder = encoder if frozen else copy.deepcopy(encoder)
    model = create_method(method, working_encoder, options)
    return adapt_method(model, episode, on_step, encoder_before=encoder)


def probability_column(class_name: str) -> str:
    return f"P({class_name})"


def class_probabilities(result: AdaptationResult, sentences: list[str]) -> pd.DataFrame:
    """One row per sentence: the predicted class, its probability, and every class's probability."""
    if not sentences:
        return pd.DataFrame(columns=["sentence", "predicted", "confidence", *map(probability_column, result.classes)])
    probabilities = result.task_model.predict_proba(sentences).cpu().numpy()
    rows = []
    for sentence, row in zip(sentences, probabilities, strict=True):
        best = int(row.argmax())
        rows.append({
            "sentence": sentence,
            "predicted": result.classes[best],
            "confidence": float(row[best]),
            **{probability_column(name): float(value) for name, value in zip(result.classes, row, strict=True)},
        })
    return pd.DataFrame(rows)
