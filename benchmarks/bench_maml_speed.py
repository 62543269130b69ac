"""Speed of one MAML outer step: metanlp's functional inner loop vs clone-and-adapt.

Both implementations meta-learn the same head (standardise → Linear(384, 128) → ReLU → a
zero-initialised Linear(128, 5)) on cached MiniLM embeddings of one 5-way 5-shot CLINC150
episode, with 5 inner steps, and compute the same meta-gradient (checked before timing).

- functional: ``metanlp.methods.maml`` — parameters as a dict, the head run on θ'_t through
  plain functions, ``torch.autograd.grad(create_graph=...)`` per inner step.
- clone-and-adapt: ``copy.deepcopy`` of the head module, then each inner step writes
  θ − α∇ back into the copy's modules (the usual trick that keeps the graph), and the
  copy's gradients are handed back to the original.

    python benchmarks/bench_maml_speed.py                 # 200 timed repeats per row
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
from torch import nn
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from metanlp.data.episodes import load_episodes  # noqa: E402
from metanlp.encoders import build_encoder  # noqa: E402
from metanlp.methods import create_method  # noqa: E402
from metanlp.methods._functional import standardize  # noqa: E402

EPISODES = ROOT / "benchmarks" / "episodes" / "clinc150_5way_5shot_5q_20.json.gz"
RESULTS = ROOT / "docs" / "results_maml_speed.md"
HIDDEN, INNER_STEPS, INNER_LR = 128, 5, 0.1


class Standardize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return standardize(x)


def clone_and_adapt_head(hidden: nn.Linear, n_way: int) -> nn.Sequential:
    """The same learner as a module: its output layer starts at zero for every task."""
    output = nn.Linear(hidden.out_features, n_way)
    nn.init.zeros_(output.weight)
    nn.init.zeros_(output.bias)
    return nn.Sequential(Standardize(), hidden, nn.ReLU(), output)


def clone_and_adapt_step(method, task, second_order: bool) -> list[torch.Tensor]:
    """One outer step the straightforward way; returns the meta-gradient of the hidden layer."""
    learner = copy.deepcopy(clone_and_adapt_head(method.hidden, task.n_way))  # fresh leaves, same values
    slots = [(module, name) for module in learner.modules() for name, _ in module.named_parameters(recurse=False)]
    initial = [module._parameters[name] for module, name in slots]
    for _ in range(INNER_STEPS):
        loss = F.cross_entropy(learner(task.support), task.support_labels)
        current = [module._parameters[name] for module, name in slots]
        gradients = torch.autograd.grad(loss, current, create_graph=second_order)
        for (module, name), value, gradient in zip(slots, current, gradients, strict=True):
            module._parameters[name] = value - INNER_LR * gradient  # keeps the graph back to `initial`
    query_loss = F.cross_entropy(learner(task.query), task.query_labels)
    meta_gradients = torch.autograd.grad(query_loss, initial[:2])  # the hidden layer's weight and bias
    optimizer = method.optimizer()
    for parameter, gradient in zip(method.hidden.parameters(), meta_gradients, strict=True):
        parameter.grad = gradient
    optimizer.step()
    return list(meta_gradients)


def functional_step(method, task) -> list[torch.Tensor]:
    optimizer = method.optimizer()
    optimizer.zero_grad()
    outcome = method.adapt_and_score(task, record_query_losses=False)  # the same work as clone-and-adapt
    F.cross_entropy(outcome.query_logits, task.query_labels).backward()
    gradients = [parameter.grad for parameter in method.hidden.parameters()]
    optimizer.step()
    return gradients


def make_method(encoder, name: str):
    torch.manual_seed(0)
    options = {"finetune": "frozen", "head_hidden": HIDDEN, "inner_steps": INNER_STEPS, "inner_lr": INNER_LR,
               "meta_batch": 1, "lr": 1e-7}
    return create_method(name, encoder, options)


def time_interleaved_ms(steps: list, repeats: int, warmup: int = 5) -> list[list[float]]:
    """Milliseconds per call of each step; calls alternate, so a busy machine slows all alike."""
    for _ in range(warmup):
        for step in steps:
            step()
    samples: list[list[float]] = [[] for _ in steps]
    for _ in range(repeats):
        for step, times in zip(steps, samples, strict=True):
            started = time.perf_counter()
            step()
            times.append(1000 * (time.perf_counter() - started))
    return samples


def cpu_description() -> str:
    model = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    encoder = build_encoder("minilm")
    episode = load_episodes(EPISODES)[0][0]
    rows = []
    for label, second_order in (("second order (MAML)", True), ("first order (FOMAML)", False)):
        name = "maml" if second_order else "fomaml"
        functional, clone = make_method(encoder, name), make_method(encoder, name)
        task = functional.make_task(episode, with_query=True, track_gradients=True)  # embeds once; cached after
        # lr = 1e-7: the steps barely move θ, so every repeat times the same computation.
        reference = functional_step(functional, task)
        for ours, theirs in zip(reference, clone_and_adapt_step(clone, task, second_order), strict=True):
            assert torch.allclose(ours, theirs, atol=1e-6), "the two implementations disagree"
        implementations = {
            "functional (metanlp)": lambda method=functional, task=task: functional_step(method, task),
            "clone-and-adapt": lambda method=clone, task=task, order=second_order: clone_and_adapt_step(
                method, task, order
            ),
        }
        timings = time_interleaved_ms(list(implementations.values()), args.repeats)
        for implementation, samples in zip(implementations, timings, strict=True):
            quartiles = statistics.quantiles(samples, n=4)
            rows.append((label, implementation, statistics.median(samples), quartiles[0], quartiles[2],
                         min(samples), max(samples)))

    lines = [
        "| meta-gradient | implementation | median ms | IQR ms | min–max ms |",
        "|---|---|---|---|---|",
    ]
    for label, implementation, median, q1, q3, low, high in rows:
        lines.append(f"| {label} | {implementation} | {median:.2f} | {q1:.2f}–{q3:.2f} | {low:.2f}–{high:.2f} |")
    ratios = []
    for index in range(0, len(rows), 2):
        ours, theirs = rows[index], rows[index + 1]
        ratios.append(
            f"- {ours[0]}: clone-and-adapt / functional = **{theirs[2] / ours[2]:.2f}×** by median, "
            f"{theirs[5] / ours[5]:.2f}× by minimum (the least disturbed run)"
        )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    machine = (
        f"{cpu_description()}, torch {torch.__version__}, {args.threads} torch thread(s), "
        f"Python {platform.python_version()}, load average {load:.1f} when run"
    )
    table = "\n".join(lines)
    print(table)
    print("\n".join(ratios))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        "# One MAML outer step: functional inner loop vs clone-and-adapt\n\n"
        "Produced by `python benchmarks/bench_maml_speed.py`. One 5-way 5-shot CLINC150 episode "
        f"(5 queries per class, first episode of `{EPISODES.relative_to(ROOT)}`), cached MiniLM "
        f"embeddings, head standardise → Linear(384, {HIDDEN}) → ReLU → Linear({HIDDEN}, 5) with the "
        f"output layer zero-initialised per task, {INNER_STEPS} inner steps (α = {INNER_LR}), then the "
        f"outer Adam step. {args.repeats} timed repeats after 5 warm-up steps, the two implementations "
        "called alternately; both were first checked to give the same meta-gradient.\n\n"
        f"Machine: {machine}.\n\n{table}\n\n" + "\n".join(ratios) + "\n",
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()
