"""Pieces shared by several methods: fixed-function task models, one-pass reports, heads, steps."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from metanlp.data.types import Episode
from metanlp.methods.base import Method, Metrics, TaskModel, classification_metrics, label_tensor

LossAndAccuracy = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, float]]
HEADS = ("residual", "projection")  # kinds of EmbeddingHead


class FeatureTaskModel(TaskModel):
    """A task model that scores sentence features with a function fixed at adaptation time."""

    def __init__(
        self, features: Callable[[list[str]], torch.Tensor], score: Callable[[torch.Tensor], torch.Tensor]
    ):
        self.features = features
        self.score = score

    def predict_logits(self, texts: list[str]) -> torch.Tensor:
        with torch.no_grad():
            return self.score(self.features(texts))


def one_pass_report(
    task_model: TaskModel, episode: Episode, loss: LossAndAccuracy = classification_metrics
) -> Metrics:
    """Metrics of the single "inner step" of a method whose adaptation is one forward pass.

    The support set is scored by the adapted model (so support examples also see themselves);
    query labels only serve reporting.
    """
    with torch.no_grad():
        support_logits = task_model.predict_logits(episode.support_texts).float()
        support_loss, support_accuracy = loss(
            support_logits, label_tensor(episode.support_labels, support_logits.device)
        )
        metrics = {"inner_step": 1, "support_loss": support_loss.item(), "support_accuracy": support_accuracy}
        if episode.query_texts:
            query_logits = task_model.predict_logits(episode.query_texts).float()
            query_loss, query_accuracy = loss(
                query_logits, label_tensor(episode.query_labels, query_logits.device)
            )
            metrics.update(query_loss=query_loss.item(), query_accuracy=query_accuracy)
    return metrics


class EmbeddingHead(nn.Module):
    """A learned map on top of the encoder's sentence features, so a frozen encoder can still be meta-trained.

    ``residual``: x + Wx with W = 0 at start, so the untrained method uses the encoder's own geometry
    (the better start from a pretrained encoder). ``projection``: Wx into ``size`` dimensions from a random
    start, a new metric learned entirely by meta-training.
    """

    def __init__(self, input_size: int, kind: str = "residual", size: int = 128) -> None:
        super().__init__()
        self.residual = kind == "residual"
        self.output_size = input_size if self.residual else size
        self.linear = nn.Linear(input_size, self.output_size)
        if self.residual:
            nn.init.zeros_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features + self.linear(features) if self.residual else self.linear(features)


def step_if_trainable(method: Method, loss: torch.Tensor) -> None:
    """One outer-loop optimiser step on ``loss`` (nothing to do when no parameter is trainable)."""
    if method.trainable_parameters():
        optimizer = method.optimizer()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
