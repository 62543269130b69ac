"""Knowledge distillation (Hinton, Vinyals, Dean 2015, arXiv:1503.02531).

A teacher — a linear head on frozen pretrained MiniLM features, trained here on the same
labelled episodes — produces soft labels; the student (this method's own encoder, meant to
be the small from-scratch one) learns from the true labels and from the teacher's softened
distribution. The soft labels say how similar the teacher finds the classes, and they can
be computed on any text, labelled or not, which is where a small student gains most.

The teacher's encoder is loaded lazily and kept out of ``state_dict``: MiniLM's weights
ship with the package, and a from-scratch teacher is rebuilt from a fixed seed, so a
checkpoint holds only the student and the two heads. Unlabelled text for the soft-label loss is
never loaded here: the engine hands it to ``receive_data`` (``auxiliary_data`` declares the option).
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from metanlp.data.types import Episode
from metanlp.encoders import Encoder, build_encoder
from metanlp.encoders.cache import shared_cache
from metanlp.methods._base_classes import BaseClassIndex, seen_class_logits
from metanlp.methods._transfer import adapt_with_prototypes, data_not_received, text_pool
from metanlp.methods.base import (
    AuxiliaryData,
    DataRequest,
    EncoderOptions,
    InnerStepCallback,
    Method,
    MethodCard,
    Metrics,
    TaskModel,
    classification_metrics,
    parse_dataset_names,
)
from metanlp.methods.options import option
from metanlp.methods.protonet import DISTANCES
from metanlp.methods.registry import register_method

TEACHERS = ("minilm", "scratch")
SCRATCH_TEACHER_SEED = 20150309  # fixed, so a from-scratch teacher is the same after reloading


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """α·CE(student, y) + (1−α)·T²·KL(softmax(teacher/T) ‖ softmax(student/T)).

    ``labels`` (L,) belong to the first L rows; the KL term covers every row (B, N), so
    unlabelled texts appended after the labelled ones still teach. T² keeps the soft term's
    gradients on the same scale as the hard term's whatever T is (Hinton et al., §2).
    Returns (total, cross-entropy, T²-scaled KL).
    """
    cross_entropy = F.cross_entropy(student_logits[: len(labels)], labels)
    soft_targets = F.softmax(teacher_logits / temperature, dim=-1)
    student_log_probs = F.log_softmax(student_logits / temperature, dim=-1)
    kl = F.kl_div(student_log_probs, soft_targets, reduction="batchmean") * temperature**2
    return alpha * cross_entropy + (1.0 - alpha) * kl, cross_entropy, kl


@functools.lru_cache(maxsize=4)
def frozen_teacher(name: str, device: str) -> Encoder:
    """One frozen teacher per kind and device, shared by every distillation method: it never changes,
    so its embeddings (``shared_cache``) are computed once for all of them.

    A from-scratch teacher is built from a fixed seed, without touching the caller's random state.
    """
    if name == "minilm":
        teacher = build_encoder("minilm")
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SCRATCH_TEACHER_SEED)
            teacher = build_encoder("scratch")
    teacher.set_trainable_layers(0)
    return teacher.to(device).eval()


def teacher_hidden_size(name: str) -> int:
    """Width of the teacher's features, known without loading its weights."""
    if name == "minilm":
        from transformers import AutoConfig

        from metanlp.encoders.minilm import minilm_path

        return AutoConfig.from_pretrained(str(minilm_path())).hidden_size
    from metanlp.encoders.scratch import ScratchConfig

    return ScratchConfig().hidden_size


@dataclass
class DistillationOptions(EncoderOptions):
    teacher: str = option("minilm", choices=TEACHERS)  # "scratch" exists for fast tests only: a random frozen teacher
    alpha: float = option(0.5, low=0.0, high=1.0)  # weight of the hard-label loss; 1.0 trains the student alone
    temperature: float = option(2.0, low=1e-2, high=100.0)
    lr: float = option(1e-3, low=1e-7, high=1.0)  # student
    teacher_lr: float = option(1e-2, low=1e-7, high=10.0)  # teacher head, on cached teacher features
    teacher_steps: int = option(5, low=1, high=1000)  # teacher-head updates per training step
    unlabelled_dataset: str = ""  # extra text for the soft-label loss ("" = support set only)
    unlabelled_batch: int = option(32, low=1, high=4096)
    unlabelled_pool: int = option(2000, low=1, high=1_000_000)
    max_base_classes: int = option(256, low=2, high=100_000)
    distance: str = option("euclidean", choices=DISTANCES)
    seed: int = option(0, low=0, high=2**31 - 1)


@register_method
class Distillation(Method):
    card = MethodCard(
        name="distillation",
        title="Knowledge distillation",
        family="transfer learning",
        summary=(
            "A small student encoder learns from the labels and from the softened predictions of a "
            "teacher (a classifier on pretrained MiniLM features), also on unlabelled text. New tasks "
            "are classified by nearest class mean in the student's feature space."
        ),
        formula=r"\mathcal{L}=\alpha\,\mathrm{CE}\!\left(y,\sigma(z_s)\right)+(1-\alpha)\,T^2\,"
        r"\mathrm{KL}\!\left(\sigma(z_t/T)\,\middle\|\,\sigma(z_s/T)\right)",
        paper="Hinton, Vinyals, Dean. Distilling the Knowledge in a Neural Network. NIPS Deep Learning Workshop 2015.",
        paper_url="https://arxiv.org/abs/1503.02531",
    )
    Options = DistillationOptions
    preferred_encoder = "scratch"  # the small student; "auto" then trains it fully
    auxiliary_data: ClassVar[tuple[DataRequest, ...]] = (DataRequest("unlabelled_dataset", splits=("train",)),)

    def __init__(self, encoder: Encoder, options: DistillationOptions) -> None:
        super().__init__(encoder, options)
        self.configure_encoder(options.finetune, options.top_k)
        self.student_head = nn.Linear(encoder.hidden_size, options.max_base_classes)
        self.teacher_head = nn.Linear(teacher_hidden_size(options.teacher), options.max_base_classes)
        self.base_classes = BaseClassIndex(options.max_base_classes)
        # Received before training (receive_data) when an unlabelled dataset is named; None until then.
        self.unlabelled_texts: list[str] | None = None if parse_dataset_names(options.unlabelled_dataset) else []
        self._rng = random.Random(options.seed)
        self._teacher: tuple[Encoder, ...] = ()  # held outside nn.Module's registry: not in state_dict
        self._teacher_optimizer: torch.optim.Optimizer | None = None

    def prediction_invariant_parameters(self) -> list[nn.Parameter]:
        # Both heads score training classes only; a new task is classified by class means of the student's features.
        return [*self.student_head.parameters(), *self.teacher_head.parameters()]

    def receive_data(self, data: AuxiliaryData) -> None:
        """The unlabelled dataset's training texts (a seeded subset of ``unlabelled_pool``), labels dropped."""
        options = self.options
        self.unlabelled_texts = text_pool(
            data["unlabelled_dataset"], options.unlabelled_pool, options.seed, "unlabelled_dataset"
        )

    # ----- teacher ---------------------------------------------------------------------------
    def teacher_encoder(self) -> Encoder:
        """The frozen teacher encoder on this method's device, loaded on first use."""
        return frozen_teacher(self.options.teacher, str(self.device))

    def teacher_features(self, texts: list[str]) -> torch.Tensor:
        """Frozen teacher embeddings (cached), (len(texts), teacher hidden)."""
        return shared_cache(self.teacher_encoder()).embed(texts)

    def teacher_logits(self, texts: list[str]) -> torch.Tensor:
        """Teacher scores over the base classes seen so far (order of ``base_classes``)."""
        with torch.no_grad():
            return seen_class_logits(self.teacher_head, self.teacher_features(texts), len(self.base_classes))

    def student_logits(self, texts: list[str]) -> torch.Tensor:
        """Student scores over the base classes seen so far (order of ``base_classes``)."""
        return seen_class_logits(self.student_head, self.features(texts), len(self.base_classes))

    def _train_teacher(self, texts: list[str], labels: torch.Tensor) -> float:
        if self._teacher_optimizer is None:
            self._teacher_optimizer = torch.optim.Adam(self.teacher_head.parameters(), lr=self.options.teacher_lr)
        features = self.teacher_features(texts)
        for _ in range(self.options.teacher_steps):
            logits = seen_class_logits(self.teacher_head, features, len(self.base_classes))
            loss, _ = classification_metrics(logits, labels)
            self._teacher_optimizer.zero_grad()
            loss.backward()
            self._teacher_optimizer.step()
        return loss.item()

    # ----- the contract ----------------------------------------------------------------------
    def optimizer(self) -> torch.optim.Optimizer:
        """The student's optimiser; the teacher head has its own."""
        if self._optimizer is None:
            student = [p for name, p in self.named_parameters() if p.requires_grad and not name.startswith("teacher_")]
            self._optimizer = torch.optim.AdamW(student, lr=self.options.lr)
        return self._optimizer

    def train_step(self, episode: Episode) -> Metrics:
        """Teacher head steps on the support set, then one student step on support + unlabelled text."""
        self.train()
        options = self.options
        device = self.device
        support_labels = self.base_classes.labels(episode, episode.support_labels, device)
        query_labels = self.base_classes.labels(episode, episode.query_labels, device)
        n_support = len(episode.support_texts)
        metrics: Metrics = {}
        optimizer = self.optimizer()
        optimizer.zero_grad()
        if options.alpha < 1.0:
            if self.unlabelled_texts is None:
                raise data_not_received(self, "unlabelled_dataset")
            metrics["teacher_loss"] = self._train_teacher(episode.support_texts, support_labels)
            extra = self._rng.sample(self.unlabelled_texts, min(options.unlabelled_batch, len(self.unlabelled_texts)))
            texts = episode.support_texts + extra
            student_logits = self.student_logits(texts)
            loss, ce_loss, distill_loss = distillation_loss(
                student_logits, self.teacher_logits(texts), support_labels, options.alpha, options.temperature
            )
            metrics["distill_loss"] = distill_loss.item()
        else:  # the student alone: no teacher is ever loaded
            student_logits = self.student_logits(episode.support_texts)
            loss = ce_loss = F.cross_entropy(student_logits, support_labels)
        support_accuracy = (student_logits[:n_support].argmax(-1) == support_labels).float().mean().item()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            query_loss, query_accuracy = classification_metrics(self.student_logits(episode.query_texts), query_labels)
            if options.alpha < 1.0:
                _, metrics["teacher_query_accuracy"] = classification_metrics(
                    self.teacher_logits(episode.query_texts), query_labels
                )
        return {
            "support_loss": ce_loss.item(),  # the hard-label part of the training loss
            "support_accuracy": support_accuracy,
            "query_loss": query_loss.item(),
            "query_accuracy": query_accuracy,
            "ce_loss": ce_loss.item(),
            "loss": loss.item(),
            **metrics,
        }

    def adapt(self, episode: Episode, on_inner_step: InnerStepCallback | None = None) -> TaskModel:
        """The student alone serves new tasks: class means of its features."""
        self.eval()
        return adapt_with_prototypes(self.features, episode, self.options.distance, on_inner_step)

    def adapt_teacher(self, episode: Episode, on_inner_step: InnerStepCallback | None = None) -> TaskModel:
        """The same adaptation on the teacher's features, for comparing student and teacher."""
        return adapt_with_prototypes(self.teacher_features, episode, self.options.distance, on_inner_step)

    def extra_state_config(self) -> dict:
        return {"base_classes": self.base_classes.to_config()}

    def load_extra_state_config(self, config: dict) -> None:
        self.base_classes.load_config(config.get("base_classes", {}))
