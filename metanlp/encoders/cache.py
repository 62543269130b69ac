"""Memoised embeddings of a frozen encoder: each distinct sentence is encoded once."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from metanlp.encoders.base import Encoder


def weights_version(module: torch.nn.Module) -> tuple[int, ...]:
    """Changes whenever any parameter is modified in place (optimiser steps, load_state_dict)."""
    return tuple(parameter._version for parameter in module.parameters())


class EmbeddingCache:
    """Maps text → embedding (kept on CPU) for one frozen encoder.

    Valid only while the encoder's weights do not change; callers clear it after training.
    """

    def __init__(self, encoder: Encoder, batch_size: int = 64, store: dict | None = None) -> None:
        # A weak reference: the shared-cache registry is keyed weakly by encoder, and a strong
        # reference from the value would keep every encoder (and its cache) alive forever.
        self._encoder = weakref.ref(encoder)
        self.batch_size = batch_size
        self._store: dict[str, torch.Tensor] = {} if store is None else store
        self._weights_version = self._version()
        self.hits = 0
        self.misses = 0

    @property
    def encoder(self) -> Encoder:
        encoder = self._encoder()
        if encoder is None:
            raise RuntimeError("the encoder of this embedding cache no longer exists")
        return encoder

    def __len__(self) -> int:
        return len(self._store)

    def clear(self) -> None:
        """Forget every embedding (a fresh dict: a store shared with another copy stays intact)."""
        self._store = {}
        self._weights_version = self._version()

    def _version(self) -> tuple:
        """What the stored embeddings depend on; a change empties the store."""
        return weights_version(self.encoder)

    def _encode(self, texts: list[str]) -> torch.Tensor:
        return self.encoder.embed(texts, batch_size=self.batch_size)

    @torch.inference_mode()
    def _fill(self, texts: list[str]) -> None:
        if self._version() != self._weights_version:
            self.clear()  # the weights were modified in place since these embeddings were made
        missing = list(dict.fromkeys(t for t in texts if t not in self._store))
        self.misses += len(missing)
        self.hits += len(texts) - len(missing)
        if missing:
            # A frozen encoder is used deterministically: dropout off, whatever the mode.
            was_training = self.encoder.training
            self.encoder.eval()
            try:
                embeddings = self._encode(missing).float().cpu()
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


_UNCHANGED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@contextmanager
def memoise_while_unchanged(encoder: Encoder) -> Iterator[EmbeddingCache]:
    """Within the block, ``unchanged_weights_cache(encoder)`` memoises a trainable encoder's embeddings.

    An evaluation leaves the weights as they are, so each distinct sentence needs encoding once, not
    once per episode. Should the weights change in place all the same, the cache empties itself (its
    weights-version check); a copy of the encoder (per-task fine-tuning) is not covered.
    """
    previous = _UNCHANGED.get(encoder)
    cache = _UNCHANGED[encoder] = EmbeddingCache(encoder)
    try:
        yield cache
    finally:
        if previous is None:
            _UNCHANGED.pop(encoder, None)
        else:
            _UNCHANGED[encoder] = previous


def unchanged_weights_cache(encoder: Encoder) -> EmbeddingCache | None:
    """The cache of a ``memoise_while_unchanged`` block around ``encoder``, if one is open."""
    return _UNCHANGED.get(encoder)


def share_cache(original: Encoder, copy: Encoder) -> None:
    """Let an unmodified copy read and fill ``original``'s embeddings (same weights, same vectors).

    The copy detaches (starts an empty store) as soon as its weights change in place.
    """
    _SHARED[copy] = EmbeddingCache(copy, store=shared_cache(original)._store)
