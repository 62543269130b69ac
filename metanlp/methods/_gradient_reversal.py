"""The gradient-reversal layer and its strength schedule (Ganin et al. 2016, arXiv:1505.07818).

Identity on the way forward, −λ · gradient on the way back: one backward pass trains a domain
classifier to tell domains apart while pushing the features below it to make them indistinguishable.
"""

from __future__ import annotations

import math

import torch


class GradientReversal(torch.autograd.Function):
    """R_λ(x) = x forward; dR_λ/dx = −λ·I backward."""

    @staticmethod
    def forward(ctx, features: torch.Tensor, strength: float) -> torch.Tensor:
        ctx.strength = strength
        return features.view_as(features)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.strength * grad_output, None


def reverse_gradient(features: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """Apply the gradient-reversal layer with λ = ``strength``."""
    return GradientReversal.apply(features, float(strength))


def dann_lambda(progress: float, gamma: float = 10.0) -> float:
    """Ganin et al.'s schedule λ_p = 2 / (1 + exp(−γ·p)) − 1, for training progress p in [0, 1].

    It starts at 0, so the domain classifier's early, noisy signal cannot wreck the features,
    and rises towards 1.
    """
    progress = min(max(progress, 0.0), 1.0)
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0
