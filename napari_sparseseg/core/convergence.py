"""Has the prediction settled? The surface drift between two class maps, and the region it is probed on.

A budgeted run may end on a clean tail, training without augmentation
(:class:`~.clean_tail.CleanTail`). It must not begin while the augmented steps are
still moving the prediction, or the net fits the few labeled slices before it
has found a shape that generalises. The measure needs no ground truth: two
class maps of the same region, predicted some steps apart with the EMA
weights, and the number of voxels whose class changed, counted in layers of
the current segmentation's surface. A prediction that only flickers at its
boundary drifts by a fraction of a voxel layer; one still growing into
unlabeled slices drifts by a layer or more.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from .box import Box


def surface_voxels(labels: np.ndarray) -> int:
    """Foreground voxels with a face neighbour of another class (a class map, axes z, y, x).

    The region's own border counts as foreground, so cropping a map does not
    add surface.
    """
    count = 0
    for value in np.unique(labels):
        if value == 0:
            continue
        mask = labels == value
        count += int(np.count_nonzero(mask & ~ndi.binary_erosion(mask, border_value=1)))
    return count


def surface_drift(previous: np.ndarray, current: np.ndarray) -> float:
    """Voxels whose class changed, in layers of the current surface: ``changed / max(surface, 1)``.

    Parameters
    ----------
    previous, current : np.ndarray
        Integer class maps (z, y, x) of the same region (0 = background).

    Returns
    -------
    float
        0 for identical maps; about ``d`` where the whole surface moved by
        ``d`` voxels; the changed voxel count where nothing is foreground now.
    """
    if previous.shape != current.shape:
        raise ValueError(f"class maps of different shapes: {previous.shape} and {current.shape}")
    changed = int(np.count_nonzero(previous != current))
    return changed / max(surface_voxels(current), 1)


def probe_box(shape: Sequence[int], patch: Sequence[int], centre: Sequence[float], windows: int = 1) -> Box:
    """The region whose drift is watched: up to ``windows`` patches along each axis, around ``centre``.

    Along an axis shorter than that the whole axis is probed; otherwise the
    box is centred on ``centre`` (e.g. the middle of the labeled voxels) and
    shifted to lie inside the volume.
    """
    start, stop = [], []
    for n, p, c in zip(shape, patch, centre):
        size = min(int(n), int(p) * windows)
        lo = int(np.clip(round(c - size / 2), 0, n - size))
        start.append(lo)
        stop.append(lo + size)
    return Box(tuple(start), tuple(stop))
