"""The bench on Ray against the local backend, side by side in one run, and each backend's dispatch overhead.

1. The same bench cells twice, each into a fresh run store: in this process (the local bench) and
   as runs on a local Ray cluster with ``--workers`` worker processes (``bench --backend ray``).
   Wall time of each and their ratio.
2. Dispatch overhead: seconds from queuing a small run to its first metric event in the store,
   through the local backend's warm worker processes and through Ray (median of ``--repeats``).

A local Ray cluster binds to the machine's network address, so this study starts one only where
the loopback interface is the only one, i.e. inside a network namespace:

    unshare -n sh -c 'ip link set lo up && python -m metanlp bench ray-speedup --report docs/results.md'

(or give ``RAY_ADDRESS`` of a cluster you started yourself).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

from metanlp.bench.machine import machine_description
from metanlp.bench.plan import BenchSettings
from metanlp.bench.runner import run_bench
from metanlp.bench.studies import Study, register_study
from metanlp.bench.studies._common import command_line, write_section
from metanlp.engine import RunConfig
from metanlp.engine.config import ConfigError
from metanlp.runs import RunStore
from metanlp.runs.processes import pythonpath_with_package

NAME = "ray-speedup"
DESCRIPTION = "the bench on a local Ray cluster vs the local backend, and queue-to-first-metric overhead of each"
TINY = {"num_layers": 1, "hidden_size": 64, "num_heads": 2, "feedforward_size": 128, "max_length": 32}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=2, help="Ray worker processes (cells at once)")
    parser.add_argument("--methods", default="protonet,matching,relation,maml", help="comma-separated methods")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=100, help="meta-training steps per cell")
    parser.add_argument("--episodes", type=int, default=100, help="test episodes per cell")
    parser.add_argument("--repeats", type=int, default=5, help="runs timed for the dispatch overhead")
    parser.add_argument("--report", default="", help="also write the tables as the 'ray-speedup' section of this file")


def loopback_only() -> bool:
    return {name for _, name in socket.if_nameindex()} <= {"lo"}


def settings(args: argparse.Namespace) -> BenchSettings:
    return BenchSettings(
        methods=tuple(name.strip() for name in args.methods.split(",") if name.strip()), datasets=("clinc150",),
        shots=(1,), episodes=args.episodes, train_steps=args.steps, seeds=args.seeds, encoder="scratch",
        encoder_options=TINY, device="cpu",
    )


def time_bench(bench: BenchSettings, manager=None, workers: int = 1) -> tuple[float, int]:
    store = manager.store if manager else RunStore(Path(tempfile.mkdtemp(prefix="metanlp-speedup-")) / "runs")
    started = time.perf_counter()
    report = run_bench(bench, store, executor=manager, in_flight=workers) if manager else run_bench(bench, store)
    if report.failed:
        raise RuntimeError(f"{len(report.failed)} cells failed: {report.failed[0][1]}")
    return time.perf_counter() - started, len(report.computed)


def first_metric_seconds(backend: str, repeats: int, workers: int) -> list[float]:
    """Queue → first step event in the store, for small runs through the given backend's manager."""
    from metanlp.runs.manager import RunManager

    store = RunStore(Path(tempfile.mkdtemp(prefix="metanlp-dispatch-")) / "runs")
    config = RunConfig(method="protonet", dataset="clinc150", n_way=3, k_shot=1, n_query=2, train_steps=3,
                       eval_episodes=1, encoder="scratch", encoder_options=TINY, device="cpu")
    seconds = []
    with RunManager(store, max_concurrent=workers, preload=(), backend=backend) as manager:
        manager.wait_until_ready(timeout=300)
        warm = manager.submit(config)  # the first run of a fresh worker pays imports and loading; not timed
        _wait(lambda: store.get_run(warm).status not in ("queued", "running"))
        for _ in range(repeats):
            queued = time.perf_counter()
            run_id = manager.submit(config)
            _wait(lambda run_id=run_id: len(store.metrics(run_id)) > 0)
            seconds.append(time.perf_counter() - queued)
            _wait(lambda run_id=run_id: store.get_run(run_id).status not in ("queued", "running"))
    return seconds


def _wait(condition, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("a run did not get there in time")
        time.sleep(0.02)


def run(args: argparse.Namespace) -> int:
    import ray

    from metanlp.runs.manager import RunManager

    if not os.environ.get("RAY_ADDRESS") and not loopback_only():
        raise ConfigError("a local Ray cluster would listen on this machine's network address: run this study in a "
                          "loopback-only namespace (unshare -n sh -c 'ip link set lo up && python -m metanlp bench "
                          "ray-speedup'), or set RAY_ADDRESS to a cluster you started")
    bench = settings(args)
    local_seconds, cells = time_bench(bench)
    os.environ["PYTHONPATH"] = pythonpath_with_package()  # Ray's workers import metanlp from here
    address = os.environ.get("RAY_ADDRESS") or None
    ray.init(address=address, num_cpus=None if address else args.workers, include_dashboard=False,
             log_to_driver=False)  # started before timing: cluster start-up is not the bench's time
    with RunManager(RunStore(Path(tempfile.mkdtemp()) / "runs"), max_concurrent=args.workers, backend="ray") as manager:
        ray_seconds, ray_cells = time_bench(bench, manager, args.workers)
    overhead = {backend: first_metric_seconds(backend, args.repeats, 1) for backend in ("local", "ray")}
    table = markdown(args, cells, local_seconds, ray_seconds, overhead)
    print(table)
    if args.report:
        write_section(args.report, "ray-speedup", "Scale-out: the bench on Ray vs local (issue 12)", table)
    return 0


def markdown(args: argparse.Namespace, cells: int, local_seconds: float, ray_seconds: float,
             overhead: dict[str, list[float]]) -> str:
    def spread(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"

    return "\n".join([
        f"Produced by `{command_line(NAME, args, add_arguments)}` in a loopback-only network namespace. "
        f"Machine: {machine_description()}. The same {cells} bench cells (methods {args.methods}; CLINC150 5-way "
        f"1-shot; from-scratch encoder, 1 layer, d 64; {args.steps} meta-training steps; {args.episodes} test "
        f"episodes; {args.seeds} seeds), each into a fresh store: locally in one process (torch's threads), and on "
        f"a local Ray cluster with {args.workers} workers (one cell per worker, 1 CPU each). One run each, so the "
        "ratio carries the noise of the moment (10–50% here).",
        "",
        "| backend | wall time (s) | cells | speed-up |",
        "|---|---|---|---|",
        f"| local (in-process) | {local_seconds:.1f} | {cells} | 1.00× |",
        f"| Ray, {args.workers} workers | {ray_seconds:.1f} | {cells} | **{local_seconds / ray_seconds:.2f}×** |",
        "",
        f"Dispatch overhead, queue → first metric event in the store, median (min–max) of {args.repeats} small runs "
        "after one warm-up run: local backend (a warm worker process) "
        f"{spread(overhead['local'])} s; Ray {spread(overhead['ray'])} s.",
    ])


STUDY = register_study(Study(NAME, DESCRIPTION, add_arguments, run, __doc__))
