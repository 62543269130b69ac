"""Tied vs untied MLM decoder on the synthetic topic corpus: does pretraining transfer to few-shot?

Pretrains the from-scratch encoder (2 layers, d 32 by default) with MLM + NSP on
``metanlp.pretraining.synthetic.topic_corpus`` and evaluates frozen-encoder ProtoNet on 5-way
1-shot episodes whose queries share no topic word with their support (chance: 20%). Each seed
compares the pretrained encoder with its own random initialisation on the same episodes. Writes
the ``synthetic`` section of docs/results_pretraining.md.

    python benchmarks/bench_pretraining_synthetic.py                  # ~5 min on 2 CPU cores
    python benchmarks/bench_pretraining_synthetic.py --seeds 0 --steps 200 --episodes 20   # smoke run
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from metanlp.bench.report import replace_section  # noqa: E402
from metanlp.encoders import build_encoder  # noqa: E402
from metanlp.engine.pretraining import pretrain  # noqa: E402
from metanlp.evaluation import evaluate  # noqa: E402
from metanlp.methods import create_method  # noqa: E402
from metanlp.pretraining.synthetic import FRAMES, disjoint_word_episodes, topic_corpus  # noqa: E402

RESULTS = ROOT / "docs" / "results_pretraining.md"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--frames", type=int, default=1, help=f"sentence frames used (1–{len(FRAMES)})")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    if not 1 <= args.frames <= len(FRAMES):
        parser.error(f"--frames must be between 1 and {len(FRAMES)}, got {args.frames}")
    return args


def few_shot_accuracy(encoder, episodes) -> float:
    return 100 * evaluate(create_method("protonet", encoder, {"finetune": "frozen"}), episodes).mean_accuracy


def one_seed(seed: int, tied: bool, args: argparse.Namespace, episodes) -> dict:
    torch.manual_seed(seed)
    encoder = build_encoder("scratch", num_layers=2, hidden_size=32, num_heads=2, feedforward_size=64, max_length=32)
    random_twin = copy.deepcopy(encoder)
    frames = FRAMES[: args.frames]
    started = time.perf_counter()
    result = pretrain(
        encoder, topic_corpus(seed=seed, frames=frames), steps=args.steps, batch_size=32, lr=args.lr,
        warmup=args.steps // 10, seed=seed, eval_every=max(1, args.steps // 8), tied_decoder=tied,
    )
    last = [e for e in result.history if e["event"] == "validation"][-1]
    return {
        "seed": seed, "tied": tied, "seconds": time.perf_counter() - started,
        "held_out_mlm": last["held_out_mlm_loss"], "held_out_nsp": last["held_out_nsp_accuracy"],
        "random": few_shot_accuracy(random_twin, episodes), "pretrained": few_shot_accuracy(encoder, episodes),
    }


def main() -> None:
    args = parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s]
    episodes = disjoint_word_episodes(args.episodes, n_way=5, k_shot=1, n_query=5, seed=1234, frames=FRAMES[: args.frames])
    rows = []
    for tied in (True, False):
        for seed in seeds:
            row = one_seed(seed, tied, args, episodes)
            rows.append(row)
            print(row, flush=True)
    write_report(args, rows)


def write_report(args: argparse.Namespace, rows: list[dict]) -> None:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"Command: `python benchmarks/bench_pretraining_synthetic.py --steps {args.steps} --lr {args.lr:g} "
        f"--seeds {args.seeds} --frames {args.frames} --episodes {args.episodes}`. Machine: "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, CPU ({torch.get_num_threads()} "
        f"threads), torch {torch.__version__}; load average {load:.1f} when it finished.",
        "",
        f"Corpus: `metanlp.pretraining.synthetic.topic_corpus` ({args.frames} sentence frame(s), 9 topics × 8 "
        "interchangeable words, 60 sentences per topic, three words of one topic per sentence). Encoder: 2 layers, "
        f"d 32, 2 heads; MLM + NSP, batch 32, AdamW lr {args.lr:g}, {args.steps} steps. Downstream: frozen "
        f"ProtoNet on {args.episodes} 5-way 1-shot episodes (5 queries per class) in which a class's support "
        "and queries use disjoint halves of its words, so nothing but pretraining links them (chance 20%). "
        "Each seed compares the pretrained encoder with its own random initialisation on the same episodes.",
        "",
        "| MLM decoder | seed | random init (%) | pretrained (%) | held-out MLM loss | held-out NSP acc. | pretraining s |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {'tied' if row['tied'] else 'untied'} | {row['seed']} | {row['random']:.1f} | {row['pretrained']:.1f} "
            f"| {row['held_out_mlm']:.2f} | {row['held_out_nsp']:.2f} | {row['seconds']:.0f} |"
        )
    lines.append("")
    for tied in (True, False):
        gains = [r["pretrained"] - r["random"] for r in rows if r["tied"] == tied]
        spread = f", min {min(gains):+.1f}, max {max(gains):+.1f}" if len(gains) > 1 else ""
        lines.append(
            f"- {'Tied' if tied else 'Untied'} decoder: pretrained minus random init, mean "
            f"{statistics.mean(gains):+.1f} points over {len(gains)} seed(s){spread}."
        )
    body = "\n".join(lines)
    path = replace_section(Path(args.output), "synthetic", "Synthetic topic corpus: tied vs untied decoder", body)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
