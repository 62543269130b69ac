"""Shared fixtures: small real episodes and a tiny from-scratch encoder keep tests fast."""

from __future__ import annotations

import os

import pytest
import torch

# One thread per process: the browser test runs a server and a worker beside pytest on 2 cores.
torch.set_num_threads(int(os.environ.get("METANLP_TEST_THREADS", "1")))
# No detached supervisor processes outliving the tests; tests/test_supervisor.py turns it on where it is the subject.
os.environ["METANLP_SUPERVISOR"] = "0"

TINY_ENCODER = {"num_layers": 1, "hidden_size": 32, "num_heads": 2, "feedforward_size": 64, "max_length": 24}


@pytest.fixture()
def tiny_encoder():
    from metanlp.encoders import build_encoder

    torch.manual_seed(0)
    return build_encoder("scratch", **TINY_ENCODER)


@pytest.fixture(scope="session")
def clinc_dataset():
    from metanlp.data.registry import load_dataset

    return load_dataset("clinc150")


@pytest.fixture()
def clinc_episodes(clinc_dataset):
    """Three 3-way 2-shot episodes with 3 queries per class from CLINC150's meta-train classes."""
    from metanlp.data.episodes import EpisodeSampler
    from metanlp.data.registry import examples_for_split

    sampler = EpisodeSampler.from_examples(examples_for_split(clinc_dataset, "train"), 3, 2, 3, seed=0)
    return sampler.take(3)


@pytest.fixture()
def runs_dir(tmp_path, monkeypatch):
    """A temporary runs folder for dashboard pages; the run managers they start are shut down after."""
    from metanlp.dashboard import state

    folder = tmp_path / "runs"
    monkeypatch.setenv("METANLP_RUNS_DIR", str(folder))
    monkeypatch.setenv("METANLP_PRELOAD_ENCODERS", "")
    monkeypatch.setenv("METANLP_MAX_CONCURRENT", "1")
    yield folder
    state.release_run_managers()
