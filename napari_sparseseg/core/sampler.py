"""Patch geometry and the sampler that centres patches on labeled voxels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
    if (out == mult).all():  # a one-voxel bottleneck: instance norm has nothing to normalise (a tiny volume)
        axis = int(np.argmax(shape / mult))
        out[axis] = 2 * mult[axis]  # the patch runs past the volume there, padded as any patch past its edge
    return tuple(int(v) for v in out)  # type: ignore[return-value]


@dataclass(frozen=True)
class Sampling:
    """Where training patches are centred (the reasons for the defaults: ``docs/decisions.md``).

    Attributes
    ----------
    foreground_share : float
        Share of patches centred on a labeled voxel of a randomly chosen labeled foreground class.
    random_share : float
        Share of patches placed anywhere: context for the net (they train only on the labeled voxels they hold).
    centre_margin : float
        The centre lies anywhere in the patch but this share of its size from its edges, so labeled slices land
        on every row of the patch and the net cannot learn *where* labels are.
    """

    foreground_share: float = 0.5
    random_share: float = 0.1
    centre_margin: float = 0.25

    def __post_init__(self) -> None:
        for name, top in (("foreground_share", 1.0), ("random_share", 1.0), ("centre_margin", 0.5)):
            value = getattr(self, name)
            if not 0 <= value <= top:
                raise ValueError(f"{name} must be in [0, {top:g}], got {value}")
        if self.foreground_share + self.random_share > 1:
            raise ValueError("foreground_share + random_share must be <= 1")


class PatchSampler:
    """Draws training patches from an :class:`AnnotatedVolume`.

    A patch is centred on (a) a labeled voxel of a randomly chosen labeled
    foreground class with probability ``sampling.foreground_share``, (b)
    anywhere in the volume with probability ``sampling.random_share``,
    otherwise (c) any labeled voxel. Labeled coordinates are re-indexed only
    when the annotation revision changes.
    """

    def __init__(self, volume: AnnotatedVolume, size: Sequence[int], *, rng: np.random.Generator,
                 sampling: Sampling = Sampling()) -> None:
        self.volume = volume
        self.size = tuple(int(s) for s in size)
        self.sampling = sampling
        self.rng = rng
        self.centre_range = (sampling.centre_margin, 1.0 - sampling.centre_margin)
        self._revision = -1
        self._coords: list[np.ndarray] = []
        self._all = np.empty((0, 3), int)

    def _refresh(self) -> None:
        if self._revision != self.volume.revision:
            self._revision = self.volume.revision
            self._coords = self.volume.labeled_coordinates()
            self._all = np.concatenate(self._coords) if self._coords else np.empty((0, 3), int)

    def center(self) -> np.ndarray:
        """One patch centre ``(z, y, x)``."""
        self._refresh()
        u = self.rng.random()
        fg = [c for c in self._coords[1:] if len(c)]
        foreground, random = self.sampling.foreground_share, self.sampling.random_share
        if u < foreground and fg:
            pool = fg[self.rng.integers(len(fg))]
        elif u < foreground + random or not len(self._all):
            return np.array([self.rng.integers(0, s) for s in self.volume.shape])
        else:
            pool = self._all
        return pool[self.rng.integers(len(pool))]

    def sample(self, class_weight: np.ndarray, correction_weight: float) -> Patch:
        """Cut one patch holding a sampled centre at a random place inside it.

        The centre may sit anywhere along each axis but within
        ``sampling.centre_margin`` x size of the patch edges, and the patch may reach
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
