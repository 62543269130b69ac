"""A frozen encoder that looks sentence embeddings up in a table: synthetic features for method tests.

Methods on a frozen pretrained encoder only ever see cached sentence embeddings, so a table of
planted vectors tests them exactly, without loading MiniLM.
"""

from __future__ import annotations

import torch
from torch import nn

from metanlp.encoders import Encoder


class TableEncoder(Encoder):
    kind = "pretrained"  # not "scratch": finetune=auto freezes it, as it freezes MiniLM

    def __init__(self, table: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.table = table
        self.hidden_size = next(iter(table.values())).shape[-1]
        self.num_layers = self.num_heads = 0
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)  # gives the encoder a device

    def embed(self, texts: list[str], batch_size: int = 64, sort_by_length: bool = True) -> torch.Tensor:
        return torch.stack([self.table[text] for text in texts]).to(self.device)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        raise NotImplementedError("a table has no tokens")

    def forward(self, input_ids, attention_mask, output_attentions=False):
        raise NotImplementedError("a table has no token states")

    def ids_to_tokens(self, input_ids: list[int]) -> list[str]:
        raise NotImplementedError("a table has no tokens")

    def layer_groups(self) -> list[nn.Module]:
        return []

    def config_dict(self) -> dict:
        return {"name": "table"}
