"""The run store: one SQLite database (WAL mode) plus one folder per run, shared by every process.

The dashboard, its worker processes and the CLI all read and write the same store. ``RunStore`` is
a facade over its parts, each with one job and one kind of caller:

- ``database``: schema, run ids and folders, connections (``RunDatabase``);
- ``queue``: the run lifecycle the manager and workers coordinate through (``RunQueue``);
- ``events``: the worker's event writes (``EventLog``);
- ``read_models``: pandas frames and attention arrays for pages and the bench (``RunReadModels``).

Learned state lives beside the database, in ``<root>/runs/<run id>/checkpoint`` (safetensors, see
``metanlp.engine.checkpoint``).
"""

from __future__ import annotations

from pathlib import Path

from metanlp.runs.database import (
    DATABASE_FILE,
    DEFAULT_TIMEOUT_SECONDS,
    METRIC_COLUMNS,
    RUN_ID_PATTERN,
    RUNS_DIR_ENV,
    SCHEMA_VERSION,
    InvalidRunId,
    RunDatabase,
    RunNotFound,
    default_runs_dir,
    validate_run_id,
)
from metanlp.runs.events import EventLog
from metanlp.runs.faults import StoreCorrupted, StoreError
from metanlp.runs.queue import (
    ACTIVE_STATUSES,
    FINISHED_STATUSES,
    MAX_NAME_LENGTH,
    STATUSES,
    RunQueue,
    RunRecord,
    clean_name,
    default_run_name,
)
from metanlp.runs.read_models import AttentionSnapshot, RunReadModels

__all__ = [
    "ACTIVE_STATUSES",
    "DATABASE_FILE",
    "DEFAULT_TIMEOUT_SECONDS",
    "FINISHED_STATUSES",
    "MAX_NAME_LENGTH",
    "METRIC_COLUMNS",
    "RUNS_DIR_ENV",
    "RUN_ID_PATTERN",
    "SCHEMA_VERSION",
    "STATUSES",
    "AttentionSnapshot",
    "InvalidRunId",
    "RunNotFound",
    "RunRecord",
    "RunStore",
    "StoreCorrupted",
    "StoreError",
    "clean_name",
    "default_run_name",
    "default_runs_dir",
    "validate_run_id",
]


class RunStore(RunQueue, EventLog, RunReadModels):
    """Runs, their metrics, attention snapshots and evaluations, in ``<root>/runs.sqlite``.

    Callers that need only one part may build it on a ``RunDatabase`` (e.g. ``RunQueue(database)``).
    Every fault of the folder, the disk or the database raises ``StoreError`` (``StoreCorrupted``
    for a damaged database); ``timeout`` is how long an operation waits for another process's lock.
    """

    def __init__(self, root: str | Path | None = None, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        super().__init__(RunDatabase(root, timeout))

    @property
    def root(self) -> Path:
        return self.database.root

    @property
    def db_path(self) -> Path:
        return self.database.db_path

    def run_dir(self, run_id: str) -> Path:
        """``root/runs/<run id>``; the id is validated, so the path never leaves the store."""
        return self.database.run_dir(run_id)

    def checkpoint_dir(self, run_id: str) -> Path:
        return self.database.checkpoint_dir(run_id)
