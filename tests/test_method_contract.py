"""The common conformance test: every registered method honours the whole ``Method`` contract.

Parametrized over the registry, so a new method is covered the moment it registers.
"""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import pytest
import torch

from metanlp.methods import REQUIRED_METRICS, create_method, get_method_class, method_names
from metanlp.methods.options import OptionError

METHODS = method_names()


def test_registry_has_the_reference_methods():
    assert {"finetune", "protonet"} <= set(METHODS)


@pytest.mark.parametrize("name", METHODS)
def test_card_and_options(name):
    method_class = get_method_class(name)
    card = method_class.card
    assert card.name == name
    for field in ("title", "family", "summary", "formula", "paper"):
        assert getattr(card, field).strip(), f"{name} card lacks {field}"
    options = method_class.Options()
    if hasattr(options, "validate"):
        options.validate()
    with pytest.raises(OptionError, match="unknown option"):
        create_method(name, None, {"no_such_option": 1})


@pytest.mark.parametrize("name", METHODS)
def test_contract(name, tiny_encoder, clinc_episodes, tmp_path):
    from metanlp.engine.checkpoint import load_method, save_method

    torch.manual_seed(0)
    method = create_method(name, tiny_encoder).to("cpu")
    for episode in clinc_episodes[:2]:
        metrics = method.train_step(episode)
        for key in REQUIRED_METRICS:
            assert key in metrics, f"{name}.train_step lacks {key}"
            assert math.isfinite(metrics[key]), f"{name}.train_step {key} = {metrics[key]}"
        assert 0.0 <= metrics["query_accuracy"] <= 1.0

    episode = clinc_episodes[2]
    inner_steps: list[dict] = []
    task_model = method.adapt(episode, on_inner_step=inner_steps.append)
    assert inner_steps, f"{name}.adapt reported no inner step"
    assert all(math.isfinite(step["support_loss"]) for step in inner_steps)
    logits = task_model.predict_logits(episode.query_texts)
    assert logits.shape == (len(episode.query_texts), episode.n_way)
    probabilities = task_model.predict_proba(episode.query_texts)
    assert torch.allclose(probabilities.sum(-1), torch.ones(len(episode.query_texts)), atol=1e-5)

    result = method.evaluate_episode(episode)
    assert 0.0 <= result["query_accuracy"] <= 1.0 and math.isfinite(result["query_loss"])

    # Save/load round trip: the reloaded method adapts and predicts identically.
    folder = save_method(method, tmp_path / "checkpoint")
    reloaded = load_method(folder, "cpu")
    torch.manual_seed(1)
    before = method.adapt(episode).predict_logits(episode.query_texts)
    torch.manual_seed(1)
    after = reloaded.adapt(episode).predict_logits(episode.query_texts)
    assert torch.allclose(before, after, atol=1e-5), f"{name} changed after save/load"
    assert dataclasses.asdict(reloaded.options) == dataclasses.asdict(method.options)


@pytest.mark.parametrize("name", METHODS)
def test_runs_through_the_engine(name):
    from metanlp.engine import RunConfig, run_training
    from tests.conftest import TINY_ENCODER

    events: list[dict] = []
    config = RunConfig(
        method=name, dataset="clinc150", n_way=3, k_shot=1, n_query=2, train_steps=2,
        eval_episodes=2, encoder="scratch", encoder_options=TINY_ENCODER, device="cpu",
    )
    result = run_training(config, on_event=events.append)
    steps = [e for e in events if e["event"] == "step" and e["phase"] == "train"]
    if result.method.learns_across_tasks:
        assert [e["step"] for e in steps] == [1, 2]
        assert all(key in steps[0] for key in REQUIRED_METRICS)
    assert result.evaluation is not None and result.evaluation.episodes == 2
    assert any(e["event"] == "evaluation" for e in events)


def test_methods_never_import_streamlit():
    code = "import metanlp.methods as m, sys; m.method_names(); print('streamlit' in sys.modules)"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert output.stdout.strip() == "False"
