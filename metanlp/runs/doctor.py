"""The store's doctor: check the database and the run folders; move a damaged database aside.

``check_store`` runs SQLite's integrity check, looks for the schema, and matches run folders
with run rows (a folder without a row, a finished run whose checkpoint is missing or damaged).
``reset_store`` is the only way a damaged ``runs.sqlite`` is replaced, and only when a user asks
(``python -m metanlp doctor --reset-store``, or the button on the dashboard's error box): the
file and its ``-wal``/``-shm`` companions are renamed with a timestamp, never deleted or written
to, a fresh store is created, and whatever rows a copy of the damaged file still yields are
copied into it.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from metanlp.engine.checkpoint import DESCRIPTION_FILE, checkpoint_problem
from metanlp.runs.database import (
    DATABASE_FILE,
    DEFAULT_TIMEOUT_SECONDS,
    RUN_ID_PATTERN,
    TABLES,
    RunDatabase,
    default_runs_dir,
)
from metanlp.runs.faults import StoreCorrupted, StoreError, corrupted, store_fault
from metanlp.runs.processes import process_alive

COMPANIONS = ("-wal", "-shm")  # SQLite's side files, named after the database file
LISTED = 5  # folders or runs named in one problem line before "and N more"


@dataclass
class StoreReport:
    """What ``check_store`` found: one line about the database, and every problem as a sentence."""

    root: Path
    database: str
    runs: int = 0
    problems: list[str] = field(default_factory=list)
    damaged: bool = False  # the database itself is damaged: moving it aside is the way on

    @property
    def healthy(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        lines = [f"Run store {self.root}", f"  database: {self.database}"]
        if self.healthy:
            return [*lines, "  no problems found"]
        count = len(self.problems)
        return [*lines, f"  {count} problem{'s' if count > 1 else ''}:"] + [f"  - {problem}" for problem in self.problems]


@dataclass
class ResetResult:
    """What ``reset_store`` did: the files it renamed and the rows it copied into the fresh store."""

    moved: list[tuple[Path, Path]]
    recovered: dict[str, int]  # table → rows copied from the damaged file
    incomplete: list[str]  # tables whose rows could only be read in part

    def lines(self) -> list[str]:
        if not self.moved:
            return ["The database is not damaged: nothing was moved."]
        lines = [f"Moved aside: {source.name} → {target.name}" for source, target in self.moved]
        runs = self.recovered.get("runs", 0)
        events = sum(count for table, count in self.recovered.items() if table != "runs")
        if not runs and not events:
            return [*lines, "Started a fresh store; nothing could be read from the damaged copy."]
        lines.append(f"Started a fresh store; recovered {runs} run(s) and {events} recorded row(s) from the damaged copy.")
        if self.incomplete:
            lines.append(f"Only part of these could be read: {', '.join(self.incomplete)}.")
        return lines


def check_store(root: str | Path | None = None, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> StoreReport:
    """Check the store at ``root`` without changing it (nothing is created where nothing is)."""
    database = RunDatabase(root, timeout, create=False)
    root = database.root
    if root.exists() and not root.is_dir():
        return StoreReport(root, "none", problems=[f"{root} is a file, not a folder: move it, or point "
                                                   "METANLP_RUNS_DIR (or --runs-dir) to a folder."])
    if not root.is_dir():
        return StoreReport(root, f"none yet: {root} does not exist (the first run creates it)")
    problems = _write_problems(database)
    if not database.db_path.is_file():
        report = StoreReport(root, f"none yet: no {DATABASE_FILE} (the first run creates it)", problems=problems)
        report.problems += _folder_problems(database, {})
        return report
    try:
        statuses, abandoned, schema_note = _read_database(database)
    except StoreError as error:
        said = error.kind == "read_only" and problems  # the folder's problem already says it
        return StoreReport(root, f"{DATABASE_FILE} cannot be used", 0, problems if said else [*problems, str(error)],
                           damaged=isinstance(error, StoreCorrupted))
    report = StoreReport(root, f"{DATABASE_FILE}, {schema_note}, {len(statuses)} run(s)", len(statuses), problems)
    if abandoned:
        report.problems.append(
            f"{len(abandoned)} run(s) are marked running but no process runs them any more: {_some(abandoned)}. "
            "Their metrics are kept; the dashboard's run manager marks such runs failed, or delete them."
        )
    report.problems += _folder_problems(database, statuses)
    return report


def _write_problems(database: RunDatabase) -> list[str]:
    """Whether files can be created in the runs folder (a read-only mount refuses even root)."""
    try:
        with tempfile.NamedTemporaryFile(dir=database.root, prefix=".doctor-"):
            pass
    except OSError as error:
        fault = store_fault(OSError(error.errno, error.strerror, str(database.root)), database.root,
                            database.db_path, database.timeout)
        return [str(fault or error)]
    return []


def _read_database(database: RunDatabase) -> tuple[dict[str, str], list[str], str]:
    """Run id → status and the running runs whose process is gone, after the integrity and schema
    checks (``StoreError`` when they fail), and a note on the database."""
    with database.connect() as connection:
        results = [row[0] for row in connection.execute("PRAGMA integrity_check(20)")]
        if results != ["ok"]:
            raise corrupted(database.root, database.db_path, "; ".join(results[:3]))
        names = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not names and database.db_path.stat().st_size == 0:
            return {}, [], "empty (its tables are created on next use)"
        missing = [table for table in TABLES if table not in names]
        if missing:
            raise corrupted(database.root, database.db_path, f"tables missing: {', '.join(missing)}")
        rows = connection.execute("SELECT id, status, worker_pid, worker_fingerprint FROM runs").fetchall()
    statuses = {run_id: status for run_id, status, _, _ in rows}
    abandoned = [run_id for run_id, status, pid, fingerprint in rows
                 if status == "running" and not process_alive(pid, fingerprint)]
    return statuses, abandoned, "integrity check passed"


def _folder_problems(database: RunDatabase, statuses: dict[str, str]) -> list[str]:
    """Folders without a run, and finished runs whose checkpoint is missing or damaged."""
    folders = database.root / "runs"
    names = sorted(entry.name for entry in folders.iterdir() if entry.is_dir()) if folders.is_dir() else []
    orphans = [name for name in names if name not in statuses]
    problems = []
    if orphans:
        problems.append(
            f"{len(orphans)} folder(s) in {folders} belong to no run in the database (left by a reset or a crash): "
            f"{_some(orphans)}. Delete them, or evaluate a checkpoint they hold with "
            "`python -m metanlp evaluate --checkpoint FOLDER/checkpoint`."
        )
    for run_id, status in sorted(statuses.items()):
        if status != "done" or not RUN_ID_PATTERN.fullmatch(run_id):
            continue
        checkpoint = database.checkpoint_dir(run_id)
        if not (checkpoint / DESCRIPTION_FILE).is_file():
            problems.append(f"Run {run_id} is done but its checkpoint folder {checkpoint} is missing or empty: "
                            "delete the run or retrain it.")
        elif (problem := checkpoint_problem(checkpoint)) is not None:
            problems.append(f"The checkpoint of run {run_id} is damaged ({problem}): delete the run or retrain it.")
    return problems


def _some(names: list[str]) -> str:
    shown = ", ".join(names[:LISTED])
    return shown if len(names) <= LISTED else f"{shown} and {len(names) - LISTED} more"


def reset_store(root: str | Path | None = None, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> ResetResult:
    """If the database is damaged: move it aside (renamed with a timestamp), start fresh, copy what reads.

    A store that is not damaged (healthy, locked, read-only) is left exactly as it is, so a second
    click or a stale page can never move a working store aside.
    """
    root = Path(root) if root is not None else default_runs_dir()
    if not check_store(root, timeout).damaged:
        return ResetResult([], {}, [])
    source = root / DATABASE_FILE
    target = _free_name(root, f"{DATABASE_FILE}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
    moved = []
    database = RunDatabase(root, timeout, create=False)
    with database.faults():
        for suffix in (*COMPANIONS, ""):  # side files first: a fresh database must never meet the old log
            if Path(f"{source}{suffix}").exists():
                os.rename(f"{source}{suffix}", f"{target}{suffix}")
                moved.append((Path(f"{source}{suffix}"), Path(f"{target}{suffix}")))
        for suffix in COMPANIONS:  # a side file another process opened in between belongs to the damaged file too
            if Path(f"{source}{suffix}").exists():
                os.rename(f"{source}{suffix}", f"{target}{suffix}-late")
                moved.append((Path(f"{source}{suffix}"), Path(f"{target}{suffix}-late")))
    fresh = RunDatabase(root, timeout)
    recovered, incomplete = _salvage(target, fresh)
    return ResetResult(sorted(moved, key=lambda pair: pair[0].name), recovered, incomplete)


def _free_name(root: Path, name: str) -> Path:
    """``root/name``, or ``name-2``, ``name-3``…: a name that neither it nor its side files use yet."""
    candidate, number = root / name, 1
    while any(Path(f"{candidate}{suffix}").exists() for suffix in ("", *COMPANIONS)):
        number += 1
        candidate = root / f"{name}-{number}"
    return candidate


def _salvage(damaged: Path, fresh: RunDatabase) -> tuple[dict[str, int], list[str]]:
    """Copy every row a *copy* of the damaged file still yields (the original stays untouched)."""
    recovered: dict[str, int] = {}
    incomplete: list[str] = []
    with tempfile.TemporaryDirectory(prefix="metanlp-salvage-") as folder:
        copy = Path(folder) / "damaged.sqlite"
        for suffix in ("", "-wal"):
            if Path(f"{damaged}{suffix}").exists():
                shutil.copyfile(f"{damaged}{suffix}", f"{copy}{suffix}")
        if not copy.exists():
            return recovered, incomplete
        source = sqlite3.connect(copy, isolation_level=None)
        try:
            run_ids: set[str] = set()
            for table in TABLES:
                rows, complete = _readable_rows(source, table, fresh)
                if table == "runs":
                    run_ids = {row[0] for row in rows}
                else:
                    rows = [row for row in rows if row[0] in run_ids]  # run_id is every event table's first column
                recovered[table] = _insert(fresh, table, rows)
                if not complete:
                    incomplete.append(table)
        finally:
            source.close()
    return recovered, incomplete


def _readable_rows(source: sqlite3.Connection, table: str, fresh: RunDatabase) -> tuple[list[tuple], bool]:
    """The rows of ``table`` read before the first unreadable page, in the fresh table's column order."""
    with fresh.connect() as connection:
        columns = [row[1] for row in connection.execute(f"PRAGMA table_info({table})")]
    rows: list[tuple] = []
    try:
        available = {row[1] for row in source.execute(f"PRAGMA table_info({table})")}
        if not available:
            return rows, False
        selected = ", ".join(column if column in available else "NULL" for column in columns)
        for row in source.execute(f"SELECT {selected} FROM {table}"):
            rows.append(row)
    except sqlite3.DatabaseError:
        return rows, False
    return rows, True


def _insert(fresh: RunDatabase, table: str, rows: list[tuple]) -> int:
    if not rows:
        return 0
    placeholders = ", ".join("?" for _ in rows[0])
    with fresh.write() as connection:
        before = connection.total_changes
        connection.executemany(f"INSERT OR IGNORE INTO {table} VALUES ({placeholders})", rows)
        return connection.total_changes - before
