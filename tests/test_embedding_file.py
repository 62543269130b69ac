"""Saved frozen-encoder embeddings: reused by a second process, refused for another encoder."""

from __future__ import annotations

import pytest
import torch

from metanlp.encoders import build_encoder
from metanlp.encoders.cache import shared_cache
from metanlp.encoders.embedding_file import EmbeddingFileError, load_embeddings, save_embeddings
from tests.conftest import TINY_ENCODER

TEXTS = ["book a flight to paris", "what is my balance", "play some jazz"]


def encoder(seed: int = 0):
    torch.manual_seed(seed)
    return build_encoder("scratch", **TINY_ENCODER).eval()


def test_a_second_encoder_reads_the_same_vectors_without_embedding(tmp_path):
    first = encoder()
    vectors = shared_cache(first).embed(TEXTS)
    path = tmp_path / "embeddings.pt"
    assert save_embeddings(first, path) == len(TEXTS)

    second = encoder()  # same weights, as in another process
    assert load_embeddings(second, path) == len(TEXTS)
    cache = shared_cache(second)
    misses = cache.misses
    assert torch.equal(cache.embed(TEXTS), vectors)
    assert cache.misses == misses, "loaded sentences must not be embedded again"


def test_another_encoder_is_refused(tmp_path):
    first = encoder(seed=0)
    shared_cache(first).embed(TEXTS)
    path = tmp_path / "embeddings.pt"
    save_embeddings(first, path)
    with pytest.raises(EmbeddingFileError, match="another encoder"):
        load_embeddings(encoder(seed=1), path)


def test_missing_file_loads_nothing_and_a_foreign_file_is_refused(tmp_path):
    assert load_embeddings(encoder(), tmp_path / "absent.pt") == 0
    foreign = tmp_path / "foreign.pt"
    foreign.write_bytes(b"not a torch file")
    with pytest.raises(EmbeddingFileError, match="not a readable embeddings file"):
        load_embeddings(encoder(), foreign)
    torch.save({"something": 1}, foreign)
    with pytest.raises(EmbeddingFileError, match="not a metanlp embeddings file"):
        load_embeddings(encoder(), foreign)
