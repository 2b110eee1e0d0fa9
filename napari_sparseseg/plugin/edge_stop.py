"""A correction stroke stops at the edges of the predicted region it started on.

With a brush a few voxels wide, a correction near a thin structure easily paints over it: erasing a false
positive beside a vessel erases the vessel on that slice too. Here a correction changes only the voxels of
*one* predicted class, connected (through faces, within the stroke) to where the stroke began:

* the class under the brush where the stroke began, when the stroke changes it (erasing a false positive
  from inside it, painting a class over a wrong one);
* otherwise (the stroke began on the class it paints: erasing from the background, pushing a class
  outwards) the class the stroke first paints over, the most common one in the first dab that changed
  anything.

Everything else the brush covered keeps its predicted class. Pure numpy/scipy, in layer values.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .paint_atoms import PaintedVoxels


def start_region(stroke: PaintedVoxels, start: tuple[tuple[int, int, int], int] | None) -> np.ndarray:
    """Which voxels of a correction stroke to keep (one bool per voxel of ``stroke``).

    Parameters
    ----------
    stroke : PaintedVoxels
        The stroke, with the prediction's values before it (``old``).
    start : ((z, y, x), int) or None
        The voxel under the brush where the stroke began and the prediction's value there before it; ``None``
        when unknown (a stroke written from code), which keeps every voxel.

    Returns
    -------
    np.ndarray of bool, shape ``(stroke.size,)``
    """
    keep = np.ones(stroke.size, dtype=bool)
    if start is None or stroke.old is None or stroke.size == 0:
        return keep
    (voxel, start_class) = start
    changed_start = np.flatnonzero(
        (stroke.coords[0] == voxel[0]) & (stroke.coords[1] == voxel[1]) & (stroke.coords[2] == voxel[2]))
    if changed_start.size:
        region_class = int(start_class)
        seeds = changed_start
    else:
        first = stroke.order == stroke.order.min()
        classes, counts = np.unique(stroke.old[first], return_counts=True)
        region_class = int(classes[np.argmax(counts)])
        seeds = np.flatnonzero(first & (stroke.old == region_class))
    same = stroke.old == region_class
    lo = np.array([c.min() for c in stroke.coords])
    local = tuple(c - o for c, o in zip(stroke.coords, lo))
    box = tuple(int(c.max()) + 1 for c in local)
    grid = np.zeros(box, dtype=bool)
    grid[tuple(c[same] for c in local)] = True
    components, _ = ndimage.label(grid)
    component = components[local]
    wanted = np.unique(component[seeds])
    return same & np.isin(component, wanted[wanted > 0])
