"""napari's paint history -> the voxels one stroke wrote, their values before and after, and the order it wrote them.

A napari Labels layer records each stroke (one undo item) as a list of *atoms*: the mask atoms
(``slice_key``, ``mask``, ``old_values``, ``new_value``) written by paint, fill and polygon, one per brush dab
in the order painted, and the ``(indices, old, new)`` tuples written by ``data_setitem``. This module reads
both into one :class:`PaintedVoxels`; it knows nothing of sessions or classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Coords = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class PaintedVoxels:
    """The voxels one stroke wrote.

    Attributes
    ----------
    coords : tuple of 3 int64 arrays
        ``(z, y, x)`` of each voxel written, each voxel once.
    new : np.ndarray
        Value written (layer values), per voxel.
    old : np.ndarray or None
        Value before the stroke, per voxel; ``None`` when an atom did not record it.
    order : np.ndarray
        Index of the first atom (brush dab) that wrote each voxel: 0 for the stroke's first dab.
    """

    coords: Coords
    new: np.ndarray
    old: np.ndarray | None
    order: np.ndarray

    @property
    def size(self) -> int:
        """Number of voxels written."""
        return int(self.new.size)

    def subset(self, keep: np.ndarray) -> PaintedVoxels:
        """The voxels where the boolean ``keep`` (one per voxel) is true."""
        return PaintedVoxels(tuple(c[keep] for c in self.coords), self.new[keep],  # type: ignore[arg-type]
                             None if self.old is None else self.old[keep], self.order[keep])


def _region(key: Sequence[Any], shape: Sequence[int]) -> tuple[slice, ...] | None:
    if len(key) != 3 or not all(isinstance(s, slice) for s in key):
        return None
    return tuple(slice(*s.indices(n)[:2]) for s, n in zip(key, shape))


def read_paint_item(item: Sequence[Any], shape: Sequence[int]) -> PaintedVoxels | None:
    """The voxels written by one napari paint-history item (a list of atoms).

    The values come from the atoms, not from the layer: napari emits ``events.paint`` for a single
    ``paint()`` call *before* it writes the data. Returns ``None`` for an atom it cannot read (the caller
    then resynchronises the whole volume, which is always correct).

    Parameters
    ----------
    item : sequence
        The ``value`` of a Labels layer's ``paint`` event.
    shape : sequence of 3 int
        The layer's shape ``(z, y, x)``.
    """
    # Each part: (region slices or index arrays, mask or None, new value(s), old value(s) or None)
    parts: list[tuple[Any, np.ndarray | None, Any, Any]] = []
    lo = np.array(shape, dtype=np.int64)
    hi = np.zeros(3, dtype=np.int64)
    for atom in item:
        if hasattr(atom, "slice_key"):
            region = _region(tuple(atom.slice_key), shape)
            if region is None:
                return None
            mask = None if atom.mask is None else np.asarray(atom.mask, bool)
            if mask is not None:
                mask = mask.reshape(tuple(s.stop - s.start for s in region))
            parts.append((region, mask, atom.new_value, getattr(atom, "old_values", None)))
            lo = np.minimum(lo, [s.start for s in region])
            hi = np.maximum(hi, [s.stop for s in region])
            continue
        try:
            indices, old, new = atom
        except (TypeError, ValueError):
            return None
        if len(indices) != 3:
            return None
        if all(isinstance(i, slice) for i in indices):
            region = _region(indices, shape)
            parts.append((region, None, new, old))
            lo = np.minimum(lo, [s.start for s in region])  # type: ignore[union-attr]
            hi = np.maximum(hi, [s.stop for s in region])  # type: ignore[union-attr]
            continue
        if any(isinstance(i, slice) for i in indices):
            return None
        arrays = tuple(np.ravel(a).astype(np.int64) for a in np.broadcast_arrays(*[np.asarray(i) for i in indices]))
        if arrays[0].size == 0:
            continue
        parts.append((arrays, None, new, old))
        lo = np.minimum(lo, [a.min() for a in arrays])
        hi = np.maximum(hi, [a.max() + 1 for a in arrays])
    empty = np.empty(0, np.int64)
    if not parts or np.any(hi <= lo):
        return PaintedVoxels((empty, empty.copy(), empty.copy()), empty.copy(), empty.copy(), empty.copy())
    box = tuple(int(n) for n in hi - lo)
    order = np.full(box, -1, dtype=np.int64)  # -1: not written
    values = np.zeros(box, dtype=np.int64)
    before = np.zeros(box, dtype=np.int64)
    known = True
    for index, (where, mask, new, old) in enumerate(parts):
        if isinstance(where[0], slice):
            local: Any = tuple(slice(s.start - o, s.stop - o) for s, o in zip(where, lo))
            region_shape = tuple(s.stop - s.start for s in where)
            sel = np.ones(region_shape, bool) if mask is None else mask
            new_values = np.broadcast_to(np.asarray(new), region_shape)[sel]
            old_values = None
            if old is not None:  # the values under the mask, or a snapshot of the region (or one value)
                old_arr = np.asarray(old)
                if old_arr.shape == new_values.shape:
                    old_values = old_arr
                elif old_arr.size in (1, sel.size):
                    old_values = np.broadcast_to(old_arr, region_shape)[sel]
            idx = tuple(n + s.start for n, s in zip(np.nonzero(sel), local))
        else:
            idx = tuple(a - o for a, o in zip(where, lo))
            new_values = np.ravel(np.broadcast_to(np.asarray(new), where[0].shape))
            old_values = None if old is None else np.ravel(np.broadcast_to(np.asarray(old), where[0].shape))
        first = order[idx] < 0
        if old_values is None:
            known = False
        else:
            before[tuple(i[first] for i in idx)] = np.asarray(old_values).ravel()[first]
        order[tuple(i[first] for i in idx)] = index
        values[idx] = new_values
    nz = np.nonzero(order >= 0)
    coords = tuple(n + o for n, o in zip(nz, lo))
    return PaintedVoxels(coords, values[nz], before[nz] if known else None, order[nz])  # type: ignore[arg-type]
