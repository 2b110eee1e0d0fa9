"""Geometry of the synthetic cells, in physical space.

Random rotations, ellipsoids rasterised over their voxel bounding box,
smooth random fields (boundary wobble and texture) and the placement of
object centres with minimum distances. Voxel ``i`` sits at physical position
``i * spacing``; all arrays are indexed ``(z, y, x)``.

Notes
-----
Every function that draws random numbers takes the generator as its first
argument and consumes it in a fixed order, so that a volume is a pure
function of its seed.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["ellipsoid_q", "place_centers", "random_rotation", "smooth_field"]


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniform random 3x3 rotation matrix (QR of a Gaussian matrix)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def ellipsoid_q(
    center: np.ndarray,
    axes: np.ndarray,
    rot: np.ndarray,
    spacing: np.ndarray,
    shape: tuple[int, int, int],
) -> tuple[tuple[slice, slice, slice], np.ndarray] | None:
    """Normalised quadratic form of an ellipsoid over its voxel bounding box.

    Returns the bounding-box slices and ``q`` (``q < 1`` inside the ellipsoid),
    or ``None`` when the box misses the volume. Voxel ``i`` sits at physical
    position ``i * spacing``.
    """
    reach = float(axes.max()) * 1.3  # room for the boundary wobble
    lo = np.maximum(np.floor((center - reach) / spacing).astype(int), 0)
    hi = np.minimum(np.ceil((center + reach) / spacing).astype(int) + 1, shape)
    if np.any(hi <= lo):
        return None
    grids = [np.arange(lo[a], hi[a]) * spacing[a] - center[a] for a in range(3)]
    dz, dy, dx = np.meshgrid(*grids, indexing="ij", sparse=True)
    # coordinates in the ellipsoid's own frame: u_k = sum_a rot[a, k] * d_a
    q = np.zeros((hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]), dtype=np.float32)
    for k in range(3):
        u = rot[0, k] * dz + rot[1, k] * dy + rot[2, k] * dx
        q += (u / axes[k]) ** 2
    box = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
    return box, q


def smooth_field(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    sigma_vox: np.ndarray,
) -> np.ndarray:
    """Zero-mean, unit-std Gaussian random field smoothed by ``sigma_vox``."""
    f = ndi.gaussian_filter(
        rng.standard_normal(shape, dtype=np.float32), sigma_vox, mode="wrap"
    )
    std = float(f.std())
    return f / std if std > 0 else f


def place_centers(
    rng: np.random.Generator, n: int, extent: np.ndarray, min_dist: np.ndarray
) -> np.ndarray:
    """Random sequential placement with pairwise minimum distances.

    ``min_dist[i]`` is a per-object radius; objects i, j keep
    ``min_dist[i] + min_dist[j]`` apart where space allows. When an object
    cannot be placed after many tries, the constraint is relaxed for it.
    """
    centers = np.empty((n, 3))
    for i in range(n):
        relax = 1.0
        for attempt in range(400):
            c = rng.uniform(0.0, 1.0, size=3) * extent
            if i == 0:
                break
            d = np.linalg.norm(centers[:i] - c, axis=1)
            if np.all(d >= relax * (min_dist[:i] + min_dist[i])):
                break
            if attempt % 50 == 49:
                relax *= 0.85
        centers[i] = c
    return centers
