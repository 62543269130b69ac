"""One supervisor per runs folder: runs are looked after with no browser open.

The dashboard's run manager lives in the Streamlit process and exists only once a page has been
opened. A detached supervisor process covers the rest: a CLI ``train`` starts one (if none is
running) so a CLI run killed with SIGKILL is marked failed within a second; the dashboard starts
one when it shuts down with runs still queued, so they run while the server is down or
restarting. The supervisor marks runs of dead processes failed, runs the queue with its own
workers (under the machine-wide run limit every worker obeys), and exits once nothing has been
queued or running for ``$METANLP_SUPERVISOR_IDLE_SECONDS`` (30 by default). A lock file keeps it
to one per runs folder. ``METANLP_SUPERVISOR=0`` turns it off.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from metanlp.runs.processes import process_alive, start_detached
from metanlp.runs.store import RunStore

log = logging.getLogger("metanlp.runs")

LOCK_NAME = "supervisor.lock"
LOG_NAME = "supervisor.log"
ENABLED_ENV = "METANLP_SUPERVISOR"
IDLE_ENV = "METANLP_SUPERVISOR_IDLE_SECONDS"
DEFAULT_IDLE_SECONDS = 30.0
POLL_SECONDS = 0.5
ORPHAN_PREFIX = "The process running this run"
ORPHAN_MESSAGE = (
    ORPHAN_PREFIX + " (pid {pid}) is gone, probably because the app was restarted or the "
    "process was killed; metrics recorded until then are kept."
)

try:  # POSIX; elsewhere there is no supervisor and the dashboard's manager does the work
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


def fail_orphaned_runs(store: RunStore, own_pids: set[int] | frozenset[int] = frozenset()) -> list[str]:
    """Mark failed every ``running`` run whose process is gone (metrics kept); returns their ids.

    ``own_pids``: processes the caller watches itself (its workers), skipped here.
    """
    failed = []
    for record in store.list_runs(statuses=("running",)):
        if record.worker_pid in own_pids:
            continue
        if not process_alive(record.worker_pid, store.worker_fingerprint(record.id)):
            message = ORPHAN_MESSAGE.format(pid=record.worker_pid)
            store.finish_run(record.id, "failed", message, worker_pid=record.worker_pid)
            failed.append(record.id)
    return failed


def enabled() -> bool:
    return fcntl is not None and os.environ.get(ENABLED_ENV, "1").strip() not in ("0", "false", "no")


def idle_seconds() -> float:
    try:
        return max(0.0, float(os.environ.get(IDLE_ENV, DEFAULT_IDLE_SECONDS)))
    except ValueError:
        return DEFAULT_IDLE_SECONDS


@contextmanager
def supervisor_lock(root: Path) -> Iterator[bool]:
    """Hold the runs folder's supervisor lock for the block; yields False when another process has it."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK_NAME, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def is_supervised(root: str | Path) -> bool:
    """True while a supervisor process holds the lock of this runs folder."""
    if fcntl is None:
        return False
    with supervisor_lock(Path(root)) as got_it:
        return not got_it


def ensure_supervisor(root: str | Path) -> bool:
    """Start a detached supervisor for ``root`` unless one runs (or it is turned off); True if started."""
    root = Path(root).resolve()
    if not enabled() or is_supervised(root):
        return False
    start_detached(["-m", "metanlp.runs", str(root)], root / LOG_NAME, append=True)
    return True


def supervise(root: str | Path, idle_exit: float | None = None, poll: float = POLL_SECONDS) -> int:
    """Look after the runs of ``root`` until nothing is queued or running for ``idle_exit`` seconds."""
    from metanlp.runs.manager import RunManager  # imports torch; only the supervisor process needs it

    root = Path(root)
    idle_exit = idle_seconds() if idle_exit is None else idle_exit
    with supervisor_lock(root) as got_it:
        if not got_it:
            return 0  # another supervisor looks after this folder
        store = RunStore(root)
        manager: RunManager | None = None
        idle_since = time.monotonic()
        try:
            while True:
                own = {info.pid for info in manager.workers() if info.pid} if manager else set()
                try:
                    fail_orphaned_runs(store, own)
                    queued = store.list_runs(statuses=("queued",))
                    running = store.list_runs(statuses=("running",))
                except Exception as error:  # noqa: BLE001 - a full disk or a lock: keep watching, retry soon
                    log.warning("supervisor: the store could not be read or written: %s", error)
                    time.sleep(poll)
                    continue
                if queued and manager is None:
                    manager = RunManager(store)  # its workers take queued runs under the machine-wide limit
                if queued or running:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since >= idle_exit:
                    return 0
                time.sleep(poll)
        finally:
            if manager is not None:
                manager.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Supervise the runs of one runs folder (started automatically).")
    parser.add_argument("root", help="the runs folder")
    parser.add_argument("--idle-exit", type=float, help="seconds with nothing queued or running before exiting")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # leave through ``finally``: workers shut down
    return supervise(args.root, args.idle_exit)
