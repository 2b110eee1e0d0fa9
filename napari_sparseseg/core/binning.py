"""A coarser grid for the first responder of a volume whose full filter bank would not fit in memory.

The first responder's filter bank takes 48 float32 columns per voxel and image
channel (192 bytes: 5 GiB for a 512 x 512 x 100 CT). Rather than leave such a
volume to the net alone (minutes on a CPU before its mask is worth showing),
the first responder works on the volume binned by small powers of two, finest
axes first (a CT of 5 x 0.8 x 0.8 mm becomes 5 x 1.6 x 1.6 mm): the bank then
fits, computes in a quarter or an eighth of the time, and its answers are
interpolated back to every voxel. The net still trains and predicts on the full
grid.

Axes: every array here is ``(z, y, x)``; probabilities are ``(K + 1, z, y, x)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .box import Box

__all__ = ["MAX_FACTOR", "bin_mean", "binned_shape", "binning_factors", "covering_box", "point_weights", "upsample"]

#: Largest bin edge along any axis; a volume whose stack does not fit at it gets no first responder.
MAX_FACTOR = 8


def binned_shape(shape: Sequence[int], factors: Sequence[int]) -> tuple[int, int, int]:
    """The ``(z, y, x)`` shape of a volume of ``shape`` binned by ``factors`` (a partial bin at the end counts)."""
    return tuple(-(-int(n) // int(f)) for n, f in zip(shape, factors))


def binning_factors(shape: Sequence[int], spacing: Sequence[float], bytes_of: Callable[[tuple[int, ...]], int],
                    max_bytes: int) -> tuple[int, int, int] | None:
    """The smallest bins ``(fz, fy, fx)`` (powers of two) at which ``bytes_of(binned shape)`` fits ``max_bytes``.

    Each round doubles the bins of the axes with the finest binned voxel size (ties together), so an anisotropic
    volume is binned in plane first and moves towards isotropic voxels.

    Parameters
    ----------
    shape : sequence of int
        ``(z, y, x)`` of the full volume.
    spacing : sequence of float
        Its voxel size ``(z, y, x)``.
    bytes_of : callable
        Memory the first responder needs for a volume of the given ``(z, y, x)`` shape.
    max_bytes : int
        The memory it may take.

    Returns
    -------
    tuple of int or None
        ``(1, 1, 1)`` when the full grid fits; None when even bins of :data:`MAX_FACTOR` along every axis do not.
    """
    factors = [1, 1, 1]
    sp = np.asarray(spacing, dtype=np.float64)
    while bytes_of(binned_shape(shape, factors)) > max_bytes:
        size = sp * factors
        # Axes a bin can still grow along: not past MAX_FACTOR, and not past the volume itself.
        open_axes = [a for a in range(3) if factors[a] < MAX_FACTOR and factors[a] < shape[a]]
        if not open_axes:
            return None
        finest = min(size[a] for a in open_axes)
        for a in open_axes:
            if np.isclose(size[a], finest, rtol=1e-3):
                factors[a] *= 2
    return tuple(factors)


def _bin_axis(values: np.ndarray, factor: int, axis: int) -> np.ndarray:
    """float32 means of runs of ``factor`` along ``axis`` (the last run may be shorter)."""
    if factor == 1:
        return values
    starts = np.arange(0, values.shape[axis], factor)
    counts = np.diff(np.append(starts, values.shape[axis])).astype(np.float32)
    shape = [1] * values.ndim
    shape[axis] = -1
    return np.add.reduceat(values, starts, axis=axis, dtype=np.float32) / counts.reshape(shape)


def bin_mean(image: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """float32 mean of each bin of a ``(z, y, x)`` image; a partial bin at the end averages the voxels it holds.

    Read one z bin at a time, so that no full-resolution copy of the image (nor a float32 one) is made.
    """
    fz, fy, fx = (int(f) for f in factors)
    out = np.empty(binned_shape(image.shape, factors), np.float32)
    for bz in range(out.shape[0]):
        slab = np.asarray(image[bz * fz:(bz + 1) * fz], dtype=np.float32)  # (<= fz, y, x)
        out[bz] = _bin_axis(_bin_axis(slab.mean(axis=0, dtype=np.float32), fy, 0), fx, 1)
    return out


def covering_box(box: Box, factors: Sequence[int], binned: Sequence[int]) -> Box:
    """The box of the binned grid whose bins cover ``box`` of the full grid, one bin wider on each side (the
    interpolation of :func:`upsample` reads the neighbouring bins), clipped to the ``binned`` shape."""
    start = tuple(max(0, s // f - 1) for s, f in zip(box.start, factors))
    stop = tuple(min(n, -(-e // f) + 1) for e, f, n in zip(box.stop, factors, binned))
    return Box(start, stop)  # type: ignore[arg-type]


def point_weights(coords: np.ndarray, factors: Sequence[int], grid: Sequence[int]) -> tuple[np.ndarray, np.ndarray,
                                                                                              np.ndarray]:
    """The bins and weights of the same linear interpolation as :func:`upsample`, at single full-grid voxels.

    Parameters
    ----------
    coords : np.ndarray
        ``(n, 3)`` full-grid voxel coordinates ``(z, y, x)``.
    factors : sequence of int
        The bins ``(fz, fy, fx)``.
    grid : sequence of int
        The binned grid's ``(z, y, x)`` shape.

    Returns
    -------
    bins : np.ndarray
        ``(m, 3)`` the distinct bins read (each corner of each voxel's interpolation cell).
    index : np.ndarray
        ``(n, 8)`` which row of ``bins`` each voxel's eight corners are.
    weights : np.ndarray
        float32 ``(n, 8)`` their weights (each row sums to 1): a voxel's value is ``weights[i] @ values[index[i]]``.
    """
    f = np.asarray(factors, dtype=np.float64)
    top = np.asarray(grid, dtype=np.int64) - 1
    centre = np.clip((np.asarray(coords, dtype=np.float64) + 0.5) / f - 0.5, 0, top)
    lower = np.floor(centre).astype(np.int64)
    upper = np.minimum(lower + 1, top)
    frac = centre - lower
    corners, weights = [], []
    for pick in np.ndindex(2, 2, 2):
        corners.append(np.where(np.asarray(pick, bool), upper, lower))
        weights.append(np.prod(np.where(np.asarray(pick, bool), frac, 1 - frac), axis=1))
    stacked = np.stack(corners, axis=1).reshape(-1, 3)
    bins, index = np.unique(stacked, axis=0, return_inverse=True)
    return bins, index.reshape(len(centre), 8), np.stack(weights, axis=1).astype(np.float32)


def upsample(probabilities: np.ndarray, bins: Box, factors: Sequence[int], box: Box) -> np.ndarray:
    """Linear interpolation of binned values back to the full grid.

    Parameters
    ----------
    probabilities : np.ndarray
        float32 ``(C, bz, by, bx)``: values of the bins of ``bins`` (a box of the binned grid).
    bins : Box
        Where ``probabilities`` lie on the binned grid (it must cover ``box``, see :func:`covering_box`).
    factors : sequence of int
        The bins ``(fz, fy, fx)``.
    box : Box
        The full-grid box asked for.

    Returns
    -------
    np.ndarray
        float32 ``(C,) + box.shape``. Each voxel takes the value interpolated linearly between the centres of the
        bins around it (``torch.nn.functional.interpolate``, trilinear); past the outermost centres the nearest
        bin's value. A partial bin at the far end counts as centred where a whole one would be (up to half a bin
        past its last voxel): an approximation at that edge only.
    """
    out = np.asarray(probabilities, dtype=np.float32)
    crop = (slice(None),) + tuple(slice(a - b * f, e - b * f) for a, e, b, f in zip(box.start, box.stop, bins.start,
                                                                                       factors))
    import torch
    import torch.nn.functional as F

    # Trilinear with align_corners=False reads voxel p of the bins' extent at bin (p + 0.5) / f - 0.5, clamped at
    # the ends: the centres of the bins. The covering box's extra bin on each side makes that equal, within the box
    # asked for, to interpolating the whole grid.
    with torch.no_grad():
        up = F.interpolate(torch.from_numpy(np.ascontiguousarray(out))[None], scale_factor=tuple(map(float, factors)),
                           mode="trilinear", align_corners=False)[0]
    return np.ascontiguousarray(up.numpy()[crop])
