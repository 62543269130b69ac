"""Runs: a persistent store of training runs and the worker processes that execute them.

``RunStore`` (SQLite + one folder per run) is shared by the dashboard, its workers and the CLI;
``RunManager`` keeps warm worker processes busy with queued runs; ``execute_run`` runs one
stored run in the current process.
"""

from metanlp.runs.manager import RunManager, WorkerInfo, check_run_config
from metanlp.runs.store import (
    RUNS_DIR_ENV,
    STATUSES,
    AttentionSnapshot,
    InvalidRunId,
    RunNotFound,
    RunRecord,
    RunStore,
    default_runs_dir,
    validate_run_id,
)
from metanlp.runs.worker import execute_run, worker_main

__all__ = [
    "RUNS_DIR_ENV",
    "STATUSES",
    "AttentionSnapshot",
    "InvalidRunId",
    "RunManager",
    "RunNotFound",
    "RunRecord",
    "RunStore",
    "WorkerInfo",
    "check_run_config",
    "default_runs_dir",
    "execute_run",
    "validate_run_id",
    "worker_main",
]
