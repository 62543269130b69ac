"""Induction Networks (Geng et al. 2019): dynamic routing induces class vectors, a neural tensor compares them.

Instead of averaging a class's support embeddings (ProtoNet), capsule-style dynamic routing weighs each
example by how well it agrees with the emerging class vector, so atypical shots count less. A neural
tensor layer then scores every (class vector, query) pair.

Defaults for a frozen pretrained encoder (the paper's form, a random W_s and the tensor layer alone
trained with MSE, was 18-33 points below ProtoNet in the 200-episode bench):
- W_s is a residual head (the identity at the start) and the tensor layer's score is added to
  s·cos(c_i, W_s e_q + b_s), its output layer zero at the start (``anchor``): untrained, the network is
  a nearest-class-vector classifier, and meta-training learns the tensor layer as a correction.
- Cross-entropy on the scores (MSE on a sigmoid saturates at the anchor's scale), lr 1e-4 (as for
  Relation Networks), 8 tensor slices (the paper's 100 would give h·384² = 14.7M entries on MiniLM).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from metanlp.encoders import Encoder
from metanlp.methods._common import HEADS, EmbeddingHead, LearnedScale, OnePassMethod
from metanlp.methods.base import (
    EncoderOptions,
    MethodCard,
)
from metanlp.methods.options import option
from metanlp.methods.registry import register_method
from metanlp.methods.relation import RELATION_LOSSES, relation_loss


def squash(vectors: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """Capsule non-linearity ‖x‖²/(1+‖x‖²) · x/‖x‖: keeps the direction, maps the length into [0, 1)."""
    squared_norm = vectors.pow(2).sum(-1, keepdim=True)
    return squared_norm / (1 + squared_norm) * vectors / (squared_norm + eps).sqrt()


def dynamic_routing(
    predictions: torch.Tensor, labels: torch.Tensor, n_way: int, iterations: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Route each support vector ê_j to its own class: (S, D), (S,) → class vectors (N, D), coupling (S,).

    The coupling coefficients d_j = softmax of the logits b_j within the class sum to 1 per class;
    after each iteration b_j += ê_j · c_{y_j}, so examples that agree with the class vector gain weight.
    """
    belongs = F.one_hot(labels, n_way).T.bool()  # (N, S)
    logits = predictions.new_zeros(labels.shape[0])  # b_j
    for _ in range(iterations):
        per_class = logits[None, :].masked_fill(~belongs, float("-inf"))  # (N, S)
        coupling = torch.softmax(per_class, dim=-1).nan_to_num(0.0)  # (N, S), rows sum to 1
        class_vectors = squash(coupling @ predictions)  # (N, D)
        logits = logits + (predictions * class_vectors[labels]).sum(-1)
    return class_vectors, coupling.sum(0)


@dataclass
class InductionOptions(EncoderOptions):
    lr: float = option(1e-4, low=1e-7, high=1.0)
    head: str = option("residual", choices=HEADS)  # W_s, b_s: identity at start (see EmbeddingHead), or a projection
    induction_size: int = option(128, low=2, high=4096)  # size of the class vectors from a projection head
    routing_iterations: int = option(3, low=1, high=20)  # the paper uses 3
    tensor_slices: int = option(8, low=1, high=1024)  # h: slices of the neural tensor layer (paper: 100)
    loss: str = option("cross_entropy", choices=RELATION_LOSSES)  # or the paper's "mse" to one-hot (it saturates on an anchored score)
    # Anchored: the tensor layer's score is added to s·cos(c_i, W_s e_q + b_s) and starts at zero, so the
    # untrained network is a nearest-class-vector classifier; off: the tensor layer alone, as in the paper.
    anchor: bool = True
    scale: float = option(10.0, low=1e-3, high=1e3)  # s, learned (anchored only)


@register_method
class InductionNetwork(OnePassMethod):
    card = MethodCard(
        name="induction",
        title="Induction Networks",
        family="meta-learning",
        summary=(
            "Builds each class vector by dynamic routing: support examples that agree with the emerging class "
            "vector get more weight, so odd shots count less than in a plain average. A neural tensor layer "
            "then scores how well a query matches each class vector; here its score is added to the cosine "
            "between query and class vector and starts at zero, so it learns a correction to that. (anchor=false "
            "and loss='mse' give the paper's tensor-layer-only score and loss.)"
        ),
        formula=r"\hat e_{j}=\operatorname{squash}(W_s e_{j}+b_s),\ d_i=\operatorname{softmax}(b_i),\ "
        r"c_i=\operatorname{squash}\big(\textstyle\sum_j d_{ij}\hat e_{ij}\big),\ b_{ij}\mathrel{+}=\hat e_{ij}\cdot c_i,\ "
        r"v(c_i,e_q)=\operatorname{ReLU}\big(c_i^\top M^{[1:h]} e_q\big),\ "
        r"r_{iq}=W_r v+b_r+s\cos(c_i,W_s e_q+b_s),\ p(y=i\mid q)=\operatorname{softmax}_i(r_{iq})",
        paper="Geng, Li, Li, Zhu, Jian, Sun. Induction Networks for Few-Shot Text Classification. EMNLP 2019.",
        paper_url="https://arxiv.org/abs/1902.10482",
    )
    Options = InductionOptions
    recommended_train_steps = 1000

    def __init__(self, encoder: Encoder, options: InductionOptions) -> None:
        super().__init__(encoder, options)
        self.configure_encoder(options.finetune, options.top_k)
        self.transform = EmbeddingHead(encoder.hidden_size, options.head, options.induction_size)  # W_s, b_s
        size, slices = self.transform.output_size, options.tensor_slices
        # M^[1:h]: one bilinear form per slice between a class vector and a query embedding.
        # Unit-variance entries: c^T M e then has a spread of about ‖c‖‖e‖, with ‖c‖ < 1 after squash.
        self.tensor = nn.Parameter(torch.randn(slices, size, encoder.hidden_size))
        self.score = nn.Linear(slices, 1)  # W_r, b_r
        self.similarity_scale = LearnedScale(options.scale) if options.anchor else None
        if self.similarity_scale is not None:  # the tensor layer starts silent: a correction to the anchor
            nn.init.zeros_(self.score.weight)
            nn.init.zeros_(self.score.bias)

    def class_vectors(self, support: torch.Tensor, labels: torch.Tensor, n_way: int) -> torch.Tensor:
        """Encoder features of the support set → induced class vectors (N, induction_size)."""
        predictions = squash(self.transform(support))
        vectors, _ = dynamic_routing(predictions, labels, n_way, self.options.routing_iterations)
        return vectors

    def relation_logits(self, queries: torch.Tensor, class_vectors: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid relation scores: query features (Q, H), class vectors (N, D) → (Q, N)."""
        class_forms = torch.einsum("nd,kdh->nkh", class_vectors, self.tensor)  # c_i^T M^k: (N, h, H)
        tensor_products = torch.einsum("nkh,qh->qnk", class_forms, queries)  # (Q, N, h)
        relations = self.score(torch.relu(tensor_products)).squeeze(-1)
        if self.similarity_scale is not None:
            cosine = F.normalize(self.transform(queries), dim=-1) @ F.normalize(class_vectors, dim=-1).T
            relations = relations + self.similarity_scale() * cosine
        return relations

    def relation_scores(self, queries: torch.Tensor, class_vectors: torch.Tensor) -> torch.Tensor:
        """r_iq in [0, 1]: (Q, H), (N, D) → (Q, N)."""
        return torch.sigmoid(self.relation_logits(queries, class_vectors))

    def loss(self, relation_logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, float]:
        return relation_loss(relation_logits, labels, self.options.loss)

    def scorer(self, support: torch.Tensor, labels: torch.Tensor, n_way: int):
        """Routing induces the class vectors: the whole adaptation."""
        class_vectors = self.class_vectors(support, labels, n_way)
        return lambda queries: self.relation_logits(queries, class_vectors)
