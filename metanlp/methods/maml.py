"""MAML, first-order MAML and ANIL: one gradient-based meta-learner under three names.

The learner is encoder → sentence embedding → head (``FeatureHead``): a light meta-learned
*body* on the embedding (default ``body="scale_shift"``: γ ⊙ x + β per dimension, identity at
start; ``"adapter"`` adds a residual linear map, ``"none"`` is the old head), standardisation,
an optional meta-learned ReLU layer ``hidden`` (H → D, ``head_hidden``), and an output layer
(D → N) that every task starts afresh: Proto-MAML's prototypes (default, logits −(s/D)‖x − c_k‖²,
``prototype_scale`` s) or zeros (``head_init``). Both inits ignore which class got which label.

Inner loop, per task: ``inner_steps`` gradient steps on the support loss from θ.
- MAML adapts body, hidden layer, output layer and the encoder's trainable layers
  (``finetune="top"/"full"``; the encoder then runs on a parameter dict through
  ``torch.func.functional_call``; ``"frozen"`` uses cached embeddings, the fast path).
- ANIL adapts the output layer only; the body is learned in the outer loop alone.
Outer loop: the query loss after adaptation is differentiated back to θ, through every
inner gradient (second order) or taking each inner gradient as a constant (first order, FOMAML).
The body decays toward identity after each outer step (``body_decay``, L2-SP): with 8 (FewRel)
or 20 (HuffPost) meta-training classes an undecayed body specialises to them. The head, like the
encoder, runs on parameter dicts through ``torch.func.functional_call``.

Two ways to train: ``train_step(episode)`` adapts one task and adds its meta-gradient to
``.grad`` (the optimiser steps after every ``meta_batch`` episodes; every call reports its own
episode). ``train_steps(episodes)`` makes the same updates, but whole meta-batches go through
``batched_inner_loops``: the tasks' parameters are stacked and the head (and encoder) run under
``torch.func.vmap`` over the task axis, one ``autograd.grad`` per inner step for all tasks.
It is equal to the per-task loop up to rounding (tested) and, on frozen features, about 2× as
fast at the default meta-batch of 8 (1.4× at 4, 2.3–2.8× at 16; ``docs/results_maml_speed.md``).
Buffering episodes inside ``train_step`` would not pay: a waiting episode must still report its
own metrics, and that inner loop (without the meta-gradient's graph) costs about two thirds of a
per-task step (measured 1.9 vs 2.9 ms CPU), so the buffered steps would be no faster in total.

What meta-training buys on frozen MiniLM (``python -m metanlp bench maml-budget --embeddings
/tmp/emb/minilm.pt --seeds 0,1,2 --fewrel-splits all``; 5-way 1-shot, 300 test episodes per
split, paired against the same method with ``train_steps=0``; ``docs/results_maml_speed.md``):
HuffPost +0.8 to +1.3 points for each of MAML, FOMAML and ANIL (3 seeds, every 95% CI above 0);
FewRel pooled over its 5 class splits +0.6 to +1.1 (every CI above 0), but per split from −1.1
(split 02, seed 2; CI below 0) to +2.3 (split 03). Small gains, chosen on validation classes only
(``body``, ``lr``, ``body_decay``, ``meta_batch``, steps); a residual adapter or an undecayed
γ/β lost on validation. The three members give different logits but nearly the same accuracy
here: at 1-shot the Proto-MAML start already fits the support set (its loss is near zero), so
the inner loop barely moves and what all three learn is the same body.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import ClassVar

import torch
from torch.nn import functional as F

from metanlp.data.types import Episode
from metanlp.encoders import Encoder
from metanlp.methods._functional import (
    BODIES,
    ENCODER_PREFIX,
    HEAD_INITS,
    HEAD_PREFIX,
    OUTPUT_NAMES,
    BatchedOutcome,
    FeatureHead,
    Params,
    batched_inner_loops,
    detached_copy,
    functional_embed,
    gradient_descent,
    inner_loop_variables,
    prototype_output_layer,
    run_head,
    zero_output_layer,
)
from metanlp.methods.base import (
    EncoderOptions,
    InnerStepCallback,
    Method,
    MethodCard,
    Metrics,
    TaskModel,
    classification_metrics,
    label_tensor,
)
from metanlp.methods.options import option
from metanlp.methods.registry import register_method

PRETRAINED_ENCODER_LR = 5e-5
SCRATCH_ENCODER_LR = 1e-3  # the family's outer lr before the γ/β body (lr 1e-2) became the default

# What the head sees: fixed embeddings (B, H), or a tokenised batch the encoder runs on.
Inputs = torch.Tensor | dict[str, torch.Tensor]


@dataclass
class InnerLoopOptions:
    """Settings every inner-loop meta-learner of this family shares (defaults: the plain learner)."""

    inner_steps: int = option(5, low=1, high=100)  # k: gradient steps per task during meta-training
    test_inner_steps: int = option(0, low=0, high=1000)  # steps when adapting to a new task; 0: same as inner_steps
    inner_lr: float = option(0.1, low=1e-6, high=100.0)  # α of the output layer (and hidden layer)
    lr: float = option(1e-3, low=1e-7, high=1.0)  # β, the outer (Adam) learning rate
    meta_batch: int = option(4, low=1, high=256)  # tasks summed per outer step (Finn et al.: 4 for 5-way 1-shot miniImageNet)
    first_order: bool = False
    head_hidden: int = option(0, low=0, high=4096)  # width D of a meta-learned ReLU layer before the output; 0: none
    head_init: str = option("zero", choices=HEAD_INITS)  # the task's output layer: "zero" or "prototype" (Proto-MAML)
    prototype_scale: float = option(10.0, low=1e-6, high=100.0)  # s of the prototype init: logits −(s/D)‖x − c_k‖² before the inner loop
    body: str = option("none", choices=BODIES)  # meta-learned light body on the embedding: none, shift, scale_shift, adapter, scale_shift+adapter
    body_inner_lr: float = option(0.0, low=0.0, high=100.0)  # inner-loop α of the body (MAML, FOMAML); 0: same as inner_lr
    body_decay: float = option(0.0, low=0.0, high=1000.0)  # per outer step the body moves lr × this of the way back to identity (L2-SP)
    batch_tasks: bool = False  # train_steps: a meta-batch's inner loops together (stacked parameters, vmap)


@dataclass
class MAMLOptions(EncoderOptions, InnerLoopOptions):
    encoder_lr: float = option(0.0, low=0.0, high=1.0)  # outer lr of trainable encoder layers; 0: 5e-5 if pretrained, 1e-3 from scratch
    encoder_inner_lr: float = option(0.01, low=0.0, high=100.0)  # inner-loop step size for encoder weights (MAML with finetune top/full)
    # The MAML family's defaults (chosen on validation classes, see the module docstring): a
    # meta-learned γ/β body on the features, decayed toward identity, and Proto-MAML's init.
    head_init: str = "prototype"
    body: str = "scale_shift"
    body_decay: float = 3.0
    lr: float = 1e-2
    meta_batch: int = 8  # cheap tasks on cached features; from about 8 at once the batched path pays
    batch_tasks: bool = True


@dataclass
class FirstOrderMAMLOptions(MAMLOptions):
    first_order: bool = True


@dataclass
class Task:
    """One episode turned into tensors."""

    n_way: int
    support: Inputs
    support_labels: torch.Tensor
    query: Inputs | None = None
    query_labels: torch.Tensor | None = None

    def shape_key(self) -> tuple:
        """Tasks with equal keys can be stacked (same N, support and query shapes)."""
        return (self.n_way, input_shape(self.support), input_shape(self.query))


def input_shape(inputs: Inputs) -> tuple:
    return tuple(inputs["input_ids"].shape) if isinstance(inputs, dict) else tuple(inputs.shape)


def stack_inputs(inputs: list[Inputs]) -> Inputs:
    """Features (T, B, H), or each tokenised tensor stacked to (T, B, L)."""
    if isinstance(inputs[0], dict):
        return {key: torch.stack([batch[key] for batch in inputs]) for key in inputs[0]}
    return torch.stack(inputs)


@dataclass
class Outcome:
    """One task's inner loop: query logits at θ_k, θ_k itself, and the losses along the way."""

    query_logits: torch.Tensor  # (Q, N), differentiable w.r.t. the meta-parameters
    adapted: Params  # θ_k
    support_losses: list[float]  # L_S(θ_0), ..., L_S(θ_{k−1})
    query_losses: list[float]  # L_Q(θ_1), ..., L_Q(θ_k); empty when the encoder adapts


class AdaptedHeadModel(TaskModel):
    """The learner with one task's adapted parameters."""

    def __init__(self, method: GradientMetaLearner, params: Params) -> None:
        self.method = method
        self.params = params

    def predict_logits(self, texts: list[str]) -> torch.Tensor:
        with torch.no_grad():
            return self.method.logits(self.params, self.method.inputs(texts, track_gradients=False))


def step_metrics(
    task: Task, query_logits: torch.Tensor, support_logits: torch.Tensor,
    support_losses: list[float], query_losses: list[float],
) -> Metrics:
    """What a training step reports about its episode, from the logits at θ_k and the inner losses."""
    query_loss, query_accuracy = classification_metrics(query_logits.detach(), task.query_labels)
    support_loss, support_accuracy = classification_metrics(support_logits.detach(), task.support_labels)
    return {
        "support_loss": support_loss.item(),
        "support_accuracy": support_accuracy,
        "query_loss": query_loss.item(),
        "query_accuracy": query_accuracy,
        "support_loss_before_adaptation": support_losses[0],
        # Loss after inner step 1..k; the last equals support_loss / query_loss.
        "inner_support_losses": support_losses[1:] + [support_loss.item()],
        "inner_query_losses": query_losses,
    }


class GradientMetaLearner(Method):
    """The shared implementation of MAML, FOMAML, ANIL (and, via a subclass, meta-transfer)."""

    #: True: the inner loop adapts the body (feature body, hidden layer, trainable encoder layers)
    #: too (MAML); False: only the task's output layer (ANIL, Raghu et al. 2020).
    adapts_body: ClassVar[bool] = True

    def __init__(self, encoder: Encoder, options: InnerLoopOptions) -> None:
        super().__init__(encoder, options)
        self.setup_encoder()
        self.head = FeatureHead(encoder.hidden_size, options.body, options.head_hidden)
        self._tasks_in_meta_batch = 0  # per-task path: meta-gradients accumulated in .grad so far
        self._has_trainable: bool | None = None
        self._pending: list[Task] = []  # batched path: tasks waiting for their meta-batch

    def setup_encoder(self) -> None:
        self.configure_encoder(self.options.finetune, self.options.top_k)

    @property
    def hidden(self):
        """The optional meta-learned ReLU layer of the head (None without ``head_hidden``)."""
        return self.head.hidden

    # ----- what the learner is made of ------------------------------------------------------
    def inner_loop_adapts_encoder(self) -> bool:
        return self.adapts_body and not self.encoder.is_frozen()

    def meta_parameters(self) -> Params:
        """θ as a dict: the head's body and hidden layer, plus the encoder's trainable weights if the inner loop adapts them."""
        params: Params = dict(self.head.named_parameters(prefix=HEAD_PREFIX.rstrip(".")))
        if self.inner_loop_adapts_encoder():
            params.update(
                (ENCODER_PREFIX + name, value) for name, value in self.encoder.named_parameters() if value.requires_grad
            )
        return params

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """Embeddings for the head when the inner loop leaves the encoder alone (cached if frozen)."""
        return self.features(texts)

    def inputs(self, texts: list[str], track_gradients: bool) -> Inputs:
        """Sentence embeddings (B, H), or a tokenised batch when the inner loop adapts the encoder."""
        if self.inner_loop_adapts_encoder():
            return self.encoder.tokenize(texts)
        with torch.set_grad_enabled(track_gradients):
            return self.embed_texts(texts)

    def head_features(self, params: Params, inputs: Inputs) -> torch.Tensor:
        """What the head reads: the embeddings themselves, or the encoder run on ``params``."""
        return functional_embed(self.encoder, params, inputs) if isinstance(inputs, dict) else inputs

    def logits(self, params: Params, inputs: Inputs) -> torch.Tensor:
        """(B, N) scores: the head run on ``params`` via ``torch.func.functional_call``."""
        return run_head(self.head, params, self.head_features(params, inputs))

    def make_task(self, episode: Episode, with_query: bool, track_gradients: bool) -> Task:
        device = self.device
        support_labels = label_tensor(episode.support_labels, device)
        query_labels = label_tensor(episode.query_labels, device) if with_query else None
        if self.inner_loop_adapts_encoder():
            query = self.encoder.tokenize(episode.query_texts) if with_query else None
            return Task(episode.n_way, self.encoder.tokenize(episode.support_texts), support_labels, query, query_labels)
        texts = episode.support_texts + (episode.query_texts if with_query else [])
        features = self.inputs(texts, track_gradients)  # one batch: support and query together
        n_support = len(episode.support_texts)
        query = features[n_support:] if with_query else None
        return Task(episode.n_way, features[:n_support], support_labels, query, query_labels)

    def output_layer(self, meta: Params, support: Inputs, labels: torch.Tensor, n_way: int) -> Params:
        """This task's fresh output layer: zeros, or Proto-MAML's prototypes of the support set."""
        if self.options.head_init == "prototype":
            representation = run_head(self.head, meta, self.head_features(meta, support), with_output=False)
            scale = self.options.prototype_scale / representation.shape[-1]  # ‖x − c‖²/D ∈ [0, 4] when standardised
            return prototype_output_layer(representation, labels, n_way, scale)
        like = next(iter(meta.values()), None)
        like = like if like is not None else next(self.encoder.parameters())  # dtype, device
        return zero_output_layer(n_way, self.head.output_width, like)

    def initial_parameters(self, task: Task, meta: Params) -> Params:
        """θ plus this task's fresh output layer, ready for ``autograd.grad``."""
        params = {**meta, **self.output_layer(meta, task.support, task.support_labels, task.n_way)}
        return inner_loop_variables(params, self.inner_loop_names(params))

    def inner_loop_names(self, params: Params) -> list[str]:
        return list(params) if self.adapts_body else list(OUTPUT_NAMES)

    def inner_rates(self, names: list[str]) -> dict[str, float]:
        return {name: self.inner_lr_of(name) for name in names}

    def run_inner_loop(
        self, task: Task, params: Params, steps: int, second_order: bool, after_step=None
    ) -> tuple[Params, list[float]]:
        def support_loss(current: Params) -> torch.Tensor:
            return F.cross_entropy(self.logits(current, task.support), task.support_labels)

        names = self.inner_loop_names(params)
        return gradient_descent(params, support_loss, names, steps, self.inner_rates(names), second_order, after_step)

    def inner_lr_of(self, name: str) -> float:
        """Encoder weights take smaller inner steps than the freshly initialised head."""
        if name.startswith(ENCODER_PREFIX):
            return self.options.encoder_inner_lr
        if name.startswith(HEAD_PREFIX + "body.") and self.options.body_inner_lr:
            return self.options.body_inner_lr
        return self.options.inner_lr

    # ----- outer loop -----------------------------------------------------------------------
    def optimizer(self) -> torch.optim.Optimizer:
        """Adam; trainable encoder layers get their own, smaller learning rate."""
        if self._optimizer is None:
            encoder_ids = {id(parameter) for parameter in self.encoder.parameters()}
            trainable = self.trainable_parameters()
            head = [parameter for parameter in trainable if id(parameter) not in encoder_ids]
            encoder = [parameter for parameter in trainable if id(parameter) in encoder_ids]
            groups = [{"params": head, "lr": self.options.lr}] if head else []
            if encoder:
                groups.append({"params": encoder, "lr": self.encoder_lr()})
            self._optimizer = torch.optim.Adam(groups)
        return self._optimizer

    def encoder_lr(self) -> float:
        """Pretrained weights want small steps; a from-scratch Transformer more, but less than the γ/β body."""
        if self.options.encoder_lr:
            return self.options.encoder_lr
        return SCRATCH_ENCODER_LR if self.encoder.kind == "scratch" else PRETRAINED_ENCODER_LR

    def outer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Adam's step, then the body's decay toward identity (``body_decay``)."""
        optimizer.step()
        if self.head.body is not None and self.options.body_decay:
            self.head.body.decay_toward_identity(self.options.lr * self.options.body_decay)

    def has_trainable_parameters(self) -> bool:
        """Asked every step; walking every encoder parameter each time costs more than a small task."""
        if self._has_trainable is None:
            self._has_trainable = bool(self.trainable_parameters())
        return self._has_trainable

    def accumulate_meta_gradient(self, query_loss: torch.Tensor) -> None:
        """Add this task's share of the meta-gradient; step once ``meta_batch`` tasks are in."""
        if not self.has_trainable_parameters():
            return
        optimizer = self.optimizer()
        if self._tasks_in_meta_batch == 0:
            optimizer.zero_grad()
        (query_loss / self.options.meta_batch).backward()
        self._tasks_in_meta_batch += 1
        if self._tasks_in_meta_batch == self.options.meta_batch:
            self.outer_step(optimizer)
            self._tasks_in_meta_batch = 0

    def adapt_and_score(self, task: Task, record_query_losses: bool = True) -> Outcome:
        """Adapt to ``task``'s support set from θ (k steps) and score its queries.

        The query logits stay differentiable w.r.t. θ: through every inner gradient, or with
        each inner gradient taken as a constant when ``first_order``.
        """
        return self._adapt_and_score(task, self.meta_parameters(), not self.options.first_order, record_query_losses)

    def _adapt_and_score(self, task: Task, meta: Params, second_order: bool, record_query_losses: bool) -> Outcome:
        params = self.initial_parameters(task, meta)
        inner_query_losses: list[float] = []

        def record_query_loss(_step: int, current: Params) -> None:
            with torch.no_grad():
                inner_query_losses.append(F.cross_entropy(self.logits(current, task.query), task.query_labels).item())

        # On fixed features a query loss per inner step costs one head forward; with the encoder
        # in the inner loop it would cost an encoder pass, so it is skipped there.
        report_queries = record_query_losses and not isinstance(task.query, dict)
        adapted, support_losses = self.run_inner_loop(
            task, params, self.options.inner_steps, second_order, record_query_loss if report_queries else None
        )
        return Outcome(self.logits(adapted, task.query), adapted, support_losses, inner_query_losses)

    # ----- the batched path: a meta-batch's inner loops together ----------------------------
    def batches_tasks(self) -> bool:
        return self.options.batch_tasks and self.options.meta_batch > 1

    def make_tasks(self, episodes: list[Episode]) -> list[Task]:
        """``make_task`` for a meta-batch; tokenised text is padded to one length, so the tasks stack."""
        if not self.inner_loop_adapts_encoder():
            return [self.make_task(episode, with_query=True, track_gradients=True) for episode in episodes]
        device = self.device
        supports = self.tokenize_together([episode.support_texts for episode in episodes])
        queries = self.tokenize_together([episode.query_texts for episode in episodes])
        return [
            Task(episode.n_way, support, label_tensor(episode.support_labels, device), query,
                 label_tensor(episode.query_labels, device))
            for episode, support, query in zip(episodes, supports, queries, strict=True)
        ]

    def tokenize_together(self, groups: list[list[str]]) -> list[dict[str, torch.Tensor]]:
        """One tokenizer call for all groups (one padded length), split back per group.

        Padding is masked in attention and pooling, so a sentence's embedding does not depend on it.
        """
        batch = self.encoder.tokenize([text for group in groups for text in group])
        bounds = torch.tensor([0, *(len(group) for group in groups)]).cumsum(0).tolist()
        return [{key: value[start:end] for key, value in batch.items()} for start, end in pairwise(bounds)]

    def adapt_and_score_batch(self, tasks: list[Task]) -> BatchedOutcome:
        """``adapt_and_score`` for equally shaped tasks at once (stacked parameters, ``vmap`` over tasks)."""
        n_way = tasks[0].n_way
        meta = self.meta_parameters()
        names = self.inner_loop_names({**meta, **dict.fromkeys(OUTPUT_NAMES)})

        def output_layer(theta: Params, support: Inputs, labels: torch.Tensor) -> Params:
            return self.output_layer(theta, support, labels, n_way)

        def stack(attribute: str) -> Inputs:
            return stack_inputs([getattr(task, attribute) for task in tasks])

        return batched_inner_loops(
            meta, stack("support"), stack("support_labels"), stack("query"), stack("query_labels"),
            output_layer, self.logits, names, self.options.inner_steps, self.inner_rates(names),
            second_order=not self.options.first_order, n_way=n_way,
            report_queries=not isinstance(tasks[0].query, dict),  # as adapt_and_score: no extra encoder passes
        )

    def meta_step_on_batch(self, tasks: list[Task]) -> list[Metrics]:
        """One outer step on a whole meta-batch (one batched pass per shape); each task's metrics, in order."""
        groups: dict[tuple, list[int]] = {}
        for index, task in enumerate(tasks):
            groups.setdefault(task.shape_key(), []).append(index)
        metrics: list[Metrics] = [{}] * len(tasks)
        task_losses = []
        for indices in groups.values():
            members = [tasks[index] for index in indices]
            outcome = self.adapt_and_score_batch(members)
            labels = torch.stack([task.query_labels for task in members])
            losses = F.cross_entropy(outcome.query_logits.transpose(1, 2), labels, reduction="none").mean(-1)  # (T,)
            task_losses.append(losses)
            for position, (index, task) in enumerate(zip(indices, members, strict=True)):
                metrics[index] = step_metrics(
                    task, outcome.query_logits[position], outcome.support_logits[position],
                    outcome.support_losses[position].tolist(), outcome.query_losses[position].tolist(),
                )
        if self.has_trainable_parameters():
            optimizer = self.optimizer()
            optimizer.zero_grad()
            (torch.cat(task_losses).sum() / self.options.meta_batch).backward()
            self.outer_step(optimizer)
        return metrics

    # ----- the Method contract --------------------------------------------------------------
    def train_step(self, episode: Episode) -> Metrics:
        """One episode's inner loop and its share of the meta-gradient; the outer step follows every ``meta_batch``."""
        self.training_mode()
        task = self.make_task(episode, with_query=True, track_gradients=True)
        outcome = self.adapt_and_score(task)
        self.accumulate_meta_gradient(F.cross_entropy(outcome.query_logits, task.query_labels))
        with torch.no_grad():
            support_logits = self.logits(outcome.adapted, task.support)
        return step_metrics(task, outcome.query_logits, support_logits, outcome.support_losses, outcome.query_losses)

    def training_mode(self) -> None:
        """``train()`` walks every encoder module: only do it when switching from evaluation."""
        if not (self.training and self.encoder.training):
            self.train()

    def train_steps(self, episodes: list[Episode]) -> list[Metrics]:
        """``train_step`` on each episode, but whole meta-batches go through the batched path.

        The same updates as calling ``train_step`` episode by episode (a meta-batch that
        ``train_step`` started is finished the same way), each episode's own metrics, in order.
        """
        episodes = list(episodes)
        metrics: list[Metrics] = []
        while episodes and (self._tasks_in_meta_batch or not self.batches_tasks()):
            metrics.append(self.train_step(episodes.pop(0)))
        size = self.options.meta_batch
        while len(episodes) >= size:
            batch, episodes = episodes[:size], episodes[size:]
            self.training_mode()
            metrics.extend(self.meta_step_on_batch(self.make_tasks(batch)))
        metrics.extend(self.train_step(episode) for episode in episodes)
        return metrics

    def episodes_per_call(self) -> int:
        """How many episodes ``train_steps`` wants at once to use the batched path."""
        return self.options.meta_batch if self.batches_tasks() else 1

    def adapt(self, episode: Episode, on_inner_step: InnerStepCallback | None = None) -> TaskModel:
        self.eval()
        report_queries = on_inner_step is not None and bool(episode.query_texts)
        task = self.make_task(episode, with_query=report_queries, track_gradients=False)

        def report(step: int, current: Params) -> None:
            with torch.no_grad():
                loss, accuracy = classification_metrics(self.logits(current, task.support), task.support_labels)
                metrics = {"inner_step": step, "support_loss": loss.item(), "support_accuracy": accuracy}
                if report_queries:
                    loss, accuracy = classification_metrics(self.logits(current, task.query), task.query_labels)
                    metrics.update(query_loss=loss.item(), query_accuracy=accuracy)
            on_inner_step(metrics)

        steps = self.options.test_inner_steps or self.options.inner_steps
        with torch.enable_grad():
            params = self.initial_parameters(task, detached_copy(self.meta_parameters()))
            adapted, _ = self.run_inner_loop(
                task, params, steps, second_order=False, after_step=report if on_inner_step else None
            )
        return AdaptedHeadModel(self, detached_copy(adapted, requires_grad=False))


MAML_PAPER = "Finn, Abbeel, Levine. Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks. ICML 2017."
MAML_URL = "https://arxiv.org/abs/1703.03400"


@register_method
class MAML(GradientMetaLearner):
    card = MethodCard(
        name="maml",
        title="MAML (model-agnostic meta-learning)",
        family="meta-learning",
        summary=(
            "Learns an initialisation from which a few gradient steps on a new task's support set "
            "already fit it well. Meta-training differentiates the query loss after those steps back "
            "to the initialisation, second derivatives included."
        ),
        formula=r"\theta'_i=\theta-\alpha\nabla_\theta\mathcal{L}_{S_i}(f_\theta)\ (k\text{ times}),\quad "
        r"\theta\leftarrow\theta-\beta\nabla_\theta\sum_i\mathcal{L}_{Q_i}(f_{\theta'_i})",
        paper=MAML_PAPER,
        paper_url=MAML_URL,
    )
    Options = MAMLOptions
    adapts_body = True
    recommended_train_steps = 2000  # episodes (250 outer steps of 8); measured in the module docstring


@register_method
class FirstOrderMAML(MAML):
    card = MethodCard(
        name="fomaml",
        title="First-order MAML",
        family="meta-learning",
        summary=(
            "MAML without second derivatives: the meta-gradient is the query-loss gradient at the "
            "adapted parameters, applied to the initialisation. Cheaper, and usually nearly as good."
        ),
        formula=r"\theta\leftarrow\theta-\beta\sum_i\nabla_{\theta'}\mathcal{L}_{Q_i}(f_{\theta'})"
        r"\big|_{\theta'=\theta'_i}",
        paper=MAML_PAPER + " (its first-order approximation)",
        paper_url=MAML_URL,
    )
    Options = FirstOrderMAMLOptions
    recommended_train_steps = 2000


@register_method
class ANIL(MAML):
    card = MethodCard(
        name="anil",
        title="ANIL (almost no inner loop)",
        family="meta-learning",
        summary=(
            "MAML whose inner loop adapts only the final classification layer; the body (encoder "
            "layers, hidden layer) is meta-learned in the outer loop alone. It shows that MAML's "
            "strength is mostly feature reuse, at a fraction of the cost."
        ),
        formula=r"w^{(0)}=0,\ w'_i=w-\alpha\nabla_w\mathcal{L}_{S_i}(w;\phi)\ (k\text{ times}),\quad "
        r"\phi\leftarrow\phi-\beta\nabla_\phi\sum_i\mathcal{L}_{Q_i}(w'_i;\phi)",
        paper="Raghu, Raghu, Bengio, Vinyals. Rapid Learning or Feature Reuse? Towards Understanding "
        "the Effectiveness of MAML. ICLR 2020.",
        paper_url="https://arxiv.org/abs/1909.09157",
    )
    adapts_body = False
    recommended_train_steps = 2000
