"""A large volume's first look: the first responder's pass over it in two parts, the coarse one shown first.

The view is answered within a second or two of the labels; the rest of a large volume takes a pass over every row
of the filter bank (3.4 s for 3.6 Mvoxel on two cores, about 25 s for 25 Mvoxel). Where that pass would take long,
it runs in two parts: first every ``step``-th voxel along y and x (``1 / step**2`` of the rows), each answer shown
for the ``step x step`` voxels it starts; then the other voxels, which complete the exact answer. Nothing is
predicted twice; the exact answer comes later by the copies of the strided rows (about a fifth of the pass).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .first_responder import FirstResponder

__all__ = ["COARSE_AFTER_SECONDS", "COARSE_STEP", "coarse_then_exact", "coarse_due"]

#: The coarse part comes first when the exact pass over the volume is expected to take longer than this.
COARSE_AFTER_SECONDS = 2.0
#: Voxels along y and x that one answer of the coarse part stands for.
COARSE_STEP = 2
#: Rows predicted at a time (bounds the memory of the strided rows copied).
_ROWS = 1 << 20


def coarse_due(view: tuple[float, int] | None, shape: Sequence[int], last_seconds: float | None = None) -> bool:
    """Whether a pass over the whole volume of ``shape`` is expected to take over :data:`COARSE_AFTER_SECONDS`: as
    long as the last one over it took (``last_seconds``), else at the rate the box in view was answered (``view``,
    ``(seconds, voxels)``; an overestimate where the view is small and the call's fixed cost weighs)."""
    if last_seconds is not None:
        return last_seconds > COARSE_AFTER_SECONDS
    if view is None or view[0] <= 0 or view[1] <= 0:
        return False
    return view[0] * float(np.prod(shape)) / view[1] > COARSE_AFTER_SECONDS


def coarse_then_exact(responder: FirstResponder, shape: Sequence[int],
                      step: int = COARSE_STEP) -> Iterator[np.ndarray]:
    """Yield the forest shown's float32 ``(K + 1, z, y, x)`` probabilities of the whole volume twice: first its
    answers at every ``step``-th voxel along y and x (every z), each repeated over the ``step x step`` voxels it
    starts; then every voxel's own answer (what :meth:`~.first_responder.FirstResponder.predict` gives).

    The forests must read the full grid (``responder.binned`` False).
    """
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    nz, ny, nx = (int(n) for n in shape)
    slab = max(1, _ROWS // (-(-ny // step) * -(-nx // step)))  # z slices per part predicted at a time
    # (0, 0) first: the coarse part; none past a thin axis (a (y, x, 1) stack has no second column)
    offsets = [(oy, ox) for oy in range(min(step, ny)) for ox in range(min(step, nx))]
    exact: np.ndarray | None = None
    for oy, ox in offsets:
        for z0 in range(0, nz, slab):
            index = (slice(z0, min(nz, z0 + slab)), slice(oy, None, step), slice(ox, None, step))
            proba = responder.predict_strided(index)
            if exact is None:
                exact = np.empty((proba.shape[0], nz, ny, nx), np.float32)
            exact[(slice(None),) + index] = proba
        if (oy, ox) == (0, 0):
            coarse = exact[:, :, ::step, ::step]
            yield np.ascontiguousarray(np.repeat(np.repeat(coarse, step, axis=2), step, axis=3)[:, :, :ny, :nx])
    yield exact
