"""MiniLM full fine-tuning throughput (tokens/s) and its share of the device's peak FLOP/s.

    python -m metanlp bench finetune-throughput --device cuda --batch-size 128 --seq-len 128
    python -m metanlp bench finetune-throughput --device cpu --batch-size 8 --seq-len 32 --steps 3

FLOPs per trained token ≈ 6·N (N = non-embedding parameters: forward 2N, backward 4N) plus
12·L·S·d for attention scores and mixing (Kaplan et al. 2020; Chowdhery et al. 2022, App. B).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from metanlp.bench.studies import Study, register_study
from metanlp.data.registry import load_dataset
from metanlp.device import describe_device, precision_context, resolve_device
from metanlp.encoders import build_encoder
from metanlp.encoders.base import mean_pool

NAME = "finetune-throughput"
DESCRIPTION = "MiniLM full fine-tuning throughput (tokens/s) and its share of the device's peak FLOP/s"

H200_BF16_DENSE_TFLOPS = 989.0  # NVIDIA H200 SXM datasheet, dense BF16 tensor-core peak


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--peak-tflops", type=float, default=H200_BF16_DENSE_TFLOPS)
    parser.add_argument("--json", help="also write the results here")


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    encoder = build_encoder("minilm", max_length=args.seq_len).to(device)
    encoder.set_trainable_layers(None)
    dataset = load_dataset("huffpost")
    label_ids = {label: index for index, label in enumerate(dataset.labels())}
    head = torch.nn.Linear(encoder.hidden_size, len(label_ids)).to(device)
    examples = dataset.examples[: args.batch_size]
    texts = [example.text for example in examples]
    labels = torch.tensor([label_ids[example.label] for example in examples], device=device)
    batch = encoder.tokenizer(texts, padding="max_length", truncation=True, max_length=args.seq_len, return_tensors="pt")
    input_ids, attention_mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    optimizer = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=2e-5)

    def step() -> None:
        with precision_context(device, args.precision):
            output = encoder(input_ids, attention_mask)
            logits = head(mean_pool(output.last_hidden_state, attention_mask))
            loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    synchronize(device)
    seconds = []
    for _ in range(args.steps):
        tic = time.perf_counter()
        step()
        synchronize(device)
        seconds.append(time.perf_counter() - tic)

    embedding_parameters = sum(p.numel() for p in encoder.bert.embeddings.parameters())
    non_embedding = sum(p.numel() for p in encoder.parameters()) - embedding_parameters
    flops_per_token = 6 * non_embedding + 12 * encoder.num_layers * args.seq_len * encoder.hidden_size
    tokens = args.batch_size * args.seq_len
    median = statistics.median(seconds)
    result = {
        "device": describe_device(device),
        "precision": args.precision,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "steps": args.steps,
        "step_ms_median": 1000 * median,
        "step_ms_min": 1000 * min(seconds),
        "step_ms_max": 1000 * max(seconds),
        "tokens_per_second": tokens / median,
        "real_tokens_per_second": int(attention_mask.sum()) / median,
        "achieved_tflops": tokens * flops_per_token / median / 1e12,
        "peak_tflops": args.peak_tflops,
    }
    result["share_of_peak"] = result["achieved_tflops"] / args.peak_tflops
    if device.type == "cuda":
        result["peak_memory_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


STUDY = register_study(Study(NAME, DESCRIPTION, add_arguments, run, __doc__))
