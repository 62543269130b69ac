"""Read bench results back from the run store: one row per cell, and paired comparisons."""

from __future__ import annotations

from collections.abc import Collection

import pandas as pd

from metanlp.bench.plan import BENCH_PREFIX, PUBLISHED
from metanlp.evaluation import PairedComparison, paired_comparison
from metanlp.methods import get_method_class
from metanlp.runs.store import RunStore


def bench_runs(store: RunStore) -> list:
    return [r for r in store.list_runs(statuses=("done",)) if r.name.startswith(BENCH_PREFIX) and r.evaluation]


def option_variant(options: dict) -> str:
    """The options a cell set beyond the bench default, e.g. 'head_hidden=256' ('' for none)."""
    return ", ".join(
        f"{key}={value}" for key, value in sorted(options.items()) if not (key == "finetune" and value == "auto")
    )


def setting_label(episodes: int, train_steps: int, n_query: int) -> str:
    """What makes two bench runs comparable: the same episodes and the same training budget."""
    return f"{episodes} episodes · {train_steps} training steps · {n_query} queries"


def bench_results(store: RunStore, cells: Collection[str] | None = None) -> pd.DataFrame:
    """Newest finished result of each cell: method, dataset, shot, accuracy ± CI, time, memory.

    ``cells`` (names from ``plan.cell_names``) keeps only those cells, e.g. the ones one bench command ran.
    """
    rows, seen = [], set()
    for record in bench_runs(store):
        if record.name in seen or (cells is not None and record.name not in cells):
            continue
        seen.add(record.name)
        config, evaluation = record.config, record.evaluation
        try:
            title = get_method_class(config["method"]).card.title
        except ValueError:
            title = config["method"]
        variant = option_variant(config.get("method_options", {}))
        if variant:
            title = f"{title} [{variant}]"
        rows.append({
            "run_id": record.id,
            "method": config["method"],
            "title": title,
            "dataset": config["dataset"],
            "n_way": config["n_way"],
            "k_shot": config["k_shot"],
            "accuracy": 100 * evaluation["mean_accuracy"],
            "ci95": 100 * evaluation["ci95"],
            "episodes": evaluation["episodes"],
            "train_steps": config["train_steps"],
            "setting": setting_label(evaluation["episodes"], config["train_steps"], config["n_query"]),
            "train_seconds": evaluation.get("train_seconds", float("nan")),
            "episodes_per_second": evaluation["episodes"] / max(evaluation["seconds"], 1e-9),
            "peak_memory_mb": evaluation.get("peak_memory_mb", float("nan")),
            "device": evaluation.get("device", ""),
            "published": PUBLISHED.get((config["dataset"], config["k_shot"]), "") if config["n_way"] == 5 else "",
        })
    columns = ["run_id", "method", "title", "dataset", "n_way", "k_shot", "accuracy", "ci95", "episodes",
               "train_steps", "setting", "train_seconds", "episodes_per_second", "peak_memory_mb", "device", "published"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values(["dataset", "k_shot", "accuracy"], ascending=[True, True, False]).reset_index(drop=True)


def paired_results(store: RunStore, run_a: str, run_b: str) -> PairedComparison:
    """A minus B over their shared test episodes (the bench gives every method the same ones)."""
    config_a, config_b = store.get_run(run_a).config, store.get_run(run_b).config
    task = ("dataset", "split_id", "n_way", "k_shot", "n_query", "eval_episodes", "eval_seed", "data_file")
    differing = [key for key in task if config_a.get(key) != config_b.get(key)]
    if differing:
        raise ValueError(f"these runs were evaluated on different episodes (they differ in {', '.join(differing)})")
    a = store.episode_results(run_a).set_index("episode")["query_accuracy"]
    b = store.episode_results(run_b).set_index("episode")["query_accuracy"]
    common = a.index.intersection(b.index)
    if len(common) == 0:
        raise ValueError("these two runs share no evaluation episodes")
    return paired_comparison(a.loc[common].tolist(), b.loc[common].tolist())
