"""Store faults: SQLite and file-system errors turned into one message a user can act on.

A read-only runs folder, a full disk, a store locked by another program and a damaged database
each raise ``StoreError`` (``StoreCorrupted`` for the damaged database), whose message names the
folder or file and says what to do. The CLI prints it as one line (exit code 2); the dashboard
shows it in an error box. Anything else (a bug, a constraint violation) is left as it was.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from pathlib import Path

RESET_COMMAND = "python -m metanlp doctor --reset-store"

# SQLite's primary result codes (https://sqlite.org/rescode.html) → the fault a user sees.
_SQLITE_CODES = {3: "read_only", 5: "locked", 6: "locked", 8: "read_only", 10: "disk_error", 11: "corrupted",
                 13: "disk_full", 14: "cannot_open", 26: "corrupted"}
# The same faults by message, for errors raised without a code (older Pythons, other wrappers).
_SQLITE_MESSAGES = (
    ("database or disk is full", "disk_full"),
    ("disk i/o error", "disk_error"),
    ("readonly database", "read_only"),
    ("database is locked", "locked"),
    ("database table is locked", "locked"),
    ("file is not a database", "corrupted"),
    ("malformed", "corrupted"),
    ("unable to open database file", "cannot_open"),
    ("no such table", "schema_missing"),
)
_ERRNO_KINDS = {errno.EACCES: "read_only", errno.EPERM: "read_only", errno.EROFS: "read_only",
                errno.ENOSPC: "disk_full", getattr(errno, "EDQUOT", errno.ENOSPC): "disk_full", errno.EIO: "disk_error",
                errno.EEXIST: "not_a_folder", errno.ENOTDIR: "not_a_folder"}


class StoreError(RuntimeError):
    """The run store cannot be used as it is: its folder, its disk or its database is at fault.

    ``kind`` is one of read_only, disk_full, disk_error, locked, corrupted, cannot_open, not_a_folder;
    ``root`` is the runs folder, ``path`` the file or folder at fault.
    """

    def __init__(self, message: str, kind: str, root: Path, path: Path) -> None:
        super().__init__(message)
        self.kind = kind
        self.root = root
        self.path = path

    def __reduce__(self):  # picklable across processes despite the richer constructor
        return type(self), (str(self), self.kind, self.root, self.path)


class StoreCorrupted(StoreError):
    """The database file is damaged: only moving it aside (on the user's request) gets a working store."""


def store_fault(error: BaseException, root: Path, db_path: Path, timeout: float) -> StoreError | None:
    """The ``StoreError`` that ``error`` (or what caused it) amounts to; None when it is no store fault."""
    cause = _fault_cause(error)
    if isinstance(cause, sqlite3.Error):
        kind, path = _sqlite_kind(cause), db_path
    elif isinstance(cause, OSError):
        kind, path = _ERRNO_KINDS.get(cause.errno), Path(cause.filename) if cause.filename else root
    else:
        return None
    if kind == "cannot_open" and not _writable(root):
        kind = "read_only"
    if kind == "disk_error" and _nearly_full(root):
        kind = "disk_full"  # SQLite reports a full disk as an I/O error when the WAL cannot grow
    if kind is None:
        return None
    detail = " ".join(str(cause).split()) or type(cause).__name__
    message = _describe(kind, detail, root, path, timeout)
    error_class = StoreCorrupted if kind in ("corrupted", "schema_missing") else StoreError
    return error_class(message, "corrupted" if kind == "schema_missing" else kind, root, path)


def corrupted(root: Path, db_path: Path, detail: str) -> StoreCorrupted:
    """The error for a database found damaged by a check rather than by a failing query."""
    return StoreCorrupted(_describe("corrupted", detail, root, db_path, 0.0), "corrupted", root, db_path)


def _fault_cause(error: BaseException) -> BaseException | None:
    """The SQLite or OS error behind ``error`` (pandas, for one, wraps SQLite's errors in its own).

    Only explicit causes (``raise ... from``) count: an error merely raised while another was
    being handled is not that other error.
    """
    seen: BaseException | None = error
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError)):
            return None  # the caller's own business (an id collision, a bug), not the store's health
        if isinstance(seen, sqlite3.Error) or (isinstance(seen, OSError) and seen.errno is not None):
            return seen
        seen = seen.__cause__
    return None


def _sqlite_kind(error: sqlite3.Error) -> str | None:
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None and (code & 0xFF) in _SQLITE_CODES:
        return _SQLITE_CODES[code & 0xFF]
    text = str(error).lower()
    return next((kind for phrase, kind in _SQLITE_MESSAGES if phrase in text), None)


def _writable(folder: Path) -> bool:
    """Whether files can be created in ``folder`` (a read-only mount refuses even root)."""
    return folder.is_dir() and os.access(folder, os.W_OK)


def _nearly_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < 1024 * 1024
    except OSError:
        return False


def reset_hint(root: Path) -> str:
    """The command that moves a damaged database aside, with ``--runs-dir`` unless it is the default."""
    from metanlp.runs.database import default_runs_dir

    default = default_runs_dir().expanduser().resolve()
    return RESET_COMMAND if root.expanduser().resolve() == default else f'{RESET_COMMAND} --runs-dir "{root}"'


def _describe(kind: str, detail: str, root: Path, path: Path, timeout: float) -> str:
    from metanlp.runs.database import RUNS_DIR_ENV

    if kind == "read_only":
        return (f"The run store {path} is read-only ({detail}): make {root} and the files in it writable, or set "
                f"{RUNS_DIR_ENV} (or --runs-dir) to a folder you can write to.")
    if kind == "disk_full":
        return (f"The disk holding the run store {root} is full ({detail}): free some space there, then try again; "
                "the runs already stored are kept.")
    if kind == "disk_error":
        return (f"The run store {path} could not be read or written ({detail}): the disk may be full or failing. "
                "Free some space or check the disk, then try again.")
    if kind == "locked":
        return (f"The run store {path} stayed locked by another program for more than {timeout:g} s ({detail}): "
                "close whatever holds it (an sqlite3 shell, a stuck process), then try again.")
    if kind == "not_a_folder":
        return (f"The run store needs {root} to be a folder, but {path} is a file or lies under one ({detail}): move that file, or set "
                f"{RUNS_DIR_ENV} (or --runs-dir) to a folder.")
    if kind == "cannot_open":
        return (f"The run store {path} could not be opened ({detail}): check that the folder {root} exists and "
                "that you can read and write it.")
    what = "has no run table (it was emptied or replaced)" if kind == "schema_missing" else f"is damaged ({detail})"
    return (f"The run store's database {path} {what}. Nothing was changed. To move it aside (kept, with a "
            f"timestamp) and start a fresh store, run `{reset_hint(root)}` or use the button on the dashboard; "
            f"the run folders in {root / 'runs'} are kept.")
