"""Validation of input volumes and robust intensity normalization.

Everything here works on NumPy arrays; axes are ``(z, y, x)`` and, after
:func:`as_channels_first`, ``(c, z, y, x)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Spacing = tuple[float, float, float]

#: Percentiles used to clip intensities (robust to hot pixels and air in CT).
CLIP_PERCENTILES: tuple[float, float] = (0.5, 99.5)
#: Number of voxels sampled to estimate intensity statistics.
STATS_SAMPLE: int = 1_000_000
#: Quantile knots of the histogram-equalized view.
EQUALIZE_KNOTS: int = 1024
#: Intensity views a channel can be normalised into.
VIEWS: tuple[str, ...] = ("linear", "equalized")
#: Intensities beyond this magnitude are normalised in float64 (float32 differences would overflow).
FLOAT32_SAFE: float = 1e30


def validate_spacing(spacing: Sequence[float] | None) -> Spacing:
    """Return spacing as three positive floats ``(z, y, x)``; ``None`` means isotropic 1."""
    if spacing is None:
        return (1.0, 1.0, 1.0)
    values = tuple(float(s) for s in np.asarray(spacing, dtype=float).ravel())
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"spacing must be three positive finite numbers (z, y, x), got {spacing!r}")
    return values  # type: ignore[return-value]


def check_image_layout(shape: Sequence[int], dtype: np.dtype, channel_axis: int | None) -> None:
    """Raise ValueError unless ``shape``/``dtype`` describe a 3D image or a 4D one with ``channel_axis``.

    The checks of :func:`as_channels_first` that need no voxel values (shared
    with lazy images, see :mod:`.lazy`).
    """
    shape = tuple(shape)
    if np.dtype(dtype).kind not in "uif":
        raise ValueError(
            f"unsupported image dtype {dtype}; use an integer or floating-point image"
        )
    if len(shape) == 3:
        if channel_axis is not None:
            raise ValueError(f"channel_axis={channel_axis} given for a 3D image of shape {shape}; "
                             "a 3D image is read as (z, y, x)")
    elif len(shape) == 4:
        if channel_axis is None:
            raise ValueError(f"got a 4D image of shape {shape}; pass channel_axis to say which "
                             "axis holds channels (a time series is not a volume)")
        if not -4 <= channel_axis < 4:
            raise ValueError(f"channel_axis={channel_axis} is out of range for a 4D image")
    else:
        raise ValueError(f"expected a 3D volume (z, y, x) or 4D with a channel axis, got {len(shape)}D "
                         f"of shape {shape}")


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
    check_image_layout(arr.shape, arr.dtype, channel_axis)
    arr = arr[None] if arr.ndim == 3 else np.moveaxis(arr, channel_axis, 0)  # type: ignore[arg-type]
    if min(arr.shape[1:]) < 1:
        raise ValueError(f"image has an empty axis: shape {arr.shape[1:]}")
    if kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        if bad:
            raise ValueError(f"image holds {bad} NaN/inf values; replace them (e.g. np.nan_to_num) first")
    return arr


def _sample(channel: np.ndarray, rng: np.random.Generator, size: int = STATS_SAMPLE) -> np.ndarray:
    flat = channel.reshape(-1)
    if flat.size <= size:
        return flat.astype(np.float64)
    return flat[rng.integers(0, flat.size, size)].astype(np.float64)


def _chunk_shape(raw: Any) -> tuple[int, ...] | None:
    """Storage chunk shape of a zarr (``.chunks``) or dask (``.chunksize``) array, else ``None``."""
    for name in ("chunksize", "chunks"):
        chunks = getattr(raw, name, None)
        if isinstance(chunks, tuple) and len(chunks) == len(raw.shape) and all(
                isinstance(c, (int, np.integer)) for c in chunks):
            return tuple(int(c) for c in chunks)
    return None


def _block_samples(raw: Any, rng: np.random.Generator, size: int, max_blocks: int,
                   block_voxels: int) -> list[np.ndarray]:
    """Per channel, ``<= size`` voxels drawn from ``<= max_blocks`` random chunk-aligned blocks of ``raw``.

    Reads ``max_blocks`` blocks of at most ``block_voxels`` voxels each (per
    channel), never the whole array.
    """
    spatial = tuple(int(s) for s in raw.shape[1:])
    chunks = _chunk_shape(raw)
    block = np.array(chunks[1:] if chunks else (16, 256, 256), dtype=np.int64)
    block = np.minimum(np.maximum(block, 1), spatial)
    while block.prod() > block_voxels:  # an unchunked or coarsely chunked store: read sub-blocks
        axis = int(np.argmax(block))
        block[axis] = max(1, block[axis] // 2)
    grid = [-(-s // b) for s, b in zip(spatial, block)]
    n_grid = int(np.prod(grid))
    n = min(max_blocks, n_grid)
    picks = rng.choice(n_grid, size=n, replace=False) if n_grid <= 2**62 else rng.integers(0, n_grid, n)
    per_block = max(1, size // n)
    parts: list[list[np.ndarray]] = [[] for _ in range(raw.shape[0])]
    for flat in picks:
        origin = np.array(np.unravel_index(int(flat), grid)) * block
        key = (slice(None),) + tuple(slice(int(o), int(min(o + b, s))) for o, b, s in zip(origin, block, spatial))
        data = np.asarray(raw[key])
        for ci in range(data.shape[0]):
            parts[ci].append(_sample(data[ci], rng, per_block))
    return [np.concatenate(p) for p in parts]


def _check_sample_finite(sample: np.ndarray) -> None:
    bad = int(np.count_nonzero(~np.isfinite(sample)))
    if bad:
        raise ValueError(f"image holds {bad} NaN/inf values in a sample of {sample.size} voxels; "
                         "replace them (e.g. np.nan_to_num) first")


@dataclass(frozen=True, eq=False)
class ChannelStats:
    """Intensity statistics of one image channel.

    Attributes
    ----------
    lo, hi : float
        Clip range of the ``linear`` view (0.5/99.5 percentiles of the sample).
    knots : np.ndarray
        float64, increasing intensities of the ``equalized`` view's CDF.
    levels : np.ndarray
        float64 CDF value at each knot (same length as ``knots``).
    """

    lo: float
    hi: float
    knots: np.ndarray
    levels: np.ndarray

    @classmethod
    def from_sample(cls, sample: np.ndarray, channel: int) -> ChannelStats:
        """Fit from a float64 1D voxel sample; raises ValueError for a constant channel."""
        lo, hi = np.percentile(sample, CLIP_PERCENTILES)
        if not hi > lo:
            lo, hi = sample.min(), sample.max()
        if not hi > lo:
            raise ValueError(f"image channel {channel} is constant (all values {float(lo):g}); nothing to segment")
        levels = np.linspace(0.0, 1.0, EQUALIZE_KNOTS)
        knots = np.quantile(sample, levels)
        # Tied knots (e.g. a large zero background) keep the highest level.
        knots, last = np.unique(knots[::-1], return_index=True)
        return cls(lo, hi, knots, levels[::-1][last])


@dataclass(frozen=True, eq=False)
class IntensityStats:
    """Per-channel normalisation fitted once, applied to any block of the image.

    Attributes
    ----------
    channels : tuple of ChannelStats
        One entry per image channel.
    views : tuple of str
        ``"linear"`` and/or ``"equalized"`` (see :func:`normalize`).
    """

    channels: tuple[ChannelStats, ...]
    views: tuple[str, ...]

    def __post_init__(self) -> None:
        for view in self.views:
            if view not in VIEWS:
                raise ValueError(f"unknown intensity view {view!r}; use 'linear' or 'equalized'")

    @property
    def num_features(self) -> int:
        """Feature channels produced: ``len(channels) * len(views)``."""
        return len(self.channels) * len(self.views)

    @classmethod
    def fit(cls, raw: Any, views: Sequence[str] = ("linear", "equalized"), *, sample: int = STATS_SAMPLE,
            max_blocks: int = 32, block_voxels: int = 2**22, seed: int = 0) -> IntensityStats:
        """Estimate statistics from at most ``sample`` voxels per channel.

        Parameters
        ----------
        raw : array-like
            ``(c, z, y, x)`` image: a NumPy array, or a lazy array (zarr, dask,
            memmap, a channels-first view) with ``.shape`` and slicing.
        views : sequence of str
            Views to produce (see :func:`normalize`).
        sample : int
            Voxels per channel used for the percentiles and quantiles.
        max_blocks : int
            Lazy arrays larger than ``sample`` voxels: number of random
            chunk-aligned blocks read (the only data read).
        block_voxels : int
            Largest block read at once (per channel).
        seed : int
            Seed of the voxel and block choice.

        Raises
        ------
        ValueError
            For an unknown view, NaN/inf in the sample of a lazy array, or a
            constant channel (in the sample).
        """
        views = tuple(views)
        for view in views:
            if view not in VIEWS:
                raise ValueError(f"unknown intensity view {view!r}; use 'linear' or 'equalized'")
        rng = np.random.default_rng(seed)
        n_spatial = int(np.prod(raw.shape[1:]))
        if isinstance(raw, np.ndarray) and not isinstance(raw, np.memmap):
            samples = [_sample(channel, rng, sample) for channel in raw]
        elif n_spatial <= sample:
            # Small lazy image: read it whole, same numbers as the in-memory path.
            samples = [_sample(channel, rng, sample) for channel in np.asarray(raw[(slice(None),) * 4])]
        else:
            samples = _block_samples(raw, rng, sample, max_blocks, block_voxels)
        channels = []
        for ci, s in enumerate(samples):
            if not isinstance(raw, np.ndarray) or isinstance(raw, np.memmap):
                _check_sample_finite(s)
            channels.append(ChannelStats.from_sample(s, ci))
        return cls(tuple(channels), views)

    def apply(self, block: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Features of a raw block.

        Parameters
        ----------
        block : np.ndarray
            ``(c, ...)`` raw intensities (any spatial shape), ``c == len(channels)``.
        out : np.ndarray, optional
            float32 ``(c * len(views), ...)`` to write into.

        Returns
        -------
        np.ndarray
            float32 ``(c * len(views), ...)``: channel-major, views minor.
        """
        block = np.asarray(block)
        if block.shape[0] != len(self.channels):
            raise ValueError(f"block has {block.shape[0]} channels, the statistics were fitted on "
                             f"{len(self.channels)} (block shape {block.shape})")
        if out is None:
            out = np.empty((self.num_features,) + block.shape[1:], dtype=np.float32)
        k = 0
        for channel, st in zip(block, self.channels):
            wide = needs_float64(st.lo, st.hi)
            for view in self.views:
                if view == "linear" and wide:
                    out[k] = (np.clip(channel.astype(np.float64), st.lo, st.hi) - st.lo) / (st.hi - st.lo)
                elif view == "linear":
                    np.clip(channel, st.lo, st.hi, out=out[k], casting="unsafe")
                    out[k] -= st.lo
                    out[k] /= st.hi - st.lo
                else:
                    out[k] = np.interp(channel.astype(np.float64 if wide else np.float32, copy=False), st.knots,
                                       st.levels)
                k += 1
        return out


def needs_float64(lo: float, hi: float) -> bool:
    """Whether intensities in ``[lo, hi]`` must be scaled in float64: near float32's limit (``hi - lo`` overflows),
    or with a contrast so small beside their magnitude that float32 keeps fewer than about 128 levels of it (an
    offset of 1e9 on a contrast of 10 would become one value)."""
    magnitude = max(abs(lo), abs(hi))
    return magnitude > FLOAT32_SAFE or (hi - lo) < magnitude * 2.0 ** -16


def normalize(image: np.ndarray, views: Sequence[str] = ("linear", "equalized")) -> np.ndarray:
    """Normalise each channel into one or more views the net reads.

    Equivalent to ``IntensityStats.fit(image, views).apply(image)``.

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
    return IntensityStats.fit(image, views).apply(image)


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


def read_mirrored(array: Any, start: Sequence[int], stop: Sequence[int], shape: Sequence[int],
                  lead: int = 0) -> np.ndarray:
    """``array[..., start:stop]`` over the spatial axes, mirrored (:func:`mirror_index`) where it leaves ``shape``.

    The bounding box of the in-volume indices is read with basic slices (a
    view of a NumPy array, one block read of a lazy, chunked or zarr one), and
    only the axes that reach past the volume are then gathered, one
    :func:`numpy.take` each. Training patches and inference regions both read
    this way (a three-axis ``np.ix_`` gather took about 5 ms of a 6 ms patch
    read).

    Parameters
    ----------
    array : array-like
        ``(*lead_axes, Z, Y, X)``, indexed with basic slices only; the ``lead``
        leading axes (e.g. channels) are read whole.
    start, stop : sequence of int
        The ``(z, y, x)`` box; it may reach past ``shape`` on any side.
    shape : sequence of int
        ``(Z, Y, X)`` of the volume.
    lead : int
        Number of leading axes.

    Returns
    -------
    numpy.ndarray
        ``(*lead_axes, *(stop - start))``; a view of a NumPy ``array`` when the
        box lies inside the volume, so copy it before the array may change.
    """
    index = [mirror_index(np.arange(a, b), int(n)) for a, b, n in zip(start, stop, shape)]
    lo = [int(ix.min()) for ix in index]
    hi = [int(ix.max()) + 1 for ix in index]
    out = np.asarray(array[(slice(None),) * lead + tuple(slice(a, b) for a, b in zip(lo, hi))])
    for axis, (ix, a, b) in enumerate(zip(index, lo, hi), start=lead):
        if not np.array_equal(ix, np.arange(a, b)):  # mirrored along this axis only: one copy per such axis
            out = np.take(out, ix - a, axis=axis)
    return out
