"""Write the bench section of docs/results.md (tables + bar charts) from the run store."""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path

import pandas as pd

from metanlp.bench.machine import machine_description
from metanlp.bench.results import REFERENCE_METHOD, bench_results
from metanlp.engine.config import NO_META_TRAINING
from metanlp.methods import get_method_class, method_caveat
from metanlp.runs.store import RunStore

READING = (
    "How to read a row: accuracy is the mean over training seeds, ± the 95% CI over test episodes (Student's t, "
    "sample standard deviation, each episode's accuracy averaged over seeds first); *training seeds* gives the "
    "spread across seeds (sample sd, range, and the Student-t 95% interval of the mean over seeds); *vs ProtoNet* "
    "is the paired difference with Prototypical Networks on the identical episodes, in points, with its 95% CI. "
    "A mean over class splits averages the splits' rows; its CI combines theirs as independent (√Σ CI² / S), and "
    "its vs-ProtoNet pairs every split's episodes. A method that did not meta-train (nothing to meta-learn in its "
    "configuration) runs once: without training it has no training variance."
)


def bar_chart(frame: pd.DataFrame, title: str, path: Path) -> Path:
    """Horizontal bars of accuracy (mean over seeds) with 95% episode-CI whiskers, best method on top."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    frame = frame.sort_values("accuracy")
    figure, axes = plt.subplots(figsize=(7, 0.35 * len(frame) + 1.2))
    axes.barh(frame["title"], frame["accuracy"], xerr=frame["ci95"], color="#4C78A8", capsize=3)
    axes.set_xlabel("query accuracy (%), mean over training seeds; 95% CI over episodes")
    axes.set_xlim(0, 100)
    axes.set_title(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def parameters_cell(row) -> str:
    """The meta-learned parameter count, and the plain label when nothing was meta-trained."""
    count = row.meta_learned_parameters
    number = f"{int(count):,}" if count == count else "?"  # NaN: a cell stored before counts were kept
    return number if row.meta_trained else f"{number} · {NO_META_TRAINING}"


def seeds_cell(row) -> str:
    """Training variance: how many seeds and how far apart they landed."""
    if not row.meta_trained:
        return "1 run (not meta-trained: no training variance)"
    if row.seeds < 2:
        return f"{int(row.seeds)} seed"
    return (f"{int(row.seeds)} seeds: sd {row.seed_sd:.2f}, range {row.seed_min:.1f}–{row.seed_max:.1f}, "
            f"mean ± {row.seed_ci95:.2f} (t, 95%)")


def reference_cell(row) -> str:
    """Paired difference with ProtoNet on the same episodes (seeds averaged per episode first)."""
    if row.method == REFERENCE_METHOD and not row.variant:
        return "reference"
    if row.vs_reference != row.vs_reference:
        return "—"
    low, high = row.vs_reference - row.vs_reference_ci95, row.vs_reference + row.vs_reference_ci95
    return f"{signed(row.vs_reference)} [{signed(low)}, {signed(high)}]"


def signed(points: float) -> str:
    """'+1.23' / '-0.50'; a difference that rounds to zero is '+0.00', never '-0.00'."""
    return f"{round(points, 2) + 0.0:+.2f}"


def markdown_table(frame: pd.DataFrame, split_column: str = "") -> str:
    """``split_column``: "split" (one row per class split) or "splits" (the range over splits of a mean row)."""
    extra = {"split": "split", "splits": "over splits (min–max)"}.get(split_column, "")
    header = ["method", *([extra] if extra else []), "meta-learned parameters", "accuracy (%) ± 95% CI",
              "training seeds", "vs ProtoNet (paired, 95% CI)", "train s", "eval episodes/s", "peak MB", "device"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in frame.itertuples():
        split = {"split": row.split, "splits": f"{row.split_min:.1f}–{row.split_max:.1f}"}.get(split_column)
        cells = [row.title, *([split] if extra else []), parameters_cell(row), f"{row.accuracy:.2f} ± {row.ci95:.2f}",
                 seeds_cell(row), reference_cell(row), f"{row.train_seconds:.1f}", f"{row.episodes_per_second:.1f}",
                 f"{row.peak_memory_mb:.0f}", row.device]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _published_line(group: pd.DataFrame) -> list[str]:
    note = group["published"].iloc[0]
    return [f"Published (5-way): {note}.", ""] if note else []


def task_section(group: pd.DataFrame, title: str, chart: Path, relative_to: Path) -> list[str]:
    """One task: the headline table (split means, where there are several splits) and its chart."""
    means = group[group["splits"] > 1]
    headline = means if len(means) else group
    bar_chart(headline, title, chart)
    parts = [f"#### {title}", "", *_published_line(group)]
    if len(means):
        parts += [markdown_table(means.sort_values("accuracy", ascending=False), "splits"), "",
                  f"![{title}]({chart.relative_to(relative_to).as_posix()})", "",
                  "Per class split:", "",
                  markdown_table(group[group["splits"] == 1].sort_values(["split", "accuracy"],
                                                                        ascending=[True, False]), "split"), ""]
    else:
        parts += [markdown_table(headline), "", f"![{title}]({chart.relative_to(relative_to).as_posix()})", ""]
    return parts


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
    parts = [f"Machine: {machine_description(device=None, load=False)}.", settings_note, "", READING, ""]
    for (dataset, n_way, k_shot, _), group in frame.groupby(["dataset", "n_way", "k_shot", "setting"], sort=True):
        n_splits, episodes = int(group["splits"].max()), int(group["episodes"].iloc[0])
        title = f"{dataset}, {n_way}-way {k_shot}-shot " + (
            f"({episodes} test episodes)" if n_splits == 1
            else f"(mean of {n_splits} class splits, {episodes} test episodes each)"
        )
        chart = charts_dir / f"{chart_prefix}_{dataset}_{n_way}way_{k_shot}shot.png"
        parts += task_section(group, title, chart, relative_to)
    return "\n".join(parts + caveat_notes(frame))


def caveat_notes(frame: pd.DataFrame) -> list[str]:
    """The method cards' measured shortcomings of their defaults, for the methods in the tables."""
    notes = [f"- **{get_method_class(method).card.title}**: {method_caveat(method)}"
             for method in sorted(frame["method"].unique()) if method_caveat(method)]
    return ["#### Notes on defaults", "", *notes, ""] if notes else []


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
