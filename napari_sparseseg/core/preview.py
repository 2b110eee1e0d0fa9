"""A first look at the whole volume: the first responder's answer on every other voxel in plane, widened.

The view is answered within a second or two of the labels; the rest of a large volume takes a pass over every row
of the filter bank (about 3 s for 3.6 Mvoxel on two cores, 25 s for 25 Mvoxel). Where that pass would take long,
the same forest answers first on every ``step``-th voxel along y and x (``1 / step**2`` of the rows), each answer
standing for the ``step x step`` voxels from it, and the exact pass replaces it moments later: the user sees the
whole volume sooner. What is stored and scored is always the exact pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .first_responder import FirstResponder

__all__ = ["PREVIEW_AFTER_SECONDS", "PREVIEW_STEP", "preview_due", "strided_answer"]

#: A preview comes first when the exact whole-volume pass is expected to take longer than this.
PREVIEW_AFTER_SECONDS = 2.0
#: Voxels along y and x that one answer of the preview stands for.
PREVIEW_STEP = 2
#: Rows the preview predicts at a time (bounds the memory of the coordinates and rows gathered).
_ROWS = 1 << 20


def preview_due(view_seconds: float, view_voxels: int, shape: Sequence[int]) -> bool:
    """Whether the whole volume of ``shape`` is expected to take over :data:`PREVIEW_AFTER_SECONDS`, at the rate the
    box in view (``view_voxels`` voxels in ``view_seconds``) was answered."""
    if view_voxels <= 0 or view_seconds <= 0:
        return False
    return view_seconds * float(np.prod(shape)) / view_voxels > PREVIEW_AFTER_SECONDS


def strided_answer(responder: FirstResponder, shape: Sequence[int], step: int = PREVIEW_STEP) -> np.ndarray:
    """float32 ``(K + 1, z, y, x)`` probabilities of the whole volume of ``shape``: the forest shown at every
    ``step``-th voxel along y and x (every z), each answer repeated over the ``step x step`` voxels it starts."""
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    nz, ny, nx = (int(n) for n in shape)
    ys, xs = np.arange(0, ny, step), np.arange(0, nx, step)
    per_slice = len(ys) * len(xs)
    yy, xx = (a.ravel() for a in np.meshgrid(ys, xs, indexing="ij"))
    coarse = None
    slab = max(1, _ROWS // per_slice)
    for z0 in range(0, nz, slab):
        zs = np.arange(z0, min(nz, z0 + slab))
        coords = np.stack([np.repeat(zs, per_slice), np.tile(yy, len(zs)), np.tile(xx, len(zs))], axis=1)
        proba = responder.predict_at(coords)  # (n, K + 1)
        if coarse is None:
            coarse = np.empty((proba.shape[1], nz, len(ys), len(xs)), np.float32)
        coarse[:, zs] = proba.T.reshape(proba.shape[1], len(zs), len(ys), len(xs))
    widened = np.repeat(np.repeat(coarse, step, axis=2), step, axis=3)[:, :, :ny, :nx]
    return np.ascontiguousarray(widened)
