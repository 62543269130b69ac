"""The Train page's time estimate: from finished runs like this one on this machine, scaled, or honestly none."""

from __future__ import annotations

import pytest

from metanlp.dashboard.estimate import describe_estimate, estimate_run_time
from metanlp.engine import RunConfig
from metanlp.runs import RunStore
from metanlp.runs.queue import RunRecord
from tests.test_pages import TINY_SCRATCH, assert_no_exception, page_test


def config(**changes) -> RunConfig:
    values = dict(method="protonet", encoder="scratch", encoder_options=TINY_SCRATCH, n_way=5, k_shot=1, n_query=5,
                  train_steps=100, eval_episodes=100)
    return RunConfig(**(values | changes))


def finished(run_config: RunConfig, seconds: float, eval_seconds: float, meta_trained: bool = True) -> RunRecord:
    return RunRecord(
        id="0123456789ab", name="earlier", config=run_config.to_dict(), status="done", created_at=0.0,
        started_at=1000.0, finished_at=1000.0 + seconds, error=None, progress={},
        evaluation={"mean_accuracy": 0.5, "ci95": 0.1, "episodes": run_config.eval_episodes, "seconds": eval_seconds,
                    "meta_trained": meta_trained},
        worker_pid=None, cancel_requested=False,
    )


def test_the_estimate_scales_a_finished_run_to_the_new_settings():
    earlier = finished(config(), seconds=60.0, eval_seconds=10.0)  # 50 s for 100 steps of 30-sentence episodes
    estimate = estimate_run_time(config(train_steps=200, eval_episodes=50, k_shot=5), [earlier], meta_trains=True)
    expected = 50 / 100 / 30 * 200 * 50 + 10 / 100 / 30 * 50 * 50  # 50 sentences per episode now
    assert estimate.seconds == pytest.approx(expected) and estimate.runs == 1
    assert "about 3 min" in describe_estimate(estimate)
    skipped = estimate_run_time(config(train_steps=200), [earlier], meta_trains=False)  # no step will run
    assert skipped.seconds == pytest.approx(10.0)


def test_no_estimate_without_a_comparable_run():
    earlier = finished(config(method_options={"distance": "cosine"}), seconds=60.0, eval_seconds=10.0)
    estimate = estimate_run_time(config(), [earlier], meta_trains=True)
    assert estimate.seconds is None and "no time estimate" in describe_estimate(estimate)
    same_but_spelled_out = finished(config(method_options={"distance": "euclidean"}), 60.0, 10.0)  # the default
    assert estimate_run_time(config(), [same_but_spelled_out], meta_trains=True).seconds is not None


def test_training_minilm_in_the_loop_is_called_slow_even_without_history():
    trained = config(encoder="minilm", encoder_options={}, method_options={"finetune": "full"})
    assert "MiniLM is trained inside every step" in describe_estimate(estimate_run_time(trained, [], True))
    assert describe_estimate(estimate_run_time(config(encoder="minilm", encoder_options={}), [], False)).startswith("No run")


def test_the_train_page_shows_the_estimate_before_launch(runs_dir):
    store = RunStore(runs_dir)
    earlier = RunConfig(method="protonet", dataset="clinc150", train_steps=100, eval_episodes=100)  # the form's defaults
    run_id = store.create_run(earlier, claimed_by=12345)
    store.set_evaluation(run_id, {"mean_accuracy": 0.9, "ci95": 0.01, "episodes": 100, "seconds": 3.0,
                                  "meta_trained": False})
    store.finish_run(run_id, "done")
    app = page_test("train")
    app.run()
    assert_no_exception(app)
    captions = " ".join(caption.value for caption in app.caption)
    assert "Estimated time: about 3 s (from 1 finished run like it on this machine" in captions
