"""Scenarios of the Ray backend, run by tests/test_ray_backend.py inside a network namespace with loopback only.

Ray binds to the machine's network address whatever it is told; in a namespace whose only
interface is ``lo`` it can only use 127.0.0.1, so no packet of the test cluster leaves loopback.
Prints one JSON object with what each scenario measured.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = str(ROOT)  # Ray's worker processes import metanlp from here

import ray  # noqa: E402

from metanlp.engine import RunConfig  # noqa: E402
from metanlp.runs import RunStore, execute_run  # noqa: E402
from metanlp.runs.manager import RunManager  # noqa: E402

TINY = {"num_layers": 1, "hidden_size": 32, "num_heads": 2, "feedforward_size": 64, "max_length": 24}


def config(**changes) -> RunConfig:
    values = dict(method="protonet", dataset="clinc150", n_way=3, k_shot=1, n_query=2, train_steps=6, eval_episodes=3,
                  encoder="scratch", encoder_options=TINY, device="cpu", seed=3)
    return RunConfig(**(values | changes))


def wait(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def main() -> None:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    store = RunStore(Path(tempfile.mkdtemp()) / "runs")
    report: dict = {"gcs_address": ray.get_runtime_context().gcs_address}

    local = store.create_run(config(), "local", claimed_by=os.getpid())
    execute_run(store, local)
    with RunManager(store, max_concurrent=2, preload=(), warm=False, backend="ray") as manager:
        remote = manager.submit(config(), name="ray")
        wait(lambda: store.get_run(remote).status not in ("queued", "running"), 300)
        columns = ["step", "support_loss", "query_loss", "query_accuracy"]
        report["same_run"] = {
            "statuses": [store.get_run(local).status, store.get_run(remote).status],
            "local": store.metrics(local, phases=("train",))[columns].values.tolist(),
            "ray": store.metrics(remote, phases=("train",))[columns].values.tolist(),
            "accuracy": [store.get_run(local).evaluation["mean_accuracy"],
                         store.get_run(remote).evaluation["mean_accuracy"]],
            "checkpoint_loads": _loads(store, remote),
        }

        upload = Path(tempfile.mkdtemp()) / "intents.csv"  # exists only on this side: it must travel with the task
        upload.write_text("text,label\n" + "".join(f"sentence {i} about topic {c},topic{c}\n"
                                                   for c in range(6) for i in range(10)))
        user = manager.submit(config(dataset="user", data_file=str(upload), n_way=2, eval_episodes=2,
                                     attention_text="sentence one about topic two", attention_every=3), name="user")
        wait(lambda: store.get_run(user).status not in ("queued", "running"), 300)
        report["user_file"] = {"status": store.get_run(user).status, "error": store.get_run(user).error,
                               "snapshots": [snapshot.step for snapshot in store.attention_snapshots(user)]}

        long_run = manager.submit(config(train_steps=1_000_000, eval_episodes=0), name="to cancel")
        wait(lambda: len(store.metrics(long_run)) > 0, 300)
        asked = time.monotonic()
        manager.cancel(long_run)
        wait(lambda: store.get_run(long_run).status == "cancelled", 30)
        report["cancel"] = {"status": store.get_run(long_run).status, "seconds": time.monotonic() - asked}

        doomed = manager.submit(config(train_steps=1_000_000, eval_episodes=0), name="to kill")
        wait(lambda: len(store.metrics(doomed)) >= 2 and doomed in manager._ray.worker_pids, 300)
        steps_before = len(store.metrics(doomed))
        after = manager.submit(config(), name="queued after")
        os.kill(manager._ray.worker_pids[doomed], signal.SIGKILL)
        wait(lambda: store.get_run(doomed).status == "failed", 60)
        wait(lambda: store.get_run(after).status not in ("queued", "running"), 300)
        killed = store.get_run(doomed)
        report["killed"] = {"status": killed.status, "error": killed.error, "steps_before": steps_before,
                            "steps_kept": len(store.metrics(doomed)), "next_run": store.get_run(after).status}
    report["bench"] = bench_twice()
    report["sweep"] = sweep_on_ray()
    print(json.dumps(report))


def bench_twice() -> dict:
    """A small bench on Ray, then the same command again: the second reuses every finished cell."""
    from metanlp.bench import bench_results, run_bench
    from tests.test_bench import tiny_settings

    store = RunStore(Path(tempfile.mkdtemp()) / "runs")
    settings = tiny_settings(seeds=2)
    with RunManager(store, max_concurrent=2, preload=(), warm=False, backend="ray") as manager:
        first = run_bench(settings, store, executor=manager, in_flight=2)
        second = run_bench(settings, store, executor=manager, in_flight=2)
    local_store = RunStore(Path(tempfile.mkdtemp()) / "runs")
    run_bench(settings, local_store)
    on_ray, here = bench_results(store), bench_results(local_store)
    return {"first": [len(first.computed), len(first.reused), len(first.single_run), len(first.failed)],
            "second": [len(second.computed), len(second.reused), len(second.single_run), len(second.failed)],
            "accuracy_ray": sorted(on_ray["accuracy"].round(6)), "accuracy_local": sorted(here["accuracy"].round(6))}


def sweep_on_ray() -> dict:
    """A few trials, two at a time on Ray: every trial ends and the best one is tested once."""
    import dataclasses

    from optuna.trial import TrialState

    from metanlp.sweeps.runner import run_sweep
    from tests.test_sweeps import spec

    store = RunStore(Path(tempfile.mkdtemp()) / "runs")
    with RunManager(store, max_concurrent=2, preload=(), warm=False, backend="ray") as manager:
        outcome = run_sweep(dataclasses.replace(spec("on-ray"), trials=4, parallel=2), store, manager, poll=0.2)
    states = [trial.state for trial in outcome.study.trials]
    overlapping = _overlapping([store.get_run(run_id) for run_id in outcome.trial_runs.values()])
    return {"trials": len(states), "ended": sum(state in (TrialState.COMPLETE, TrialState.PRUNED) for state in states),
            "best_status": store.get_run(outcome.best_run).status if outcome.best_run else None,
            "overlapping": overlapping}


def _overlapping(records) -> bool:
    """Did two trial runs run at the same time (the sweep's parallelism on Ray)?"""
    spans = sorted((record.started_at, record.finished_at) for record in records if record.started_at)
    return any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:], strict=False))


def _loads(store: RunStore, run_id: str) -> bool:
    from metanlp.engine.checkpoint import load_method

    load_method(store.checkpoint_dir(run_id))
    return True


if __name__ == "__main__":
    main()
