"""Encoders: shapes, attention that is a real distribution, and a pretrained model that knows meaning."""

from __future__ import annotations

import pytest
import torch

from metanlp.encoders import EmbeddingCache, build_encoder, load_encoder, save_encoder
from metanlp.encoders.scratch import ScratchConfig
from metanlp.encoders.tokenizers import CharTokenizer


@pytest.fixture(scope="module")
def minilm():
    return build_encoder("minilm")


def test_scratch_shapes_and_attention(tiny_encoder):
    embeddings = tiny_encoder.embed(["hello world", "a somewhat longer sentence than the first"])
    assert embeddings.shape == (2, 32)
    maps = tiny_encoder.attention_maps("the cat sat on the mat")
    assert maps.tokens[0] == "[CLS]" and maps.tokens[-1] == "[SEP]" and "cat" in maps.tokens
    assert maps.attentions.shape == (1, 2, len(maps.tokens), len(maps.tokens))
    assert torch.allclose(maps.attentions.sum(-1), torch.ones(1, 2, len(maps.tokens)), atol=1e-5)


def test_scratch_attention_matches_the_formula(tiny_encoder):
    """A = softmax(QK^T / sqrt(d_k)) recomputed by hand equals what the encoder reports."""
    tiny_encoder.eval()
    batch = tiny_encoder.tokenize(["attention is what you see"])
    x = tiny_encoder.embeddings(batch["input_ids"])
    attention = tiny_encoder.layers[0].attention
    q = attention.split_heads(attention.w_query(x))
    k = attention.split_heads(attention.w_key(x))
    expected = torch.softmax(q @ k.transpose(-2, -1) / attention.head_size**0.5, dim=-1)[0]
    reported = tiny_encoder.attention_maps("attention is what you see").attentions[0]
    assert torch.allclose(expected, reported, atol=1e-5)


def test_padding_gets_no_attention_and_does_not_change_embeddings(tiny_encoder):
    tiny_encoder.eval()
    alone = tiny_encoder.embed(["short"])
    padded = tiny_encoder.embed(["short", "a much much longer sentence that forces padding"])[:1]
    assert torch.allclose(alone, padded, atol=1e-5)


def test_char_tokenizer_handles_chinese():
    tokenizer = CharTokenizer(vocab_size=500)
    batch = tokenizer(["今天天气很好", "你好"], max_length=16)
    assert batch["input_ids"].shape == (2, 8)
    assert batch["attention_mask"][1].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert tokenizer.convert_ids_to_tokens(batch["input_ids"][1, :4].tolist()) == ["[CLS]", "你", "好", "[SEP]"]
    assert int(batch["input_ids"].max()) < 500
    encoder = build_encoder("scratch", tokenizer="char", num_layers=1, hidden_size=16, num_heads=2)
    assert encoder.embed(["今天天气很好"]).shape == (1, 16)


def test_bad_scratch_config_is_rejected():
    with pytest.raises(ValueError, match="divisible"):
        ScratchConfig(hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="unknown encoder"):
        build_encoder("gpt")


def test_top_k_freezing(tiny_encoder):
    tiny_encoder.set_trainable_layers(1)
    groups = tiny_encoder.layer_groups()
    assert all(p.requires_grad for p in groups[-1].parameters())
    assert not any(p.requires_grad for p in groups[0].parameters())
    tiny_encoder.set_trainable_layers(0)
    assert tiny_encoder.is_frozen()


def test_save_and_load_encoder(tiny_encoder, tmp_path):
    tiny_encoder.eval()
    save_encoder(tiny_encoder, tmp_path)
    loaded = load_encoder(tmp_path).eval()
    assert torch.allclose(tiny_encoder.embed(["same words"]), loaded.embed(["same words"]))
    assert torch.allclose(build_encoder("scratch", checkpoint=str(tmp_path)).eval().embed(["x"]), loaded.embed(["x"]))


def test_minilm_shapes_and_attention(minilm):
    assert (minilm.hidden_size, minilm.num_layers, minilm.num_heads) == (384, 6, 12)
    maps = minilm.attention_maps("The quick brown fox jumps over the lazy dog.")
    assert maps.attentions.shape[:2] == (6, 12)
    assert torch.allclose(maps.attentions.sum(-1), torch.ones(maps.attentions.shape[:3]), atol=1e-4)
    embeddings = minilm.embed(["one", "two"])
    assert embeddings.shape == (2, 384)
    assert torch.allclose(embeddings.norm(dim=-1), torch.ones(2), atol=1e-4)


def test_minilm_puts_a_paraphrase_closer_than_an_unrelated_sentence(minilm):
    anchor, paraphrase, unrelated = minilm.embed([
        "How do I reset my bank card PIN?",
        "I forgot the PIN of my card and need to change it.",
        "The weather in Paris is sunny today.",
    ])
    assert anchor @ paraphrase > anchor @ unrelated + 0.3


def test_minilm_matches_sentence_transformers(minilm):
    from sentence_transformers import SentenceTransformer

    from metanlp.encoders.minilm import minilm_path

    reference = SentenceTransformer(str(minilm_path()), device="cpu")
    texts = ["few-shot learning adapts quickly", "meta-learning learns to learn"]
    expected = torch.as_tensor(reference.encode(texts))
    assert torch.nn.functional.cosine_similarity(minilm.embed(texts), expected).min() > 0.999


def test_embedding_cache_encodes_each_text_once(minilm):
    cache = EmbeddingCache(minilm)
    first = cache.embed(["alpha", "beta", "alpha"])
    assert len(cache) == 2 and cache.misses == 2
    second = cache.embed(["beta", "alpha"])
    assert cache.misses == 2 and cache.hits == 3
    assert torch.equal(first[1], second[0])


def test_length_sorted_batching_keeps_the_order(tiny_encoder):
    tiny_encoder.eval()
    texts = ["a b c d e f g h", "short", "a medium sized sentence", "x"] * 3
    sorted_batches = tiny_encoder.embed(texts, batch_size=3)
    plain = tiny_encoder.embed(texts, batch_size=3, sort_by_length=False)
    one_by_one = torch.cat([tiny_encoder.embed([t]) for t in texts])
    assert torch.allclose(sorted_batches, one_by_one, atol=1e-5)
    assert torch.allclose(plain, one_by_one, atol=1e-5)


def test_cache_is_shared_by_copies_and_dropped_when_weights_change(tiny_encoder):
    import copy
    import gc
    import weakref

    from metanlp.encoders.cache import share_cache, shared_cache

    tiny_encoder.eval().set_trainable_layers(0)
    duplicate = copy.deepcopy(tiny_encoder)
    share_cache(tiny_encoder, duplicate)
    first = shared_cache(duplicate).embed(["shared sentence"])
    assert len(shared_cache(tiny_encoder)) == 1  # the original sees what the copy embedded
    other = copy.deepcopy(tiny_encoder)
    share_cache(tiny_encoder, other)
    assert torch.equal(shared_cache(other).embed(["shared sentence"]), first)
    assert shared_cache(other).misses == 0
    with torch.no_grad():  # an in-place change of the weights invalidates the copy's embeddings only
        other.layers[0].attention.w_value.weight.mul_(2.0)
    changed = shared_cache(other).embed(["shared sentence"])
    assert not torch.allclose(changed, first) and len(shared_cache(tiny_encoder)) == 1
    assert torch.equal(shared_cache(tiny_encoder).embed(["shared sentence"]), first)
    reference = weakref.ref(other)
    del other, changed
    gc.collect()
    assert reference() is None, "the cache registry kept a dead encoder alive"


def test_minilm_folder_can_be_overridden_and_is_checked(tmp_path, monkeypatch):
    from metanlp.encoders.minilm import minilm_path

    monkeypatch.setenv("METANLP_MINILM_DIR", str(tmp_path))
    with pytest.raises(RuntimeError, match="not a model folder"):
        minilm_path()
    (tmp_path / "config.json").write_text("{}")
    assert minilm_path() == tmp_path
