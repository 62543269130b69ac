"""Device selection: CUDA, then Apple MPS, then CPU, unless the user names one."""

from __future__ import annotations

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(requested: str = "auto") -> torch.device:
    """Return the device to run on; ``auto`` prefers CUDA, then MPS, then CPU.

    Raises ``ValueError`` naming the problem when an explicit device is not available.
    """
    requested = (requested or "auto").strip().lower()
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = requested.split(":", 1)[0]
    if kind not in DEVICE_CHOICES:
        raise ValueError(f"unknown device {requested!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but no CUDA GPU is available on this machine")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' was requested but Apple MPS is not available on this machine")
    return torch.device(requested)


def describe_device(device: torch.device | str) -> str:
    """Human-readable name: 'CPU (2 threads)', or the GPU's model name."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"CUDA GPU: {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "Apple MPS GPU"
    return f"CPU ({torch.get_num_threads()} threads)"
