"""Patch geometry and the sampler that centres patches on labeled voxels."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

from .annotation import AnnotatedVolume, Patch


def patch_shape(volume_shape: Sequence[int], spacing: Sequence[float], target_voxels: int,
                multiple: Sequence[int]) -> tuple[int, int, int]:
    """Patch shape covering a roughly isotropic physical field of view.

    Parameters
    ----------
    volume_shape : sequence of int
        ``(z, y, x)`` size of the volume.
    spacing : sequence of float
        Voxel size ``(z, y, x)``.
    target_voxels : int
        Voxel budget of one patch.
    multiple : sequence of int
        The net's size multiple per axis (patch sizes are rounded to it).

    Returns
    -------
    tuple of int
        A shape no larger than needed to cover the volume (rounded up to the
        multiple), with about ``target_voxels`` voxels when the volume is large.
    """
    spacing = np.asarray(spacing, float)
    shape = np.asarray(volume_shape, int)
    mult = np.asarray(multiple, int)
    cap = np.ceil(shape / mult).astype(int) * mult
    # Start isotropic in physical units, then grow the axes that are not capped.
    rel = spacing.min() / spacing
    size = rel * (target_voxels / rel.prod()) ** (1 / 3)
    for _ in range(4):
        size = np.minimum(size, cap)
        free = size < cap
        if not free.any() or np.prod(size) >= target_voxels:
            break
        size[free] *= (target_voxels / np.prod(size)) ** (1 / free.sum())
    out = np.maximum(np.floor(np.minimum(size, cap) / mult).astype(int) * mult, mult)
    return tuple(int(v) for v in out)  # type: ignore[return-value]


class PatchSampler:
    """Draws training patches from an :class:`AnnotatedVolume`.

    A patch is centred on (a) a labeled voxel of a randomly chosen labeled
    foreground class with probability ``foreground_share``, (b) anywhere in
    the volume with probability ``random_share``, (c) a labeled voxel that the
    net recently got wrong (:meth:`add_errors`) with probability
    ``error_share``, otherwise (d) any labeled voxel. Labeled coordinates
    are re-indexed only when the annotation revision changes.
    """

    #: Steps whose misclassified labeled voxels stay in the error pool (older ones are dropped).
    ERROR_POOL_STEPS = 32

    def __init__(self, volume: AnnotatedVolume, size: Sequence[int], *, foreground_share: float,
                 random_share: float, rng: np.random.Generator, centre_margin: float = 0.25,
                 error_share: float = 0.0) -> None:
        self.volume = volume
        self.size = tuple(int(s) for s in size)
        self.foreground_share = foreground_share
        self.random_share = random_share
        self.error_share = error_share
        #: ``(n, 3)`` int arrays of ``(z, y, x)`` labeled voxels misclassified in recent steps, one per step.
        self._errors: deque[np.ndarray] = deque(maxlen=self.ERROR_POOL_STEPS)
        self.rng = rng
        self.centre_range = (centre_margin, 1.0 - centre_margin)
        self._revision = -1
        self._coords: list[np.ndarray] = []
        self._all = np.empty((0, 3), int)

    def _refresh(self) -> None:
        if self._revision != self.volume.revision:
            self._revision = self.volume.revision
            self._errors.clear()  # the labels changed: the errors may be on voxels no longer labeled
            self._coords = self.volume.labeled_coordinates()
            self._all = np.concatenate(self._coords) if self._coords else np.empty((0, 3), int)

    def add_errors(self, coords: np.ndarray) -> None:
        """Record the labeled voxels ``(n, 3)`` (z, y, x) that one training step got wrong."""
        self._errors.append(np.asarray(coords, dtype=int).reshape(-1, 3))

    def center(self) -> np.ndarray:
        """One patch centre ``(z, y, x)``."""
        self._refresh()
        u = self.rng.random()
        fg = [c for c in self._coords[1:] if len(c)]
        shares = self.foreground_share + self.random_share
        if u < self.foreground_share and fg:
            pool = fg[self.rng.integers(len(fg))]
        elif u < shares or not len(self._all):
            return np.array([self.rng.integers(0, s) for s in self.volume.shape])
        elif u < shares + self.error_share and any(len(e) for e in self._errors):
            recent = [e for e in self._errors if len(e)]
            pool = recent[self.rng.integers(len(recent))]
        else:
            pool = self._all
        return pool[self.rng.integers(len(pool))]

    def sample(self, class_weight: np.ndarray, correction_weight: float) -> Patch:
        """Cut one patch holding a sampled centre at a random place inside it.

        The centre may sit anywhere along each axis but within
        ``centre_margin`` x size of the patch edges, and the patch may reach
        past the volume (mirrored image, zero weight). Keeping patches inside the volume would pin labeled slices
        of a small volume to the same rows of every patch, and the net would
        learn where the labels are (measured: whole unlabeled border slices
        predicted as foreground) instead of what they look like.
        """
        centre = self.center()
        size = np.asarray(self.size)
        lo, hi = self.centre_range
        offset = np.array([self.rng.integers(int(lo * s), max(int(hi * s), int(lo * s) + 1)) for s in size])
        start = centre - offset
        return self.volume.read_patch(tuple(int(s) for s in start), self.size, class_weight, correction_weight)
