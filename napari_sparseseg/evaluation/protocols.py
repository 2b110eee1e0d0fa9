"""Simulated annotators: which voxels a user labels under a protocol.

Protocols (axes are ``(z, y, x)``):

``z:K``
    K whole axial slices at ``round(linspace(0, Z-1, K+2))[1:-1]``
    (``y:K`` and ``x:K`` likewise along the other axes).
``ortho:K``
    The same K slices on each of the three axes (``3 K`` slices).
``scribble:K``
    On the K axial slices of ``z:K``, a few brush strokes per slice rather
    than whole slices: what a person really paints. See :func:`scribble_slice`.
    Typically 2-10 % of a scribbled slice is labeled.
``full``
    Every voxel labeled: the fully supervised upper bound.

Labels always come from the ground truth, so they are exact; a protocol only
decides *where* the simulated user paints. ``scribble`` needs the ground truth
to place its strokes, so :func:`protocol_mask` takes it as ``truth``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from ..core.encoding import mask_to_annotation

__all__ = ["FULL", "annotated_slice_count", "brush_radius", "parse_protocol", "protocol_mask", "scribble_slice",
           "simulate_annotation", "slice_positions"]

_PROTOCOL = re.compile(r"^(z|y|x|ortho|scribble):(\d+)$")
#: The fully supervised protocol: every voxel labeled.
FULL = "full"
#: Mixed with the slice index to seed the strokes of one scribbled slice.
_SCRIBBLE_SEED = 20160617
#: Random straight background strokes per scribbled slice.
_BACKGROUND_LINES = 3


def parse_protocol(protocol: str) -> tuple[str, int]:
    """Split ``"kind:K"`` into ``(kind, K)``; ``"full"`` gives ``("full", 0)``.

    Raises
    ------
    ValueError
        If ``protocol`` is none of ``z:K``, ``y:K``, ``x:K``, ``ortho:K``, ``scribble:K`` or ``full``.
    """
    text = str(protocol).strip()
    if text == FULL:
        return FULL, 0
    m = _PROTOCOL.match(text)
    if not m:
        raise ValueError(f"unknown protocol {protocol!r}; use z:K, y:K, x:K, ortho:K, scribble:K or full (e.g. z:3), "
                         "or with evaluate suggest:K or suggest-scribble:K")
    return m.group(1), int(m.group(2))


def annotated_slice_count(protocol: str, shape: Sequence[int]) -> int:
    """Slices a protocol touches: ``K`` for z/y/x/scribble, ``3 K`` for ortho, ``Z`` for full."""
    kind, k = parse_protocol(protocol)
    if kind == FULL:
        return int(shape[0])
    return 3 * k if kind == "ortho" else k


def slice_positions(n: int, k: int) -> list[int]:
    """``round(linspace(0, n - 1, k + 2))[1:-1]``; raises if ``k`` distinct slices do not fit."""
    if k < 1:
        raise ValueError(f"protocol needs at least 1 slice, got {k}")
    if k > n:
        raise ValueError(f"protocol asks for {k} slices but the axis has only {n}")
    pos = np.round(np.linspace(0, n - 1, k + 2))[1:-1].astype(int)
    if len(set(pos.tolist())) < k:
        raise ValueError(f"protocol asks for {k} distinct slices but an axis of {n} voxels has room for fewer")
    return pos.tolist()


def brush_radius(shape2d: Sequence[int]) -> int:
    """Brush radius (pixels) for a slice of ``(h, w)``: ``max(1, round(min(h, w) / 64))``, 2 px at 128 px."""
    return max(1, int(round(min(int(shape2d[0]), int(shape2d[1])) / 64)))


def _disk(r: int) -> np.ndarray:
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return yy**2 + xx**2 <= r * r


def _longest_path(skeleton: np.ndarray) -> np.ndarray:
    """``(n, 2)`` pixel coordinates of the longest shortest path through a connected 2D skeleton."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import shortest_path

    pts = np.argwhere(skeleton)
    if len(pts) <= 2:
        return pts
    index = -np.ones(np.add(skeleton.shape, 2), np.int64)
    index[pts[:, 0] + 1, pts[:, 1] + 1] = np.arange(len(pts))
    rows, cols = [], []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                nb = index[pts[:, 0] + 1 + dy, pts[:, 1] + 1 + dx]
                ok = nb >= 0
                rows.append(np.flatnonzero(ok))
                cols.append(nb[ok])
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r)), (r, c)), shape=(len(pts), len(pts))).tocsr()
    d0 = shortest_path(graph, indices=0, unweighted=True)
    a = int(np.argmax(np.where(np.isfinite(d0), d0, -1)))
    da, pred = shortest_path(graph, indices=a, unweighted=True, return_predecessors=True)
    b = int(np.argmax(np.where(np.isfinite(da), da, -1)))
    path = [b]
    while path[-1] != a:
        path.append(int(pred[path[-1]]))
    return pts[path]


def _object_stroke(component: np.ndarray, radius: int) -> np.ndarray:
    """One stroke inside a 2D component: its medial line, or a dot at its centre when it is tiny."""
    from skimage.morphology import skeletonize

    disk = _disk(radius)
    core = ndi.binary_erosion(component, disk)
    if core.any():
        lab, n = ndi.label(core, np.ones((3, 3)))
        if n > 1:
            core = lab == 1 + int(np.argmax(np.bincount(lab.ravel())[1:]))
        path = _longest_path(skeletonize(core))
        line = np.zeros_like(component)
        line[path[:, 0], path[:, 1]] = True
    else:  # thinner than the brush: a dot on its innermost pixel
        dist = ndi.distance_transform_edt(np.pad(component, 1))[1:-1, 1:-1]
        line = np.zeros_like(component)
        line[np.unravel_index(int(np.argmax(dist)), dist.shape)] = True
    return ndi.binary_dilation(line, disk) & component


def scribble_slice(truth2d: np.ndarray, seed: int = 0, radius: int | None = None) -> np.ndarray:
    """Where a person would scribble on one 2D slice of ground truth.

    Foreground: for every 2D connected component of every class, one stroke
    along the longest path through the skeleton of the component eroded by
    the brush (its medial line, kept at least one brush radius inside the
    object); a component too thin to survive the erosion gets a dot at its
    innermost pixel. Background: short dashes (``6 r`` px, thinner brush
    ``max(r - 1, 1)``) along the contour at a safe distance (``3 r + 2`` px)
    around the foreground, plus
    ``_BACKGROUND_LINES`` random straight strokes through far background
    (further than ``2 (3 r + 2)`` px from any object, or anywhere in a slice
    without objects). Every stroke has the brush radius ``r``.

    Parameters
    ----------
    truth2d : np.ndarray
        ``(y, x)`` ground truth in mask encoding (0 = background, 1..K).
    seed : int
        Seed of the random background strokes (the slice index in
        :func:`protocol_mask`): the result is a pure function of the inputs.
    radius : int, optional
        Brush radius in pixels; :func:`brush_radius` of the slice when omitted.

    Returns
    -------
    np.ndarray
        ``(y, x)`` bool mask of the scribbled pixels.
    """
    truth2d = np.asarray(truth2d)
    if truth2d.ndim != 2:
        raise ValueError(f"scribble_slice needs a 2D (y, x) slice, got shape {truth2d.shape}")
    r = brush_radius(truth2d.shape) if radius is None else int(radius)
    if r < 1:
        raise ValueError(f"brush radius must be >= 1 pixel, got {radius}")
    rng = np.random.default_rng([_SCRIBBLE_SEED, int(seed)])
    out = np.zeros(truth2d.shape, bool)
    pad = r + 2
    for c in (int(v) for v in np.unique(truth2d) if v > 0):
        labels, _ = ndi.label(truth2d == c)
        for i, sl in enumerate(ndi.find_objects(labels), start=1):
            if sl is None:
                continue
            box = tuple(slice(max(s.start - pad, 0), min(s.stop + pad, n)) for s, n in zip(sl, truth2d.shape))
            out[box] |= _object_stroke(labels[box] == i, r)

    background = truth2d == 0
    fg = ~background
    dist = ndi.distance_transform_edt(background) if fg.any() else np.full(truth2d.shape, np.inf)
    safe = 3 * r + 2
    disk = _disk(r)
    if fg.any():  # short dashes along the contour at a safe distance around the objects
        contour = (dist >= safe) & (dist < safe + 1)
        dash = 6 * r
        yy, xx = np.indices(truth2d.shape)
        oy, ox = rng.integers(dash, size=2)
        contour &= ((yy + oy) // dash + (xx + ox) // dash) % 2 == 0
        out |= ndi.binary_dilation(contour, _disk(max(r - 1, 1))) & (dist > r)
    far = dist > 2 * safe
    if not far.any():
        far = dist > safe
    candidates = np.argwhere(far)
    if len(candidates):
        from skimage.draw import line

        length = max(min(truth2d.shape) // 4, 2)
        for _ in range(_BACKGROUND_LINES):
            y0, x0 = candidates[rng.integers(len(candidates))]
            angle = rng.uniform(0, np.pi)
            y1 = int(np.clip(round(y0 + length * np.sin(angle)), 0, truth2d.shape[0] - 1))
            x1 = int(np.clip(round(x0 + length * np.cos(angle)), 0, truth2d.shape[1] - 1))
            stroke = np.zeros(truth2d.shape, bool)
            stroke[line(int(y0), int(x0), y1, x1)] = True
            out |= ndi.binary_dilation(stroke & (dist > safe), disk) & (dist > r)
    return out


def protocol_mask(shape: tuple[int, int, int], protocol: str, truth: np.ndarray | None = None) -> np.ndarray:
    """Boolean ``(z, y, x)`` mask of the voxels a protocol labels.

    Parameters
    ----------
    shape : tuple of int
        ``(z, y, x)`` of the volume.
    protocol : str
        ``z:K``, ``y:K``, ``x:K``, ``ortho:K``, ``scribble:K`` or ``full`` (see the module docstring).
    truth : np.ndarray, optional
        ``(z, y, x)`` ground truth (mask encoding); required by ``scribble:K``, which places strokes on objects.

    Raises
    ------
    ValueError
        On an unknown protocol, a K that does not fit the axis, or ``scribble`` without a matching ``truth``.
    """
    kind, k = parse_protocol(protocol)
    shape = tuple(int(s) for s in shape)
    if kind == FULL:
        return np.ones(shape, bool)
    if kind == "scribble":
        if truth is None or tuple(np.shape(truth)) != shape:
            got = None if truth is None else np.shape(truth)
            raise ValueError(f"protocol {protocol!r} needs the ground truth of shape {shape}, got {got}")
        mask = np.zeros(shape, bool)
        for z in slice_positions(shape[0], k):
            mask[z] = scribble_slice(np.asarray(truth[z]), seed=z)
        return mask
    axes = {"z": [0], "y": [1], "x": [2], "ortho": [0, 1, 2]}[kind]
    mask = np.zeros(shape, bool)
    for axis in axes:
        for p in slice_positions(shape[axis], k):
            index = [slice(None)] * 3
            index[axis] = p
            mask[tuple(index)] = True
    return mask


def simulate_annotation(truth: np.ndarray, protocol: str, mask: np.ndarray | None = None) -> np.ndarray:
    """Annotation (0 = unlabeled, 1 = background, k+1 = class k) of ``truth`` under ``protocol``.

    ``mask`` is the :func:`protocol_mask` when the caller already has it (scribbles cost a little to place).
    """
    if mask is None:
        mask = protocol_mask(truth.shape, protocol, truth)
    out = np.zeros(truth.shape, np.uint8)
    out[mask] = mask_to_annotation(truth[mask])
    return out
