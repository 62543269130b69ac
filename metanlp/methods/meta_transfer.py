"""Meta-transfer learning (Sun et al., CVPR 2019): meta-learn light scaling and shifting of a frozen encoder.

Transfer supplies the initialisation: the encoder (pretrained MiniLM in real use) stays frozen,
and meta-learning only adds, per Transformer layer ℓ, a channel-wise scale γ_ℓ (init 1) and
shift β_ℓ (init 0) applied to that layer's output, h_ℓ ← γ_ℓ ⊙ h_ℓ + β_ℓ. The paper scales and
shifts convolution weights; on a Transformer the layer output is the natural place, and forward
hooks on ``encoder.layer_groups()[1:]`` make it work for every encoder without touching it
(``_scale_shift.py``, shared with ProtoNet's ``film`` option: the same γ, β trained with
ProtoNet's loss and no inner loop, the control for this method).

Inner loop: ANIL-style, only the task's output layer adapts (zero init). Outer loop: MAML's
query loss after adaptation, differentiated into γ, β (and the optional hidden layer).

Costs: γ, β change the embeddings, so meta-training runs the encoder at every step; adaptation
and evaluation (γ, β fixed) memoise each sentence's embedding until γ, β or the encoder change.
Gradients only flow back through the layers that carry γ, β, so ``film_layers`` (counted from
the top) trades expressiveness for speed. ``film_at="embedding"`` is the fast alternative: one
γ, β on the pooled embedding, which keeps the cached embeddings of a frozen encoder.
The paper's hard-task meta-batch is not implemented.
"""

from __future__ import annotations

from dataclasses import dataclass

from metanlp.data.types import Episode
from metanlp.encoders import Encoder
from metanlp.methods._scale_shift import FILM_PLACES, ScaleShiftMixin
from metanlp.methods.base import MethodCard, Metrics
from metanlp.methods.maml import GradientMetaLearner, InnerLoopOptions
from metanlp.methods.options import option
from metanlp.methods.registry import register_method


@dataclass
class MetaTransferOptions(InnerLoopOptions):
    film_at: str = option("layers", choices=FILM_PLACES)  # "layers": each Transformer layer's output; "embedding": the pooled embedding
    film_layers: int = option(0, low=0, high=48)  # with film_at="layers": how many top layers get γ, β; 0: all of them


@register_method
class MetaTransfer(ScaleShiftMixin, GradientMetaLearner):
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
        self.add_scale_shift(options.film_at, options.film_layers)  # ``features`` now applies γ, β

    def setup_encoder(self) -> None:
        self.encoder.set_trainable_layers(0)

    def train_step(self, episode: Episode) -> Metrics:
        return {**super().train_step(episode), **self.scale_shift_metrics()}
