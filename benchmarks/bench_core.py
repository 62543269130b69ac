"""Reference methods on frozen MiniLM: 5-way 1/5-shot accuracy on meta-test classes.

Every method sees the same seeded test episodes (saved under benchmarks/episodes/).
Embeddings are computed once per dataset and shared (the encoder is frozen), and timed
separately from each method's evaluation.

    python benchmarks/bench_core.py                       # full: 600 episodes
    python benchmarks/bench_core.py --episodes 50 --datasets clinc150
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from metanlp.bench.report import replace_section  # noqa: E402
from metanlp.data.episodes import load_episodes, save_episodes  # noqa: E402
from metanlp.data.registry import load_dataset  # noqa: E402
from metanlp.encoders import build_encoder  # noqa: E402
from metanlp.encoders.cache import shared_cache  # noqa: E402
from metanlp.engine.config import RunConfig  # noqa: E402
from metanlp.engine.training import evaluation_episodes  # noqa: E402
from metanlp.evaluation import evaluate  # noqa: E402
from metanlp.methods import create_method, get_method_class  # noqa: E402

PUBLISHED = {("huffpost", 1): "41.9 (Bao et al. 2020)", ("huffpost", 5): "62.8 (Bao et al. 2020)"}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fixed_episodes(dataset_name: str, k_shot: int, n_query: int, count: int) -> list:
    path = ROOT / "benchmarks" / "episodes" / f"{dataset_name}_5way_{k_shot}shot_{n_query}q_{count}.json.gz"
    if path.exists():
        return load_episodes(path)[0]
    config = RunConfig(dataset=dataset_name, n_way=5, k_shot=k_shot, n_query=n_query, eval_episodes=count)
    episodes = evaluation_episodes(load_dataset(dataset_name), config)
    save_episodes(episodes, path, {"dataset": dataset_name, "n_way": 5, "k_shot": k_shot, "seed": config.eval_seed})
    return episodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="clinc150,banking77,huffpost")
    parser.add_argument("--shots", default="1,5")
    parser.add_argument("--methods", default="protonet,finetune")
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--n-query", type=int, default=5)
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "core.json"))
    parser.add_argument("--report", default=str(ROOT / "docs" / "results.md"), help="'' to skip")
    args = parser.parse_args()

    torch.manual_seed(0)
    started = time.perf_counter()
    encoder = build_encoder("minilm").eval()
    load_seconds = time.perf_counter() - started
    rows = []
    for dataset_name in args.datasets.split(","):
        for k_shot in (int(k) for k in args.shots.split(",")):
            episodes = fixed_episodes(dataset_name, k_shot, args.n_query, args.episodes)
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
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "encoder_load_seconds": load_seconds,
        "total_seconds": time.perf_counter() - started,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"machine": machine, "settings": vars(args), "rows": rows}, indent=2))
    print(f"wrote {args.json}")
    if args.report:
        replace_section(Path(args.report), "core", "Reference methods on frozen MiniLM (issue 2)",
                        core_markdown(rows, machine, args))
        print(f"wrote {args.report}")


def core_markdown(rows: list[dict], machine: dict, args: argparse.Namespace) -> str:
    lines = [
        f"Command: `python benchmarks/bench_core.py --episodes {args.episodes}`. Machine: {machine['cpu']}, "
        f"{machine['threads']} torch threads, torch {machine['torch']}, Python {machine['python']}; "
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


if __name__ == "__main__":
    main()
