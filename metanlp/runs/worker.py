"""Executing runs: one run in-process (``execute_run``, also the CLI's path) and the worker loop.

The worker is a long-lived process (started by ``RunManager`` with the spawn method) that keeps
torch imported and encoders loaded between runs, so a new run's first loss point arrives in
seconds. It takes queued runs from the store one at a time; nothing a run does can end the loop.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import shutil
import sys
import threading
import time
import traceback
from collections.abc import Callable

import torch

from metanlp.data.errors import DataError
from metanlp.engine import EncoderPool, RunCancelled, RunConfig, run_training
from metanlp.engine.checkpoint import save_method
from metanlp.engine.config import ConfigError
from metanlp.methods.options import OptionError
from metanlp.runs.prompt_stop import PromptStop
from metanlp.runs.resume import checkpoint_every, drop_partial, partial_saver, resume_point
from metanlp.runs.store import RunNotFound, RunStore

log = logging.getLogger("metanlp.runs")

QUEUE_POLL_SECONDS = 0.2  # how often an idle worker looks for queued runs
FLUSH_SECONDS = 0.25  # events reach SQLite at least this often (what survives a SIGKILL)
MAX_BUFFERED_EVENTS = 500
CANCEL_CHECK_SECONDS = 0.2  # how often a run reads its cancel flag (a long step is interrupted: prompt_stop.py)
SHUTDOWN_MESSAGE = "Interrupted: the app shut down while this run was running."
MAX_ERROR_LENGTH = 500
FINAL_STATUS_FIRST_WAIT = 0.5  # seconds before the first retry of a final status that could not be written
FINAL_STATUS_MAX_WAIT = 10.0


class EventWriter:
    """Buffers engine events and writes them to the store in batches, from a background thread.

    Events are flushed every ``FLUSH_SECONDS`` (and whenever ``MAX_BUFFERED_EVENTS`` pile up), so a
    worker killed mid-run loses at most the last fraction of a second of metrics.
    """

    def __init__(self, store: RunStore, run_id: str, interval: float = FLUSH_SECONDS) -> None:
        self.store = store
        self.run_id = run_id
        self.run_deleted = False
        self._interval = interval
        self._pending: list[dict] = []
        self._pending_lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one flush at a time keeps events in order
        self._error: Exception | None = None
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._flush_periodically, name=f"metanlp-events-{run_id}", daemon=True)
        self._thread.start()

    def __call__(self, event: dict) -> None:
        with self._pending_lock:
            self._pending.append(event)
            backlog = len(self._pending)
        if backlog >= MAX_BUFFERED_EVENTS:
            self.flush()

    def flush(self) -> None:
        with self._flush_lock:
            with self._pending_lock:
                batch, self._pending = self._pending, []
            if not batch or self.run_deleted:
                return
            try:
                self.store.add_events(self.run_id, batch)
                self._error = None
            except RunNotFound:
                self.run_deleted = True
            except Exception as error:  # e.g. a locked or full disk: keep the events and retry
                with self._pending_lock:
                    self._pending[:0] = batch
                self._error = error

    def _flush_periodically(self) -> None:
        while not self._closed.wait(self._interval):
            self.flush()

    def close(self) -> None:
        """Stop the background thread and write what is left; raises if the store stays unwritable."""
        self._closed.set()
        self._thread.join()
        self.flush()
        if self._error is not None:
            raise self._error


class StopCheck:
    """``should_stop`` for ``run_training``: cancel requested, run deleted, or the app shutting down.

    The store is read at most every ``CANCEL_CHECK_SECONDS``, however often the engine asks.
    """

    def __init__(
        self,
        store: RunStore,
        run_id: str,
        writer: EventWriter,
        shutting_down: Callable[[], bool] | None = None,
        interval: float = CANCEL_CHECK_SECONDS,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.writer = writer
        self.shutting_down = shutting_down or (lambda: False)
        self.interval = interval
        self.reason: str | None = None  # "cancelled", "deleted" or "shutdown"
        self._last_check = float("-inf")

    def __call__(self) -> bool:
        if self.reason is not None:
            return True
        now = time.monotonic()
        if now - self._last_check < self.interval:
            return False
        self._last_check = now
        if self.shutting_down():
            self.reason = "shutdown"
        elif self.writer.run_deleted:
            self.reason = "deleted"
        else:
            try:
                if self.store.cancel_requested(self.run_id):
                    self.reason = "cancelled"
            except RunNotFound:
                self.reason = "deleted"
        return self.reason is not None


def one_line_error(error: BaseException) -> str:
    """A short message for users: our own errors speak for themselves, others get their type name."""
    message = " ".join(str(error).split()) or "no details"
    if not isinstance(error, (ConfigError, DataError, OptionError)):
        message = f"{type(error).__name__}: {message}"
    if len(message) > MAX_ERROR_LENGTH:
        message = message[: MAX_ERROR_LENGTH - 1] + "…"
    return message


def execute_run(
    store: RunStore,
    run_id: str,
    encoder_pool: EncoderPool | None = None,
    shutting_down: Callable[[], bool] | None = None,
    on_event: Callable[[dict], None] | None = None,
) -> str:
    """Run one stored run in this process and record everything; returns its final status.

    The run must be queued (it is claimed here) or already claimed by this process (the CLI
    creates it with ``store.create_run(config, name, claimed_by=os.getpid())``). Events stream
    into the store as they come; the learned state goes to ``store.checkpoint_dir(run_id)``.
    Errors never escape: the run becomes "failed" with a one-line message (traceback stored
    beside it), except KeyboardInterrupt, which cancels the run and is re-raised.
    ``on_event`` also receives every event (e.g. the CLI prints progress with it).
    """
    pid = os.getpid()
    record = store.get_run(run_id)
    if record.status == "queued":
        if not store.claim_run(run_id, pid):
            return store.get_run(run_id).status  # cancelled meanwhile, or another worker took it
    elif record.status != "running" or record.worker_pid != pid:
        raise ValueError(f"run {run_id} is {record.status} (worker {record.worker_pid}); it cannot be executed here")

    writer = EventWriter(store, run_id)
    stop = StopCheck(store, run_id, writer, shutting_down)

    def record_event(event: dict) -> None:
        writer(event)
        if on_event is not None:
            on_event(event)

    status, error, details = "failed", None, None
    try:
        config = RunConfig.from_dict(record.config)
        with PromptStop(stop):  # a long step cannot hold up a cancel: stopped within about a second
            result = run_training(
                config, on_event=record_event, should_stop=stop, encoder_pool=encoder_pool,
                save_checkpoint=partial_saver(store, run_id),
                checkpoint_every=checkpoint_every(config.train_steps), resume=resume_point(store, run_id),
            )
        writer.close()
        if not writer.run_deleted:
            save_method(result.method, store.checkpoint_dir(run_id), name=record.name)
            drop_partial(store, run_id)  # the final checkpoint supersedes it
            if result.evaluation is not None:
                evaluation = result.evaluation
                store.set_evaluation(run_id, result.evaluation_summary(), evaluation.per_episode)
        status = "done"
    except RunCancelled:
        if stop.reason == "shutdown":
            status, error = "failed", SHUTDOWN_MESSAGE
        else:
            status = "cancelled"
            writer.run_deleted = writer.run_deleted or stop.reason == "deleted"
    except KeyboardInterrupt:
        status, error = "cancelled", "Interrupted from the keyboard (Ctrl-C)."
        _finish(store, run_id, writer, status, error, None)
        raise
    except RunNotFound:
        writer.run_deleted = True
    except Exception as exception:
        status, error, details = "failed", one_line_error(exception), traceback.format_exc()
    _finish(store, run_id, writer, status, error, details, shutting_down or (lambda: False))
    return "deleted" if writer.run_deleted else status


def record_final_status(
    store: RunStore,
    run_id: str,
    status: str,
    error: str | None,
    details: str | None,
    give_up: Callable[[], bool] = lambda: False,
) -> bool:
    """Write the run's final status, retrying while the store cannot be written (a full disk, a lock).

    A run must never stay ``running`` because its last write failed: this waits (0.5, 1, 2 … 10 s
    between tries) until the store is writable again, unless ``give_up()`` (the worker is shutting
    down; the manager then marks the run). Returns whether it was written.
    """
    attempt = 0
    while True:
        try:
            store.finish_run(run_id, status, error, details, worker_pid=os.getpid())
            if attempt:
                log.warning("run %s: final status '%s' written after %d retries", run_id, status, attempt)
            return True
        except RunNotFound:
            return False  # deleted meanwhile: nothing to mark
        except Exception as exception:  # noqa: BLE001 - StoreError, sqlite3 and OS errors alike: wait and retry
            if attempt == 0:
                log.warning("run %s: its final status '%s' could not be written (%s); retrying until the store "
                            "is writable", run_id, status, one_line_error(exception))
            if give_up():
                return False
            time.sleep(min(FINAL_STATUS_MAX_WAIT, FINAL_STATUS_FIRST_WAIT * 2**attempt))
            attempt += 1


def _finish(
    store: RunStore,
    run_id: str,
    writer: EventWriter,
    status: str,
    error: str | None,
    details: str | None,
    give_up: Callable[[], bool] = lambda: False,
) -> None:
    try:
        writer.close()
    except Exception as exception:  # the metrics could not be written: the run cannot count as done
        if status == "done":
            status, error, details = "failed", f"Could not save metrics: {one_line_error(exception)}", traceback.format_exc()
    if writer.run_deleted:
        # Deleted while running: make sure nothing we wrote (e.g. a checkpoint) is left behind.
        shutil.rmtree(store.run_dir(run_id), ignore_errors=True)
    else:
        record_final_status(store, run_id, status, error, details, give_up)
    _release_memory()


def _release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ----- the worker process ----------------------------------------------------------------------


def warm_up(pool: EncoderPool) -> None:
    """Pay the one-off costs (lazy imports of the tokenizer and the optimiser, the default dataset)
    before the first real run, so its first loss point is not delayed by them."""
    config = RunConfig(
        method="protonet",
        dataset="clinc150",
        n_way=2,
        k_shot=1,
        n_query=1,
        train_steps=1,
        eval_episodes=1,
        encoder="scratch",
        encoder_options={"num_layers": 1, "hidden_size": 16, "num_heads": 1, "feedforward_size": 16, "max_length": 16},
    )
    try:
        run_training(config, encoder_pool=pool)
    except Exception as error:  # a missing dataset must not stop the worker; real runs will report it
        log.warning("worker warm-up skipped: %s", one_line_error(error))


def preload_encoders(pool: EncoderPool, names: tuple[str, ...]) -> None:
    """Load pretrained encoders into the pool now, so runs only copy them (MiniLM: ~4 s cold, ~0.2 s warm)."""
    for name in names:
        try:
            pool.get(name, {}, 0)
        except Exception as error:
            log.warning("could not preload encoder %r: %s", name, one_line_error(error))


def worker_main(
    root: str,
    worker_slot: int,
    stop_event=None,
    ready_event=None,
    num_threads: int | None = None,
    preload: tuple[str, ...] = (),
    warm: bool = True,
    max_running: int | None = None,
) -> None:
    """Spawn target: take queued runs from the store at ``root`` one by one until told to stop.

    ``stop_event`` (a multiprocessing Event) ends the loop, and interrupts a running run, which is
    then marked failed with ``SHUTDOWN_MESSAGE``; the loop also ends when the parent process is gone.
    ``ready_event`` is set once imports and warm-up are done. Encoders in ``preload`` are loaded
    while the queue is empty. ``max_running`` counts every running run of the store, the CLI's
    included: a worker takes nothing while that many run.
    """
    parent_pid = os.getppid()
    if num_threads:
        torch.set_num_threads(num_threads)
    store = RunStore(root)
    pool = EncoderPool()  # shared by every run of this worker: pretrained encoders stay loaded
    if warm:
        warm_up(pool)
    if ready_event is not None:
        ready_event.set()
    log.info("run worker %d ready (pid %d)", worker_slot, os.getpid())

    def stopping() -> bool:
        return (stop_event is not None and stop_event.is_set()) or os.getppid() != parent_pid

    waiting_to_preload = list(preload)
    while not stopping():
        try:
            run_id = store.claim_next_run(os.getpid(), max_running)
        except Exception as error:  # a briefly unreadable store: try again shortly
            log.warning("worker %d could not read the queue: %s", worker_slot, one_line_error(error))
            run_id = None
        if run_id is None:
            if waiting_to_preload:
                preload_encoders(pool, (waiting_to_preload.pop(0),))
            elif stop_event is not None:
                stop_event.wait(QUEUE_POLL_SECONDS)
            else:
                time.sleep(QUEUE_POLL_SECONDS)
            continue
        try:
            execute_run(store, run_id, encoder_pool=pool, shutting_down=stopping)
        except Exception:
            log.exception("worker %d: run %s could not be recorded", worker_slot, run_id)
    if multiprocessing.parent_process() is not None:
        # Every run is recorded and nothing else needs an orderly teardown; skipping the interpreter's
        # (which unloads torch) lets the app shut down about a second sooner.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
