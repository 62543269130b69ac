"""Commands the dashboard starts in the background (a quick bench, a sweep): one at a time per key.

Each is a ``python -m metanlp …`` process in its own session, so closing the page or restarting
the server does not stop it; its pid and log live in the runs folder, which is how a later page
view knows whether it still runs and what it said last.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from metanlp.runs.processes import process_alive, start_detached

FOLDER = "background"


@dataclass(frozen=True)
class BackgroundJob:
    running: bool
    log_tail: str  # the last lines it wrote


def _paths(root: Path, key: str) -> tuple[Path, Path]:
    folder = root / FOLDER
    return folder / f"{key}.pid", folder / f"{key}.log"


def job_status(root: str | Path, key: str, lines: int = 5) -> BackgroundJob:
    pid_file, log_file = _paths(Path(root).resolve(), key)
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        pid = None
    try:
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        tail = ""
    return BackgroundJob(running=pid is not None and process_alive(pid, None), log_tail=tail)


def start_job(root: str | Path, key: str, arguments: list[str]) -> bool:
    """Run ``python ARGUMENTS`` in the background unless the job ``key`` runs already; True if started."""
    root = Path(root).resolve()
    if job_status(root, key).running:
        return False
    pid_file, log_file = _paths(root, key)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(str(start_detached(arguments, log_file)))
    return True
