"""Matching Networks (Vinyals et al. 2016): a query's label is an attention-weighted vote of the support labels.

Defaults: the residual head starts as the identity, so the untrained network is cosine nearest
neighbour on the encoder's features (at one shot per class, the same ranking as ProtoNet on
unit-length features). lr 1e-4 for 500 episodes: on HuffPost's validation classes (5-way 1-shot,
200 episodes) 3e-4 peaked at 45.9% (untrained 45.8%) and fell to 43.9% by 2,000 episodes; 1e-4 rose
to 46.5-46.9% from 500 to 1,000 (CLINC150 validation: 95.1% → 95.8% at 500, then flat or falling).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from metanlp.encoders import Encoder
from metanlp.methods._common import (
    HEADS,
    EmbeddingHead,
    OnePassMethod,
)
from metanlp.methods.base import (
    EncoderOptions,
    MethodCard,
    Metrics,
)
from metanlp.methods.options import option
from metanlp.methods.registry import register_method

LossAndAccuracy = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, float]]


# ----- Matching Networks ------------------------------------------------------------------
def attention_weights(
    queries: torch.Tensor, support: torch.Tensor, scale: torch.Tensor | float
) -> torch.Tensor:
    """a(x, x_i) = softmax_i(scale · cos(f(x), g(x_i))): (Q, D), (S, D) → (Q, S), rows sum to 1."""
    return torch.softmax(scaled_cosine(queries, support, scale), dim=-1)


def scaled_cosine(queries: torch.Tensor, support: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    return scale * F.normalize(queries, dim=-1) @ F.normalize(support, dim=-1).T  # (Q, S)


def matching_log_probabilities(
    similarities: torch.Tensor, support_labels: torch.Tensor, n_way: int
) -> torch.Tensor:
    """log p(y=k|x) = log Σ_{i: y_i=k} a(x, x_i), computed stably with logsumexp: (Q, S) → (Q, N)."""
    log_attention = torch.log_softmax(similarities, dim=-1)  # (Q, S)
    belongs = F.one_hot(support_labels, n_way).T.bool()  # (N, S)
    per_class = log_attention[:, None, :].masked_fill(~belongs[None], float("-inf"))  # (Q, N, S)
    return torch.logsumexp(per_class, dim=-1)


@dataclass
class MatchingOptions(EncoderOptions):
    lr: float = option(1e-4, low=1e-7, high=1.0)
    head: str = option("residual", choices=HEADS)  # learned map on the encoder features: residual (identity at start) or projection
    embedding_size: int = option(128, low=2, high=4096)  # output size of a projection head
    full_context: bool = False  # the paper's full-context embeddings (BiLSTM g, attention-LSTM f)
    processing_steps: int = option(3, low=1, high=20)  # K read steps of the attention LSTM (full_context only)
    scale: float = option(10.0, low=1e-3, high=1e3)  # softmax temperature on cosine; learned during meta-training
    learn_scale: bool = True


class FullContextEmbedding(nn.Module):
    """Vinyals et al.'s full-context embeddings, which let each embedding depend on the whole support set.

    g(x_i, S) = g'(x_i) + h→_i + h←_i (a bidirectional LSTM over the support sequence);
    f(x, S) runs K steps of an LSTM that attends over g(S):
    ĥ_k, c_k = LSTM(f'(x), [h_{k-1}, r_{k-1}], c_{k-1}),  h_k = ĥ_k + f'(x),  r_k = Σ_i softmax(h_k·g_i) g_i.
    Feeding r as extra LSTM input is the same as the paper's concatenated hidden state, since the gates
    are linear in every input.
    """

    def __init__(self, size: int, processing_steps: int) -> None:
        super().__init__()
        self.processing_steps = processing_steps
        self.support_lstm = nn.LSTM(size, size, batch_first=True, bidirectional=True)
        self.query_lstm = nn.LSTMCell(2 * size, size)

    def support(self, support: torch.Tensor) -> torch.Tensor:
        """(S, D) → (S, D)."""
        size = support.shape[-1]
        states, _ = self.support_lstm(support[None])  # (1, S, 2D)
        return support + states[0, :, :size] + states[0, :, size:]

    def queries(self, queries: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        """(Q, D), context g(S) (S, D) → (Q, D)."""
        hidden = torch.zeros_like(queries)
        cell = torch.zeros_like(queries)
        read = torch.zeros_like(queries)
        for _ in range(self.processing_steps):
            hidden, cell = self.query_lstm(torch.cat([queries, read], dim=-1), (hidden, cell))
            hidden = hidden + queries
            read = torch.softmax(hidden @ support.T, dim=-1) @ support  # (Q, D)
        return hidden


@register_method
class MatchingNetwork(OnePassMethod):
    card = MethodCard(
        name="matching",
        title="Matching Networks",
        family="meta-learning",
        summary=(
            "Compares a query with every support example by cosine similarity and lets the softmax of those "
            "similarities vote for the support labels. Meta-training shapes the embedding (and, optionally, "
            "a full-context LSTM that sees the whole support set) so that the vote works on new classes."
        ),
        formula=r"P(\hat y\mid \hat x,S)=\sum_{i=1}^{k} a(\hat x,x_i)\,y_i,\quad "
        r"a(\hat x,x_i)=\frac{e^{c(f(\hat x),g(x_i))}}{\sum_{j=1}^{k}e^{c(f(\hat x),g(x_j))}}",
        paper="Vinyals, Blundell, Lillicrap, Kavukcuoglu, Wierstra. Matching Networks for One Shot Learning. "
        "NeurIPS 2016.",
        paper_url="https://arxiv.org/abs/1606.04080",
    )
    Options = MatchingOptions
    recommended_train_steps = 500

    def __init__(self, encoder: Encoder, options: MatchingOptions) -> None:
        super().__init__(encoder, options)
        self.configure_encoder(options.finetune, options.top_k)
        # f' = g': one learned map shared by queries and support (a learned metric).
        self.embedding = EmbeddingHead(encoder.hidden_size, options.head, options.embedding_size)
        self.context = (
            FullContextEmbedding(self.embedding.output_size, options.processing_steps)
            if options.full_context
            else None
        )
        # The paper's softmax over raw cosines is nearly flat; a learned temperature sharpens it.
        self.log_scale = nn.Parameter(
            torch.tensor(float(options.scale)).log(), requires_grad=options.learn_scale
        )

    def embed_episode(
        self, support: torch.Tensor, queries: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder features → (g(S), f(queries))."""
        support, queries = self.embedding(support), self.embedding(queries)
        if self.context is not None:
            support = self.context.support(support)
            queries = self.context.queries(queries, support)
        return support, queries

    def episode_logits(
        self, support: torch.Tensor, support_labels: torch.Tensor, queries: torch.Tensor, n_way: int
    ) -> torch.Tensor:
        """Encoder features → log p(y|x) for each query (Q, N)."""
        support, queries = self.embed_episode(support, queries)
        similarities = scaled_cosine(queries, support, self.log_scale.exp())
        return matching_log_probabilities(similarities, support_labels, n_way)

    def scorer(self, support: torch.Tensor, labels: torch.Tensor, n_way: int):
        return lambda queries: self.episode_logits(support, labels, queries, n_way)

    def extra_metrics(self) -> Metrics:
        return {"scale": self.log_scale.exp().item()}
