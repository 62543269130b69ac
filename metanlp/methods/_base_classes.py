"""A head over every meta-train class, for methods that train one across episodes (fine-tuning's
baseline, multi-task, DANN, distillation).

Episodes relabel their classes 0..N-1 every time, so a head over all training classes needs stable
ids for the class names: ``BaseClassIndex`` gives each name a fixed head row, in the order first seen.
``base_class_step`` is the supervised step they share: cross-entropy over the classes seen so far on
the support set (plus a method's own loss), the queries held out and only reported.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from metanlp.data.types import Episode
from metanlp.methods.base import Method, Metrics, classification_metrics
from metanlp.methods.options import OptionError

FeatureFunction = Callable[[list[str]], torch.Tensor]  # texts → (len(texts), H)
ExtraLoss = Callable[[torch.Tensor], tuple[torch.Tensor, Metrics]]  # support features → (loss, its metrics)


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
                        f"more than {self.option_name}={self.capacity} training classes; raise it", self.option_name
                    )
                self.ids[name] = len(self.ids)
            result.append(self.ids[name])
        return torch.tensor(result, dtype=torch.long, device=device)

    def to_config(self) -> dict[str, int]:
        return dict(self.ids)

    def load_config(self, ids: dict[str, int]) -> None:
        self.ids = {str(name): int(index) for name, index in ids.items()}


class CosineClassifier(nn.Module):
    """Scaled cosine similarity between features and one weight row per class ("Baseline++",
    Chen et al. 2019, A Closer Look at Few-shot Classification).

    Its scores do not change when a feature vector is scaled, so training cannot lower the loss by
    making features longer, only by turning them towards their class's row: the geometry in which
    new classes are later scored by cosine to their class means.
    """

    def __init__(self, in_features: int, out_features: int, scale: float = 10.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.normal_(self.weight, std=in_features**-0.5)
        self.scale = scale
        self.out_features = out_features

    def forward(self, features: torch.Tensor, n_rows: int | None = None) -> torch.Tensor:  # (B, H) → (B, n_rows)
        weight = self.weight if n_rows is None else self.weight[:n_rows]
        return self.scale * F.normalize(features, dim=-1) @ F.normalize(weight, dim=-1).T


def seen_class_logits(head: nn.Linear | CosineClassifier, features: torch.Tensor, n_seen: int) -> torch.Tensor:
    """Scores of the first ``n_seen`` base classes only: (B, H) → (B, n_seen).

    Slicing the weight (not the output) keeps the cost proportional to the classes seen
    so far rather than to the head's capacity.
    """
    if isinstance(head, CosineClassifier):
        return head(features, n_seen)
    return F.linear(features, head.weight[:n_seen], head.bias[:n_seen])


def base_class_step(
    method: Method,
    classes: BaseClassIndex,
    head: nn.Linear,
    features: FeatureFunction,
    episode: Episode,
    extra_loss: ExtraLoss | None = None,
) -> Metrics:
    """One step of ``method.optimizer()`` on the support set's cross-entropy over the base classes
    seen so far, plus ``extra_loss(support features)`` when given (e.g. DANN's domain loss).

    Returns support and query loss and accuracy (queries scored after the step, without gradients)
    and the extra loss's own metrics.
    """
    support_labels = classes.labels(episode, episode.support_labels, method.device)
    query_labels = classes.labels(episode, episode.query_labels, method.device)
    n_seen = len(classes)
    optimizer = method.optimizer()
    optimizer.zero_grad()
    support = features(episode.support_texts)
    support_loss, support_accuracy = classification_metrics(seen_class_logits(head, support, n_seen), support_labels)
    extra, metrics = extra_loss(support) if extra_loss is not None else (0.0, {})
    (support_loss + extra).backward()
    optimizer.step()
    with torch.no_grad():
        query_logits = seen_class_logits(head, features(episode.query_texts), n_seen)
        query_loss, query_accuracy = classification_metrics(query_logits, query_labels)
    return {
        "support_loss": support_loss.item(),
        "support_accuracy": support_accuracy,
        "query_loss": query_loss.item(),
        "query_accuracy": query_accuracy,
        **metrics,
    }
