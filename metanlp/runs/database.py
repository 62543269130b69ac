"""Where the run store lives and how it is opened: the schema, run ids and folders, connections.

Every process (dashboard, workers, CLI) opens its own short-lived connection per operation, so
the store is safe across threads and processes and a killed writer never leaves a lock behind.
The queue, the event writer and the read models all go through one ``RunDatabase``. Every
connection waits up to ``timeout`` seconds for another process's lock, and every SQLite or
file-system fault leaves as a ``StoreError`` that names the file and what to do (``faults.py``).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np

from metanlp.runs.faults import StoreError, store_fault

RUNS_DIR_ENV = "METANLP_RUNS_DIR"
DATABASE_FILE = "runs.sqlite"
METRIC_COLUMNS = ("step", "phase", "inner_step", "support_loss", "query_loss", "query_accuracy", "lr", "elapsed")
SCHEMA_VERSION = 1
DEFAULT_TIMEOUT_SECONDS = 30.0  # how long an operation waits for another process's lock

# Run ids are generated here and checked everywhere: nothing else may become a path component.
RUN_ID_PATTERN = re.compile(r"[0-9a-f]{12}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    config TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    error TEXT,
    traceback TEXT,
    progress TEXT,
    evaluation TEXT,
    worker_pid INTEGER,
    worker_fingerprint TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status, created_at);
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL,
    step INTEGER,
    phase TEXT,
    inner_step INTEGER,
    support_loss REAL,
    query_loss REAL,
    query_accuracy REAL,
    lr REAL,
    elapsed REAL,
    extra TEXT
);
CREATE INDEX IF NOT EXISTS steps_by_run ON steps (run_id);
CREATE TABLE IF NOT EXISTS validations (
    run_id TEXT NOT NULL, step INTEGER, query_accuracy REAL, ci95 REAL
);
CREATE INDEX IF NOT EXISTS validations_by_run ON validations (run_id);
CREATE TABLE IF NOT EXISTS attention (
    run_id TEXT NOT NULL, step INTEGER, tokens TEXT NOT NULL, shape TEXT NOT NULL, data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS attention_by_run ON attention (run_id);
CREATE TABLE IF NOT EXISTS episode_results (
    run_id TEXT NOT NULL, episode INTEGER, query_accuracy REAL, query_loss REAL, extra TEXT
);
CREATE INDEX IF NOT EXISTS episode_results_by_run ON episode_results (run_id);
CREATE TABLE IF NOT EXISTS messages (
    run_id TEXT NOT NULL, kind TEXT NOT NULL, payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_run ON messages (run_id);
"""
EVENT_TABLES = ("steps", "validations", "attention", "episode_results", "messages")
TABLES = ("runs", *EVENT_TABLES)


class RunNotFound(ValueError):
    """No run has this id (never created, or deleted)."""

    @classmethod
    def for_id(cls, run_id: str) -> RunNotFound:
        return cls(f"There is no run with id {run_id!r}; it may have been deleted.")


class InvalidRunId(ValueError):
    """A string that cannot be a run id; refused before it gets near the file system."""


def validate_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.fullmatch(run_id):
        raise InvalidRunId(f"{run_id!r} is not a run id (run ids are 12 lowercase hexadecimal characters)")
    return run_id


def default_runs_dir() -> Path:
    """``$METANLP_RUNS_DIR``, else ``<project>/runs`` in a writable source checkout, else ``~/.metanlp/runs``."""
    configured = os.environ.get(RUNS_DIR_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    project = Path(__file__).resolve().parents[2]
    if (project / "pyproject.toml").is_file() and os.access(project, os.W_OK):
        return project / "runs"
    return Path.home() / ".metanlp" / "runs"


def to_json(value: Any) -> str:
    """JSON text for a column; numpy scalars, arrays and tensors become plain numbers and lists."""
    return json.dumps(value, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "tolist"):  # numpy arrays, torch tensors
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class RunDatabase:
    """``<root>/runs.sqlite`` (WAL mode) plus ``<root>/runs/<run id>/`` folders, created on first use.

    ``create=False`` creates nothing and connects read-only (the doctor's look: even a damaged
    file stays byte for byte as it was).
    """

    def __init__(
        self, root: str | Path | None = None, timeout: float = DEFAULT_TIMEOUT_SECONDS, create: bool = True
    ) -> None:
        self.root = Path(root) if root is not None else default_runs_dir()
        self.db_path = self.root / DATABASE_FILE
        self.timeout = float(timeout)
        self.read_only = not create
        if create:
            with self.faults():
                self.root.mkdir(parents=True, exist_ok=True)
                (self.root / "runs").mkdir(exist_ok=True)
            self._create_schema()

    @contextmanager
    def faults(self) -> Iterator[None]:
        """Turn SQLite and file-system errors into a ``StoreError`` naming the file and the fix."""
        try:
            yield
        except StoreError:
            raise
        except Exception as error:
            fault = store_fault(error, self.root, self.db_path, self.timeout)
            if fault is None:
                raise
            raise fault from error

    def _create_schema(self) -> None:
        """Tables and WAL mode, unless already there: a second opener changes nothing and takes no write lock."""
        with self.connect() as connection:
            if self.schema_ready(connection):
                return
            self._use_wal(connection)
            connection.executescript(f"BEGIN IMMEDIATE;\n{_SCHEMA}\nPRAGMA user_version={SCHEMA_VERSION};\nCOMMIT;")

    @staticmethod
    def schema_ready(connection: sqlite3.Connection) -> bool:
        """Whether every table exists, at this schema version, in WAL mode."""
        names = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
        return set(TABLES) <= names and version == SCHEMA_VERSION and str(mode).lower() == "wal"

    def _use_wal(self, connection: sqlite3.Connection) -> None:
        """Switch to WAL (readers never block the writer, nor it them), waiting out other openers.

        SQLite answers "locked" at once, without its busy wait, when another connection is midway
        through a write (e.g. a second process creating the schema), so this waits by itself.
        """
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                connection.execute("PRAGMA journal_mode=WAL").fetchall()
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error).lower() or time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A fresh connection in autocommit mode (reads); ``write`` wraps it in a transaction."""
        with self.faults():
            if self.read_only:
                uri = f"{self.db_path.resolve().as_uri()}?mode=ro"
                connection = sqlite3.connect(uri, timeout=self.timeout, isolation_level=None, uri=True)
            else:
                connection = sqlite3.connect(self.db_path, timeout=self.timeout, isolation_level=None)
            try:
                connection.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable across process crashes
                yield connection
            finally:
                connection.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, taken IMMEDIATE so concurrent writers queue instead of deadlocking."""
        with self.connect() as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                _rollback(connection)
                raise
            connection.execute("COMMIT")

    @staticmethod
    def require(connection: sqlite3.Connection, run_id: str) -> None:
        """Raise ``RunNotFound`` unless the run exists (inside the caller's transaction)."""
        if connection.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
            raise RunNotFound.for_id(run_id)

    def run_dir(self, run_id: str) -> Path:
        """``root/runs/<run id>``; the id is validated, so the path never leaves the store."""
        validate_run_id(run_id)
        base = (self.root / "runs").resolve()
        path = (base / run_id).resolve()
        if path.parent != base:
            raise InvalidRunId(f"run folder for {run_id!r} would fall outside {base}")
        return path

    def checkpoint_dir(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "checkpoint"


def _rollback(connection: sqlite3.Connection) -> None:
    """Undo the open transaction, if SQLite has not already (it does after a full disk or an I/O
    error), so that the error the caller sees is the one that happened, not "no transaction"."""
    if connection.in_transaction:
        with suppress(sqlite3.Error):  # closing the connection rolls back too
            connection.execute("ROLLBACK")


class StoreRoom:
    """Base of the store's parts (queue, event log, read models): each works on one ``RunDatabase``."""

    def __init__(self, database: RunDatabase) -> None:
        self.database = database
