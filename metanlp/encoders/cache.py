"""Memoised embeddings of a frozen encoder: each distinct sentence is encoded once."""

from __future__ import annotations

import weakref

import torch

from metanlp.encoders.base import Encoder


class EmbeddingCache:
    """Maps text → embedding (kept on CPU) for one frozen encoder.

    Valid only while the encoder's weights do not change; callers clear it after training.
    """

    def __init__(self, encoder: Encoder, batch_size: int = 64) -> None:
        self.encoder = encoder
        self.batch_size = batch_size
        self._store: dict[str, torch.Tensor] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._store)

    def clear(self) -> None:
        self._store.clear()

    @torch.inference_mode()
    def _fill(self, texts: list[str]) -> None:
        missing = list(dict.fromkeys(t for t in texts if t not in self._store))
        self.misses += len(missing)
        self.hits += len(texts) - len(missing)
        if missing:
            # A frozen encoder is used deterministically: dropout off, whatever the mode.
            was_training = self.encoder.training
            self.encoder.eval()
            try:
                embeddings = self.encoder.embed(missing, batch_size=self.batch_size).float().cpu()
            finally:
                self.encoder.train(was_training)
            self._store.update(zip(missing, embeddings, strict=True))

    def embed(self, texts: list[str]) -> torch.Tensor:
        """(len(texts), hidden) on the encoder's device, without gradient."""
        self._fill(list(texts))
        if not texts:
            return torch.zeros(0, self.encoder.hidden_size, device=self.encoder.device)
        return torch.stack([self._store[t] for t in texts]).to(self.encoder.device)


_SHARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def shared_cache(encoder: Encoder) -> EmbeddingCache:
    """The one cache of ``encoder``, shared by every method built on it (e.g. in a benchmark)."""
    if encoder not in _SHARED:
        _SHARED[encoder] = EmbeddingCache(encoder)
    return _SHARED[encoder]
