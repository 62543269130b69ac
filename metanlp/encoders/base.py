"""The one interface every encoder implements: texts → sentence embeddings (+ attention)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class EncoderOutput:
    """Token states and, on request, per-layer attention (like Hugging Face's outputs)."""

    last_hidden_state: torch.Tensor  # (B, S, H)
    attention_mask: torch.Tensor  # (B, S), 1 for real tokens
    attentions: tuple[torch.Tensor, ...] | None = None  # layers × (B, heads, S, S)


@dataclass
class AttentionMaps:
    """Attention of one sentence: ``attentions[layer, head, query_token, key_token]``."""

    tokens: list[str]
    attentions: torch.Tensor  # (layers, heads, S, S), each row sums to 1


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average the states of real tokens: (B, S, H), (B, S) → (B, H)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class Encoder(nn.Module, ABC):
    """Texts → embeddings. Subclasses provide tokenisation and the Transformer itself.

    The encoder never chooses a device: callers move it with ``.to(device)`` and it
    tokenises onto whatever device its parameters live on.
    """

    kind: str = "encoder"
    hidden_size: int
    num_layers: int
    num_heads: int
    normalize: bool = False
    max_length: int = 64

    @abstractmethod
    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Return ``input_ids`` and ``attention_mask`` (B, S) on the encoder's device."""

    @abstractmethod
    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, output_attentions: bool = False
    ) -> EncoderOutput: ...

    @abstractmethod
    def ids_to_tokens(self, input_ids: list[int]) -> list[str]: ...

    @abstractmethod
    def layer_groups(self) -> list[nn.Module]:
        """Trainable blocks from bottom (embeddings) to top (last layer), for top-k fine-tuning."""

    @abstractmethod
    def config_dict(self) -> dict:
        """JSON-serialisable options that rebuild this encoder with ``build_encoder``."""

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def embed(self, texts: list[str], batch_size: int = 64, sort_by_length: bool = True) -> torch.Tensor:
        """Sentence embeddings (len(texts), hidden_size); gradients flow if enabled.

        Batches are formed from texts of similar length (then put back in order), so short
        sentences are not padded to the longest one in the whole list.
        """
        if not texts:
            return torch.zeros(0, self.hidden_size, device=self.device)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i])) if sort_by_length else range(len(texts))
        order = list(order)
        chunks = []
        for start in range(0, len(order), batch_size):
            batch = self.tokenize([texts[i] for i in order[start : start + batch_size]])
            output = self(batch["input_ids"], batch["attention_mask"])
            pooled = mean_pool(output.last_hidden_state, output.attention_mask)
            if self.normalize:
                pooled = nn.functional.normalize(pooled, dim=-1)
            chunks.append(pooled)
        embeddings = torch.cat(chunks)
        if sort_by_length:
            inverse = torch.empty(len(order), dtype=torch.long, device=embeddings.device)
            inverse[torch.tensor(order, device=embeddings.device)] = torch.arange(len(order), device=embeddings.device)
            embeddings = embeddings[inverse]
        return embeddings

    @torch.no_grad()
    def attention_maps(self, text: str) -> AttentionMaps:
        """Per-layer, per-head attention of one sentence, padding removed."""
        batch = self.tokenize([text])
        output = self(batch["input_ids"], batch["attention_mask"], output_attentions=True)
        length = int(batch["attention_mask"][0].sum())
        stacked = torch.stack([layer[0, :, :length, :length] for layer in output.attentions])
        tokens = self.ids_to_tokens(batch["input_ids"][0, :length].tolist())
        return AttentionMaps(tokens=tokens, attentions=stacked.float().cpu())

    def set_trainable_layers(self, top_k: int | None) -> None:
        """Freeze everything but the top ``top_k`` layer groups (None: all trainable, 0: frozen)."""
        groups = self.layer_groups()
        keep = len(groups) if top_k is None else max(0, min(top_k, len(groups)))
        for index, group in enumerate(groups):
            trainable = index >= len(groups) - keep
            for parameter in group.parameters():
                parameter.requires_grad_(trainable)

    def is_frozen(self) -> bool:
        return not any(parameter.requires_grad for parameter in self.parameters())
