"""A small BERT-style Transformer encoder written from the formulas, trained from scratch.

Self-attention reads like the math: Q = XW^Q, K = XW^K, V = XW^V,
A = softmax(QK^T / sqrt(d_k)), out = AV — so the dashboard's heatmap is exactly ``A``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from metanlp.encoders.base import Encoder, EncoderOutput
from metanlp.encoders.tokenizers import build_tokenizer

# Upper bounds that keep a typo from asking for a 100 GB model (BERT-large is 24 × 1024 × 16, 4096 wide).
SIZE_LIMITS = {
    "num_layers": 48, "hidden_size": 4096, "num_heads": 64, "feedforward_size": 16384, "max_length": 4096,
    "char_vocab_size": 100_000,
}


@dataclass
class ScratchConfig:
    num_layers: int = 2
    hidden_size: int = 128
    num_heads: int = 4
    feedforward_size: int = 512
    max_length: int = 64
    dropout: float = 0.1
    tokenizer: str = "wordpiece"  # or "char" (Chinese text)
    char_vocab_size: int = 8000

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})"
            )
        for name, high in SIZE_LIMITS.items():
            if not 1 <= getattr(self, name) <= high:
                raise ValueError(f"{name} must be between 1 and {high}, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:  # also refuses NaN
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention."""

    def __init__(self, config: ScratchConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.head_size = config.hidden_size // config.num_heads  # d_k
        self.w_query = nn.Linear(config.hidden_size, config.hidden_size)  # W^Q
        self.w_key = nn.Linear(config.hidden_size, config.hidden_size)  # W^K
        self.w_value = nn.Linear(config.hidden_size, config.hidden_size)  # W^V
        self.w_out = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_size).transpose(1, 2)  # (B, h, S, d_k)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.split_heads(self.w_query(x))  # Q = X W^Q   (B, h, S, d_k)
        k = self.split_heads(self.w_key(x))  # K = X W^K
        v = self.split_heads(self.w_value(x))  # V = X W^V
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_size)  # QK^T / sqrt(d_k)  (B, h, S, S)
        padding = attention_mask[:, None, None, :] == 0  # keys that are padding get no attention
        scores = scores.masked_fill(padding, torch.finfo(scores.dtype).min)
        a = torch.softmax(scores, dim=-1)  # A, rows sum to 1
        out = self.dropout(a) @ v  # AV  (B, h, S, d_k)
        out = out.transpose(1, 2).reshape(x.shape)  # concatenate heads  (B, S, H)
        return self.w_out(out), a


class TransformerLayer(nn.Module):
    """Post-norm block as in BERT: x + Attn(x) → LayerNorm → x + FFN(x) → LayerNorm."""

    def __init__(self, config: ScratchConfig) -> None:
        super().__init__()
        self.attention = SelfAttention(config)
        self.attention_norm = nn.LayerNorm(config.hidden_size)
        self.feedforward = nn.Sequential(
            nn.Linear(config.hidden_size, config.feedforward_size),
            nn.GELU(),
            nn.Linear(config.feedforward_size, config.hidden_size),
        )
        self.feedforward_norm = nn.LayerNorm(config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attended, attention = self.attention(x, attention_mask)
        x = self.attention_norm(x + self.dropout(attended))
        x = self.feedforward_norm(x + self.dropout(self.feedforward(x)))
        return x, attention


class Embeddings(nn.Module):
    """Token + learned position embeddings (+ segment embeddings for sentence pairs)."""

    def __init__(self, config: ScratchConfig, vocab_size: int) -> None:
        super().__init__()
        self.token = nn.Embedding(vocab_size, config.hidden_size)
        self.position = nn.Embedding(config.max_length, config.hidden_size)
        self.segment = nn.Embedding(2, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.token(input_ids) + self.position(positions)[None]
        if token_type_ids is not None:
            x = x + self.segment(token_type_ids)
        return self.dropout(self.norm(x))


class ScratchTransformerEncoder(Encoder):
    """Randomly initialised BERT-style encoder; configurable depth, width and heads."""

    kind = "scratch"

    def __init__(self, config: ScratchConfig | None = None, **options) -> None:
        super().__init__()
        self.config = config or ScratchConfig(**options)
        self.tokenizer = build_tokenizer(self.config.tokenizer, self.config.char_vocab_size)
        self.vocab_size = self.tokenizer.vocab_size
        self.hidden_size = self.config.hidden_size
        self.num_layers = self.config.num_layers
        self.num_heads = self.config.num_heads
        self.max_length = self.config.max_length
        self.embeddings = Embeddings(self.config, self.vocab_size)
        self.layers = nn.ModuleList(TransformerLayer(self.config) for _ in range(self.config.num_layers))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(list(texts), max_length=self.max_length)
        device = self.device
        return {key: value.to(device) for key, value in batch.items()}

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        output_attentions: bool = False,
        token_type_ids: torch.Tensor | None = None,
    ) -> EncoderOutput:
        x = self.embeddings(input_ids, token_type_ids)  # (B, S, H)
        attentions = []
        for layer in self.layers:
            x, attention = layer(x, attention_mask)
            attentions.append(attention)
        return EncoderOutput(
            last_hidden_state=x,
            attention_mask=attention_mask,
            attentions=tuple(attentions) if output_attentions else None,
        )

    def ids_to_tokens(self, input_ids: list[int]) -> list[str]:
        return self.tokenizer.convert_ids_to_tokens(input_ids)

    def layer_groups(self) -> list[nn.Module]:
        return [self.embeddings, *self.layers]

    def config_dict(self) -> dict:
        return {"name": "scratch", **asdict(self.config)}
