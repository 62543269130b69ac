"""Read bench results back from the run store: cells, seeds pooled into rows, splits averaged, paired comparisons.

A row is one method on one task (dataset, class split, shot, bench setting), pooled over its
training seeds: the accuracy is the mean over seeds, the 95% CI is over episodes (of each
episode's accuracy averaged over seeds first), and the seeds' spread sits beside it. Datasets
benched on several class splits also get a "mean of N splits" row. Every row is compared with
ProtoNet episode by episode on the identical episodes (checked by content hash).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from metanlp.bench.plan import BENCH_PREFIX, cell_name, published_note
from metanlp.engine.config import NO_META_TRAINING, RunConfig
from metanlp.evaluation import (
    EpisodeMismatch,
    PairedComparison,
    check_same_episodes,
    mean_and_ci95,
    paired_comparison,
    sample_std,
)
from metanlp.methods import get_method_class
from metanlp.runs.store import RunStore

REFERENCE_METHOD = "protonet"  # every row is compared with this method's plain row on the same episodes
DEFAULT_SPLIT = "default"
TASK = ["dataset", "split", "n_way", "k_shot", "setting"]  # rows that share these saw the same episodes

#: Episode accuracies of one seed group, by episode fingerprint: {hash: (episodes,) mean over seeds}.
Pooled = dict[str, np.ndarray]

COLUMNS = [
    "run_id", "run_ids", "method", "variant", "title", "dataset", "split", "splits", "n_way", "k_shot",
    "accuracy", "ci95", "episodes", "seeds", "seed_sd", "seed_min", "seed_max", "seed_ci95", "split_min",
    "split_max", "meta_learned_parameters", "meta_trained", "meta_training", "vs_reference", "vs_reference_ci95",
    "vs_reference_significant", "train_steps", "setting", "train_seconds", "episodes_per_second",
    "peak_memory_mb", "device", "published",
]


def bench_runs(store: RunStore) -> list:
    return [r for r in store.list_runs(statuses=("done",)) if r.name.startswith(BENCH_PREFIX) and r.evaluation]


def option_variant(options: dict, seed: int | None = None) -> str:
    """The options a cell set beyond the bench default, e.g. 'head_hidden=256' ('' for none).

    ``finetune=auto`` and a method ``seed`` that follows the training seed are the bench's own
    settings, not a variant.
    """
    return ", ".join(
        f"{key}={value}" for key, value in sorted(options.items())
        if not (key == "finetune" and value == "auto") and not (key == "seed" and value == seed)
    )


def setting_label(episodes: int, train_steps: int, n_query: int, budget: str = "fixed") -> str:
    """What makes two bench rows comparable: the same episodes and the same training budget rule."""
    steps = "recommended training steps" if budget == "recommended" else f"{train_steps} training steps"
    return f"{episodes} episodes · {steps} · {n_query} queries"


def meta_training_label(meta_trained: bool) -> str:
    return "meta-trained" if meta_trained else NO_META_TRAINING


def split_label(split_id: str | None) -> str:
    return split_id or DEFAULT_SPLIT


def _title(config: dict) -> tuple[str, str]:
    try:
        title = get_method_class(config["method"]).card.title
    except ValueError:
        title = config["method"]
    variant = option_variant(config.get("method_options", {}), config.get("seed"))
    return (f"{title} [{variant}]" if variant else title), variant


#: The variant of a cell run under a method's earlier defaults: never pooled with the current ones.
EARLIER_DEFAULTS = "earlier defaults"


def superseded(name: str, config: dict) -> bool:
    """A bench cell whose name no longer matches its configuration resolved with today's defaults."""
    try:
        return name != cell_name(RunConfig.from_dict(config))
    except Exception:  # noqa: BLE001 - e.g. a method no longer registered, a user file since removed
        return False


def cell_results(store: RunStore, cells: Collection[str] | None = None) -> pd.DataFrame:
    """One row per finished cell (its newest run): one training seed of one method on one task."""
    rows, seen = [], set()
    for record in bench_runs(store):
        if record.name in seen or (cells is not None and record.name not in cells):
            continue
        seen.add(record.name)
        config, evaluation = record.config, record.evaluation
        title, variant = _title(config)
        if cells is None and superseded(record.name, config):  # a changed default: keep it apart
            variant = ", ".join(filter(None, [variant, EARLIER_DEFAULTS]))
            title = f"{_title({**config, 'method_options': {}})[0]} [{variant}]"
        rows.append({
            "run_id": record.id,
            "method": config["method"],
            "variant": variant,
            "title": title,
            "dataset": config["dataset"],
            "split": split_label(config.get("split_id")),
            "n_way": config["n_way"],
            "k_shot": config["k_shot"],
            "seed": config.get("seed", 0),
            "accuracy": 100 * evaluation["mean_accuracy"],
            "ci95": 100 * evaluation["ci95"],
            "episodes": evaluation["episodes"],
            "episodes_hash": evaluation.get("episodes_hash", ""),
            "train_steps": config["train_steps"],
            "setting": setting_label(evaluation["episodes"], config["train_steps"], config["n_query"],
                                     evaluation.get("train_budget", "fixed")),
            "train_seconds": evaluation.get("train_seconds", float("nan")),
            "episodes_per_second": evaluation["episodes"] / max(evaluation["seconds"], 1e-9),
            "peak_memory_mb": evaluation.get("peak_memory_mb", float("nan")),
            "device": evaluation.get("device", ""),
            "meta_learned_parameters": evaluation.get("meta_learned_parameters", float("nan")),
            "meta_trained": bool(evaluation.get("meta_trained", config["train_steps"] > 0)),
        })
    return pd.DataFrame(rows, columns=[
        "run_id", "method", "variant", "title", "dataset", "split", "n_way", "k_shot", "seed", "accuracy", "ci95",
        "episodes", "episodes_hash", "train_steps", "setting", "train_seconds", "episodes_per_second",
        "peak_memory_mb", "device", "meta_learned_parameters", "meta_trained",
    ])


def episode_accuracies(store: RunStore, run_id: str) -> np.ndarray:
    """(episodes,) query accuracy of each test episode of a run, in episode order."""
    return store.episode_results(run_id)["query_accuracy"].to_numpy(dtype=float)


def pool_seeds(runs: Iterable[tuple[str, np.ndarray]]) -> Pooled:
    """Average each episode's accuracy over the runs (seeds) scored on the same episodes."""
    by_hash: dict[str, list[np.ndarray]] = {}
    for episodes_hash, accuracies in runs:
        by_hash.setdefault(episodes_hash, []).append(accuracies)
    pooled = {}
    for episodes_hash, arrays in by_hash.items():
        if len({len(a) for a in arrays}) != 1:
            raise EpisodeMismatch(f"runs with episode fingerprint {episodes_hash!r} scored different numbers of episodes")
        pooled[episodes_hash] = np.mean(arrays, axis=0)
    return pooled


def paired_pooled(a: Pooled, b: Pooled, detail: str = "") -> PairedComparison:
    """A minus B over every episode set both were scored on; refuses if their episode sets differ.

    Several episode sets (one per class split) are concatenated: each split's episodes pair with
    themselves, so the mean difference is the mean over splits (equal episode counts).
    """
    for hash_a, hash_b in itertools.zip_longest(sorted(a), sorted(b), fillvalue=""):
        check_same_episodes(hash_a, hash_b, detail)
    order = sorted(a)
    return paired_comparison(np.concatenate([a[h] for h in order]).tolist(),
                             np.concatenate([b[h] for h in order]).tolist())


def paired_runs(store: RunStore, runs_a: Iterable[str], runs_b: Iterable[str]) -> PairedComparison:
    """Seeds pooled: A minus B over the identical episodes (each episode averaged over seeds first)."""
    runs_a, runs_b = list(runs_a), list(runs_b)

    def pooled(run_ids: list[str]) -> Pooled:
        return pool_seeds((store.get_run(r).evaluation.get("episodes_hash", ""), episode_accuracies(store, r))
                          for r in run_ids)

    return paired_pooled(pooled(runs_a), pooled(runs_b), _config_difference(store, runs_a[0], runs_b[0]))


def paired_results(store: RunStore, run_a: str, run_b: str) -> PairedComparison:
    """A minus B over their test episodes; raises ``EpisodeMismatch`` unless they are the identical ones."""
    return paired_runs(store, [run_a], [run_b])


def _config_difference(store: RunStore, run_a: str, run_b: str) -> str:
    config_a, config_b = store.get_run(run_a).config, store.get_run(run_b).config
    task = ("dataset", "split_id", "n_way", "k_shot", "n_query", "eval_episodes", "eval_seed", "data_file")
    differing = [key for key in task if config_a.get(key) != config_b.get(key)]
    return f"; their configurations differ in {', '.join(differing)}" if differing else ""


@dataclass
class _Row:
    values: dict
    pooled: Pooled
    seed_means: dict[int, float]  # training seed → accuracy (%)


def _seed_statistics(seed_means: list[float]) -> dict:
    """Spread of a row's accuracy across training seeds; the interval uses Student's t."""
    _, seed_ci95 = mean_and_ci95(seed_means)
    return {
        "seeds": len(seed_means),
        "seed_sd": sample_std(seed_means),
        "seed_min": min(seed_means, default=float("nan")),
        "seed_max": max(seed_means, default=float("nan")),
        "seed_ci95": seed_ci95,
    }


def _pooled_row(store: RunStore, cells: pd.DataFrame) -> _Row:
    """One method on one task: its seeds pooled."""
    cells = cells.sort_values("seed")
    first = cells.iloc[0].to_dict()  # plain values: indexing a pandas row per field is slow over hundreds of rows
    pooled = pool_seeds(
        (episodes_hash, episode_accuracies(store, run_id))
        for episodes_hash, run_id in zip(cells["episodes_hash"], cells["run_id"], strict=True)
    )
    if len(pooled) > 1:
        raise EpisodeMismatch(f"the seeds of {first['title']} on {first['dataset']} were scored on different episodes")
    (accuracies,) = pooled.values()
    accuracy, ci95 = mean_and_ci95(accuracies.tolist())
    seed_means = dict(zip(cells["seed"], cells["accuracy"], strict=True))
    values = {
        **{key: first[key] for key in ("method", "variant", "title", "dataset", "split", "n_way", "k_shot",
                                        "episodes", "train_steps", "setting", "device")},
        "run_id": first["run_id"],
        "run_ids": tuple(cells["run_id"]),
        "splits": 1,
        "accuracy": 100 * accuracy,
        "ci95": 100 * ci95,
        **_seed_statistics(list(seed_means.values())),
        "split_min": float("nan"),
        "split_max": float("nan"),
        "meta_learned_parameters": first["meta_learned_parameters"],
        "meta_trained": bool(cells["meta_trained"].any()),
        "train_seconds": cells["train_seconds"].mean(),
        "episodes_per_second": cells["episodes_per_second"].mean(),
        "peak_memory_mb": cells["peak_memory_mb"].max(),
        "published": published_note(first["dataset"], int(first["k_shot"]), int(first["n_way"])),
    }
    return _Row(values, pooled, seed_means)


def _split_mean_row(rows: list[_Row]) -> _Row:
    """One method over every class split of a dataset: the mean of its per-split rows."""
    first = rows[0].values
    accuracies = [row.values["accuracy"] for row in rows]
    common_seeds = set.intersection(*(set(row.seed_means) for row in rows))
    # A seed's accuracy over splits: the training-seed spread of the split mean.
    seed_means = {seed: float(np.mean([row.seed_means[seed] for row in rows])) for seed in sorted(common_seeds)}
    pooled: Pooled = {}
    for row in rows:
        pooled.update(row.pooled)
    values = {
        **first,
        "split": f"mean of {len(rows)}",
        "splits": len(rows),
        "run_id": first["run_id"],
        "run_ids": tuple(run for row in rows for run in row.values["run_ids"]),
        "accuracy": float(np.mean(accuracies)),
        # Independent episode sets: the variance of a mean of S means is the sum of theirs over S².
        "ci95": math.sqrt(sum(row.values["ci95"] ** 2 for row in rows)) / len(rows),
        **_seed_statistics(list(seed_means.values())),
        "split_min": min(accuracies),
        "split_max": max(accuracies),
        "meta_trained": any(row.values["meta_trained"] for row in rows),
        "train_seconds": float(np.mean([row.values["train_seconds"] for row in rows])),
        "episodes_per_second": float(np.mean([row.values["episodes_per_second"] for row in rows])),
        "peak_memory_mb": max(row.values["peak_memory_mb"] for row in rows),
    }
    return _Row(values, pooled, seed_means)


def _add_reference_comparisons(rows: list[_Row]) -> None:
    """Each row minus the plain ProtoNet row of its task, paired over the identical episodes."""
    references = {
        tuple(row.values[key] for key in TASK): row
        for row in rows if row.values["method"] == REFERENCE_METHOD and not row.values["variant"]
    }
    for row in rows:
        reference = references.get(tuple(row.values[key] for key in TASK))
        row.values.update(vs_reference=float("nan"), vs_reference_ci95=float("nan"), vs_reference_significant=False)
        if reference is None or reference is row:
            continue
        try:
            comparison = paired_pooled(row.pooled, reference.pooled)
        except EpisodeMismatch:  # e.g. cells evaluated before episode fingerprints were recorded
            continue
        row.values.update(
            vs_reference=100 * comparison.mean_difference,
            vs_reference_ci95=100 * comparison.ci95,
            vs_reference_significant=comparison.excludes_zero,
        )


def bench_results(store: RunStore, cells: Collection[str] | None = None) -> pd.DataFrame:
    """One row per method and task, seeds pooled; plus a 'mean of N' row per dataset benched on N splits.

    ``cells`` (names from ``plan.cell_names``) keeps only those cells, e.g. the ones one bench command ran.
    """
    frame = cell_results(store, cells)
    rows = [_pooled_row(store, group) for _, group in frame.groupby(["title", *TASK], sort=False)]
    by_dataset: dict[tuple, list[_Row]] = {}
    for row in rows:
        key = tuple(row.values[k] for k in ("title", "dataset", "n_way", "k_shot", "setting"))
        by_dataset.setdefault(key, []).append(row)
    rows += [_split_mean_row(group) for group in by_dataset.values() if len(group) > 1]
    _add_reference_comparisons(rows)
    for row in rows:
        row.values["meta_training"] = meta_training_label(row.values["meta_trained"])
    result = pd.DataFrame([row.values for row in rows], columns=COLUMNS)
    return result.sort_values(
        ["dataset", "k_shot", "split", "accuracy"], ascending=[True, True, True, False]
    ).reset_index(drop=True)


SHIPPED_FORMAT = "metanlp-bench-results-1"


def export_results(results: pd.DataFrame, path: str | Path, command: str, machine: str, note: str = "") -> Path:
    """Write pooled bench rows as JSON (no run ids: they belong to one store) with how they were measured."""
    rows = results.drop(columns=["run_id", "run_ids"]).to_dict(orient="records")
    for row in rows:
        for key, value in row.items():
            if isinstance(value, float) and not math.isfinite(value):
                row[key] = None
            elif isinstance(value, tuple):
                row[key] = list(value)
    path = Path(path)
    path.write_text(json.dumps({"format": SHIPPED_FORMAT, "command": command, "machine": machine, "note": note,
                                "rows": rows}, indent=1, default=str), encoding="utf-8")
    return path


def load_exported_results(path: str | Path) -> tuple[pd.DataFrame, dict] | None:
    """Rows and description of ``export_results`` output; None when the file is missing or not one."""
    try:
        content = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(content, dict) or content.get("format") != SHIPPED_FORMAT or not content.get("rows"):
        return None
    frame = pd.DataFrame(content["rows"])
    frame["run_id"], frame["run_ids"] = "", [() for _ in range(len(frame))]
    frame = frame.reindex(columns=COLUMNS)
    return frame, {key: content.get(key, "") for key in ("command", "machine", "note")}
