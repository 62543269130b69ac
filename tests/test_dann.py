"""Gradient reversal and domain-adversarial training (DANN)."""

from __future__ import annotations

import math
import random
import statistics

import pytest
import torch
from torch import nn

from metanlp.data.episodes import EpisodeSampler
from metanlp.data.registry import examples_for_split, load_dataset
from metanlp.encoders import build_encoder
from metanlp.engine.auxiliary import build_method
from metanlp.methods import create_method
from metanlp.methods._gradient_reversal import dann_lambda, reverse_gradient
from metanlp.methods.options import OptionError
from tests.conftest import TINY_ENCODER


@pytest.mark.parametrize("strength", [1.0, 0.37])
def test_gradient_reversal_multiplies_the_feature_gradient_by_minus_lambda(strength):
    torch.manual_seed(0)
    inputs = torch.randn(6, 5)
    feature_extractor = nn.Linear(5, 4)
    domain_classifier = nn.Linear(4, 1)

    def gradients(reverse: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        feature_extractor.zero_grad()
        domain_classifier.zero_grad()
        features = feature_extractor(inputs)
        if reverse:
            features = reverse_gradient(features, strength)
        domain_classifier(features).pow(2).sum().backward()
        below = [p.grad.clone() for p in feature_extractor.parameters()]
        above = [p.grad.clone() for p in domain_classifier.parameters()]
        return below, above

    plain_below, plain_above = gradients(reverse=False)
    reversed_below, reversed_above = gradients(reverse=True)
    for plain, flipped in zip(plain_below, reversed_below, strict=True):
        assert plain.abs().sum() > 0
        torch.testing.assert_close(flipped, -strength * plain, rtol=1e-6, atol=1e-7)
    for plain, unchanged in zip(plain_above, reversed_above, strict=True):
        torch.testing.assert_close(unchanged, plain, rtol=0, atol=0)  # the classifier itself is untouched


def test_gradient_reversal_is_the_identity_forward():
    features = torch.randn(3, 7, requires_grad=True)
    assert torch.equal(reverse_gradient(features, 0.5), features)


def test_lambda_schedule_rises_from_zero_towards_one():
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    values = [dann_lambda(p / 10) for p in range(11)]
    assert all(a < b for a, b in zip(values, values[1:], strict=False))
    assert dann_lambda(5.0) == dann_lambda(1.0) and dann_lambda(-1.0) == 0.0


def test_unknown_target_dataset_is_rejected(tiny_encoder):
    with pytest.raises(OptionError, match="option 'target_dataset' names unknown dataset 'no_such_data'"):
        build_method("dann", tiny_encoder, {"target_dataset": "no_such_data"})


def test_without_a_target_dataset_dann_says_which_option_it_needs(tiny_encoder):
    with pytest.raises(OptionError, match="option 'target_dataset' is required"):
        create_method("dann", tiny_encoder)


def test_without_a_target_dataset_the_engine_reports_a_config_error():
    from metanlp.engine import ConfigError, RunConfig, run_training

    config = RunConfig(method="dann", dataset="fewrel", n_way=3, k_shot=1, n_query=1, train_steps=1,
                       eval_episodes=1, encoder="scratch", encoder_options=TINY_ENCODER, device="cpu")
    with pytest.raises(ConfigError, match="target_dataset"):
        run_training(config)


def test_target_labels_and_test_texts_are_never_used_for_training(tiny_encoder):
    method = build_method("dann", tiny_encoder, {"target_dataset": "fewrel_pubmed"})
    target = load_dataset("fewrel_pubmed")
    test_texts = {example.text for example in examples_for_split(target, "test")}
    unlabelled = {example.text for split in ("train", "val") for example in examples_for_split(target, split)}
    assert len(unlabelled) < method.options.target_pool  # so every one of them is in the pool
    assert set(method.target_texts) == unlabelled and not test_texts & unlabelled


def _source_examples(per_class: int) -> list:
    """A fixed subset of FewRel's Wikipedia training relations keeps the embedding cache small."""
    rng = random.Random(0)
    by_label: dict[str, list] = {}
    for example in examples_for_split(load_dataset("fewrel"), "train"):
        by_label.setdefault(example.label, []).append(example)
    return [example for label in sorted(by_label) for example in rng.sample(by_label[label], per_class)]


def _train_dann(reversal: bool, steps: int) -> list[dict]:
    torch.manual_seed(0)
    encoder = build_encoder("scratch", **TINY_ENCODER)  # finetune "auto": trains fully, reversal reaches it
    method = build_method(
        "dann", encoder, {"target_dataset": "fewrel_pubmed", "reversal": reversal, "schedule_steps": steps // 2, "target_pool": 200, "lr": 1e-3}
    )
    sampler = EpisodeSampler.from_examples(_source_examples(40), 5, 5, 1, seed=0)
    return [method.train_step(sampler.sample()) for _ in range(steps)]


def test_reversal_drives_the_domain_classifier_towards_chance():
    """Same data, same G_d; only whether its gradient reaches the features reversed differs.

    Without reversal G_d separates Wikipedia from PubMed sentences (0.76 here; 0.75-0.86
    over four other seeds); with it the features fight back and G_d stays near chance
    (0.56 here; 0.51-0.66), while the label classifier still learns the source relations.
    """
    steps = 100
    adapted = _train_dann(reversal=True, steps=steps)
    watched = _train_dann(reversal=False, steps=steps)
    for history in (adapted, watched):
        assert all(math.isfinite(step["domain_loss"]) for step in history)
    tail = steps // 4
    adapted_accuracy = statistics.mean(step["domain_accuracy"] for step in adapted[-tail:])
    watched_accuracy = statistics.mean(step["domain_accuracy"] for step in watched[-tail:])
    assert watched_accuracy > 0.7
    assert adapted_accuracy < 0.65
    assert adapted_accuracy < watched_accuracy - 0.1
    assert adapted[-1]["lambda"] > 0.99 and watched[-1]["lambda"] == 0.0
    label_accuracy = statistics.mean(step["query_accuracy"] for step in adapted[-tail:])
    assert label_accuracy > 0.4  # 5-way chance is 0.2: reversal kept the label information
