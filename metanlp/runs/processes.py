"""Is the process that claimed a run still alive? Pids get reused, so we also compare start times."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

#: The folder that holds the ``metanlp`` package: child processes import it from here.
PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])


def pythonpath_with_package() -> str:
    """``$PYTHONPATH`` with this metanlp first, for processes (workers, Ray tasks) that must import it."""
    return os.pathsep.join(filter(None, [PACKAGE_PARENT, os.environ.get("PYTHONPATH")]))


def start_detached(arguments: list[str], log_path: Path, append: bool = False) -> int:
    """``python ARGUMENTS`` in its own session (it outlives this process), output to ``log_path``; its pid."""
    env = {**os.environ, "PYTHONPATH": pythonpath_with_package()}
    with open(log_path, "ab" if append else "wb") as log:
        process = subprocess.Popen([sys.executable, *arguments], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                   env=env, start_new_session=True)
    return process.pid


def process_fingerprint(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux ``/proc``), or None where that is unavailable.

    A pid plus its start time names one process for the life of the machine, so a run claimed by a
    dead worker is not mistaken for one owned by an unrelated process that later got the same pid.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: fields after the last ')' start at 3.
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None  # field 22: starttime


def process_alive(pid: int | None, fingerprint: str | None = None) -> bool:
    """True while ``pid`` runs and (where recorded) still has the start time seen when it claimed a run."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by someone else
    if _is_zombie(pid):
        return False
    if fingerprint is not None:
        current = process_fingerprint(pid)
        if current is not None and current != fingerprint:
            return False
    return True


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[-1].split()
    return bool(fields) and fields[0] in ("Z", "X")


def describe_exit(exit_code: int | None) -> str:
    """A user-readable sentence about how a worker process ended."""
    if exit_code is None:
        return "The worker process running this run stopped without reporting an exit code."
    if exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = f"signal {-exit_code}"
        hint = " (for example by the system running out of memory, or kill -9)" if name == "SIGKILL" else ""
        return f"The worker process exited with code {exit_code}: killed by {name}{hint}."
    return f"The worker process exited unexpectedly with code {exit_code}."
