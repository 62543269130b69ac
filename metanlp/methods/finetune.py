"""Fine-tuning baseline: a new linear head trained on each support set.

Across tasks it is ordinary supervised transfer (Chen et al. 2019, "Baseline"): the
encoder plus a head over all meta-train classes is trained with cross-entropy; for each
new task the base head is dropped and a fresh head is fitted to the support set, with
the encoder frozen, its top-k layers, or all of it fine-tuned.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from metanlp.data.types import Episode
from metanlp.encoders import Encoder
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
from metanlp.methods.options import OptionError, check_range
from metanlp.methods.registry import register_method


@dataclass
class FineTuneOptions(EncoderOptions):
    lr: float = 1e-4  # learning across tasks (base-class training)
    head_lr: float = 0.01  # fitting a new head to a support set
    encoder_lr: float = 5e-5  # encoder during per-task fine-tuning (top / full)
    adapt_steps: int = 100
    max_base_classes: int = 1024

    def validate(self) -> None:
        super().validate()
        check_range("lr", self.lr, 1e-7, 1.0)
        check_range("head_lr", self.head_lr, 1e-6, 10.0)
        check_range("encoder_lr", self.encoder_lr, 1e-8, 1.0)
        check_range("adapt_steps", self.adapt_steps, 1, 10_000)
        check_range("max_base_classes", self.max_base_classes, 2, 100_000)


class LinearTaskModel(TaskModel):
    def __init__(self, encoder: Encoder, head: nn.Linear, features) -> None:
        self.encoder = encoder
        self.head = head
        self.features = features

    def predict_logits(self, texts: list[str]) -> torch.Tensor:
        with torch.no_grad():
            return self.head(self.features(texts))


@register_method
class FineTune(Method):
    card = MethodCard(
        name="finetune",
        title="Fine-tuning baseline",
        family="transfer learning",
        summary=(
            "Trains a fresh linear classifier on each support set on top of the encoder, which is "
            "frozen, fine-tuned in its top layers, or fine-tuned entirely. Across tasks, the encoder "
            "learns from all meta-train classes with ordinary supervised training."
        ),
        formula=r"\min_{W,b,\,\theta_{\text{top}}}\ \frac{1}{|S|}\sum_{(x,y)\in S}"
        r"-\log\operatorname{softmax}\!\left(W f_\theta(x)+b\right)_y",
        paper="Chen, Liu, Kira, Wang, Huang. A Closer Look at Few-shot Classification. ICLR 2019.",
        paper_url="https://arxiv.org/abs/1904.04232",
    )
    Options = FineTuneOptions

    def __init__(self, encoder: Encoder, options: FineTuneOptions) -> None:
        super().__init__(encoder, options)
        mode = self.configure_encoder(options.finetune, options.top_k)
        # With a frozen encoder nothing learned across tasks reaches a new task's head.
        self.learns_across_tasks = mode != "frozen"
        self.base_head = nn.Linear(encoder.hidden_size, options.max_base_classes)
        self.base_classes: dict[str, int] = {}

    def _base_labels(self, episode: Episode, labels: list[int]) -> torch.Tensor:
        ids = []
        for label in labels:
            name = episode.classes[label]
            if name not in self.base_classes:
                if len(self.base_classes) >= self.options.max_base_classes:
                    raise OptionError(
                        f"more than max_base_classes={self.options.max_base_classes} training classes; raise it"
                    )
                self.base_classes[name] = len(self.base_classes)
            ids.append(self.base_classes[name])
        return torch.tensor(ids, dtype=torch.long, device=self.device)

    def train_step(self, episode: Episode) -> Metrics:
        """Supervised step on the support set over all base classes; queries are held out."""
        self.train()
        support_labels = self._base_labels(episode, episode.support_labels)
        query_labels = self._base_labels(episode, episode.query_labels)
        n_seen = len(self.base_classes)
        optimizer = self.optimizer()
        optimizer.zero_grad()
        logits = self.base_head(self.features(episode.support_texts))[:, :n_seen]
        support_loss, support_accuracy = classification_metrics(logits, support_labels)
        support_loss.backward()
        optimizer.step()
        with torch.no_grad():
            query_logits = self.base_head(self.features(episode.query_texts))[:, :n_seen]
            query_loss, query_accuracy = classification_metrics(query_logits, query_labels)
        return {
            "support_loss": support_loss.item(),
            "support_accuracy": support_accuracy,
            "query_loss": query_loss.item(),
            "query_accuracy": query_accuracy,
        }

    def adapt(self, episode: Episode, on_inner_step: InnerStepCallback | None = None) -> TaskModel:
        options = self.options
        # Per-task fine-tuning must not leak into the next task: adapt a copy of the encoder.
        encoder = self.encoder if self.encoder.is_frozen() else copy.deepcopy(self.encoder)
        features = self.features if encoder is self.encoder else encoder.embed
        head = nn.Linear(encoder.hidden_size, episode.n_way).to(self.device)
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        groups = [{"params": head.parameters(), "lr": options.head_lr}]
        encoder_parameters = [p for p in encoder.parameters() if p.requires_grad]
        if encoder_parameters:
            groups.append({"params": encoder_parameters, "lr": options.encoder_lr})
        optimizer = torch.optim.Adam(groups)
        labels = label_tensor(episode.support_labels, self.device)
        frozen_support = features(episode.support_texts) if not encoder_parameters else None
        report_queries = on_inner_step is not None and bool(episode.query_texts)
        frozen_queries = (
            features(episode.query_texts) if report_queries and not encoder_parameters else None
        )
        query_labels = label_tensor(episode.query_labels, self.device) if report_queries else None
        encoder.train() if encoder_parameters else encoder.eval()
        with torch.enable_grad():
            for step in range(1, options.adapt_steps + 1):
                support = frozen_support if frozen_support is not None else features(episode.support_texts)
                loss, accuracy = classification_metrics(head(support), labels)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if on_inner_step is not None:
                    metrics = {"inner_step": step, "support_loss": loss.item(), "support_accuracy": accuracy}
                    if report_queries:
                        with torch.no_grad():
                            queries = frozen_queries if frozen_queries is not None else features(episode.query_texts)
                            query_loss, query_accuracy = classification_metrics(head(queries), query_labels)
                        metrics.update(query_loss=query_loss.item(), query_accuracy=query_accuracy)
                    on_inner_step(metrics)
        encoder.eval()
        return LinearTaskModel(encoder, head, features)

    def extra_state_config(self) -> dict:
        return {"base_classes": self.base_classes}

    def load_extra_state_config(self, config: dict) -> None:
        self.base_classes = dict(config.get("base_classes", {}))
