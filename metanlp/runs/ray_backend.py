"""The Ray backend: queued runs execute as Ray tasks anywhere in a cluster; the store stays on this machine.

The run manager's process is the only writer of the run store. A dispatcher thread claims queued
runs (under the manager's limit) and starts one streaming Ray task per run: the task runs
``run_training`` on whichever node Ray picks (``num_gpus=1`` when the run asks for CUDA) and
yields the engine's events as they come; the dispatcher writes them into the store, so curves and
attention snapshots appear live as with local workers. A user's uploaded file travels with the
task (worker nodes need no runs folder and no shared file system); the learned state comes back
as the checkpoint's files at the end. Cancel is ``ray.cancel(force=True)`` on the task (within a
second); a lost worker or node ends the iteration with an error and the run is marked failed with
its metrics so far. Every node needs the same metanlp installed (and MiniLM's package).
"""

from __future__ import annotations

import os
import queue
import tempfile
import threading
import time
import traceback
from pathlib import Path

from metanlp.engine.config import RunConfig
from metanlp.runs.database import RunNotFound
from metanlp.runs.store import RunStore
from metanlp.runs.worker import SHUTDOWN_MESSAGE, EventWriter, one_line_error, record_final_status

CANCEL_POLL_SECONDS = 0.2
QUEUE_POLL_SECONDS = 0.2
RESULT, ERROR, WORKER = "__result__", "__error__", "ray_worker"
LOST_MESSAGE = ("The Ray worker running this run was lost ({kind}: {detail}), e.g. its process was killed or "
                "its node left the cluster; metrics recorded until then are kept.")


def connect(address: str | None = None) -> None:
    """Join the cluster at ``address`` (else ``$RAY_ADDRESS``, else start a local one), once per process."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address or os.environ.get("RAY_ADDRESS") or None, include_dashboard=False,
                 log_to_driver=False, ignore_reinit_error=True)


def cluster_summary() -> dict:
    """Nodes, CPUs and GPUs of the cluster this process is connected to (for the Home page)."""
    import ray

    resources = ray.cluster_resources()
    return {"nodes": sum(1 for node in ray.nodes() if node.get("Alive")), "cpus": int(resources.get("CPU", 0)),
            "gpus": int(resources.get("GPU", 0))}


def execute_remotely(config_dict: dict, data_file: tuple[str, bytes] | None,
                     episodes_file: tuple[str, bytes] | None = None):
    """The Ray task (a generator): run the config here and yield its events, then its checkpoint files.

    ``data_file`` (a user's file) and ``episodes_file`` (fixed test episodes) come as (name, bytes),
    so the node needs nothing from the machine that queued the run.
    """
    from metanlp.engine.checkpoint import save_method
    from metanlp.engine.training import run_training

    yield {"event": WORKER, "pid": os.getpid()}
    config = RunConfig.from_dict(config_dict)
    scratch = Path(tempfile.mkdtemp(prefix="metanlp-ray-"))
    for carried, field in ((data_file, "data_file"), (episodes_file, "episodes_file")):
        if carried is not None:
            name, content = carried
            path = scratch / f"{field}-{Path(name).name}"
            path.write_bytes(content)
            setattr(config, field, str(path))
    events: queue.Queue = queue.Queue()
    done = object()
    outcome: dict = {}

    def work() -> None:
        try:
            result = run_training(config, on_event=events.put)
            folder = save_method(result.method, scratch / "checkpoint")
            outcome["files"] = {item.name: item.read_bytes() for item in folder.iterdir() if item.is_file()}
            outcome["evaluation"] = result.evaluation_summary()
            outcome["per_episode"] = result.evaluation.per_episode if result.evaluation is not None else None
        except BaseException as error:  # noqa: BLE001 - everything goes back to the dispatcher, nothing is lost
            outcome["error"] = (type(error).__name__, str(error), traceback.format_exc())
        finally:
            events.put(done)

    threading.Thread(target=work, name="metanlp-ray-run", daemon=True).start()
    while (event := events.get()) is not done:
        yield event
    if "error" in outcome:
        kind, message, details = outcome["error"]
        yield {"event": ERROR, "kind": kind, "message": message, "traceback": details}
    else:
        yield {"event": RESULT, **outcome}


class RayDispatcher:
    """Claims queued runs and drives one Ray task per run, writing what it streams into the store."""

    def __init__(self, store: RunStore, max_concurrent: int, address: str | None = None) -> None:
        import ray

        connect(address)
        self.store = store
        self.max_concurrent = max_concurrent
        self._remote = ray.remote(num_returns="streaming", max_retries=0)(execute_remotely)
        self._active: dict[str, object] = {}  # run id → its task's generator reference
        self.worker_pids: dict[str, int] = {}  # run id → pid of the Ray worker process running it
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._dispatch, name="metanlp-ray-dispatch", daemon=True)
        self._thread.start()

    def _dispatch(self) -> None:
        while not self._stop.is_set():
            run_id = None
            if len(self._active) < self.max_concurrent:
                try:
                    run_id = self.store.claim_next_run(os.getpid(), max_running=None)
                except Exception:  # noqa: BLE001 - a store hiccup: try again shortly
                    run_id = None
            if run_id is None:
                self._stop.wait(QUEUE_POLL_SECONDS)
                continue
            with self._lock:
                self._active[run_id] = None  # claimed; its task follows (counted against the limit already)
            threading.Thread(target=self._drive, args=(run_id,), name=f"metanlp-ray-{run_id}", daemon=True).start()

    def _submit(self, run_id: str):
        config = RunConfig.from_dict(self.store.get_run(run_id).config)
        data_file = episodes_file = None
        if config.dataset == "user" and config.data_file:
            data_file = (Path(config.data_file).name, Path(config.data_file).read_bytes())
        if config.episodes_file:
            episodes_file = (Path(config.episodes_file).name, Path(config.episodes_file).read_bytes())
        gpus = 1 if config.device.startswith("cuda") else 0
        return self._remote.options(num_cpus=1, num_gpus=gpus).remote(config.to_dict(), data_file, episodes_file)

    def _drive(self, run_id: str) -> None:
        """Follow one run's task to its end and record its final status (the store's only writer)."""
        import ray

        writer = EventWriter(self.store, run_id)
        status, error, details = "failed", None, None
        stopped = threading.Event()
        reason: list[str] = []
        try:
            task = self._submit(run_id)
            with self._lock:
                self._active[run_id] = task
            threading.Thread(target=self._watch_cancel, args=(run_id, task, stopped, reason), daemon=True).start()
            for reference in task:
                event = ray.get(reference)
                kind = event.get("event")
                if kind == RESULT:
                    self._save_result(run_id, event)
                    status = "done"
                elif kind == WORKER:
                    self.worker_pids[run_id] = int(event["pid"])
                elif kind == ERROR:
                    cancelled = event["kind"] in ("RunCancelled", "KeyboardInterrupt")
                    status = "cancelled" if cancelled else "failed"
                    error = None if cancelled else f"{event['kind']}: {event['message']}"[:500]
                    details = event.get("traceback")
                else:
                    writer(event)
        except ray.exceptions.TaskCancelledError:
            status = "cancelled"
        except ray.exceptions.RayError as lost:
            status, error = "failed", LOST_MESSAGE.format(kind=type(lost).__name__, detail=one_line_error(lost)[:200])
        except Exception as exception:  # noqa: BLE001 - e.g. the uploaded file is gone: the run fails, the dispatcher goes on
            status, error, details = "failed", one_line_error(exception), traceback.format_exc()
        finally:
            stopped.set()
            with self._lock:
                self._active.pop(run_id, None)
        if reason and status != "done":
            status, error = ("cancelled", None) if reason[0] == "cancelled" else ("failed", SHUTDOWN_MESSAGE)
        try:
            writer.close()
        except Exception as exception:  # noqa: BLE001 - metrics lost: the run cannot count as done
            if status == "done":
                status, error = "failed", f"Could not save metrics: {one_line_error(exception)}"
        if not writer.run_deleted:
            record_final_status(self.store, run_id, status, error, details, give_up=self._stop.is_set)

    def _watch_cancel(self, run_id: str, task, stopped: threading.Event, reason: list[str]) -> None:
        import ray

        while not stopped.wait(CANCEL_POLL_SECONDS):
            try:
                cancel = self.store.cancel_requested(run_id)
            except RunNotFound:
                cancel = True
            except Exception:  # noqa: BLE001
                continue
            if cancel or self._stop.is_set():
                reason.append("cancelled" if cancel else "shutdown")
                ray.cancel(task, force=True)
                return

    def _save_result(self, run_id: str, event: dict) -> None:
        folder = self.store.checkpoint_dir(run_id)
        folder.mkdir(parents=True, exist_ok=True)
        for name, content in sorted(event["files"].items(), key=lambda item: item[0] == "method.json"):
            (folder / Path(name).name).write_bytes(content)  # the description last: it vouches for the weights
        if event.get("evaluation"):
            self.store.set_evaluation(run_id, event["evaluation"], event.get("per_episode"))

    def active(self) -> list[str]:
        with self._lock:
            return list(self._active)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop taking runs; running tasks are cancelled and their runs marked failed (the app shut down)."""
        self._stop.set()
        self._thread.join(timeout=timeout)
        deadline = time.monotonic() + timeout
        while self.active() and time.monotonic() < deadline:
            time.sleep(0.05)
