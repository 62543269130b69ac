"""The Ray backend on a small local cluster (inside a loopback-only network namespace, see ray_scenarios.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def namespace_available() -> str | None:
    """Why a loopback-only network namespace cannot be made here (None when it can)."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare and ip (util-linux, iproute2) are needed to keep the test cluster on loopback"
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    return None if probe.returncode == 0 else "this user may not create network namespaces (needs root)"


@pytest.fixture(scope="module")
def scenarios() -> dict:
    pytest.importorskip("ray", reason="ray is installed by requirements-cluster.txt (scripts/setup-tests.sh)")
    problem = namespace_available()
    if problem:
        pytest.skip(problem)
    command = f"ip link set lo up && {sys.executable} {ROOT / 'tests' / 'ray_scenarios.py'}"
    done = subprocess.run(["unshare", "-n", "sh", "-c", command], capture_output=True, text=True, timeout=900,
                          cwd=ROOT, env={**os.environ, "RAY_ADDRESS": ""})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_cluster_stays_on_loopback(scenarios):
    assert scenarios["gcs_address"].startswith("127.0.0.1:")


def test_a_run_on_ray_records_the_same_metrics_as_the_same_run_locally(scenarios):
    same = scenarios["same_run"]
    assert same["statuses"] == ["done", "done"] and len(same["ray"]) == 6
    assert np.allclose(same["ray"], same["local"], atol=1e-5)  # same seed: same steps, same losses (float noise)
    assert same["accuracy"][0] == pytest.approx(same["accuracy"][1]) and same["checkpoint_loads"]


def test_an_uploaded_file_travels_with_the_task_and_attention_streams_back(scenarios):
    user = scenarios["user_file"]
    assert user["status"] == "done", user["error"]
    assert user["snapshots"] == [0, 3, 6]  # before training, every 3 steps, and the last


def test_cancel_on_ray_stops_the_run_within_two_seconds(scenarios):
    assert scenarios["cancel"]["status"] == "cancelled" and scenarios["cancel"]["seconds"] < 2.0


def test_a_killed_ray_worker_fails_its_run_keeps_its_steps_and_the_queue_goes_on(scenarios):
    killed = scenarios["killed"]
    assert killed["status"] == "failed" and "Ray worker running this run was lost" in killed["error"]
    assert killed["steps_kept"] >= killed["steps_before"] >= 2
    assert killed["next_run"] == "done"


def test_a_bench_on_ray_reuses_its_finished_cells_and_scores_as_locally(scenarios):
    bench = scenarios["bench"]
    # [computed, reused, seeds skipped (not meta-trained), failed]: ProtoNet's 2 seeds and fine-tuning's first
    assert bench["first"] == [3, 0, 1, 0] and bench["second"] == [0, 3, 1, 0]
    assert bench["accuracy_ray"] == bench["accuracy_local"]  # same cells, same episodes, same numbers


def test_a_sweep_runs_its_trials_concurrently_on_ray(scenarios):
    sweep = scenarios["sweep"]
    assert sweep["trials"] == sweep["ended"] == 4 and sweep["best_status"] == "done" and sweep["overlapping"]


def test_the_backend_is_chosen_by_environment_and_shown_on_the_home_page(runs_dir, monkeypatch):
    from metanlp.engine.config import ConfigError
    from metanlp.runs.manager import default_backend
    from tests.test_pages import assert_no_exception, page_test

    monkeypatch.delenv("METANLP_BACKEND", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert default_backend() == "local"
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert default_backend() == "ray"
    monkeypatch.setenv("METANLP_BACKEND", "local")
    assert default_backend() == "local"
    monkeypatch.setenv("METANLP_BACKEND", "slurm")
    with pytest.raises(ConfigError, match="local, ray"):
        default_backend()
    monkeypatch.delenv("METANLP_BACKEND")
    monkeypatch.delenv("RAY_ADDRESS")
    app = page_test("home")
    app.run()
    assert_no_exception(app)
    assert any("Runs execute in local worker processes" in caption.value for caption in app.caption)
