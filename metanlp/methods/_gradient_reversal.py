"""Helpers shared by the transfer-learning methods (multi-task, DANN, distillation).

- Gradient reversal (Ganin et al. 2016, arXiv:1505.07818): identity on the way forward,
  −λ · gradient on the way back, so one backward pass trains a domain classifier to tell
  domains apart while pushing the features below it to make them indistinguishable.
- ``BaseClassIndex``: stable ids for the named classes seen while training a head over
  all training classes (episodes relabel classes 0..N-1 every time).
- Prototype adaptation on learned features: every transfer method adapts to a new task
  the same way, so the comparison between them measures the features, not the classifier.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from metanlp.data.types import Episode
from metanlp.methods.base import InnerStepCallback, TaskModel, classification_metrics, label_tensor
from metanlp.methods.options import OptionError
from metanlp.methods.protonet import class_prototypes, prototype_logits

FeatureFunction = Callable[[list[str]], torch.Tensor]


# ----------------------------------------------------------------- gradient reversal


class GradientReversal(torch.autograd.Function):
    """R_λ(x) = x forward; dR_λ/dx = −λ·I backward."""

    @staticmethod
    def forward(ctx, features: torch.Tensor, strength: float) -> torch.Tensor:
        ctx.strength = strength
        return features.view_as(features)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.strength * grad_output, None


def reverse_gradient(features: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """Apply the gradient-reversal layer with λ = ``strength``."""
    return GradientReversal.apply(features, float(strength))


def dann_lambda(progress: float, gamma: float = 10.0) -> float:
    """Ganin et al.'s schedule λ_p = 2 / (1 + exp(−γ·p)) − 1, for training progress p in [0, 1].

    It starts at 0, so the domain classifier's early, noisy signal cannot wreck the features,
    and rises towards 1.
    """
    progress = min(max(progress, 0.0), 1.0)
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


# ----------------------------------------------------------------- base classes


class BaseClassIndex:
    """Maps class names to fixed head rows, in the order they are first seen."""

    def __init__(self, capacity: int, option_name: str = "max_base_classes") -> None:
        self.capacity = capacity
        self.option_name = option_name
        self.ids: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def labels(self, episode: Episode, labels: list[int], device: torch.device) -> torch.Tensor:
        """Episode labels (0..N-1) → base-class ids (a long tensor on ``device``)."""
        result = []
        for label in labels:
            name = episode.classes[label]
            if name not in self.ids:
                if len(self.ids) >= self.capacity:
                    raise OptionError(
                        f"more than {self.option_name}={self.capacity} training classes; raise it"
                    )
                self.ids[name] = len(self.ids)
            result.append(self.ids[name])
        return torch.tensor(result, dtype=torch.long, device=device)

    def to_config(self) -> dict[str, int]:
        return dict(self.ids)

    def load_config(self, ids: dict[str, int]) -> None:
        self.ids = {str(name): int(index) for name, index in ids.items()}


def seen_class_logits(head: nn.Linear, features: torch.Tensor, n_seen: int) -> torch.Tensor:
    """Scores of the first ``n_seen`` base classes only: (B, H) → (B, n_seen).

    Slicing the weight (not the output) keeps the cost proportional to the classes seen
    so far rather than to the head's capacity.
    """
    return F.linear(features, head.weight[:n_seen], head.bias[:n_seen])


# ----------------------------------------------------------------- adaptation


class FeaturePrototypeTaskModel(TaskModel):
    """Nearest prototype in the space of a learned feature function."""

    def __init__(self, features: FeatureFunction, prototypes: torch.Tensor, distance: str) -> None:
        self.features = features
        self.prototypes = prototypes
        self.distance = distance

    def predict_logits(self, texts: list[str]) -> torch.Tensor:
        with torch.no_grad():
            return prototype_logits(self.features(texts), self.prototypes, self.distance, 1.0)


def adapt_with_prototypes(
    features: FeatureFunction,
    episode: Episode,
    distance: str,
    on_inner_step: InnerStepCallback | None = None,
) -> FeaturePrototypeTaskModel:
    """Class means of the support features; reports one "inner step" (the means) if asked.

    Query labels, when present, are used only to report query loss and accuracy.
    """
    with torch.no_grad():
        support = features(episode.support_texts)
        labels = label_tensor(episode.support_labels, support.device)
        prototypes = class_prototypes(support, labels, episode.n_way)
        if on_inner_step is not None:
            support_loss, support_accuracy = classification_metrics(
                prototype_logits(support, prototypes, distance, 1.0), labels
            )
            metrics = {"inner_step": 1, "support_loss": support_loss.item(), "support_accuracy": support_accuracy}
            if episode.query_texts:
                logits = prototype_logits(features(episode.query_texts), prototypes, distance, 1.0)
                query_loss, query_accuracy = classification_metrics(
                    logits, label_tensor(episode.query_labels, logits.device)
                )
                metrics.update(query_loss=query_loss.item(), query_accuracy=query_accuracy)
            on_inner_step(metrics)
    return FeaturePrototypeTaskModel(features, prototypes, distance)


class ResidualAdapter(nn.Module):
    """x + W₂·GELU(W₁x), with W₂ starting at zero (a bottleneck adapter, Houlsby et al. 2019).

    It begins as the identity, so a method starts from the encoder's own features (strong
    for pretrained MiniLM) and training only moves away from them as far as its loss asks.
    """

    def __init__(self, size: int, bottleneck: int) -> None:
        super().__init__()
        self.down = nn.Linear(size, bottleneck)
        self.up = nn.Linear(bottleneck, size)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # (B, H) → (B, H)
        return features + self.up(nn.functional.gelu(self.down(features)))
