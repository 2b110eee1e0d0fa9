"""Boxes of voxels: the regions edits, predictions and views are told in."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Box:
    """Half-open box ``[start, stop)`` in ``(z, y, x)`` voxel coordinates."""

    start: tuple[int, int, int]
    stop: tuple[int, int, int]

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop))  # type: ignore[return-value]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in zip(self.start, self.stop))  # type: ignore[return-value]

    @property
    def empty(self) -> bool:
        return any(b <= a for a, b in zip(self.start, self.stop))

    def union(self, other: Box) -> Box:
        if self.empty:
            return other
        if other.empty:
            return self
        return Box(tuple(map(min, self.start, other.start)), tuple(map(max, self.stop, other.stop)))  # type: ignore[arg-type]

    def clip(self, shape: Sequence[int]) -> Box:
        start = tuple(int(min(max(a, 0), s)) for a, s in zip(self.start, shape))
        stop = tuple(int(min(max(b, 0), s)) for b, s in zip(self.stop, shape))
        return Box(start, stop)  # type: ignore[arg-type]

    def expand(self, margin: Sequence[int], shape: Sequence[int]) -> Box:
        """Grow by ``margin`` voxels on each side, clipped to ``shape``."""
        return Box(tuple(a - m for a, m in zip(self.start, margin)),  # type: ignore[arg-type]
                   tuple(b + m for b, m in zip(self.stop, margin))).clip(shape)

    @classmethod
    def full(cls, shape: Sequence[int]) -> Box:
        return cls((0, 0, 0), tuple(int(s) for s in shape))  # type: ignore[arg-type]

    @classmethod
    def from_slices(cls, index: tuple, shape: Sequence[int]) -> Box:
        """Bounding box of a NumPy index (slices or integer arrays) into ``shape``."""
        if len(index) != 3:
            raise ValueError(f"expected a (z, y, x) index, got {len(index)} entries")
        start, stop = [], []
        for ix, n in zip(index, shape):
            if isinstance(ix, slice):
                a, b, step = ix.indices(n)
                if step != 1:
                    raise ValueError("strided slices are not supported in edits")
                start.append(a)
                stop.append(max(a, b))
            else:
                arr = np.asarray(ix)
                if arr.size == 0:
                    return cls((0, 0, 0), (0, 0, 0))
                start.append(int(arr.min()))
                stop.append(int(arr.max()) + 1)
        return cls(tuple(start), tuple(stop))  # type: ignore[arg-type]


#: Voxels per block in which the whole-volume summaries of host probabilities (class map, entropy, pseudo-labels)
#: are computed: their temporaries stay a few MiB whatever the volume (a design choice, not tuned).
SUMMARY_BLOCK_VOXELS = 1 << 20


def plane_blocks(shape: Sequence[int], voxels: int | None = None) -> list[slice]:
    """Slices of whole planes along the first axis of ``shape`` ``(z, ...)``, each of about ``voxels`` (default
    :data:`SUMMARY_BLOCK_VOXELS`) voxels at most (one plane at least), covering it in order."""
    plane = max(1, math.prod(int(n) for n in shape[1:]))
    step = max(1, int(SUMMARY_BLOCK_VOXELS if voxels is None else voxels) // plane)
    return [slice(z, min(z + step, int(shape[0]))) for z in range(0, int(shape[0]), step)]
