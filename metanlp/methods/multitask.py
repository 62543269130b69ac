"""Multi-task learning: one shared encoder, one classification head per task.

Every training step fits the target episode's head and the heads of auxiliary datasets
drawn by size (proportional or temperature sampling, as in multilingual / multi-task
Transformers). The shared layers must serve all tasks at once, which is what should make
them transfer better to new classes than features fitted to one task alone. By default the heads
are cosine classifiers trained at 3e-4 and new classes are scored by cosine: the first default
(linear heads at 1e-3, Euclidean prototypes) ended 14-19 points below these defaults and 10-22
below the untrained encoder (docs/results_controls.md, docs/results.md).
The method never loads the auxiliary datasets: the engine hands their training examples to
``receive_data``, and adapting or predicting never needs them.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from metanlp.data.types import Episode
from metanlp.encoders import Encoder
from metanlp.methods._base_classes import BaseClassIndex, CosineClassifier, base_class_step
from metanlp.methods._transfer import ResidualAdapter, adapt_with_prototypes, data_not_received
from metanlp.methods.base import (
    AuxiliaryData,
    AuxiliaryDataset,
    DataRequest,
    EncoderOptions,
    InnerStepCallback,
    Method,
    MethodCard,
    Metrics,
    TaskModel,
    classification_metrics,
    parse_dataset_names,
)
from metanlp.methods.options import OptionError, check_choice, check_range, option
from metanlp.methods.protonet import DISTANCES
from metanlp.methods.registry import register_method

SAMPLING_MODES = ("proportional", "temperature")
HEAD_KINDS = ("cosine", "linear")


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


@dataclass
class MultiTaskOptions(EncoderOptions):
    # Auxiliary datasets, comma-separated ("" = single-task). Only their meta-train classes are used; if the
    # target is one of them with a non-default class split, name that split ("banking77:03"), or the
    # auxiliary head would train on the target's meta-test classes.
    tasks: str = "clinc150,banking77,agnews"
    sampling: str = option("proportional", choices=SAMPLING_MODES)
    temperature: float = option(2.0, low=1e-3, high=1e3)
    auxiliary_batch: int = option(16, low=1, high=4096)  # examples of the drawn task per step
    auxiliary_tasks_per_step: int = option(1, low=1, high=64)
    examples_per_task: int = option(2000, low=2, high=1_000_000)  # seeded subset of each task's training examples
    adapter_size: int = option(128, low=1, high=8192)  # bottleneck of the residual adapter on top of the encoder
    # 3e-4 with cosine heads and cosine prototypes: the first default (linear heads at 1e-3, Euclidean) ended
    # 10-22 points below the untrained encoder (docs/results_controls.md).
    lr: float = option(3e-4, low=1e-7, high=1.0)
    max_base_classes: int = option(256, low=2, high=100_000)
    distance: str = option("cosine", choices=DISTANCES)
    head: str = option("cosine", choices=HEAD_KINDS)
    head_scale: float = option(10.0, low=0.1, high=100.0)  # temperature of the cosine heads
    seed: int = option(0, low=0, high=2**31 - 1)


class AuxiliaryTask:
    """One auxiliary dataset: its training examples (a seeded subset) with integer labels."""

    def __init__(self, dataset: AuxiliaryDataset, max_examples: int, seed: int) -> None:
        examples = dataset.examples
        self.classes = list(dataset.classes)
        if len(self.classes) < 2 or not examples:
            raise OptionError(
                f"option 'tasks' names {dataset.name!r}, which has fewer than 2 training classes: it cannot train a head", "tasks"
            )
        self.name = dataset.name
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
            "sampling), each a cosine classifier. New tasks are classified by nearest class mean (cosine) in "
            "the shared feature space."
        ),
        formula=r"\min_{\theta,\{W_t\}}\ \mathbb{E}_{t\sim p}\,\mathcal{L}_t\!\left(W_t\,f_\theta(x),y\right),"
        r"\quad p_t\propto n_t^{1/T}",
        paper=(
            "Caruana. Multitask Learning. Machine Learning 1997; temperature sampling as in "
            "Arivazhagan et al. Massively Multilingual Neural Machine Translation in the Wild, 2019; cosine "
            "heads as in Chen et al. A Closer Look at Few-shot Classification, ICLR 2019."
        ),
        caveat=(
            "On frozen MiniLM its training changes little: against its own untrained start the bench measured "
            "+2.7 points on FewRel 1-shot and -1.3 to +0.4 elsewhere, and the auxiliary datasets add nothing "
            "measurable over training on the target's own classes (-0.5 to +0.5 points: docs/results_controls.md)."
        ),
        paper_url="https://arxiv.org/abs/1907.05019",
    )
    Options = MultiTaskOptions
    auxiliary_data: ClassVar[tuple[DataRequest, ...]] = (DataRequest("tasks", splits=("train",)),)

    def __init__(self, encoder: Encoder, options: MultiTaskOptions) -> None:
        super().__init__(encoder, options)
        self.configure_encoder(options.finetune, options.top_k)
        self.shared = ResidualAdapter(encoder.hidden_size, options.adapter_size)
        self.target_head = self._new_head(options.max_base_classes)
        self.target_classes = BaseClassIndex(options.max_base_classes)
        # The auxiliary tasks arrive before training (receive_data); their heads with them, or from a checkpoint.
        self.tasks: list[AuxiliaryTask] | None = None if parse_dataset_names(options.tasks) else []
        self.task_heads = nn.ModuleDict()
        self.sampling_probabilities: list[float] = []
        self._rng = random.Random(options.seed)

    def receive_data(self, data: AuxiliaryData) -> None:
        """The auxiliary datasets' training examples: one task, and one head, each."""
        options = self.options
        self.tasks = [
            AuxiliaryTask(dataset, options.examples_per_task, options.seed + index)
            for index, dataset in enumerate(data["tasks"])
        ]
        for task in self.tasks:
            self._add_head(head_key(task.name), len(task.classes))
        self.sampling_probabilities = task_sampling_probabilities(
            [task.size for task in self.tasks], options.sampling, options.temperature
        )

    def _add_head(self, key: str, n_classes: int) -> None:
        """A head for ``key`` (kept when one of that size exists, e.g. loaded from a checkpoint)."""
        if key not in self.task_heads:
            self.task_heads[key] = self._new_head(n_classes).to(self.device)
        elif self.task_heads[key].out_features != n_classes:
            raise OptionError(
                f"option 'tasks' names a task with {n_classes} training classes whose saved head has "
                f"{self.task_heads[key].out_features}: the dataset changed since the checkpoint was made",
                "tasks",
            )

    def _new_head(self, n_classes: int) -> nn.Module:
        if self.options.head == "cosine":
            return CosineClassifier(self.encoder.hidden_size, n_classes, self.options.head_scale)
        return nn.Linear(self.encoder.hidden_size, n_classes)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Heads of the auxiliary tasks come back from their saved weights' shapes: no dataset is read."""
        saved_kind = "linear" if "target_head.bias" in state_dict else "cosine"
        if saved_kind != self.options.head:  # a checkpoint from before cosine heads became the default
            raise OptionError(
                f"this checkpoint has {saved_kind} heads and the method was built with head={self.options.head!r}: "
                f"build it with head={saved_kind!r}", "head",
            )
        for key, value in state_dict.items():
            parts = key.split(".")
            if parts[0] == "task_heads" and parts[-1] == "weight" and len(parts) == 3:
                self._add_head(parts[1], value.shape[0])
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

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
        if self.tasks is None:
            raise data_not_received(self, "tasks")
        self.train()
        metrics = base_class_step(
            self, self.target_classes, self.target_head, self.shared_features, episode, self._auxiliary_loss
        )
        auxiliary = sum(value for key, value in metrics.items() if key.startswith("loss_"))
        return {**metrics, "loss_target": metrics["support_loss"], "total_loss": metrics["support_loss"] + auxiliary}

    def _auxiliary_loss(self, _support_features: torch.Tensor) -> tuple[torch.Tensor | float, Metrics]:
        """Summed loss of ``auxiliary_tasks_per_step`` drawn tasks' heads, each on a batch of its examples."""
        total: torch.Tensor | float = 0.0
        metrics: Metrics = {}
        for _ in range(self.options.auxiliary_tasks_per_step if self.tasks else 0):
            task = self.tasks[self.sample_task_index()]
            texts, labels = task.batch(self._rng, self.options.auxiliary_batch)
            task_logits = self.task_heads[head_key(task.name)](self.shared_features(texts))
            task_loss, _ = classification_metrics(task_logits, torch.tensor(labels, device=self.device))
            total = total + task_loss
            metrics[f"loss_{task.name}"] = task_loss.item()
        return total, metrics

    def adapt(self, episode: Episode, on_inner_step: InnerStepCallback | None = None) -> TaskModel:
        self.eval()
        return adapt_with_prototypes(self.shared_features, episode, self.options.distance, on_inner_step)

    def extra_state_config(self) -> dict:
        return {"target_classes": self.target_classes.to_config()}

    def load_extra_state_config(self, config: dict) -> None:
        self.target_classes.load_config(config.get("target_classes", {}))
