"""Runs are supervised with no browser open: a killed CLI run is marked failed, and a queue left
behind by a stopped dashboard is run, by the runs folder's detached supervisor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from metanlp.engine import RunConfig
from metanlp.runs import RunStore
from metanlp.runs.supervisor import is_supervised
from tests.conftest import TINY_ENCODER

ROOT = Path(__file__).resolve().parents[1]


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


@pytest.fixture()
def supervised_env(tmp_path):
    env = {**os.environ, "METANLP_SUPERVISOR": "1", "METANLP_SUPERVISOR_IDLE_SECONDS": "3",
           "METANLP_PRELOAD_ENCODERS": "", "METANLP_MAX_CONCURRENT": "1", "PYTHONPATH": str(ROOT)}
    yield env
    folder = tmp_path / "runs"
    if folder.exists():  # never leave a supervisor behind
        wait_for(lambda: not is_supervised(folder), 60, "the supervisor to exit")


def test_a_cli_run_killed_with_sigkill_is_marked_failed_without_a_browser(tmp_path, supervised_env):
    runs = tmp_path / "runs"
    command = [sys.executable, "-m", "metanlp", "train", "--method", "protonet", "--dataset", "clinc150",
               "--n-way", "3", "--k-shot", "1", "--n-query", "2", "--steps", "100000", "--episodes", "2",
               "--encoder", "scratch", "--runs-dir", str(runs), "--no-progress"]
    command += [part for key, value in TINY_ENCODER.items() for part in ("--encoder-option", f"{key}={value}")]
    cli = subprocess.Popen(command, cwd=tmp_path, env=supervised_env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        store = RunStore(runs)
        wait_for(lambda: runs.exists() and any(r.status == "running" for r in store.list_runs()), 120, "the run")
        wait_for(lambda: len(store.metrics(store.list_runs()[0].id)) > 0, 120, "a training step")
        assert is_supervised(runs)
        os.kill(cli.pid, signal.SIGKILL)
        cli.wait()
        killed_at = time.monotonic()
        run = store.list_runs()[0]
        wait_for(lambda: store.get_run(run.id).status == "failed", 10, "the supervisor to mark the run failed")
        assert time.monotonic() - killed_at < 5
        assert "is gone" in store.get_run(run.id).error and len(store.metrics(run.id)) > 0  # metrics kept
    finally:
        cli.kill()


def test_a_queue_left_by_a_stopped_dashboard_runs_without_a_page(tmp_path, supervised_env, monkeypatch):
    """The dashboard's manager hands queued runs to a supervisor when it stops: they finish with no page open."""
    from metanlp.runs.manager import RunManager

    for key in ("METANLP_SUPERVISOR", "METANLP_SUPERVISOR_IDLE_SECONDS", "PYTHONPATH"):
        monkeypatch.setenv(key, supervised_env[key])
    store = RunStore(tmp_path / "runs")
    config = RunConfig(method="protonet", dataset="clinc150", n_way=3, k_shot=1, n_query=2, train_steps=2,
                       eval_episodes=2, encoder="scratch", encoder_options=TINY_ENCODER, device="cpu")
    manager = RunManager(store, max_concurrent=1, preload=(), warm=False, monitor_seconds=None)
    manager.shutdown()  # the app stops before any worker took the run (queued below, after the workers are gone)
    queued = store.create_run(config, "left in the queue")
    RunManager(store, max_concurrent=1, preload=(), warm=False, monitor_seconds=None).shutdown()
    wait_for(lambda: store.get_run(queued).status == "done", 180, "the supervisor to run the queued run")
