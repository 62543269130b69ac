"""Controls that separate a method's learned parameters from its mechanism, on frozen MiniLM.

Each pair is trained for the same number of meta-training episodes (same training episodes: same
seed) and scored on the same saved test episodes; differences are paired, with 95% intervals.

- Matching Networks (default: a learned 384×384 residual head) vs ProtoNet with the same head
  (``head=residual``, Matching's learning rate), with ProtoNet's Euclidean distance and with
  Matching's cosine at Matching's temperature (at 1 shot the latter is the same model as Matching).
- Meta-transfer (default: γ, β on every MiniLM layer, a MAML outer loop around a per-task head)
  vs ProtoNet with the same γ, β (``film=layers``, meta-transfer's learning rate, no inner loop).
- Multi-task learning (default: cosine heads, cosine prototypes) vs its first default (linear heads at
  1e-3, Euclidean prototypes) and vs the same method with no auxiliary dataset (``tasks=""``: the
  target's training classes only): what the heads' form and the auxiliary tasks each contribute.
- Fine-tuning: a linear probe (default) vs the top layer unfrozen (``finetune=top``), on the first
  ``--finetune-episodes`` test episodes (per-task fine-tuning of MiniLM costs seconds per episode on a CPU).

    python -m metanlp bench controls --embeddings /tmp/emb/minilm.pt

Finished cells are kept in ``--out`` (with the saved test episodes beside it) and reused when the command
is run again; ``--rows`` picks rows by label. ``--report FILE`` also writes the table as FILE's
``controls`` section.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from metanlp.bench.machine import machine_description
from metanlp.bench.studies import Study, register_study
from metanlp.bench.studies._common import preload_embeddings, saved_test_episodes, write_section
from metanlp.engine import ConfigError, RunConfig
from metanlp.engine.training import EncoderPool, run_training
from metanlp.evaluation import EvaluationResult, compare_results

NAME = "controls"
DESCRIPTION = "learned parameters vs mechanism: Matching / meta-transfer vs ProtoNet with the same head or γ/β"

# The learning rate of each pair is pinned, so that a change of a method's default cannot unpair it:
# 3e-4 was Matching Networks' default and 1e-3 is meta-transfer's when the table in
# docs/results_controls.md was measured.
HEAD_LR, FILM_LR = 3e-4, 1e-3
MULTITASK = {"head": "cosine", "distance": "cosine", "lr": 3e-4}  # multi-task's default since the defect fix
# label → (method, options).
ROWS: dict[str, tuple[str, dict]] = {
    "ProtoNet": ("protonet", {}),
    "ProtoNet + residual head": ("protonet", {"head": "residual", "lr": HEAD_LR}),
    # s=5 on squared Euclidean distances of unit vectors is cosine at s=10: Matching's sharpness, ProtoNet's distance.
    "ProtoNet + residual head (s=5)": ("protonet", {"head": "residual", "lr": HEAD_LR, "scale": 5.0}),
    "ProtoNet + residual head (cosine s=10)": (
        "protonet", {"head": "residual", "lr": HEAD_LR, "distance": "cosine", "scale": 10.0}
    ),
    "Matching Networks": ("matching", {"lr": HEAD_LR}),
    "ProtoNet + γ/β (film=layers)": ("protonet", {"film": "layers", "lr": FILM_LR}),
    "ProtoNet + γ/β (s=5)": ("protonet", {"film": "layers", "lr": FILM_LR, "scale": 5.0}),
    "Meta-transfer": ("meta_transfer", {"lr": FILM_LR}),
    "Multi-task": ("multitask", MULTITASK),
    "Multi-task (target classes only)": ("multitask", {**MULTITASK, "tasks": ""}),
    "Multi-task (linear heads: first default)": ("multitask", {"head": "linear", "distance": "euclidean", "lr": 1e-3}),
    "Fine-tune (linear probe)": ("finetune", {}),
    "Fine-tune top layer": ("finetune", {"finetune": "top"}),
}
FINETUNE_ROWS = ("Fine-tune (linear probe)", "Fine-tune top layer")
PAIRS = [  # (A, B): A − B
    ("ProtoNet + residual head", "ProtoNet"),
    ("ProtoNet + residual head (cosine s=10)", "ProtoNet"),
    ("Matching Networks", "ProtoNet"),
    ("Matching Networks", "ProtoNet + residual head"),
    ("Matching Networks", "ProtoNet + residual head (s=5)"),
    ("Matching Networks", "ProtoNet + residual head (cosine s=10)"),
    ("ProtoNet + γ/β (film=layers)", "ProtoNet"),
    ("ProtoNet + γ/β (s=5)", "ProtoNet"),
    ("Meta-transfer", "ProtoNet"),
    ("Meta-transfer", "ProtoNet + γ/β (film=layers)"),
    ("Meta-transfer", "ProtoNet + γ/β (s=5)"),
    ("Multi-task", "ProtoNet"),
    ("Multi-task", "Multi-task (target classes only)"),
    ("Multi-task", "Multi-task (linear heads: first default)"),
    ("Fine-tune top layer", "Fine-tune (linear probe)"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--datasets", default="fewrel,huffpost")
    parser.add_argument("--shots", default="1,5")
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--finetune-episodes", type=int, default=30)
    parser.add_argument("--train-steps", type=int, default=200)
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated row labels (default: all)")
    parser.add_argument("--embeddings", help="a saved dict text → MiniLM embedding, preloaded into the cache")
    parser.add_argument("--out", default="runs/controls/controls.json")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table-only", action="store_true", help="print the table of --out, run nothing")
    parser.add_argument("--report", default="", help="also write the table as the 'controls' section of this file")


def run_cell(pool: EncoderPool, method: str, options: dict, dataset: str, k_shot: int, steps: int, episodes: str) -> dict:
    config = RunConfig(
        method=method, dataset=dataset, n_way=5, k_shot=k_shot, n_query=5, train_steps=steps,
        episodes_file=episodes, encoder="minilm", method_options=options, seed=0, device="cpu",
    )
    result = run_training(config, encoder_pool=pool)
    evaluation = result.evaluation
    return {
        "evaluation": evaluation.to_dict(), "meta_learned_parameters": result.meta_learned_parameters,
        "meta_trained": result.meta_trained, "train_seconds": result.seconds - evaluation.seconds,
    }


def table(results: dict, steps: int) -> str:
    """Markdown: accuracy per row and cell, then the paired differences."""
    cells = list(results)
    lines = ["| row | meta-learned params | " + " | ".join(cells) + " |", "|---|---:|" + "---:|" * len(cells)]
    for label in ROWS:
        found = [results[cell].get(label) for cell in cells]
        count = next((r["meta_learned_parameters"] for r in found if r), 0)
        values = [f"{100 * r['mean_accuracy']:.1f} ± {100 * r['ci95']:.1f} ({r['episodes']})" if r else "–"
                  for r in (row["evaluation"] if row else None for row in found)]
        lines.append(f"| {label} | {count:,} | " + " | ".join(values) + " |")
    lines += ["", "| A − B (paired, points) | " + " | ".join(cells) + " |", "|---|" + "---:|" * len(cells)]
    for a, b in PAIRS:
        values = []
        for cell in cells:
            if a in results[cell] and b in results[cell]:
                comparison = compare_results(*(EvaluationResult(**results[cell][x]["evaluation"]) for x in (a, b)))
                mark = "*" if comparison.excludes_zero else ""
                values.append(f"{100 * comparison.mean_difference:+.1f} ± {100 * comparison.ci95:.1f}{mark}")
            else:
                values.append("–")
        lines.append(f"| {a} − {b} | " + " | ".join(values) + " |")
    lines.append(f"\n{steps} meta-training episodes per trained row; * : 95% interval excludes 0.")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    saved = json.loads(out.read_text()) if out.exists() else {}
    results = saved.get("results", {})
    steps = args.train_steps
    if args.table_only:
        steps = saved.get("settings", {}).get("train_steps", steps)
    else:
        measure(args, out, results)
    text = table(results, steps)
    print(text)
    if args.report:
        write_section(args.report, "controls", "Controls", text)
    return 0


def measure(args: argparse.Namespace, out: Path, results: dict) -> None:
    """Run every missing (cell, row) and save ``results`` to ``out`` after each one."""
    unknown = [label for label in args.rows.split(",") if label not in ROWS]
    if unknown:
        raise ConfigError(f"--rows: no row labelled {', '.join(map(repr, unknown))}; the rows: {', '.join(ROWS)}")
    pool = EncoderPool()
    if args.embeddings:
        preload_embeddings(pool, args.embeddings)
    for dataset in args.datasets.split(","):
        for k_shot in (int(k) for k in args.shots.split(",")):
            cell = results.setdefault(f"{dataset} {k_shot}-shot", {})
            for label in args.rows.split(","):
                if label in cell:
                    continue
                method, options = ROWS[label]
                limit = args.finetune_episodes if label in FINETUNE_ROWS else None
                episodes = saved_test_episodes(out.parent / "control_episodes", dataset, k_shot, args.episodes,
                                              first=limit)
                cell[label] = run_cell(pool, method, options, dataset, k_shot, args.train_steps, str(episodes))
                evaluation = cell[label]["evaluation"]
                print(f"{dataset} {k_shot}-shot {label}: {100 * evaluation['mean_accuracy']:.1f} "
                      f"(train {cell[label]['train_seconds']:.0f} s, eval {evaluation['seconds']:.0f} s)", flush=True)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps({
                    "settings": {**vars(args), "machine": machine_description(load=False)},
                    "results": results,
                }))


STUDY = register_study(Study(NAME, DESCRIPTION, add_arguments, run, __doc__))
