"""Attention before vs after adaptation: the same sentence through two encoders.

"Before" is the encoder a run started from (the pretrained MiniLM, or the from-scratch encoder
rebuilt from the run's seed); "after" is the run's trained encoder. Their difference shows what
training changed in where each token looks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metanlp.encoders import Encoder
from metanlp.engine.training import EncoderPool

IDENTICAL_TOLERANCE = 1e-6
MEAN_OVER_HEADS = "mean over heads"


@dataclass
class AttentionComparison:
    tokens: list[str]
    before: np.ndarray  # (layers, heads, S, S)
    after: np.ndarray  # (layers, heads, S, S)

    @property
    def difference(self) -> np.ndarray:
        return self.after - self.before

    @property
    def identical(self) -> bool:
        return float(np.abs(self.difference).max(initial=0.0)) <= IDENTICAL_TOLERANCE


def attention_array(encoder: Encoder, text: str) -> tuple[list[str], np.ndarray]:
    """Tokens and attention (layers, heads, S, S) of one sentence; the encoder is left in eval mode."""
    encoder.eval()
    maps = encoder.attention_maps(text)
    return list(maps.tokens), maps.attentions.numpy()


def compare_attention(before: Encoder, after: Encoder, text: str) -> AttentionComparison:
    """Attention of ``text`` under both encoders; they must share a tokenizer and a shape."""
    tokens, first = attention_array(before, text)
    tokens_after, second = attention_array(after, text)
    if tokens != tokens_after or first.shape != second.shape:
        raise ValueError("the two encoders tokenise differently, so their attention cannot be compared")
    return AttentionComparison(tokens=tokens, before=first, after=second)


def select_map(attentions: np.ndarray, layer: int, head: int | str) -> np.ndarray:
    """One (S, S) map: layer ``layer`` (0-based), head ``head`` (0-based) or the mean over heads."""
    if head == MEAN_OVER_HEADS:
        return attentions[layer].mean(axis=0)
    return attentions[layer, int(head)]


def initial_encoder(config: dict, pretrained: Encoder | None = None) -> Encoder:
    """The encoder a run started from, rebuilt from its config.

    The pretrained MiniLM is passed in (already loaded); a from-scratch encoder is rebuilt with
    the run's seed, which reproduces its initial weights exactly (``EncoderPool`` seeds it).
    """
    name = config.get("encoder", "minilm")
    options = dict(config.get("encoder_options") or {})
    if name == "minilm" and pretrained is not None and not options.get("checkpoint"):
        return pretrained
    return EncoderPool().get(name, options, int(config.get("seed", 0)))


def encoder_was_frozen(config: dict) -> bool:
    """True when the run's method kept its encoder frozen (so attention cannot have changed).

    ``finetune = "auto"`` freezes a pretrained encoder and trains a from-scratch one.
    """
    from metanlp.methods.registry import default_options

    options = config.get("method_options") or {}
    try:
        mode = options.get("finetune", default_options(config.get("method", "")).get("finetune"))
    except ValueError:
        return False
    if mode == "auto":
        return config.get("encoder", "minilm") != "scratch"
    return mode == "frozen"


def task_sentences(config: dict, uploads_root: str | None = None, limit: int = 12) -> list[str]:
    """Sentences to look at for a run: its snapshot sentence, then one meta-test sentence per class.

    A user file is read only from inside ``uploads_root`` (the runs folder's uploads), whatever
    path the config holds.
    """
    from pathlib import Path

    from metanlp.data.errors import DataError
    from metanlp.data.registry import examples_for_split, load_dataset
    from metanlp.data.user_data import load_user_dataset

    sentences = [config["attention_text"]] if config.get("attention_text") else []
    try:
        if config.get("dataset") == "user":
            path = Path(config.get("data_file") or "").resolve()
            if uploads_root is None or Path(uploads_root).resolve() not in path.parents:
                return sentences
            shape = {key: config[key] for key in ("n_way", "k_shot", "n_query") if key in config}  # as the run split it
            dataset, _ = load_user_dataset(path, **{**(config.get("data_options") or {}), **shape})
        else:
            dataset = load_dataset(config.get("dataset", ""), config.get("split_id"))
    except DataError:
        return sentences
    seen_labels: set[str] = set()
    for example in examples_for_split(dataset, "test"):
        if len(sentences) >= limit:
            break
        if example.label not in seen_labels and example.text not in sentences:
            seen_labels.add(example.label)
            sentences.append(example.text)
    return sentences


def grid_choice(selection: object, heads: int) -> tuple[int, int] | None:
    """(layer, head), both 0-based, of the map clicked in ``attention_grid`` (None: nothing clicked)."""
    points = ((selection or {}).get("selection") or {}).get("points") if isinstance(selection, dict) else None
    if not points:
        return None
    curve = points[0].get("curve_number")
    if not isinstance(curve, int) or curve < 0 or heads < 1:
        return None
    return divmod(curve, heads)
