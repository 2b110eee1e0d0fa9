"""Merges and splits the user paints on separate objects, and the split that learns from them.

:func:`~.instances.split_instances` cuts a class mask into objects where the
distance to the background dips by more than ``h``, a share of the typical
object's radius. That share suits some objects and not others: nuclei that
touch over a wide face need a small one, elongated or irregular cells a large
one. The user shows which by correcting a few objects on the objects layer:
painting one object's label over a neighbour (a merge) or a new label over part
of one (a split). :func:`find_edits` tells those edits from the split that was
shown; :func:`fit_depth_share` picks the share whose split reproduces the
user's objects best where they edited; :func:`resplit` splits the whole mask at
that share and keeps the user's objects where they edited (a correction always
wins).

An edited object and a shown one *pair* when they share at least
:data:`PAIR_SHARE` of the smaller of the two, so that a brush spilling a few
voxels onto a third object does not count as an edit of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .instances import DEPTH_SHARE, split_instances, typical_objects

#: Shares of the typical radius tried by :func:`fit_depth_share`.
DEPTH_SHARES = (0.05, 0.1, 0.15, 0.25, 0.35, 0.5, 0.7, 1.0)
#: Overlap, as a share of the smaller object, from which an edited and a shown object pair.
PAIR_SHARE = 0.1
#: Intersection over union from which an object of a split matches one of the user's.
MATCH_IOU = 0.5


@dataclass(frozen=True)
class ObjectEdits:
    """What the user changed on an objects layer.

    Attributes
    ----------
    touched : np.ndarray
        bool ``(z, y, x)``: the connected foreground regions that hold an edited object (merged, divided, or
        painted where no object was shown); the user's objects hold there.
    merges : int
        Objects the user made of two or more shown ones.
    splits : int
        Shown objects the user divided into two or more.
    """

    touched: np.ndarray
    merges: int
    splits: int

    @property
    def any(self) -> bool:
        """Whether the user merged or split anything."""
        return bool(self.merges or self.splits)


def compact_ids(ids: np.ndarray) -> np.ndarray:
    """int64 ids renumbered ``1..n`` in their order (0 stays 0): a user's label may be any number up to 2**32, or
    below 0 in a signed layer."""
    values, inverse = np.unique(ids, return_inverse=True)
    renumbered = np.cumsum(values != 0)  # each nonzero value's rank among the nonzero ones, from 1
    renumbered[values == 0] = 0
    return renumbered[inverse.reshape(ids.shape)].astype(np.int64)


def _pairs(shown: np.ndarray, edited: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(m, 2)`` shown and edited ids (compact, :func:`compact_ids`) that pair (:data:`PAIR_SHARE`), and the ``(m,)``
    voxels they share."""
    both = (shown > 0) & (edited > 0)
    a, e = shown[both].astype(np.int64), edited[both].astype(np.int64)
    keys, counts = np.unique(a * (int(edited.max()) + 1) + e, return_counts=True)
    ids = np.stack([keys // (int(edited.max()) + 1), keys % (int(edited.max()) + 1)], axis=1)
    size_a = np.bincount(shown.ravel().astype(np.int64))
    size_e = np.bincount(edited.ravel().astype(np.int64))
    keep = counts >= PAIR_SHARE * np.minimum(size_a[ids[:, 0]], size_e[ids[:, 1]])
    return ids[keep], counts[keep]


def find_edits(shown: np.ndarray, edited: np.ndarray) -> ObjectEdits:
    """The merges and splits that turn the objects ``shown`` into ``edited``.

    Parameters
    ----------
    shown, edited : np.ndarray
        ``(z, y, x)`` integer object ids (0 background): the split shown to the user and the layer as they left
        it.

    Returns
    -------
    ObjectEdits
        The regions (connected components of ``edited``'s foreground) that hold a merged or divided object.
    """
    from scipy import ndimage as ndi

    if shown.shape != edited.shape or shown.ndim != 3:
        raise ValueError(f"shown {shown.shape} and edited {edited.shape} objects must be the same 3D shape")
    shown, edited = compact_ids(shown), compact_ids(edited)
    pairs, _ = _pairs(shown, edited)
    shown_ids, per_shown = np.unique(pairs[:, 0], return_counts=True)
    edited_ids, per_edited = np.unique(pairs[:, 1], return_counts=True)
    divided, merged = shown_ids[per_shown > 1], edited_ids[per_edited > 1]
    added = np.setdiff1d(np.unique(edited[edited > 0]), pairs[:, 1])  # painted where no shown object was
    involved = np.isin(shown, divided) | np.isin(edited, merged) | np.isin(edited, added)
    regions, _ = ndi.label(edited > 0)
    touched = np.isin(regions, np.unique(regions[involved & (regions > 0)]))
    return ObjectEdits(touched & (regions > 0), merges=int(merged.size), splits=int(divided.size))


def matched_share(truth: np.ndarray, objects: np.ndarray, iou: float = MATCH_IOU) -> float:
    """Object F1 of ``objects`` against ``truth`` (``(z, y, x)`` ids): objects paired one to one at ``iou``."""
    t, p = compact_ids(truth).ravel(), compact_ids(objects).ravel()
    n_t, n_p = len(np.unique(t[t > 0])), len(np.unique(p[p > 0]))
    if not n_t + n_p:
        return 1.0
    both = (t > 0) & (p > 0)
    keys, overlap = np.unique(t[both] * (int(p.max()) + 1) + p[both], return_counts=True)
    ti, pi = keys // (int(p.max()) + 1), keys % (int(p.max()) + 1)
    union = np.bincount(t)[ti] + np.bincount(p)[pi] - overlap
    matches = int(np.count_nonzero(overlap / union > iou))  # above 0.5, each object matches at most one
    return 2.0 * matches / (n_t + n_p)


def fit_depth_share(mask: np.ndarray, edited: np.ndarray, touched: np.ndarray,
                    spacing: Sequence[float] = (1.0, 1.0, 1.0), *, current: float = DEPTH_SHARE,
                    candidates: Sequence[float] = DEPTH_SHARES,
                    typical: Mapping[int, tuple[float, float]] | None = None) -> float:
    """The share of the typical radius whose split reproduces the user's objects best where they edited.

    Parameters
    ----------
    mask : np.ndarray
        ``(z, y, x)`` class map (0 background) the objects were split from.
    edited : np.ndarray
        ``(z, y, x)`` the user's object ids.
    touched : np.ndarray
        bool ``(z, y, x)``: where the user edited (:attr:`ObjectEdits.touched`).
    spacing : sequence of float
        Voxel size ``(z, y, x)``.
    current : float
        The share in use; kept on a tie, and returned when nothing was touched.
    candidates : sequence of float
        Shares to try, each in ``[0, 1]``.
    typical : mapping, optional
        :func:`~.instances.typical_objects` of ``mask`` when already measured.

    Returns
    -------
    float
        The best candidate (object F1 at IoU 0.5 on the touched regions), the nearest to ``current`` on a tie.
    """
    if not touched.any():
        return float(current)
    if typical is None:  # the scale of the whole mask, not of the touched part
        typical = typical_objects(mask, spacing)
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(touched))
    part = np.where(touched[box], mask[box], 0)
    truth = np.where(touched[box], edited[box], 0)
    best, best_score = float(current), -1.0
    for share in sorted(candidates, key=lambda s: abs(s - current)):
        score = matched_share(truth, split_instances(part, spacing, depth_share=share, typical=typical,
                                                     min_volume_share=0.0))
        if score > best_score + 1e-9:
            best, best_score = float(share), score
    return best


def resplit(mask: np.ndarray, edited: np.ndarray, edits: ObjectEdits, share: float,
            spacing: Sequence[float] = (1.0, 1.0, 1.0), *,
            typical: Mapping[int, tuple[float, float]] | None = None) -> np.ndarray:
    """uint32 ``(z, y, x)``: the mask split at ``share``, with the user's objects where they edited.

    The user's objects keep their shapes and get ids after the split's, numbered ``1..N`` without gaps.
    ``typical``: :func:`~.instances.typical_objects` of ``mask`` when already measured.
    """
    if typical is None:
        typical = typical_objects(mask, spacing)
    objects = split_instances(np.where(edits.touched, 0, mask), spacing, depth_share=share, typical=typical)
    edited = compact_ids(edited)
    kept = np.unique(edited[edits.touched])
    kept = kept[kept > 0]
    lookup = np.zeros(int(edited.max()) + 1, np.uint32)
    lookup[kept] = np.arange(int(objects.max()) + 1, int(objects.max()) + 1 + kept.size, dtype=np.uint32)
    objects[edits.touched] = lookup[edited[edits.touched]]
    return objects
