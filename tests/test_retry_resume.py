"""A failed, cancelled or interrupted run can be run again as a new run, from scratch or from its checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from metanlp.engine import RunConfig
from metanlp.methods.protonet import ProtoNet
from metanlp.runs import RunStore, execute_run
from metanlp.runs.resume import RetryError, partial_dir, retry_link, retry_run, saved_step
from tests.conftest import TINY_ENCODER

ROOT = Path(__file__).resolve().parents[1]


def config(**changes) -> RunConfig:
    values = dict(method="protonet", dataset="clinc150", n_way=3, k_shot=1, n_query=2, train_steps=60,
                  eval_episodes=2, encoder="scratch", encoder_options=TINY_ENCODER, device="cpu")
    return RunConfig(**(values | changes))


def steps_of(store: RunStore, run_id: str) -> list[int]:
    return [int(step) for step in store.metrics(run_id, phases=("train",))["step"]]


def test_a_run_that_dies_midway_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("METANLP_CHECKPOINT_EVERY", "10")
    store = RunStore(tmp_path / "runs")
    original_step = ProtoNet.train_step
    calls = {"count": 0}

    def crashing_step(self, episode):
        calls["count"] += 1
        if calls["count"] == 37:
            raise RuntimeError("the worker died here")
        return original_step(self, episode)

    monkeypatch.setattr(ProtoNet, "train_step", crashing_step)
    first = store.create_run(config(), claimed_by=os.getpid())
    assert execute_run(store, first) == "failed"
    assert steps_of(store, first) == list(range(1, 37)) and saved_step(store, first) == 30

    saved = load_file(str(partial_dir(store, first) / "model.safetensors"))
    seen_at_start: dict = {}

    def recording_step(self, episode):
        if not seen_at_start:
            seen_at_start.update({key: value.clone() for key, value in self.state_dict().items()})
        return original_step(self, episode)

    monkeypatch.setattr(ProtoNet, "train_step", recording_step)
    second = retry_run(store, first, resume=True, claimed_by=os.getpid())
    assert execute_run(store, second) == "done"
    assert steps_of(store, second) == list(range(31, 61))  # the step count continues from the checkpoint
    for key, value in saved.items():  # it started from the checkpoint's weights, not from a fresh model
        assert torch.equal(seen_at_start[key], value), key
    assert retry_link(store, second) == {"retry_of": first, "resume_from": str(partial_dir(store, first)), "step": 30}
    assert not partial_dir(store, second).exists()  # a finished run keeps only its final checkpoint
    assert store.get_run(first).status == "failed"  # the old run is left as it was

    third = retry_run(store, first, claimed_by=os.getpid())  # a plain retry starts from scratch
    assert execute_run(store, third) == "done" and steps_of(store, third) == list(range(1, 61))


def test_only_finished_runs_that_did_not_succeed_can_be_retried(tmp_path):
    store = RunStore(tmp_path / "runs")
    done = store.create_run(config(train_steps=2), claimed_by=os.getpid())
    assert execute_run(store, done) == "done"
    with pytest.raises(RetryError, match="only failed or cancelled runs"):
        retry_run(store, done)
    queued = store.create_run(config())
    store.request_cancel(queued)  # cancelled before it started: nothing saved to resume from
    with pytest.raises(RetryError, match="no checkpoint to resume from"):
        retry_run(store, queued, resume=True)
    assert store.get_run(retry_run(store, queued)).status == "queued"


def test_cli_retry_refuses_clearly_and_runs_a_retry(tmp_path):
    store = RunStore(tmp_path / "runs")
    cancelled = store.create_run(config(train_steps=3))
    store.request_cancel(cancelled)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def cli(*arguments):
        return subprocess.run([sys.executable, "-m", "metanlp", "retry", *arguments, "--runs-dir",
                               str(tmp_path / "runs"), "--no-progress"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)

    refused = cli(cancelled, "--resume")
    assert refused.returncode == 2 and "no checkpoint to resume from" in refused.stderr
    assert "Traceback" not in refused.stderr and len(store.list_runs()) == 1  # nothing created
    assert cli("0123456789ab").returncode == 2
    retried = cli(cancelled)
    assert retried.returncode == 0, retried.stderr
    new = [record for record in store.list_runs() if record.id != cancelled]
    assert len(new) == 1 and new[0].status == "done" and retry_link(store, new[0].id) == {"retry_of": cancelled}
