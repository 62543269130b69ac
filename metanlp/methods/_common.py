"""Pieces shared by several methods: fixed-function task models, one-pass reports, heads, steps."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from metanlp.data.types import Episode
from metanlp.methods.base import (
    InnerStepCallback,
    Method,
    Metrics,
    TaskModel,
    classification_metrics,
    label_tensor,
)

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


class LearnedScale(nn.Module):
    """A positive scalar (a logit temperature) kept as its logarithm, so no step can flip its sign.

    Cosine similarities lie in [-1, 1] and squared distances of unit-length features in [0, 4]: without a
    scale the softmax over them is nearly flat and the loss barely says which class was wrong.
    """

    def __init__(self, initial: float, learn: bool = True) -> None:
        super().__init__()
        self.log_value = nn.Parameter(torch.tensor(float(initial)).log(), requires_grad=learn)

    def forward(self) -> torch.Tensor:
        return self.log_value.exp()


def mlp(input_size: int, hidden_size: int, output_size: int, zero_output: bool = False) -> nn.Sequential:
    """Linear → ReLU → Linear; ``zero_output`` starts it as the zero function, so a learned correction
    added to a parameter-free rule (a prototype classifier, a distance) leaves that rule intact at first."""
    network = nn.Sequential(nn.Linear(input_size, hidden_size), nn.ReLU(), nn.Linear(hidden_size, output_size))
    if zero_output:
        nn.init.zeros_(network[-1].weight)
        nn.init.zeros_(network[-1].bias)
    return network


def step_if_trainable(method: Method, loss: torch.Tensor) -> None:
    """One outer-loop optimiser step on ``loss`` (nothing to do when no parameter is trainable)."""
    if method.trainable_parameters():
        optimizer = method.optimizer()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


Scorer = Callable[[torch.Tensor], torch.Tensor]  # query features (Q, H) → logits (Q, N)


class OnePassMethod(Method):
    """A method whose adaptation is one forward pass: the support set defines a scorer.

    Subclasses implement ``scorer`` (and may override ``loss`` and ``extra_metrics``); the
    meta-training step and the adaptation are then the same for all of them: score the
    queries with the scorer built from the support set, step on the query loss, report.
    """

    def scorer(self, support: torch.Tensor, labels: torch.Tensor, n_way: int) -> Scorer:
        """The task's scoring function, built from support features (S, H) and labels (S,)."""
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, float]:
        return classification_metrics(logits, labels)

    def extra_metrics(self) -> Metrics:
        """Method-specific values reported with every training step (e.g. a learned scale)."""
        return {}

    def train_step(self, episode: Episode) -> Metrics:
        self.train()
        n_support = len(episode.support_texts)
        embeddings = self.features(episode.support_texts + episode.query_texts)
        support, queries = embeddings[:n_support], embeddings[n_support:]
        support_labels = label_tensor(episode.support_labels, support.device)
        query_labels = label_tensor(episode.query_labels, support.device)
        query_loss, query_accuracy = self.loss(
            self.scorer(support, support_labels, episode.n_way)(queries), query_labels
        )
        step_if_trainable(self, query_loss)
        with torch.no_grad():
            support_loss, support_accuracy = self.loss(
                self.scorer(support, support_labels, episode.n_way)(support), support_labels
            )
        return {
            "support_loss": support_loss.item(),
            "support_accuracy": support_accuracy,
            "query_loss": query_loss.item(),
            "query_accuracy": query_accuracy,
            **self.extra_metrics(),
        }

    def adapt(self, episode: Episode, on_inner_step: InnerStepCallback | None = None) -> TaskModel:
        """Build the scorer from the support set, reported as one inner step."""
        self.eval()
        with torch.no_grad():
            support = self.features(episode.support_texts)
            labels = label_tensor(episode.support_labels, support.device)
            score = self.scorer(support, labels, episode.n_way)
        task_model = FeatureTaskModel(self.features, score)
        if on_inner_step is not None:
            on_inner_step(one_pass_report(task_model, episode, self.loss))
        return task_model
