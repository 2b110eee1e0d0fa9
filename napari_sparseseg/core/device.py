"""Device selection and CPU thread policy."""

from __future__ import annotations

import os

import torch


def select_device(name: str = "auto") -> torch.device:
    """Resolve ``auto``/``cpu``/``cuda``/``mps`` to an available ``torch.device``.

    Raises
    ------
    ValueError
        If an explicitly requested accelerator is not available.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA GPU "
                         f"(torch {torch.__version__}; install a CUDA build, see README)")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' requested but it is not available")
    if name not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or mps")
    return torch.device(name)


def set_cpu_threads(leave_free: int = 0) -> int:
    """Use all cores but ``leave_free`` (one core keeps a GUI responsive)."""
    n = max(1, (os.cpu_count() or 1) - leave_free)
    torch.set_num_threads(n)
    return n
