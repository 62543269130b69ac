"""Fine-tuning baseline: a new linear head trained on each support set, with the usual strategies.

Across tasks it is ordinary supervised transfer (Chen et al. 2019, "Baseline"): the encoder plus
a head over all meta-train classes is trained with cross-entropy; for each new task the base head
is dropped and a fresh head is fitted to the support set.

Strategies, for both the per-task adaptation and the training across tasks:

- what trains: a linear probe (``finetune="frozen"``), the top ``top_k`` layers, or everything;
- layer-wise learning-rate decay (LLRD, Howard & Ruder 2018, arXiv:1801.06146; Clark et al. 2020,
  arXiv:2003.10555): layer l of L gets lr · layer_decay^(L−l), the embeddings (l = 0) the least,
  because lower layers hold general features that small data should disturb least;
- a linear warm-up, then a constant or linearly decaying rate.

``SupervisedFineTuning`` is the same recipe on an ordinary train / test split of shared classes
(AG News, SST-2): a step function that the engine's loop (``metanlp.engine.loop.train_loop``) runs.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass

import torch
from torch import nn

from metanlp.data.types import Episode, Example
from metanlp.encoders import Encoder
from metanlp.methods._base_classes import BaseClassIndex, base_class_step
from metanlp.methods.base import (
    EncoderOptions,
    InnerStepCallback,
    Method,
    MethodCard,
    Metrics,
    TaskModel,
    classification_metrics,
    label_tensor,
    resolve_finetune_mode,
    trainable_layer_count,
)
from metanlp.methods.options import OptionError, option
from metanlp.methods.registry import register_method
from metanlp.pretraining.schedules import SCHEDULES, warmup_scheduler


def layerwise_parameter_groups(encoder: Encoder, top_lr: float, layer_decay: float = 1.0) -> list[dict]:
    """Optimiser groups for the encoder's trainable parameters, one per layer group.

    ``encoder.layer_groups()`` runs from the embeddings (l = 0) to the top layer (l = L); group l
    gets ``top_lr * layer_decay ** (L - l)``. Trainable parameters outside every layer group (none
    in the bundled encoders) get ``top_lr``. Each group carries a "name" for display.
    """
    layer_groups = encoder.layer_groups()
    top = len(layer_groups) - 1
    groups, seen = [], set()
    for index, module in enumerate(layer_groups):
        parameters = [p for p in module.parameters() if p.requires_grad and id(p) not in seen]
        seen.update(id(p) for p in parameters)
        if parameters:
            name = "embeddings" if index == 0 else f"layer {index}"
            groups.append({"params": parameters, "lr": top_lr * layer_decay ** (top - index), "name": name})
    rest = [p for p in encoder.parameters() if p.requires_grad and id(p) not in seen]
    if rest:
        groups.append({"params": rest, "lr": top_lr, "name": "other encoder parameters"})
    return groups


@dataclass
class FineTuneOptions(EncoderOptions):
    lr: float = option(1e-4, low=1e-7, high=1.0)  # learning across tasks (base-class training)
    head_lr: float = option(0.01, low=1e-6, high=10.0)  # fitting a new head to a support set
    encoder_lr: float = option(5e-5, low=1e-8, high=1.0)  # encoder during per-task fine-tuning (top / full); the top layer's rate under LLRD
    adapt_steps: int = option(100, low=1, high=10_000)
    max_base_classes: int = option(1024, low=2, high=100_000)
    layer_decay: float = option(1.0, low=0.0, high=1.0)  # LLRD factor in (0, 1] (0 itself refused); 1 = one rate for every layer
    warmup_steps: int = option(0, low=0, high=10_000)  # per task: linear warm-up over the first adapt steps
    lr_schedule: str = option("constant", choices=SCHEDULES)  # after warm-up: "constant", or "linear" decay to 0 at the last step
    train_warmup_steps: int = option(0, low=0, high=1_000_000)  # across tasks: warm-up over the first train steps
    train_total_steps: int = option(0, low=0, high=1_000_000)  # across tasks: where "linear" decay reaches 0 (0: no decay)

    def validate(self) -> None:
        if not 0.0 < self.layer_decay <= 1.0:
            raise OptionError(f"option 'layer_decay' must be in (0, 1], got {self.layer_decay}", "layer_decay")


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
            "frozen (a linear probe), fine-tuned in its top layers, or fine-tuned entirely, optionally "
            "with layer-wise learning-rate decay and a warm-up. Across tasks, the encoder learns from "
            "all meta-train classes with ordinary supervised training."
        ),
        formula=r"\min_{W,b,\,\theta}\ \frac{1}{|S|}\sum_{(x,y)\in S}"
        r"-\log\operatorname{softmax}\!\left(W f_\theta(x)+b\right)_y,\qquad "
        r"\eta_l=\eta\,\xi^{L-l}",
        paper="Chen, Liu, Kira, Wang, Huang. A Closer Look at Few-shot Classification. ICLR 2019.",
        paper_url="https://arxiv.org/abs/1904.04232",
    )
    Options = FineTuneOptions

    def __init__(self, encoder: Encoder, options: FineTuneOptions) -> None:
        super().__init__(encoder, options)
        self.configure_encoder(options.finetune, options.top_k)
        self.base_head = nn.Linear(encoder.hidden_size, options.max_base_classes)
        self.base_classes = BaseClassIndex(options.max_base_classes)
        self._scheduler: torch.optim.lr_scheduler.LambdaLR | None = None

    def prediction_invariant_parameters(self) -> list[nn.Parameter]:
        # The base head scores meta-train classes; a new task gets a fresh head, so with a
        # frozen encoder nothing learned across tasks reaches it.
        return list(self.base_head.parameters())

    def optimizer(self) -> torch.optim.Optimizer:
        """AdamW across tasks: the base head at ``lr``, encoder layers at ``lr`` · layer_decay^(L−l)."""
        if self._optimizer is None:
            options = self.options
            groups = [{"params": list(self.base_head.parameters()), "lr": options.lr, "name": "head"}]
            groups += layerwise_parameter_groups(self.encoder, options.lr, options.layer_decay)
            self._optimizer = torch.optim.AdamW(groups, lr=options.lr, weight_decay=0.0)
            self._scheduler = warmup_scheduler(
                self._optimizer, options.train_warmup_steps, options.train_total_steps, options.lr_schedule
            )
        return self._optimizer

    def train_step(self, episode: Episode) -> Metrics:
        """Supervised step on the support set over all base classes; queries are held out."""
        self.train()
        metrics = base_class_step(self, self.base_classes, self.base_head, self.features, episode)
        self._scheduler.step()  # after the optimiser's step (made by it), as PyTorch expects
        return metrics

    def adapt(self, episode: Episode, on_inner_step: InnerStepCallback | None = None) -> TaskModel:
        options = self.options
        # Per-task fine-tuning must not leak into the next task: adapt a copy of the encoder.
        encoder = self.encoder if self.encoder.is_frozen() else copy.deepcopy(self.encoder)
        features = self.features if encoder is self.encoder else encoder.embed
        head = nn.Linear(encoder.hidden_size, episode.n_way).to(self.device)
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
        groups = [{"params": list(head.parameters()), "lr": options.head_lr, "name": "head"}]
        encoder_groups = layerwise_parameter_groups(encoder, options.encoder_lr, options.layer_decay)
        optimizer = torch.optim.Adam(groups + encoder_groups)
        scheduler = warmup_scheduler(optimizer, options.warmup_steps, options.adapt_steps, options.lr_schedule)
        labels = label_tensor(episode.support_labels, self.device)
        frozen_support = features(episode.support_texts) if not encoder_groups else None
        report_queries = on_inner_step is not None and bool(episode.query_texts)
        frozen_queries = features(episode.query_texts) if report_queries and not encoder_groups else None
        query_labels = label_tensor(episode.query_labels, self.device) if report_queries else None
        encoder.train() if encoder_groups else encoder.eval()
        with torch.enable_grad():
            for step in range(1, options.adapt_steps + 1):
                support = frozen_support if frozen_support is not None else features(episode.support_texts)
                loss, accuracy = classification_metrics(head(support), labels)
                head_lr = optimizer.param_groups[0]["lr"]
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                if on_inner_step is not None:
                    metrics = {
                        "inner_step": step, "support_loss": loss.item(), "support_accuracy": accuracy, "lr": head_lr,
                    }
                    if report_queries:
                        metrics.update(self._query_report(encoder, head, features, frozen_queries, episode, query_labels))
                    on_inner_step(metrics)
        encoder.eval()
        return LinearTaskModel(encoder, head, features)

    @staticmethod
    def _query_report(encoder, head, features, frozen_queries, episode: Episode, query_labels) -> Metrics:
        """Query loss at this inner step, for the chart only: in eval mode, so reporting draws no dropout
        noise and a run that watches its queries adapts exactly like one that does not."""
        was_training = encoder.training
        encoder.eval()
        try:
            with torch.no_grad():
                queries = frozen_queries if frozen_queries is not None else features(episode.query_texts)
                query_loss, query_accuracy = classification_metrics(head(queries), query_labels)
        finally:
            encoder.train(was_training)
        return {"query_loss": query_loss.item(), "query_accuracy": query_accuracy}

    def extra_state_config(self) -> dict:
        return {"base_classes": self.base_classes.to_config()}

    def load_extra_state_config(self, config: dict) -> None:
        self.base_classes.load_config(config.get("base_classes", {}))


# ---------------------------------------------------------------- ordinary supervised splits


class SupervisedFineTuning:
    """Fine-tune ``encoder`` (in place, on its device) plus a new head on classes shared by both splits.

    A step function for ``train_loop``: ``self(step)`` trains on one shuffled batch of
    ``train_examples`` and returns ``train_loss``, ``train_accuracy`` and the ``lr`` it used;
    ``held_out()`` (a ``validate_fn``) returns ``held_out_loss`` and ``held_out_accuracy`` on
    ``eval_examples``. For datasets such as AG News and SST-2 (``examples_for_split(dataset,
    "train" / "test")``). The head's initial weights follow torch's generator when this is built;
    the batch order follows ``seed``. ``steps`` is where a "linear" schedule reaches zero.
    """

    def __init__(
        self,
        encoder: Encoder,
        train_examples: list[Example],
        eval_examples: list[Example],
        *,
        steps: int,
        batch_size: int = 32,
        finetune: str = "full",
        top_k: int = 1,
        head_lr: float = 1e-3,
        encoder_lr: float = 5e-5,
        layer_decay: float = 1.0,
        warmup_steps: int = 0,
        lr_schedule: str = "linear",
        weight_decay: float = 0.01,
        seed: int = 0,
    ) -> None:
        if not train_examples or not eval_examples:
            raise ValueError("supervised fine-tuning needs training and held-out examples")
        if steps < 1 or batch_size < 1:
            raise ValueError(f"need steps and batch_size >= 1; got {steps}, {batch_size}")
        if not 0.0 < layer_decay <= 1.0:
            raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
        self.classes = sorted({example.label for example in train_examples})
        self.index = {label: i for i, label in enumerate(self.classes)}
        unknown = sorted({e.label for e in eval_examples} - set(self.index))
        if unknown:
            raise ValueError(f"held-out classes never seen in training: {unknown[:5]}")
        self.encoder = encoder
        self.train_examples = train_examples
        self.eval_examples = eval_examples
        self.batch_size = batch_size
        self.rng = random.Random(seed)
        self.order: list[int] = []

        encoder.set_trainable_layers(trainable_layer_count(resolve_finetune_mode(finetune, encoder), top_k))
        self.head = nn.Linear(encoder.hidden_size, len(self.classes)).to(encoder.device)
        groups = [{"params": list(self.head.parameters()), "lr": head_lr, "name": "head"}]
        groups += layerwise_parameter_groups(encoder, encoder_lr, layer_decay)
        self.optimizer = torch.optim.AdamW(groups, weight_decay=weight_decay)
        self.scheduler = warmup_scheduler(self.optimizer, warmup_steps, steps, lr_schedule)
        self.frozen = encoder.is_frozen()
        self._cached: dict[str, torch.Tensor] = {}

    def _embed(self, texts: list[str]) -> torch.Tensor:
        if not self.frozen:
            return self.encoder.embed(texts)
        missing = [t for t in dict.fromkeys(texts) if t not in self._cached]
        if missing:  # a linear probe encodes every sentence once
            with torch.no_grad():
                self._cached.update(zip(missing, self.encoder.embed(missing), strict=True))
        return torch.stack([self._cached[t] for t in texts])

    def _labels(self, examples: list[Example]) -> torch.Tensor:
        return label_tensor([self.index[e.label] for e in examples], self.encoder.device)

    def _next_batch(self) -> list[Example]:
        """The next ``batch_size`` examples of a shuffled pass; a new shuffle is appended when it runs short."""
        if len(self.order) < self.batch_size:
            shuffled = list(range(len(self.train_examples)))
            self.rng.shuffle(shuffled)
            self.order += shuffled
        batch, self.order = self.order[: self.batch_size], self.order[self.batch_size :]
        return [self.train_examples[i] for i in batch]

    def __call__(self, step: int) -> Metrics:
        """One update on the next batch."""
        batch = self._next_batch()
        self.encoder.train(not self.frozen)
        lr = self.optimizer.param_groups[0]["lr"]
        loss, accuracy = classification_metrics(self.head(self._embed([e.text for e in batch])), self._labels(batch))
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return {"train_loss": loss.item(), "train_accuracy": accuracy, "lr": lr}

    @torch.no_grad()
    def held_out(self) -> Metrics:
        """Cross-entropy and accuracy on ``eval_examples``, without dropout."""
        self.encoder.eval()
        examples = self.eval_examples
        logits = torch.cat([
            self.head(self._embed([e.text for e in examples[i : i + 64]])) for i in range(0, len(examples), 64)
        ])
        loss, accuracy = classification_metrics(logits.float(), self._labels(examples))
        return {"held_out_loss": loss.item(), "held_out_accuracy": accuracy}
