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
    threads = torch.get_num_threads()
    return f"CPU ({threads} thread{'s' if threads != 1 else ''})"


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The mixed-precision dtype to autocast to, or None for plain fp32.

    ``auto`` uses bf16 on CUDA GPUs that support it (Ampere and newer): it halves memory
    traffic and runs on tensor cores, with fp32's exponent range so no loss scaling is needed.
    On CPU, ``auto`` stays fp32 (bf16 is rarely faster there).
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def precision_context(device: torch.device, precision: str = "auto"):
    """``torch.autocast`` for the chosen precision, or a no-op context for fp32."""
    import contextlib

    dtype = autocast_dtype(device, precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
