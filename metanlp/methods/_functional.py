"""Functional pieces shared by the optimisation-based meta-learners (MAML family, MTL, LSTM).

Parameters travel as plain dicts ``name → tensor``. An inner loop then builds θ'_1, θ'_2, ...
as new tensors without touching the module, so the outer loss can differentiate through
every inner step back to the meta-learned initialisation θ (Finn et al. 2017, Eq. 1).
Modules run on such dicts through ``torch.func.functional_call``; ``batched_inner_loops``
runs many tasks' inner loops at once on stacked parameters with ``torch.func.vmap``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.nn import functional as F

from metanlp.encoders import Encoder, mean_pool

Params = dict[str, torch.Tensor]
LossOfParams = Callable[[Params], torch.Tensor]
AfterStep = Callable[[int, Params], None]
Batch = torch.Tensor | Mapping[str, torch.Tensor]  # features (B, H), or tokenised text (B, L) tensors
LogitsOfParams = Callable[[Params, Batch], torch.Tensor]  # (θ, inputs) → (B, N)
OutputLayerOf = Callable[[Params, Batch, torch.Tensor], Params]  # (θ, support, labels) → a task's output layer

HEAD_INITS = ("zero", "prototype")
BODIES = ("none", "shift", "scale_shift", "adapter", "scale_shift+adapter")
ENCODER_PREFIX = "encoder."
HEAD_PREFIX = "head."
OUTPUT_NAMES = ("output.weight", "output.bias")


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


# ----- many tasks' inner loops at once -------------------------------------------------------


@dataclass
class BatchedOutcome:
    """T tasks adapted together; every tensor has the task axis first."""

    query_logits: torch.Tensor  # (T, Q, N) at θ_k, differentiable w.r.t. the meta-parameters
    support_logits: torch.Tensor  # (T, S, N) at θ_k, detached
    support_losses: torch.Tensor  # (T, k): L_S(θ_0), ..., L_S(θ_{k−1})
    query_losses: torch.Tensor  # (T, k): L_Q(θ_1), ..., L_Q(θ_k); (T, 0) when not reported


def batched_inner_loops(
    meta: Params,
    support: Batch,
    support_labels: torch.Tensor,
    query: Batch,
    query_labels: torch.Tensor,
    output_layer: OutputLayerOf,
    logits: LogitsOfParams,
    adapted_names: Sequence[str],
    steps: int,
    inner_lr: Mapping[str, float],
    second_order: bool,
    n_way: int,
    report_queries: bool = True,
) -> BatchedOutcome:
    """The inner loops of T equally shaped tasks at once, on stacked parameters.

    ``support`` is (T, S, H) features or a dict of (T, S, L) token tensors, labels (T, S);
    likewise the queries. θ (``meta``) is shared: each adapted entry is stacked to (T, ...) so
    that every task carries its own θ'_t, and the head runs on all tasks in one call,
    ``torch.func.vmap`` over the task axis (entries the inner loop leaves alone, e.g. ANIL's
    body, enter unbatched). Tasks are independent, so
    the gradient of the *summed* support loss w.r.t. the stacked θ'_t is each task's own inner
    gradient: one ``autograd.grad`` per step serves all T tasks. ``second_order`` keeps its graph
    (Hessian terms); otherwise each inner gradient is a constant (first order). The result equals
    running the tasks one by one with ``gradient_descent``, up to rounding. Dropout, if any, draws
    differently per task (``randomness="different"``). ``report_queries=False`` skips L_Q(θ_t)
    for t < k (a query pass per step is costly when the encoder runs in the loop).
    """
    tasks = support_labels.shape[0]
    output = vmap(output_layer, in_dims=(None, 0, 0), randomness="different")(meta, support, support_labels)
    dtype = output["output.weight"].dtype
    per_task = set(adapted_names) | set(output)
    stacked = {name: value.expand(tasks, *value.shape) for name, value in meta.items() if name in per_task}
    params = inner_loop_variables({**meta, **stacked, **output}, adapted_names)
    dims = {name: 0 if name in per_task else None for name in params}
    task_logits = vmap(logits, in_dims=(dims, 0), randomness="different")
    # One call per step scores both: support (for the inner gradient) and query (for the report).
    scored = vmap(_support_and_query_logits(logits), in_dims=(dims, 0, 0), randomness="different")
    support_targets = one_hot(support_labels, n_way, dtype)  # (T, S, N)
    query_targets = one_hot(query_labels, n_way, dtype)
    support_losses, query_losses = [], []
    for step in range(steps):
        if report_queries:
            support_scores, query_scores = scored(params, support, query)
            if step:  # the query scores at θ_t, computed before step t + 1 updates it
                query_losses.append(cross_entropy_per_task(query_scores, query_targets))
        else:
            support_scores = task_logits(params, support)
        losses = cross_entropy_per_task(support_scores, support_targets)  # (T,)
        current = [params[name] for name in adapted_names]
        # allow_unused: e.g. the scratch encoder's segment embeddings get no gradient on single sentences.
        gradients = torch.autograd.grad(losses.sum(), current, create_graph=second_order, allow_unused=True)
        params = {**params, **{
            name: value - inner_lr[name] * gradient
            for name, value, gradient in zip(adapted_names, current, gradients, strict=True)
            if gradient is not None
        }}
        support_losses.append(losses.detach())
    query_scores = task_logits(params, query)
    if report_queries:
        query_losses.append(cross_entropy_per_task(query_scores.detach(), query_targets))
    with torch.no_grad():
        support_logits = task_logits(params, support)
    query_losses_by_step = torch.stack(query_losses, 1) if query_losses else support_labels.new_zeros(tasks, 0, dtype=dtype)
    return BatchedOutcome(query_scores, support_logits, torch.stack(support_losses, 1), query_losses_by_step)


def _support_and_query_logits(logits: LogitsOfParams) -> Callable:
    """One task's support logits (for the inner gradient) and, without a graph, its query logits (for the report)."""

    def both(params: Params, support: Batch, query: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            query_scores = logits(params, query)
        return logits(params, support), query_scores

    return both


def one_hot(labels: torch.Tensor, n_way: int, dtype: torch.dtype) -> torch.Tensor:
    """(B,) → (B, N); unlike ``F.one_hot`` it works under ``vmap`` (no data-dependent checks)."""
    return (labels[..., None] == torch.arange(n_way, device=labels.device)).to(dtype)


def cross_entropy_per_task(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(T, B, N) logits and one-hot targets → (T,): each task's mean cross-entropy."""
    return (torch.logsumexp(logits, -1) - (logits * targets).sum(-1)).mean(-1)


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


class FeatureBody(nn.Module):
    """A light, meta-learned body on the encoder's sentence embeddings, identity at initialisation.

    ``scale_shift``: γ ⊙ x + β per dimension (γ = 1, β = 0), the FiLM / meta-transfer form;
    ``shift``: x + β alone.
    ``adapter``: x + A x + a with A = 0, a = 0, a residual linear map (a learned metric).
    It acts before standardisation, so β can centre the embeddings (subtracting a mean
    embedding is known to help nearest-centroid few-shot classification: SimpleShot, Wang et
    al. 2019, arXiv:1911.04623) and γ can re-weight dimensions. Both change which class a query
    is nearest to, so they matter even on a frozen encoder, and starting at identity means the
    untrained learner is plain transfer of the encoder's geometry.
    """

    def __init__(self, width: int, kind: str) -> None:
        super().__init__()
        parts = kind.split("+")
        self.scale = nn.Parameter(torch.ones(width)) if "scale_shift" in parts else None
        self.shift = nn.Parameter(torch.zeros(width)) if {"scale_shift", "shift"} & set(parts) else None
        self.adapter = nn.Linear(width, width) if "adapter" in parts else None
        if self.adapter is not None:
            nn.init.zeros_(self.adapter.weight)
            nn.init.zeros_(self.adapter.bias)

    @torch.no_grad()
    def decay_toward_identity(self, fraction: float) -> None:
        """Move every parameter ``fraction`` of the way back to its identity value (γ = 1, β = 0, A = 0).

        Decoupled weight decay whose centre is the untrained body (L2-SP, Li et al. 2018): with few
        meta-training classes it keeps the body from specialising to them.
        """
        for name, parameter in self.named_parameters():
            identity = 1.0 if name == "scale" else 0.0
            parameter.sub_(fraction * (parameter - identity))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.scale is not None:
            features = features * self.scale
        if self.shift is not None:
            features = features + self.shift
        if self.adapter is not None:
            features = features + self.adapter(features)
        return features


class FeatureHead(nn.Module):
    """Features (B, H) → body → standardise → optional ReLU layer (H → D) → the task's output layer.

    The output layer (N, D) belongs to one task, so it is an argument, not a parameter: the
    inner loops run this module on a parameter dict via ``torch.func.functional_call``.
    Without an output layer ``forward`` returns the representation (B, D) (Proto-MAML's init).
    """

    def __init__(self, width: int, body: str = "none", hidden: int = 0) -> None:
        super().__init__()
        self.body = FeatureBody(width, body) if body != "none" else None
        self.hidden = nn.Linear(width, hidden) if hidden else None
        self.output_width = hidden or width

    def forward(self, features: torch.Tensor, output: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        representation = standardize(self.body(features) if self.body is not None else features)
        if self.hidden is not None:
            representation = torch.relu(self.hidden(representation))
        return representation if output is None else F.linear(representation, *output)


def run_head(head: FeatureHead, params: Params, features: torch.Tensor, with_output: bool = True) -> torch.Tensor:
    """``head`` with the ``head.``-prefixed entries of ``params`` (others: its own); logits or representation."""
    weights = strip_prefix(params, HEAD_PREFIX)
    output = (params["output.weight"], params["output.bias"]) if with_output else None
    return functional_call(head, weights, (features, output))


def zero_output_layer(n_way: int, width: int, like: torch.Tensor) -> Params:
    """W = 0 (N, D), b = 0 (N): every class starts alike, so an episode's label order cannot matter.

    For a linear output this equals any init whose rows are one shared vector (softmax ignores
    a shift common to all rows), i.e. the shared-row MAML of Ye & Chao (ICLR 2022).
    """
    return {"output.weight": like.new_zeros(n_way, width), "output.bias": like.new_zeros(n_way)}


def prototype_output_layer(
    representation: torch.Tensor, labels: torch.Tensor, n_way: int, scale: float = 1.0
) -> Params:
    """Proto-MAML (Triantafillou et al. 2020, arXiv:1903.03096): W_k = 2 s c_k, b_k = −s ‖c_k‖².

    c_k is the mean support representation (S, D) of class k, so before any inner step the head
    is a prototypical network with logits −s ‖x − c_k‖² (+ a term shared by all classes); the
    init is differentiable in the meta-parameters and ignores the order of the labels. ``scale``
    s only sets how confident that start is (and so how much room the inner loop has).
    """
    members = one_hot(labels, n_way, representation.dtype)  # (S, N)
    prototypes = (members.T @ representation) / members.sum(0).clamp(min=1.0)[:, None]  # (N, D)
    return {"output.weight": 2 * scale * prototypes, "output.bias": -scale * prototypes.pow(2).sum(-1)}


def inner_loop_variables(params: Params, names: Sequence[str]) -> Params:
    """The entries ``names`` as independent variables of the inner loop, ready for ``autograd.grad``.

    Proto-MAML's output layer is computed from θ; without a fresh node per entry,
    ``autograd.grad`` w.r.t. θ would also count θ's effect through that init at step 1.
    ``view_as`` gives each entry its own node (the outer gradient still reaches θ both ways);
    entries that need no grad upstream (e.g. test-time copies) are made to require it.
    """
    return {
        name: (value.view_as(value) if value.requires_grad else value.requires_grad_()) if name in names else value
        for name, value in params.items()
    }


# ----- running an encoder on a parameter dict ----------------------------------------------


def strip_prefix(params: Params, prefix: str) -> Params:
    """The ``prefix``-ed entries of ``params``, with the prefix removed."""
    return {name[len(prefix) :]: value for name, value in params.items() if name.startswith(prefix)}


def encoder_parameters(params: Params) -> Params:
    """The ``encoder.``-prefixed entries of ``params``, with the prefix removed."""
    return strip_prefix(params, ENCODER_PREFIX)


def functional_embed(encoder: Encoder, params: Params, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Sentence embeddings (B, H) of a tokenised batch, with some encoder weights replaced.

    Pools exactly like ``Encoder.embed``; weights absent from ``params`` are the encoder's own.
    """
    output = functional_call(encoder, encoder_parameters(params), (batch["input_ids"], batch["attention_mask"]))
    pooled = mean_pool(output.last_hidden_state, output.attention_mask)
    return F.normalize(pooled, dim=-1) if encoder.normalize else pooled
