"""Hot-path speed, before vs after each optimisation, side by side in one run.

1. MiniLM embedding of real sentences: batches in input order vs length-sorted batches.
2. ProtoNet evaluation on frozen MiniLM: re-encoding every episode vs the shared embedding cache.
3. The same evaluation with autograd bookkeeping (plain) vs ``torch.inference_mode``.

    python benchmarks/bench_speed.py --repeats 5
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from metanlp.data.episodes import EpisodeSampler  # noqa: E402
from metanlp.data.registry import examples_for_split, load_dataset  # noqa: E402
from metanlp.encoders import build_encoder  # noqa: E402
from metanlp.encoders.cache import EmbeddingCache  # noqa: E402
from metanlp.methods.protonet import class_prototypes  # noqa: E402


def timed(function, repeats: int) -> list[float]:
    seconds = []
    for _ in range(repeats):
        tic = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - tic)
    return seconds


def summary(seconds: list[float]) -> dict:
    return {"median_s": statistics.median(seconds), "min_s": min(seconds), "max_s": max(seconds), "runs": len(seconds)}


def protonet_accuracy(episodes, embed) -> float:
    correct = total = 0
    for episode in episodes:
        support = embed(episode.support_texts)
        queries = embed(episode.query_texts)
        labels = torch.tensor(episode.support_labels)
        prototypes = class_prototypes(support, labels, episode.n_way)
        predictions = (-torch.cdist(queries, prototypes)).argmax(-1)
        correct += int((predictions == torch.tensor(episode.query_labels)).sum())
        total += len(episode.query_labels)
    return correct / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sentences", type=int, default=512)
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "speed.json"))
    args = parser.parse_args()

    encoder = build_encoder("minilm").eval()
    encoder.set_trainable_layers(0)
    dataset = load_dataset("huffpost")
    texts = [e.text for e in examples_for_split(dataset, "test")][: args.sentences]
    rows = []
    with torch.no_grad():
        encoder.embed(texts[:64])  # warm-up
        before = timed(lambda: encoder.embed(texts, sort_by_length=False), args.repeats)
        after = timed(lambda: encoder.embed(texts, sort_by_length=True), args.repeats)
    rows.append({"what": f"embed {len(texts)} HuffPost headlines (MiniLM, batch 64)",
                 "before": "input-order batches", "after": "length-sorted batches",
                 "before_s": summary(before), "after_s": summary(after)})

    episodes = EpisodeSampler.from_examples(examples_for_split(dataset, "test"), 5, 5, 5, seed=0).take(args.episodes)
    with torch.no_grad():
        before = timed(lambda: protonet_accuracy(episodes, encoder.embed), 1)
        cache = EmbeddingCache(encoder)
        after = timed(lambda: protonet_accuracy(episodes, cache.embed), args.repeats)  # 1st run fills the cache
    rows.append({"what": f"ProtoNet, {args.episodes} HuffPost 5-way 5-shot episodes, frozen MiniLM",
                 "before": "encode every episode", "after": "shared embedding cache (1st run fills it)",
                 "before_s": summary(before), "after_s": summary(after)})

    sample = texts[:128]
    plain = timed(lambda: encoder.embed(sample), args.repeats)
    with torch.inference_mode():
        inference = timed(lambda: encoder.embed(sample), args.repeats)
    rows.append({"what": "embed 128 headlines", "before": "autograd on (plain forward)", "after": "torch.inference_mode",
                 "before_s": summary(plain), "after_s": summary(inference)})

    machine = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
               "torch": torch.__version__}
    for row in rows:
        ratio = row["before_s"]["median_s"] / row["after_s"]["median_s"]
        row["speedup"] = ratio
        print(f"{row['what']}: {row['before']} {row['before_s']['median_s']:.3f} s → "
              f"{row['after']} {row['after_s']['median_s']:.3f} s ({ratio:.1f}×)")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"machine": machine, "settings": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
