"""Frozen-encoder embeddings saved to a file, so a second process need not embed them again.

Embedding every sentence of a benchmark with MiniLM costs tens of minutes on a laptop CPU; the
vectors depend only on the encoder's weights and settings. The file records a fingerprint of
both and is refused when they differ, so stale vectors can never be read. Loaded with
``torch.load(weights_only=True)``: tensors and plain types only, never pickled objects.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from metanlp.encoders.base import Encoder
from metanlp.encoders.cache import shared_cache

FORMAT = "metanlp-embeddings-1"


class EmbeddingFileError(ValueError):
    """The file is not an embeddings file of this encoder (message says why and what to do)."""


def encoder_fingerprint(encoder: Encoder) -> str:
    """A hash of the encoder's settings and of every weight: equal only for the same vectors."""
    digest = hashlib.sha256(repr(sorted(encoder.config_dict().items())).encode())
    for name, value in encoder.state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:32]


def save_embeddings(encoder: Encoder, path: str | Path) -> int:
    """Write the encoder's shared-cache embeddings to ``path`` (atomically); returns how many."""
    path = Path(path)
    store = dict(shared_cache(encoder)._store)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save({"format": FORMAT, "fingerprint": encoder_fingerprint(encoder), "embeddings": store}, partial)
    os.replace(partial, path)
    return len(store)


def load_embeddings(encoder: Encoder, path: str | Path) -> int:
    """Fill the encoder's shared cache from ``path``; returns how many were read (0 if no file)."""
    path = Path(path)
    if not path.exists():
        return 0
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated or foreign file: say so instead of a traceback
        raise EmbeddingFileError(f"{path} is not a readable embeddings file ({error}); delete it to start afresh.") from None
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise EmbeddingFileError(f"{path} is not a metanlp embeddings file; delete it or choose another path.")
    if content.get("fingerprint") != encoder_fingerprint(encoder):
        raise EmbeddingFileError(
            f"{path} holds embeddings of another encoder or other encoder settings; delete it or choose another path."
        )
    embeddings = content.get("embeddings", {})
    shared_cache(encoder)._store.update(embeddings)
    return len(embeddings)
