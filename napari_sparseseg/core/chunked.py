"""A sparse, chunked uint8 volume: memory proportional to the chunks that hold a nonzero value.

Used for the labels ``y`` and their sources of volumes larger than memory,
where a user paints a few slices of a many-GB image. Indexing follows NumPy
for what the annotation code does: basic slices/integers (training patches
read their bounding box), integer coordinate arrays (brush strokes) and
``np.ix_`` open grids.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import product
from typing import Any

import numpy as np

__all__ = ["SparseChunkedArray"]

Triple = tuple[int, int, int]


class SparseChunkedArray:
    """Fill-0 ``(z, y, x)`` array stored as a dict of chunk index -> dense chunk.

    A chunk is allocated when a nonzero value is written into it and dropped
    when writes make it all zero again, so memory is about
    ``n_chunks * prod(chunks) * itemsize``.

    Parameters
    ----------
    shape : sequence of int
        ``(z, y, x)`` of the whole volume.
    chunks : sequence of int
        Chunk shape; the default ``(8, 64, 64)`` (32 KiB of uint8) keeps a
        painted slice cheap in any orientation.
    dtype : dtype
        An integer dtype (default ``uint8``).

    Raises
    ------
    ValueError
        For a shape or chunks that are not three positive integers, or a
        non-integer dtype.
    """

    #: Largest number of elements ``np.asarray(array)`` may materialise.
    max_dense_size: int = 2**28

    def __init__(self, shape: Sequence[int], chunks: Sequence[int] = (8, 64, 64), dtype: Any = np.uint8) -> None:
        shape = tuple(int(s) for s in shape)
        chunks = tuple(int(c) for c in chunks)
        if len(shape) != 3 or min(shape) < 0:
            raise ValueError(f"shape must be three non-negative integers (z, y, x), got {shape}")
        if len(chunks) != 3 or min(chunks) < 1:
            raise ValueError(f"chunks must be three positive integers, got {chunks}")
        if np.dtype(dtype).kind not in "ub":
            raise ValueError(f"SparseChunkedArray holds unsigned integers, got dtype {np.dtype(dtype)}")
        self.shape: Triple = shape  # type: ignore[assignment]
        self.chunks: Triple = tuple(min(c, max(s, 1)) for c, s in zip(chunks, shape))  # type: ignore[assignment]
        self.dtype = np.dtype(dtype)
        self._data: dict[Triple, np.ndarray] = {}

    # -- array protocol ------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return 3

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def n_chunks(self) -> int:
        """Allocated chunks."""
        return len(self._data)

    @property
    def nbytes_allocated(self) -> int:
        """Bytes held by allocated chunks."""
        return sum(c.nbytes for c in self._data.values())

    def __repr__(self) -> str:
        return (f"SparseChunkedArray(shape={self.shape}, chunks={self.chunks}, dtype={self.dtype}, "
                f"allocated={self.n_chunks} chunks)")

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        if self.size > self.max_dense_size:
            raise MemoryError(f"refusing to materialise a sparse array of shape {self.shape} ({self.size} "
                              f"elements > max_dense_size={self.max_dense_size}); index a region instead")
        out = self[tuple(slice(None) for _ in range(3))]
        return out if dtype is None else out.astype(dtype)

    # -- chunk access --------------------------------------------------------------
    def _chunk_bounds(self, key: Triple) -> tuple[Triple, Triple]:
        start = tuple(k * c for k, c in zip(key, self.chunks))
        stop = tuple(min(a + c, s) for a, c, s in zip(start, self.chunks, self.shape))
        return start, stop  # type: ignore[return-value]

    def _new_chunk(self, key: Triple) -> np.ndarray:
        start, stop = self._chunk_bounds(key)
        return np.zeros(tuple(b - a for a, b in zip(start, stop)), self.dtype)

    def iter_chunks(self) -> Iterator[tuple[Triple, np.ndarray]]:
        """``(origin, chunk)`` of every allocated chunk (chunks may hold zeros only after an erase)."""
        for key in sorted(self._data):
            yield self._chunk_bounds(key)[0], self._data[key]

    def nonzero(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Coordinates of nonzero elements in C order, as :func:`np.nonzero` gives them."""
        parts = []
        for origin, chunk in self.iter_chunks():
            local = np.nonzero(chunk)
            if local[0].size:
                parts.append(np.stack([ix + o for ix, o in zip(local, origin)], axis=0))
        if not parts:
            return tuple(np.empty(0, np.int64) for _ in range(3))  # type: ignore[return-value]
        coords = np.concatenate(parts, axis=1).astype(np.int64)
        order = np.argsort(np.ravel_multi_index(tuple(coords), self.shape), kind="stable")
        return tuple(coords[:, order])  # type: ignore[return-value]

    # -- index normalisation ---------------------------------------------------------
    def _normalize_key(self, key: Any) -> tuple:
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            i = next(i for i, k in enumerate(key) if k is Ellipsis)
            key = key[:i] + (slice(None),) * (3 - len(key) + 1) + key[i + 1:]
        if len(key) > 3:
            raise IndexError(f"too many indices for a 3D array: {len(key)}")
        return tuple(key) + (slice(None),) * (3 - len(key))

    @staticmethod
    def _is_basic(k: Any) -> bool:
        return isinstance(k, (slice, int, np.integer))

    def _basic_bounds(self, key: tuple) -> tuple[list[tuple[int, int]], list[int]] | None:
        """``(start, stop)`` per axis and the axes to squeeze, for unit-step basic keys."""
        bounds, squeeze = [], []
        for axis, (k, n) in enumerate(zip(key, self.shape)):
            if isinstance(k, slice):
                a, b, step = k.indices(n)
                if step != 1:
                    return None
                bounds.append((a, max(a, b)))
            else:
                i = int(k)
                if not -n <= i < n:
                    raise IndexError(f"index {i} is out of bounds for axis {axis} with size {n}")
                i %= n
                bounds.append((i, i + 1))
                squeeze.append(axis)
        return bounds, squeeze

    @staticmethod
    def _open_grid(key: tuple) -> list[np.ndarray] | None:
        """The per-axis index vectors of an ``np.ix_`` grid key, else ``None``."""
        if not all(isinstance(k, np.ndarray) and k.ndim == 3 and k.dtype.kind in "iu" for k in key):
            return None
        if not all(k.shape[i] == k.size and k.shape.count(1) >= 2 for i, k in enumerate(key)):
            return None
        return [k.reshape(-1) for k in key]

    def _coordinates(self, key: tuple) -> tuple[np.ndarray, ...] | None:
        """Broadcast integer coordinate arrays of a key of arrays/ints only, else ``None``."""
        if any(isinstance(k, slice) for k in key):
            return None
        arrays = [np.asarray(k) for k in key]
        if not all(a.dtype.kind in "iu" for a in arrays):
            return None
        return tuple(np.broadcast_arrays(*arrays))

    def _wrap(self, ix: np.ndarray, axis: int) -> np.ndarray:
        n = self.shape[axis]
        ix = ix.astype(np.int64, copy=False)
        if ix.size and (int(ix.min()) < -n or int(ix.max()) >= n):
            raise IndexError(f"index out of bounds for axis {axis} with size {n}")
        return np.where(ix < 0, ix + n, ix)

    # -- reads -----------------------------------------------------------------------
    def _read_box(self, bounds: list[tuple[int, int]]) -> np.ndarray:
        out = np.zeros(tuple(b - a for a, b in bounds), self.dtype)
        if out.size == 0:
            return out
        ranges = [range(a // c, (b - 1) // c + 1) for (a, b), c in zip(bounds, self.chunks)]
        if len(self._data) < np.prod([len(r) for r in ranges]):
            keys = [k for k in self._data if all(k[i] in ranges[i] for i in range(3))]
        else:
            keys = [k for k in product(*ranges) if k in self._data]
        for key in keys:
            start, stop = self._chunk_bounds(key)
            lo = [max(a, s) for (a, _), s in zip(bounds, start)]
            hi = [min(b, e) for (_, b), e in zip(bounds, stop)]
            src = tuple(slice(x - s, y - s) for x, y, s in zip(lo, hi, start))
            dst = tuple(slice(x - a, y - a) for x, y, (a, _) in zip(lo, hi, bounds))
            out[dst] = self._data[key][src]
        return out

    def _read_grid(self, axes: list[np.ndarray]) -> np.ndarray:
        out = np.zeros(tuple(a.size for a in axes), self.dtype)
        if out.size == 0 or not self._data:
            return out
        cidx = [a // c for a, c in zip(axes, self.chunks)]
        for key in product(*[np.unique(c).tolist() for c in cidx]):
            chunk = self._data.get(key)
            if chunk is None:
                continue
            sel = [np.flatnonzero(c == k) for c, k in zip(cidx, key)]
            local = [a[s] - k * c for a, s, k, c in zip(axes, sel, key, self.chunks)]
            out[np.ix_(*sel)] = chunk[np.ix_(*local)]
        return out

    def _read_points(self, coords: tuple[np.ndarray, ...]) -> np.ndarray:
        shape = coords[0].shape
        flat = [self._wrap(c.reshape(-1), i) for i, c in enumerate(coords)]
        out = np.zeros(flat[0].size, self.dtype)
        for key, idx, local in self._group(flat):
            chunk = self._data.get(key)
            if chunk is not None:
                out[idx] = chunk[local]
        return out.reshape(shape)

    def _group(self, flat: list[np.ndarray]) -> Iterator[tuple[Triple, np.ndarray, tuple[np.ndarray, ...]]]:
        """Per chunk: its key, the positions (in input order) of points in it, and their local coordinates."""
        if flat[0].size == 0:
            return
        cidx = [a // c for a, c in zip(flat, self.chunks)]
        grid = [-(-s // c) for s, c in zip(self.shape, self.chunks)]
        lin = np.ravel_multi_index(tuple(cidx), grid)
        order = np.argsort(lin, kind="stable")
        lin_sorted = lin[order]
        cuts = np.flatnonzero(np.diff(lin_sorted)) + 1
        for part in np.split(order, cuts):
            key = tuple(int(c[part[0]]) for c in cidx)
            local = tuple(a[part] - k * c for a, k, c in zip(flat, key, self.chunks))
            yield key, part, local  # type: ignore[misc]

    def __getitem__(self, key: Any) -> np.ndarray:
        key = self._normalize_key(key)
        if all(self._is_basic(k) for k in key):
            basic = self._basic_bounds(key)
            if basic is not None:
                bounds, squeeze = basic
                out = self._read_box(bounds)
                return out.reshape([b - a for i, (a, b) in enumerate(bounds) if i not in squeeze]) if squeeze else out
        grid = self._open_grid(key)
        if grid is not None:
            return self._read_grid([self._wrap(a, i) for i, a in enumerate(grid)])
        coords = self._coordinates(key)
        if coords is not None:
            return self._read_points(coords)
        region, local = self._region_of(key)
        return self._read_box(region)[local]

    def _region_of(self, key: tuple) -> tuple[list[tuple[int, int]], tuple]:
        """Bounding region of any NumPy key, and the key relative to it (the general fallback)."""
        region, local = [], []
        for axis, (k, n) in enumerate(zip(key, self.shape)):
            if isinstance(k, slice):
                a, b, step = k.indices(n)
                ix = np.arange(a, b, step)
            else:
                ix = np.asarray(k)
                if ix.dtype == bool:
                    raise IndexError("boolean masks are not supported by SparseChunkedArray; use np.nonzero(mask)")
                ix = self._wrap(ix, axis)
            if ix.size == 0:
                region.append((0, 0))
                local.append(slice(0, 0) if isinstance(k, slice) else ix)
                continue
            lo, hi = int(ix.min()), int(ix.max()) + 1
            region.append((lo, hi))
            if isinstance(k, slice):
                a, b, step = k.indices(n)
                local.append(slice(a - lo, (b - lo) if b - lo >= 0 else None, step))
            else:
                local.append(ix - lo)
        size = int(np.prod([b - a for a, b in region]))
        if size > self.max_dense_size:
            raise MemoryError(f"index spans a region of {size} elements (> max_dense_size={self.max_dense_size}); "
                              "split the edit into smaller pieces")
        return region, tuple(local)

    # -- writes ----------------------------------------------------------------------
    def _write_chunk(self, key: Triple, src_index: Any, values: np.ndarray) -> None:
        chunk = self._data.get(key)
        if chunk is None:
            if not values.any():
                return
            chunk = self._data[key] = self._new_chunk(key)
        chunk[src_index] = values
        if not chunk.any():  # erased: give the memory back
            del self._data[key]

    def _write_box(self, bounds: list[tuple[int, int]], values: np.ndarray) -> None:
        shape = tuple(b - a for a, b in bounds)
        if 0 in shape:
            return
        vals = np.broadcast_to(np.asarray(values).astype(self.dtype, copy=False), shape)
        ranges = [range(a // c, (b - 1) // c + 1) for (a, b), c in zip(bounds, self.chunks)]
        for key in product(*ranges):
            start, stop = self._chunk_bounds(key)  # type: ignore[arg-type]
            lo = [max(a, s) for (a, _), s in zip(bounds, start)]
            hi = [min(b, e) for (_, b), e in zip(bounds, stop)]
            src = tuple(slice(x - s, y - s) for x, y, s in zip(lo, hi, start))
            dst = tuple(slice(x - a, y - a) for x, y, (a, _) in zip(lo, hi, bounds))
            self._write_chunk(key, src, vals[dst])  # type: ignore[arg-type]

    def __setitem__(self, key: Any, values: Any) -> None:
        key = self._normalize_key(key)
        values = np.asarray(values)
        if all(self._is_basic(k) for k in key):
            basic = self._basic_bounds(key)
            if basic is not None:
                bounds, squeeze = basic
                target = tuple(b - a for i, (a, b) in enumerate(bounds) if i not in squeeze)
                vals = np.broadcast_to(values, target)
                full = tuple(b - a for a, b in bounds)
                self._write_box(bounds, vals.reshape(full))
                return
        grid = self._open_grid(key)
        if grid is not None:
            axes = [self._wrap(a, i) for i, a in enumerate(grid)]
            vals = np.broadcast_to(values, tuple(a.size for a in axes)).astype(self.dtype, copy=False)
            cidx = [a // c for a, c in zip(axes, self.chunks)]
            for ckey in product(*[np.unique(c).tolist() for c in cidx]):
                sel = [np.flatnonzero(c == k) for c, k in zip(cidx, ckey)]
                local = np.ix_(*[a[s] - k * c for a, s, k, c in zip(axes, sel, ckey, self.chunks)])
                self._write_chunk(ckey, local, vals[np.ix_(*sel)])  # type: ignore[arg-type]
            return
        coords = self._coordinates(key)
        if coords is not None:
            vals = np.broadcast_to(values, coords[0].shape).astype(self.dtype, copy=False).reshape(-1)
            flat = [self._wrap(c.reshape(-1), i) for i, c in enumerate(coords)]
            for ckey, idx, local in self._group(flat):
                self._write_chunk(ckey, local, vals[idx])
            return
        region, local = self._region_of(key)
        block = self._read_box(region)
        block[local] = values
        self._write_box(region, block)
