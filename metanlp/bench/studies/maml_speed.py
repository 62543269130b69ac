"""Meta-training speed of MAML / FOMAML / ANIL: batched inner loops vs a per-task loop vs clone-and-adapt.

Three implementations of the same meta-training step, side by side in one run (calls interleaved,
so a busy machine slows all alike), each first checked to give the same meta-gradient:

- batched: ``train_steps`` — a meta-batch's tasks adapted together, parameters stacked per task
  and the head (and encoder) run through ``torch.func.vmap`` over the task axis
  (``metanlp.methods._functional.batched_inner_loops``).
- per-task loop: ``train_step`` per episode — the same functional inner loop, one task at a time.
- clone-and-adapt, learn2learn style: the learner module is built ONCE; per task only its
  parameters are cloned into its slots (``module._parameters[name] = θ.clone()``), each inner
  step writes θ − α∇ back into the slots, and the originals are put back afterwards. No deepcopy,
  no module construction per task.

Two cases: frozen MiniLM (cached sentence features; the defaults: γ/β body, Proto-MAML init) and
the encoder in the inner loop (a small from-scratch encoder, ``finetune=top``: MAML adapts its top
layer per task, ANIL trains it in the outer loop only).

    python -m metanlp bench maml-speed                 # writes its section of docs/results_maml_speed.md
    python -m metanlp bench maml-speed --repeats 5 --no-write
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from metanlp.bench.machine import machine_description
from metanlp.bench.studies import Study, register_study
from metanlp.bench.studies._common import command_line, split_episodes, whole_number, write_section
from metanlp.encoders import build_encoder, mean_pool
from metanlp.methods import create_method
from metanlp.methods._functional import OUTPUT_NAMES, prototype_output_layer
from metanlp.methods.base import classification_metrics
from metanlp.methods.maml import GradientMetaLearner, Task

NAME = "maml-speed"
DESCRIPTION = "MAML / FOMAML / ANIL meta-training speed: batched vmap vs per-task loop vs clone-and-adapt"

RESULTS = "docs/results_maml_speed.md"
SCRATCH = {"num_layers": 2, "hidden_size": 64, "num_heads": 4, "feedforward_size": 128, "max_length": 32,
           "dropout": 0.0}
METHODS = ("maml", "fomaml", "anil")


# ----- learn2learn-style clone-and-adapt on a module built once ------------------------------


class Learner(nn.Module):
    """encoder (optional) → the method's head (body, standardise, hidden) → an output Linear(D, N)."""

    def __init__(self, method: GradientMetaLearner, n_way: int, with_encoder: bool) -> None:
        super().__init__()
        self.encoder = method.encoder if with_encoder else None
        self.head = method.head
        self.output = nn.Linear(method.head.output_width, n_way)
        self.normalize = method.encoder.normalize

    def representation(self, inputs) -> torch.Tensor:
        if self.encoder is not None:
            output = self.encoder(inputs["input_ids"], inputs["attention_mask"])
            pooled = mean_pool(output.last_hidden_state, output.attention_mask)
            inputs = F.normalize(pooled, dim=-1) if self.normalize else pooled
        return self.head(inputs)

    def forward(self, inputs) -> torch.Tensor:
        return self.output(self.representation(inputs))


class CloneAndAdapt:
    """One method's meta-training step, the learn2learn way: clone parameters, adapt in place, restore."""

    def __init__(self, method: GradientMetaLearner, n_way: int) -> None:
        self.method = method
        self.learner = Learner(method, n_way, with_encoder=method.inner_loop_adapts_encoder())  # built once
        meta = method.meta_parameters()
        adapted = set(method.inner_loop_names({**meta, **dict.fromkeys(OUTPUT_NAMES)}))
        # (module, attribute) of each meta-parameter inside the learner; "head.x.y" and "encoder.x.y" both resolve
        self.meta_slots = [self.slot(name) for name in meta]
        self.adapted = [slot for slot, name in zip(self.meta_slots, meta, strict=True) if name in adapted]
        self.rates = [method.inner_lr_of(name) for name in meta if name in adapted] + [method.options.inner_lr] * 2
        self.output_slots = [(self.learner.output, "weight"), (self.learner.output, "bias")]

    def slot(self, name: str) -> tuple[nn.Module, str]:
        *parents, attribute = name.split(".")
        module: nn.Module = self.learner
        for parent in parents:
            module = getattr(module, parent)
        return module, attribute

    def meta_step(self, tasks: list[Task]) -> None:
        method = self.method
        optimizer = method.optimizer()
        optimizer.zero_grad()
        for task in tasks:
            originals = [module._parameters[attribute] for module, attribute in self.meta_slots]
            try:
                loss = self.task_query_loss(task) / method.options.meta_batch
            finally:
                for (module, attribute), original in zip(self.meta_slots, originals, strict=True):
                    module._parameters[attribute] = original
            loss.backward()
        optimizer.step()

    def task_query_loss(self, task: Task) -> torch.Tensor:
        method = self.method
        # The task's output layer comes from θ itself (Proto-MAML), before the body is cloned: the
        # inner loop then treats it as its own variable, as metanlp's functional loop does.
        if method.options.head_init == "prototype":
            representation = self.learner.representation(task.support)
            scale = method.options.prototype_scale / representation.shape[-1]
            init = prototype_output_layer(representation, task.support_labels, task.n_way, scale)
        else:
            width = method.head.output_width
            init = {"output.weight": torch.zeros(task.n_way, width), "output.bias": torch.zeros(task.n_way)}
        for module, attribute in self.adapted:  # clone: a new tensor per task, its graph leads back to θ
            module._parameters[attribute] = module._parameters[attribute].clone()
        output = self.learner.output
        output._parameters["weight"] = init["output.weight"].view_as(init["output.weight"]).requires_grad_()
        output._parameters["bias"] = init["output.bias"].view_as(init["output.bias"]).requires_grad_()
        slots = self.adapted + self.output_slots
        report_queries = not isinstance(task.query, dict)  # what metanlp's train_step reports, the same way
        support_losses, query_losses = [], []
        for _ in range(method.options.inner_steps):
            loss = F.cross_entropy(self.learner(task.support), task.support_labels)
            current = [module._parameters[attribute] for module, attribute in slots]
            gradients = torch.autograd.grad(
                loss, current, create_graph=not method.options.first_order, allow_unused=True
            )
            for (module, attribute), value, gradient, rate in zip(slots, current, gradients, self.rates, strict=True):
                if gradient is not None:
                    module._parameters[attribute] = value - rate * gradient  # keeps the graph to θ
            support_losses.append(loss.item())
            if report_queries:
                with torch.no_grad():
                    query_losses.append(F.cross_entropy(self.learner(task.query), task.query_labels).item())
        query_loss = F.cross_entropy(self.learner(task.query), task.query_labels)
        with torch.no_grad():
            self.last_metrics = {"support": classification_metrics(self.learner(task.support), task.support_labels),
                                 "query_loss": query_loss.item(), "support_losses": support_losses,
                                 "query_losses": query_losses}
        return query_loss


# ----- the cases -------------------------------------------------------------------------------


def make_method(name: str, encoder, meta_batch: int, encoder_in_loop: bool) -> GradientMetaLearner:
    torch.manual_seed(0)
    # lr 1e-7: every repeat times (nearly) the same computation; the speed does not depend on it.
    options = {"meta_batch": meta_batch, "lr": 1e-7, "encoder_lr": 1e-7, "finetune": "top" if encoder_in_loop else "frozen"}
    return create_method(name, encoder, options)


def check_same_meta_gradient(name: str, encoder, episodes, meta_batch: int, encoder_in_loop: bool) -> float:
    """Largest relative difference between the three implementations' meta-gradients on one meta-batch."""
    gradients = []
    for implementation in ("batched", "per-task", "clone-and-adapt"):
        method = make_method(name, encoder, meta_batch, encoder_in_loop).eval()
        tasks = method.make_tasks(episodes[:meta_batch])
        parameters = method.trainable_parameters()
        if implementation == "batched":
            outcome = method.adapt_and_score_batch(tasks)
            losses = [F.cross_entropy(logits, task.query_labels) for logits, task in zip(outcome.query_logits, tasks,
                                                                                          strict=True)]
            loss = torch.stack(losses).sum() / meta_batch
        elif implementation == "per-task":
            loss = sum(F.cross_entropy(method.adapt_and_score(task).query_logits, task.query_labels)
                       for task in tasks) / meta_batch
        else:
            clone = CloneAndAdapt(method, tasks[0].n_way)
            loss = 0.0
            for task in tasks:
                originals = [module._parameters[attribute] for module, attribute in clone.meta_slots]
                loss = loss + clone.task_query_loss(task) / meta_batch
                for (module, attribute), original in zip(clone.meta_slots, originals, strict=True):
                    module._parameters[attribute] = original
        gradients.append(torch.autograd.grad(loss, parameters, allow_unused=True))
    def flat(gradient: tuple) -> torch.Tensor:
        return torch.cat([g.flatten() for g in gradient if g is not None])

    reference = flat(gradients[0])
    return max(((flat(other) - reference).norm() / reference.norm()).item() for other in gradients[1:])


def steps_to_time(name: str, encoder, episodes, meta_batch: int, encoder_in_loop: bool) -> dict[str, Callable]:
    """Callables that each run one outer step (``meta_batch`` episodes) their own way."""
    batched = make_method(name, encoder, meta_batch, encoder_in_loop)
    per_task = make_method(name, encoder, meta_batch, encoder_in_loop)  # train_step: always one task at a time
    clone_method = make_method(name, encoder, meta_batch, encoder_in_loop)
    clone = CloneAndAdapt(clone_method, episodes[0].n_way)
    cursor = {"index": 0}

    def next_batch():
        start = cursor["index"] % (len(episodes) - meta_batch + 1)
        cursor["index"] += meta_batch
        return episodes[start : start + meta_batch]

    def run_clone(batch):
        clone_method.train()
        clone.meta_step([clone_method.make_task(episode, with_query=True, track_gradients=True) for episode in batch])

    return {
        "batched (vmap)": lambda batch: batched.train_steps(batch),
        "per-task loop": lambda batch: [per_task.train_step(episode) for episode in batch],
        "clone-and-adapt": run_clone,
    }, next_batch


def time_interleaved(steps: dict[str, Callable], next_batch, repeats: int, warmup: int = 3) -> dict[str, list[float]]:
    """Seconds per outer step of each implementation (same batches for all, calls alternating)."""
    samples: dict[str, list[float]] = {label: [] for label in steps}
    for repeat in range(warmup + repeats):
        batch = next_batch()
        for label, step in steps.items():
            started = time.perf_counter()
            step(batch)
            if repeat >= warmup:
                samples[label].append(time.perf_counter() - started)
    return samples


def describe(samples: list[float], meta_batch: int) -> tuple[float, float, float]:
    """Median episodes/s and the interquartile range of episodes/s."""
    rates = sorted(meta_batch / seconds for seconds in samples)
    quartiles = statistics.quantiles(rates, n=4)
    return statistics.median(rates), quartiles[0], quartiles[2]



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=whole_number(2), default=20,
                        help="timed outer steps per implementation and cell (at least 2: the table shows an "
                        "interquartile range)")
    parser.add_argument("--meta-batches", default="4,16")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--k-shot", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="print only; leave the results file alone")
    parser.add_argument("--report", default=RESULTS, help="the results file whose section is rewritten")


def measure(args: argparse.Namespace) -> tuple[list[tuple], list[tuple]]:
    """(timing rows (case, method, meta-batch, {implementation: (median, q1, q3) episodes/s}),
    gradient checks (case, method, largest relative difference))."""
    meta_batches = [int(value) for value in args.meta_batches.split(",")]
    episodes = split_episodes("clinc150", "train", 5, args.k_shot, 5, max(meta_batches) * 4, seed=0)
    cases = [("frozen MiniLM features", build_encoder("minilm"), False),
             ("encoder in the inner loop (scratch, top layer)", build_encoder("scratch", **SCRATCH), True)]
    rows, checks = [], []
    for case, encoder, encoder_in_loop in cases:
        if not encoder_in_loop:  # embed every sentence once: the frozen case times meta-training, not MiniLM
            make_method("maml", encoder, 4, False).features(
                [text for episode in episodes for text in episode.support_texts + episode.query_texts]
            )
        for name in METHODS:
            checks.append((case, name, check_same_meta_gradient(name, encoder, episodes, 4, encoder_in_loop)))
            for meta_batch in meta_batches:
                steps, next_batch = steps_to_time(name, encoder, episodes, meta_batch, encoder_in_loop)
                samples = time_interleaved(steps, next_batch, args.repeats)
                described = {label: describe(values, meta_batch) for label, values in samples.items()}
                rows.append((case, name, meta_batch, described))
                print(case, name, meta_batch, {label: round(value[0], 1) for label, value in described.items()},
                      flush=True)
    return rows, checks


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    rows, checks = measure(args)
    lines = ["| case | method | meta-batch | batched (vmap) ep/s | per-task loop ep/s | clone-and-adapt ep/s "
             "| batched / per-task | batched / clone |", "|---|---|---|---|---|---|---|---|"]
    for case, name, meta_batch, described in rows:
        cells = [f"{median:.0f} ({low:.0f}–{high:.0f})" for median, low, high in described.values()]
        batched, per_task, clone = (value[0] for value in described.values())
        lines.append(f"| {case} | {name} | {meta_batch} | {' | '.join(cells)} | **{batched / per_task:.2f}×** "
                     f"| {batched / clone:.2f}× |")
    table = "\n".join(lines)
    check_lines = "\n".join(f"- {case}, {name}: largest ‖Δ‖/‖g‖ = {worst:.1e}" for case, name, worst in checks)
    section = (
        f"Produced by `{command_line(NAME, args, add_arguments)}` (meta-batches {args.meta_batches}). "
        f"CLINC150 meta-train episodes, 5-way {args.k_shot}-shot, 5 queries per class; each method on its defaults "
        "(5 inner steps, γ/β body, Proto-MAML init) except the meta-batch shown and an outer lr of 1e-7 (every "
        "repeat times the same work). Frozen case: MiniLM sentence features embedded once before timing, so the "
        "rows time meta-training only. Encoder case: a "
        f"from-scratch encoder ({SCRATCH['num_layers']} layers, width {SCRATCH['hidden_size']}, dropout 0), "
        "`finetune=top`. Episodes per second of meta-training = meta-batch / seconds per outer step, "
        f"median over {args.repeats} outer steps per cell (interquartile range in brackets) after 3 warm-up "
        "steps; the three implementations ran alternately on the same meta-batches.\n\n"
        f"Machine: {machine_description()} at the end of the run.\n\n{table}\n\n"
        "Same meta-gradient before timing (float32, one meta-batch of 4; ‖g_other − g_batched‖ / ‖g_batched‖ over "
        "all meta-parameters, the larger of per-task and clone-and-adapt):\n\n"
        f"{check_lines}"
    )
    print(table)
    if not args.no_write:
        write_section(args.report, "bench_maml_speed", "Meta-training speed: batched vs per-task vs clone-and-adapt",
                      section)
    return 0


STUDY = register_study(Study(NAME, DESCRIPTION, add_arguments, run, __doc__))
