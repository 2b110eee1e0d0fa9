"""Separate objects: a class mask split into instances by a seeded watershed of the distance to the background.

Touching nuclei merge into one connected component of a class mask. Each of
them is thickest at its own centre, so the distance to the background
(in physical units, :func:`scipy.ndimage.distance_transform_edt` with the
voxel spacing) has one peak per object and a saddle where two touch. A peak
that rises at least ``h`` above every saddle around it seeds an object (the
h-maxima: the regional maxima of the reconstruction of the distance lowered
by ``h``, so that peaks of equal height joined above ``h`` below them make one
seed, which :func:`skimage.morphology.h_maxima` keeps apart), and the watershed of the
negated distance (:func:`skimage.segmentation.watershed`) grows the seeds to
the mask. ``h`` follows the objects of the mask itself: a share of the radius
(largest inner distance) of its typical connected component (the one the
median foreground voxel lies in), and never below one voxel, so that bumps of
a rough surface do not split an object. Components far smaller than the
typical one (the specks a pixel classifier leaves) are not objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

#: ``h`` as a share of the typical object radius (see the module docstring; ``benchmarks/instances.py``).
DEPTH_SHARE = 0.25
#: Objects smaller than this share of the typical object's volume are specks, not objects: left out.
MIN_VOLUME_SHARE = 0.02


def typical_object(sizes: np.ndarray, radii: np.ndarray) -> tuple[float, float]:
    """``(volume, radius)`` of the object the median foreground voxel lies in (a volume-weighted median, so that
    specks do not make the typical object small); ``(0, 0)`` when there is none.

    Parameters
    ----------
    sizes, radii : np.ndarray
        ``(n,)`` voxel counts and largest inner distances of the connected components.
    """
    if not sizes.size:
        return 0.0, 0.0
    order = np.argsort(sizes)
    cumulative = np.cumsum(sizes[order])
    pick = order[int(np.searchsorted(cumulative, 0.5 * cumulative[-1]))]
    return float(sizes[pick]), float(radii[pick])


def split_instances(mask: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0), *,
                    classes: Iterable[int] | None = None, depth_share: float = DEPTH_SHARE,
                    min_volume_share: float = MIN_VOLUME_SHARE,
                    typical: Mapping[int, tuple[float, float]] | None = None) -> np.ndarray:
    """Instance ids of the objects of each foreground class.

    Parameters
    ----------
    mask : np.ndarray
        ``(z, y, x)`` integer class map (0 background, 1..K classes).
    spacing : sequence of float
        Voxel size ``(z, y, x)``.
    classes : iterable of int, optional
        Classes to split (default: every class present); the others are left as one object per connected
        component.
    depth_share : float
        ``h`` of the h-maxima as a share of the class's typical object radius (:func:`typical_object`), in
        ``[0, 1]``.
    min_volume_share : float
        Connected components smaller than this share of the typical object's volume are left out (id 0), in
        ``[0, 1]``.
    typical : mapping of int to (float, float), optional
        Per class, the ``(volume, radius)`` of its typical object (:func:`typical_objects`), for splitting a part
        of a mask with the scale of the whole; default: measured on ``mask``.

    Returns
    -------
    np.ndarray
        ``(z, y, x)`` uint32 instance ids: 0 background and specks, objects numbered ``1..N`` class by class
        (ascending), each id within one class.

    Raises
    ------
    ValueError
        On a mask that is not a 3D integer array, a bad spacing or ``depth_share``.
    """
    from scipy import ndimage as ndi
    from skimage.morphology import local_maxima, reconstruction
    from skimage.segmentation import watershed

    mask = np.asarray(mask)
    if mask.ndim != 3 or not (np.issubdtype(mask.dtype, np.integer) or mask.dtype == bool):
        raise ValueError(f"mask must be a 3D integer class map (z, y, x); got {mask.dtype} {mask.shape}")
    sp = np.asarray(spacing, dtype=np.float64)
    if sp.shape != (3,) or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ValueError(f"spacing must be 3 positive finite floats (z, y, x); got {spacing!r}")
    for name, value in (("depth_share", depth_share), ("min_volume_share", min_volume_share)):
        if not 0 <= value <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    present = [int(c) for c in np.unique(mask) if c > 0]
    to_split = set(present if classes is None else (int(c) for c in classes))
    out = np.zeros(mask.shape, np.uint32)
    next_id = 1
    for c in present:
        fg = mask == c
        components, sizes, distance, radii = _components(fg, sp, c in to_split)
        if not sizes.size:
            continue
        volume, radius = typical[c] if typical is not None and c in typical else typical_object(sizes, radii)
        specks = np.flatnonzero(sizes < min_volume_share * volume) + 1
        if specks.size:
            fg = fg & ~np.isin(components, specks)
            components[~fg] = 0
        if distance is not None:
            h = max(depth_share * radius, float(sp.min()))
            domes = local_maxima(reconstruction(distance - h, distance, method="dilation")) & fg
            seeds, _ = ndi.label(domes, ndi.generate_binary_structure(3, 3))
            # a component without a seed (thinner than h everywhere) keeps one id of its own
            unseeded = np.setdiff1d(np.unique(components[fg]), np.unique(components[seeds > 0]))
            if unseeded.size:
                extra = np.isin(components, unseeded)
                seeds[extra] = components[extra] + int(seeds.max())
            objects = watershed(-distance, seeds, mask=fg)
        else:
            objects = components
        ids = np.unique(objects[fg])
        ids = ids[ids > 0]
        lookup = np.zeros(int(objects.max()) + 1, np.uint32)
        lookup[ids] = np.arange(next_id, next_id + ids.size, dtype=np.uint32)
        out[fg] = lookup[objects[fg]]
        next_id += ids.size
    return out


def _components(fg: np.ndarray, spacing: np.ndarray, measure: bool = True):
    """``(components, sizes, distance, radii)`` of a bool ``(z, y, x)`` mask: connected component ids, their ``(n,)``
    voxel counts, and (when ``measure``, else None and zeros) the distance to the background and each one's largest
    inner distance."""
    from scipy import ndimage as ndi

    components, n = ndi.label(fg)
    sizes = np.bincount(components.ravel(), minlength=n + 1)[1:]
    if not measure:
        return components, sizes, None, np.zeros(n)
    distance = ndi.distance_transform_edt(fg, sampling=spacing)
    return components, sizes, distance, np.asarray(ndi.maximum(distance, components, np.arange(1, n + 1)))


def typical_objects(mask: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> dict[int, tuple[float, float]]:
    """Per foreground class of the ``(z, y, x)`` class map, the ``(volume, radius)`` of its typical object
    (:func:`typical_object`; radius in the units of ``spacing``)."""
    sp = np.asarray(spacing, dtype=np.float64)
    out = {}
    for c in (int(c) for c in np.unique(mask) if c > 0):
        _, sizes, _, radii = _components(mask == c, sp)
        out[c] = typical_object(sizes, radii)
    return out


def connected_objects(mask: np.ndarray) -> np.ndarray:
    """uint32 ``(z, y, x)`` ids of the connected components of each class (the reference that merges touching
    objects)."""
    return split_instances(mask, classes=(), min_volume_share=0.0)
