"""Fine-tuning strategies: layer-wise LR decay, warm-up schedules, top-k vs full, supervised splits."""

from __future__ import annotations

import copy

import pytest
import torch

from metanlp.encoders import build_encoder
from metanlp.engine.loop import seed_everything, train_loop
from metanlp.methods import OptionError, create_method
from metanlp.methods.finetune import SupervisedFineTuning, layerwise_parameter_groups
from metanlp.pretraining.schedules import learning_rate_factor
from tests.conftest import TINY_ENCODER

TWO_LAYERS = {**TINY_ENCODER, "num_layers": 2}


@pytest.fixture()
def two_layer_encoder():
    torch.manual_seed(0)
    return build_encoder("scratch", **TWO_LAYERS)


def snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    return [parameter.detach().clone() for parameter in module.parameters()]


def changed(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(old, new) for old, new in zip(before, module.parameters(), strict=True))


def test_layerwise_groups_follow_the_decay(two_layer_encoder):
    groups = layerwise_parameter_groups(two_layer_encoder, top_lr=1e-3, layer_decay=0.5)
    assert [g["name"] for g in groups] == ["embeddings", "layer 1", "layer 2"]
    assert [g["lr"] for g in groups] == pytest.approx([1e-3 * 0.25, 1e-3 * 0.5, 1e-3])
    covered = sum(p.numel() for g in groups for p in g["params"])
    assert covered == sum(p.numel() for p in two_layer_encoder.parameters())

    two_layer_encoder.set_trainable_layers(1)  # only the top layer trains: only its group remains
    assert [g["name"] for g in layerwise_parameter_groups(two_layer_encoder, 1e-3, 0.5)] == ["layer 2"]


def test_training_across_tasks_uses_decayed_rates(two_layer_encoder):
    method = create_method("finetune", two_layer_encoder, {"finetune": "full", "lr": 1e-3, "layer_decay": 0.8})
    rates = {g["name"]: g["lr"] for g in method.optimizer().param_groups}
    assert rates == pytest.approx({"head": 1e-3, "embeddings": 1e-3 * 0.64, "layer 1": 1e-3 * 0.8, "layer 2": 1e-3})
    with pytest.raises(OptionError, match="layer_decay"):
        create_method("finetune", two_layer_encoder, {"layer_decay": 0.0})
    with pytest.raises(OptionError, match="lr_schedule"):
        create_method("finetune", two_layer_encoder, {"lr_schedule": "cosine"})


def test_llrd_scales_each_layers_adam_step(two_layer_encoder, clinc_episodes):
    """Adam's step size is about its learning rate whatever the gradient, so per-layer changes show the decay."""
    method = create_method(
        "finetune", two_layer_encoder,
        {"finetune": "full", "encoder_lr": 1e-3, "layer_decay": 0.5, "adapt_steps": 2},
    )
    groups = method.encoder.layer_groups()
    before = [snapshot(group) for group in groups]
    adapted = method.adapt(clinc_episodes[0]).encoder
    steps = []
    for old, group in zip(before, adapted.layer_groups(), strict=True):
        steps.append(max((new.detach() - o).abs().max().item() for o, new in zip(old, group.parameters(), strict=True)))
    # The zero-initialised head passes no gradient at step 1; step 2 moves each group by ~the same
    # multiple of its rate, so the ratios between groups are the decay factors.
    assert steps[1] / steps[2] == pytest.approx(0.5, rel=0.02)
    assert steps[0] / steps[2] == pytest.approx(0.25, rel=0.02)


def test_warmup_schedule_values():
    assert [learning_rate_factor(s, 4) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    linear = [learning_rate_factor(s, 4, total_steps=8, schedule="linear") for s in range(9)]
    assert linear == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0])
    assert [learning_rate_factor(s, 0, 4, "linear") for s in range(4)] == pytest.approx([1.0, 0.75, 0.5, 0.25])
    with pytest.raises(ValueError, match="schedule"):
        learning_rate_factor(0, 1, schedule="step")


def test_adaptation_follows_the_warmup_schedule(tiny_encoder, clinc_episodes):
    options = {"head_lr": 0.08, "adapt_steps": 8, "warmup_steps": 4, "lr_schedule": "linear"}
    method = create_method("finetune", tiny_encoder, options)
    inner: list[dict] = []
    method.adapt(clinc_episodes[0], on_inner_step=inner.append)
    assert [step["lr"] for step in inner] == pytest.approx(
        [0.08 * f for f in (0.25, 0.5, 0.75, 1.0, 1.0, 0.75, 0.5, 0.25)]
    )


def test_training_across_tasks_follows_the_warmup_schedule(tiny_encoder, clinc_episodes):
    options = {"finetune": "full", "lr": 1e-3, "train_warmup_steps": 2, "train_total_steps": 4, "lr_schedule": "linear"}
    method = create_method("finetune", tiny_encoder, options)
    seen = []
    for episode in clinc_episodes + clinc_episodes[:1]:
        seen.append(method.optimizer().param_groups[0]["lr"])  # the rate the coming step uses
        method.train_step(episode)
    assert seen == pytest.approx([5e-4, 1e-3, 1e-3, 5e-4])


def test_top_k_leaves_lower_layers_unchanged_and_full_changes_them(two_layer_encoder, clinc_episodes):
    episode = clinc_episodes[0]
    options = {"encoder_lr": 1e-3, "adapt_steps": 5}
    original = snapshot(two_layer_encoder)

    top = create_method("finetune", two_layer_encoder, {**options, "finetune": "top", "top_k": 1})
    groups_before = [snapshot(group) for group in top.encoder.layer_groups()]
    adapted = top.adapt(episode).encoder
    embeddings, layer_1, layer_2 = adapted.layer_groups()
    assert not changed(groups_before[0], embeddings) and not changed(groups_before[1], layer_1)
    assert changed(groups_before[2], layer_2)
    assert not changed(original, top.encoder), "adaptation leaked into the method's own encoder"

    full = create_method("finetune", copy.deepcopy(two_layer_encoder), {**options, "finetune": "full"})
    groups_before = [snapshot(group) for group in full.encoder.layer_groups()]
    adapted = full.adapt(episode).encoder
    assert all(changed(old, group) for old, group in zip(groups_before, adapted.layer_groups(), strict=True))

    probe = create_method("finetune", copy.deepcopy(two_layer_encoder), {**options, "finetune": "frozen"})
    before = snapshot(probe.encoder)
    assert probe.adapt(episode).encoder is probe.encoder and not changed(before, probe.encoder)


def test_top_k_training_across_tasks_leaves_lower_layers_unchanged(two_layer_encoder, clinc_episodes):
    method = create_method("finetune", two_layer_encoder, {"finetune": "top", "top_k": 1, "lr": 1e-3})
    groups_before = [snapshot(group) for group in method.encoder.layer_groups()]
    for episode in clinc_episodes:
        method.train_step(episode)
    embeddings, layer_1, layer_2 = method.encoder.layer_groups()
    assert not changed(groups_before[0], embeddings) and not changed(groups_before[1], layer_1)
    assert changed(groups_before[2], layer_2)


@pytest.fixture(scope="module")
def agnews_splits():
    from metanlp.data.registry import examples_for_split, load_dataset

    dataset = load_dataset("agnews")
    return examples_for_split(dataset, "train"), examples_for_split(dataset, "test")[:200]


def step_events(events: list[dict]) -> list[dict]:
    return [event for event in events if event["event"] == "step"]


def test_supervised_full_finetune_learns_agnews(agnews_splits):
    train, test = agnews_splits
    torch.manual_seed(0)
    encoder = build_encoder("scratch", **TINY_ENCODER)
    events: list[dict] = []
    seed_everything(0)
    tuning = SupervisedFineTuning(
        encoder, train, test, steps=40, batch_size=16, finetune="full", head_lr=3e-3, encoder_lr=3e-3,
        warmup_steps=4, seed=0,
    )
    train_loop(tuning, 40, phase="supervised", on_event=events.append, validate_every=20, validate_fn=tuning.held_out)
    assert tuning.classes == sorted({e.label for e in train}) and len(tuning.classes) == 4
    steps = step_events(events)
    assert [e["step"] for e in steps] == list(range(1, 41))
    assert all("query_loss" not in e and "support_loss" not in e for e in steps)  # its own names, no aliases
    checks = [e for e in events if e["event"] == "validation"]
    assert [e["step"] for e in checks] == [20, 40]
    assert steps[0]["lr"] == pytest.approx(3e-3 / 4)  # warm-up
    first = sum(e["train_loss"] for e in steps[:10]) / 10
    last = sum(e["train_loss"] for e in steps[-10:]) / 10
    assert last < first - 0.08, (first, last)
    # 4 balanced classes, 200 test texts: chance is 0.25 ± 0.03; seen: 0.59.
    assert checks[-1]["held_out_accuracy"] > 0.45, checks[-1]
    assert checks[-1] == {"event": "validation", "phase": "supervised", "step": 40, **tuning.held_out()}


def test_supervised_linear_probe_trains_only_the_head(agnews_splits):
    train, test = agnews_splits
    torch.manual_seed(0)
    encoder = build_encoder("scratch", **TINY_ENCODER)
    before = snapshot(encoder)
    events: list[dict] = []
    seed_everything(0)
    tuning = SupervisedFineTuning(encoder, train, test, steps=100, batch_size=32, finetune="frozen", head_lr=0.1, seed=0)
    train_loop(tuning, 100, phase="supervised", on_event=events.append, validate_every=50, validate_fn=tuning.held_out)
    assert not changed(before, encoder)
    steps = step_events(events)
    first = sum(e["train_loss"] for e in steps[:10]) / 10
    last = sum(e["train_loss"] for e in steps[-10:]) / 10
    assert last < first - 0.05, (first, last)
