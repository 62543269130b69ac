"""A quick bench started from the Leaderboard page: every method, one small task, in a background process.

It is the CLI's own ``bench --quick`` (10 meta-training steps, 30 test episodes, one seed) on
CLINC150 5-way 1-shot, writing into the dashboard's run store and never into the docs. One runs at
a time per runs folder (``background.py``); its progress is the number of its cells finished.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from metanlp.bench.plan import cell_names, quick_settings
from metanlp.bench.runner import finished_cells
from metanlp.dashboard.background import job_status, start_job
from metanlp.runs.store import RunStore

QUICK_DATASETS = ("clinc150",)
QUICK_SHOTS = (1,)
JOB = "quick_bench"


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


def start_quick_bench(root: str | Path) -> bool:
    """Start the quick bench in the background unless one is running here; True if started."""
    return start_job(root, JOB, quick_bench_arguments(root))


def quick_bench_status(root: str | Path) -> QuickBenchStatus:
    root = Path(root).resolve()
    names = cell_names(quick_settings(datasets=QUICK_DATASETS, shots=QUICK_SHOTS))
    done = len(names & set(finished_cells(RunStore(root)))) if (root / "runs.sqlite").exists() else 0
    job = job_status(root, JOB)
    return QuickBenchStatus(running=job.running, done=done, total=len(names), log_tail=job.log_tail)
