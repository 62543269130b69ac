"""Meta-transfer learning (Sun et al., CVPR 2019): meta-learn light scaling and shifting of a frozen encoder.

Transfer supplies the initialisation: the encoder (pretrained MiniLM in real use) stays frozen,
and meta-learning only adds, per Transformer layer ℓ, a channel-wise scale γ_ℓ (init 1) and
shift β_ℓ (init 0) applied to that layer's output, h_ℓ ← γ_ℓ ⊙ h_ℓ + β_ℓ. The paper scales and
shifts convolution weights; on a Transformer the layer output is the natural place, and forward
hooks on ``encoder.layer_groups()[1:]`` make it work for every encoder without touching it.

Inner loop: ANIL-style, only the task's output layer adapts (zero init). Outer loop: MAML's
query loss after adaptation, differentiated into γ, β (and the optional hidden layer).

Costs: γ, β change the embeddings, so meta-training runs the encoder at every step; adaptation
and evaluation (γ, β fixed) memoise each sentence's embedding until γ, β or the encoder change.
Gradients only flow back through the layers that carry γ, β, so ``film_layers`` (counted from
the top) trades expressiveness for speed. ``film_at="embedding"`` is the fast alternative: one
γ, β on the pooled embedding, which keeps the cached embeddings of a frozen encoder. The hooks
are attached only while this method embeds, so other methods sharing the encoder (and its
embedding cache) never see them; the engine's attention snapshots show the encoder without them.
The paper's hard-task meta-batch is not implemented.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from metanlp.data.types import Episode
from metanlp.encoders import Encoder
from metanlp.encoders.cache import EmbeddingCache, weights_version
from metanlp.methods.base import MethodCard, Metrics
from metanlp.methods.maml import GradientMetaLearner, InnerLoopOptions
from metanlp.methods.options import check_choice, check_range
from metanlp.methods.registry import register_method

FILM_PLACES = ("layers", "embedding")


@dataclass
class MetaTransferOptions(InnerLoopOptions):
    film_at: str = "layers"  # "layers": each Transformer layer's output; "embedding": the pooled embedding
    film_layers: int = 0  # with film_at="layers": how many top layers get γ, β; 0: all of them

    def validate(self) -> None:
        super().validate()
        check_choice("film_at", self.film_at, FILM_PLACES)
        check_range("film_layers", self.film_layers, 0, 48)


class ScaleShift(nn.Module):
    """γ (layers, H) and β (layers, H): the only encoder-side parameters that are meta-learned."""

    def __init__(self, layers: int, width: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(layers, width))
        self.shift = nn.Parameter(torch.zeros(layers, width))

    def modulate(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """(B, S, H) → γ_ℓ ⊙ h + β_ℓ."""
        return hidden * self.scale[layer] + self.shift[layer]

    def hook(self, layer: int):
        """A forward hook for the ℓ-th modulated layer; layers return a tensor or a tuple led by one."""

        def modulate_output(_module: nn.Module, _inputs, output):
            if isinstance(output, tuple):
                return (self.modulate(layer, output[0]), *output[1:])
            return self.modulate(layer, output)

        return modulate_output

    def distance_from_identity(self) -> float:
        """Mean |γ − 1| + |β|: how far meta-training moved the encoder from plain transfer."""
        with torch.no_grad():
            return ((self.scale - 1).abs().mean() + self.shift.abs().mean()).item()


class ModulatedEmbeddingCache(EmbeddingCache):
    """Each sentence encoded once per value of (encoder weights, γ, β), with the γ, β hooks on."""

    def __init__(self, method: MetaTransfer) -> None:
        self._method = weakref.ref(method)  # the method owns this cache: no strong cycle
        super().__init__(method.encoder)

    def _version(self) -> tuple:
        return (*super()._version(), *weights_version(self._method().scale_shift))

    def _encode(self, texts: list[str]) -> torch.Tensor:
        with self._method().scaled_and_shifted():
            return super()._encode(texts)


@register_method
class MetaTransfer(GradientMetaLearner):
    card = MethodCard(
        name="meta_transfer",
        title="Meta-transfer learning (MTL)",
        family="meta-learning",
        summary=(
            "Transfer gives meta-learning its starting point: the pretrained encoder stays frozen "
            "and meta-learning adds only a per-layer scale and shift of its activations, tuned "
            "with MAML's outer loop while each task fits a fresh classifier in the inner loop."
        ),
        formula=r"h_\ell\leftarrow\gamma_\ell\odot h_\ell+\beta_\ell,\quad "
        r"w'=w-\alpha\nabla_w\mathcal{L}_{S}(w;\Theta,\gamma,\beta),\quad "
        r"(\gamma,\beta)\leftarrow(\gamma,\beta)-\eta\nabla_{\gamma,\beta}\mathcal{L}_{Q}(w';\Theta,\gamma,\beta)",
        paper="Sun, Liu, Chua, Schiele. Meta-Transfer Learning for Few-Shot Learning. CVPR 2019.",
        paper_url="https://arxiv.org/abs/1812.02391",
    )
    Options = MetaTransferOptions
    adapts_body = False  # the inner loop adapts the output layer only

    def __init__(self, encoder: Encoder, options: MetaTransferOptions) -> None:
        super().__init__(encoder, options)
        layers = len(self.modulated_layers()) if options.film_at == "layers" else 1
        self.scale_shift = ScaleShift(layers, encoder.hidden_size)
        self._modulated = ModulatedEmbeddingCache(self)  # for adaptation and evaluation (γ, β fixed)

    def setup_encoder(self) -> None:
        self.encoder.set_trainable_layers(0)

    def train(self, mode: bool = True) -> MetaTransfer:
        super().train(mode)
        self.encoder.eval()  # a frozen encoder is used deterministically: no dropout
        return self

    def modulated_layers(self) -> list[nn.Module]:
        layers = self.encoder.layer_groups()[1:]  # Transformer layers; [0] is the embeddings
        return layers[-self.options.film_layers :] if self.options.film_layers else layers

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

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        if self.options.film_at == "embedding":  # cached frozen embeddings, then γ ⊙ e + β
            return self.scale_shift.modulate(0, self.features(texts))
        if not torch.is_grad_enabled():  # adaptation and evaluation: γ, β are fixed, so memoise
            return self._modulated.embed(texts)
        with self.scaled_and_shifted():
            return self.encoder.embed(texts)

    def train_step(self, episode: Episode) -> Metrics:
        metrics = super().train_step(episode)
        metrics["scale_shift_change"] = self.scale_shift.distance_from_identity()
        return metrics
