"""The machine line of every report: CPU, cores, device, versions and the load at the time."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from metanlp.device import describe_device


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def load_average() -> float:
    """The 1-minute load average now (NaN where the system does not say)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def machine_description(device: torch.device | str | None = "cpu", load: bool = True) -> str:
    """One line for a report: CPU and cores, the device (torch threads on a CPU), versions, load now.

    The machine is often shared, so the load average says how far wall times are upper bounds.
    ``device=None`` leaves the device out (a report written later from stored runs, whose rows name theirs).
    """
    parts = [cpu_model(), f"{cpu_cores()} cores", *([describe_device(device)] if device is not None else []),
             f"{platform.system()} {platform.release()}", f"Python {platform.python_version()}",
             f"torch {torch.__version__}"]
    if load:
        parts.append(f"load average {load_average():.1f}")
    return ", ".join(parts)
