"""Where to paint next: the slices, in any orientation, whose labels should help most, and the likely errors.

A label helps most where the mask shown is least certain, over a large region,
and far from what is painted already. :func:`suggest_slices` scores every
slice along each axis by the *uncertain mass* a label there would inform: the
normalised entropy of the shown prediction summed over the unlabeled, uncertain
voxels (entropy above ``threshold``), each discounted by ``1 - exp(-(d / reach)^2)``
where ``d`` is its distance in voxels to the nearest labeled voxel in any
orientation (a slice across a painted one is known where it crosses it), the
slices' sums then smoothed along the axis by a Gaussian of ``spread`` planes,
zero past the volume's faces (a label informs the planes beside it; a face
slice has neighbours on one side only). Planes with at least
:data:`PAINTED_SHARE` of their voxels labeled are not suggested.
:func:`likely_errors` returns the largest connected uncertain regions
(unlabeled voxels) for correcting, each a click away in the widget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .box import Box

#: Axis names of a slice's normal: the slice is the plane the other two axes span.
PLANE_NAMES = ("z", "y", "x")
#: A plane counts as painted when at least this share of its voxels is labeled.
PAINTED_SHARE = 0.2
#: Normalised entropy above which a voxel counts as uncertain.
UNCERTAIN = 0.5


@dataclass(frozen=True)
class SliceSuggestion:
    """A slice worth painting.

    Attributes
    ----------
    axis : int
        The axis the slice is normal to (0 = z: an xy slice; 1 = y: an xz slice; 2 = x: a yz slice).
    index : int
        Its position along ``axis``.
    score : float
        Its discounted uncertain mass (see the module docstring).
    box : Box
        The bounding box of the slice's uncertain voxels (one voxel thick along ``axis``), to highlight.
    """

    axis: int
    index: int
    score: float
    box: Box

    def describe(self) -> str:
        """How the widget says it: ``paint the z slice 17`` or ``paint the xz slice at y = 40``."""
        if self.axis == 0:
            return f"paint the z slice {self.index}"
        plane = "xz" if self.axis == 1 else "yz"
        return f"paint the {plane} slice at {PLANE_NAMES[self.axis]} = {self.index}"


@dataclass(frozen=True)
class Region:
    """A connected uncertain region: its box, centre ``(z, y, x)`` (the region's voxel nearest its centre of mass)
    and size in voxels."""

    box: Box
    centre: tuple[int, int, int]
    voxels: int


def _painted_planes(labeled: np.ndarray, axis: int) -> np.ndarray:
    """Indices of the planes normal to ``axis`` with at least :data:`PAINTED_SHARE` of their voxels labeled."""
    other = tuple(a for a in range(3) if a != axis)
    share = labeled.mean(axis=other)
    return np.flatnonzero(share >= PAINTED_SHARE)


def suggest_slices(uncertainty: np.ndarray, labeled: np.ndarray, *, top: int = 3, reach: float = 3.0,
                   spread: float = 2.0, threshold: float = UNCERTAIN,
                   axes: Sequence[int] = (0, 1, 2)) -> list[SliceSuggestion]:
    """The ``top`` slices to paint next, best first, at most one per axis position.

    Parameters
    ----------
    uncertainty : np.ndarray
        float ``(z, y, x)`` normalised entropy of the prediction shown, in ``[0, 1]``.
    labeled : np.ndarray
        bool ``(z, y, x)``: voxels the user labeled.
    top : int
        How many suggestions.
    reach : float
        Voxels over which the discount near a labeled voxel fades.
    spread : float
        Standard deviation, in planes, of the smoothing of the slices' scores along their axis (0: none).
    threshold : float
        Entropy above which a voxel counts as uncertain.
    axes : sequence of int
        Orientations to consider.

    Returns
    -------
    list of SliceSuggestion
        Empty when nothing unlabeled is uncertain.
    """
    if uncertainty.shape != labeled.shape or uncertainty.ndim != 3:
        raise ValueError(f"uncertainty {uncertainty.shape} and labeled {labeled.shape} must be the same 3D shape")
    uncertain = (uncertainty > threshold) & ~labeled
    mass = np.where(uncertain, uncertainty, 0.0).astype(np.float64)
    if labeled.any() and uncertain.any():
        distance = ndi.distance_transform_edt(~labeled)
        mass *= 1.0 - np.exp(-((distance / reach) ** 2))
    candidates: list[tuple[float, int, int]] = []
    for axis in axes:
        other = tuple(a for a in range(3) if a != axis)
        per_slice = mass.sum(axis=other)
        if spread > 0:
            per_slice = ndi.gaussian_filter1d(per_slice, spread, mode="constant")
        per_slice[_painted_planes(labeled, axis)] = 0.0
        per_slice[~(mass > 0).any(axis=other)] = 0.0  # a plane to suggest has uncertain voxels of its own
        candidates += [(float(s), axis, int(i)) for i, s in enumerate(per_slice) if s > 0]
    candidates.sort(reverse=True)
    out = []
    for score, axis, index in candidates[:top]:
        plane = np.take(mass, index, axis=axis) > 0
        rows, cols = np.nonzero(plane)
        start, stop = [0, 0, 0], [0, 0, 0]
        start[axis], stop[axis] = index, index + 1
        a, b = (ax for ax in range(3) if ax != axis)
        start[a], stop[a] = int(rows.min()), int(rows.max()) + 1
        start[b], stop[b] = int(cols.min()), int(cols.max()) + 1
        out.append(SliceSuggestion(axis, index, score, Box(tuple(start), tuple(stop))))
    return out


def likely_errors(uncertainty: np.ndarray, labeled: np.ndarray, *, top: int = 5,
                  threshold: float = UNCERTAIN) -> list[Region]:
    """The ``top`` largest connected regions of uncertain, unlabeled voxels, largest first."""
    if uncertainty.shape != labeled.shape or uncertainty.ndim != 3:
        raise ValueError(f"uncertainty {uncertainty.shape} and labeled {labeled.shape} must be the same 3D shape")
    components, n = ndi.label((uncertainty > threshold) & ~labeled)
    if n == 0:
        return []
    sizes = np.bincount(components.ravel())[1:]
    order = np.argsort(sizes)[::-1][:top]
    boxes = ndi.find_objects(components)
    regions = []
    for i in order:
        sl = boxes[i]
        box = Box(tuple(s.start for s in sl), tuple(s.stop for s in sl))
        inside = components[sl] == i + 1
        mass = np.asarray(ndi.center_of_mass(inside))
        points = np.argwhere(inside)  # the region's voxel nearest its centre of mass (a shell's centre is not in it)
        centre = points[np.argmin(((points - mass) ** 2).sum(axis=1))]
        regions.append(Region(box, tuple(int(s.start) + int(c) for s, c in zip(sl, centre)), int(sizes[i])))
    return regions
