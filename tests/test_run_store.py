"""The run store (SQLite + run folders) and in-process run execution (the CLI's path)."""

from __future__ import annotations

import os
import sqlite3
import threading
import time

import numpy as np
import pytest

from metanlp.engine import RunConfig
from metanlp.runs.store import (
    RUNS_DIR_ENV,
    InvalidRunId,
    RunNotFound,
    RunStore,
    default_runs_dir,
)
from metanlp.runs.worker import EventWriter, StopCheck, execute_run
from tests.conftest import TINY_ENCODER


def tiny_config(**changes) -> RunConfig:
    settings = dict(
        method="protonet", dataset="clinc150", n_way=3, k_shot=1, n_query=2, train_steps=3,
        eval_episodes=3, encoder="scratch", encoder_options=dict(TINY_ENCODER), device="cpu",
    )
    settings.update(changes)
    return RunConfig(**settings)


@pytest.fixture()
def store(tmp_path) -> RunStore:
    return RunStore(tmp_path / "store")


def test_store_is_sqlite_in_wal_mode_under_the_configured_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(RUNS_DIR_ENV, str(tmp_path / "elsewhere"))
    assert default_runs_dir() == tmp_path / "elsewhere"
    store = RunStore()
    assert store.root == tmp_path / "elsewhere"
    with sqlite3.connect(store.db_path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    monkeypatch.delenv(RUNS_DIR_ENV)
    assert default_runs_dir().name == "runs"


@pytest.mark.parametrize("bad_id", ["../x", "../../etc/passwd", "ABCDEF123456", "abc", "", "0123456789ab/..", "0123456789ab\n"])
def test_run_ids_that_could_escape_are_rejected(store, bad_id):
    for operation in (store.run_dir, store.get_run, store.delete_run, store.metrics, store.request_cancel):
        with pytest.raises(InvalidRunId):
            operation(bad_id)
    with pytest.raises(InvalidRunId):
        store.add_events(bad_id, [{"event": "step", "step": 1}])


def test_names_are_display_only_and_folders_stay_inside(store):
    run_id = store.create_run(tiny_config(), name="../../evil\nname")
    record = store.get_run(run_id)
    assert record.name == "../../evil name"
    assert store.run_dir(run_id) == (store.root / "runs" / run_id).resolve()
    assert store.run_dir(run_id).is_dir()
    assert store.checkpoint_dir(run_id).parent == store.run_dir(run_id)
    assert sorted(path.name for path in (store.root / "runs").iterdir()) == [run_id]
    with pytest.raises(RunNotFound):
        store.get_run("0123456789ab")


def test_runs_are_listed_newest_first_and_claimed_oldest_first(store):
    first = store.create_run(tiny_config(seed=1))
    second = store.create_run(tiny_config(seed=2), name="second")
    third = store.create_run(tiny_config(seed=3))
    records = store.list_runs()
    assert [record.id for record in records] == [third, second, first]
    assert records[0].name == "protonet · clinc150 · 3-way 1-shot"
    assert records[0].status == "queued" and records[0].progress == {} and records[0].started_at is None
    assert RunConfig.from_dict(records[1].config) == tiny_config(seed=2)

    store.request_cancel(first)  # a queued run is cancelled at once and never claimed
    assert store.get_run(first).status == "cancelled"
    assert store.get_run(first).finished_at is not None
    assert store.claim_next_run(worker_pid=os.getpid()) == second
    assert store.claim_next_run(worker_pid=os.getpid()) == third
    assert store.claim_next_run(worker_pid=os.getpid()) is None
    running = store.get_run(second)
    assert running.status == "running" and running.worker_pid == os.getpid() and running.started_at is not None
    assert [record.id for record in store.list_runs(statuses=("running",))] == [third, second]
    assert len(store.list_runs(limit=1)) == 1

    # Finishing is conditional: only a running run of that worker moves, and only once.
    assert not store.finish_run(second, "failed", "x", worker_pid=os.getpid() + 1)
    assert store.finish_run(second, "done", worker_pid=os.getpid())
    assert not store.finish_run(second, "failed", "too late")
    assert store.get_run(second).status == "done" and store.get_run(second).error is None
    with pytest.raises(ValueError, match="unknown run status"):
        store.set_status(third, "paused")
    store.set_status(third, "failed", error="boom")
    assert store.get_run(third).error == "boom" and store.get_run(third).is_finished


def test_events_become_metrics_validation_progress_and_messages(store):
    run_id = store.create_run(tiny_config())
    store.add_events(run_id, [
        {"event": "warning", "message": "few examples in class x"},
        {"event": "step", "phase": "inner", "step": 1, "inner_step": 1, "support_loss": 1.5, "query_loss": 1.7},
        {"event": "step", "phase": "inner", "step": 1, "inner_step": 2, "support_loss": 1.1, "query_loss": 1.4},
        {"event": "step", "phase": "train", "step": 1, "support_loss": 1.2, "query_loss": 1.3,
         "query_accuracy": 0.4, "lr": 1e-3, "elapsed": 0.5, "support_accuracy": np.float32(0.75)},
        {"event": "progress", "stage": "train", "done": 1, "total": 2},
    ])
    store.add_events(run_id, [
        {"event": "step", "phase": "train", "step": 2, "support_loss": 0.9, "query_loss": 1.0,
         "query_accuracy": 0.6, "lr": 1e-3, "elapsed": 0.9},
        {"event": "validation", "step": 2, "query_accuracy": 0.55, "ci95": 0.1},
        {"event": "progress", "stage": "evaluate", "done": 3, "total": 10},
        {"event": "evaluation", "mean_accuracy": 0.5, "ci95": 0.05, "episodes": 10, "mean_query_loss": 1.2, "seconds": 2.0},
    ])
    metrics = store.metrics(run_id)
    assert list(metrics.columns[:8]) == ["step", "phase", "inner_step", "support_loss", "query_loss",
                                         "query_accuracy", "lr", "elapsed"]
    assert list(metrics["phase"]) == ["inner", "inner", "train", "train"]
    assert list(metrics["step"]) == [1, 1, 1, 2]
    assert metrics["inner_step"].iloc[:2].tolist() == [1.0, 2.0] and metrics["inner_step"].iloc[2:].isna().all()
    assert metrics["query_loss"].tolist() == pytest.approx([1.7, 1.4, 1.3, 1.0])
    assert metrics["query_accuracy"].iloc[:2].isna().all()
    assert metrics["support_accuracy"].iloc[2] == pytest.approx(0.75) and np.isnan(metrics["support_accuracy"].iloc[3])
    train = store.metrics(run_id, phases=("train",))
    assert train["step"].tolist() == [1, 2] and train["lr"].tolist() == pytest.approx([1e-3, 1e-3])

    validation = store.validation(run_id)
    assert validation.to_dict("records") == [{"step": 2, "query_accuracy": 0.55, "ci95": 0.1}]
    record = store.get_run(run_id)
    assert record.progress == {"stage": "evaluate", "done": 3, "total": 10}
    assert record.evaluation["mean_accuracy"] == 0.5 and record.evaluation["episodes"] == 10
    assert store.warnings(run_id) == ["few examples in class x"]
    assert store.metrics(store.create_run(tiny_config())).empty


def test_a_malformed_event_is_kept_as_a_message_and_does_not_block_the_batch(store):
    run_id = store.create_run(tiny_config())
    store.add_events(run_id, [
        {"event": "attention", "step": 1, "tokens": ["a"], "attentions": [[1.0, 2.0], [3.0]]},
        {"event": "step", "phase": "train", "step": 1, "query_loss": 0.5},
    ])
    assert store.metrics(run_id)["query_loss"].tolist() == [0.5]
    assert store.attention_snapshots(run_id) == []
    (problem,) = store.messages(run_id, "invalid_event")
    assert problem["event_kind"] == "attention" and "ValueError" in problem["error"]


def test_concurrent_claims_take_each_queued_run_exactly_once(store):
    created = {store.create_run(tiny_config(seed=seed)) for seed in range(24)}
    claimed: list[str] = []

    def claim_all(pid: int) -> None:
        while (run_id := store.claim_next_run(pid)) is not None:
            claimed.append(run_id)

    threads = [threading.Thread(target=claim_all, args=(os.getpid(),)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == sorted(created)


def test_attention_snapshots_round_trip_compactly(store, tiny_encoder):
    maps = tiny_encoder.attention_maps("book a flight to paris tomorrow")
    run_id = store.create_run(tiny_config())
    event = {"event": "attention", "step": 7, "tokens": maps.tokens, "attentions": maps.attentions.numpy().round(4).tolist()}
    store.add_events(run_id, [event])
    (snapshot,) = store.attention_snapshots(run_id)
    layers, heads, length = 1, 2, len(maps.tokens)
    assert snapshot.step == 7 and snapshot.tokens == maps.tokens
    assert snapshot.attentions.shape == (layers, heads, length, length)
    assert np.allclose(snapshot.attentions.sum(-1), 1.0, atol=1e-2)
    assert np.allclose(snapshot.attentions, maps.attentions.numpy(), atol=2e-3)
    with sqlite3.connect(store.db_path) as connection:
        (size,) = connection.execute("SELECT length(data) FROM attention").fetchone()
    assert size == 2 * layers * heads * length * length  # float16: two bytes per weight


def test_evaluation_per_episode_and_delete(store):
    run_id = store.create_run(tiny_config())
    store.add_events(run_id, [{"event": "step", "phase": "train", "step": 1, "query_loss": 1.0}])
    per_episode = [{"episode": index, "query_accuracy": accuracy, "query_loss": 1.0 - accuracy}
                   for index, accuracy in enumerate([0.5, 1.0, 0.75])]
    store.set_evaluation(run_id, {"mean_accuracy": 0.75, "ci95": 0.23, "episodes": 3,
                                  "mean_query_loss": 0.25, "seconds": 0.1}, per_episode)
    assert store.get_run(run_id).evaluation["ci95"] == 0.23
    episodes = store.episode_results(run_id)
    assert episodes["episode"].tolist() == [0, 1, 2]
    assert episodes["query_accuracy"].tolist() == [0.5, 1.0, 0.75]

    (store.checkpoint_dir(run_id)).mkdir(parents=True)
    (store.checkpoint_dir(run_id) / "model.safetensors").write_bytes(b"weights")
    kept = store.create_run(tiny_config())
    store.delete_run(run_id)
    assert not store.run_dir(run_id).exists()
    with pytest.raises(RunNotFound):
        store.get_run(run_id)
    assert store.metrics(run_id).empty and store.episode_results(run_id).empty
    assert [record.id for record in store.list_runs()] == [kept] and store.run_dir(kept).is_dir()
    with pytest.raises(RunNotFound):
        store.add_events(run_id, [{"event": "step", "step": 2}])


def test_event_writer_flushes_in_the_background_and_stop_check_sees_cancel(store):
    run_id = store.create_run(tiny_config())
    writer = EventWriter(store, run_id, interval=0.05)
    writer({"event": "step", "phase": "train", "step": 1, "query_loss": 2.0})
    deadline = time.monotonic() + 5
    while store.metrics(run_id).empty and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(store.metrics(run_id)) == 1  # written before close: survives a killed worker
    stop = StopCheck(store, run_id, writer, interval=0.0)
    assert not stop()
    store.request_cancel(run_id)
    assert stop() and stop.reason == "cancelled"
    writer.close()
    store.delete_run(run_id)
    writer = EventWriter(store, run_id)
    writer({"event": "step", "step": 1})
    writer.close()  # a run deleted under a writer is noticed, not raised
    assert writer.run_deleted


def test_execute_run_records_a_whole_run_in_process(store):
    from metanlp.engine.checkpoint import load_method

    config = tiny_config(attention_text="book a flight to paris", attention_every=2, eval_every=2, val_episodes=2)
    run_id = store.create_run(config, name="cli run", claimed_by=os.getpid())
    seen: list[dict] = []
    assert execute_run(store, run_id, on_event=seen.append) == "done"
    assert [event["step"] for event in seen if event["event"] == "step"] == [1, 2, 3]
    record = store.get_run(run_id)
    assert record.status == "done" and record.error is None
    assert record.started_at <= record.finished_at
    assert record.progress == {"stage": "evaluate", "done": 3, "total": 3}
    metrics = store.metrics(run_id)
    assert metrics.loc[metrics["phase"] == "train", "step"].tolist() == [1, 2, 3]
    assert metrics[["support_loss", "query_loss", "query_accuracy", "lr", "elapsed"]].notna().all().all()
    assert store.validation(run_id)["step"].tolist() == [2]
    assert [snapshot.step for snapshot in store.attention_snapshots(run_id)] == [0, 2, 3]
    assert record.evaluation["episodes"] == 3 and 0.0 <= record.evaluation["mean_accuracy"] <= 1.0
    episodes = store.episode_results(run_id)
    assert len(episodes) == 3
    assert episodes["query_accuracy"].mean() == pytest.approx(record.evaluation["mean_accuracy"])
    method = load_method(store.checkpoint_dir(run_id))
    assert method.card.name == "protonet"

    queued = store.create_run(tiny_config(train_steps=1, eval_episodes=1))
    assert execute_run(store, queued) == "done"  # a queued run is claimed first
    assert store.get_run(queued).worker_pid == os.getpid()


def test_execute_run_turns_errors_into_failed_runs_with_one_line_messages(store):
    missing = store.create_run(tiny_config(dataset="no-such-dataset"), claimed_by=os.getpid())
    assert execute_run(store, missing) == "failed"
    record = store.get_run(missing)
    assert "no dataset named 'no-such-dataset'" in record.error and "\n" not in record.error
    assert "DataError" in record.traceback

    broken = store.create_run(tiny_config(encoder_options={"not_an_option": 1}), claimed_by=os.getpid())
    assert execute_run(store, broken) == "failed"
    record = store.get_run(broken)
    assert record.error.startswith("TypeError:") and "not_an_option" in record.error
    assert "Traceback" in record.traceback
    assert not store.checkpoint_dir(broken).exists()


def test_opening_an_existing_store_takes_no_write_lock(store):
    # The dashboard, its workers and the CLI open the store all the time: while one of them is
    # writing, another must still open and read at once instead of waiting for the write lock.
    run_id = store.create_run(tiny_config())
    writer = sqlite3.connect(store.db_path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        reopened = RunStore(store.root, timeout=0.5)
        assert [record.id for record in reopened.list_runs()] == [run_id]
        assert time.monotonic() - started < 0.5
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_a_new_run_never_takes_over_a_folder_left_without_a_row(store, monkeypatch):
    import metanlp.runs.queue as queue_module

    stray = store.run_dir("0123456789ab")
    stray.mkdir(parents=True)
    (stray / "config.json").write_text("{}", encoding="utf-8")
    ids = iter(["0123456789ab", "ba9876543210"])
    monkeypatch.setattr(queue_module.secrets, "token_hex", lambda size: next(ids))
    assert store.create_run(tiny_config()) == "ba9876543210"
    assert (stray / "config.json").read_text(encoding="utf-8") == "{}"
