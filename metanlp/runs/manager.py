"""The run manager: keeps worker processes alive for the dashboard and cleans up after dead ones.

One manager per server process (the dashboard makes it with ``st.cache_resource``). Workers are
started at once, so torch is imported and encoders are loaded before the first submit; each
takes queued runs from the store by itself. A monitor thread calls ``poll`` twice a second, so
runs of dead workers are marked failed and workers are replaced even when no page is open.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import sys
import threading
import time
import types
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from metanlp.data.errors import DataError
from metanlp.data.registry import available_names
from metanlp.data.types import TextDataset
from metanlp.encoders import check_encoder_options
from metanlp.engine.config import ConfigError, RunConfig
from metanlp.methods.options import OptionError, build_options
from metanlp.methods.registry import get_method_class
from metanlp.runs.processes import describe_exit
from metanlp.runs.resume import retry_run
from metanlp.runs.store import FINISHED_STATUSES, RunStore
from metanlp.runs.supervisor import ensure_supervisor, fail_orphaned_runs
from metanlp.runs.worker import SHUTDOWN_MESSAGE, worker_main

log = logging.getLogger("metanlp.runs")

MAX_CONCURRENT_ENV = "METANLP_MAX_CONCURRENT"
BACKEND_ENV = "METANLP_BACKEND"
BACKENDS = ("local", "ray")
MONITOR_SECONDS = 0.5
DELETE_WAIT_SECONDS = 3.0
EARLY_DEATH_SECONDS = 30.0
PRELOAD_ENV = "METANLP_PRELOAD_ENCODERS"  # comma-separated encoder names; empty: preload nothing


def default_preload() -> tuple[str, ...]:
    """Encoders a fresh worker loads while idle: ``$METANLP_PRELOAD_ENCODERS``, else MiniLM (the default encoder)."""
    configured = os.environ.get(PRELOAD_ENV)
    if configured is None:
        return ("minilm",)
    return tuple(name.strip() for name in configured.split(",") if name.strip())


def default_max_concurrent() -> int:
    """``$METANLP_MAX_CONCURRENT``, else 1 on CPU (runs would only share two cores) and 2 with a GPU."""
    configured = os.environ.get(MAX_CONCURRENT_ENV, "").strip()
    if configured:
        try:
            return int(configured)
        except ValueError:
            raise ConfigError(f"{MAX_CONCURRENT_ENV} must be a whole number, got {configured!r}") from None
    return 2 if torch.cuda.is_available() else 1


def default_backend() -> str:
    """``$METANLP_BACKEND`` (local or ray); else ray when ``$RAY_ADDRESS`` names a cluster; else local."""
    configured = os.environ.get(BACKEND_ENV, "").strip().lower()
    if configured:
        if configured not in BACKENDS:
            raise ConfigError(f"{BACKEND_ENV} must be one of {', '.join(BACKENDS)}, got {configured!r}")
        return configured
    return "ray" if os.environ.get("RAY_ADDRESS") else "local"


def threads_per_worker(max_concurrent: int) -> int | None:
    """Share the CPU cores between workers; None keeps torch's own choice when OMP_NUM_THREADS is set."""
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // max_concurrent)


def check_run_config(config: RunConfig) -> RunConfig:
    """Everything about a config that can be checked without loading data or models.

    Raises ``ConfigError`` (bad settings, unknown method or method option) or ``DataError``
    (unknown dataset, missing data file) with a message meant for the user.
    """
    config.validate()
    try:
        build_options(get_method_class(config.method).Options, config.method_options)
        check_encoder_options(config.encoder, config.encoder_options)
    except (OptionError, ValueError, TypeError) as error:
        raise ConfigError(str(error)) from None
    if config.dataset == "user":
        if not Path(config.data_file).is_file():
            raise DataError(f"The data file {config.data_file} does not exist (or is not a file).")
    elif config.dataset not in available_names():
        raise DataError(
            f"There is no dataset named '{config.dataset}'. Available datasets: {', '.join(available_names())}."
        )
    if config.episodes_file and not Path(config.episodes_file).is_file():
        raise DataError(f"The episodes file {config.episodes_file} does not exist (or is not a file).")
    return config


def check_run_data(config: RunConfig, loaded: tuple[TextDataset, list[str]] | None = None) -> list[str]:
    """Read the config's data and check its splits can supply its episodes, before a run exists.

    A bad user file or an impossible N-way K-shot task is the user's input to fix, not a failed
    run: callers refuse it up front (raises ``DataError``). Returns the data's warnings.
    ``loaded`` is ``load_run_dataset(config)`` when the caller has it already.
    """
    from metanlp.engine.training import load_run_dataset, make_sampler

    dataset, warnings = loaded or load_run_dataset(config)
    splits = (["train"] if config.train_steps else []) + ([] if config.episodes_file else ["test"])
    for split in splits:
        make_sampler(dataset, split, config, seed=config.seed)  # raises DataError naming the constraint
    return warnings


_MAIN_MODULE_LOCK = threading.Lock()


@contextmanager
def _plain_main_module() -> Iterator[None]:
    """Hide the current ``__main__`` from ``multiprocessing`` while a worker process starts.

    A spawned child re-imports the parent's ``__main__`` file before running its target. Streamlit
    installs each page as ``__main__`` (with the page's ``__file__``), so the worker would re-run
    a page. A bare module without a file tells ``multiprocessing`` there is nothing to re-import;
    the worker needs nothing from it (its target is ``metanlp.runs.worker.worker_main``).
    """
    with _MAIN_MODULE_LOCK:
        main_module = sys.modules.get("__main__")
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            yield
        finally:
            if main_module is not None:
                sys.modules["__main__"] = main_module


@dataclass
class WorkerInfo:
    """What the dashboard can show about a worker ("warming up" until ready)."""

    slot: int
    pid: int | None
    alive: bool
    ready: bool


@dataclass
class _Worker:
    slot: int
    process: multiprocessing.process.BaseProcess
    ready: object  # a multiprocessing Event
    started: float  # time.monotonic()


class RunManager:
    """Starts and watches worker processes that execute the store's queued runs."""

    def __init__(
        self,
        store: RunStore,
        max_concurrent: int | None = None,
        *,
        preload: tuple[str, ...] | None = None,
        warm: bool = True,
        monitor_seconds: float | None = MONITOR_SECONDS,
        backend: str | None = None,
    ) -> None:
        self.store = store
        self.backend = default_backend() if backend is None else backend
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        self.max_concurrent = default_max_concurrent() if max_concurrent is None else max_concurrent
        if not 1 <= self.max_concurrent <= 64:
            raise ConfigError(f"max_concurrent must be between 1 and 64, got {self.max_concurrent}")
        self.preload = default_preload() if preload is None else tuple(preload)
        self.warm = warm
        self._context = multiprocessing.get_context("spawn")  # fork would copy torch's threads; CUDA needs spawn
        self._stop_event = self._context.Event()
        self._workers: dict[int, _Worker] = {}
        self._restart_after: dict[int, float] = {}  # slot → monotonic time; backs off workers that crash at once
        self._crashes: dict[int, int] = {}
        self._lock = threading.RLock()
        self._closed = False
        self._threads_per_worker = threads_per_worker(self.max_concurrent)
        self._ray = None
        if self.backend == "ray":  # runs execute as Ray tasks; this process stays the store's only writer
            from metanlp.runs.ray_backend import RayDispatcher

            self._ray = RayDispatcher(store, self.max_concurrent)
        self.poll()
        self._monitor_stop = threading.Event()
        self._monitor: threading.Thread | None = None
        if monitor_seconds:
            self._monitor = threading.Thread(
                target=self._monitor_loop, args=(monitor_seconds,), name="metanlp-run-monitor", daemon=True
            )
            self._monitor.start()
        shutdown = weakref.WeakMethod(self.shutdown)  # a weak reference: atexit must not keep us alive
        self._atexit = lambda: (method := shutdown()) is not None and method()
        atexit.register(self._atexit)

    # ----- runs ---------------------------------------------------------------------------
    def submit(self, config: RunConfig, name: str = "") -> str:
        """Check the config, queue the run and return its id; a free worker picks it up within 0.2 s."""
        if self._closed:
            raise RuntimeError("this RunManager has been shut down")
        check_run_config(config)
        run_id = self.store.create_run(config, name)
        self.poll()
        return run_id

    def retry(self, run_id: str, resume: bool = False) -> str:
        """Queue a failed or cancelled run again as a new run (from its last checkpoint with ``resume``)."""
        run = retry_run(self.store, run_id, resume)
        self.poll()
        return run

    def cancel(self, run_id: str) -> None:
        """Queued runs are cancelled at once; running ones stop at their next step (well under 2 s)."""
        self.store.request_cancel(run_id)

    def delete(self, run_id: str) -> None:
        """Delete a run with its files; an active run is cancelled first (waiting up to 3 s for it)."""
        if self.store.get_run(run_id).is_active:
            self.store.request_cancel(run_id)
            deadline = time.monotonic() + DELETE_WAIT_SECONDS
            while time.monotonic() < deadline and self.store.get_run(run_id).status not in FINISHED_STATUSES:
                time.sleep(0.05)
                self.poll()
        # If it still runs, its worker notices the missing row, stops and removes what it wrote.
        self.store.delete_run(run_id)

    # ----- workers ------------------------------------------------------------------------
    def poll(self) -> None:
        """Replace dead workers (marking their runs failed) and fail runs whose process is gone."""
        with self._lock:
            if self._closed:
                return
            if self._ray is not None:  # Ray runs belong to this process: only other processes' runs can be orphans
                fail_orphaned_runs(self.store, own_pids={os.getpid()})
                return
            for slot in range(self.max_concurrent):
                worker = self._workers.get(slot)
                if worker is not None and not worker.process.is_alive():
                    self._bury(worker, describe_exit(worker.process.exitcode))
                    worker = None
                if worker is None and time.monotonic() >= self._restart_after.get(slot, 0.0):
                    self._start(slot)
            fail_orphaned_runs(self.store, own_pids={worker.process.pid for worker in self._workers.values()})

    def _start(self, slot: int) -> None:
        ready = self._context.Event()
        process = self._context.Process(
            target=worker_main,
            args=(str(self.store.root), slot, self._stop_event, ready, self._threads_per_worker, self.preload, self.warm,
                  self.max_concurrent),
            name=f"metanlp-run-worker-{slot}",
            daemon=True,
        )
        with _plain_main_module():
            process.start()
        self._workers[slot] = _Worker(slot, process, ready, time.monotonic())

    def _bury(self, worker: _Worker, reason: str) -> None:
        """Fail the run a dead worker held and schedule its replacement (backing off if it keeps dying)."""
        process = worker.process
        process.join(timeout=1)
        for record in self.store.list_runs(statuses=("running",)):
            if record.worker_pid == process.pid:
                self.store.finish_run(record.id, "failed", reason, worker_pid=process.pid)
        # One early death (a run killed by the OOM killer) is replaced at once; repeated early
        # deaths (a broken environment) are retried after 4, 8, ... 60 s instead of in a tight loop.
        died_early = time.monotonic() - worker.started < EARLY_DEATH_SECONDS
        crashes = self._crashes.get(worker.slot, 0) + 1 if died_early else 0
        self._crashes[worker.slot] = crashes
        delay = min(60.0, 2.0**crashes) if crashes > 1 else 0.0
        self._restart_after[worker.slot] = time.monotonic() + delay
        if delay:
            log.warning("run worker %d keeps exiting (%s); restarting it in %.0f s", worker.slot, reason, delay)
        del self._workers[worker.slot]

    def workers(self) -> list[WorkerInfo]:
        with self._lock:
            return [
                WorkerInfo(slot, worker.process.pid, worker.process.is_alive(), worker.ready.is_set())
                for slot, worker in sorted(self._workers.items())
            ]

    def wait_until_ready(self, timeout: float | None = None) -> bool:
        """Block until every worker has imported torch and warmed up (True), or ``timeout`` passes."""
        if self._ray is not None:
            return True  # Ray's workers start with the tasks
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                workers = list(self._workers.values())
            if len(workers) == self.max_concurrent and all(worker.ready.is_set() for worker in workers):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def _monitor_loop(self, seconds: float) -> None:
        while not self._monitor_stop.wait(seconds):
            try:
                self.poll()
            except Exception:  # never let a transient store error kill the monitor
                log.exception("run monitor: poll failed")

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop the workers; runs still running are marked failed ("the app shut down")."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        atexit.unregister(self._atexit)
        self._monitor_stop.set()
        if self._monitor is not None and self._monitor is not threading.current_thread():
            self._monitor.join()
        if self._ray is not None:
            self._ray.shutdown(timeout)
            self._hand_over_queue()
            return
        self._stop_event.set()  # idle workers exit within 0.2 s; busy ones interrupt their run
        for worker in self._workers.values():
            if not worker.ready.is_set():  # still importing torch: it holds no run, nothing to wait for
                worker.process.terminate()
        deadline = time.monotonic() + timeout
        for worker in self._workers.values():
            worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
        for worker in self._workers.values():
            if worker.process.is_alive():
                worker.process.terminate()
                worker.process.join(timeout=2)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=2)
            for record in self.store.list_runs(statuses=("running",)):
                if record.worker_pid == worker.process.pid:
                    self.store.finish_run(record.id, "failed", SHUTDOWN_MESSAGE, worker_pid=worker.process.pid)
        self._workers.clear()
        self._hand_over_queue()

    def _hand_over_queue(self) -> None:
        """Runs still queued when this manager stops are run by the folder's supervisor meanwhile."""
        try:
            if self.store.list_runs(statuses=("queued",)):
                ensure_supervisor(self.store.root)
        except Exception:  # noqa: BLE001 - shutting down: a store fault here must not hide the real exit
            log.exception("could not hand the queue over to a supervisor")

    def __enter__(self) -> RunManager:
        return self

    def __exit__(self, *exc_info) -> None:
        self.shutdown()
