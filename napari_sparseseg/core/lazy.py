"""Images larger than memory: a channels-first view and normalised features read on demand.

A lazy image is a zarr array, a dask array, a ``np.memmap`` or anything with
``.shape``, ``.dtype`` and NumPy basic slicing that is not an in-memory
``np.ndarray``. :class:`LazyFeatures` looks like the float32 ``(c, z, y, x)``
feature array of :func:`~.volume.normalize` but reads only the bounding
region of each index from the source and normalises it with fitted
:class:`~.volume.IntensityStats`.

zarr and dask are never imported here (a path is opened with zarr lazily).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .volume import IntensityStats, check_image_layout

__all__ = ["ChannelsFirst", "LazyFeatures", "is_lazy", "open_lazy"]


def is_lazy(image: Any) -> bool:
    """Whether ``image`` is read on demand (zarr, dask, memmap, ...) rather than held as an ``np.ndarray``."""
    if isinstance(image, np.memmap):
        return True
    if isinstance(image, np.ndarray):
        return False
    return all(hasattr(image, name) for name in ("shape", "dtype", "__getitem__"))


def open_lazy(source: Any) -> Any:
    """``source`` itself, or the zarr array at ``source`` if it is a path."""
    if isinstance(source, (str, os.PathLike)):
        import zarr

        return zarr.open_array(str(source), mode="r")
    return source


class ChannelsFirst:
    """``(c, z, y, x)`` view of a lazy ``(z, y, x)`` or 4D image, read with basic slices.

    Parameters
    ----------
    source : array-like or path
        The lazy image (or a zarr path).
    channel_axis : int, optional
        Channel axis of a 4D image; ``None`` for 3D.

    Raises
    ------
    ValueError
        As :func:`~.volume.as_channels_first` for dtype, dimensionality,
        channel axis or an empty axis (NaN/inf are checked on the statistics
        sample, see :meth:`~.volume.IntensityStats.fit`).
    """

    def __init__(self, source: Any, channel_axis: int | None = None) -> None:
        self.source = open_lazy(source)
        shape = tuple(int(s) for s in self.source.shape)
        self.dtype = np.dtype(self.source.dtype)
        check_image_layout(shape, self.dtype, channel_axis)
        self.channel_axis = None if channel_axis is None else channel_axis % 4
        if self.channel_axis is None:
            self.shape: tuple[int, int, int, int] = (1,) + shape  # type: ignore[assignment]
        else:
            rest = tuple(s for i, s in enumerate(shape) if i != self.channel_axis)
            self.shape = (shape[self.channel_axis],) + rest  # type: ignore[assignment]
        if min(self.shape[1:]) < 1:
            raise ValueError(f"image has an empty axis: shape {self.shape[1:]}")

    @property
    def ndim(self) -> int:
        return 4

    @property
    def chunks(self) -> tuple[int, int, int, int] | None:
        """Storage chunks in ``(c, z, y, x)`` order, when the source has them."""
        for name in ("chunksize", "chunks"):
            chunks = getattr(self.source, name, None)
            if isinstance(chunks, tuple) and len(chunks) == len(self.source.shape) and all(
                    isinstance(c, (int, np.integer)) for c in chunks):
                chunks = tuple(int(c) for c in chunks)
                if self.channel_axis is None:
                    return (1,) + chunks  # type: ignore[return-value]
                rest = tuple(c for i, c in enumerate(chunks) if i != self.channel_axis)
                return (chunks[self.channel_axis],) + rest  # type: ignore[return-value]
        return None

    def __getitem__(self, key: tuple) -> np.ndarray:
        """Read ``(channels, z, y, x)`` basic slices (channel entry: ``slice`` only) as a NumPy array."""
        if not isinstance(key, tuple) or len(key) != 4 or not all(isinstance(k, slice) for k in key):
            raise TypeError(f"ChannelsFirst reads four slices (c, z, y, x), got {key!r}")
        if self.channel_axis is None:
            if key[0] != slice(None):
                return np.asarray(self.source[key[1:]])[None][key[0]]
            return np.asarray(self.source[key[1:]])[None]
        ax = self.channel_axis
        src_key = list(key[1:])
        src_key.insert(ax, key[0])
        return np.moveaxis(np.asarray(self.source[tuple(src_key)]), ax, 0)

    def __getstate__(self) -> dict:
        return _picklable_source(self.__dict__, "source")

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(_restore_source(state, "source"))


def _picklable_source(state: dict, name: str) -> dict:
    """Replace a memmap (which would pickle its whole content) by how to reopen it."""
    state = dict(state)
    src = state[name]
    if isinstance(src, np.memmap) and src.filename is not None:
        state[name] = ("__memmap__", src.filename, src.dtype.str, src.shape, src.offset,
                       "F" if src.flags.f_contiguous and not src.flags.c_contiguous else "C")
    return state


def _restore_source(state: dict, name: str) -> dict:
    src = state[name]
    if isinstance(src, tuple) and src and src[0] == "__memmap__":
        _, filename, dtype, shape, offset, order = src
        state = dict(state)
        state[name] = np.memmap(filename, dtype=np.dtype(dtype), mode="r", shape=shape, offset=offset, order=order)
    return state


class LazyFeatures:
    """Normalised float32 ``(c_features, z, y, x)`` features of a lazy image, computed per read.

    Parameters
    ----------
    raw : array-like, path or ChannelsFirst
        The lazy image ``(z, y, x)`` (or 4D with ``channel_axis``): a zarr
        array or path, a dask array, a ``np.memmap``; or a
        :class:`ChannelsFirst` view of one.
    stats : IntensityStats
        Fitted statistics (see :meth:`~.volume.IntensityStats.fit`).
    channel_axis : int, optional
        Channel axis of a 4D ``raw``.

    Notes
    -----
    Indexing supports ``[:, z0:z1, y0:y1, x0:x1]`` (basic slices, any
    start/stop: what training patches and inference windows read) and
    ``[(slice(None),) + np.ix_(iz, iy, ix)]`` (an open grid of integer
    indices). Either reads only the bounding region of the index from the
    source. Pickling keeps the source (zarr and dask arrays pickle by
    reference to their store; a memmap is reopened from its file).
    """

    dtype = np.dtype(np.float32)
    ndim = 4

    def __init__(self, raw: Any, stats: IntensityStats, channel_axis: int | None = None) -> None:
        self.raw = raw if isinstance(raw, ChannelsFirst) else ChannelsFirst(raw, channel_axis)
        if self.raw.shape[0] != len(stats.channels):
            raise ValueError(f"statistics for {len(stats.channels)} channels do not fit an image with "
                             f"{self.raw.shape[0]} channels (shape {self.raw.shape})")
        self.stats = stats
        self.shape: tuple[int, int, int, int] = (stats.num_features,) + tuple(self.raw.shape[1:])  # type: ignore[assignment]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        """Bytes the features would take if materialised (they never are)."""
        return self.size * 4

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"LazyFeatures(shape={self.shape}, views={self.stats.views}, source={type(self.raw.source).__name__})"

    def __getitem__(self, key: Any) -> np.ndarray:
        """Features at ``key`` (see the class notes) as a float32 NumPy array."""
        if not isinstance(key, tuple):
            key = (key,)
        key = key + (slice(None),) * (4 - len(key))
        if len(key) != 4 or not isinstance(key[0], slice):
            raise TypeError(f"LazyFeatures supports [c, z, y, x] indexing with slices or an np.ix_ grid, got {key!r}")
        if key[0] != slice(None):
            return self[(slice(None),) + key[1:]][key[0]]
        spatial = key[1:]
        if all(isinstance(k, slice) for k in spatial):
            for k in spatial:
                if k.step not in (None, 1):
                    raise TypeError(f"LazyFeatures supports unit-step slices only, got {k}")
            bounds = [k.indices(n)[:2] for k, n in zip(spatial, self.shape[1:])]
            block = self.raw[(slice(None),) + tuple(slice(a, max(a, b)) for a, b in bounds)]
            return self.stats.apply(block)
        arrays = [np.asarray(k) for k in spatial]
        if not all(a.ndim == 3 and a.dtype.kind in "iu" and a.shape.count(1) >= 2 and a.shape[i] == a.size
                   for i, a in enumerate(arrays)):
            raise TypeError("LazyFeatures supports integer index grids from np.ix_(iz, iy, ix) only, got shapes "
                            f"{[a.shape for a in arrays]}")
        flat = [a.reshape(-1) for a in arrays]
        for a, n in zip(flat, self.shape[1:]):
            if a.size and (int(a.min()) < -n or int(a.max()) >= n):
                raise IndexError(f"index out of bounds for axis of size {n}")
        flat = [np.where(a < 0, a + n, a) for a, n in zip(flat, self.shape[1:])]
        lo = [int(a.min()) if a.size else 0 for a in flat]
        hi = [int(a.max()) + 1 if a.size else 0 for a in flat]
        block = self.raw[(slice(None),) + tuple(slice(a, b) for a, b in zip(lo, hi))]
        grid = np.ix_(*[a - o for a, o in zip(flat, lo)])
        return self.stats.apply(block[(slice(None),) + grid])

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        raise TypeError(f"refusing to materialise lazy features of shape {self.shape} "
                        f"({self.nbytes / 2**30:.2f} GiB); index a region instead")
