"""Synthetic fluorescence-microscopy volumes with dense ground truth.

The generator draws cells in *physical* space (micrometres, say), so that an
anisotropic voxel spacing squashes every object along ``z`` in voxel units, as
in a real confocal or light-sheet stack. Each cell has

* a dim, textured cytoplasm (not a class: it is background in the labels, but
  it is what makes a single global threshold fail),
* an ellipsoidal nucleus with chromatin texture, a brighter periphery and dark
  nucleoli (class 1, ``"nucleus"``),
* a few small, bright vesicles in the cytoplasm (class 2, ``"vesicle"``).

The ideal signal is then blurred by an anisotropic Gaussian point-spread
function (wider along the optical axis ``z``), given out-of-focus haze,
multiplied by a smooth uneven illumination field (lateral gradient, vignetting
and attenuation with depth), offset by autofluorescence, and degraded by
Poisson shot noise plus Gaussian read noise.

All arrays are indexed ``(z, y, x)``. Labels use the *mask encoding* of the
package: ``0`` = background, ``1 .. K`` = classes.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

__all__ = ["CLASS_NAMES", "SyntheticVolume", "make_cells_volume"]

#: Names of mask classes ``1 .. K`` produced by :func:`make_cells_volume`.
CLASS_NAMES: tuple[str, ...] = ("nucleus", "vesicle")

_MIN_AXIS = 8

# Optical model, in physical units (same unit as ``spacing``).
_PSF_SIGMA_LATERAL = 0.35
_PSF_SIGMA_AXIAL = 1.2
_HAZE_SIGMA_LATERAL = 6.0  # out-of-focus light, much wider than the PSF
_HAZE_FRACTION = 0.15
_AUTOFLUORESCENCE = 0.04


@dataclass(frozen=True, eq=False, repr=False)
class SyntheticVolume:
    """A synthetic image with its dense ground truth.

    Parameters
    ----------
    image : np.ndarray
        ``(z, y, x)`` float32 intensities (non-negative, roughly in ``[0, 2]``).
    labels : np.ndarray
        ``(z, y, x)`` uint8 ground truth in mask encoding: ``0`` background,
        ``1 .. K`` the classes named in `class_names`.
    spacing : tuple of float
        Physical voxel size ``(z, y, x)``.
    class_names : tuple of str
        Names of mask classes ``1 .. K``, in order.
    instances : np.ndarray or None
        ``(z, y, x)`` uint16 object ids (0 background; each nucleus and each vesicle its own id), the instance
        ground truth of ``labels``.
    """

    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]
    class_names: tuple[str, ...]
    instances: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.image.ndim != 3:
            raise ValueError(
                f"image must be 3D (z, y, x), got shape {self.image.shape}"
            )
        if self.labels.shape != self.image.shape:
            raise ValueError(
                f"labels shape {self.labels.shape} differs from image shape {self.image.shape}"
            )
        if len(self.spacing) != 3:
            raise ValueError(
                f"spacing must have 3 entries (z, y, x), got {self.spacing!r}"
            )
        if self.instances is not None and (self.instances.shape != self.labels.shape
                                           or not np.array_equal(self.instances > 0, self.labels > 0)):
            raise ValueError("instances must have the labels' shape and cover exactly their foreground")
        if self.labels.size and int(self.labels.max()) > len(self.class_names):
            raise ValueError(
                f"labels hold class {int(self.labels.max())} but only "
                f"{len(self.class_names)} class names were given: {self.class_names!r}"
            )

    @property
    def n_classes(self) -> int:
        """Number of foreground classes ``K``."""
        return len(self.class_names)

    def __repr__(self) -> str:
        return (
            f"SyntheticVolume(shape={self.image.shape}, image_dtype={self.image.dtype}, "
            f"spacing={self.spacing}, class_names={self.class_names})"
        )


# ----------------------------------------------------------------------------
# argument validation


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    try:
        dims = tuple(shape)
    except TypeError:
        raise ValueError(
            f"shape must be a (z, y, x) sequence of 3 ints, got {shape!r}"
        ) from None
    if len(dims) != 3 or not all(
        isinstance(d, numbers.Integral) and not isinstance(d, bool) for d in dims
    ):
        raise ValueError(f"shape must be a (z, y, x) sequence of 3 ints, got {shape!r}")
    if min(dims) < _MIN_AXIS:
        raise ValueError(
            f"every axis of shape must be >= {_MIN_AXIS} voxels, got {shape!r}"
        )
    return int(dims[0]), int(dims[1]), int(dims[2])


def _check_spacing(spacing: Sequence[float]) -> tuple[float, float, float]:
    try:
        sp = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise ValueError(
            f"spacing must be 3 positive numbers (z, y, x), got {spacing!r}"
        ) from None
    if len(sp) != 3 or not all(math.isfinite(s) and s > 0 for s in sp):
        raise ValueError(
            f"spacing must be 3 positive finite numbers (z, y, x), got {spacing!r}"
        )
    return sp[0], sp[1], sp[2]


# ----------------------------------------------------------------------------
# geometry helpers (physical space)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniform random 3x3 rotation matrix (QR of a Gaussian matrix)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _ellipsoid_q(
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


def _smooth_field(
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


def _illumination(
    rng: np.random.Generator, shape: tuple[int, int, int], spacing: np.ndarray
) -> np.ndarray:
    """Smooth multiplicative illumination field in about ``[0.45, 1]``."""
    nz, ny, nx = shape
    z = np.linspace(0.0, 1.0, nz, dtype=np.float32)[:, None, None]
    y = np.linspace(-1.0, 1.0, ny, dtype=np.float32)[None, :, None]
    x = np.linspace(-1.0, 1.0, nx, dtype=np.float32)[None, None, :]
    theta = rng.uniform(0, 2 * np.pi)
    ramp = 0.5 * (1 + (np.cos(theta) * y + np.sin(theta) * x) / np.sqrt(2))  # 0 .. 1
    cy, cx = rng.uniform(-0.4, 0.4, size=2)
    vignette = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * 1.1**2))
    depth = np.exp(-z * rng.uniform(0.15, 0.3))  # deeper planes are dimmer
    field = (1.0 - 0.3 * ramp) * vignette * depth
    return (field / field.max()).astype(np.float32)


def _place_centers(
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


# ----------------------------------------------------------------------------
# public API


def make_cells_volume(
    shape: tuple[int, int, int] = (48, 128, 128),
    *,
    n_cells: int = 20,
    spacing: tuple[float, float, float] = (2.0, 0.5, 0.5),
    seed: int = 0,
    noise: float = 0.08,
) -> SyntheticVolume:
    """Generate a fluorescence-microscopy-like volume of cells with ground truth.

    Parameters
    ----------
    shape : tuple of int
        ``(z, y, x)`` size in voxels; every axis at least 8.
    n_cells : int
        Number of cells, at least 1. Cell size shrinks as more cells must fit;
        cells may be cut by the volume border.
    spacing : tuple of float
        Physical voxel size ``(z, y, x)``, all positive. Objects are defined in
        physical units, so a coarse ``z`` step flattens them along ``z`` in
        voxel units (with the default ``(2, 0.5, 0.5)``, 4x).
    seed : int
        Seed of the random generator; the output is a pure function of the
        arguments.
    noise : float
        Noise level, non-negative: relative shot noise at unit signal (Poisson,
        ``1 / noise**2`` photons per unit intensity) plus Gaussian read noise
        of standard deviation ``noise / 2``. ``0`` gives a noise-free image.

    Returns
    -------
    SyntheticVolume
        ``image``: ``(z, y, x)`` float32, non-negative; ``labels``: ``(z, y, x)``
        uint8 in mask encoding, ``1`` = nucleus, ``2`` = vesicle, ``0`` =
        background (cytoplasm included); ``spacing`` as given (floats);
        ``class_names`` = ``("nucleus", "vesicle")``.

    Raises
    ------
    ValueError
        If `shape` is not three ints each >= 8, `n_cells` < 1, `spacing` is not
        three positive finite numbers, or `noise` is negative or not finite.

    Notes
    -----
    Nuclear brightness varies about 2x between cells and the illumination
    field about 2x across the volume, and the cytoplasm of bright cells is as
    bright as the nuclei of dim ones, so no global threshold separates the
    classes. The point-spread function is Gaussian with standard deviation
    0.35 laterally and 1.2 axially (physical units).

    Examples
    --------
    >>> vol = make_cells_volume((16, 64, 64), n_cells=4, seed=1)
    >>> vol.image.shape, vol.labels.dtype, vol.class_names
    ((16, 64, 64), dtype('uint8'), ('nucleus', 'vesicle'))
    """
    shape = _check_shape(shape)
    if (
        not isinstance(n_cells, numbers.Integral)
        or isinstance(n_cells, bool)
        or n_cells < 1
    ):
        raise ValueError(f"n_cells must be an int >= 1, got {n_cells!r}")
    n_cells = int(n_cells)
    sp_tuple = _check_spacing(spacing)
    try:
        noise_f = float(noise)
    except (TypeError, ValueError):
        raise ValueError(
            f"noise must be a non-negative number, got {noise!r}"
        ) from None
    if not (math.isfinite(noise_f) and noise_f >= 0):
        raise ValueError(f"noise must be a non-negative finite number, got {noise!r}")

    rng = np.random.default_rng(seed)
    sp = np.asarray(sp_tuple, dtype=np.float64)
    shp = np.asarray(shape)
    extent = (shp - 1) * sp  # physical span of voxel centres
    volume = float(np.prod(shp * sp))

    # Nuclear radius: cells (about 1.5x the nucleus) fill ~45 % of the volume,
    # capped by the smallest extent and floored at two of the coarsest steps so
    # that a nucleus always covers several voxels on every axis.
    cell_scale = 1.5
    r0 = (0.45 * volume / (n_cells * 4.0 / 3.0 * np.pi * cell_scale**3)) ** (1 / 3)
    r0 = min(r0, 0.25 * float((shp * sp).min()))
    r0 = max(r0, 2.0 * float(sp.max()))

    # smooth random fields shared by all objects
    wobble = _smooth_field(rng, shape, np.maximum(0.5 * r0 / sp, 0.5))
    texture = _smooth_field(rng, shape, np.maximum(0.08 * r0 / sp, 0.5))

    nuc_axes = r0 * rng.uniform(0.75, 1.25, size=(n_cells, 3))
    cell_axes = nuc_axes * cell_scale * rng.uniform(0.9, 1.2, size=(n_cells, 3))
    centers = _place_centers(rng, n_cells, extent, cell_axes.mean(axis=1) * 0.75)
    nuc_bright = rng.uniform(0.5, 1.0, size=n_cells)
    cyto_bright = rng.uniform(0.12, 0.3, size=n_cells)

    signal = np.zeros(shape, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint8)
    instances = np.zeros(shape, dtype=np.uint16)
    cell_info = []
    for i in range(n_cells):
        # the nucleus sits off-centre in its cell
        offset = rng.normal(scale=0.15 * r0, size=3)
        nuc_center = np.clip(centers[i] + offset, 0.0, extent)
        nuc_rot = _random_rotation(rng)
        cell_rot = _random_rotation(rng)

        got = _ellipsoid_q(centers[i], cell_axes[i], cell_rot, sp, shape)
        if got is not None:
            box, q = got
            inside = q * (1.0 + 0.12 * wobble[box]) < 1.0
            cyto = cyto_bright[i] * (1.0 + 0.15 * texture[box])
            signal[box] = np.where(inside, np.maximum(signal[box], cyto), signal[box])

        got = _ellipsoid_q(nuc_center, nuc_axes[i], nuc_rot, sp, shape)
        if got is None:  # cannot happen: the centre lies in the volume
            continue
        box, q = got
        qw = q * (1.0 + 0.08 * wobble[box])
        inside = qw < 1.0
        # chromatin texture, brighter periphery (heterochromatin at the envelope)
        val = 1.0 + 0.3 * texture[box] + 0.3 * np.clip((qw - 0.55) / 0.45, 0.0, 1.0)
        val = nuc_bright[i] * np.clip(val, 0.3, 1.8)
        for _ in range(rng.integers(1, 4)):  # dark nucleoli
            dirn = rng.normal(size=3)
            dirn /= np.linalg.norm(dirn)
            c = nuc_center + nuc_rot @ (dirn * nuc_axes[i] * rng.uniform(0.0, 0.5))
            r = r0 * rng.uniform(0.12, 0.22)
            g = [np.arange(s.start, s.stop) * sp[a] - c[a] for a, s in enumerate(box)]
            d2 = (
                g[0][:, None, None] ** 2
                + g[1][None, :, None] ** 2
                + g[2][None, None, :] ** 2
            )
            val = np.where(d2 < r * r, val * 0.45, val)
        signal[box] = np.where(inside, val, signal[box])
        labels[box] = np.where(inside, np.uint8(1), labels[box])
        instances[box] = np.where(inside, np.uint16(i + 1), instances[box])
        cell_info.append(
            (centers[i], cell_axes[i], cell_rot, nuc_center, nuc_axes[i], nuc_rot)
        )

    # Vesicles: small bright spheres in the cytoplasm; centres snapped to voxel
    # centres so that each one labels at least one voxel.
    r_v_min = 0.08 * r0
    for c_cell, a_cell, rot_cell, c_nuc, a_nuc, rot_nuc in cell_info:
        n_ves = int(rng.poisson(8))
        for _ in range(n_ves):
            for _try in range(20):
                u = rng.normal(size=3)
                u *= rng.uniform() ** (1 / 3) / np.linalg.norm(u)
                p = c_cell + rot_cell @ (u * a_cell * 0.9)
                # keep clear of the nucleus (in its own frame)
                if np.sum((rot_nuc.T @ (p - c_nuc) / a_nuc) ** 2) > 1.3**2:
                    break
            else:
                continue
            idx = np.round(p / sp).astype(int)
            if np.any(idx < 0) or np.any(idx >= shp):
                continue
            c = idx * sp
            r = max(r0 * rng.uniform(0.08, 0.15), r_v_min)
            got = _ellipsoid_q(c, np.full(3, r), np.eye(3), sp, shape)
            assert got is not None
            box, q = got
            inside = (q < 1.0) & (labels[box] != 1)
            bright = rng.uniform(1.4, 2.8)
            signal[box] = np.where(inside, bright, signal[box])
            labels[box] = np.where(inside, np.uint8(2), labels[box])
            next_id = np.uint16(int(instances.max()) + 1)
            instances[box] = np.where(inside, next_id, instances[box])

    if not np.any(labels == 2):
        # Guarantee every class is present (tiny volumes): one vesicle on a
        # background voxel.
        free = np.flatnonzero(labels.ravel() == 0)
        if free.size:
            v = np.unravel_index(free[rng.integers(free.size)], shape)
            labels[v] = 2
            instances[v] = int(instances.max()) + 1
            signal[v] = 2.0

    # optics: PSF blur, out-of-focus haze, uneven illumination, autofluorescence
    psf = np.array([_PSF_SIGMA_AXIAL, _PSF_SIGMA_LATERAL, _PSF_SIGMA_LATERAL]) / sp
    img = ndi.gaussian_filter(signal, psf, mode="nearest", truncate=3.0)
    haze = _haze(signal, sp)
    img = (img + _HAZE_FRACTION * haze) * _illumination(
        rng, shape, sp
    ) + _AUTOFLUORESCENCE

    # detector: Poisson shot noise + Gaussian read noise
    if noise_f > 0:
        gain = 1.0 / noise_f**2  # photons per unit intensity
        img = rng.poisson(img.astype(np.float64) * gain) / gain
        img = img + rng.normal(scale=noise_f / 2, size=shape)
    img = np.clip(img, 0.0, None).astype(np.float32)

    return SyntheticVolume(
        image=img,
        labels=labels,
        spacing=sp_tuple,
        class_names=CLASS_NAMES,
        instances=instances,
    )


def _haze(signal: np.ndarray, sp: np.ndarray) -> np.ndarray:
    """Wide out-of-focus blur, computed on a 4x-binned grid for speed."""
    f = 4
    shape = signal.shape
    pad = [(0, (-n) % f) for n in shape]
    s = np.pad(signal, pad, mode="edge")
    b = s.reshape(s.shape[0] // f, f, s.shape[1] // f, f, s.shape[2] // f, f).mean(
        axis=(1, 3, 5)
    )
    sigma = np.array(
        [3.0 * _HAZE_SIGMA_LATERAL, _HAZE_SIGMA_LATERAL, _HAZE_SIGMA_LATERAL]
    )
    b = ndi.gaussian_filter(b, sigma / (sp * f), mode="nearest", truncate=3.0)
    up = ndi.zoom(b, f, order=1, mode="nearest", grid_mode=True)
    return up[: shape[0], : shape[1], : shape[2]]
