"""Cancel is prompt even inside a long step, and one run limit counts dashboard and CLI runs alike."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from metanlp.engine import RunConfig
from metanlp.engine.training import RunCancelled
from metanlp.methods.protonet import ProtoNet
from metanlp.runs import RunStore, execute_run
from metanlp.runs.prompt_stop import PromptStop
from tests.conftest import TINY_ENCODER

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(**changes) -> RunConfig:
    values = dict(method="protonet", dataset="clinc150", n_way=3, k_shot=1, n_query=2, train_steps=5,
                  eval_episodes=2, encoder="scratch", encoder_options=TINY_ENCODER, device="cpu")
    return RunConfig(**(values | changes))


def test_a_long_step_does_not_hold_up_a_cancel(tmp_path, monkeypatch):
    """A step that would take 30 s and never asks ``should_stop`` is stopped within 2 s of the request."""
    store = RunStore(tmp_path / "runs")
    step_started = threading.Event()

    def thirty_second_step(self, episode):
        step_started.set()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.01)
        raise AssertionError("the long step was not interrupted")

    monkeypatch.setattr(ProtoNet, "train_step", thirty_second_step)
    run_id = store.create_run(tiny_config(), claimed_by=os.getpid())
    requested_at: list[float] = []

    def cancel_once_the_step_runs() -> None:
        step_started.wait(120)
        requested_at.append(time.monotonic())
        store.request_cancel(run_id)

    canceller = threading.Thread(target=cancel_once_the_step_runs, daemon=True)
    canceller.start()
    status = execute_run(store, run_id)
    stopped_after = time.monotonic() - requested_at[0]
    assert status == "cancelled" and store.get_run(run_id).status == "cancelled"
    assert stopped_after < 2.0, f"cancel took {stopped_after:.1f} s"


def test_prompt_stop_interrupts_its_block_and_nothing_after_it():
    with_stop = PromptStop(lambda: True, poll=0.05, grace=0.05)
    started = time.monotonic()
    try:
        with with_stop:
            while time.monotonic() - started < 10:
                time.sleep(0.01)
        raise AssertionError("the block was not interrupted")
    except RunCancelled:
        assert time.monotonic() - started < 2 and with_stop.interrupted
    quick = PromptStop(lambda: True, poll=0.05, grace=0.2)
    with quick:  # ends before the grace is over: never interrupted, and nothing fires later
        pass
    time.sleep(0.5)
    assert not quick.interrupted


def test_workers_take_no_run_while_the_machine_limit_is_reached(tmp_path):
    store = RunStore(tmp_path / "runs")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        store.create_run(tiny_config(), "a CLI run", claimed_by=holder.pid)
        queued = store.create_run(tiny_config(), "queued")
        assert store.claim_next_run(os.getpid(), max_running=1) is None
        assert store.claim_next_run(os.getpid(), max_running=2) == queued
    finally:
        holder.kill()
        holder.wait()


def test_cli_train_waits_for_a_free_slot_then_runs(tmp_path):
    """With METANLP_MAX_CONCURRENT=1 and a run going, the CLI waits (creating nothing), then runs once it ends."""
    store = RunStore(tmp_path / "runs")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    blocking = store.create_run(tiny_config(), "running elsewhere", claimed_by=holder.pid)
    env = {**os.environ, "METANLP_MAX_CONCURRENT": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "metanlp", "train", "--method", "protonet", "--dataset", "clinc150",
               "--n-way", "3", "--k-shot", "1", "--n-query", "2", "--steps", "2", "--episodes", "2",
               "--encoder", "scratch", "--encoder-option", "num_layers=1", "--encoder-option", "hidden_size=32",
               "--encoder-option", "num_heads=2", "--encoder-option", "feedforward_size=64",
               "--runs-dir", str(tmp_path / "runs"), "--no-progress"]
    cli = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        waiting = cli.stderr.readline()
        while waiting and "waiting for a free run slot" not in waiting:
            waiting = cli.stderr.readline()
        assert "at most 1 at once" in waiting
        time.sleep(1.0)
        assert [record.id for record in store.list_runs()] == [blocking] and cli.poll() is None
        holder.kill()  # the blocking run's process dies: the CLI marks it failed and takes the slot
        holder.wait()
        _, errors = cli.communicate(timeout=300)
        assert cli.returncode == 0, errors
        assert store.get_run(blocking).status == "failed"
        assert len(store.list_runs()) == 2
    finally:
        holder.kill()
        cli.kill()


def test_a_final_status_that_cannot_be_written_is_retried_until_the_store_takes_it(tmp_path, monkeypatch, caplog):
    """A full disk at the end of a run must not leave it ``running``: the worker retries until it is written."""
    from metanlp.runs import worker
    from metanlp.runs.faults import StoreError

    monkeypatch.setattr(worker, "FINAL_STATUS_FIRST_WAIT", 0.01)
    store = RunStore(tmp_path / "runs")
    run_id = store.create_run(tiny_config(train_steps=2), claimed_by=os.getpid())
    real_finish = RunStore.finish_run
    failures = {"left": 3}

    def disk_full_three_times(self, *args, **kwargs):
        if failures["left"]:
            failures["left"] -= 1
            raise StoreError("database or disk is full", "disk_full", self.root, self.root)
        return real_finish(self, *args, **kwargs)

    monkeypatch.setattr(RunStore, "finish_run", disk_full_three_times)
    with caplog.at_level("WARNING", logger="metanlp.runs"):
        assert execute_run(store, run_id) == "done"
    assert failures["left"] == 0 and store.get_run(run_id).status == "done"
    assert "could not be written" in caplog.text and "after 3 retries" in caplog.text
