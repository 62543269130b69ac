"""A quick bench started from the Leaderboard page: every method, one small task, in a background process.

It is the CLI's own ``bench --quick`` (10 meta-training steps, 30 test episodes, one seed) on
CLINC150 5-way 1-shot, writing into the dashboard's run store and never into the docs. One runs at
a time per runs folder (its pid file says which); its progress is the number of its cells finished.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from metanlp.bench.plan import cell_names, quick_settings
from metanlp.bench.runner import finished_cells
from metanlp.runs.processes import process_alive
from metanlp.runs.store import RunStore

QUICK_DATASETS = ("clinc150",)
QUICK_SHOTS = (1,)
FOLDER = "bench"
PID_FILE = "quick_bench.pid"
LOG_FILE = "quick_bench.log"


@dataclass(frozen=True)
class QuickBenchStatus:
    running: bool
    done: int  # cells of the quick bench finished in the store
    total: int
    log_tail: str  # the last lines its process wrote (shown when it stopped early)


def quick_bench_arguments(root: str | Path) -> list[str]:
    datasets, shots = ",".join(QUICK_DATASETS), ",".join(map(str, QUICK_SHOTS))
    return ["-m", "metanlp", "bench", "--quick", "--datasets", datasets, "--shots", shots, "--no-report",
            "--no-progress", "--runs-dir", str(Path(root).resolve())]


def _pid(root: Path) -> int | None:
    try:
        return int((root / FOLDER / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def start_quick_bench(root: str | Path) -> bool:
    """Start the quick bench in the background unless one is running here; True if started."""
    root = Path(root).resolve()
    if quick_bench_status(root).running:
        return False
    folder = root / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    package_parent = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH", "")
    env = {**os.environ, "PYTHONPATH": package_parent + (os.pathsep + path if path else "")}
    with open(folder / LOG_FILE, "wb") as log:
        process = subprocess.Popen([sys.executable, *quick_bench_arguments(root)], stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=log, env=env, start_new_session=True)
    (folder / PID_FILE).write_text(str(process.pid))
    return True


def quick_bench_status(root: str | Path) -> QuickBenchStatus:
    root = Path(root).resolve()
    names = cell_names(quick_settings(datasets=QUICK_DATASETS, shots=QUICK_SHOTS))
    done = len(names & set(finished_cells(RunStore(root)))) if (root / "runs.sqlite").exists() else 0
    pid = _pid(root)
    running = pid is not None and process_alive(pid, None)
    try:
        tail = "\n".join((root / FOLDER / LOG_FILE).read_text(errors="replace").splitlines()[-5:])
    except OSError:
        tail = ""
    return QuickBenchStatus(running=running, done=done, total=len(names), log_tail=tail)
