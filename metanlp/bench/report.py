"""Write the bench section of docs/results.md (tables + bar charts) from the run store."""

from __future__ import annotations

import platform
import re
from collections.abc import Collection
from pathlib import Path

import pandas as pd
import torch

from metanlp.bench.results import bench_results
from metanlp.runs.store import RunStore


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    return (f"{cpu}, {torch.get_num_threads()} torch threads, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def bar_chart(frame: pd.DataFrame, title: str, path: Path) -> Path:
    """Horizontal bars of accuracy with 95% CI whiskers, best method on top."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    frame = frame.sort_values("accuracy")
    figure, axes = plt.subplots(figsize=(7, 0.35 * len(frame) + 1.2))
    axes.barh(frame["title"], frame["accuracy"], xerr=frame["ci95"], color="#4C78A8", capsize=3)
    axes.set_xlabel("query accuracy (%), 95% CI")
    axes.set_xlim(0, 100)
    axes.set_title(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def markdown_table(frame: pd.DataFrame) -> str:
    lines = ["| method | accuracy (%) | train s | eval episodes/s | peak MB | device | published |",
             "|---|---|---|---|---|---|---|"]
    for row in frame.itertuples():
        lines.append(
            f"| {row.title} | {row.accuracy:.2f} ± {row.ci95:.2f} | {row.train_seconds:.1f} | "
            f"{row.episodes_per_second:.1f} | {row.peak_memory_mb:.0f} | {row.device} | {row.published} |"
        )
    return "\n".join(lines)


def bench_section(
    store: RunStore,
    charts_dir: Path,
    relative_to: Path,
    settings_note: str = "",
    cells: Collection[str] | None = None,
    chart_prefix: str = "bench",
) -> str:
    frame = bench_results(store, cells)
    if frame.empty:
        return "No bench results in the store yet: run `python -m metanlp bench`."
    parts = [f"Machine: {machine_description()}.", settings_note, ""]
    for (dataset, n_way, k_shot), group in frame.groupby(["dataset", "n_way", "k_shot"], sort=True):
        title = f"{dataset}, {n_way}-way {k_shot}-shot ({int(group['episodes'].iloc[0])} test episodes)"
        chart = bar_chart(group, title, charts_dir / f"{chart_prefix}_{dataset}_{n_way}way_{k_shot}shot.png")
        parts += [f"#### {title}", "", markdown_table(group), "",
                  f"![{title}]({chart.relative_to(relative_to).as_posix()})", ""]
    return "\n".join(parts)


def replace_section(results_path: Path, marker: str, heading: str, body: str) -> Path:
    """Put ``body`` between ``<!-- marker:start -->`` and ``<!-- marker:end -->``; other text stays.

    Each benchmark owns one marked section of docs/results.md, so reruns replace their own
    numbers without touching anyone else's.
    """
    results_path = Path(results_path)
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    block = f"{start}\n{body}\n{end}"
    text = results_path.read_text(encoding="utf-8") if results_path.exists() else "# Results\n"
    if start in text and end in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + f"\n\n## {heading}\n\n" + block + "\n"
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(text, encoding="utf-8")
    return results_path


def write_report(
    store: RunStore,
    results_path: Path,
    settings_note: str = "",
    cells: Collection[str] | None = None,
    section: str = "bench",
    heading: str = "Bench: every method on the same episodes",
) -> Path:
    """Rewrite one bench section of ``results_path`` (tables + charts) from the store.

    ``cells`` limits it to the cells one bench command asked for, and ``section`` names the marked
    block (and prefixes the chart files), so a quick smoke run and a full run keep separate tables.
    """
    results_path = Path(results_path)
    body = bench_section(store, results_path.parent / "results", results_path.parent, settings_note, cells, section)
    return replace_section(results_path, section, heading, body)
