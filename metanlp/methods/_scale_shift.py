"""Scale and shift (FiLM) of a frozen encoder: γ, β per Transformer layer, or on the pooled embedding.

Shared by meta-transfer learning, which meta-learns γ, β through MAML's outer loop, and ProtoNet's
``film`` option, which trains the same γ, β with ProtoNet's own loss: the control that tells
how much of meta-transfer's gain is the parameters and how much its inner loop.

Per modulated layer ℓ: h_ℓ ← γ_ℓ ⊙ h_ℓ + β_ℓ (γ init 1, β init 0), applied by forward hooks on
``encoder.layer_groups()[1:]``, so it works for every encoder without touching it. The hooks
are attached only while the method embeds: other methods sharing the encoder (and its embedding
cache) never see them. With gradients on, the encoder runs at every call (gradients reach γ, β
through every modulated layer); with gradients off (adaptation, evaluation: γ, β fixed) each
sentence is encoded once per value of (encoder weights, γ, β). ``embedding`` is the fast place:
one γ, β on the pooled embedding, which keeps the shared cache of a frozen encoder.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from metanlp.encoders.cache import EmbeddingCache, weights_version
from metanlp.methods.base import Method

FILM_PLACES = ("layers", "embedding")


class ScaleShift(nn.Module):
    """γ (layers, H) and β (layers, H): the only encoder-side parameters that are learned."""

    def __init__(self, layers: int, width: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(layers, width))
        self.shift = nn.Parameter(torch.zeros(layers, width))

    def modulate(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """(B, S, H) or (B, H) → γ_ℓ ⊙ h + β_ℓ."""
        return hidden * self.scale[layer] + self.shift[layer]

    def hook(self, layer: int):
        """A forward hook for the ℓ-th modulated layer; layers return a tensor or a tuple led by one."""

        def modulate_output(_module: nn.Module, _inputs, output):
            if isinstance(output, tuple):
                return (self.modulate(layer, output[0]), *output[1:])
            return self.modulate(layer, output)

        return modulate_output

    def distance_from_identity(self) -> float:
        """Mean |γ − 1| + |β|: how far training moved the encoder from plain transfer."""
        with torch.no_grad():
            return ((self.scale - 1).abs().mean() + self.shift.abs().mean()).item()


class ModulatedEmbeddingCache(EmbeddingCache):
    """Each sentence encoded once per value of (encoder weights, γ, β), with the γ, β hooks on."""

    def __init__(self, method: ScaleShiftMixin) -> None:
        self._method = weakref.ref(method)  # the method owns this cache: no strong cycle
        super().__init__(method.encoder)

    def _version(self) -> tuple:
        return (*super()._version(), *weights_version(self._method().scale_shift))

    def _encode(self, texts: list[str]) -> torch.Tensor:
        with self._method().scaled_and_shifted():
            return super()._encode(texts)


class ScaleShiftMixin(Method):
    """Gives a method γ, β on its encoder: ``features`` then returns the scaled-and-shifted embeddings.

    Call ``add_scale_shift`` in ``__init__`` (place "none" adds nothing and leaves ``features`` as is).
    """

    def add_scale_shift(self, place: str, top_layers: int = 0) -> None:
        """γ, β at ``place`` ("layers", "embedding" or "none"); ``top_layers`` > 0 modulates only the top ones."""
        self.film_place = place
        self.film_top_layers = top_layers
        if place == "none":
            self.scale_shift = None
            return
        count = len(self.modulated_layers()) if place == "layers" else 1
        if count == 0:
            raise ValueError("scale and shift on 'layers' needs an encoder with Transformer layers; use 'embedding'")
        self.scale_shift = ScaleShift(count, self.encoder.hidden_size)
        self._modulated = ModulatedEmbeddingCache(self)  # for adaptation and evaluation (γ, β fixed)

    def modulated_layers(self) -> list[nn.Module]:
        layers = self.encoder.layer_groups()[1:]  # Transformer layers; [0] is the embeddings
        return layers[-self.film_top_layers :] if self.film_top_layers else layers

    @contextmanager
    def scaled_and_shifted(self) -> Iterator[None]:
        """Attach γ, β to the encoder for the duration of one embedding call."""
        handles = [
            layer.register_forward_hook(self.scale_shift.hook(index))
            for index, layer in enumerate(self.modulated_layers())
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def features(self, texts: list[str]) -> torch.Tensor:
        if self.scale_shift is None:
            return super().features(texts)
        if self.film_place == "embedding":  # cached frozen embeddings, then γ ⊙ e + β
            return self.scale_shift.modulate(0, super().features(texts))
        if not torch.is_grad_enabled():  # γ, β are fixed: memoise
            return self._modulated.embed(texts)
        with self.scaled_and_shifted():
            return self.encoder.embed(texts)

    def train(self, mode: bool = True) -> ScaleShiftMixin:
        super().train(mode)
        if self.encoder.is_frozen():
            self.encoder.eval()  # a frozen encoder is used deterministically: no dropout
        return self

    def scale_shift_metrics(self) -> dict[str, float]:
        """What a train step reports about γ, β (nothing without them)."""
        if self.scale_shift is None:
            return {}
        return {"scale_shift_change": self.scale_shift.distance_from_identity()}
