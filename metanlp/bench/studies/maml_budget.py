"""Does meta-training pay? MAML / FOMAML / ANIL with their recommended budgets against their own untrained selves.

For each dataset and method: one run with ``train_steps=0`` (the un-meta-trained initialisation:
identity body, Proto-MAML init, the same inner loop) and one run per training seed with the
method's ``recommended_train_steps``, all evaluated on the same test episodes (same ``eval_seed``).
The paired difference of per-episode accuracies (``metanlp.evaluation.paired_comparison``) says
whether meta-training helped on those episodes; the spread over training seeds says how much
that depends on the seed. Writes the ``bench_maml_budget`` section of docs/results_maml_speed.md.

    python -m metanlp bench maml-budget                  # HuffPost + FewRel, 5-way 1-shot, 300 episodes
    python -m metanlp bench maml-budget --embeddings /tmp/emb/minilm.pt --seeds 0,1,2 --fewrel-splits all

With several FewRel class splits, each split is paired on its own episodes and the rows "all splits"
pool the per-episode differences of every split (each episode is still compared with itself).

``--embeddings`` preloads a dict text → MiniLM embedding (a dev cache), so nothing is embedded.
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace

import torch

from metanlp.bench.machine import machine_description
from metanlp.bench.studies import Study, register_study
from metanlp.bench.studies._common import command_line, preload_embeddings, write_section
from metanlp.data.registry import dataset_split_ids
from metanlp.device import resolve_device
from metanlp.engine.config import RunConfig
from metanlp.engine.training import EncoderPool, run_training
from metanlp.evaluation import compare_results, mean_and_ci95, paired_comparison
from metanlp.methods.registry import get_method_class

NAME = "maml-budget"
DESCRIPTION = "MAML / FOMAML / ANIL meta-trained vs their untrained selves, paired on the same episodes"

RESULTS = "docs/results_maml_speed.md"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--datasets", default="huffpost,fewrel")
    parser.add_argument("--methods", default="maml,fomaml,anil")
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--k-shot", type=int, default=1)
    parser.add_argument("--seeds", default="0", help="training seeds")
    parser.add_argument("--eval-seed", type=int, default=1234)
    parser.add_argument("--steps", default="", help="override, e.g. maml=2000,anil=1000")
    parser.add_argument("--embeddings", default="", help="a torch file text → embedding to preload")
    parser.add_argument("--fewrel-splits", default="", help="FewRel class splits: e.g. 01,02 or all (default: 01)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="print only; leave the results file alone")
    parser.add_argument("--report", default=RESULTS, help="the results file whose section is rewritten")


def accuracies(result) -> list[float]:
    return [record["query_accuracy"] for record in result.evaluation.per_episode]


def summary(per_episode: list[float]) -> SimpleNamespace:
    """Mean and 95% CI of pooled per-episode accuracies (for the rows over all splits)."""
    mean, ci95 = mean_and_ci95(per_episode)
    return SimpleNamespace(mean_accuracy=mean, ci95=ci95)


def timed_run(config: RunConfig, pool: EncoderPool):
    started = time.perf_counter()
    result = run_training(config, encoder_pool=pool)
    return result, time.perf_counter() - started


def measure(args: argparse.Namespace) -> list[tuple]:
    """Rows (dataset label, method, steps, seed, untrained, meta-trained, paired comparison, run seconds)."""
    seeds = [int(seed) for seed in args.seeds.split(",")]
    overrides = {name: int(steps) for name, steps in (item.split("=") for item in args.steps.split(",") if item)}
    pool = EncoderPool()
    if args.embeddings:
        preload_embeddings(pool, args.embeddings)
    fewrel_splits = dataset_split_ids("fewrel") if args.fewrel_splits == "all" else tuple(
        split for split in args.fewrel_splits.split(",") if split
    )
    rows, pooled = [], {}
    for dataset in args.datasets.split(","):
        splits = (fewrel_splits or (None,)) if dataset == "fewrel" else (None,)
        for name in args.methods.split(","):
            steps = overrides.get(name, get_method_class(name).recommended_train_steps)
            for split in splits:
                common = {"method": name, "dataset": dataset, "split_id": split, "n_way": 5, "k_shot": args.k_shot,
                          "n_query": 5, "eval_episodes": args.episodes, "eval_seed": args.eval_seed,
                          "encoder": "minilm"}
                untrained, _ = timed_run(RunConfig(**common, train_steps=0, seed=seeds[0]), pool)
                label = dataset + (f" split {split}" if split else "")
                for seed in seeds:
                    trained, seconds = timed_run(RunConfig(**common, train_steps=steps, seed=seed), pool)
                    paired = compare_results(trained.evaluation, untrained.evaluation)  # checks: same episodes
                    rows.append((label, name, steps, seed, untrained.evaluation, trained.evaluation, paired, seconds))
                    both = pooled.setdefault((dataset, name, steps, seed), ([], []))
                    both[0].extend(accuracies(untrained))
                    both[1].extend(accuracies(trained))
                    print(label, name, steps, seed, f"{untrained.evaluation.mean_accuracy:.4f}",
                          f"{trained.evaluation.mean_accuracy:.4f}",
                          f"{paired.mean_difference:+.4f} ± {paired.ci95:.4f}", f"{seconds:.0f}s", flush=True)
        if len(splits) > 1:
            for (pooled_dataset, name, steps, seed), (before, after) in pooled.items():
                if pooled_dataset == dataset:
                    rows.append((f"{dataset} all {len(splits)} splits", name, steps, seed, summary(before),
                                 summary(after), paired_comparison(after, before), float("nan")))
    return rows


def tables(rows: list[tuple], methods: list[str]) -> tuple[str, list[str]]:
    """The markdown table, and one line per (dataset, method) on the spread of the gain over seeds."""
    lines = ["| dataset | method | steps | seed | untrained | meta-trained | paired difference (95% CI) | excludes 0 "
             "| run s |", "|---|---|---|---|---|---|---|---|---|"]
    for dataset, name, steps, seed, before, after, paired, seconds in rows:
        low, high = paired.mean_difference - paired.ci95, paired.mean_difference + paired.ci95
        verdict = "yes" if low > 0 or high < 0 else "no"
        lines.append(
            f"| {dataset} | {name} | {steps} | {seed} | {100 * before.mean_accuracy:.2f} ± {100 * before.ci95:.2f} "
            f"| {100 * after.mean_accuracy:.2f} ± {100 * after.ci95:.2f} | {100 * paired.mean_difference:+.2f} "
            f"({100 * low:+.2f} to {100 * high:+.2f}) | {verdict} | {'' if seconds != seconds else f'{seconds:.0f}'} |"
        )
    spread = []
    for label in dict.fromkeys(row[0] for row in rows):
        for name in methods:
            differences = [100 * row[6].mean_difference for row in rows if row[0] == label and row[1] == name]
            if len(differences) > 1:
                spread.append(f"- {label}, {name}: paired gain over seeds {min(differences):+.2f} to "
                              f"{max(differences):+.2f} (mean {statistics.mean(differences):+.2f}, "
                              f"sd {statistics.stdev(differences):.2f})")
    return "\n".join(lines), spread


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    table, spread = tables(measure(args), args.methods.split(","))
    print(table)
    print("\n".join(spread))
    if args.no_write:
        return 0
    section = (
        f"Produced by `{command_line(NAME, args, add_arguments)}`. Frozen MiniLM, 5-way {args.k_shot}-shot, "
        f"5 queries per class, {args.episodes} test episodes (eval seed {args.eval_seed}; the same episodes for "
        "every row), each method on its defaults; *untrained* is `train_steps=0` (the same method before any "
        "meta-training: identity body, Proto-MAML init, the same inner loop), *meta-trained* uses the steps shown "
        "(the method's `recommended_train_steps`). Accuracy in % ± 95% CI over episodes; the paired difference is "
        "over the same episodes (`paired_comparison`). Training seed as shown; the untrained run does not "
        f"depend on it. Machine: {machine_description(resolve_device('auto'))} at the end.\n\n{table}\n\n"
        + ("\n".join(spread) if spread else "")
    )
    write_section(args.report, "bench_maml_budget", "Meta-training against the untrained initialisation (paired)",
                  section)
    return 0


STUDY = register_study(Study(NAME, DESCRIPTION, add_arguments, run, __doc__))
