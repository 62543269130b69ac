"""Evaluation statistics and the engine's configuration checks."""

from __future__ import annotations

import math

import pytest

from metanlp.engine import ConfigError, RunConfig, run_training
from metanlp.evaluation import mean_and_ci95, sample_std, t_quantile
from tests.conftest import TINY_ENCODER


def test_confidence_interval_uses_student_t_and_the_sample_std():
    # Four values: sample variance 0.2 / 3, t(0.975, 3) = 3.182446 (any t table), so 3.182446 * 0.258199 / 2.
    mean, ci = mean_and_ci95([0.2, 0.4, 0.6, 0.8])
    assert mean == pytest.approx(0.5)
    assert ci == pytest.approx(0.410852, abs=1e-6)
    assert t_quantile(0.975, 2) == pytest.approx(4.302653, abs=1e-6)  # three training seeds
    assert t_quantile(0.975, 599) == pytest.approx(1.96393, abs=1e-5)  # 600 episodes: close to 1.96
    assert mean_and_ci95([0.7, 0.7]) == (pytest.approx(0.7), 0.0)
    single_mean, single_ci = mean_and_ci95([0.7])
    assert single_mean == 0.7 and math.isnan(single_ci)  # one value has no spread to estimate
    assert sample_std([1.0, 2.0, 3.0]) == pytest.approx(1.0)


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
    # differences 0.2, 0.0, 0.2, 0.2: mean 0.15, sample std 0.1, t(0.975, 3) = 3.182446
    result = paired_comparison(a, b)
    assert result.mean_difference == pytest.approx(0.15)
    assert result.ci95 == pytest.approx(3.182446 * 0.1 / 2, abs=1e-6)
    assert result.low == pytest.approx(0.15 - 3.182446 * 0.1 / 2, abs=1e-6)
    assert not result.excludes_zero  # 0.15 ± 0.159: four episodes are too few (1.96 · population std said yes)
    assert paired_comparison(a * 3, b * 3).excludes_zero  # twelve episodes: 0.15 ± 0.06
    assert not paired_comparison([0.5, 0.7], [0.6, 0.6]).excludes_zero
    with pytest.raises(ValueError, match="same episodes"):
        paired_comparison([0.1], [0.1, 0.2])


def test_results_on_different_episodes_are_never_paired(clinc_dataset):
    from metanlp.data.episodes import EpisodeSampler
    from metanlp.data.registry import examples_for_split
    from metanlp.encoders import build_encoder
    from metanlp.evaluation import EpisodeMismatch, compare_results, episodes_fingerprint, evaluate
    from metanlp.methods import create_method

    sampler = EpisodeSampler.from_examples(examples_for_split(clinc_dataset, "test"), 3, 1, 2, seed=0)
    first, second = sampler.take(3), sampler.take(3)
    assert episodes_fingerprint(first) == episodes_fingerprint([type(e).from_dict(e.to_dict()) for e in first])
    assert episodes_fingerprint(first) != episodes_fingerprint(second)
    method = create_method("protonet", build_encoder("scratch", **TINY_ENCODER))
    on_first, again, on_second = evaluate(method, first), evaluate(method, first), evaluate(method, second)
    assert on_first.episodes_hash == episodes_fingerprint(first)
    assert compare_results(on_first, again).mean_difference == 0.0
    with pytest.raises(EpisodeMismatch, match="different ones"):
        compare_results(on_first, on_second)  # same number of episodes, different tasks
    on_first.episodes_hash = ""
    with pytest.raises(EpisodeMismatch, match="no episode fingerprint"):
        compare_results(on_first, again)


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
