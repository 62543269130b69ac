"""A hypernetwork that writes each task's classifier: model modulation from the support set.

A meta-model reads the support set and *generates* the task model's parameters in one forward pass:
FiLM parameters (γ, β) that modulate the shared features (as CNAPs generates FiLM layers from a task
representation) and a softmax layer (w_k, b_k) per class computed from that class's pooled features (as
LEOPARD generates its output layer). Meta-training backpropagates the query loss into the generators.

``classifier="generated"`` writes (w_k, b_k) = G(μ_k) from nothing but the generator, as LEOPARD does;
``"residual"`` (default) adds the generated part to the prototype classifier CNAPs uses, w_k = μ_k and
b_k = -½‖μ_k‖² (nearest class mean in Euclidean distance), so an untrained hypernetwork already writes a
sensible classifier. On frozen MiniLM features (CLINC150 5-way 1-shot, 300 episodes) the residual form
went from 80% to 86% and the purely generated one from 20% to 74% (lr 1e-3).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from metanlp.encoders import Encoder
from metanlp.methods._common import OnePassMethod
from metanlp.methods.base import (
    EncoderOptions,
    MethodCard,
    Metrics,
)
from metanlp.methods.options import check_choice, check_range
from metanlp.methods.protonet import class_prototypes
from metanlp.methods.registry import register_method

CLASSIFIER_MODES = ("residual", "generated")


@dataclass
class TaskParameters:
    """What the hypernetwork generates for one task (D = feature_size, N = classes)."""

    film_scale: torch.Tensor  # γ (D,); features are modulated as (1 + γ) ⊙ u + β
    film_shift: torch.Tensor  # β (D,)
    weight: torch.Tensor  # (N, D)
    bias: torch.Tensor  # (N,)


@dataclass
class HyperNetworkOptions(EncoderOptions):
    lr: float = 3e-4
    feature_size: int = 128  # D: size of the shared features the task model classifies
    generator_size: int = 256  # hidden units of the generators
    film: bool = True  # also generate FiLM modulation of the features (off: only the classifier)
    classifier: str = "residual"  # generated correction to a prototype classifier, or "generated" outright

    def validate(self) -> None:
        super().validate()
        check_range("lr", self.lr, 1e-7, 1.0)
        check_range("feature_size", self.feature_size, 2, 4096)
        check_range("generator_size", self.generator_size, 2, 8192)
        check_choice("classifier", self.classifier, CLASSIFIER_MODES)


def mlp(input_size: int, hidden_size: int, output_size: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(input_size, hidden_size), nn.ReLU(), nn.Linear(hidden_size, output_size))


@register_method
class HyperNetwork(OnePassMethod):
    card = MethodCard(
        name="hypernetwork",
        title="HyperNetwork (generated task model)",
        family="meta-learning",
        summary=(
            "A meta-network reads the support set and writes the parameters of the task's classifier in one "
            "forward pass: a scale and shift (FiLM) for every feature, from a summary of the whole task, and "
            "a weight vector and bias for every class, from that class's pooled examples (added to a "
            "nearest-class-mean classifier, or generated outright). No gradient step is taken per task; "
            "meta-training teaches the generators to write good classifiers."
        ),
        formula=r"\tau=\frac{1}{N}\sum_{k}\frac{1}{|S_k|}\sum_{x_i\in S_k}\psi(x_i),\ "
        r"(\gamma,\beta)=G_{\text{FiLM}}(\tau),\ u(x)=\operatorname{ReLU}\big((1+\gamma)\odot\phi(x)+\beta\big),\ "
        r"\mu_k=\tfrac{1}{|S_k|}\textstyle\sum_{x_i\in S_k}u(x_i),\ "
        r"(w_k,b_k)=\big(\mu_k,-\tfrac12\lVert\mu_k\rVert^2\big)+G_{\text{cls}}(\mu_k),\ "
        r"p(y=k\mid x)=\operatorname{softmax}_k\big(w_k^\top u(x)+b_k\big)",
        paper="Ha, Dai, Le. HyperNetworks. ICLR 2017 (arXiv:1609.09106); task-conditioned generation as in "
        "Bansal et al., LEOPARD, COLING 2020 (arXiv:1911.03863) and Requeima et al., CNAPs, NeurIPS 2019 "
        "(arXiv:1906.07697).",
        paper_url="https://arxiv.org/abs/1609.09106",
    )
    Options = HyperNetworkOptions

    def __init__(self, encoder: Encoder, options: HyperNetworkOptions) -> None:
        super().__init__(encoder, options)
        self.configure_encoder(options.finetune, options.top_k)
        self._film_scale_norm = float("nan")  # reported with each training step
        size, hidden = options.feature_size, options.generator_size
        self.features_layer = nn.Linear(encoder.hidden_size, size)  # φ, shared by every task
        self.task_encoder = mlp(encoder.hidden_size, hidden, size)  # ψ, summarises the support set
        self.film_generator = nn.Linear(size, 2 * size)
        # Zero start: FiLM begins as the identity and meta-training learns when to depart from it.
        nn.init.zeros_(self.film_generator.weight)
        nn.init.zeros_(self.film_generator.bias)
        self.classifier_generator = mlp(size, hidden, size + 1)  # → (w_k, b_k)

    def generate(self, support: torch.Tensor, labels: torch.Tensor, n_way: int) -> TaskParameters:
        """The task model's parameters from encoder features of the support set: (S, H), (S,) → TaskParameters."""
        size = self.options.feature_size
        if self.options.film:
            # Mean over classes of per-class means: invariant to class order and to shots per class.
            task_embedding = class_prototypes(self.task_encoder(support), labels, n_way).mean(0)  # (D,)
            film_scale, film_shift = self.film_generator(task_embedding).split(size)
        else:
            film_scale = film_shift = torch.zeros(size, device=support.device, dtype=support.dtype)
        class_means = class_prototypes(
            self.modulate(support, film_scale, film_shift), labels, n_way
        )  # μ (N, D)
        generated = self.classifier_generator(class_means)  # (N, D + 1)
        weight, bias = generated[:, :size], generated[:, size]
        if self.options.classifier == "residual":
            weight = weight + class_means
            bias = bias - 0.5 * class_means.pow(2).sum(-1)
        return TaskParameters(film_scale, film_shift, weight=weight, bias=bias)

    def modulate(
        self, features: torch.Tensor, film_scale: torch.Tensor, film_shift: torch.Tensor
    ) -> torch.Tensor:
        """u(x) = ReLU((1 + γ) ⊙ φ(x) + β): (B, H) → (B, D)."""
        return torch.relu((1 + film_scale) * self.features_layer(features) + film_shift)

    def task_logits(self, parameters: TaskParameters, features: torch.Tensor) -> torch.Tensor:
        """Run the generated task model on encoder features: (B, H) → (B, N)."""
        modulated = self.modulate(features, parameters.film_scale, parameters.film_shift)
        return modulated @ parameters.weight.T + parameters.bias

    def scorer(self, support: torch.Tensor, labels: torch.Tensor, n_way: int):
        """One forward pass of the hypernetwork generates the task model."""
        parameters = self.generate(support, labels, n_way)
        self._film_scale_norm = parameters.film_scale.detach().norm().item()  # of the latest task
        return lambda queries: self.task_logits(parameters, queries)

    def extra_metrics(self) -> Metrics:
        return {"film_scale_norm": self._film_scale_norm}
