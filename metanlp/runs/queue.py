"""The run queue: create runs, let workers claim them, move them to a final status, cancel, delete.

This is the part of the store the manager and the workers coordinate through; every status change
is one conditional UPDATE, so two processes racing for the same run cannot both win.
"""

from __future__ import annotations

import json
import secrets
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metanlp.engine.config import RunConfig
from metanlp.runs.database import EVENT_TABLES, RunNotFound, StoreRoom, to_json, validate_run_id
from metanlp.runs.processes import process_fingerprint

STATUSES = ("queued", "running", "done", "failed", "cancelled")
ACTIVE_STATUSES = ("queued", "running")
FINISHED_STATUSES = ("done", "failed", "cancelled")
MAX_NAME_LENGTH = 200


class RunSlotsBusy(RuntimeError):
    """Every run slot of the machine is in use (``running`` counts runs of the dashboard and the CLI)."""

    def __init__(self, running: int, limit: int) -> None:
        super().__init__(f"{running} runs are running and at most {limit} may run at once")
        self.running = running
        self.limit = limit


def _running_count(connection: sqlite3.Connection) -> int:
    return connection.execute("SELECT COUNT(*) FROM runs WHERE status = 'running'").fetchone()[0]


def clean_name(name: str) -> str:
    """Names are for display only: one line, no control characters, bounded length."""
    text = "".join(character if character.isprintable() else " " for character in str(name or ""))
    return " ".join(text.split())[:MAX_NAME_LENGTH]


def default_run_name(config: RunConfig) -> str:
    """What the Runs page shows for a run nobody named: method, dataset and task size."""
    return f"{config.method} · {config.dataset} · {config.n_way}-way {config.k_shot}-shot"


@dataclass
class RunRecord:
    """One run as callers see it: its settings, where it is in its lifecycle, and its result."""

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


class RunQueue(StoreRoom):
    """Run rows and their lifecycle: queued → running → done / failed / cancelled."""

    def create_run(
        self,
        config: RunConfig,
        name: str = "",
        claimed_by: int | None = None,
        max_running: int | None = None,
        files: dict[str, str] | None = None,
    ) -> str:
        """Queue a run and return its id.

        ``claimed_by`` (a pid) creates it already "running" in that process, so no worker can
        take it: the CLI uses this before calling ``execute_run`` itself. With ``max_running``,
        that happens only while fewer runs are running (else ``RunSlotsBusy``, nothing created).
        ``files`` ({plain file name: text}) are written into the run's folder before it is queued.
        """
        config_dict = config.to_dict()
        display_name = clean_name(name) or clean_name(config.name) or default_run_name(config)
        now = time.time()
        status = "queued" if claimed_by is None else "running"
        fingerprint = process_fingerprint(claimed_by) if claimed_by is not None else None
        for _ in range(8):
            run_id = secrets.token_hex(6)
            folder = self.database.run_dir(run_id)
            if folder.exists():
                continue  # an id collision (1 in 2^48 per pair), or a folder left behind by a lost row
            try:
                # The folder first: a run whose files cannot be written must not be queued.
                with self.database.faults():
                    folder.mkdir(parents=True)
                    (folder / "config.json").write_text(json.dumps(config_dict, indent=2), encoding="utf-8")
                    for file_name, text in (files or {}).items():
                        if Path(file_name).name != file_name or file_name in ("", ".", ".."):
                            raise ValueError(f"not a plain file name: {file_name!r}")
                        (folder / file_name).write_text(text, encoding="utf-8")
                with self.database.write() as connection:
                    if claimed_by is not None and max_running is not None:
                        running = _running_count(connection)
                        if running >= max_running:
                            raise RunSlotsBusy(running, max_running)
                    connection.execute(
                        "INSERT INTO runs (id, name, config, status, created_at, started_at, progress, worker_pid,"
                        " worker_fingerprint) VALUES (?, ?, ?, ?, ?, ?, '{}', ?, ?)",
                        (run_id, display_name, to_json(config_dict), status, now,
                         now if claimed_by is not None else None, claimed_by, fingerprint),
                    )
            except sqlite3.IntegrityError:
                shutil.rmtree(folder, ignore_errors=True)
                continue
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            return run_id
        raise RuntimeError("could not generate a unique run id")

    def get_run(self, run_id: str) -> RunRecord:
        validate_run_id(run_id)
        with self.database.connect() as connection:
            connection.row_factory = sqlite3.Row
            row = connection.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise RunNotFound.for_id(run_id)
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
        with self.database.connect() as connection:
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
        with self.database.write() as connection:
            self.database.require(connection, run_id)
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
        with self.database.write() as connection:
            return connection.execute(query, parameters).rowcount == 1

    def claim_next_run(self, worker_pid: int, max_running: int | None = None) -> str | None:
        """Atomically take the oldest queued run for ``worker_pid``; None when the queue is empty.

        With ``max_running``, also None while that many runs (from any process) are running.
        """
        fingerprint = process_fingerprint(worker_pid)
        with self.database.write() as connection:
            if max_running is not None and _running_count(connection) >= max_running:
                return None
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
        with self.database.write() as connection:
            self.database.require(connection, run_id)
            return connection.execute(
                "UPDATE runs SET status = 'running', started_at = ?, worker_pid = ?, worker_fingerprint = ?"
                " WHERE id = ? AND status = 'queued' AND cancel_requested = 0",
                (time.time(), worker_pid, process_fingerprint(worker_pid), run_id),
            ).rowcount == 1

    def worker_fingerprint(self, run_id: str) -> str | None:
        """The start time of the process that claimed the run (see ``processes.process_fingerprint``)."""
        validate_run_id(run_id)
        with self.database.connect() as connection:
            row = connection.execute("SELECT worker_fingerprint FROM runs WHERE id = ?", (run_id,)).fetchone()
        return row[0] if row else None

    def request_cancel(self, run_id: str) -> None:
        """Ask a run to stop: a queued run is cancelled at once, a running one at its next check."""
        validate_run_id(run_id)
        with self.database.write() as connection:
            self.database.require(connection, run_id)
            connection.execute("UPDATE runs SET cancel_requested = 1 WHERE id = ?", (run_id,))
            connection.execute(
                "UPDATE runs SET status = 'cancelled', finished_at = ? WHERE id = ? AND status = 'queued'",
                (time.time(), run_id),
            )

    def cancel_requested(self, run_id: str) -> bool:
        validate_run_id(run_id)
        with self.database.connect() as connection:
            row = connection.execute("SELECT cancel_requested FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise RunNotFound.for_id(run_id)
        return bool(row[0])

    def delete_run(self, run_id: str) -> None:
        """Remove the run's row, its events and its folder (checkpoint included)."""
        folder = self.database.run_dir(run_id)
        with self.database.write() as connection:
            self.database.require(connection, run_id)
            for table in EVENT_TABLES:
                connection.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
            connection.execute("DELETE FROM runs WHERE id = ?", (run_id,))
        shutil.rmtree(folder, ignore_errors=True)
