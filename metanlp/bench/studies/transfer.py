"""Benchmark of the transfer-learning methods; prints a Markdown report (numbers for docs/results_transfer.md).

(a) DANN, FewRel Wikipedia → FewRel PubMed: 5-way 1-/5-shot accuracy on PubMed's test relations, with and
    without adaptation (same model, gradient reversal on/off), next to frozen MiniLM prototypes and the
    published FewRel 2.0 domain-adaptation results.
(b) Distillation, supervised AG News: a small from-scratch student taught by MiniLM vs the same student
    trained alone vs the teacher; accuracy and encoding speed (sentences/s).
(c) Multi-task vs single-task training on a target dataset (BANKING77 by default).

Frozen MiniLM features keep (a) and (c) cheap: every method there is built on one MiniLM, whose embedding
cache they share, so each sentence is encoded once. Only (b) trains an encoder.

    OMP_NUM_THREADS=1 python -m metanlp bench transfer --threads 1 > /tmp/bench_transfer.md
    python -m metanlp bench transfer --quick   # a smoke run, about a minute

``--report FILE`` also writes the report as FILE's ``transfer`` section.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from metanlp.bench.machine import machine_description
from metanlp.bench.studies import Study, register_study
from metanlp.bench.studies._common import split_episodes, write_section
from metanlp.data.episodes import EpisodeSampler
from metanlp.data.registry import examples_for_split, load_dataset
from metanlp.data.types import Episode, Example
from metanlp.encoders import Encoder, build_encoder
from metanlp.engine.auxiliary import build_method
from metanlp.evaluation import evaluate, mean_and_ci95
from metanlp.methods import Method, create_method, default_options

NAME = "transfer"
DESCRIPTION = "DANN FewRel wiki → PubMed, distillation on AG News, multi-task vs single-task"

PUBLISHED_FEWREL_DA = {  # FewRel 2.0 DA test set (PubMed), 5-way 1-shot / 5-shot accuracy, %
    "Proto-CNN+ADV (Gao et al. 2019)": (42.2, 58.7),
    "BERT-PAIR (Gao et al. 2019)": (67.4, 78.6),
}
SHOTS = (1, 5)


# ----------------------------------------------------------------- shared pieces


def per_class_subset(examples: list[Example], per_class: int, seed: int) -> list[Example]:
    """At most ``per_class`` examples of each label (seeded): bounds the embedding cost."""
    rng = random.Random(seed)
    by_label: dict[str, list[Example]] = {}
    for example in examples:
        by_label.setdefault(example.label, []).append(example)
    return [e for label in sorted(by_label) for e in rng.sample(by_label[label], min(per_class, len(by_label[label])))]


def train(method: Method, sampler: EpisodeSampler, steps: int) -> list[dict]:
    return [method.train_step(sampler.sample()) for _ in range(steps)]


def few_shot_accuracy(method: Method, episode_sets: dict[int, list[Episode]]) -> dict[int, list[float]]:
    """{k_shot: per-episode query accuracies in %}."""
    return {
        k_shot: [100 * record["query_accuracy"] for record in evaluate(method, episodes).per_episode]
        for k_shot, episodes in episode_sets.items()
    }


def summarise(per_seed: list[dict[int, list[float]]]) -> dict[int, dict[str, float]]:
    """Mean and 95% CI over episodes (each episode's accuracy averaged over training seeds, since the
    seeds share the episodes), and the spread (std) of the per-seed means."""
    summary = {}
    for k_shot in per_seed[0]:
        per_episode = [statistics.mean(values) for values in zip(*(result[k_shot] for result in per_seed), strict=True)]
        mean, ci95 = mean_and_ci95(per_episode)
        seed_means = [statistics.mean(result[k_shot]) for result in per_seed]
        summary[k_shot] = {"mean": mean, "ci95": ci95, "seed_std": statistics.pstdev(seed_means), "seeds": len(per_seed)}
    return summary


def paired_difference(
    treated: list[dict[int, list[float]]], baseline: list[dict[int, list[float]]]
) -> list[dict[int, list[float]]]:
    """Per seed and episode, treated − baseline accuracy: both ran on the same seeds and episodes."""
    return [
        {k: [t - b for t, b in zip(seed_treated[k], seed_baseline[k], strict=True)] for k in seed_treated}
        for seed_treated, seed_baseline in zip(treated, baseline, strict=True)
    ]


def windowed(history: list[dict], key: str, windows: int) -> list[tuple[int, float]]:
    """(last step of window, mean of ``key`` over the window) for ``windows`` equal windows."""
    size = max(1, len(history) // windows)
    return [
        (start + size, statistics.mean(step[key] for step in history[start : start + size]))
        for start in range(0, len(history) - size + 1, size)
    ]


def seeded_variants(
    encoder: Encoder, method_name: str, variants: list[tuple[str, dict]], train_examples: list[Example], steps: int,
    episode_sets: dict[int, list[Episode]], args: argparse.Namespace, curve: Callable[[list[dict]], dict],
    difference: str,
) -> tuple[dict[str, dict], dict[str, dict]]:
    """Frozen-MiniLM prototypes, then two (label, options) variants of a method, each trained with every seed.

    Every variant and seed is scored on the same episodes, so the row ``difference`` pairs the second
    variant with the first episode by episode. Returns (rows by label, ``curve`` of each variant's seed-0
    training history).
    """
    reference = create_method("protonet", encoder, {"learn_scale": False})
    rows: dict[str, dict] = {"MiniLM prototypes, no training": summarise([few_shot_accuracy(reference, episode_sets)])}
    curves: dict[str, dict] = {}
    accuracies = []
    for label, options in variants:
        per_seed = []
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            method = build_method(method_name, encoder, {**options, "seed": seed})
            sampler = EpisodeSampler.from_examples(train_examples, 5, 5, args.n_query, seed=seed, split="train")
            history = train(method, sampler, steps)
            if seed == 0:
                curves[label] = curve(history)
            per_seed.append(few_shot_accuracy(method, episode_sets))
        rows[label] = summarise(per_seed)
        accuracies.append(per_seed)
    rows[difference] = summarise(paired_difference(accuracies[1], accuracies[0]))
    return rows, curves


# ----------------------------------------------------------------- (a) DANN


def bench_dann(encoder: Encoder, args: argparse.Namespace) -> dict:
    source = per_class_subset(examples_for_split(load_dataset("fewrel"), "train"), args.source_per_class, 0)
    episode_sets = {
        k: split_episodes("fewrel_pubmed", "test", 5, k, args.n_query, args.episodes, args.eval_seed + k) for k in SHOTS
    }
    started = time.perf_counter()
    options = {"target_dataset": "fewrel_pubmed", "schedule_steps": args.dann_steps, "max_lambda": args.max_lambda,
               "lr": args.dann_lr}
    variants = [("source only (no adaptation)", {**options, "reversal": False}),
                ("DANN (gradient reversal)", {**options, "reversal": True})]
    rows, curves = seeded_variants(
        encoder, "dann", variants, source, args.dann_steps, episode_sets, args,
        lambda history: {key: windowed(history, key, 10) for key in ("domain_loss", "domain_accuracy")},
        "difference: DANN − source only (paired)",
    )
    seconds = time.perf_counter() - started
    return {
        "rows": rows, "curves": curves, "seconds": seconds,
        "settings": (
            f"source: FewRel wiki train relations (8), {args.source_per_class} sentences each; target text: "
            f"fewrel_pubmed train+val sentences (unlabelled); training: {args.dann_steps} steps of 5-way 5-shot "
            f"episodes, lr {args.dann_lr}, λ schedule to {args.max_lambda}, {args.seeds} training seeds; evaluation: "
            f"{args.episodes} episodes per shot on the 5 PubMed test relations, {args.n_query} queries per class, "
            "prototypes on the learned features; frozen MiniLM encoder"
        ),
    }


# ----------------------------------------------------------------- (b) distillation


def sentences_per_second(encoder: Encoder, texts: list[str], repeats: int = 3) -> float:
    encoder.eval()
    times = []
    with torch.inference_mode():
        encoder.embed(texts[:8])  # warm-up
        for _ in range(repeats):
            started = time.perf_counter()
            encoder.embed(texts)
            times.append(time.perf_counter() - started)
    return len(texts) / statistics.median(times)


def percent_correct(logits: torch.Tensor, labels: list[int]) -> float:
    return 100 * (logits.argmax(-1).cpu() == torch.tensor(labels)).float().mean().item()


def bench_distillation(args: argparse.Namespace) -> dict:
    dataset = load_dataset("agnews")
    classes = dataset.class_splits["train"]
    index = {label: position for position, label in enumerate(classes)}
    labelled = per_class_subset(examples_for_split(dataset, "train"), args.labelled_per_class, 0)
    test = examples_for_split(dataset, "test")
    support_texts, support_labels = [e.text for e in labelled], [index[e.label] for e in labelled]
    test_texts, test_labels = [e.text for e in test], [index[e.label] for e in test]
    training = Episode(classes, support_texts, support_labels, support_texts[::8], support_labels[::8])
    evaluation = Episode(classes, support_texts, support_labels, test_texts, test_labels)
    student_config = {"num_layers": 2, "hidden_size": 64, "num_heads": 4, "feedforward_size": 128, "max_length": 32}
    options = {"unlabelled_dataset": "agnews", "unlabelled_pool": args.unlabelled_pool, "unlabelled_batch": 64}

    started = time.perf_counter()
    runs: dict[str, list[dict]] = {"student alone": [], "distilled student": []}
    teacher_row: dict = {}
    for seed in range(args.distill_seeds):
        for label, alpha in (("student alone", 1.0), ("distilled student", args.alpha)):
            torch.manual_seed(seed)
            student = build_encoder("scratch", **student_config)
            method = build_method("distillation", student, {**options, "alpha": alpha, "seed": seed})
            train_started = time.perf_counter()
            for _ in range(args.distill_steps):
                method.train_step(training)
            train_seconds = time.perf_counter() - train_started
            method.eval()
            with torch.no_grad():
                head = percent_correct(method.student_logits(test_texts), test_labels)
            prototypes = 100 * method.evaluate_episode(evaluation)["query_accuracy"]
            runs[label].append({"head": head, "prototypes": prototypes, "train_seconds": train_seconds})
            if alpha < 1.0 and not teacher_row:
                teacher = method.teacher_encoder()
                teacher_row = {
                    "head": percent_correct(method.teacher_logits(test_texts), test_labels),
                    "prototypes": percent_correct(method.adapt_teacher(evaluation).predict_logits(test_texts), test_labels),
                    "sentences_per_second": sentences_per_second(teacher, test_texts[:128]),
                    "parameters": sum(p.numel() for p in teacher.parameters()),
                }
                student_speed = sentences_per_second(method.encoder, test_texts[:128])
                student_parameters = sum(p.numel() for p in method.encoder.parameters())
    summary = {}
    for label, results in runs.items():
        summary[label] = {
            key: (statistics.mean(r[key] for r in results), statistics.pstdev(r[key] for r in results))
            for key in ("head", "prototypes", "train_seconds")
        }
        summary[label]["sentences_per_second"] = student_speed
        summary[label]["parameters"] = student_parameters
    return {
        "students": summary,
        "teacher": teacher_row,
        "seconds": time.perf_counter() - started,
        "settings": (
            f"AG News (4 topics), {args.labelled_per_class} labelled texts per topic from the train split; "
            f"{args.unlabelled_pool} unlabelled train texts for the soft-label loss (batch 64); "
            f"{args.distill_steps} steps; alpha {args.alpha}, T 2; student: from-scratch Transformer "
            f"{student_config}; teacher: linear head on frozen MiniLM features trained on the same labelled "
            f"texts; test: all {len(test_texts)} AG News test texts; {args.distill_seeds} seeds "
            "(student initialisation and unlabelled batches)"
        ),
    }


# ----------------------------------------------------------------- (c) multi-task


def bench_multitask(encoder: Encoder, args: argparse.Namespace) -> dict:
    target = per_class_subset(examples_for_split(load_dataset(args.target), "train"), args.target_per_class, 0)
    episode_sets = {k: split_episodes(args.target, "test", 5, k, args.n_query, args.episodes, args.eval_seed + k) for k in SHOTS}
    started = time.perf_counter()
    options = {"examples_per_task": args.examples_per_task, "sampling": "temperature"}
    variants = [("single-task (target only)", {**options, "tasks": ""}),
                (f"multi-task (+ {args.tasks})", {**options, "tasks": args.tasks})]
    rows, losses = seeded_variants(
        encoder, "multitask", variants, target, args.multitask_steps, episode_sets, args,
        lambda history: {key: windowed([h for h in history if key in h], key, 5)
                         for key in sorted({k for h in history for k in h if k.startswith("loss_")})},
        "difference: multi − single (paired)",
    )
    seconds = time.perf_counter() - started
    settings = (
        f"target: {args.target} train classes, {args.target_per_class} texts each, {args.multitask_steps} steps "
        f"of 5-way 5-shot episodes; auxiliary tasks: {args.tasks or 'none'} ({args.examples_per_task} "
        f"examples each, temperature sampling T=2); lr {default_options('multitask')['lr']}; {args.seeds} training "
        f"seeds; evaluation: {args.episodes} episodes per shot on {args.target}'s test classes, prototypes on the "
        "shared features; frozen MiniLM encoder"
    )
    return {"rows": rows, "losses": losses, "seconds": seconds, "settings": settings}


# ----------------------------------------------------------------- report


def accuracy_cells(summary: dict) -> str:
    cells = []
    for k in SHOTS:
        cell = f"{summary[k]['mean']:.1f} ± {summary[k]['ci95']:.1f}"
        if summary[k]["seeds"] > 1:
            cell += f" (seed std {summary[k]['seed_std']:.1f})"
        cells.append(cell)
    return " | ".join(cells)


def report(results: dict, args: argparse.Namespace) -> str:
    lines = [f"Machine: {machine_description()} at the end. Total {results['seconds']:.0f} s.", ""]
    if "dann" in results:
        dann = results["dann"]
        lines += ["### (a) DANN: FewRel Wikipedia → PubMed", "", dann["settings"] + ".", ""]
        lines += ["| model | 5-way 1-shot % | 5-way 5-shot % |", "|---|---|---|"]
        lines += [f"| {name} | {accuracy_cells(row)} |" for name, row in dann["rows"].items()]
        lines += [f"| {name} (published, FewRel 2.0 test set) | {a:.1f} | {b:.1f} |" for name, (a, b) in PUBLISHED_FEWREL_DA.items()]
        lines += ["", "Domain classifier during training (mean over each tenth of the run):", ""]
        lines += ["| run | step | domain loss | domain accuracy |", "|---|---|---|---|"]
        for name, curve in dann["curves"].items():
            for (step, loss), (_, accuracy) in zip(curve["domain_loss"], curve["domain_accuracy"], strict=True):
                lines.append(f"| {name} | {step} | {loss:.3f} | {accuracy:.3f} |")
        lines += ["", f"({dann['seconds']:.0f} s)", ""]
    if "distillation" in results:
        distill = results["distillation"]
        lines += ["### (b) Distillation: AG News", "", distill["settings"] + ".", ""]
        lines += [
            "| model | parameters | head accuracy % | prototype accuracy % | sentences/s | train s |",
            "|---|---|---|---|---|---|",
        ]
        for name, row in distill["students"].items():
            lines.append(
                f"| {name} | {row['parameters']:,} | {row['head'][0]:.1f} ± {row['head'][1]:.1f} | "
                f"{row['prototypes'][0]:.1f} ± {row['prototypes'][1]:.1f} | {row['sentences_per_second']:.0f} | "
                f"{row['train_seconds'][0]:.0f} |"
            )
        teacher = distill["teacher"]
        lines.append(
            f"| teacher (MiniLM + head) | {teacher['parameters']:,} | {teacher['head']:.1f} | "
            f"{teacher['prototypes']:.1f} | {teacher['sentences_per_second']:.0f} | – |"
        )
        lines += ["", "(± is the standard deviation over seeds.)", f"({distill['seconds']:.0f} s)", ""]
    if "multitask" in results:
        multi = results["multitask"]
        lines += [f"### (c) Multi-task vs single-task on {args.target}", "", multi["settings"] + ".", ""]
        lines += ["| model | 5-way 1-shot % | 5-way 5-shot % |", "|---|---|---|"]
        lines += [f"| {name} | {accuracy_cells(row)} |" for name, row in multi["rows"].items()]
        lines += ["", "Training loss per head, seed 0 (first → last fifth of its draws):", ""]
        for name, head_losses in multi["losses"].items():
            for key, curve in head_losses.items():
                lines.append(f"- {name}, {key}: {curve[0][1]:.3f} → {curve[-1][1]:.3f} ({curve[-1][0]} draws)")
        lines += ["", f"({multi['seconds']:.0f} s)", ""]
    lines.append(
        "± on few-shot accuracy is the 95% confidence interval (1.96·std/√n) over the evaluation episodes "
        "(each averaged over the training seeds, which share the episodes); seed std is the standard "
        "deviation of the per-seed means."
    )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--parts", default="dann,distillation,multitask")
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3, help="training seeds for (a) and (c)")
    parser.add_argument("--eval-seed", type=int, default=1234)
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--n-query", type=int, default=5)
    parser.add_argument("--source-per-class", type=int, default=100)
    parser.add_argument("--dann-steps", type=int, default=300)
    parser.add_argument("--max-lambda", type=float, default=1.0)
    parser.add_argument("--dann-lr", type=float, default=default_options("dann")["lr"])
    parser.add_argument("--labelled-per-class", type=int, default=16)
    parser.add_argument("--unlabelled-pool", type=int, default=1000)
    parser.add_argument("--distill-steps", type=int, default=150)
    parser.add_argument("--distill-seeds", type=int, default=3)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--target", default="banking77")
    parser.add_argument("--target-per-class", type=int, default=40)
    parser.add_argument("--tasks", default="clinc150,agnews")
    parser.add_argument("--examples-per-task", type=int, default=500)
    parser.add_argument("--multitask-steps", type=int, default=300)
    parser.add_argument("--json", default="", help="also write the raw numbers to this JSON file")
    parser.add_argument("--report", default="", help="also write the report as the 'transfer' section of this file")


def run(args: argparse.Namespace) -> int:
    if args.quick:
        args.episodes, args.source_per_class, args.dann_steps = 10, 20, 30
        args.unlabelled_pool, args.distill_steps, args.distill_seeds = 64, 20, 1
        args.target_per_class, args.examples_per_task, args.multitask_steps = 10, 50, 30
        args.seeds = 1
    torch.set_num_threads(args.threads)
    parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    started = time.perf_counter()
    results: dict = {}
    # One frozen MiniLM for (a) and (c): every method built on it shares its embedding cache.
    encoder = build_encoder("minilm") if {"dann", "multitask"} & set(parts) else None
    if "dann" in parts:
        results["dann"] = bench_dann(encoder, args)
        print(f"(a) done in {results['dann']['seconds']:.0f} s", file=sys.stderr, flush=True)
    if "distillation" in parts:
        results["distillation"] = bench_distillation(args)
        print(f"(b) done in {results['distillation']['seconds']:.0f} s", file=sys.stderr, flush=True)
    if "multitask" in parts:
        results["multitask"] = bench_multitask(encoder, args)
        print(f"(c) done in {results['multitask']['seconds']:.0f} s", file=sys.stderr, flush=True)
    results["seconds"] = time.perf_counter() - started
    body = report(results, args)
    print(body)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    if args.report:
        write_section(args.report, "transfer", "Transfer methods: DANN, distillation, multi-task", body, sys.stderr)
    return 0


STUDY = register_study(Study(NAME, DESCRIPTION, add_arguments, run, __doc__))
