"""Random-forest baseline with ilastik-style pixel features.

The classic interactive-segmentation baseline (ilastik's pixel classification):
a bank of Gaussian-derivative filters at several scales, a random forest trained
on the labeled voxels, and a per-voxel prediction everywhere. A 3D U-Net trained
on the same strokes has to beat it.

Features are computed in 3D with the smoothing made isotropic in physical
units: for scale ``s`` the Gaussian sigma along axis ``a`` is
``s * min(spacing) / spacing[a]`` voxels, floored at ``MIN_SIGMA`` for the
derivative filters (a derivative kernel narrower than about half a voxel is all
zeros), and derivatives are taken in physical units (per ``min(spacing)``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from napari_sparseseg.core.encoding import MASK_DTYPE, UNLABELED, annotation_to_mask

__all__ = ["SIGMAS", "compute_features", "feature_names", "random_forest_segment"]

#: Scales (in units of the finest voxel step) of the filter bank, as in ilastik.
SIGMAS: tuple[float, ...] = (0.7, 1.0, 1.6, 3.5, 5.0)
#: Smallest per-axis sigma (voxels) used for derivative filters.
MIN_SIGMA: float = 0.5
#: Structure tensor outer scale as a fraction of the inner scale (ilastik: 0.5).
_ST_OUTER: float = 0.5
#: Voxels predicted per chunk (bounds the memory of the forest's output).
_PREDICT_CHUNK: int = 1 << 18


def feature_names(sigmas: Sequence[float] = SIGMAS) -> list[str]:
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
    return names


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


def compute_features(
    image: np.ndarray,
    spacing: Sequence[float] | None = None,
    sigmas: Sequence[float] = SIGMAS,
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

    Returns
    -------
    np.ndarray
        float32 array of shape (z, y, x, n_features).
    """
    img = _normalize(image)
    if img.ndim != 3:
        raise ValueError(f"image must be 3D (z, y, x); got shape {img.shape}")
    sp = np.ones(3) if spacing is None else np.asarray(spacing, dtype=np.float64)
    rel = sp.min() / sp  # voxel steps per finest step, per axis
    # d/d(physical) = d/d(voxel) * rel; derivative filters work in voxel units.
    feats = np.empty(img.shape + (len(feature_names(sigmas)),), dtype=np.float32)
    feats[..., 0] = img
    col = 1
    for s in sigmas:
        sig = s * rel
        sig_d = np.maximum(sig, MIN_SIGMA)
        feats[..., col] = ndi.gaussian_filter(img, sig, mode="reflect", output=np.float32)
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
        feats[..., col + 1] = hzz + hyy + hxx
        feats[..., col + 2] = np.sqrt(gz * gz + gy * gy + gx * gx)
        feats[..., col + 3 : col + 6] = np.moveaxis(_sym_eigvals(hzz, hyy, hxx, hzy, hzx, hyx), 0, -1)
        del hzz, hyy, hxx, hzy, hzx, hyx
        outer = np.maximum(_ST_OUTER * sig, MIN_SIGMA)
        prods = [gz * gz, gy * gy, gx * gx, gz * gy, gz * gx, gy * gx]
        del gz, gy, gx
        st = [ndi.gaussian_filter(p, outer, mode="reflect", output=np.float32) for p in prods]
        del prods
        feats[..., col + 6 : col + 9] = np.moveaxis(_sym_eigvals(*st), 0, -1)
        del st
        col += 9
    return feats


def _validate(image: np.ndarray, annotation: np.ndarray, spacing: Sequence[float] | None) -> None:
    if image.ndim != 3:
        raise ValueError(f"image must be 3D (z, y, x); got shape {image.shape}")
    if annotation.shape != image.shape:
        raise ValueError(f"annotation shape {annotation.shape} does not match image shape {image.shape}")
    if not np.issubdtype(image.dtype, np.number) or np.issubdtype(image.dtype, np.complexfloating):
        raise ValueError(f"image must be real-valued numeric; got dtype {image.dtype}")
    if not (np.issubdtype(annotation.dtype, np.integer) or annotation.dtype == bool):
        raise ValueError(f"annotation must hold integers; got dtype {annotation.dtype}")
    if spacing is not None:
        sp = np.asarray(spacing, dtype=np.float64)
        if sp.shape != (3,) or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
            raise ValueError(f"spacing must be 3 positive finite floats (z, y, x); got {spacing!r}")


def _stratified_subsample(y: np.ndarray, max_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Indices into ``y``: at most ``max_samples``, class proportions kept.

    Every class keeps at least ``min(count, max_samples // (10 * n_classes))``
    samples so that rare classes are not sampled away.
    """
    n = y.size
    if n <= max_samples:
        return np.arange(n)
    classes, counts = np.unique(y, return_counts=True)
    floor = max(1, max_samples // (10 * len(classes)))
    quota = np.maximum(np.floor(counts * (max_samples / n)).astype(np.int64), np.minimum(counts, floor))
    excess = int(quota.sum()) - max_samples
    if excess > 0:  # the floors of rare classes come out of the largest class
        quota[np.argmax(quota)] -= excess
    picks = []
    for c, q in zip(classes, quota):
        idx = np.flatnonzero(y == c)
        picks.append(rng.choice(idx, size=min(int(q), idx.size), replace=False))
    return np.sort(np.concatenate(picks))


def random_forest_segment(
    image: np.ndarray,
    annotation: np.ndarray,
    spacing: tuple[float, float, float] | None = None,
    *,
    seed: int = 0,
    n_estimators: int = 100,
    max_samples: int = 100_000,
) -> np.ndarray:
    """Dense class map from sparse annotation with a random forest.

    Parameters
    ----------
    image : np.ndarray
        Image, shape (z, y, x), any real numeric dtype.
    annotation : np.ndarray
        Annotation-encoded labels, shape (z, y, x): 0 unlabeled, 1 background,
        ``k + 1`` foreground class ``k``. At least two classes (background
        counts) must be labeled.
    spacing : tuple of 3 floats, optional
        Physical voxel size (z, y, x); the filter bank is isotropic in
        physical units. Isotropic when omitted.
    seed : int
        Seed of the training subsample and of the forest.
    n_estimators : int
        Number of trees.
    max_samples : int
        At most this many labeled voxels train the forest (class-stratified
        random subsample).

    Returns
    -------
    np.ndarray
        uint8 class map in mask encoding (0 background, 1..K classes), shape
        (z, y, x). Labeled voxels keep their annotated class.

    Raises
    ------
    ValueError
        On non-3D input, mismatched shapes, bad spacing, or fewer than two
        labeled classes.

    Notes
    -----
    The whole feature stack is held in memory: 46 float32 features, about
    200 bytes per voxel (~200 MB for a 1 Mvoxel volume). Features take ~3 s
    per Mvoxel on 2 cores; fitting dominates (20-45 s for 40-80 k labeled
    voxels on 2 shared cores).
    """
    from sklearn.ensemble import RandomForestClassifier

    image = np.asarray(image)
    annotation = np.asarray(annotation)
    _validate(image, annotation, spacing)
    if max_samples < 1:
        raise ValueError(f"max_samples must be >= 1; got {max_samples}")
    labeled = annotation != UNLABELED
    target = annotation_to_mask(annotation)
    classes = np.unique(target[labeled])
    if classes.size < 2:
        raise ValueError(
            "random_forest_segment needs at least 2 labeled classes (background counts); "
            f"got annotation values {np.unique(annotation).tolist()}"
        )

    feats = compute_features(image, spacing)
    n_feat = feats.shape[-1]
    flat = feats.reshape(-1, n_feat)
    lab_idx = np.flatnonzero(labeled.reshape(-1))
    y_all = target.reshape(-1)[lab_idx]
    rng = np.random.default_rng(seed)
    sel = _stratified_subsample(y_all, max_samples, rng)
    x_train = flat[lab_idx[sel]]
    y_train = y_all[sel]

    forest = RandomForestClassifier(n_estimators=n_estimators, n_jobs=-1, random_state=seed)
    forest.fit(x_train, y_train)

    pred = np.empty(flat.shape[0], dtype=MASK_DTYPE)
    cls = forest.classes_.astype(MASK_DTYPE)
    for start in range(0, flat.shape[0], _PREDICT_CHUNK):
        stop = min(start + _PREDICT_CHUNK, flat.shape[0])
        proba = forest.predict_proba(flat[start:stop])
        pred[start:stop] = cls[np.argmax(proba, axis=1)]
    out = pred.reshape(image.shape)
    out[labeled] = target[labeled]
    return out
