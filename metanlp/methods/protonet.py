"""Prototypical Networks (Snell et al. 2017): classify by distance to class means.

On a frozen encoder plain ProtoNet learns nothing that can change a prediction (its temperature
rescales every logit alike). Two options add what other methods meta-learn, trained with
ProtoNet's own loss, so that a comparison can tell a method's parameters from its mechanism:
``head`` is Matching Networks' learned map on the features (``EmbeddingHead``), ``film`` is
meta-transfer's γ, β on each encoder layer or on the pooled embedding (``ScaleShiftMixin``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from metanlp.encoders import Encoder
from metanlp.methods._common import HEADS, EmbeddingHead, OnePassMethod
from metanlp.methods._scale_shift import FILM_PLACES, ScaleShiftMixin
from metanlp.methods.base import (
    EncoderOptions,
    MethodCard,
    Metrics,
)
from metanlp.methods.options import option
from metanlp.methods.registry import register_method

DISTANCES = ("euclidean", "cosine")
HEAD_CHOICES = ("none", *HEADS)
FILM_CHOICES = ("none", *FILM_PLACES)


def class_prototypes(embeddings: torch.Tensor, labels: torch.Tensor, n_way: int) -> torch.Tensor:
    """Mean embedding of each class: (S, H), (S,) → (N, H)."""
    one_hot = nn.functional.one_hot(labels, n_way).to(embeddings.dtype)  # (S, N)
    return (one_hot.T @ embeddings) / one_hot.sum(0).clamp(min=1.0)[:, None]


def prototype_logits(
    queries: torch.Tensor, prototypes: torch.Tensor, distance: str, scale: torch.Tensor | float
) -> torch.Tensor:
    """Negative squared Euclidean distance, or scaled cosine similarity: (Q, H), (N, H) → (Q, N)."""
    if distance == "euclidean":
        return -scale * torch.cdist(queries, prototypes).pow(2)
    queries = nn.functional.normalize(queries, dim=-1)
    prototypes = nn.functional.normalize(prototypes, dim=-1)
    return scale * queries @ prototypes.T


@dataclass
class ProtoNetOptions(EncoderOptions):
    distance: str = option("euclidean", choices=DISTANCES)
    lr: float = option(1e-4, low=1e-7, high=1.0)
    scale: float = option(1.0, low=1e-3, high=1e3)  # logit temperature; learned during meta-training
    learn_scale: bool = True
    head: str = option("none", choices=HEAD_CHOICES)  # Matching Networks' learned map on the features: "residual" (identity at start), "projection"
    embedding_size: int = option(128, low=2, high=4096)  # output size of a projection head
    film: str = option("none", choices=FILM_CHOICES)  # meta-transfer's γ, β: on every encoder layer ("layers") or the pooled embedding


@register_method
class ProtoNet(ScaleShiftMixin, OnePassMethod):
    card = MethodCard(
        name="protonet",
        title="Prototypical Networks",
        family="meta-learning",
        summary=(
            "Embeds the support set, averages each class into a prototype, and labels a query by "
            "its nearest prototype. Meta-training shapes the embedding so that this works on new classes."
        ),
        formula=r"c_k=\frac{1}{|S_k|}\sum_{x_i\in S_k} f_\phi(x_i),\quad "
        r"p(y=k\mid x)=\frac{\exp(-d(f_\phi(x),c_k))}{\sum_{k'}\exp(-d(f_\phi(x),c_{k'}))}",
        paper="Snell, Swersky, Zemel. Prototypical Networks for Few-shot Learning. NeurIPS 2017.",
        paper_url="https://arxiv.org/abs/1703.05175",
    )
    Options = ProtoNetOptions

    def __init__(self, encoder: Encoder, options: ProtoNetOptions) -> None:
        super().__init__(encoder, options)
        self.configure_encoder(options.finetune, options.top_k)
        # Log-scale keeps the temperature positive while it is learned.
        self.log_scale = nn.Parameter(torch.tensor(float(options.scale)).log(), requires_grad=options.learn_scale)
        self.head = (
            EmbeddingHead(encoder.hidden_size, options.head, options.embedding_size) if options.head != "none" else None
        )
        self.add_scale_shift(options.film)  # "none": ``features`` stays the encoder's own

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """Encoder features (B, H) → the space prototypes live in (the head's, if any)."""
        return features if self.head is None else self.head(features)

    def logits(self, queries: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        return prototype_logits(queries, prototypes, self.options.distance, self.log_scale.exp())

    def scorer(self, support: torch.Tensor, labels: torch.Tensor, n_way: int):
        prototypes = class_prototypes(self.embed(support), labels, n_way)
        return lambda queries: self.logits(self.embed(queries), prototypes)

    def prediction_invariant_parameters(self) -> list[nn.Parameter]:
        return [self.log_scale]  # a temperature scales every logit alike: the argmax never moves

    def extra_metrics(self) -> Metrics:
        return {"scale": self.log_scale.exp().item(), **self.scale_shift_metrics()}
