"""BERT's two pretraining heads on top of an encoder's token states.

The MLM head scores the vocabulary only at the masked positions: the (M, H) @ (H, V) decoder
is the costliest part of a step, and ~15% of tokens are masked, so skipping the rest makes a
step about 4× cheaper on CPU (measured in ENVIRONMENT.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from metanlp.pretraining.masking import IGNORE_INDEX
from metanlp.pretraining.nsp import PairBatch


class MaskedLanguageModelHead(nn.Module):
    """dense → GELU → LayerNorm → a (V, H) decoder: its own matrix, or the token embedding (tied).

    BERT ties the decoder to the input embedding (Press & Wolf 2017, arXiv:1608.05859), which
    halves the vocabulary parameters. Tying can stall a small encoder: before the model uses
    context, every masked position asks for the same words, the tied gradient pulls those words'
    *input* embeddings onto one direction, and the context stops carrying information. On the
    synthetic topic corpus (``metanlp.pretraining.synthetic``, 2 layers, 32 wide, 800 steps) the
    tied decoder stayed at chance downstream and the untied one reached 79–100%; on CLINC150 text
    (64 wide, 10,000 steps) both ended equal (docs/results_pretraining.md). So the decoder is
    untied by default; ``tied=True`` restores BERT's layout. A tied decoder gets the embedding at
    call time rather than storing it, so a state_dict never holds it twice.
    """

    def __init__(self, hidden_size: int, vocab_size: int, tied: bool = False) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.norm = nn.LayerNorm(hidden_size)
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        self.decoder = None if tied else nn.Parameter(torch.randn(vocab_size, hidden_size) * 0.02)

    @property
    def tied(self) -> bool:
        return self.decoder is None

    def forward(self, hidden: torch.Tensor, token_embedding: torch.Tensor) -> torch.Tensor:
        """(M, H) states at masked positions, (V, H) input embedding → (M, V) vocabulary logits."""
        transformed = self.norm(F.gelu(self.dense(hidden)))
        return F.linear(transformed, token_embedding if self.decoder is None else self.decoder, self.bias)


class NextSentenceHead(nn.Module):
    """BERT's pooler (dense + tanh on the [CLS] state) and a 2-way classifier: not-next / next."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.pooler = nn.Linear(hidden_size, hidden_size)
        self.classifier = nn.Linear(hidden_size, 2)

    def forward(self, cls_state: torch.Tensor) -> torch.Tensor:
        """(B, H) → (B, 2) logits; class 1 means "B is the next sentence"."""
        return self.classifier(torch.tanh(self.pooler(cls_state)))


def token_embedding_matrix(encoder: nn.Module) -> torch.Tensor:
    """The (V, H) input embedding of a from-scratch encoder; other encoders cannot be pretrained here."""
    embeddings = getattr(encoder, "embeddings", None)
    token = getattr(embeddings, "token", None)
    if not isinstance(token, nn.Embedding) or not hasattr(encoder, "tokenizer"):
        raise ValueError(
            f"MLM pretraining needs the from-scratch encoder (build_encoder('scratch')), not {type(encoder).__name__}"
        )
    return token.weight


@dataclass
class PretrainingLosses:
    total: torch.Tensor  # mlm + nsp, for backprop
    mlm: torch.Tensor
    nsp: torch.Tensor
    nsp_accuracy: float
    masked_tokens: int


class PretrainingHeads(nn.Module):
    """Both heads; ``losses`` runs the encoder on a masked pair batch and scores it."""

    def __init__(self, hidden_size: int, vocab_size: int, tied: bool = False) -> None:
        super().__init__()
        self.mlm = MaskedLanguageModelHead(hidden_size, vocab_size, tied)
        self.nsp = NextSentenceHead(hidden_size)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def losses(self, encoder: nn.Module, batch: PairBatch, labels: torch.Tensor) -> PretrainingLosses:
        """``batch.input_ids`` already masked; ``labels`` (B, S) hold the original ids at masked positions."""
        output = encoder(batch.input_ids, batch.attention_mask, token_type_ids=batch.token_type_ids)
        hidden = output.last_hidden_state  # (B, S, H)
        chosen = labels != IGNORE_INDEX
        token_embedding = token_embedding_matrix(encoder)  # (V, H), the tied decoder
        mlm_logits = self.mlm(hidden[chosen], token_embedding)  # (M, V): masked positions only
        mlm_loss = F.cross_entropy(mlm_logits.float(), labels[chosen]) if chosen.any() else hidden.sum() * 0.0
        nsp_logits = self.nsp(hidden[:, 0])  # the [CLS] state
        nsp_loss = F.cross_entropy(nsp_logits.float(), batch.is_next)
        nsp_accuracy = (nsp_logits.argmax(-1) == batch.is_next).float().mean().item()
        return PretrainingLosses(mlm_loss + nsp_loss, mlm_loss, nsp_loss, nsp_accuracy, int(chosen.sum()))
