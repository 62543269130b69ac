"""What the transfer methods (multi-task, DANN, distillation) share besides a base-class head.

- ``ResidualAdapter``: the small trainable layer they put on top of the encoder.
- ``adapt_with_prototypes``: every transfer method adapts to a new task the same way (class means
  of its learned features), so the comparison between them measures the features, not the classifier.
- ``text_pool`` and ``data_not_received``: the unlabelled text they receive from the engine
  (``Method.receive_data``), and the error when training starts without it.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import torch
from torch import nn

from metanlp.data.types import Episode
from metanlp.methods._common import FeatureTaskModel, one_pass_report
from metanlp.methods.base import AuxiliaryDataset, InnerStepCallback, Method, TaskModel, label_tensor
from metanlp.methods.options import OptionError
from metanlp.methods.protonet import class_prototypes, prototype_logits

FeatureFunction = Callable[[list[str]], torch.Tensor]


class ResidualAdapter(nn.Module):
    """x + W₂·GELU(W₁x), with W₂ starting at zero (a bottleneck adapter, Houlsby et al. 2019).

    It begins as the identity, so a method starts from the encoder's own features (strong
    for pretrained MiniLM) and training only moves away from them as far as its loss asks.
    """

    def __init__(self, size: int, bottleneck: int) -> None:
        super().__init__()
        self.down = nn.Linear(size, bottleneck)
        self.up = nn.Linear(bottleneck, size)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # (B, H) → (B, H)
        return features + self.up(nn.functional.gelu(self.down(features)))


def adapt_with_prototypes(
    features: FeatureFunction,
    episode: Episode,
    distance: str,
    on_inner_step: InnerStepCallback | None = None,
) -> TaskModel:
    """Nearest class mean of the support features; reports one "inner step" (the means) if asked.

    Query labels, when present, are used only to report query loss and accuracy.
    """
    with torch.no_grad():
        support = features(episode.support_texts)
        prototypes = class_prototypes(support, label_tensor(episode.support_labels, support.device), episode.n_way)
    task_model = FeatureTaskModel(features, lambda queries: prototype_logits(queries, prototypes, distance, 1.0))
    if on_inner_step is not None:
        on_inner_step(one_pass_report(task_model, episode))
    return task_model


def text_pool(datasets: list[AuxiliaryDataset], max_texts: int, seed: int, option: str) -> list[str]:
    """The distinct texts of ``datasets`` (labels dropped), a seeded subset of at most ``max_texts``."""
    texts = list(dict.fromkeys(example.text for dataset in datasets for example in dataset.examples))
    if datasets and not texts:
        names = ", ".join(dataset.name for dataset in datasets)
        raise OptionError(f"option {option!r} names {names}, which has no text to train on", option)
    if len(texts) > max_texts:
        texts = random.Random(seed).sample(texts, max_texts)
    return texts


def data_not_received(method: Method, option: str) -> RuntimeError:
    """Training was asked of ``method`` before the data its ``option`` names was handed over."""
    return RuntimeError(
        f"{method.card.name} trains on the data its option {option!r} names and has not received it: build it "
        "with metanlp.engine.auxiliary.build_method, or hand the data to receive_data, before training"
    )
