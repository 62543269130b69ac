"""Evaluation statistics and the engine's configuration checks."""

from __future__ import annotations

import math

import pytest

from metanlp.engine import ConfigError, RunConfig, run_training
from metanlp.evaluation import mean_and_ci95
from tests.conftest import TINY_ENCODER


def test_confidence_interval_by_hand():
    mean, ci = mean_and_ci95([0.2, 0.4, 0.6, 0.8])
    assert mean == pytest.approx(0.5)
    assert ci == pytest.approx(1.96 * math.sqrt(0.05) / 2)
    assert mean_and_ci95([0.7, 0.7]) == (pytest.approx(0.7), 0.0)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"n_way": 1}, "n_way must be between 2"),
        ({"k_shot": 0}, "k_shot must be between 1"),
        ({"train_steps": -1}, "train_steps"),
        ({"encoder": "gpt2"}, "encoder must be one of"),
        ({"device": "tpu"}, "device must be one of"),
        ({"dataset": "user"}, "needs data_file"),
        ({"n_query": 2.5}, "whole number"),
    ],
)
def test_config_errors_name_the_setting(settings, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(**settings).validate()


def test_config_round_trip_and_unknown_keys():
    config = RunConfig(method="finetune", k_shot=5, method_options={"adapt_steps": 10})
    assert RunConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="did you mean 'k_shot'"):
        RunConfig.from_dict({"k_shots": 5})


def test_evaluation_episodes_are_the_same_for_every_method():
    common = {"dataset": "clinc150", "n_way": 3, "k_shot": 1, "n_query": 2, "train_steps": 0, "eval_episodes": 4,
              "encoder": "scratch", "encoder_options": TINY_ENCODER, "device": "cpu"}
    from metanlp.data.registry import load_dataset
    from metanlp.engine.training import evaluation_episodes

    dataset = load_dataset("clinc150")
    first = evaluation_episodes(dataset, RunConfig(method="protonet", seed=1, **common))
    second = evaluation_episodes(dataset, RunConfig(method="finetune", seed=2, **common))
    assert [e.to_dict() for e in first] == [e.to_dict() for e in second]


def test_engine_streams_events_and_validates(tmp_path):
    events: list[dict] = []
    config = RunConfig(method="protonet", dataset="clinc150", n_way=3, k_shot=2, n_query=2, train_steps=3,
                       eval_every=2, val_episodes=2, eval_episodes=3, encoder="scratch",
                       encoder_options=TINY_ENCODER, device="cpu", attention_text="book a flight to paris",
                       attention_every=2)
    result = run_training(config, on_event=events.append)
    kinds = [e["event"] for e in events]
    assert kinds.count("evaluation") == 1 and kinds.count("validation") == 1
    attention_steps = [e["step"] for e in events if e["event"] == "attention"]
    assert attention_steps == [0, 2, 3]
    assert result.evaluation.episodes == 3
    with pytest.raises(ConfigError, match="unknown option"):
        run_training(RunConfig(method="protonet", method_options={"bogus": 1}, encoder="scratch",
                               encoder_options=TINY_ENCODER, train_steps=1, eval_episodes=1, device="cpu"))


def test_paired_comparison_by_hand():
    from metanlp.evaluation import paired_comparison

    a = [0.8, 0.6, 1.0, 0.4]
    b = [0.6, 0.6, 0.8, 0.2]
    # differences 0.2, 0.0, 0.2, 0.2: mean 0.15, population std sqrt(0.0075)
    result = paired_comparison(a, b)
    assert result.mean_difference == pytest.approx(0.15)
    assert result.ci95 == pytest.approx(1.96 * math.sqrt(0.0075) / 2)
    assert result.low == pytest.approx(0.15 - 1.96 * math.sqrt(0.0075) / 2)
    assert result.excludes_zero  # 0.15 ± 0.085
    assert not paired_comparison([0.5, 0.7], [0.6, 0.6]).excludes_zero
    with pytest.raises(ValueError, match="same episodes"):
        paired_comparison([0.1], [0.1, 0.2])


def test_mixed_precision_path_runs_and_auto_stays_fp32_on_cpu():
    import torch

    from metanlp.device import autocast_dtype

    assert autocast_dtype(torch.device("cpu"), "auto") is None
    assert autocast_dtype(torch.device("cpu"), "bf16") is torch.bfloat16
    events: list[dict] = []
    config = RunConfig(method="protonet", dataset="clinc150", n_way=3, k_shot=2, n_query=2, train_steps=3,
                       eval_episodes=3, encoder="scratch", encoder_options=TINY_ENCODER, device="cpu",
                       precision="bf16")
    result = run_training(config, on_event=events.append)
    losses = [e["query_loss"] for e in events if e["event"] == "step"]
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)
    assert 0.0 <= result.evaluation.mean_accuracy <= 1.0
    with pytest.raises(ConfigError, match="precision"):
        RunConfig(precision="int8").validate()
