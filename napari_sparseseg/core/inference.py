"""Sliding-window inference with Gaussian blending (nnU-Net style).

Windows overlap by a configurable fraction; each window's softmax is weighted
by a Gaussian importance map (kept >= a small epsilon so every voxel is
covered) and the weighted sum is divided by the summed weights.

Window positions come from ONE grid over the whole volume
(:func:`grid_starts`). A box (the region in view, a block of a huge volume)
is predicted with every window of that grid that meets it, reading only the
union of those windows (:class:`WindowPlan`), so predicting any box gives the
same voxels as the whole-volume prediction, whatever the block grid (up to
float rounding from batch composition).

Arrays: features ``(C, Z, Y, X)``; probabilities ``(K + 1, z, y, x)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .box import Box, plane_blocks
from .config import InferenceConfig
from .device import autocast
from .volume import read_mirrored

Triple = tuple[int, int, int]


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


def top_class(probabilities: np.ndarray) -> np.ndarray:
    """uint8 index ``(z, y, x)`` of the largest of ``(K + 1, z, y, x)`` class probabilities (first on ties),
    computed in blocks of planes (:func:`plane_blocks`)."""
    out = np.empty(probabilities.shape[1:], np.uint8)
    for block in plane_blocks(out.shape):
        out[block] = probabilities[:, block].argmax(0)
    return out


def entropy(probabilities: np.ndarray | torch.Tensor) -> np.ndarray:
    """Entropy of ``(K + 1, ...)`` class probabilities, normalised to ``[0, 1]``; float32 ``(...)``.

    Host probabilities of a volume ``(K + 1, z, y, x)`` are taken in blocks of planes (:func:`plane_blocks`);
    a GPU tensor at once, where it lives.
    """
    def whole(p: torch.Tensor) -> torch.Tensor:
        p = p.clamp(1e-8, 1.0)
        return -(p * p.log()).sum(0) / math.log(p.shape[0])

    p = torch.as_tensor(probabilities)
    if p.device.type != "cpu" or p.ndim != 4:
        return whole(p).float().cpu().numpy()
    out = np.empty(tuple(p.shape[1:]), np.float32)
    for block in plane_blocks(out.shape):
        out[block] = whole(p[:, block]).float().numpy()
    return out


#: Decision offset of a class nobody labeled: its probability ``e**-30`` of the others' (finite, as a model file's
#: values must be), so that a class the net never learned is never predicted.
NEVER_LABELED = -30.0


def prior_offset(class_weight: np.ndarray, tau: float) -> np.ndarray:
    """Decision offset ``-tau * log w_c`` added to the logits of class ``c`` (0 where ``w_c`` is 0: unlabeled).

    ``class_weight`` ``(K + 1,)``: the class-balance weights training gave each class; ``tau`` in [0, 1] undoes
    that tilt of the posterior partly (the prior correction, ``InferenceConfig.prior_correction``).
    """
    w = np.asarray(class_weight, np.float64)
    return np.where(w > 0, -tau * np.log(np.where(w > 0, w, 1.0)), 0.0)


def class_map(scores: torch.Tensor, dim: int) -> torch.Tensor:
    """Index of the largest score along ``dim`` (the class axis), int64, first index on ties.

    ``torch.argmax`` along a strided class axis runs a slow generic kernel on
    the CPU (48 ms for a ``(1, 2, 36, 80, 80)`` tensor on 2 cores, torch
    2.13); ``max(dim).indices`` gives the same answer in 1 ms.
    """
    return scores.max(dim).indices


def class_map_and_uncertainty(probabilities: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities, class map and normalised entropy on the host, computed where the tensor lives.

    Parameters
    ----------
    probabilities : torch.Tensor
        float32 ``(K + 1, z, y, x)``, e.g. from :func:`predict_probabilities` with ``as_tensor=True``;
        on the GPU the argmax and entropy run there and only their results cross to the host.

    Returns
    -------
    tuple of np.ndarray
        float32 ``(K + 1, z, y, x)`` probabilities, uint8 ``(z, y, x)`` class map and float32 ``(z, y, x)``
        entropy in ``[0, 1]``.
    """
    if probabilities.device.type == "cpu":
        probs = probabilities.numpy()
        return probs, top_class(probs), entropy(probs)
    labels = class_map(probabilities, 0).to(torch.uint8).cpu().numpy()
    return probabilities.cpu().numpy(), labels, entropy(probabilities)


def _forward(model: nn.Module, batch: torch.Tensor, mirror_axes: Sequence[int], amp: bool) -> torch.Tensor:
    """Softmax ``(B, K + 1, *window)`` of ``batch``, mirrored and averaged; the model's ``decision_offset``
    (if it has one) is added to the logits."""
    offset = getattr(model, "decision_offset", None)
    offset = None if offset is None else offset.float().view(1, -1, 1, 1, 1)

    def softmax(logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        return torch.softmax(logits if offset is None else logits + offset, dim=1)

    with autocast(batch.device, amp):
        probs = softmax(model(batch))
        for axis in mirror_axes:
            dims = [axis + 2]
            probs += softmax(model(batch.flip(dims))).flip(dims)
    return probs / (1 + len(mirror_axes))


def edge_padding(window: Sequence[int], edge_margin: float | Sequence[float]) -> tuple[int, ...]:
    """Voxels the window grid reaches past each volume edge: ``round(edge_margin * window)`` per axis.

    ``edge_margin`` is one fraction for every axis or one per axis.
    """
    margins = [float(edge_margin)] * len(window) if np.isscalar(edge_margin) else list(edge_margin)  # type: ignore[arg-type]
    if len(margins) != len(window):
        raise ValueError(f"edge_margin {edge_margin} does not match a {len(window)}-axis window")
    return tuple(int(round(m * int(w))) for m, w in zip(margins, window))


def axis_starts(size: int, window: int, step: int, pad: int) -> list[int]:
    """Window starts along one axis covering ``[-pad, size + pad)`` (negative starts read mirrored content).

    When that span fits in one window, the single window is centred on the axis.
    """
    span = size + 2 * pad
    if span <= window:
        return [-((window - size) // 2)]
    return [v - pad for v in window_starts(span, window, step)]


def grid_starts(shape: Sequence[int], window: Sequence[int], overlap: float,
                edge_margin: float | Sequence[float] = 0.0) -> list[list[int]]:
    """Window start offsets per axis of the global grid over a volume of ``shape``.

    The grid reaches ``edge_margin`` x window (one fraction, or one per axis)
    past each edge of the volume (mirror-padded), so a voxel on the edge lies
    that deep inside its window, with context on both sides, rather than on
    the window's outermost row: with one annotated slice, edge slices
    predicted from a window's last rows came out as whole slices of false
    foreground (see ``InferenceConfig.edge_margin``). An axis shorter than
    its window holds one centred window.
    """
    steps = [max(1, int(w * (1 - overlap))) for w in window]
    pads = edge_padding(window, edge_margin)
    return [axis_starts(int(s), int(w), st, p) for s, w, st, p in zip(shape, window, steps, pads)]


@dataclass(frozen=True)
class WindowPlan:
    """The windows of the global grid that meet one box.

    Attributes
    ----------
    shape : (int, int, int)
        ``(Z, Y, X)`` of the whole volume.
    window : (int, int, int)
        Window shape.
    box : Box
        The box to predict, inside ``shape``.
    region : Box
        Union of the windows meeting ``box``: what must be read. It may reach
        past ``shape`` (read mirrored, see :func:`read_region`).
    starts : tuple of tuple of int
        Per axis, the starts of those windows relative to ``region.start``.
    """

    shape: Triple
    window: Triple
    box: Box
    region: Box
    starts: tuple[tuple[int, ...], ...]

    @property
    def corners(self) -> list[Triple]:
        """Window origins relative to ``region.start``, in the grid's (lexicographic) order."""
        a, b, c = self.starts
        return [(i, j, k) for i in a for j in b for k in c]

    @property
    def inner(self) -> tuple[slice, slice, slice]:
        """``box`` in the coordinates of ``region``."""
        return tuple(slice(b0 - r0, b1 - r0) for b0, b1, r0 in  # type: ignore[return-value]
                     zip(self.box.start, self.box.stop, self.region.start))


def plan_windows(shape: Sequence[int], window: Sequence[int], box: Box | None = None,
                 overlap: float = 0.5, edge_margin: float | Sequence[float] = 0.0) -> WindowPlan:
    """Windows of the global grid over ``shape`` meeting ``box`` (default: the whole volume).

    Raises
    ------
    ValueError
        If the box is empty after clipping to ``shape``.
    """
    shape = tuple(int(s) for s in shape)
    window = tuple(int(w) for w in window)
    box = Box.full(shape) if box is None else box.clip(shape)
    if box.empty:
        raise ValueError(f"empty prediction box {box} for a volume of shape {shape}")
    chosen = []
    for starts, w, b0, b1 in zip(grid_starts(shape, window, overlap, edge_margin), window, box.start, box.stop):
        chosen.append([a for a in starts if a < b1 and a + w > b0])
    region = Box(tuple(c[0] for c in chosen), tuple(c[-1] + w for c, w in zip(chosen, window)))  # type: ignore[arg-type]
    rel = tuple(tuple(a - c[0] for a in c) for c in chosen)
    return WindowPlan(shape, window, box, region, rel)  # type: ignore[arg-type]


def read_region(features: Any, region: Box, shape: Sequence[int]) -> np.ndarray:
    """``features[:, region]`` as a NumPy array, mirrored where ``region`` leaves the volume.

    Parameters
    ----------
    features : array-like
        ``(C, Z, Y, X)``; only basic slicing is used (NumPy, zarr, dask or a
        lazy feature view).
    region : Box
        May reach past ``shape`` (see :class:`WindowPlan`).
    shape : sequence of int
        ``(Z, Y, X)`` of the volume.
    """
    return read_mirrored(features, region.start, region.stop, shape, lead=1)


@torch.inference_mode()
def predict_planned(model: nn.Module, region_features: np.ndarray, plan: WindowPlan, *,
                    config: InferenceConfig = InferenceConfig(), device: torch.device | str = "cpu",
                    amp: bool = True, as_tensor: bool = False) -> np.ndarray | torch.Tensor:
    """Blend the windows of ``plan`` over features already read for ``plan.region``.

    Parameters
    ----------
    model : nn.Module
        Maps ``(B, C, *window)`` to logits ``(B, K + 1, *window)``.
    region_features : np.ndarray
        float32 ``(C, *plan.region.shape)``, e.g. from :func:`read_region`.
    plan : WindowPlan
        From :func:`plan_windows`.
    config, device, amp, as_tensor
        See :func:`predict_probabilities`.

    Returns
    -------
    np.ndarray or torch.Tensor
        float32 ``(K + 1, *plan.box.shape)``.
    """
    if tuple(region_features.shape[1:]) != plan.region.shape:
        raise ValueError(f"features of shape {region_features.shape[1:]} do not match the plan's region "
                         f"{plan.region.shape}")
    window = plan.window
    device = torch.device(device)
    x = torch.from_numpy(np.ascontiguousarray(region_features, dtype=np.float32)).to(device)
    corners = plan.corners
    importance = torch.from_numpy(gaussian_importance(window, config.sigma_scale)).to(device)
    acc: torch.Tensor | None = None
    norm = torch.zeros(plan.region.shape, device=device)
    finite = torch.ones((), dtype=torch.bool, device=device)  # checked once at the end: no host sync per batch
    for i in range(0, len(corners), config.batch_size):
        chunk = corners[i : i + config.batch_size]
        batch = torch.stack([x[:, a : a + window[0], b : b + window[1], c : c + window[2]] for a, b, c in chunk])
        probs = _forward(model, batch, config.mirror_axes, amp)
        finite &= torch.isfinite(probs).all()
        if acc is None:
            acc = torch.zeros((probs.shape[1],) + plan.region.shape, device=device)
        for (a, b, c), p in zip(chunk, probs):
            sl = (slice(a, a + window[0]), slice(b, b + window[1]), slice(c, c + window[2]))
            acc[(slice(None),) + sl] += p * importance
            norm[sl] += importance
    assert acc is not None
    if not bool(finite):
        raise FloatingPointError("the model produced NaN/inf probabilities; training diverged")
    inner = (slice(None),) + plan.inner
    probs = acc[inner] / norm[plan.inner]
    return probs if as_tensor else probs.cpu().numpy()


def predict_probabilities(model: nn.Module, features: Any, window: Sequence[int], *,
                          config: InferenceConfig = InferenceConfig(), box: Box | None = None,
                          device: torch.device | str = "cpu", amp: bool = True,
                          as_tensor: bool = False) -> np.ndarray | torch.Tensor:
    """Class probabilities of ``box`` (default: the whole volume).

    Parameters
    ----------
    model : nn.Module
        Maps ``(B, C, *window)`` to logits ``(B, K + 1, *window)``.
    features : array-like
        float32 ``(C, Z, Y, X)`` normalised image (NumPy or anything sliceable
        with ``.shape``; only the region the box needs is read).
    window : sequence of int
        Window shape ``(z, y, x)``, valid input size for ``model``.
    config : InferenceConfig
        Overlap, Gaussian sigma, batch size, mirroring.
    box : Box, optional
        Region to return. It is predicted with the windows of the
        whole-volume grid that meet it, so the result equals the same voxels
        of the whole-volume prediction.
    device : torch.device or str
        Where the model runs.
    amp : bool
        bf16 autocast where it is fast (CUDA, CPUs with AMX; see ``core.device.fast_bf16``).
    as_tensor : bool
        Return the torch tensor on ``device`` (e.g. for
        :func:`class_map_and_uncertainty`) instead of a host array.

    Returns
    -------
    np.ndarray or torch.Tensor
        float32 ``(K + 1, *box.shape)``.
    """
    shape = tuple(int(s) for s in features.shape[1:])
    plan = plan_windows(shape, window, box, config.overlap, config.edge_margin)
    sub = read_region(features, plan.region, shape)
    return predict_planned(model, sub, plan, config=config, device=device, amp=amp, as_tensor=as_tensor)
