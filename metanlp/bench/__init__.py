"""The benchmark suite: every method on the same saved episodes, results in the run store."""

from metanlp.bench.plan import BenchSettings, bench_configs, quick_settings
from metanlp.bench.results import bench_results, paired_results, paired_runs
from metanlp.bench.runner import run_bench

__all__ = [
    "BenchSettings", "bench_configs", "bench_results", "paired_results", "paired_runs", "quick_settings", "run_bench",
]
