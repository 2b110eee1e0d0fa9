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

from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage as ndi

__all__ = ["CONTRAST_SCALE", "CONTRAST_SIGMAS", "SIGMAS", "ComputationCancelled", "compute_features", "feature_names"]

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
    img = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(img, (0.5, 99.5))
    scale = float(hi - lo)
    if not np.isfinite(scale) or scale <= 0:
        scale = 1.0
    out = img - np.float32(lo)
    out /= np.float32(scale)
    return out


def _sym_eigvals(
    a11: np.ndarray,
    a22: np.ndarray,
    a33: np.ndarray,
    a12: np.ndarray,
    a13: np.ndarray,
    a23: np.ndarray,
) -> np.ndarray:
    """Eigenvalues of voxel-wise symmetric 3x3 matrices, descending.

    Closed-form trigonometric solution (Smith 1961), vectorized in float64
    chunks: about 20x faster than ``np.linalg.eigvalsh`` on stacked matrices.
    Returns an array of shape ``(3,) + a11.shape``, float32.
    """
    shape = a11.shape
    n = a11.size
    out = np.empty((3, n), dtype=np.float32)
    flat = [x.reshape(-1) for x in (a11, a22, a33, a12, a13, a23)]
    step = 1 << 18
    for start in range(0, n, step):
        stop = min(start + step, n)
        m11, m22, m33, m12, m13, m23 = (f[start:stop].astype(np.float64) for f in flat)
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
        out[0, start:stop] = e1
        out[1, start:stop] = 3.0 * q - e1 - e3
        out[2, start:stop] = e3
    return out.reshape((3,) + shape)


def _gaussian_derivatives(
    img: np.ndarray, sigma: Sequence[float], truncate: float = 4.0
) -> dict[tuple[int, int, int], np.ndarray]:
    """All Gaussian derivatives of total order <= 2 of a 3D image.

    Separable filters are shared along a tree (19 1D passes instead of 30).
    Keys are derivative orders per axis, e.g. ``(0, 1, 1)`` = d2/dy dx.
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
                out[(oz, oy, ox)] = f1d(zy, 2, ox)
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


def _scale_columns(img: np.ndarray, rel: np.ndarray, s: float, out: np.ndarray) -> None:
    """The nine columns of scale ``s`` (see :func:`feature_names`) written into ``out`` ``(z, y, x, 9)``."""
    sig = s * rel
    sig_d = np.maximum(sig, MIN_SIGMA)
    _put(out, 0, ndi.gaussian_filter(img, sig, mode="reflect", output=np.float32))
    d = _gaussian_derivatives(img, sig_d)
    r = rel.astype(np.float32)
    gz, gy, gx = d[(1, 0, 0)] * r[0], d[(0, 1, 0)] * r[1], d[(0, 0, 1)] * r[2]
    hzz = d[(2, 0, 0)] * r[0] ** 2
    hyy = d[(0, 2, 0)] * r[1] ** 2
    hxx = d[(0, 0, 2)] * r[2] ** 2
    hzy = d[(1, 1, 0)] * (r[0] * r[1])
    hzx = d[(1, 0, 1)] * (r[0] * r[2])
    hyx = d[(0, 1, 1)] * (r[1] * r[2])
    del d
    _put(out, 1, hzz + hyy + hxx)
    _put(out, 2, np.sqrt(gz * gz + gy * gy + gx * gx))
    for i, eig in enumerate(_sym_eigvals(hzz, hyy, hxx, hzy, hzx, hyx)):
        _put(out, 3 + i, eig)
    del hzz, hyy, hxx, hzy, hzx, hyx
    outer = np.maximum(_ST_OUTER * sig, MIN_SIGMA)
    prods = [gz * gz, gy * gy, gx * gx, gz * gy, gz * gx, gy * gx]
    del gz, gy, gx
    st = [ndi.gaussian_filter(p, outer, mode="reflect", output=np.float32) for p in prods]
    del prods
    for i, eig in enumerate(_sym_eigvals(*st)):
        _put(out, 6 + i, eig)


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
        about 17 float32 copies of the volume at once (``feature_stack.feature_workers`` bounds them).
    dtype : numpy dtype
        ``np.float32`` (the default), or ``np.float16`` for half the memory: each column is then divided by its root
        mean square (a positive constant per column; the filters themselves run in float32).
    should_stop : callable, optional
        Asked before each scale and once at the end; once it is true no further scale starts and
        :class:`ComputationCancelled` is raised.

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

    def run(task: Callable[..., None], args: tuple) -> None:
        if not stopped():
            task(*args)

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
