"""Leaderboard helpers: filtering bench results and drawing them (pure functions)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from metanlp.evaluation import PairedComparison
from metanlp.methods import method_caveat

#: The project's own bench results (``bench --export-results``), shown until the user has their own.
SHIPPED_RESULTS = Path(__file__).with_name("shipped_results.json")

TABLE_COLUMNS = {
    "title": "method",
    "dataset": "dataset",
    "split": "class split",
    "k_shot": "K-shot",
    "accuracy": "accuracy %",
    "ci95": "± 95% CI",
    "meta_learned_parameters": "meta-learned params",
    "meta_training": "meta-training",
    "seeds": "seeds",
    "seed_sd": "seed sd",
    "seed_range": "seed range %",
    "vs_reference": "vs ProtoNet (points)",
    "vs_reference_ci95": "± paired 95% CI",
    "train_seconds": "train s",
    "episodes_per_second": "episodes/s",
    "peak_memory_mb": "peak MB",
    "device": "device",
    "episodes": "episodes",
    "published": "published",
    "caveat": "note",
}


def bench_settings(frame: pd.DataFrame) -> list[str]:
    """Distinct bench settings, the one with the most test episodes (then the most cells) first."""
    summary = frame.groupby("setting").agg(episodes=("episodes", "max"), cells=("run_id", "count"))
    return summary.sort_values(["episodes", "cells"], ascending=False).index.tolist()


def filter_results(frame: pd.DataFrame, datasets: list[str], shots: list[int]) -> pd.DataFrame:
    keep = frame["dataset"].isin(datasets) & frame["k_shot"].isin(shots)
    return frame[keep].reset_index(drop=True)


def seed_range(row: pd.Series) -> str:
    """'71.2–73.0' across training seeds; '' with one seed or none."""
    if row["seeds"] < 2:
        return ""
    return f"{row['seed_min']:.1f}–{row['seed_max']:.1f}"


def leaderboard_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Display columns, rounded, best first within each task (dataset, class split, shot)."""
    table = frame.sort_values(["dataset", "split", "k_shot", "accuracy"], ascending=[True, True, True, False]).copy()
    table["seed_range"] = table.apply(seed_range, axis=1) if len(table) else ""
    table["meta_learned_parameters"] = table["meta_learned_parameters"].astype("Int64")
    table["caveat"] = table["method"].map(method_caveat)
    return table[list(TABLE_COLUMNS)].rename(columns=TABLE_COLUMNS).round(2)


def accuracy_bars(frame: pd.DataFrame) -> go.Figure:
    """Grouped bars (one group per dataset and shot) with 95% CI whiskers."""
    figure = go.Figure()
    splits = frame["split"].map(lambda split: "" if split == "default" else f" · split {split}")
    tasks = frame["dataset"] + splits + " · " + frame["k_shot"].astype(str) + "-shot"
    for title in sorted(frame["title"].unique()):
        rows = frame["title"] == title
        figure.add_bar(
            name=title,
            x=tasks[rows],
            y=frame.loc[rows, "accuracy"],
            error_y={"type": "data", "array": frame.loc[rows, "ci95"], "visible": True},
        )
    figure.update_layout(
        barmode="group", yaxis_title="query accuracy (%)", yaxis_range=[0, 100], legend_title="method",
        margin={"l": 40, "r": 10, "t": 30, "b": 40}, height=420,
    )
    return figure


def paired_sentence(name_a: str, name_b: str, comparison: PairedComparison) -> str:
    """One plain sentence a reader can act on."""
    difference = 100 * comparison.mean_difference
    low, high = 100 * comparison.low, 100 * comparison.high
    verdict = (
        f"{name_a if difference > 0 else name_b} is better: the interval excludes 0."
        if comparison.excludes_zero
        else "No significant difference: the interval includes 0."
    )
    return (f"{name_a} − {name_b}: {difference:+.2f} points (95% CI {low:+.2f} to {high:+.2f}) over "
            f"{comparison.episodes} shared episodes (each averaged over the method's training seeds). {verdict}")
