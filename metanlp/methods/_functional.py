"""Functional pieces shared by the optimisation-based meta-learners (MAML family, MTL, LSTM).

Parameters travel as plain dicts ``name → tensor``. An inner loop then builds θ'_1, θ'_2, ...
as new tensors without touching the module, so the outer loss can differentiate through
every inner step back to the meta-learned initialisation θ (Finn et al. 2017, Eq. 1).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch.func import functional_call
from torch.nn import functional as F

from metanlp.encoders import Encoder, mean_pool

Params = dict[str, torch.Tensor]
LossOfParams = Callable[[Params], torch.Tensor]
AfterStep = Callable[[int, Params], None]

HEAD_INITS = ("zero", "prototype")
ENCODER_PREFIX = "encoder."


def gradient_descent(
    params: Params,
    loss_of: LossOfParams,
    adapted_names: Sequence[str],
    steps: int,
    inner_lr: float | Mapping[str, float],
    second_order: bool,
    after_step: AfterStep | None = None,
) -> tuple[Params, list[float]]:
    """Run θ_{t+1} = θ_t − α ∇_θ L(θ_t) on ``adapted_names``; other entries stay as they are.

    ``inner_lr`` is one α, or one per name (e.g. smaller for pretrained encoder weights).
    ``second_order=True`` keeps the graph of each gradient (create_graph), so the result is
    differentiable w.r.t. the initial θ including the Hessian terms; ``False`` treats each
    inner gradient as a constant, which is first-order MAML. Returns θ_T and the losses
    L(θ_0), ..., L(θ_{T−1}) (the ones the updates were taken on).
    """
    rates = inner_lr if isinstance(inner_lr, Mapping) else dict.fromkeys(adapted_names, inner_lr)
    losses = []
    for step in range(1, steps + 1):
        loss = loss_of(params)
        current = [params[name] for name in adapted_names]
        # allow_unused: e.g. the scratch encoder's segment embeddings get no gradient on single sentences.
        gradients = torch.autograd.grad(loss, current, create_graph=second_order, allow_unused=True)
        params = dict(params)
        for name, value, gradient in zip(adapted_names, current, gradients, strict=True):
            if gradient is not None:
                params[name] = value - rates[name] * gradient
        losses.append(loss.item())
        if after_step is not None:
            after_step(step, params)
    return params, losses


def detached_copy(params: Params, requires_grad: bool = True) -> Params:
    """Fresh leaves with the same values: adapt at test time without touching the meta-parameters."""
    return {name: value.detach().clone().requires_grad_(requires_grad) for name, value in params.items()}


# ----- the classifier head ------------------------------------------------------------------


def standardize(features: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per embedding (norm sqrt(H)), whatever the encoder's own scale.

    MiniLM's embeddings have norm 1, the scratch encoder's are unnormalised; without this a
    good ``inner_lr`` would depend on that convention. It still grows with H: the scratch
    encoders of the tests (H = 32) want about 3× MiniLM's (H = 384) step.
    """
    return F.layer_norm(features, features.shape[-1:])


def head_representation(params: Params, features: torch.Tensor) -> torch.Tensor:
    """(B, H) → (B, D): standardised features through the optional ReLU layer ``hidden``."""
    features = standardize(features)
    if "hidden.weight" in params:
        features = torch.relu(F.linear(features, params["hidden.weight"], params["hidden.bias"]))
    return features


def head_logits(params: Params, features: torch.Tensor) -> torch.Tensor:
    """(B, H) → (B, N) with the task's output layer ``output.weight`` (N, D), ``output.bias`` (N)."""
    return F.linear(head_representation(params, features), params["output.weight"], params["output.bias"])


def zero_output_layer(n_way: int, width: int, like: torch.Tensor) -> Params:
    """W = 0 (N, D), b = 0 (N): every class starts alike, so an episode's label order cannot matter.

    For a linear output this equals any init whose rows are one shared vector (softmax ignores
    a shift common to all rows), i.e. the shared-row MAML of Ye & Chao (ICLR 2022).
    """
    weight = like.new_zeros(n_way, width).requires_grad_()
    return {"output.weight": weight, "output.bias": like.new_zeros(n_way).requires_grad_()}


def prototype_output_layer(params: Params, support: torch.Tensor, labels: torch.Tensor, n_way: int) -> Params:
    """Proto-MAML (Triantafillou et al. 2020, arXiv:1903.03096): W_k = 2 c_k, b_k = −‖c_k‖².

    c_k is the mean support representation of class k, so before any inner step the head is a
    prototypical network; the init stays differentiable in the meta-parameters.
    """
    representation = head_representation(params, support)  # (S, D)
    one_hot = F.one_hot(labels, n_way).to(representation.dtype)  # (S, N)
    prototypes = (one_hot.T @ representation) / one_hot.sum(0).clamp(min=1.0)[:, None]  # (N, D)
    return {
        "output.weight": _differentiable(2 * prototypes),
        "output.bias": _differentiable(-prototypes.pow(2).sum(-1)),
    }


def _differentiable(value: torch.Tensor) -> torch.Tensor:
    """The inner loop differentiates w.r.t. the output layer even when nothing upstream needs grad."""
    return value if value.requires_grad else value.requires_grad_()


# ----- running an encoder on a parameter dict ----------------------------------------------


def encoder_parameters(params: Params) -> Params:
    """The ``encoder.``-prefixed entries of ``params``, with the prefix removed."""
    return {name[len(ENCODER_PREFIX) :]: value for name, value in params.items() if name.startswith(ENCODER_PREFIX)}


def functional_embed(encoder: Encoder, params: Params, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sentence embeddings (B, H) of a tokenised batch, with some encoder weights replaced.

    Pools exactly like ``Encoder.embed``; weights absent from ``params`` are the encoder's own.
    """
    output = functional_call(encoder, encoder_parameters(params), (batch["input_ids"], batch["attention_mask"]))
    pooled = mean_pool(output.last_hidden_state, output.attention_mask)
    return F.normalize(pooled, dim=-1) if encoder.normalize else pooled
