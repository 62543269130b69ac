"""Learning-rate schedules shared by pretraining and fine-tuning: linear warm-up, then constant or linear decay.

Warm-up (Devlin et al. 2019; Howard & Ruder 2018, arXiv:1801.06146) keeps Adam's first, badly
estimated updates small, which matters most when a freshly initialised head sits on a pretrained body.
"""

from __future__ import annotations

import torch

SCHEDULES = ("constant", "linear")


def learning_rate_factor(step: int, warmup_steps: int, total_steps: int = 0, schedule: str = "constant") -> float:
    """Multiplier of the base learning rate for 0-based optimiser ``step``.

    Warm-up: (step + 1) / warmup_steps for the first ``warmup_steps`` steps, so the very first update
    is already non-zero. Then 1 ("constant"), or a straight line from 1 down to 0 at ``total_steps``
    ("linear"; with total_steps 0 it stays constant).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "linear" and total_steps > warmup_steps:
        return max(0.0, (total_steps - step) / (total_steps - warmup_steps))
    return 1.0


def warmup_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int = 0, schedule: str = "constant"
) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler that scales every parameter group's own learning rate by ``learning_rate_factor``.

    Scaling each group's own rate keeps per-group ratios (layer-wise decay) intact.
    """
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(step, warmup_steps, total_steps, schedule)
    )
