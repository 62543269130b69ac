"""Meta-transfer learning: scale-and-shift hooks, meta-learning them, and transfer as the starting point."""

from __future__ import annotations

import pytest
import torch

from metanlp.data.episodes import EpisodeSampler
from metanlp.data.registry import examples_for_split
from metanlp.encoders import build_encoder
from metanlp.evaluation import evaluate
from metanlp.methods import create_method
from tests.conftest import TINY_ENCODER

TEXTS = ["book a table for two tonight", "what is my checking balance", "play some jazz"]


def test_scale_and_shift_modulate_layers_only_while_the_method_embeds(tiny_encoder):
    method = create_method("meta_transfer", tiny_encoder).eval()
    with torch.no_grad():
        plain = tiny_encoder.embed(TEXTS)
        assert torch.allclose(method.embed_texts(TEXTS), plain, atol=1e-6), "γ=1, β=0 must change nothing"
        method.scale_shift.scale.fill_(2.0)
        method.scale_shift.shift.fill_(0.5)
        # One layer: mean pooling is linear, so pooled = γ ⊙ plain + β exactly.
        assert torch.allclose(method.embed_texts(TEXTS), 2.0 * plain + 0.5, atol=1e-5)
        assert torch.allclose(tiny_encoder.embed(TEXTS), plain), "hooks must not outlive the call"
    assert not any(layer._forward_hooks for layer in tiny_encoder.layer_groups())


def test_evaluation_encodes_each_sentence_once_per_scale_and_shift(tiny_encoder, monkeypatch):
    method = create_method("meta_transfer", tiny_encoder).eval()
    with torch.no_grad():
        method.scale_shift.shift.fill_(0.25)
    with torch.enable_grad():
        tracked = method.embed_texts(TEXTS)  # meta-training path: runs the encoder, keeps the graph
    encoded: list[str] = []
    original_embed = tiny_encoder.embed
    monkeypatch.setattr(tiny_encoder, "embed", lambda texts, **kw: encoded.extend(texts) or original_embed(texts, **kw))
    with torch.no_grad():
        first = method.embed_texts(TEXTS)
        again = method.embed_texts(list(reversed(TEXTS)))
        assert torch.allclose(first, tracked.detach(), atol=1e-6)
        assert torch.allclose(again, first.flip(0))
        assert encoded == TEXTS, "repeated sentences must come from the memo"
        method.scale_shift.scale.fill_(2.0)  # new γ: the memo is stale
        assert not torch.allclose(method.embed_texts(TEXTS), first)
    assert encoded == TEXTS + TEXTS


def test_scale_and_shift_of_the_pooled_embedding_reuse_the_cache(tiny_encoder):
    method = create_method("meta_transfer", tiny_encoder, {"film_at": "embedding"}).eval()
    with torch.no_grad():
        method.scale_shift.scale.fill_(3.0)
        method.scale_shift.shift.fill_(-1.0)
        assert torch.allclose(method.embed_texts(TEXTS), 3.0 * tiny_encoder.embed(TEXTS) - 1.0, atol=1e-6)
    assert method.scale_shift.scale.shape == (1, tiny_encoder.hidden_size)


def held_out_accuracy(method, episodes) -> float:
    return evaluate(method, episodes).mean_accuracy


ROGUE_LEARNERS = {
    "meta_transfer": ("meta_transfer", {"meta_batch": 1, "lr": 0.05, "inner_lr": 0.3}),
    # The control: the same γ, β trained with ProtoNet's loss, no inner loop.
    "protonet_film": ("protonet", {"film": "layers", "finetune": "frozen", "lr": 0.05}),
}


@pytest.mark.parametrize("learner", list(ROGUE_LEARNERS))
def test_meta_training_turns_down_the_rogue_dimensions_of_a_frozen_encoder(clinc_dataset, learner):
    """A frozen encoder whose few loud ("rogue") output channels drown the rest, as seen in real
    pretrained Transformers (Timkey & van Schijndel 2021): meta-learned γ should turn them down."""
    torch.manual_seed(0)
    encoder = build_encoder("scratch", **TINY_ENCODER)
    rogue = 4
    with torch.no_grad():
        encoder.layers[-1].feedforward_norm.weight[:rogue] *= 10.0
    name, options = ROGUE_LEARNERS[learner]
    method = create_method(name, encoder, options)
    train = EpisodeSampler.from_examples(examples_for_split(clinc_dataset, "train"), 5, 2, 3, seed=0)
    test = EpisodeSampler.from_examples(examples_for_split(clinc_dataset, "test"), 5, 2, 3, seed=1).take(40)

    before = held_out_accuracy(method, test)
    for _ in range(150):
        metrics = method.train_step(train.sample())
    after = held_out_accuracy(method, test)

    scale = method.scale_shift.scale.detach()[-1]
    assert metrics["scale_shift_change"] > 0.2, "γ and β should have moved"
    # Measured (two seeds): rogue |γ| at most 0.09–0.19 of the others' mean; accuracy 0.38 → 0.54–0.60
    # (meta-transfer), 0.33–0.36 → 0.55–0.56 (ProtoNet with γ, β).
    assert scale[:rogue].abs().max() < 0.25 * scale[rogue:].mean(), f"γ: rogue {scale[:rogue]}, others {scale[rogue:]}"
    assert after > before + 0.08, f"held-out accuracy {before:.3f} → {after:.3f}"


@pytest.fixture(scope="module")
def minilm():
    return build_encoder("minilm")


def test_transfer_gives_meta_learning_its_initialisation(minilm, clinc_dataset):
    """Before any meta-training, the pretrained encoder already does what a random one cannot."""
    episodes = EpisodeSampler.from_examples(examples_for_split(clinc_dataset, "test"), 3, 1, 2, seed=5).take(20)
    torch.manual_seed(0)
    pretrained = create_method("meta_transfer", minilm)
    scratch = create_method("meta_transfer", build_encoder("scratch", **TINY_ENCODER))
    transferred, from_scratch = held_out_accuracy(pretrained, episodes), held_out_accuracy(scratch, episodes)
    # Measured: 0.99 with MiniLM vs 0.53 with a random encoder (chance 0.33).
    assert transferred > 0.85
    assert transferred > from_scratch + 0.25
