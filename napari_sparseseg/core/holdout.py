"""Held-back labels: a fixed, spatially blocked share of the user's labels that no learner trains on.

Which prediction the user sees (the fast first responder's, the net's or
their blend, :mod:`.handover`) is decided by scoring each on labels that none
of them was fitted to. The split is a pure function of the voxel position: the
volume is cut into blocks of about ``block_um`` physical units (whole voxels,
at least one along each axis) and a hash of the block index holds a block back
with probability ``share``. Blocks, not single voxels, so that a held-back
voxel is not trivially predicted from its labeled neighbour (a pixel classifier
scores higher on voxels next to its training voxels in the same slice than on
unlabeled slices: blocks of 24 voxels keep most held-back voxels a dozen voxels
from the nearest training voxel); a fixed hash, so
that a voxel painted later falls on the same side of the split as its block,
every learner sees the same split, and nothing needs storing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Odd multipliers of the block hash (from spatial hashing; any large odd constants will do).
_PRIMES = (np.uint64(73856093), np.uint64(19349663), np.uint64(83492791))
_BUCKETS = 1 << 16
#: Largest share of one class's labels that may be held back (beyond it the class is released).
MAX_CLASS_SHARE = 0.5


class HoldOut:
    """The held-back side of the split, for any set of voxels.

    Parameters
    ----------
    spacing : sequence of float
        Voxel size ``(z, y, x)``.
    share : float
        Expected share of blocks held back, in ``[0, 0.5]``; 0 holds nothing back.
    block : int
        Block edge along the finest axis, in voxels; coarser axes get proportionally fewer voxels.
    seed : int
        Changes which blocks are held back.
    multiple_of : sequence of int
        Each block edge is rounded to a multiple of these ``(z, y, x)`` voxels: the bins of a first responder on a
        binned grid (:mod:`.binning`), so that no bin holds both held-back and training voxels (their features).
    """

    def __init__(self, spacing: Sequence[float], share: float = 0.125, block: int = 24, seed: int = 0,
                 multiple_of: Sequence[int] = (1, 1, 1)) -> None:
        if not 0 <= share <= 0.5:
            raise ValueError(f"held-back share must be in [0, 0.5], got {share}")
        if block < 1:
            raise ValueError(f"block must be >= 1 voxel, got {block}")
        sp = np.asarray(spacing, dtype=np.float64)
        self.share = float(share)
        #: Block edge per axis ``(z, y, x)`` in voxels.
        self.block = tuple(max(1, round(block * sp.min() / s / m)) * int(m) for s, m in zip(sp, multiple_of))
        self._threshold = np.uint64(round(share * _BUCKETS))
        self._salt = np.uint64((seed * 2654435761) & 0xFFFFFFFF)
        #: Classes (index ``0..K``) whose labels are not held back: those of which the blocks would hold back more
        #: than :data:`MAX_CLASS_SHARE` (a small volume or a small painted object), set by :meth:`split`.
        self.released: frozenset[int] = frozenset()

    def _held(self, bz: np.ndarray, by: np.ndarray, bx: np.ndarray) -> np.ndarray:
        h = (bz.astype(np.uint64) * _PRIMES[0]) ^ (by.astype(np.uint64) * _PRIMES[1]) ^ \
            (bx.astype(np.uint64) * _PRIMES[2]) ^ self._salt
        h ^= h >> np.uint64(13)
        h *= np.uint64(0x5BD1E995)
        h ^= h >> np.uint64(15)
        return (h % np.uint64(_BUCKETS)) < self._threshold

    def at(self, coords: np.ndarray) -> np.ndarray:
        """bool ``(n,)``: which of the ``(n, 3)`` voxel coordinates ``(z, y, x)`` are held back."""
        coords = np.asarray(coords)
        if coords.ndim != 2 or coords.shape[1] != 3:
            raise ValueError(f"coordinates must be (n, 3), got shape {coords.shape}")
        if not self._threshold:
            return np.zeros(len(coords), bool)
        b = np.floor_divide(coords, np.asarray(self.block))
        return self._held(b[:, 0], b[:, 1], b[:, 2])

    def block_of(self, coords: np.ndarray) -> np.ndarray:
        """int64 ``(n,)``: a code of the block each of the ``(n, 3)`` coordinates lies in (equal codes, one block)."""
        b = np.floor_divide(np.asarray(coords, dtype=np.int64), np.asarray(self.block)) + (1 << 20)
        return (b[:, 0] << 42) | (b[:, 1] << 21) | b[:, 2]

    def split(self, coords: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """bool ``(n,)``: which labeled voxels are held back, releasing classes the blocks would take away.

        Parameters
        ----------
        coords : np.ndarray
            ``(n, 3)`` coordinates of every labeled voxel.
        classes : np.ndarray
            ``(n,)`` their class indices ``0..K``.

        A class of which more than :data:`MAX_CLASS_SHARE` of the labeled voxels fall in held-back blocks is
        released (:attr:`released`): none of its labels is held back, so no learner loses it.
        """
        held = self.at(coords)
        released = set()
        for c in np.unique(classes):
            of_class = classes == c
            if held[of_class].mean() > MAX_CLASS_SHARE:
                released.add(int(c))
        self.released = frozenset(released)
        if released:
            held &= ~np.isin(classes, list(released))
        return held

    def box(self, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
        """bool ``size``: which voxels of the box at ``start`` (may reach past the volume) are held back."""
        if not self._threshold:
            return np.zeros(tuple(size), bool)
        axes = [np.floor_divide(np.arange(s, s + n), b) for s, n, b in zip(start, size, self.block)]
        return self._held(axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :])
