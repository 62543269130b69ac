"""One training loop (``metanlp.engine.loop.train_loop``) and one name per metric meaning.

Runs, corpus pretraining and supervised fine-tuning all step through the engine's loop, so the
stop flag, seeding and events behave the same in each; MLM pretraining reports its objective as
``mlm_loss`` / ``nsp_loss`` / ``nsp_accuracy`` and the Runs chart labels it so.
"""

from __future__ import annotations

import ast
import inspect
import textwrap

import pytest
import torch

from metanlp.engine import RunCancelled, RunConfig, run_training
from metanlp.engine.loop import train_loop
from metanlp.engine.pretraining import pretrain
from metanlp.methods import REQUIRED_METRICS
from tests.conftest import TINY_ENCODER

PRETRAINING_STEP_KEYS = {"mlm_loss", "nsp_loss", "nsp_accuracy"}


def steps_of(events: list[dict], phase: str = "train") -> list[dict]:
    return [e for e in events if e["event"] == "step" and e["phase"] == phase]


def without_clock(events: list[dict]) -> list[dict]:
    return [{key: value for key, value in event.items() if key != "elapsed"} for event in events]


def mlm_config(**overrides) -> RunConfig:
    settings = {
        "method": "mlm_pretrain", "dataset": "clinc150", "n_way": 3, "k_shot": 2, "n_query": 2, "train_steps": 3,
        "eval_episodes": 1, "encoder": "scratch", "encoder_options": TINY_ENCODER, "device": "cpu",
        "method_options": {"pairs_per_step": 8},
    }
    return RunConfig(**{**settings, **overrides})


def tiny_pretraining(seed: int = 0, events: list[dict] | None = None, **options):
    from metanlp.encoders import build_encoder
    from metanlp.pretraining.synthetic import topic_corpus

    torch.manual_seed(0)  # the same initial encoder every time; ``seed`` decides the rest
    encoder = build_encoder("scratch", **TINY_ENCODER)
    events = [] if events is None else events
    result = pretrain(encoder, topic_corpus(sentences_per_topic=12), batch_size=8, lr=3e-3, warmup=2, seed=seed,
                      held_out_size=8, on_event=events.append, **{"steps": 6, "eval_every": 3, **options})
    return result, events


# ------------------------------------------------------------------ the loop itself


def test_train_loop_streams_steps_validations_and_checkpoints_and_stops_before_a_step():
    calls: list[int] = []
    saved: list[int] = []
    events: list[dict] = []

    def step_fn(step: int) -> dict:
        calls.append(step)
        return {"loss": 1.0 / step, "inner_support_losses": [0.5, 0.25]}

    result = train_loop(
        step_fn, 10, phase="demo", on_event=events.append, should_stop=lambda: len(calls) == 5,
        validate_every=2, validate_fn=lambda: {"held_out": 0.5}, snapshot_steps={0, 3}, snapshot_fn=lambda: {"map": 1},
        checkpoint_steps={2}, save_checkpoint=saved.append,
    )
    assert calls == [1, 2, 3, 4, 5] and result.stopped and result.steps_done == 5  # asked before every step
    assert [e["step"] for e in steps_of(events, "demo")] == [1, 2, 3, 4, 5]
    assert [e["inner_step"] for e in steps_of(events, "inner") if e["step"] == 1] == [1, 2]
    assert all("inner_support_losses" not in e for e in events)
    assert [e["step"] for e in events if e["event"] == "validation"] == [2, 4]
    assert [e["step"] for e in events if e["event"] == "attention"] == [0, 3]
    assert saved == [2, 5] == [e["step"] for e in events if e["event"] == "checkpoint"]  # listed, and where it stopped
    assert result.history == [e for e in events if e["event"] in ("step", "validation")]


# ------------------------------------------------------------------ stop flag and seeding, end to end


def test_a_mlm_pretrain_run_stops_within_one_step():
    events: list[dict] = []
    with pytest.raises(RunCancelled):
        run_training(mlm_config(train_steps=20), on_event=events.append,
                     should_stop=lambda: len(steps_of(events)) >= 2)
    assert [e["step"] for e in steps_of(events)] == [1, 2]
    assert not [e for e in events if e["event"] == "evaluation"]


def test_corpus_pretraining_stops_within_one_step_and_keeps_a_checkpoint():
    saved: list[int] = []
    events: list[dict] = []
    result, _ = tiny_pretraining(
        events=events, steps=20, should_stop=lambda: len(steps_of(events, "pretrain")) >= 4, checkpoint_steps=[2],
        save_checkpoint=lambda step, encoder: saved.append(step),
    )
    assert result.stopped and result.steps_done == 4
    assert [e["step"] for e in steps_of(events, "pretrain")] == [1, 2, 3, 4]
    assert saved == [2, 4]


def test_the_same_seed_gives_the_same_pretraining_history_and_another_seed_does_not():
    first, _ = tiny_pretraining(seed=3)
    again, _ = tiny_pretraining(seed=3)
    other, _ = tiny_pretraining(seed=4)
    assert without_clock(first.history) == without_clock(again.history)
    assert without_clock(first.history) != without_clock(other.history)


def test_the_same_seed_gives_the_same_run_and_watching_attention_changes_nothing():
    plain, watched = [], []
    run_training(mlm_config(seed=5), on_event=plain.append)
    run_training(mlm_config(seed=5, attention_text="book a flight", attention_every=1), on_event=watched.append)
    assert [e["step"] for e in watched if e["event"] == "attention"] == [0, 1, 2, 3]
    assert without_clock(steps_of(plain)) == without_clock(steps_of(watched))


# ------------------------------------------------------------------ one name per meaning


def test_pretraining_events_use_their_own_names():
    result, events = tiny_pretraining()
    for event in steps_of(events, "pretrain"):
        assert set(event) >= PRETRAINING_STEP_KEYS and not set(event) & set(REQUIRED_METRICS)
    checks = [e for e in events if e["event"] == "validation"]
    assert [e["step"] for e in checks] == [3, 6]
    assert all(set(REQUIRED_METRICS).isdisjoint(e) and "held_out_mlm_loss" in e for e in checks)


def test_the_runs_chart_labels_mlm_metrics_as_such(tmp_path):
    """mlm_pretrain's stored steps reach the Runs chart with MLM loss, NSP loss and NSP accuracy
    under their own names; "query loss" is the prototype classifier's query loss, not the MLM loss."""
    from metanlp.dashboard.charts import training_curves
    from metanlp.runs.store import RunStore

    config = mlm_config()
    events: list[dict] = []
    run_training(config, on_event=events.append)
    for event in steps_of(events):
        assert set(REQUIRED_METRICS) | PRETRAINING_STEP_KEYS <= set(event)
    store = RunStore(tmp_path)
    run_id = store.create_run(config)
    store.add_events(run_id, events)
    figure = training_curves({"run": store.metrics(run_id)})
    by_name = {trace.name: trace for trace in figure.data}
    assert {"query loss", "support loss", "query accuracy", "MLM loss (masked words)", "NSP loss (next sentence)",
            "NSP accuracy (next sentence)"} == set(by_name)
    stored = steps_of(events)
    assert list(by_name["query loss"].y) == pytest.approx([e["query_loss"] for e in stored])
    assert list(by_name["MLM loss (masked words)"].y) == pytest.approx([e["mlm_loss"] for e in stored])
    assert by_name["NSP accuracy (next sentence)"].xaxis == "x2"


# ------------------------------------------------------------------ nobody else loops over steps


def _step_loops(source: str) -> list[str]:
    """``for … in range(…)`` and ``while`` statements: what a private training loop looks like."""
    tree = ast.parse(textwrap.dedent(source))
    return [
        ast.unparse(node).splitlines()[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.While)
        or (isinstance(node, ast.For) and isinstance(node.iter, ast.Call) and getattr(node.iter.func, "id", "") == "range")
    ]


def test_only_the_engine_loop_iterates_over_training_steps():
    from metanlp.engine import pretraining as engine_pretraining
    from metanlp.engine import training
    from metanlp.methods import mlm_pretrain
    from metanlp.methods.finetune import SupervisedFineTuning
    from metanlp.pretraining import trainer

    for owner in (training, engine_pretraining, trainer, mlm_pretrain, SupervisedFineTuning):
        assert _step_loops(inspect.getsource(owner)) == [], owner
    assert _step_loops(inspect.getsource(train_loop))  # the one that does


def test_the_engine_batches_maml_tasks_and_learns_the_same(monkeypatch):
    """run_training hands MAML whole meta-batches (its vmap path); per-episode steps give the same run."""
    from metanlp.engine import RunConfig, run_training
    from metanlp.methods.maml import GradientMetaLearner
    from tests.conftest import TINY_ENCODER

    def run() -> tuple[list[float], float]:
        events: list[dict] = []
        config = RunConfig(
            method="maml", dataset="clinc150", n_way=3, k_shot=1, n_query=2, train_steps=10, eval_episodes=3,
            encoder="scratch", encoder_options=TINY_ENCODER, method_options={"finetune": "frozen"}, device="cpu",
        )
        result = run_training(config, on_event=events.append)
        losses = [e["query_loss"] for e in events if e["event"] == "step" and e.get("phase") == "train"]
        return losses, result.evaluation.mean_accuracy

    calls: list[int] = []
    batched = GradientMetaLearner.train_steps
    monkeypatch.setattr(GradientMetaLearner, "train_steps", lambda self, episodes: calls.append(len(episodes)) or batched(self, episodes))
    losses, accuracy = run()
    assert calls and max(calls) > 1, "the engine did not hand MAML a meta-batch"
    assert len(losses) == 10
    monkeypatch.setattr(GradientMetaLearner, "episodes_per_call", lambda self: 1)
    single_losses, single_accuracy = run()
    assert single_losses == pytest.approx(losses, abs=1e-5)
    assert single_accuracy == pytest.approx(accuracy)
