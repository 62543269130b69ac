"""BERT's masked-language-model corruption (Devlin et al. 2019, arXiv:1810.04805, section 3.1).

Of the real, non-special tokens, ``mask_probability`` (15%) are chosen for prediction; a chosen
token becomes [MASK] 80% of the time, a random token 10% and stays itself 10%. Keeping or
randomising some chosen tokens stops the encoder from relying on [MASK], which never appears
when the encoder is later used on ordinary text.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE_INDEX = -100  # cross-entropy skips this label: positions that were not chosen


@dataclass(frozen=True)
class MaskingScheme:
    """The corruption probabilities; BERT's defaults."""

    mask_probability: float = 0.15  # share of eligible tokens chosen for prediction
    replace_with_mask: float = 0.8  # of the chosen: become [MASK]
    replace_with_random: float = 0.1  # of the chosen: become a random token (the rest stay)

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_probability < 1.0:
            raise ValueError(f"mask_probability must be in (0, 1), got {self.mask_probability}")
        if self.replace_with_mask < 0 or self.replace_with_random < 0:
            raise ValueError("replacement shares must not be negative")
        if self.replace_with_mask + self.replace_with_random > 1.0:
            raise ValueError(
                f"replace_with_mask + replace_with_random must be at most 1, got "
                f"{self.replace_with_mask + self.replace_with_random}"
            )


@dataclass
class MaskedBatch:
    """Corrupted ids and their labels, both (B, S); labels are IGNORE_INDEX where nothing is predicted."""

    input_ids: torch.Tensor
    labels: torch.Tensor


def replacement_vocabulary(vocab_size: int, special_ids: list[int]) -> torch.Tensor:
    """Ids a chosen token may be swapped for: every id except special ones ([PAD], [CLS], ...)."""
    keep = torch.ones(vocab_size, dtype=torch.bool)
    keep[torch.tensor(sorted(set(special_ids)), dtype=torch.long)] = False
    return keep.nonzero().squeeze(1)


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    special_ids: list[int],
    mask_token_id: int,
    vocab_size: int,
    generator: torch.Generator,
    scheme: MaskingScheme | None = None,
) -> MaskedBatch:
    """Corrupt a batch for masked-language modelling; ``input_ids`` itself is left unchanged.

    ``input_ids`` and ``attention_mask`` are (B, S); padding (mask 0) and special tokens are never
    chosen. ``generator`` is a CPU ``torch.Generator``, so the same seed gives the same masks on
    every device. Random replacements are drawn uniformly from the non-special ids.
    """
    scheme = scheme or MaskingScheme()
    ids = input_ids.detach().cpu()
    special = torch.isin(ids, torch.tensor(sorted(set(special_ids)), dtype=ids.dtype))
    eligible = attention_mask.detach().cpu().bool() & ~special
    draws = torch.rand(ids.shape, generator=generator)
    chosen = eligible & (draws < scheme.mask_probability)
    # A second uniform draw splits the chosen tokens into [MASK] / random / unchanged.
    action = torch.rand(ids.shape, generator=generator)
    to_mask = chosen & (action < scheme.replace_with_mask)
    to_random = chosen & (action >= scheme.replace_with_mask) & (
        action < scheme.replace_with_mask + scheme.replace_with_random
    )
    vocabulary = replacement_vocabulary(vocab_size, special_ids)
    random_ids = vocabulary[torch.randint(len(vocabulary), ids.shape, generator=generator)]
    corrupted = ids.clone()
    corrupted[to_mask] = mask_token_id
    corrupted[to_random] = random_ids[to_random]
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[chosen] = ids[chosen]
    return MaskedBatch(input_ids=corrupted.to(input_ids.device), labels=labels.to(input_ids.device))
