"""Evaluating a trained (not frozen) encoder embeds each distinct test sentence once, and stays exact."""

from __future__ import annotations

import pytest
import torch

from metanlp.data.episodes import EpisodeSampler
from metanlp.data.registry import examples_for_split
from metanlp.encoders.cache import memoise_while_unchanged
from metanlp.evaluation import evaluate
from metanlp.methods import create_method


@pytest.fixture()
def small_pool_episodes(clinc_dataset):
    """30 3-way 1-shot episodes (2 queries per class) drawn from 24 test sentences: heavy reuse."""
    by_label: dict[str, list] = {}
    for example in examples_for_split(clinc_dataset, "test"):
        by_label.setdefault(example.label, []).append(example)
    pool = [example for label in sorted(by_label)[:4] for example in by_label[label][:6]]
    return EpisodeSampler.from_examples(pool, 3, 1, 2, seed=5).take(30)


def count_embedded_texts(encoder) -> list[str]:
    """Record every text the encoder embeds (an instance attribute shadows the class's ``embed``)."""
    seen: list[str] = []
    original = encoder.embed

    def counting_embed(texts, *args, **kwargs):
        seen.extend(texts)
        return original(texts, *args, **kwargs)

    encoder.embed = counting_embed
    return seen


def episode_by_episode(method, episodes) -> list[dict]:
    """The reference: each episode scored on its own, with no evaluation cache open."""
    return [method.evaluate_episode(episode) for episode in episodes]


def trained(name: str, encoder, train_episodes, options: dict | None = None):
    torch.manual_seed(0)
    method = create_method(name, encoder, options or {})
    for episode in train_episodes:
        method.train_step(episode)
    return method


def test_trained_scratch_protonet_embeds_each_test_sentence_once(tiny_encoder, clinc_episodes, small_pool_episodes):
    method = trained("protonet", tiny_encoder, clinc_episodes)
    assert not method.encoder.is_frozen()  # the from-scratch encoder is trained: no frozen-encoder cache
    embedded = count_embedded_texts(method.encoder)
    result = evaluate(method, small_pool_episodes)
    distinct = {text for e in small_pool_episodes for text in e.support_texts + e.query_texts}
    total = sum(len(e.support_texts) + len(e.query_texts) for e in small_pool_episodes)
    assert sorted(embedded) == sorted(distinct) and total == 270 > len(distinct)
    embedded.clear()
    reference = episode_by_episode(method, small_pool_episodes)  # no cache: every episode re-embeds
    assert len(embedded) == total
    assert [r["query_accuracy"] for r in result.per_episode] == [r["query_accuracy"] for r in reference]
    assert [r["query_loss"] for r in result.per_episode] == pytest.approx([r["query_loss"] for r in reference], abs=1e-5)
    embedded.clear()
    evaluate(method, small_pool_episodes[:3])  # a new evaluation starts afresh: the weights may have changed
    assert embedded


@pytest.mark.parametrize(
    ("name", "options"),
    [("finetune", {"finetune": "full", "adapt_steps": 3}), ("maml", {"inner_steps": 2, "test_inner_steps": 2})],
)
def test_methods_that_adapt_the_encoder_per_task_score_as_without_the_cache(
    tiny_encoder, clinc_episodes, small_pool_episodes, name, options
):
    method = trained(name, tiny_encoder, clinc_episodes[:2], options)
    episodes = small_pool_episodes[:6]
    torch.manual_seed(1)  # fine-tuning draws a new head and dropout masks: the same draws for both
    cached = [r["query_accuracy"] for r in evaluate(method, episodes).per_episode]
    torch.manual_seed(1)
    assert cached == [r["query_accuracy"] for r in episode_by_episode(method, episodes)]


def test_the_cache_forgets_embeddings_when_the_weights_change(tiny_encoder):
    tiny_encoder.eval()
    with memoise_while_unchanged(tiny_encoder) as cache:
        before = cache.embed(["a short sentence"])
        with torch.no_grad():
            for parameter in tiny_encoder.parameters():
                parameter.add_(0.1 * torch.randn_like(parameter))
        after = cache.embed(["a short sentence"])
    with torch.no_grad():
        fresh = tiny_encoder.embed(["a short sentence"])
    assert not torch.allclose(before, after) and torch.allclose(after, fresh, atol=1e-6)


def test_an_encoder_in_training_mode_is_not_memoised(tiny_encoder, small_pool_episodes):
    method = create_method("protonet", tiny_encoder, {})
    embedded = count_embedded_texts(method.encoder)
    method.train()
    with memoise_while_unchanged(method.encoder):
        method.features(["one", "two"])
        method.features(["one", "two"])  # dropout is on in training mode: no memo
    assert embedded == ["one", "two", "one", "two"]
