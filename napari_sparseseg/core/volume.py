"""Validation of input volumes and robust intensity normalization.

Everything here works on NumPy arrays; axes are ``(z, y, x)`` and, after
:func:`as_channels_first`, ``(c, z, y, x)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Spacing = tuple[float, float, float]

#: Percentiles used to clip intensities (robust to hot pixels and air in CT).
CLIP_PERCENTILES: tuple[float, float] = (0.5, 99.5)
#: Number of voxels sampled to estimate intensity statistics.
STATS_SAMPLE: int = 1_000_000
#: Quantile knots of the histogram-equalized view.
EQUALIZE_KNOTS: int = 1024


def validate_spacing(spacing: Sequence[float] | None) -> Spacing:
    """Return spacing as three positive floats ``(z, y, x)``; ``None`` means isotropic 1."""
    if spacing is None:
        return (1.0, 1.0, 1.0)
    values = tuple(float(s) for s in np.asarray(spacing, dtype=float).ravel())
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"spacing must be three positive finite numbers (z, y, x), got {spacing!r}")
    return values  # type: ignore[return-value]


def as_channels_first(image: np.ndarray, channel_axis: int | None = None) -> np.ndarray:
    """Validate an image and move its channel axis first.

    Parameters
    ----------
    image : np.ndarray
        ``(z, y, x)``, or 4D with the channel axis given by ``channel_axis``.
    channel_axis : int, optional
        Axis holding channels in a 4D image; must be ``None`` for 3D images.

    Returns
    -------
    np.ndarray
        ``(c, z, y, x)`` view or copy in the input dtype.

    Raises
    ------
    ValueError
        For 2D or 5D+ input, a 4D image without ``channel_axis``, a dtype that
        is not integer or floating point, NaN/inf values, or a constant image.
    """
    arr = np.asarray(image)
    kind = arr.dtype.kind
    if kind not in "uif":
        raise ValueError(
            f"unsupported image dtype {arr.dtype}; use an integer or floating-point image"
        )
    if arr.ndim == 3:
        if channel_axis is not None:
            raise ValueError(f"channel_axis={channel_axis} given for a 3D image of shape {arr.shape}; "
                             "a 3D image is read as (z, y, x)")
        arr = arr[None]
    elif arr.ndim == 4:
        if channel_axis is None:
            raise ValueError(f"got a 4D image of shape {arr.shape}; pass channel_axis to say which "
                             "axis holds channels (a time series is not a volume)")
        if not -4 <= channel_axis < 4:
            raise ValueError(f"channel_axis={channel_axis} is out of range for a 4D image")
        arr = np.moveaxis(arr, channel_axis, 0)
    else:
        raise ValueError(f"expected a 3D volume (z, y, x) or 4D with a channel axis, got {arr.ndim}D "
                         f"of shape {arr.shape}")
    if min(arr.shape[1:]) < 1:
        raise ValueError(f"image has an empty axis: shape {arr.shape[1:]}")
    if kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        if bad:
            raise ValueError(f"image holds {bad} NaN/inf values; replace them (e.g. np.nan_to_num) first")
    return arr


def _sample(channel: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    flat = channel.reshape(-1)
    if flat.size <= STATS_SAMPLE:
        return flat.astype(np.float64)
    return flat[rng.integers(0, flat.size, STATS_SAMPLE)].astype(np.float64)


def normalize(image: np.ndarray, views: Sequence[str] = ("linear", "equalized")) -> np.ndarray:
    """Normalise each channel into one or more views the net reads.

    Parameters
    ----------
    image : np.ndarray
        ``(c, z, y, x)`` from :func:`as_channels_first`.
    views : sequence of {"linear", "equalized"}
        ``linear``: clip to the 0.5/99.5 percentiles and scale to [0, 1] (works
        for Hounsfield units and photon counts alike). ``equalized``: the
        empirical CDF of the channel, which spreads densely populated
        intensity ranges (soft tissue in CT, dim cytoplasm in microscopy).

    Returns
    -------
    np.ndarray
        float32 ``(c * len(views), z, y, x)``.

    Raises
    ------
    ValueError
        If a channel is constant (nothing to segment) or a view is unknown.
    """
    rng = np.random.default_rng(0)
    out = np.empty((image.shape[0] * len(views),) + image.shape[1:], dtype=np.float32)
    k = 0
    for ci, channel in enumerate(image):
        sample = _sample(channel, rng)
        lo, hi = np.percentile(sample, CLIP_PERCENTILES)
        if not hi > lo:
            lo, hi = float(sample.min()), float(sample.max())
        if not hi > lo:
            raise ValueError(f"image channel {ci} is constant (all values {lo:g}); nothing to segment")
        for view in views:
            if view == "linear":
                np.clip(channel, lo, hi, out=out[k], casting="unsafe")
                out[k] -= lo
                out[k] /= hi - lo
            elif view == "equalized":
                levels = np.linspace(0.0, 1.0, EQUALIZE_KNOTS)
                knots = np.quantile(sample, levels)
                # Tied knots (e.g. a large zero background) keep the highest level.
                knots, last = np.unique(knots[::-1], return_index=True)
                out[k] = np.interp(channel.astype(np.float32, copy=False), knots, levels[::-1][last])
            else:
                raise ValueError(f"unknown intensity view {view!r}; use 'linear' or 'equalized'")
            k += 1
    return out


def mirror_index(index: np.ndarray, n: int) -> np.ndarray:
    """Fold indices into ``[0, n)`` by reflection about the edges (``-1 -> 1``, ``n -> n - 2``).

    The one mirroring rule for content past the volume edge, used by training
    patches and by inference windows alike (any distance, unlike ``np.pad``).
    """
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    folded = np.mod(index, period)
    return np.where(folded >= n, period - folded, folded)
