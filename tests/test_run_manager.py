"""The run manager with real worker processes: queueing, failures, cancel, SIGKILL and app restarts.

One manager (one spawned worker, which imports torch once) serves the tests in order; the last
test restarts the "app" with a new store and manager on the same folder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from metanlp.data.errors import DataError
from metanlp.engine import ConfigError, RunConfig
from metanlp.runs.manager import RunManager
from metanlp.runs.store import RunStore
from tests.conftest import TINY_ENCODER

LONG_RUN_STEPS = 100_000  # far more than any test waits for: such a run only ends when cancelled or killed


def tiny_config(**changes) -> RunConfig:
    settings = dict(
        method="protonet", dataset="clinc150", n_way=3, k_shot=1, n_query=2, train_steps=4,
        eval_episodes=3, encoder="scratch", encoder_options=dict(TINY_ENCODER), device="cpu",
    )
    settings.update(changes)
    return RunConfig(**settings)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def finished(store: RunStore, run_id: str) -> bool:
    return store.get_run(run_id).is_finished


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def manager(runs_root):
    manager = RunManager(RunStore(runs_root), max_concurrent=1, preload=())
    yield manager
    manager.shutdown()


def test_submit_checks_the_config_before_queueing(manager):
    with pytest.raises(ConfigError, match="unknown method"):
        manager.submit(tiny_config(method="no-such-method"))
    with pytest.raises(ConfigError, match="n_way"):
        manager.submit(tiny_config(n_way=1))
    with pytest.raises(DataError, match="no dataset named"):
        manager.submit(tiny_config(dataset="no-such-dataset"))
    assert manager.store.list_runs() == []


def test_a_failing_run_is_failed_with_a_readable_error_and_the_worker_goes_on(manager, tmp_path):
    one_class = tmp_path / "one_class.csv"
    one_class.write_text("text,label\nhello there,greeting\nhi,greeting\n", encoding="utf-8")
    failing = manager.submit(tiny_config(dataset="user", data_file=str(one_class)), name="bad data")
    working = manager.submit(tiny_config(train_steps=1, eval_episodes=1))
    wait_for(lambda: finished(manager.store, working), 60, "the run queued behind the failing one")
    failed = manager.store.get_run(failing)
    assert failed.status == "failed"
    assert "only one class" in failed.error and "\n" not in failed.error
    assert "DataError" in failed.traceback
    done = manager.store.get_run(working)
    assert done.status == "done" and done.worker_pid == failed.worker_pid  # same warm worker


def test_queued_runs_run_one_after_another_with_concurrency_one(manager):
    first = manager.submit(tiny_config(seed=1), name="first")
    second = manager.submit(tiny_config(seed=2), name="second")
    wait_for(lambda: finished(manager.store, first) and finished(manager.store, second), 60, "two runs")
    one, two = manager.store.get_run(first), manager.store.get_run(second)
    assert one.status == two.status == "done"
    assert two.started_at >= one.finished_at
    for record in (one, two):
        metrics = manager.store.metrics(record.id)
        assert metrics["step"].tolist() == [1, 2, 3, 4]
        assert record.evaluation["episodes"] == 3 and len(manager.store.episode_results(record.id)) == 3
        assert (manager.store.checkpoint_dir(record.id) / "model.safetensors").is_file()


def test_cancel_takes_effect_within_two_seconds(manager):
    long_run = manager.submit(tiny_config(train_steps=LONG_RUN_STEPS), name="long")
    queued = manager.submit(tiny_config(train_steps=LONG_RUN_STEPS), name="never starts")
    wait_for(lambda: len(manager.store.metrics(long_run)) >= 3, 60, "the long run's first steps")

    manager.cancel(queued)
    record = manager.store.get_run(queued)
    assert record.status == "cancelled" and record.started_at is None

    requested = time.monotonic()
    manager.cancel(long_run)
    wait_for(lambda: finished(manager.store, long_run), 5, "the cancel")
    assert time.monotonic() - requested < 2.0
    record = manager.store.get_run(long_run)
    assert record.status == "cancelled" and record.error is None
    assert 3 <= len(manager.store.metrics(long_run)) < LONG_RUN_STEPS
    assert manager.store.get_run(queued).started_at is None  # the worker never took it

    manager.delete(long_run)
    assert not manager.store.run_dir(long_run).exists()
    assert long_run not in [record.id for record in manager.store.list_runs()]


def test_a_killed_worker_fails_its_run_and_keeps_its_metrics(manager):
    run_id = manager.submit(tiny_config(train_steps=LONG_RUN_STEPS), name="to be killed")
    wait_for(lambda: len(manager.store.metrics(run_id)) >= 5, 60, "metrics of the run to kill")
    pid = manager.store.get_run(run_id).worker_pid
    written = len(manager.store.metrics(run_id))
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: finished(manager.store, run_id), 5, "the dead worker to be noticed")
    record = manager.store.get_run(run_id)
    assert record.status == "failed"
    assert "-9" in record.error and "SIGKILL" in record.error
    assert len(manager.store.metrics(run_id)) >= written
    wait_for(lambda: any(w.alive and w.pid != pid for w in manager.workers()), 5, "a replacement worker")


def test_a_restarted_app_shows_the_history_and_reruns_nothing(manager, runs_root):
    manager.shutdown()
    before = {record.id: record for record in RunStore(runs_root).list_runs()}
    assert {record.status for record in before.values()} == {"done", "failed", "cancelled"}
    metric_rows = {run_id: len(RunStore(runs_root).metrics(run_id)) for run_id in before}
    assert max(metric_rows.values()) >= 5

    # A run left "running" by a process that no longer exists, and one queued before the restart.
    store = RunStore(runs_root)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = store.create_run(tiny_config(), name="orphan", claimed_by=dead.pid)
    store.add_events(orphan, [{"event": "step", "phase": "train", "step": 1, "query_loss": 1.0}])
    waiting = store.create_run(tiny_config(train_steps=2, eval_episodes=1), name="queued before restart")

    with RunManager(store, max_concurrent=1, preload=(), warm=False) as restarted:
        record = store.get_run(orphan)  # the constructor's first poll already looked
        assert record.status == "failed" and f"pid {dead.pid}" in record.error and "gone" in record.error
        assert len(store.metrics(orphan)) == 1
        wait_for(lambda: finished(store, waiting), 60, "the run queued before the restart")
        assert store.get_run(waiting).status == "done"
        assert restarted.workers()[0].pid == store.get_run(waiting).worker_pid

    after = {record.id: record for record in store.list_runs()}
    assert set(after) == set(before) | {orphan, waiting}
    for run_id, record in before.items():
        again = after[run_id]
        assert (again.status, again.started_at, again.finished_at) == (record.status, record.started_at, record.finished_at)
        assert again.evaluation == record.evaluation
        assert len(store.metrics(run_id)) == metric_rows[run_id]
