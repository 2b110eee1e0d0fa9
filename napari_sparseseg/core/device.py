"""Device selection, the memory a device has free, and CPU thread policy."""

from __future__ import annotations

import contextlib
import os
import time

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


def free_memory(device: torch.device) -> tuple[int, str] | None:
    """The memory a training step on ``device`` may plan with now.

    A model file's settings may ask for any batch: training on the CPU plans with what the machine has available,
    as on a GPU, so that a request for more is shrunk with a word (:func:`~.memory.fit_to_free_memory`) and not met
    by the kernel's out-of-memory killer ending napari.

    Parameters
    ----------
    device : torch.device
        Where the step runs.

    Returns
    -------
    tuple of (int, str) or None
        ``(bytes, where)``: the GPU's free memory and its name, or the machine's available memory and
        ``"this machine"``; None where it is not known (MPS, a POSIX without the counter).
    """
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0]), str(device)
    if device.type != "cpu":
        return None
    from .footprint import available_memory

    available = available_memory()
    return None if available is None else (available, "this machine")


def fast_bf16(device: torch.device | str) -> bool:
    """Whether bf16 autocast speeds up training and inference on ``device``.

    True on CUDA, and on CPUs with AMX tile units (Intel Sapphire Rapids and
    later), where oneDNN runs bf16 convolutions on the matrix engine: the
    default 16-channel net trained about 2x faster per step on the 2-core CI
    machine (``benchmarks/speed.py --device cpu``). False on other CPUs, where
    bf16 is emulated and slower than float32, and on MPS.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return True
    if device.type == "cpu":
        probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
        try:
            return bool(probe()) if probe is not None else False
        except Exception:  # a private probe: never let it break device selection
            return False
    return False


def autocast(device: torch.device | str, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` when ``enabled`` and :func:`fast_bf16`, else a no-op context."""
    device = torch.device(device)
    if enabled and fast_bf16(device):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def set_cpu_threads(leave_free: int = 0) -> int:
    """Use all cores but ``leave_free`` (one core keeps a GUI responsive)."""
    n = max(1, (os.cpu_count() or 1) - leave_free)
    torch.set_num_threads(n)
    return n


def warm_up(device: torch.device | str = "auto", *, quiet: bool = False) -> float:
    """Pay the one-time costs of a process's first training step before a session needs it.

    The first optimiser of a process imports ``torch._dynamo`` (1.9 s on the
    2-core CI machine), and on CUDA the first kernels pay for the context,
    cuDNN and cuBLAS. The widget calls this in a background thread when it
    opens, so that time passes while the user paints rather than after the
    first strokes (``benchmarks/speed.py --first-view-only --warm-up``).

    Parameters
    ----------
    device : torch.device or str
        The device sessions will use (``auto`` resolves as :func:`select_device`).
    quiet : bool
        Swallow errors (e.g. an unavailable device): for a background thread,
        where the session itself reports them later.

    Returns
    -------
    float
        Seconds spent.
    """
    t0 = time.perf_counter()
    try:
        device = select_device(device) if isinstance(device, str) else torch.device(device)
        conv = torch.nn.Conv3d(1, 8, 3, padding=1).to(device)
        norm = torch.nn.InstanceNorm3d(8, affine=True).to(device)
        optimizer = torch.optim.AdamW([*conv.parameters(), *norm.parameters()], lr=1e-3)
        x = torch.randn(1, 1, 8, 16, 16, device=device)
        with autocast(device):
            y = norm(conv(x))
        target = torch.zeros((1, 8, 16, 16), dtype=torch.long, device=device)
        torch.nn.functional.cross_entropy(y.float(), target).backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    except Exception:
        if not quiet:
            raise
    return time.perf_counter() - t0
