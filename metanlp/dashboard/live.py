"""Live adaptation inside the dashboard process: a few user sentences → an adapted classifier.

Runs on a shared, frozen pretrained encoder, so sentences are embedded once and a method adapts
in well under a second on CPU. A method that fine-tunes the encoder gets a private copy of it, so
the shared encoder (and every other visitor's session) never changes.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from metanlp.adapted import AdaptedModel
from metanlp.data.episodes import EpisodeSampler
from metanlp.data.registry import examples_for_split, load_dataset
from metanlp.data.types import Episode
from metanlp.encoders import Encoder
from metanlp.encoders.cache import shared_cache
from metanlp.methods.base import Method, Metrics, TaskModel
from metanlp.methods.options import build_options
from metanlp.methods.registry import create_method, get_method_class, method_names

PREFERRED_ORDER = ("protonet", "finetune")
LIVE_ADAPT_STEPS = 30  # fine-tuning baseline: enough for a linear head on frozen features
LIVE_TOP_LAYER_STEPS = 15  # when the top encoder layer trains too, each step is a forward pass
# ProtoNet's softmax scale s (logits -s·‖x - c_k‖²) starts at 1, the scale meta-training begins
# from. On MiniLM's unit-length embeddings squared distances span 0-4, so with s = 1 every
# probability stays near 1/N even when the ranking is right. The scale that minimises the query
# loss on 60 meta-train episodes (frozen MiniLM, 5 queries per class, grid 1-40) was, for
# 3-way 3-shot / 5-way 1-shot / 5-way 5-shot: FewRel 10 / 7 / 14, HuffPost 10 / 5 / 14, CLINC150
# 20 / 10 / 20. At it the mean confidence on 60 meta-test episodes came close to the accuracy
# (FewRel 0.77 vs 0.81, 0.62 vs 0.60, 0.77 vs 0.81; HuffPost 0.71 vs 0.69, 0.48 vs 0.46, 0.68 vs
# 0.68; CLINC150 1.00 vs 1.00, 0.93 vs 0.94, 0.99 vs 0.99), against 0.24-0.53 at s = 1. 10 is the
# middle of that range. A trained ProtoNet barely moves s (1.04 after 400 steps at lr 1e-4).
FRESH_PROTONET_SCALE = 10.0


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
    if method == "protonet":
        options["scale"] = FRESH_PROTONET_SCALE  # calibrated probabilities; the ranking is the same
    return options


def fresh_caption(need_training: tuple[str, ...] | list[str]) -> str:
    """What "fresh" offers, and which methods must be meta-trained first (by their titles)."""
    text = (
        "A fresh method starts untrained on the frozen MiniLM. Offered here are the methods whose untrained "
        "adaptation already labels an easy task right (well-separated classes, checked when the page starts)."
    )
    if need_training:
        titles = ", ".join(get_method_class(name).card.title for name in need_training)
        text += (
            f" Not offered fresh, as they need meta-training first: {titles}. Train one on the Train page, "
            "then pick that run under 'Start from'."
        )
    return text


# ----------------------------------------------------------------- which methods work fresh
# The probe: an easy 3-way task whose classes are well separated in embedding space (unit-length
# vectors around orthogonal centres, like sentence embeddings of clearly different topics).
# A method whose untrained adaptation does not label such queries right needs meta-training
# before it means anything (e.g. a learned comparison module or memory that starts random).
PROBE_WAYS, PROBE_SHOTS, PROBE_QUERIES = 3, 2, 2
PROBE_SEEDS = (0, 1)
PROBE_NOISE = 0.15  # per coordinate, against centres of length 1
FRESH_ACCURACY = 0.9  # mean query accuracy over the probe seeds a fresh method must reach
PROBE_SIZE = 16  # embedding width of the probe


class _PlantedEncoder(Encoder):
    """A frozen stand-in "pretrained" encoder without a tokenizer: the probe plants every
    embedding in its cache, so nothing is ever tokenised (a method that asks is not ready)."""

    kind = "pretrained"
    hidden_size = PROBE_SIZE
    num_layers = 1
    num_heads = 1

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(1, 1)  # a parameter, so the encoder has a device and a layer group
        self.set_trainable_layers(0)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        raise RuntimeError("the probe encoder only knows the sentences planted in its cache")

    def forward(self, input_ids, attention_mask, output_attentions=False):
        raise RuntimeError("the probe encoder only knows the sentences planted in its cache")

    def ids_to_tokens(self, input_ids: list[int]) -> list[str]:
        return []

    def layer_groups(self) -> list[nn.Module]:
        return [self.layer]

    def config_dict(self) -> dict:
        return {}


def _probe_episode(encoder: Encoder, seed: int) -> Episode:
    """A separable episode whose sentences' embeddings are planted in ``encoder``'s cache."""
    generator = torch.Generator().manual_seed(seed)
    size = encoder.hidden_size
    texts: list[str] = []
    labels: list[int] = []
    vectors = []
    for label in range(PROBE_WAYS):
        centre = torch.zeros(size)
        centre[label] = 1.0
        for example in range(PROBE_SHOTS + PROBE_QUERIES):
            vector = centre + PROBE_NOISE * torch.randn(size, generator=generator)
            texts.append(f"probe {seed} class {label} example {example}")
            labels.append(label)
            vectors.append(vector / vector.norm())
    shared_cache(encoder)._store.update(zip(texts, vectors, strict=True))
    support = [i for i in range(len(texts)) if i % (PROBE_SHOTS + PROBE_QUERIES) < PROBE_SHOTS]
    query = [i for i in range(len(texts)) if i not in support]
    return Episode(
        classes=[f"class {label}" for label in range(PROBE_WAYS)],
        support_texts=[texts[i] for i in support],
        support_labels=[labels[i] for i in support],
        query_texts=[texts[i] for i in query],
        query_labels=[labels[i] for i in query],
        meta={"split": "probe"},
    )


def works_fresh(method: str) -> bool:
    """Whether an untrained ``method`` (live options, frozen encoder) solves the easy probe task.

    Runs on a stand-in encoder whose embeddings are planted, so it loads no model and costs
    milliseconds (once per process, the first optimiser pays torch's lazy imports). A method
    that cannot even be built with the live options (one that needs an option the page does
    not ask for) does not work fresh either.
    """
    encoder = _PlantedEncoder().eval()
    accuracies = []
    try:
        for seed in PROBE_SEEDS:
            episode = _probe_episode(encoder, seed)
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                model = create_method(method, encoder, live_options(method))
                task_model = model.adapt(episode)
            predicted = task_model.predict_proba(episode.query_texts).argmax(-1).cpu()
            accuracies.append((predicted == torch.tensor(episode.query_labels)).float().mean().item())
    except Exception:  # noqa: BLE001 - any failure means: not usable fresh on this page
        return False
    return sum(accuracies) / len(accuracies) >= FRESH_ACCURACY


@functools.lru_cache(maxsize=1)
def fresh_methods() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(methods that work fresh, methods that need meta-training first), each in page order."""
    names = live_method_names()
    ready = tuple(name for name in names if works_fresh(name))
    return ready, tuple(name for name in names if name not in ready)


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
    scale: float | None = None  # the softmax scale of a method that has one (ProtoNet, Matching Networks)
    fresh: bool = False  # an untrained method (``adapt_live``), not a trained run's
    adapted: AdaptedModel | None = None  # what "Save this model" writes


def before_adaptation(episode: Episode) -> Metrics:
    """Step 0 of every adaptation curve: no support example seen yet, so no class is preferred.

    Class indices of an episode are arbitrary, so before using the support labels a classifier
    has no reason to prefer one: the guess is 1/N each, whose cross-entropy is ln N on support and
    queries alike (a zero-initialised head, as in fine-tuning and MAML, gives exactly this).
    """
    loss = math.log(episode.n_way)
    metrics: Metrics = {"inner_step": 0, "support_loss": loss}
    if episode.query_texts:
        metrics["query_loss"] = loss
    return metrics


def expected_steps(method: str | Method, options: dict | None = None) -> int:
    """How many inner steps adapting will report (for a progress bar): the adaptation-steps
    option, else 1 (a method that adapts in one pass, such as ProtoNet).

    ``method`` is a built method (its own options count) or a method name with ``options``.
    """
    if isinstance(method, str):
        options = build_options(get_method_class(method).Options, options)
    else:
        options = method.options
    for name in ("adapt_steps", "test_inner_steps", "inner_steps"):
        value = getattr(options, name, 0)
        if isinstance(value, int) and value > 0:
            return value
    return 1


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

    record(before_adaptation(episode))
    adapted = AdaptedModel.adapt(model, episode, on_inner_step=record)  # seeded: a saved copy reloads the same
    task_model = adapted.task_model
    adapted_encoder = getattr(task_model, "encoder", None)
    return AdaptationResult(
        method=model.card.name,
        task_model=task_model,
        classes=list(episode.classes),
        steps=steps,
        seconds=time.perf_counter() - started,
        encoder_before=encoder_before or model.encoder,
        encoder_after=adapted_encoder if isinstance(adapted_encoder, Encoder) else model.encoder,
        scale=float(model.log_scale.detach().exp()) if isinstance(getattr(model, "log_scale", None), torch.Tensor) else None,
        adapted=adapted,
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
    return dataclasses.replace(adapt_method(model, episode, on_step, encoder_before=encoder), fresh=True)


def outcome(query_accuracy: float, n_way: int) -> str:
    """How to colour a result: "success" when most held-out queries are right, "error" when no
    better than guessing (1/N), "warning" in between."""
    if query_accuracy != query_accuracy or query_accuracy <= 1.0 / n_way:  # NaN or chance
        return "error"
    return "success" if query_accuracy > 0.5 else "warning"


def result_summary(result: AdaptationResult) -> tuple[str, str]:
    """(outcome, text) for the box under the adaptation curve: time, steps and held-out queries."""
    final = result.steps[-1] if result.steps else {}
    adapted_steps = sum(1 for step in result.steps if step.get("inner_step", 1) != 0)
    text = f"Adapted in {result.seconds:.2f} s over {adapted_steps} step(s)."
    if "query_accuracy" not in final:
        return "info", text
    n_way = len(result.classes)
    accuracy = float(final["query_accuracy"])
    right = round(accuracy * n_way)  # one held-out query per class
    text += f" Held-out queries: {right} of {n_way} right ({100 * accuracy:.0f}%), loss {final['query_loss']:.3f}."
    kind = outcome(accuracy, n_way)
    if kind == "error":
        text += (
            f" That is no better than guessing (1 in {n_way}): give more or clearer examples, or start "
            "from a trained run."
        )
    elif kind == "warning":
        text += " Fewer than half are right: more examples per class, or a trained run, should help."
    return kind, text


def probability_note(result: AdaptationResult) -> str | None:
    """Why the probabilities look as peaked (or as flat) as they do, for ProtoNet."""
    if result.method != "protonet" or result.scale is None:
        return None
    text = (
        f"ProtoNet's probabilities are softmax(−s·‖x − c‖²) with scale s = {result.scale:.3g}. The scale sets how "
        "peaked they are, never which class wins. "
    )
    if result.scale < 3 or not result.fresh:
        return text + (
            "At a small scale MiniLM's unit-length embeddings (squared distances 0–4) keep every probability "
            "near 1/N even when the ranking is right: then read the predicted class, not the confidence."
        )
    return text + (
        f"A fresh ProtoNet gets s = {FRESH_PROTONET_SCALE:g}: about the scale that minimises the loss on "
        "meta-training episodes of frozen MiniLM, at which confidence on held-out episodes roughly matched "
        "accuracy (an untrained s = 1 leaves every probability near 1/N)."
    )


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


ADAPTED_FOLDER = "adapted"  # inside the runs folder: saved adapted models


def adapted_folder_name(name: str) -> str:
    """A safe folder name from what the user typed (letters, digits, - and _; never a path)."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name.strip()).strip("-_")[:60]
    return slug or "adapted-model"


def save_adapted_model(root: str | Path, adapted: AdaptedModel, name: str) -> Path:
    """Save under ``<runs folder>/adapted/<name>`` (a new folder: ``-2``, ``-3`` … when the name is taken)."""
    base = (Path(root) / ADAPTED_FOLDER).resolve()
    stem = adapted_folder_name(name)
    folder, number = base / stem, 1
    while folder.exists():
        number += 1
        folder = base / f"{stem}-{number}"
    if folder.parent != base:  # cannot happen with a slug; keep the guarantee explicit
        raise ValueError("the adapted model would be saved outside the runs folder")
    folder.mkdir(parents=True)
    return adapted.save(folder)


def load_snippet(folder: Path, sentences: list[str]) -> str:
    """Python that loads the saved model with the library and classifies a sentence."""
    example = sentences[0] if sentences else "a new sentence"
    return (
        "from metanlp.adapted import AdaptedModel\n\n"
        f"model = AdaptedModel.load({str(folder)!r})\n"
        f"print(model.classes)\n"
        f"print(model.predict([{example!r}]))\n"
        f"print(model.predict_proba([{example!r}]))  # one column per class\n"
    )
