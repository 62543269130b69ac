"""Does meta-training pay? Each meta-learned bench row against the same method before meta-training.

For every method that meta-trains in the main bench, the same cell with ``train_steps=0`` (the
method exactly as built: its initial parameters, its own adaptation) is scored on the *same saved
test episodes* (cells reused from the store when finished), and the two are compared episode by
episode (each episode's accuracy averaged over the training seeds first; Student-t 95% interval).
FewRel's class splits are pooled, as in the bench report. Methods with nothing to meta-train are
left out: their bench row is already their untrained self.

    python -m metanlp bench untrained --datasets clinc150,huffpost,fewrel --report docs/results.md
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from metanlp.bench.machine import machine_description
from metanlp.bench.plan import BenchSettings, cell_names
from metanlp.bench.results import cell_results, paired_runs
from metanlp.bench.runner import run_bench
from metanlp.bench.studies import Study, register_study
from metanlp.bench.studies._common import command_line, write_section
from metanlp.evaluation import EpisodeMismatch
from metanlp.runs import RunStore

NAME = "untrained"
DESCRIPTION = "each meta-trained bench row against the same method with 0 meta-training steps, paired"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--datasets", default="clinc150,huffpost,fewrel")
    parser.add_argument("--shots", default="1,5")
    parser.add_argument("--methods", default="", help="comma-separated (default: every method that meta-trains)")
    parser.add_argument("--episodes", type=int, default=300, help="test episodes per cell (as the main bench)")
    parser.add_argument("--fewrel-shots", default="1", help="shots benched on FewRel's splits (its 5-shot may be "
                        "missing from the store)")
    parser.add_argument("--runs-dir", help="the run store with the main bench's cells (default: ./runs)")
    parser.add_argument("--embedding-cache", help="the main bench's embeddings file (saves re-embedding test sentences)")
    parser.add_argument("--report", default="", help="also write the table as the 'untrained' section of this file")


def _settings(args: argparse.Namespace, dataset: str, shots: str) -> BenchSettings:
    methods = tuple(name for name in args.methods.split(",") if name)
    return BenchSettings(methods=methods, datasets=(dataset,), shots=tuple(int(k) for k in shots.split(",")),
                         episodes=args.episodes)


def run(args: argparse.Namespace) -> int:
    store = RunStore(args.runs_dir)
    rows = []
    for dataset in (name.strip() for name in args.datasets.split(",") if name.strip()):
        trained = _settings(args, dataset, args.fewrel_shots if dataset == "fewrel" else args.shots)
        untrained = dataclasses.replace(trained, train_steps=0, seeds=1)
        cache = Path(args.embedding_cache) if args.embedding_cache else None
        run_bench(untrained, store, embedding_file=cache)  # the 0-step cells (finished ones are reused)
        after = cell_results(store, cell_names(trained))
        before = cell_results(store, cell_names(untrained))
        for (method, k_shot), group in after[after["meta_trained"]].groupby(["method", "k_shot"]):
            base = before[(before["method"] == method) & (before["k_shot"] == k_shot)]
            if base.empty:
                continue
            try:
                comparison = paired_runs(store, list(group["run_id"]), list(base["run_id"]))
            except EpisodeMismatch as error:  # never compare different episodes
                print(f"skipped {method} {dataset} {k_shot}-shot: {error}")
                continue
            splits = sorted(set(group["split"]))
            rows.append({
                "method": group["title"].iloc[0], "dataset": dataset, "k_shot": int(k_shot),
                "splits": len(splits), "seeds": int(group["seed"].nunique()),
                "untrained": base["accuracy"].mean(), "meta_trained": group["accuracy"].mean(),
                "difference": 100 * comparison.mean_difference, "low": 100 * comparison.low,
                "high": 100 * comparison.high, "excludes_zero": comparison.excludes_zero,
            })
    table = markdown(args, rows)
    print(table)
    if args.report:
        write_section(args.report, NAME, "Does meta-training pay? Each method against its untrained self", table)
    return 0


def markdown(args: argparse.Namespace, rows: list[dict]) -> str:
    lines = [
        f"Produced by `{command_line(NAME, args, add_arguments)}`. Machine: {machine_description()}. Each row: "
        "the main bench's cells of a method that meta-trains (its recommended steps, 3 training seeds pooled "
        "per episode) against the same method with `train_steps=0`, on the same saved test episodes "
        f"({args.episodes} per task; FewRel: the class splits pooled). Difference in points with its paired 95% "
        "interval (Student's t); *beats untrained* when the interval lies above 0.",
        "",
        "| method | dataset | K | untrained (%) | meta-trained (%) | difference (95% CI) | beats untrained |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in sorted(rows, key=lambda r: (r["method"], r["dataset"], r["k_shot"])):
        verdict = "yes" if row["excludes_zero"] and row["difference"] > 0 else (
            "worse" if row["excludes_zero"] else "no (interval includes 0)")
        where = row["dataset"] + (f" ({row['splits']} splits)" if row["splits"] > 1 else "")
        lines.append(f"| {row['method']} | {where} | {row['k_shot']} | {row['untrained']:.2f} | "
                     f"{row['meta_trained']:.2f} | {row['difference']:+.2f} ({row['low']:+.2f} to {row['high']:+.2f}) "
                     f"| {verdict} |")
    wins: dict[str, int] = {}
    for row in rows:
        wins.setdefault(row["method"], 0)
        wins[row["method"]] += bool(row["excludes_zero"] and row["difference"] > 0)
    lines += ["", "Tasks (dataset × K) where meta-training beats the untrained method: " + "; ".join(
        f"{method} {count}" for method, count in sorted(wins.items()))]
    return "\n".join(lines)


STUDY = register_study(Study(NAME, DESCRIPTION, add_arguments, run, __doc__))
