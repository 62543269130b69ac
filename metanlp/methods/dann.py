"""Domain-adversarial training (DANN; Ganin et al. 2016, JMLR, arXiv:1505.07818).

Three parts: a feature extractor G_f (encoder + a small trainable layer), a label
classifier G_y trained on the labelled source episodes, and a domain classifier G_d that
tells source text from *unlabelled* target text. G_d sits behind a gradient-reversal
layer, so the same backward pass that improves G_d pushes G_f towards features G_d
cannot separate: features that carry the labels but not the domain.

The target dataset's labels are never used for training; only the texts of its training
and validation classes are, so its test classes stay unseen until evaluation. There is no
default target: adapting intents or headlines towards some unrelated domain would be noise,
so ``target_dataset`` must be given (the bench gives it only where a dataset declares one). The
method never loads it: the engine hands its texts to ``receive_data`` (``auxiliary_data`` declares
the option), and adapting or predicting never needs them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from metanlp.data.types import Episode
from metanlp.encoders import Encoder
from metanlp.methods._base_classes import BaseClassIndex, base_class_step
from metanlp.methods._gradient_reversal import dann_lambda, reverse_gradient
from metanlp.methods._transfer import ResidualAdapter, adapt_with_prototypes, data_not_received, text_pool
from metanlp.methods.base import (
    AuxiliaryData,
    DataRequest,
    EncoderOptions,
    InnerStepCallback,
    Method,
    MethodCard,
    Metrics,
    TaskModel,
)
from metanlp.methods.options import OptionError, option
from metanlp.methods.protonet import DISTANCES
from metanlp.methods.registry import register_method

#: Splits whose texts (never labels) serve as unlabelled target-domain data.
UNLABELLED_TARGET_SPLITS = ("train", "val")


@dataclass
class DANNOptions(EncoderOptions):
    target_dataset: str = ""  # required: the unlabelled target domain, e.g. "fewrel_pubmed" for FewRel
    reversal: bool = True  # False: G_d only watches (detached features) — the no-adaptation baseline
    max_lambda: float = option(1.0, low=0.0, high=100.0)  # λ, the weight of the reversed domain gradient, at the end of the schedule
    lambda_schedule: bool = True  # λ_p = 2/(1+exp(-10p)) - 1 over schedule_steps; else constant
    schedule_steps: int = option(200, low=1, high=10_000_000)
    adapter_size: int = option(128, low=1, high=8192)  # bottleneck of the residual adapter on top of the encoder
    domain_hidden: int = option(128, low=1, high=8192)
    target_batch: int = option(0, low=0, high=4096)  # unlabelled target texts per step; 0: as many as the support set
    target_pool: int = option(2000, low=1, high=1_000_000)
    lr: float = option(1e-4, low=1e-7, high=1.0)  # small: on 8 FewRel relations, 1e-3 overfits the adapter (docs/results_transfer.md)
    max_base_classes: int = option(256, low=2, high=100_000)
    distance: str = option("euclidean", choices=DISTANCES)
    seed: int = option(0, low=0, high=2**31 - 1)


def domain_metrics(domain_logits: torch.Tensor, is_target: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Binary cross-entropy of G_d (a tensor) and its accuracy (a float): (B,), (B,) → ..."""
    loss = F.binary_cross_entropy_with_logits(domain_logits, is_target)
    accuracy = ((domain_logits > 0).float() == is_target).float().mean().item()
    return loss, accuracy


@register_method
class DANN(Method):
    card = MethodCard(
        name="dann",
        title="Domain-adversarial training (DANN)",
        family="transfer learning",
        summary=(
            "Learns features from labelled source-domain text that a domain classifier cannot tell "
            "apart from unlabelled target-domain text: the domain classifier's gradient is reversed "
            "on its way into the feature extractor. New tasks are classified by nearest class mean."
        ),
        formula=r"\min_{\theta_f,\theta_y}\max_{\theta_d}\ \mathcal{L}_y\!\left(G_y(G_f(x^s)),y^s\right)"
        r"-\lambda\,\mathcal{L}_d\!\left(G_d(G_f(x)),d\right),\quad \lambda_p=\frac{2}{1+e^{-10p}}-1",
        paper=(
            "Ganin, Ustinova, Ajakan, Germain, Larochelle, Laviolette, Marchand, Lempitsky. "
            "Domain-Adversarial Training of Neural Networks. JMLR 17(59), 2016."
        ),
        paper_url="https://arxiv.org/abs/1505.07818",
    )
    Options = DANNOptions
    #: Options that make a working example (tests build every method with these on top of defaults).
    example_options: ClassVar[dict] = {"target_dataset": "fewrel_pubmed"}
    auxiliary_data: ClassVar[tuple[DataRequest, ...]] = (
        DataRequest("target_dataset", splits=UNLABELLED_TARGET_SPLITS),
    )

    def __init__(self, encoder: Encoder, options: DANNOptions) -> None:
        if not options.target_dataset:
            raise OptionError(
                "option 'target_dataset' is required for dann: name the dataset whose unlabelled text is the "
                "target domain (e.g. target_dataset=fewrel_pubmed for fewrel)",
                "target_dataset",
            )
        super().__init__(encoder, options)
        self.configure_encoder(options.finetune, options.top_k)
        self.feature_layer = ResidualAdapter(encoder.hidden_size, options.adapter_size)  # top of G_f
        self.label_head = nn.Linear(encoder.hidden_size, options.max_base_classes)  # G_y
        self.domain_classifier = nn.Sequential(  # G_d
            nn.Linear(encoder.hidden_size, options.domain_hidden),
            nn.ReLU(),
            nn.Linear(options.domain_hidden, 1),
        )
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        self.source_classes = BaseClassIndex(options.max_base_classes)
        self.target_texts: list[str] = []  # received before training (receive_data); labels never are
        self._rng = random.Random(options.seed)

    def receive_data(self, data: AuxiliaryData) -> None:
        """The target's train and val texts (a seeded subset of ``target_pool``), labels dropped."""
        options = self.options
        self.target_texts = text_pool(data["target_dataset"], options.target_pool, options.seed, "target_dataset")

    def prediction_invariant_parameters(self) -> list[nn.Parameter]:
        # G_y scores meta-train classes and G_d domains: both shape the features during training,
        # but a new task is classified by prototypes of G_f(x) alone.
        return [*self.label_head.parameters(), *self.domain_classifier.parameters()]

    def domain_invariant_features(self, texts: list[str]) -> torch.Tensor:
        """G_f(x), (len(texts), encoder hidden size)."""
        return self.feature_layer(self.features(texts))

    def current_lambda(self) -> float:
        if not self.options.lambda_schedule:
            return self.options.max_lambda
        progress = self.steps_done.item() / self.options.schedule_steps
        return self.options.max_lambda * dann_lambda(progress)

    def train_step(self, episode: Episode) -> Metrics:
        """Label loss on the source support set + domain loss on it and as many target texts."""
        if not self.target_texts:
            raise data_not_received(self, "target_dataset")
        self.train()
        n_target = self.options.target_batch or len(episode.support_texts)
        target_texts = self._rng.sample(self.target_texts, min(n_target, len(self.target_texts)))
        strength = self.current_lambda()

        def domain_loss(source_features: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
            target_features = self.domain_invariant_features(target_texts)
            both_domains = torch.cat([source_features, target_features])
            # Without reversal G_d only observes: the features get no domain gradient at all.
            domain_input = reverse_gradient(both_domains, strength) if self.options.reversal else both_domains.detach()
            is_target = torch.cat([torch.zeros(len(source_features)), torch.ones(len(target_features))])
            loss, accuracy = domain_metrics(self.domain_classifier(domain_input).squeeze(-1), is_target.to(self.device))
            return loss, {"domain_loss": loss.item(), "domain_accuracy": accuracy}

        metrics = base_class_step(
            self, self.source_classes, self.label_head, self.domain_invariant_features, episode, domain_loss
        )
        self.steps_done += 1
        return {**metrics, "lambda": strength if self.options.reversal else 0.0}

    def adapt(self, episode: Episode, on_inner_step: InnerStepCallback | None = None) -> TaskModel:
        self.eval()
        return adapt_with_prototypes(
            self.domain_invariant_features, episode, self.options.distance, on_inner_step
        )

    def extra_state_config(self) -> dict:
        return {"source_classes": self.source_classes.to_config()}

    def load_extra_state_config(self, config: dict) -> None:
        self.source_classes.load_config(config.get("source_classes", {}))
