"""Multi-task learning: one shared encoder, one classification head per task.

Every training step fits the target episode's head and the heads of auxiliary datasets
drawn by size (proportional or temperature sampling, as in multilingual / multi-task
Transformers). The shared layers must serve all tasks at once, which is what should make
them transfer better to new classes than features fitted to one task alone.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch import nn

from metanlp.data.registry import available_names, examples_for_split, load_dataset
from metanlp.data.types import Episode
from metanlp.encoders import Encoder
from metanlp.methods._gradient_reversal import (
    BaseClassIndex,
    ResidualAdapter,
    adapt_with_prototypes,
    seen_class_logits,
)
from metanlp.methods.base import (
    EncoderOptions,
    InnerStepCallback,
    Method,
    MethodCard,
    Metrics,
    TaskModel,
    classification_metrics,
)
from metanlp.methods.options import OptionError, check_choice, check_range
from metanlp.methods.protonet import DISTANCES
from metanlp.methods.registry import register_method

SAMPLING_MODES = ("proportional", "temperature")


def task_sampling_probabilities(sizes: list[int], mode: str = "proportional", temperature: float = 1.0) -> list[float]:
    """Probability of drawing each task: p_i ∝ n_i (proportional) or p_i ∝ n_i^(1/T) (temperature).

    T = 1 is proportional; large T approaches uniform, which lifts small tasks that
    proportional sampling would starve.
    """
    check_choice("sampling", mode, SAMPLING_MODES)
    if not sizes:
        return []
    if any(size <= 0 for size in sizes):
        raise OptionError(f"task sizes must be positive, got {list(sizes)}")
    exponent = 1.0
    if mode == "temperature":
        check_range("temperature", temperature, 1e-3, None)
        exponent = 1.0 / temperature
    weights = [float(size) ** exponent for size in sizes]
    total = sum(weights)
    return [weight / total for weight in weights]


def parse_task_names(tasks: str) -> list[str]:
    """Comma-separated dataset names, duplicates dropped: "a, b:03,a" → ["a", "b:03"]."""
    return list(dict.fromkeys(name.strip() for name in tasks.split(",") if name.strip()))


def split_task_name(task: str) -> tuple[str, str | None]:
    """"banking77:03" → ("banking77", "03"): a dataset name with an optional class-split id."""
    name, _, split_id = task.partition(":")
    return name.strip(), split_id.strip() or None


@dataclass
class MultiTaskOptions(EncoderOptions):
    # Auxiliary datasets, comma-separated ("" = single-task). Only their meta-train classes are used; if the
    # target is one of them with a non-default class split, name that split ("banking77:03"), or the
    # auxiliary head would train on the target's meta-test classes.
    tasks: str = "clinc150,banking77,agnews"
    sampling: str = "proportional"
    temperature: float = 2.0
    auxiliary_batch: int = 16  # examples of the drawn task per step
    auxiliary_tasks_per_step: int = 1
    examples_per_task: int = 2000  # seeded subset of each task's training examples
    adapter_size: int = 128  # bottleneck of the residual adapter on top of the encoder
    lr: float = 1e-3
    max_base_classes: int = 256
    distance: str = "euclidean"
    seed: int = 0

    def validate(self) -> None:
        super().validate()
        known = available_names()
        for task in parse_task_names(self.tasks):
            name, _ = split_task_name(task)
            if name not in known:
                raise OptionError(f"option 'tasks' names unknown dataset {name!r}; available: {', '.join(known)}")
        check_choice("sampling", self.sampling, SAMPLING_MODES)
        check_range("temperature", self.temperature, 1e-3, 1e3)
        check_range("auxiliary_batch", self.auxiliary_batch, 1, 4096)
        check_range("auxiliary_tasks_per_step", self.auxiliary_tasks_per_step, 1, 64)
        check_range("examples_per_task", self.examples_per_task, 2, 1_000_000)
        check_range("adapter_size", self.adapter_size, 1, 8192)
        check_range("lr", self.lr, 1e-7, 1.0)
        check_range("max_base_classes", self.max_base_classes, 2, 100_000)
        check_choice("distance", self.distance, DISTANCES)


class AuxiliaryTask:
    """One auxiliary dataset: its training examples (a seeded subset) with integer labels."""

    def __init__(self, name: str, max_examples: int, seed: int) -> None:
        dataset = load_dataset(*split_task_name(name))
        examples = examples_for_split(dataset, "train")
        self.classes = list(dataset.class_splits["train"])
        if len(self.classes) < 2 or not examples:
            raise OptionError(f"task {name!r} has fewer than 2 training classes; it cannot train a head")
        self.name = name
        self.size = len(examples)  # the sampling weight uses the full size, not the subset
        if len(examples) > max_examples:
            examples = random.Random(seed).sample(examples, max_examples)
        index = {label: position for position, label in enumerate(self.classes)}
        self.texts = [example.text for example in examples]
        self.labels = [index[example.label] for example in examples]

    def batch(self, rng: random.Random, size: int) -> tuple[list[str], list[int]]:
        rows = rng.sample(range(len(self.texts)), min(size, len(self.texts)))
        return [self.texts[row] for row in rows], [self.labels[row] for row in rows]


def head_key(task_name: str) -> str:
    return task_name.replace(".", "_").replace(":", "_")  # ModuleDict keys may not contain dots


@register_method
class MultiTask(Method):
    card = MethodCard(
        name="multitask",
        title="Multi-task learning",
        family="transfer learning",
        summary=(
            "Trains one shared encoder with a separate classification head per dataset: the target's "
            "training classes plus auxiliary datasets drawn by size (proportional or temperature "
            "sampling). New tasks are classified by nearest class mean in the shared feature space."
        ),
        formula=r"\min_{\theta,\{W_t\}}\ \mathbb{E}_{t\sim p}\,\mathcal{L}_t\!\left(W_t\,f_\theta(x),y\right),"
        r"\quad p_t\propto n_t^{1/T}",
        paper=(
            "Caruana. Multitask Learning. Machine Learning 1997; temperature sampling as in "
            "Arivazhagan et al. Massively Multilingual Neural Machine Translation in the Wild, 2019."
        ),
        paper_url="https://arxiv.org/abs/1907.05019",
    )
    Options = MultiTaskOptions

    def __init__(self, encoder: Encoder, options: MultiTaskOptions) -> None:
        super().__init__(encoder, options)
        self.configure_encoder(options.finetune, options.top_k)
        self.shared = ResidualAdapter(encoder.hidden_size, options.adapter_size)
        self.target_head = nn.Linear(encoder.hidden_size, options.max_base_classes)
        self.target_classes = BaseClassIndex(options.max_base_classes)
        self.tasks = [
            AuxiliaryTask(name, options.examples_per_task, options.seed + index)
            for index, name in enumerate(parse_task_names(options.tasks))
        ]
        self.task_heads = nn.ModuleDict(
            {head_key(task.name): nn.Linear(encoder.hidden_size, len(task.classes)) for task in self.tasks}
        )
        self.sampling_probabilities = task_sampling_probabilities(
            [task.size for task in self.tasks], options.sampling, options.temperature
        )
        self._rng = random.Random(options.seed)

    def prediction_invariant_parameters(self) -> list[nn.Parameter]:
        # The heads score training classes only; a new task is classified by class means of shared_features.
        return [*self.target_head.parameters(), *self.task_heads.parameters()]

    def shared_features(self, texts: list[str]) -> torch.Tensor:
        """f_θ(x): encoder features through the shared layers, (len(texts), encoder hidden size)."""
        return self.shared(self.features(texts))

    def sample_task_index(self) -> int:
        """Draw an auxiliary task with ``sampling_probabilities``."""
        return self._rng.choices(range(len(self.tasks)), weights=self.sampling_probabilities)[0]

    def train_step(self, episode: Episode) -> Metrics:
        """Target head on the support set plus the drawn auxiliary heads, one joint update."""
        self.train()
        device = self.device
        support_labels = self.target_classes.labels(episode, episode.support_labels, device)
        query_labels = self.target_classes.labels(episode, episode.query_labels, device)
        n_seen = len(self.target_classes)
        optimizer = self.optimizer()
        optimizer.zero_grad()
        logits = seen_class_logits(self.target_head, self.shared_features(episode.support_texts), n_seen)
        support_loss, support_accuracy = classification_metrics(logits, support_labels)
        total_loss = support_loss
        metrics: Metrics = {}
        for _ in range(self.options.auxiliary_tasks_per_step if self.tasks else 0):
            task = self.tasks[self.sample_task_index()]
            texts, labels = task.batch(self._rng, self.options.auxiliary_batch)
            task_logits = self.task_heads[head_key(task.name)](self.shared_features(texts))
            task_loss, _ = classification_metrics(task_logits, torch.tensor(labels, device=device))
            total_loss = total_loss + task_loss
            metrics[f"loss_{task.name}"] = task_loss.item()
        total_loss.backward()
        optimizer.step()
        with torch.no_grad():
            query_logits = seen_class_logits(self.target_head, self.shared_features(episode.query_texts), n_seen)
            query_loss, query_accuracy = classification_metrics(query_logits, query_labels)
        return {
            "support_loss": support_loss.item(),
            "support_accuracy": support_accuracy,
            "query_loss": query_loss.item(),
            "query_accuracy": query_accuracy,
            "loss_target": support_loss.item(),
            **metrics,
            "total_loss": total_loss.item(),
        }

    def adapt(self, episode: Episode, on_inner_step: InnerStepCallback | None = None) -> TaskModel:
        self.eval()
        return adapt_with_prototypes(self.shared_features, episode, self.options.distance, on_inner_step)

    def extra_state_config(self) -> dict:
        return {"target_classes": self.target_classes.to_config()}

    def load_extra_state_config(self, config: dict) -> None:
        self.target_classes.load_config(config.get("target_classes", {}))
