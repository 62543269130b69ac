"""The run store: one SQLite database (WAL mode) plus one folder per run, shared by every process.

The dashboard, its worker processes and the CLI all read and write the same store, so each
operation opens its own short-lived connection: safe across threads and processes, and a
killed writer never leaves a lock behind. Learned state lives beside the database, in
``<root>/runs/<run id>/checkpoint`` (safetensors, see ``metanlp.engine.checkpoint``).
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from metanlp.engine.config import RunConfig
from metanlp.runs.processes import process_fingerprint

RUNS_DIR_ENV = "METANLP_RUNS_DIR"
DATABASE_FILE = "runs.sqlite"
STATUSES = ("queued", "running", "done", "failed", "cancelled")
ACTIVE_STATUSES = ("queued", "running")
FINISHED_STATUSES = ("done", "failed", "cancelled")
METRIC_COLUMNS = ("step", "phase", "inner_step", "support_loss", "query_loss", "query_accuracy", "lr", "elapsed")
MAX_NAME_LENGTH = 200
SCHEMA_VERSION = 1

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
_EVENT_TABLES = ("steps", "validations", "attention", "episode_results", "messages")


class RunNotFound(ValueError):
    """No run has this id (never created, or deleted)."""


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


def clean_name(name: str) -> str:
    """Names are for display only: one line, no control characters, bounded length."""
    text = "".join(character if character.isprintable() else " " for character in str(name or ""))
    return " ".join(text.split())[:MAX_NAME_LENGTH]


def default_run_name(config: RunConfig) -> str:
    return f"{config.method} · {config.dataset} · {config.n_way}-way {config.k_shot}-shot"


@dataclass
class RunRecord:
    id: str
    name: str
    config: dict  # RunConfig.to_dict()
    status: str
    created_at: float  # unix seconds
    started_at: float | None
    finished_at: float | None
    error: str | None  # one line, for users
    progress: dict  # {"stage": "train" | "evaluate", "done": int, "total": int}, {} before the first step
    evaluation: dict | None  # {"mean_accuracy", "ci95", "episodes", "mean_query_loss", "seconds"}
    worker_pid: int | None
    cancel_requested: bool
    traceback: str | None = None  # for developers, when ``error`` came from an unexpected exception

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    def duration(self, now: float | None = None) -> float | None:
        """Seconds spent running (so far, while it runs); None before it starts."""
        if self.started_at is None:
            return None
        end = self.finished_at if self.finished_at is not None else (now or time.time())
        return max(0.0, end - self.started_at)


@dataclass
class AttentionSnapshot:
    step: int
    tokens: list[str]
    attentions: np.ndarray  # (layers, heads, S, S) float32, rows sum to 1 (stored as float16)


@dataclass
class _EventRows:
    """One ``add_events`` batch sorted into table rows."""

    steps: list[tuple] = field(default_factory=list)
    validations: list[tuple] = field(default_factory=list)
    attention: list[tuple] = field(default_factory=list)
    messages: list[tuple] = field(default_factory=list)
    progress: dict | None = None
    evaluation: dict | None = None


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "tolist"):  # numpy arrays, torch tensors
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _dumps(value: Any) -> str:
    return json.dumps(value, default=_json_default)


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, str):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _extra_numbers(event: dict, known: tuple[str, ...]) -> str | None:
    """Numeric fields beyond the standard columns, as JSON (None when there are none)."""
    extra = {
        key: _number(value)
        for key, value in event.items()
        if key not in known and key != "event" and isinstance(value, (bool, int, float, np.number))
    }
    return _dumps(extra) if extra else None


class RunStore:
    """Runs, their metrics, attention snapshots and evaluations, in ``<root>/runs.sqlite``."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_runs_dir()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "runs").mkdir(exist_ok=True)
        self.db_path = self.root / DATABASE_FILE
        with self._connect() as connection:
            connection.execute("PRAGMA journal_mode=WAL")  # readers never block the writer, nor it them
            connection.executescript(f"BEGIN IMMEDIATE;\n{_SCHEMA}\nPRAGMA user_version={SCHEMA_VERSION};\nCOMMIT;")

    # ----- connections --------------------------------------------------------------------
    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A fresh connection in autocommit mode (reads); ``_write`` wraps it in a transaction."""
        connection = sqlite3.connect(self.db_path, timeout=30.0, isolation_level=None)
        connection.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable across process crashes
        try:
            yield connection
        finally:
            connection.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, taken IMMEDIATE so concurrent writers queue instead of deadlocking."""
        with self._connect() as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    @staticmethod
    def _require(connection: sqlite3.Connection, run_id: str) -> None:
        if connection.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
            raise RunNotFound(f"There is no run with id {run_id!r}; it may have been deleted.")

    # ----- paths --------------------------------------------------------------------------
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

    # ----- runs ---------------------------------------------------------------------------
    def create_run(self, config: RunConfig, name: str = "", claimed_by: int | None = None) -> str:
        """Queue a run and return its id.

        ``claimed_by`` (a pid) creates it already "running" in that process, so no worker can
        take it: the CLI uses this before calling ``execute_run`` itself.
        """
        config_dict = config.to_dict()
        display_name = clean_name(name) or clean_name(config.name) or default_run_name(config)
        now = time.time()
        status = "queued" if claimed_by is None else "running"
        fingerprint = process_fingerprint(claimed_by) if claimed_by is not None else None
        for _ in range(8):
            run_id = secrets.token_hex(6)
            try:
                with self._write() as connection:
                    connection.execute(
                        "INSERT INTO runs (id, name, config, status, created_at, started_at, progress, worker_pid,"
                        " worker_fingerprint) VALUES (?, ?, ?, ?, ?, ?, '{}', ?, ?)",
                        (run_id, display_name, _dumps(config_dict), status, now,
                         now if claimed_by is not None else None, claimed_by, fingerprint),
                    )
            except sqlite3.IntegrityError:
                continue  # an id collision: 1 in 2^48 per pair, but cheap to handle
            folder = self.run_dir(run_id)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "config.json").write_text(json.dumps(config_dict, indent=2), encoding="utf-8")
            return run_id
        raise RuntimeError("could not generate a unique run id")

    def get_run(self, run_id: str) -> RunRecord:
        validate_run_id(run_id)
        with self._connect() as connection:
            connection.row_factory = sqlite3.Row
            row = connection.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise RunNotFound(f"There is no run with id {run_id!r}; it may have been deleted.")
        return self._record(row)

    def list_runs(self, limit: int | None = None, statuses: tuple[str, ...] | None = None) -> list[RunRecord]:
        """Runs, newest first, optionally only those in ``statuses``."""
        query, parameters = "SELECT * FROM runs", []
        if statuses is not None:
            for status in statuses:
                self._check_status(status)
            query += f" WHERE status IN ({', '.join('?' for _ in statuses)})"
            parameters.extend(statuses)
        query += " ORDER BY created_at DESC, rowid DESC"
        if limit is not None:
            query += " LIMIT ?"
            parameters.append(int(limit))
        with self._connect() as connection:
            connection.row_factory = sqlite3.Row
            rows = connection.execute(query, parameters).fetchall()
        return [self._record(row) for row in rows]

    @staticmethod
    def _record(row: sqlite3.Row) -> RunRecord:
        return RunRecord(
            id=row["id"],
            name=row["name"],
            config=json.loads(row["config"]),
            status=row["status"],
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            error=row["error"],
            progress=json.loads(row["progress"] or "{}"),
            evaluation=json.loads(row["evaluation"]) if row["evaluation"] else None,
            worker_pid=row["worker_pid"],
            cancel_requested=bool(row["cancel_requested"]),
            traceback=row["traceback"],
        )

    @staticmethod
    def _check_status(status: str) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown run status {status!r}; one of {', '.join(STATUSES)}")

    def set_status(self, run_id: str, status: str, error: str | None = None, traceback: str | None = None) -> None:
        """Set a status unconditionally; "running" stamps started_at, a final status stamps finished_at."""
        validate_run_id(run_id)
        self._check_status(status)
        now = time.time()
        with self._write() as connection:
            self._require(connection, run_id)
            connection.execute(
                "UPDATE runs SET status = ?, error = ?, traceback = ?,"
                " started_at = CASE WHEN ? = 'running' THEN COALESCE(started_at, ?) ELSE started_at END,"
                " finished_at = CASE WHEN ? IN ('done', 'failed', 'cancelled') THEN ? ELSE NULL END"
                " WHERE id = ?",
                (status, error, traceback, status, now, status, now, run_id),
            )

    def finish_run(
        self,
        run_id: str,
        status: str,
        error: str | None = None,
        traceback: str | None = None,
        worker_pid: int | None = None,
    ) -> bool:
        """Move a *running* run to a final status; False if it was not running (or not ``worker_pid``'s).

        The condition makes the worker finishing a run and the manager declaring its worker dead
        safe against each other: whichever comes first wins, the other changes nothing.
        """
        validate_run_id(run_id)
        if status not in FINISHED_STATUSES:
            raise ValueError(f"finish_run needs a final status ({', '.join(FINISHED_STATUSES)}), got {status!r}")
        query = "UPDATE runs SET status = ?, error = ?, traceback = ?, finished_at = ? WHERE id = ? AND status = 'running'"
        parameters: list[Any] = [status, error, traceback, time.time(), run_id]
        if worker_pid is not None:
            query += " AND worker_pid = ?"
            parameters.append(worker_pid)
        with self._write() as connection:
            return connection.execute(query, parameters).rowcount == 1

    def claim_next_run(self, worker_pid: int) -> str | None:
        """Atomically take the oldest queued run for ``worker_pid``; None when the queue is empty."""
        fingerprint = process_fingerprint(worker_pid)
        with self._write() as connection:
            row = connection.execute(
                "SELECT id FROM runs WHERE status = 'queued' AND cancel_requested = 0"
                " ORDER BY created_at, rowid LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            connection.execute(
                "UPDATE runs SET status = 'running', started_at = ?, worker_pid = ?, worker_fingerprint = ?"
                " WHERE id = ?",
                (time.time(), worker_pid, fingerprint, row[0]),
            )
            return row[0]

    def claim_run(self, run_id: str, worker_pid: int) -> bool:
        """Take one specific queued run (False if someone else has it, or it is not queued)."""
        validate_run_id(run_id)
        with self._write() as connection:
            self._require(connection, run_id)
            return connection.execute(
                "UPDATE runs SET status = 'running', started_at = ?, worker_pid = ?, worker_fingerprint = ?"
                " WHERE id = ? AND status = 'queued' AND cancel_requested = 0",
                (time.time(), worker_pid, process_fingerprint(worker_pid), run_id),
            ).rowcount == 1

    def worker_fingerprint(self, run_id: str) -> str | None:
        """The start time of the process that claimed the run (see ``processes.process_fingerprint``)."""
        validate_run_id(run_id)
        with self._connect() as connection:
            row = connection.execute("SELECT worker_fingerprint FROM runs WHERE id = ?", (run_id,)).fetchone()
        return row[0] if row else None

    def request_cancel(self, run_id: str) -> None:
        """Ask a run to stop: a queued run is cancelled at once, a running one at its next check."""
        validate_run_id(run_id)
        with self._write() as connection:
            self._require(connection, run_id)
            connection.execute("UPDATE runs SET cancel_requested = 1 WHERE id = ?", (run_id,))
            connection.execute(
                "UPDATE runs SET status = 'cancelled', finished_at = ? WHERE id = ? AND status = 'queued'",
                (time.time(), run_id),
            )

    def cancel_requested(self, run_id: str) -> bool:
        validate_run_id(run_id)
        with self._connect() as connection:
            row = connection.execute("SELECT cancel_requested FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise RunNotFound(f"There is no run with id {run_id!r}; it may have been deleted.")
        return bool(row[0])

    def delete_run(self, run_id: str) -> None:
        """Remove the run's row, its events and its folder (checkpoint included)."""
        folder = self.run_dir(run_id)
        with self._write() as connection:
            self._require(connection, run_id)
            for table in _EVENT_TABLES:
                connection.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
            connection.execute("DELETE FROM runs WHERE id = ?", (run_id,))
        shutil.rmtree(folder, ignore_errors=True)

    # ----- events -------------------------------------------------------------------------
    def add_events(self, run_id: str, events: list[dict]) -> None:
        """Store a batch of engine events (see ``metanlp.engine.training``) in one transaction.

        step → metrics rows, validation → validation rows, attention → float16 snapshots,
        progress → the run's latest progress, evaluation → the run's evaluation; warnings and
        any other kind are kept as messages.
        """
        validate_run_id(run_id)
        rows = self._sort_events(run_id, events)
        with self._write() as connection:
            self._require(connection, run_id)
            connection.executemany(
                "INSERT INTO steps (run_id, step, phase, inner_step, support_loss, query_loss, query_accuracy,"
                " lr, elapsed, extra) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows.steps,
            )
            connection.executemany("INSERT INTO validations VALUES (?, ?, ?, ?)", rows.validations)
            connection.executemany("INSERT INTO attention VALUES (?, ?, ?, ?, ?)", rows.attention)
            connection.executemany("INSERT INTO messages VALUES (?, ?, ?)", rows.messages)
            if rows.progress is not None:
                connection.execute("UPDATE runs SET progress = ? WHERE id = ?", (_dumps(rows.progress), run_id))
            if rows.evaluation is not None:
                connection.execute("UPDATE runs SET evaluation = ? WHERE id = ?", (_dumps(rows.evaluation), run_id))

    @staticmethod
    def _sort_events(run_id: str, events: list[dict]) -> _EventRows:
        rows = _EventRows()
        for event in events:
            try:
                RunStore._sort_event(run_id, event, rows)
            except (TypeError, ValueError, KeyError, AttributeError) as error:
                # One malformed event must not block the batch (and the run's later metrics) forever.
                kind = event.get("event") if isinstance(event, dict) else None
                problem = {"event_kind": str(kind), "error": f"{type(error).__name__}: {error}"}
                rows.messages.append((run_id, "invalid_event", _dumps(problem)))
        return rows

    @staticmethod
    def _sort_event(run_id: str, event: dict, rows: _EventRows) -> None:
        kind = event.get("event")
        if kind == "step":
            inner_step = event.get("inner_step")
            rows.steps.append((
                run_id,
                int(event["step"]),
                str(event.get("phase", "train")),
                int(inner_step) if inner_step is not None else None,
                *(_number(event.get(key)) for key in ("support_loss", "query_loss", "query_accuracy", "lr", "elapsed")),
                _extra_numbers(event, METRIC_COLUMNS),
            ))
        elif kind == "validation":
            rows.validations.append(
                (run_id, int(event["step"]), _number(event.get("query_accuracy")), _number(event.get("ci95")))
            )
        elif kind == "attention":
            attentions = np.asarray(event["attentions"], dtype=np.float16)  # (layers, heads, S, S)
            if attentions.ndim != 4:
                raise ValueError(f"attentions must be (layers, heads, S, S), got shape {attentions.shape}")
            rows.attention.append((
                run_id,
                int(event["step"]),
                _dumps([str(token) for token in event.get("tokens", [])]),
                _dumps(list(attentions.shape)),
                attentions.tobytes(),
            ))
        elif kind == "progress":
            rows.progress = {key: event.get(key) for key in ("stage", "done", "total")}
        elif kind == "evaluation":
            rows.evaluation = {key: value for key, value in event.items() if key not in ("event", "per_episode")}
        else:
            payload = {key: value for key, value in event.items() if key != "event"}
            rows.messages.append((run_id, str(kind or "unknown"), _dumps(payload)))

    def set_evaluation(self, run_id: str, evaluation: dict, per_episode: list[dict] | None = None) -> None:
        """The final evaluation (mean accuracy, 95% CI, ...) and, optionally, one row per test episode."""
        validate_run_id(run_id)
        summary = {key: value for key, value in evaluation.items() if key not in ("event", "per_episode")}
        episode_rows = [
            (
                run_id,
                int(result.get("episode", index)),
                _number(result.get("query_accuracy")),
                _number(result.get("query_loss")),
                _extra_numbers(result, ("episode", "query_accuracy", "query_loss")),
            )
            for index, result in enumerate(per_episode or [])
        ]
        with self._write() as connection:
            self._require(connection, run_id)
            connection.execute("UPDATE runs SET evaluation = ? WHERE id = ?", (_dumps(summary), run_id))
            if per_episode is not None:
                connection.execute("DELETE FROM episode_results WHERE run_id = ?", (run_id,))
                connection.executemany("INSERT INTO episode_results VALUES (?, ?, ?, ?, ?)", episode_rows)

    # ----- reading events -----------------------------------------------------------------
    def _frame(self, query: str, parameters: tuple) -> pd.DataFrame:
        with self._connect() as connection:
            return pd.read_sql_query(query, connection, params=parameters)

    @staticmethod
    def _expand_extra(frame: pd.DataFrame) -> pd.DataFrame:
        """Turn the JSON ``extra`` column into one numeric column per extra metric."""
        extra = frame.pop("extra")
        if extra.notna().any():
            parsed = pd.DataFrame([json.loads(value) if isinstance(value, str) else {} for value in extra], index=frame.index)
            for column in parsed.columns:
                if column not in frame.columns:
                    frame[column] = pd.to_numeric(parsed[column], errors="coerce")
        return frame

    def metrics(self, run_id: str, phases: tuple[str, ...] | None = None) -> pd.DataFrame:
        """One row per step event, in order: ``METRIC_COLUMNS`` + any extra numeric metric columns.

        ``phase`` is "train" for outer-loop steps and "inner" for inner-loop steps (``inner_step``
        1, 2, ...; NaN on outer rows). ``phases`` keeps only those phases.
        """
        validate_run_id(run_id)
        query = f"SELECT {', '.join(METRIC_COLUMNS)}, extra FROM steps WHERE run_id = ?"
        parameters: tuple = (run_id,)
        if phases is not None:
            query += f" AND phase IN ({', '.join('?' for _ in phases)})"
            parameters += tuple(phases)
        frame = self._frame(query + " ORDER BY rowid", parameters)
        for column in ("inner_step", "support_loss", "query_loss", "query_accuracy", "lr", "elapsed"):
            frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
        return self._expand_extra(frame)

    def validation(self, run_id: str) -> pd.DataFrame:
        """Validation accuracy during training: step, query_accuracy, ci95."""
        validate_run_id(run_id)
        return self._frame(
            "SELECT step, query_accuracy, ci95 FROM validations WHERE run_id = ? ORDER BY rowid", (run_id,)
        )

    def episode_results(self, run_id: str) -> pd.DataFrame:
        """The final evaluation, one row per test episode: episode, query_accuracy, query_loss (+ extras)."""
        validate_run_id(run_id)
        frame = self._frame(
            "SELECT episode, query_accuracy, query_loss, extra FROM episode_results WHERE run_id = ?"
            " ORDER BY episode",
            (run_id,),
        )
        return self._expand_extra(frame)

    def attention_snapshots(self, run_id: str) -> list[AttentionSnapshot]:
        """Attention maps of the config's ``attention_text``, in training order."""
        validate_run_id(run_id)
        with self._connect() as connection:
            rows = connection.execute(
                "SELECT step, tokens, shape, data FROM attention WHERE run_id = ? ORDER BY rowid", (run_id,)
            ).fetchall()
        return [
            AttentionSnapshot(
                step=step,
                tokens=json.loads(tokens),
                attentions=np.frombuffer(data, dtype=np.float16).reshape(json.loads(shape)).astype(np.float32),
            )
            for step, tokens, shape, data in rows
        ]

    def messages(self, run_id: str, kind: str | None = None) -> list[dict]:
        """Warnings and other non-metric events, oldest first, each with its ``event`` kind."""
        validate_run_id(run_id)
        query, parameters = "SELECT kind, payload FROM messages WHERE run_id = ?", [run_id]
        if kind is not None:
            query += " AND kind = ?"
            parameters.append(kind)
        with self._connect() as connection:
            rows = connection.execute(query + " ORDER BY rowid", parameters).fetchall()
        return [{"event": row_kind, **json.loads(payload)} for row_kind, payload in rows]

    def notices(self, run_id: str) -> list[str]:
        """What the engine said about the run's configuration (e.g. that it had nothing to meta-learn)."""
        return [str(message.get("message", "")) for message in self.messages(run_id, "no_meta_training")]

    def warnings(self, run_id: str) -> list[str]:
        """Data warnings the run raised (e.g. about a user file), for display beside the run."""
        return [str(message.get("message", "")) for message in self.messages(run_id, "warning")]
