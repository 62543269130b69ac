"""A configuration with nothing to meta-learn is called so, and really has nothing to learn.

``learns_across_tasks`` is computed from the configuration: the trainable parameters that can
change a prediction on a new task. When there are none, the engine skips meta-training, says
so in an event, and the run, the Runs page and the Train page carry the label.
"""

from __future__ import annotations

import pytest
import torch

from metanlp.engine import RunConfig, run_training
from metanlp.engine.config import NO_META_TRAINING
from metanlp.methods import create_method, default_options, get_method_class, method_names, would_meta_learn
from tests.conftest import TINY_ENCODER


def frozen_options(name: str) -> dict:
    """The method's defaults with its encoder frozen, where it has that option."""
    return {"finetune": "frozen"} if "finetune" in default_options(name) else {}


def predictions(method, episode) -> torch.Tensor:
    torch.manual_seed(7)
    return method.adapt(episode).predict_logits(episode.query_texts).argmax(-1)


@pytest.mark.parametrize("name", ["protonet", "finetune"])
def test_baselines_on_a_frozen_encoder_have_nothing_that_changes_a_prediction(name, tiny_encoder, clinc_episodes):
    method = create_method(name, tiny_encoder, frozen_options(name))
    assert not method.learns_across_tasks
    assert method.meta_learned_parameter_count() == 0
    episode = clinc_episodes[0]
    before = predictions(method, episode)
    # Whatever meta-training could do to the parameters it may train, no prediction moves.
    trainable = method.trainable_parameters()
    assert trainable, "the test needs a trainable but prediction-invariant parameter to perturb"
    with torch.no_grad():
        for parameter in trainable:
            parameter.add_(torch.randn_like(parameter) * 3.0)
    assert torch.equal(predictions(method, episode), before)


@pytest.mark.parametrize("name", method_names())
def test_every_no_meta_training_configuration_is_prediction_invariant(name, tiny_encoder, clinc_episodes):
    """For each method on a frozen encoder: either it meta-learns, or perturbing all it trains changes nothing."""
    # Methods that cannot be built on defaults alone (e.g. DANN's explicit target domain) declare examples.
    example = getattr(get_method_class(name), "example_options", {})
    method = create_method(name, tiny_encoder, {**example, **frozen_options(name)})
    if method.learns_across_tasks:
        assert method.meta_learned_parameter_count() > 0
        return
    episode = clinc_episodes[1]
    before = predictions(method, episode)
    with torch.no_grad():
        for parameter in method.trainable_parameters():
            parameter.add_(torch.randn_like(parameter) * 3.0)
    assert torch.equal(predictions(method, episode), before), f"{name} is labelled no-meta-training but its trained parameters change predictions"


def test_learning_configuration_changes_predictions_when_its_parameters_move(tiny_encoder, clinc_episodes):
    """The other side: ProtoNet on a trainable encoder counts its encoder, and moving it moves predictions."""
    method = create_method("protonet", tiny_encoder, {"finetune": "full"})
    assert method.learns_across_tasks and method.meta_learned_parameter_count() > 0
    episode = clinc_episodes[0]
    method.eval()
    with torch.no_grad():
        before = method.adapt(episode).predict_logits(episode.query_texts)
        for parameter in method.meta_learned_parameters():
            parameter.add_(torch.randn_like(parameter))
        after = method.adapt(episode).predict_logits(episode.query_texts)
    assert not torch.allclose(before, after)


def run(method_options: dict, steps: int = 3):
    events: list[dict] = []
    config = RunConfig(
        method="protonet", dataset="clinc150", n_way=3, k_shot=1, n_query=2, train_steps=steps, eval_episodes=2,
        encoder="scratch", encoder_options=TINY_ENCODER, method_options=method_options, device="cpu",
    )
    return run_training(config, on_event=events.append), events


def test_engine_says_when_it_skips_meta_training():
    result, events = run({"finetune": "frozen"})
    notices = [event for event in events if event["event"] == "no_meta_training"]
    assert len(notices) == 1 and NO_META_TRAINING in notices[0]["message"]
    assert notices[0]["requested_steps"] == 3
    assert not [event for event in events if event["event"] == "step"]
    summary = result.evaluation_summary()
    assert summary["meta_learned_parameters"] == 0 and summary["meta_trained"] is False
    evaluation = next(event for event in events if event["event"] == "evaluation")
    assert evaluation["meta_trained"] is False


def test_engine_meta_trains_and_counts_what_it_learns():
    result, events = run({"finetune": "full"})
    assert not [event for event in events if event["event"] == "no_meta_training"]
    assert [event["step"] for event in events if event["event"] == "step" and event["phase"] == "train"] == [1, 2, 3]
    summary = result.evaluation_summary()
    assert summary["meta_trained"] is True
    assert summary["meta_learned_parameters"] == result.method.meta_learned_parameter_count() > 0


def test_train_page_preview_agrees_with_the_real_encoder_kinds():
    assert would_meta_learn("protonet", {}, "minilm") is False
    assert would_meta_learn("protonet", {}, "scratch") is True
    assert would_meta_learn("finetune", {"finetune": "top"}, "minilm") is True


def test_runs_page_shows_the_label_and_the_count(runs_dir):
    from metanlp.runs.store import RunStore
    from metanlp.runs.worker import execute_run
    from tests.test_pages import page_test

    store = RunStore(runs_dir)
    config = RunConfig(
        method="protonet", dataset="clinc150", n_way=3, k_shot=1, n_query=2, train_steps=3, eval_episodes=2,
        encoder="scratch", encoder_options=TINY_ENCODER, method_options={"finetune": "frozen"}, device="cpu",
    )
    run_id = store.create_run(config, name="baseline")
    assert execute_run(store, run_id) == "done"
    assert store.get_run(run_id).evaluation["meta_learned_parameters"] == 0
    app = page_test("runs")
    app.run()
    assert not app.exception
    assert any(NO_META_TRAINING in info.value.replace("\\", "") for info in app.info)  # markdown-escaped
    assert any(metric.label == "Meta-learned parameters" and metric.value == "0" for metric in app.metric)


def test_train_page_says_before_launch_when_a_configuration_will_not_meta_train(runs_dir):
    from tests.test_pages import page_test, widget

    def labelled() -> bool:
        return any(NO_META_TRAINING in info.value.lower() for info in app.info)

    app = page_test("train")
    app.run()
    assert labelled(), "ProtoNet on frozen MiniLM (the default) must be labelled"
    widget(app.selectbox, "Encoder").set_value("scratch")
    app.run()
    assert not app.exception
    assert not labelled(), "ProtoNet on a from-scratch encoder meta-trains"
