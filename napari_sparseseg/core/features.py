"""ilastik-style pixel features: a bank of Gaussian-derivative filters at several physical scales.

The fast first responder (:mod:`.first_responder`) and the random-forest
baseline read the same stack. Features are computed in 3D with the smoothing
made isotropic in physical units: for scale ``s`` the Gaussian sigma along
axis ``a`` is ``s * min(spacing) / spacing[a]`` voxels, floored at
``MIN_SIGMA`` for the derivative filters (a derivative kernel narrower than
about half a voxel is all zeros), and derivatives are taken in physical units
(per ``min(spacing)``).

With ``contrast=True`` two *local contrast* columns follow the bank: the
image smoothed at :data:`CONTRAST_SIGMAS`, less its mean over
:data:`CONTRAST_SCALE` finest-voxel steps, over its standard deviation
there. They are unchanged where the signal fades or brightens slowly across
the volume (deeper slices of an embryo, a CT's field), which the bank is not:
a classifier fitted on one plane reads objects far from it by them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage as ndi

from .volume import needs_float64

__all__ = ["CONTRAST_SCALE", "CONTRAST_SIGMAS", "SCALE_TEMPORARIES", "SIGMAS", "ComputationCancelled",
           "compute_features", "feature_names"]

#: Scales (in units of the finest voxel step) of the filter bank, as in ilastik.
SIGMAS: tuple[float, ...] = (0.7, 1.0, 1.6, 3.5, 5.0)
#: Smallest per-axis sigma (voxels) used for derivative filters.
MIN_SIGMA: float = 0.5
#: Structure tensor outer scale as a fraction of the inner scale (ilastik: 0.5).
_ST_OUTER: float = 0.5
#: Scales (finest voxel steps) of the local contrast columns.
CONTRAST_SIGMAS: tuple[float, ...] = (1.0, 3.5)
#: Scale (finest voxel steps) over which the local contrast columns' mean and deviation are taken.
CONTRAST_SCALE: float = 20.0
#: Added to the local deviation (the image scaled to [0, 1] by its percentiles): flat regions stay finite.
_CONTRAST_FLOOR: float = 0.01
#: Largest magnitude written to a float16 stack (its largest finite value is 65504).
_HALF_LIMIT = np.float32(60000.0)


class ComputationCancelled(Exception):
    """The filter bank's computation was stopped before it finished (``compute_features(should_stop=...)``)."""


def feature_names(sigmas: Sequence[float] = SIGMAS, contrast: bool = False) -> list[str]:
    """Names of the columns returned by :func:`compute_features`, in order."""
    names = ["intensity"]
    for s in sigmas:
        names += [
            f"gaussian_{s}",
            f"log_{s}",
            f"gradient_magnitude_{s}",
            *(f"hessian_eig{i}_{s}" for i in range(3)),
            *(f"structure_tensor_eig{i}_{s}" for i in range(3)),
        ]
    return names + ([f"local_contrast_{s}" for s in CONTRAST_SIGMAS] if contrast else [])


def _normalize(image: np.ndarray) -> np.ndarray:
    """Robust min-max scaling with the 0.5 / 99.5 percentiles, as float32."""
    image = np.asarray(image)
    if image.dtype == bool:
        image = image.view(np.uint8)
    lo, hi = (float(v) for v in np.percentile(image, (0.5, 99.5)))  # in the image's own precision
    scale = hi - lo
    if not np.isfinite(scale) or scale <= 0:
        scale = 1.0
    if needs_float64(lo, hi):  # a contrast float32 cannot hold beside its offset: subtract in float64 first
        return ((np.asarray(image, np.float64) - lo) / scale).astype(np.float32)
    out = np.asarray(image, dtype=np.float32) - np.float32(lo)
    out /= np.float32(scale)
    return out


def _eigvals(m11: np.ndarray, m22: np.ndarray, m33: np.ndarray, m12: np.ndarray, m13: np.ndarray,
             m23: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eigenvalues, descending, of symmetric 3x3 matrices given by their six float64 entries (flat arrays).

    Closed-form trigonometric solution (Smith 1961): about 20x faster than ``np.linalg.eigvalsh`` on stacked
    matrices.
    """
    q = (m11 + m22 + m33) / 3.0
    p1 = m12 * m12 + m13 * m13 + m23 * m23
    b11, b22, b33 = m11 - q, m22 - q, m33 - q
    p = np.sqrt((b11 * b11 + b22 * b22 + b33 * b33 + 2.0 * p1) / 6.0)
    safe = np.where(p > 0, p, 1.0)
    det = b11 * (b22 * b33 - m23 * m23) - m12 * (m12 * b33 - m23 * m13) + m13 * (m12 * m23 - b22 * m13)
    r = np.clip(det / (2.0 * safe**3), -1.0, 1.0)
    phi = np.arccos(r) / 3.0
    e1 = q + 2.0 * p * np.cos(phi)
    e3 = q + 2.0 * p * np.cos(phi + 2.0 * np.pi / 3.0)
    return e1, 3.0 * q - e1 - e3, e3


#: Voxels of the float64 blocks the eigenvalues are computed in (a few MiB each).
_EIG_BLOCK = 1 << 16


def _put_eigvals(out: np.ndarray, col: int, entries: Sequence[np.ndarray]) -> None:
    """Write the eigenvalues (descending) of voxel-wise symmetric 3x3 matrices into columns ``col .. col + 2`` of
    ``out`` ``(z, y, x, F)``, as :func:`_put` would write each, in blocks of z planes: no whole-volume temporary.

    ``entries`` are the six float32 ``(z, y, x)`` arrays ``a11, a22, a33, a12, a13, a23``.
    """
    shape = entries[0].shape
    flat = [np.ascontiguousarray(a).reshape(-1) for a in entries]
    scales = [np.float32(1.0)] * 3
    if out.dtype != np.float32:  # each column's root mean square on _put's subsample, its values computed alone
        step = max(1, flat[0].size // 100_000)
        for i, values in enumerate(_eigvals(*(f[::step].astype(np.float64) for f in flat))):
            sample = values.astype(np.float32).astype(np.float64)
            rms = float(np.sqrt(np.mean(sample * sample))) if sample.size else 0.0
            scales[i] = np.float32(1.0 / rms) if np.isfinite(rms) and rms > 0 else np.float32(1.0)
    plane = max(1, int(np.prod(shape[1:])))
    planes = max(1, _EIG_BLOCK // plane)
    for z0 in range(0, shape[0], planes):
        z1 = min(z0 + planes, shape[0])
        block = _eigvals(*(f[z0 * plane: z1 * plane].astype(np.float64) for f in flat))
        for i, values in enumerate(block):
            values = values.astype(np.float32).reshape((z1 - z0,) + shape[1:])
            if out.dtype == np.float32:
                out[z0:z1, ..., col + i] = values
            else:
                out[z0:z1, ..., col + i] = np.clip(values * scales[i], -_HALF_LIMIT, _HALF_LIMIT)


def _gaussian_derivatives(
    img: np.ndarray, sigma: Sequence[float], truncate: float = 4.0
) -> dict[tuple[int, int, int], np.ndarray]:
    """The Gaussian derivatives of total order 1 and 2 of a 3D image (the smoothed image itself is not needed).

    Separable filters are shared along a tree (18 1D passes instead of 27). Keys are derivative orders per axis,
    e.g. ``(0, 1, 1)`` = d2/dy dx. At most two intermediates live beside the nine results.
    """
    out: dict[tuple[int, int, int], np.ndarray] = {}

    def f1d(x: np.ndarray, ax: int, order: int) -> np.ndarray:
        return ndi.gaussian_filter1d(
            x, sigma[ax], axis=ax, order=order, mode="reflect", truncate=truncate, output=np.float32
        )

    for oz in range(3):
        z = f1d(img, 0, oz)
        for oy in range(3 - oz):
            zy = f1d(z, 1, oy)
            for ox in range(3 - oz - oy):
                if oz + oy + ox:
                    out[(oz, oy, ox)] = f1d(zy, 2, ox)
            del zy
        del z
    return out


def _put(out: np.ndarray, col: int, values: np.ndarray) -> None:
    """Write one column. A float16 stack gets it divided by its root mean square (taken on a subsample; each
    column by a positive constant, which no tree split can tell from the original) so that values of any
    magnitude keep float16's three significant digits; a float32 one gets it as it is."""
    if out.dtype == np.float32:
        out[..., col] = values
        return
    flat = values.reshape(-1)
    sample = flat[:: max(1, flat.size // 100_000)].astype(np.float64)
    rms = float(np.sqrt(np.mean(sample * sample))) if sample.size else 0.0
    scale = np.float32(1.0 / rms) if np.isfinite(rms) and rms > 0 else np.float32(1.0)
    out[..., col] = np.clip(values * scale, -_HALF_LIMIT, _HALF_LIMIT)


#: Whole-volume float32 arrays :func:`_scale_columns` holds at most at once (the nine derivatives and the two
#: intermediates of their filter tree), beside the image and the stack; ``feature_stack.feature_workers`` counts it.
SCALE_TEMPORARIES = 11


def _scale_columns(img: np.ndarray, rel: np.ndarray, s: float, out: np.ndarray) -> None:
    """The nine columns of scale ``s`` (see :func:`feature_names`) written into ``out`` ``(z, y, x, 9)``.

    Each temporary is freed as soon as its columns are written (:data:`SCALE_TEMPORARIES` at most at once).
    """
    sig = s * rel
    sig_d = np.maximum(sig, MIN_SIGMA)
    _put(out, 0, ndi.gaussian_filter(img, sig, mode="reflect", output=np.float32))
    d = _gaussian_derivatives(img, sig_d)
    r = rel.astype(np.float32)
    factors = {(1, 0, 0): r[0], (0, 1, 0): r[1], (0, 0, 1): r[2], (2, 0, 0): r[0] ** 2, (0, 2, 0): r[1] ** 2,
               (0, 0, 2): r[2] ** 2, (1, 1, 0): r[0] * r[1], (1, 0, 1): r[0] * r[2], (0, 1, 1): r[1] * r[2]}
    for key, factor in factors.items():  # per voxel step -> per finest step, in place
        d[key] *= factor
    gz, gy, gx = d.pop((1, 0, 0)), d.pop((0, 1, 0)), d.pop((0, 0, 1))
    hessian = [d.pop(key) for key in ((2, 0, 0), (0, 2, 0), (0, 0, 2), (1, 1, 0), (1, 0, 1), (0, 1, 1))]
    laplacian = hessian[0] + hessian[1]
    laplacian += hessian[2]
    _put(out, 1, laplacian)
    del laplacian
    magnitude = gz * gz
    magnitude += gy * gy
    magnitude += gx * gx
    _put(out, 2, np.sqrt(magnitude, out=magnitude))
    del magnitude
    _put_eigvals(out, 3, hessian)
    del hessian
    outer = np.maximum(_ST_OUTER * sig, MIN_SIGMA)

    def smoothed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return ndi.gaussian_filter(a * b, outer, mode="reflect", output=np.float32)

    zz, zy, zx = smoothed(gz, gz), smoothed(gz, gy), smoothed(gz, gx)
    del gz
    yy, yx = smoothed(gy, gy), smoothed(gy, gx)
    del gy
    xx = smoothed(gx, gx)
    del gx
    _put_eigvals(out, 6, [zz, yy, xx, zy, zx, yx])


def _contrast_columns(img: np.ndarray, rel: np.ndarray, out: np.ndarray) -> None:
    """The local contrast columns (one per :data:`CONTRAST_SIGMAS`) written into ``out`` ``(z, y, x, 2)``."""
    big = CONTRAST_SCALE * rel
    mean = ndi.gaussian_filter(img, big, mode="reflect", output=np.float32)
    deviation = ndi.gaussian_filter(img * img, big, mode="reflect", output=np.float32)
    deviation -= mean * mean
    np.sqrt(np.maximum(deviation, 0, out=deviation), out=deviation)
    deviation += np.float32(_CONTRAST_FLOOR)
    for col, s in enumerate(CONTRAST_SIGMAS):
        smooth = ndi.gaussian_filter(img, s * rel, mode="reflect", output=np.float32)
        _put(out, col, (smooth - mean) / deviation)


def compute_features(
    image: np.ndarray,
    spacing: Sequence[float] | None = None,
    sigmas: Sequence[float] = SIGMAS,
    contrast: bool = False,
    workers: int = 1,
    dtype: type = np.float32,
    should_stop: Callable[[], bool] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """ilastik-style filter bank of a 3D image.

    Per scale ``s``: Gaussian smoothing, Laplacian of Gaussian, Gaussian
    gradient magnitude, Hessian-of-Gaussian eigenvalues (3) and
    structure-tensor eigenvalues (3, inner scale ``s``, outer ``s / 2``); plus
    the normalized intensity. See :func:`feature_names`.

    Parameters
    ----------
    image : np.ndarray
        Image, shape (z, y, x), any numeric dtype.
    spacing : sequence of 3 floats, optional
        Physical voxel size (z, y, x); isotropic when omitted.
    sigmas : sequence of float
        Scales in units of the finest voxel step.
    contrast : bool
        Append the local contrast columns (see the module docstring).
    workers : int
        Threads computing the scales (and the contrast columns) side by side; SciPy's filters release the GIL, so
        two threads take about half the time on two cores. The values do not depend on it. Each thread holds
        up to :data:`SCALE_TEMPORARIES` float32 copies of the volume at once (``feature_stack.feature_workers``
        bounds them).
    dtype : numpy dtype
        ``np.float32`` (the default), or ``np.float16`` for half the memory: each column is then divided by its root
        mean square (a positive constant per column; the filters themselves run in float32).
    should_stop : callable, optional
        Asked before each scale and once at the end; once it is true no further scale starts and
        :class:`ComputationCancelled` is raised.
    progress : callable, optional
        Called ``progress(done, total)`` as each of the ``total`` groups of columns (a scale, the contrast
        columns) is written, from the thread that wrote it; the groups take about as long as each other (within
        a factor of two: the widest filters first).

    Returns
    -------
    np.ndarray
        ``dtype`` array of shape (z, y, x, n_features).

    Raises
    ------
    ComputationCancelled
        When ``should_stop()`` became true.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if np.dtype(dtype) not in (np.float32, np.float16):
        raise ValueError(f"dtype must be float32 or float16, got {dtype!r}")
    img = _normalize(image)
    if img.ndim != 3:
        raise ValueError(f"image must be 3D (z, y, x); got shape {img.shape}")
    sp = np.ones(3) if spacing is None else np.asarray(spacing, dtype=np.float64)
    rel = sp.min() / sp  # voxel steps per finest step, per axis
    # d/d(physical) = d/d(voxel) * rel; derivative filters work in voxel units.
    feats = np.empty(img.shape + (len(feature_names(sigmas, contrast)),), dtype=dtype)
    _put(feats, 0, img)
    tasks = [(_scale_columns, (img, rel, s, feats[..., 1 + 9 * i: 10 + 9 * i])) for i, s in enumerate(sigmas)]
    if contrast:
        tasks.append((_contrast_columns, (img, rel, feats[..., 1 + 9 * len(sigmas):])))
    tasks.reverse()  # the widest filters first: the threads finish together
    stopped = should_stop or (lambda: False)
    finished, lock = [0], threading.Lock()

    def run(task: Callable[..., None], args: tuple) -> None:
        if not stopped():
            task(*args)
            with lock:
                finished[0] += 1
                done = finished[0]
            if progress is not None:
                progress(done, len(tasks))

    if workers == 1:
        for task, args in tasks:
            run(task, args)
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sparseseg-features") as pool:
            for future in [pool.submit(run, task, args) for task, args in tasks]:
                future.result()
    if stopped():
        raise ComputationCancelled("the filter bank's computation was cancelled")
    return feats
