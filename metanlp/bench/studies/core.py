"""Reference methods on frozen MiniLM: 5-way 1/5-shot accuracy on meta-test classes.

Every method sees the same seeded test episodes (saved once, by default beside the grid bench's
in the runs folder). Embeddings are computed once per dataset and shared (the encoder is frozen),
and timed separately from each method's evaluation. Writes the ``core`` section of docs/results.md.

    python -m metanlp bench core                       # full: 600 episodes
    python -m metanlp bench core --episodes 50 --datasets clinc150
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import torch

from metanlp.bench.machine import machine_description
from metanlp.bench.studies import Study, register_study
from metanlp.bench.studies._common import saved_test_episodes, write_section
from metanlp.data.episodes import load_episodes
from metanlp.encoders import build_encoder
from metanlp.encoders.cache import shared_cache
from metanlp.evaluation import evaluate
from metanlp.methods import create_method, get_method_class
from metanlp.runs.database import default_runs_dir

NAME = "core"
DESCRIPTION = "ProtoNet and fine-tuning on frozen MiniLM, 600 shared episodes (docs/results.md 'core')"

PUBLISHED = {("huffpost", 1): "41.9 (Bao et al. 2020)", ("huffpost", 5): "62.8 (Bao et al. 2020)"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--datasets", default="clinc150,banking77,huffpost")
    parser.add_argument("--shots", default="1,5")
    parser.add_argument("--methods", default="protonet,finetune")
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--n-query", type=int, default=5)
    parser.add_argument("--episodes-dir", help="where the test episodes are saved (default: the grid bench's, "
                        "bench/episodes in the runs folder)")
    parser.add_argument("--json", default="benchmarks/results/core.json", help="'' to skip")
    parser.add_argument("--report", default="docs/results.md", help="'' to skip")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(args: argparse.Namespace) -> int:
    episodes_dir = Path(args.episodes_dir) if args.episodes_dir else default_runs_dir() / "bench" / "episodes"
    torch.manual_seed(0)
    started = time.perf_counter()
    encoder = build_encoder("minilm").eval()
    load_seconds = time.perf_counter() - started
    rows = []
    for dataset_name in args.datasets.split(","):
        for k_shot in (int(k) for k in args.shots.split(",")):
            path = saved_test_episodes(episodes_dir, dataset_name, k_shot, args.episodes, args.n_query)
            episodes = load_episodes(path)[0]
            texts = sorted({t for e in episodes for t in e.support_texts + e.query_texts})
            tic = time.perf_counter()
            for start in range(0, len(texts), 256):
                shared_cache(encoder).embed(texts[start : start + 256])
            embed_seconds = time.perf_counter() - tic
            for method_name in args.methods.split(","):
                torch.manual_seed(0)
                method = create_method(method_name, encoder, {"finetune": "frozen"})
                result = evaluate(method, episodes)
                rows.append({
                    "dataset": dataset_name,
                    "k_shot": k_shot,
                    "method": method_name,
                    "title": get_method_class(method_name).card.title,
                    "accuracy": 100 * result.mean_accuracy,
                    "ci95": 100 * result.ci95,
                    "episodes": result.episodes,
                    "eval_seconds": result.seconds,
                    "episodes_per_second": result.episodes / result.seconds,
                    "embed_seconds": embed_seconds,
                    "unique_sentences": len(texts),
                    "peak_rss_mb": peak_rss_mb(),
                    "published": PUBLISHED.get((dataset_name, k_shot), ""),
                })
                row = rows[-1]
                print(f"{dataset_name:<10} {k_shot}-shot {method_name:<10} {row['accuracy']:.2f} ± {row['ci95']:.2f} "
                      f"({row['episodes_per_second']:.1f} episodes/s)", flush=True)
    machine = {
        "description": machine_description(),
        "encoder_load_seconds": load_seconds,
        "total_seconds": time.perf_counter() - started,
    }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"machine": machine, "settings": vars(args), "rows": rows}, indent=2))
        print(f"wrote {args.json}")
    if args.report:
        write_section(args.report, "core", "Reference methods on frozen MiniLM (issue 2)",
                      core_markdown(rows, machine, args))
    return 0


def core_markdown(rows: list[dict], machine: dict, args: argparse.Namespace) -> str:
    lines = [
        f"Command: `python -m metanlp bench core --episodes {args.episodes}`. Machine: {machine['description']}; "
        f"total {machine['total_seconds'] / 60:.1f} min, MiniLM load {machine['encoder_load_seconds']:.1f} s. "
        f"5-way, {args.n_query} queries per class, {args.episodes} seeded test episodes (meta-test classes), "
        "the same episodes for both methods; frozen MiniLM with each sentence embedded once (the embedding "
        "time is reported separately from each method's evaluation time); fine-tuning trains a fresh linear "
        "head for 100 Adam steps per episode. Accuracy ± 95% CI (1.96·std/√E). Peak memory is the process's "
        "peak RSS so far (it includes MiniLM and every cached embedding).",
        "",
        "| dataset | K | method | accuracy (%) | episodes/s | embedding s (sentences) | peak RSS MB | published |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['dataset']} | {row['k_shot']} | {row['title']} | {row['accuracy']:.2f} ± {row['ci95']:.2f} | "
            f"{row['episodes_per_second']:.1f} | {row['embed_seconds']:.0f} ({row['unique_sentences']}) | "
            f"{row['peak_rss_mb']:.0f} | {row['published']} |"
        )
    return "\n".join(lines)


STUDY = register_study(Study(NAME, DESCRIPTION, add_arguments, run, __doc__))
