"""MAML, first-order MAML and ANIL: one gradient-based meta-learner under three names.

The learner is encoder → sentence embedding → head. The head standardises the embedding,
passes it through an optional meta-learned ReLU layer ``hidden`` (H → D, ``head_hidden``)
and then through an output layer (D → N) that every task starts afresh: zero (default) or
Proto-MAML's class-prototype init (``head_init``). A fresh output layer fits any N-way
episode and does not depend on which class got which label index.

Inner loop, per task: ``inner_steps`` gradient steps on the support loss from θ.
- MAML adapts the hidden layer, the output layer and the encoder's trainable layers
  (``finetune="top"/"full"``; the encoder then runs on a parameter dict through
  ``torch.func.functional_call``; ``"frozen"`` uses cached embeddings, the fast path).
- ANIL adapts the output layer only; everything else is learned in the outer loop alone.
Outer loop: the query loss after adaptation is differentiated back to θ, through every
inner gradient (second order) or taking each inner gradient as a constant (first order).
Each ``train_step`` gets one episode: its meta-gradient is added to ``.grad`` and the
optimiser steps after every ``meta_batch`` episodes, while every call reports its metrics.

What is meta-learned is the body: trainable encoder layers (``finetune``; ``auto`` trains a
from-scratch encoder fully and freezes MiniLM) and the hidden layer if ``head_hidden > 0``.
With a frozen encoder and no hidden layer nothing is left to meta-learn, so
``learns_across_tasks`` is False and each task is just the zero head trained k steps. We do
not add a hidden layer by default: measured on frozen MiniLM, a meta-learned head layer did not
carry over to new classes (FewRel 5-way 1-shot: 0.64 with the plain linear head, 0.45 with a
128-unit ReLU layer, still 0.45 after 300 meta-steps; a small sample of the data).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from metanlp.data.types import Episode
from metanlp.encoders import Encoder
from metanlp.methods._functional import (
    ENCODER_PREFIX,
    HEAD_INITS,
    Params,
    detached_copy,
    functional_embed,
    gradient_descent,
    head_logits,
    prototype_output_layer,
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
from metanlp.methods.options import check_choice, check_range
from metanlp.methods.registry import register_method

PRETRAINED_ENCODER_LR = 5e-5

# What the head sees: fixed embeddings (B, H), or a tokenised batch the encoder runs on.
Inputs = torch.Tensor | dict[str, torch.Tensor]


@dataclass
class InnerLoopOptions:
    """Settings every inner-loop meta-learner of this family shares."""

    inner_steps: int = 5  # k: gradient steps per task during meta-training
    test_inner_steps: int = 0  # steps when adapting to a new task; 0: same as inner_steps
    inner_lr: float = 0.1  # α; best or near-best on frozen MiniLM (CLINC150, BANKING77; 1- and 5-shot)
    lr: float = 1e-3  # β, the outer (Adam) learning rate
    meta_batch: int = 4  # tasks summed per outer step (Finn et al.: 4 for 5-way 1-shot miniImageNet)
    first_order: bool = False
    head_hidden: int = 0  # width D of a meta-learned ReLU layer before the output; 0: none
    head_init: str = "zero"  # the task's output layer: "zero" or "prototype" (Proto-MAML)

    def validate(self) -> None:
        check_range("inner_steps", self.inner_steps, 1, 100)
        check_range("test_inner_steps", self.test_inner_steps, 0, 1000)
        check_range("inner_lr", self.inner_lr, 1e-6, 100.0)
        check_range("lr", self.lr, 1e-7, 1.0)
        check_range("meta_batch", self.meta_batch, 1, 256)
        check_range("head_hidden", self.head_hidden, 0, 4096)
        check_choice("head_init", self.head_init, HEAD_INITS)


@dataclass
class MAMLOptions(EncoderOptions, InnerLoopOptions):
    encoder_lr: float = 0.0  # outer lr of trainable encoder layers; 0: 5e-5 if pretrained, else lr
    encoder_inner_lr: float = 0.01  # inner-loop step size for encoder weights (MAML with finetune top/full)

    def validate(self) -> None:
        EncoderOptions.validate(self)
        InnerLoopOptions.validate(self)
        check_range("encoder_lr", self.encoder_lr, 0.0, 1.0)
        check_range("encoder_inner_lr", self.encoder_inner_lr, 0.0, 100.0)


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


class GradientMetaLearner(Method):
    """The shared implementation of MAML, FOMAML, ANIL (and, via a subclass, meta-transfer)."""

    #: True: the inner loop adapts the body (hidden layer, trainable encoder layers) too (MAML);
    #: False: only the task's output layer (ANIL, Raghu et al. 2020).
    adapts_body: ClassVar[bool] = True

    def __init__(self, encoder: Encoder, options: InnerLoopOptions) -> None:
        super().__init__(encoder, options)
        self.setup_encoder()
        self.hidden = nn.Linear(encoder.hidden_size, options.head_hidden) if options.head_hidden else None
        self._tasks_in_meta_batch = 0

    def setup_encoder(self) -> None:
        self.configure_encoder(self.options.finetune, self.options.top_k)

    # ----- what the learner is made of ------------------------------------------------------
    def inner_loop_adapts_encoder(self) -> bool:
        return self.adapts_body and not self.encoder.is_frozen()

    def meta_parameters(self) -> Params:
        """θ as a dict: the hidden layer, plus the encoder's trainable weights if the inner loop adapts them."""
        params: Params = {}
        if self.hidden is not None:
            params.update(self.hidden.named_parameters(prefix="hidden"))
        if self.inner_loop_adapts_encoder():
            params.update(
                (ENCODER_PREFIX + name, value) for name, value in self.encoder.named_parameters() if value.requires_grad
            )
        return params

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """Embeddings for the head when the inner loop leaves the encoder alone (cached if frozen)."""
        return self.features(texts)

    def inputs(self, texts: list[str], track_gradients: bool) -> Inputs:
        if self.inner_loop_adapts_encoder():
            return self.encoder.tokenize(texts)
        with torch.set_grad_enabled(track_gradients):
            return self.embed_texts(texts)

    def logits(self, params: Params, inputs: Inputs) -> torch.Tensor:
        features = functional_embed(self.encoder, params, inputs) if isinstance(inputs, dict) else inputs
        return head_logits(params, features)

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

    def initial_parameters(self, task: Task, meta: Params) -> Params:
        """θ plus this task's fresh output layer."""
        if self.options.head_init == "prototype":
            support = functional_embed(self.encoder, meta, task.support) if isinstance(task.support, dict) else task.support
            return {**meta, **prototype_output_layer(meta, support, task.support_labels, task.n_way)}
        width = self.hidden.out_features if self.hidden is not None else self.encoder.hidden_size
        like = self.hidden.weight if self.hidden is not None else next(self.encoder.parameters())  # dtype, device
        return {**meta, **zero_output_layer(task.n_way, width, like)}

    def inner_loop_names(self, params: Params) -> list[str]:
        return list(params) if self.adapts_body else ["output.weight", "output.bias"]

    def run_inner_loop(
        self, task: Task, params: Params, steps: int, second_order: bool, after_step=None
    ) -> tuple[Params, list[float]]:
        def support_loss(current: Params) -> torch.Tensor:
            return F.cross_entropy(self.logits(current, task.support), task.support_labels)

        names = self.inner_loop_names(params)
        rates = {name: self.inner_lr_of(name) for name in names}
        return gradient_descent(params, support_loss, names, steps, rates, second_order, after_step)

    def inner_lr_of(self, name: str) -> float:
        """Encoder weights take smaller inner steps than the freshly initialised head."""
        if name.startswith(ENCODER_PREFIX):
            return self.options.encoder_inner_lr
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
        """Pretrained weights want small steps; a from-scratch encoder learns at the head's pace."""
        if self.options.encoder_lr:
            return self.options.encoder_lr
        return self.options.lr if self.encoder.kind == "scratch" else PRETRAINED_ENCODER_LR

    def accumulate_meta_gradient(self, query_loss: torch.Tensor) -> None:
        """Add this task's share of the meta-gradient; step once ``meta_batch`` tasks are in."""
        if not self.trainable_parameters():
            return
        optimizer = self.optimizer()
        if self._tasks_in_meta_batch == 0:
            optimizer.zero_grad()
        (query_loss / self.options.meta_batch).backward()
        self._tasks_in_meta_batch += 1
        if self._tasks_in_meta_batch == self.options.meta_batch:
            optimizer.step()
            self._tasks_in_meta_batch = 0

    def adapt_and_score(self, task: Task, record_query_losses: bool = True) -> Outcome:
        """Adapt to ``task``'s support set from θ (k steps) and score its queries.

        The query logits stay differentiable w.r.t. θ: through every inner gradient, or with
        each inner gradient taken as a constant when ``first_order``.
        """
        params = self.initial_parameters(task, self.meta_parameters())
        inner_query_losses: list[float] = []

        def record_query_loss(_step: int, current: Params) -> None:
            with torch.no_grad():
                inner_query_losses.append(F.cross_entropy(self.logits(current, task.query), task.query_labels).item())

        # On fixed features a query loss per inner step costs one head forward; with the encoder
        # in the inner loop it would cost an encoder pass, so it is skipped there.
        report_queries = record_query_losses and not isinstance(task.query, dict)
        adapted, support_losses = self.run_inner_loop(
            task, params, self.options.inner_steps, not self.options.first_order,
            record_query_loss if report_queries else None,
        )
        return Outcome(self.logits(adapted, task.query), adapted, support_losses, inner_query_losses)

    def train_step(self, episode: Episode) -> Metrics:
        self.train()
        task = self.make_task(episode, with_query=True, track_gradients=True)
        outcome = self.adapt_and_score(task)
        query_loss, query_accuracy = classification_metrics(outcome.query_logits, task.query_labels)
        self.accumulate_meta_gradient(query_loss)
        with torch.no_grad():
            support_loss, support_accuracy = classification_metrics(
                self.logits(outcome.adapted, task.support), task.support_labels
            )
        return {
            "support_loss": support_loss.item(),
            "support_accuracy": support_accuracy,
            "query_loss": query_loss.item(),
            "query_accuracy": query_accuracy,
            "support_loss_before_adaptation": outcome.support_losses[0],
            # Loss after inner step 1..k; the last equals support_loss / query_loss.
            "inner_support_losses": outcome.support_losses[1:] + [support_loss.item()],
            "inner_query_losses": outcome.query_losses,
        }

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
