"""Hot-path speed, before vs after each optimisation, side by side in one run.

1. MiniLM embedding of real sentences: batches in input order vs length-sorted batches.
2. ProtoNet evaluation on frozen MiniLM: re-encoding every episode vs the shared embedding cache.
3. The same evaluation with autograd bookkeeping (plain) vs ``torch.inference_mode``.

Writes the raw timings as JSON; with ``--report FILE``, also a ``speed`` section of FILE.

    python -m metanlp bench speed --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from metanlp.bench.machine import machine_description
from metanlp.bench.studies import Study, register_study
from metanlp.bench.studies._common import split_episodes, write_section
from metanlp.data.registry import examples_for_split, load_dataset
from metanlp.encoders import build_encoder
from metanlp.encoders.cache import EmbeddingCache
from metanlp.methods.protonet import class_prototypes

NAME = "speed"
DESCRIPTION = "hot paths before/after each optimisation: sorted batches, embedding cache, inference mode"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sentences", type=int, default=512)
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--json", default="benchmarks/results/speed.json")
    parser.add_argument("--report", default="", help="also write the table as the 'speed' section of this "
                        "file (e.g. docs/results.md)")


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


def run(args: argparse.Namespace) -> int:
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

    episodes = split_episodes("huffpost", "test", 5, 5, 5, args.episodes, seed=0)
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

    machine = machine_description()
    for row in rows:
        ratio = row["before_s"]["median_s"] / row["after_s"]["median_s"]
        row["speedup"] = ratio
        print(f"{row['what']}: {row['before']} {row['before_s']['median_s']:.3f} s → "
              f"{row['after']} {row['after_s']['median_s']:.3f} s ({ratio:.1f}×)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"machine": machine, "settings": vars(args), "rows": rows}, indent=2))
    if args.report:
        write_section(args.report, "speed", "Hot paths: before and after (issue 6)", speed_markdown(rows, machine, args))
    return 0


def speed_markdown(rows: list[dict], machine: str, args: argparse.Namespace) -> str:
    def cell(label: str, seconds: dict) -> str:
        return f"{label}: {seconds['median_s']:.3f} ({seconds['min_s']:.3f}–{seconds['max_s']:.3f})"

    lines = [
        f"Command: `python -m metanlp bench speed --repeats {args.repeats} --sentences {args.sentences} "
        f"--episodes {args.episodes}`. Machine: {machine}. Both variants measured side by side in one run; "
        "median (min–max) seconds.",
        "",
        "| hot path | before | after | speed-up |",
        "|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row['what']} | {cell(row['before'], row['before_s'])} | {cell(row['after'], row['after_s'])} "
                     f"| {row['speedup']:.1f}× |")
    return "\n".join(lines)


STUDY = register_study(Study(NAME, DESCRIPTION, add_arguments, run, __doc__))
