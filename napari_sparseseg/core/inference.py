"""Sliding-window inference with Gaussian blending (nnU-Net style).

Windows overlap by a configurable fraction; each window's softmax is weighted
by a Gaussian importance map (kept >= a small epsilon so every voxel is
covered) and the weighted sum is divided by the summed weights. A box can be
predicted on its own (the region in view first) with half a window of context.

Arrays: features ``(C, Z, Y, X)``; probabilities ``(K + 1, z, y, x)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext

import numpy as np
import torch
from torch import nn

from .annotation import Box
from .config import InferenceConfig
from .volume import mirror_index


def window_starts(size: int, window: int, step: int) -> list[int]:
    """Start offsets of windows covering ``[0, size)``; ``size <= window`` gives ``[0]``."""
    if size <= window:
        return [0]
    n = math.ceil((size - window) / step) + 1
    return sorted({round(v) for v in np.linspace(0, size - window, n)})


def gaussian_importance(window: Sequence[int], sigma_scale: float = 0.125) -> np.ndarray:
    """Gaussian weight map of shape ``window``, max 1, min clamped to 1e-3 (never zero)."""
    axes = []
    for n in window:
        x = np.arange(n, dtype=np.float64) - (n - 1) / 2
        sigma = max(n * sigma_scale, 1e-3)
        axes.append(np.exp(-0.5 * (x / sigma) ** 2))
    g = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    g /= g.max()
    return np.maximum(g, 1e-3).astype(np.float32)


def entropy(probabilities: np.ndarray) -> np.ndarray:
    """Entropy of ``(K + 1, ...)`` class probabilities, normalised to ``[0, 1]``."""
    p = np.clip(probabilities, 1e-8, 1.0)
    h = -(p * np.log(p)).sum(0)
    return (h / math.log(probabilities.shape[0])).astype(np.float32)


def _forward(model: nn.Module, batch: torch.Tensor, mirror_axes: Sequence[int], amp: bool) -> torch.Tensor:
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if amp and batch.device.type == "cuda" else nullcontext()
    with ctx:
        probs = torch.softmax(model(batch).float(), dim=1)
        for axis in mirror_axes:
            dims = [axis + 2]
            probs += torch.softmax(model(batch.flip(dims)).float(), dim=1).flip(dims)
    return probs / (1 + len(mirror_axes))


@torch.inference_mode()
def predict_probabilities(model: nn.Module, features: np.ndarray, window: Sequence[int], *,
                          config: InferenceConfig = InferenceConfig(), box: Box | None = None,
                          device: torch.device | str = "cpu", amp: bool = True) -> np.ndarray:
    """Class probabilities of ``box`` (default: the whole volume).

    Parameters
    ----------
    model : nn.Module
        Maps ``(B, C, *window)`` to logits ``(B, K + 1, *window)``.
    features : np.ndarray
        float32 ``(C, Z, Y, X)`` normalised image.
    window : sequence of int
        Window shape ``(z, y, x)``, valid input size for ``model``.
    config : InferenceConfig
        Overlap, Gaussian sigma, batch size, mirroring.
    box : Box, optional
        Region to return; windows cover it plus half a window of context.
    device : torch.device or str
        Where the model runs.
    amp : bool
        bf16 autocast on CUDA.

    Returns
    -------
    np.ndarray
        float32 ``(K + 1, *box.shape)``.
    """
    shape = features.shape[1:]
    box = Box.full(shape) if box is None else box.clip(shape)
    if box.empty:
        raise ValueError(f"empty prediction box {box}")
    window = tuple(int(w) for w in window)
    region = box.expand([w // 2 for w in window], shape)
    sub = features[(slice(None),) + region.slices]
    pad = [max(w - s, 0) for w, s in zip(window, sub.shape[1:])]
    if any(pad):
        # Mirror past the edge exactly as training patches do.
        grid = np.ix_(*[mirror_index(np.arange(s + p), s) for s, p in zip(sub.shape[1:], pad)])
        sub = sub[(slice(None),) + grid]
    device = torch.device(device)
    x = torch.from_numpy(np.ascontiguousarray(sub)).to(device)
    steps = [max(1, int(w * (1 - config.overlap))) for w in window]
    starts = [window_starts(s, w, st) for s, w, st in zip(sub.shape[1:], window, steps)]
    corners = [(a, b, c) for a in starts[0] for b in starts[1] for c in starts[2]]
    importance = torch.from_numpy(gaussian_importance(window, config.sigma_scale)).to(device)
    acc: torch.Tensor | None = None
    norm = torch.zeros(sub.shape[1:], device=device)
    for i in range(0, len(corners), config.batch_size):
        chunk = corners[i : i + config.batch_size]
        batch = torch.stack([x[:, a : a + window[0], b : b + window[1], c : c + window[2]] for a, b, c in chunk])
        probs = _forward(model, batch, config.mirror_axes, amp)
        if not torch.isfinite(probs).all():
            raise FloatingPointError("the model produced NaN/inf probabilities; training diverged")
        if acc is None:
            acc = torch.zeros((probs.shape[1],) + tuple(sub.shape[1:]), device=device)
        for (a, b, c), p in zip(chunk, probs):
            sl = (slice(a, a + window[0]), slice(b, b + window[1]), slice(c, c + window[2]))
            acc[(slice(None),) + sl] += p * importance
            norm[sl] += importance
    assert acc is not None
    acc /= norm
    inner = tuple(slice(b0 - r0, b1 - r0) for b0, b1, r0 in zip(box.start, box.stop, region.start))
    return acc[(slice(None),) + inner].cpu().numpy()
