"""Non-deep-learning baselines a trained network has to beat.

Both take annotation-encoded labels (0 unlabeled, 1 background, k+1 class k)
and return a dense class map in mask encoding (0 background, 1..K classes),
axes (z, y, x).
"""

from __future__ import annotations

from napari_sparseseg.baselines.interpolation import interpolate_slices
from napari_sparseseg.baselines.random_forest import random_forest_segment

__all__ = ["interpolate_slices", "random_forest_segment"]
