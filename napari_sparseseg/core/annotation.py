"""The data model of one annotated volume: image, labels ``y``, weights ``w(y)``.

Thread safety: edits come from the GUI thread while the trainer reads patches on a worker thread. Every public
method takes the volume's lock, so a patch is read from one consistent revision and an edit is never half-seen.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from .box import Box
from .chunked import SparseChunkedArray
from .encoding import ANNOTATION_DTYPE, UNLABELED
from .holdout import HoldOut
from .lazy import ChannelsFirst, LazyFeatures, is_lazy
from .volume import IntensityStats, Spacing, as_channels_first, normalize, read_mirrored, validate_spacing

#: Edit boxes kept for :meth:`AnnotatedVolume.changes_since`; beyond it the older half is merged into one box
#: (a superset of what changed), so a long session's memory stays bounded.
MAX_CHANGE_RECORDS = 4096
#: Chunk shape of the sparse labels/source of a lazy (larger than memory) volume.
LABEL_CHUNKS: tuple[int, int, int] = (8, 64, 64)


class Source(IntEnum):
    """Where a label came from; sets its source factor in ``w``."""

    NONE = 0
    PAINTED = 1
    CORRECTED = 2


@dataclass(frozen=True)
class Patch:
    """A training sample cut from the volume.

    Attributes
    ----------
    image : np.ndarray
        float32 ``(c, pz, py, px)`` normalised intensities; zero-padded outside
        the volume.
    target : np.ndarray
        int64 ``(pz, py, px)`` class index (``0`` on unlabeled voxels).
    weight : np.ndarray
        float32 ``(pz, py, px)``, ``0`` on unlabeled and padded voxels.
    start : tuple of int
        ``(z, y, x)`` volume coordinate of the patch's first voxel (may be
        negative: the patch may reach past the volume).
    """

    image: np.ndarray
    target: np.ndarray
    weight: np.ndarray
    start: tuple[int, int, int] = (0, 0, 0)


@dataclass(frozen=True)
class PseudoLabels:
    """Another learner's answers for the unlabeled voxels, that training patches read at a low weight.

    Attributes
    ----------
    classes : np.ndarray
        uint8 ``(z, y, x)`` class index ``0..K`` predicted.
    confidence : np.ndarray
        float16 ``(z, y, x)`` in ``[0, 1]``; 0 where the answer is not to be trained on.
    weight : float
        Factor on ``confidence`` x the class weight: the voxel weight of a pseudo-label (a label weighs its
        class weight, about 1).
    """

    classes: np.ndarray
    confidence: np.ndarray
    weight: float


class AnnotatedVolume:
    """Image, sparse labels ``y`` and their weights ``w(y)`` with a revision counter.

    Parameters
    ----------
    image : np.ndarray or lazy array
        ``(z, y, x)`` or 4D with ``channel_axis``; any integer or float dtype.
        A zarr or dask array, a ``np.memmap`` (or anything with ``shape``,
        ``dtype`` and slicing that is not an ``np.ndarray``) is never loaded:
        ``features`` become a :class:`~.lazy.LazyFeatures` (intensity
        statistics from a bounded sample of chunks) and ``labels``/``source``
        :class:`~.chunked.SparseChunkedArray` (memory per painted chunk).
    num_classes : int
        Foreground classes ``K`` (the net predicts ``K + 1`` channels).
    spacing : sequence of float, optional
        Physical voxel size ``(z, y, x)``.
    channel_axis : int, optional
        Channel axis of a 4D image.
    annotation : np.ndarray, optional
        Initial labels in annotation encoding (0 = unlabeled, 1 = background,
        ``k + 1`` = class ``k``), shape ``(z, y, x)``.
    intensity_views : sequence of str
        Normalised views per channel (see :func:`~.volume.normalize`).

    Raises
    ------
    ValueError
        For invalid images (see :func:`~.volume.as_channels_first`), or an
        annotation whose shape differs from the image or whose values exceed
        ``num_classes + 1``.
    """

    def __init__(
        self,
        image: np.ndarray,
        *,
        num_classes: int = 1,
        spacing: Sequence[float] | None = None,
        channel_axis: int | None = None,
        annotation: np.ndarray | None = None,
        intensity_views: Sequence[str] = ("linear", "equalized"),
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1 foreground class, got {num_classes}")
        #: True for a zarr/dask/memmap image: features read on demand, sparse chunked labels.
        self.lazy = is_lazy(image)
        raw = ChannelsFirst(image, channel_axis) if self.lazy else as_channels_first(image, channel_axis)
        self.spacing: Spacing = validate_spacing(spacing)
        self.shape: tuple[int, int, int] = tuple(int(s) for s in raw.shape[1:])  # type: ignore[assignment]
        self.image_channels = raw.shape[0]
        self.num_classes = int(num_classes)
        self.features: np.ndarray | LazyFeatures
        self.labels: np.ndarray | SparseChunkedArray
        self.source: np.ndarray | SparseChunkedArray
        if self.lazy:
            #: float32 (c, z, y, x) network input, normalised per read from a bounded-sample fit.
            self.features = LazyFeatures(raw, IntensityStats.fit(raw, intensity_views))
            self.labels = SparseChunkedArray(self.shape, LABEL_CHUNKS, ANNOTATION_DTYPE)
            self.source = SparseChunkedArray(self.shape, LABEL_CHUNKS, np.uint8)
        else:
            #: float32 (c, z, y, x) network input.
            self.features = normalize(raw, intensity_views)
            self.labels = np.zeros(self.shape, dtype=ANNOTATION_DTYPE)
            self.source = np.zeros(self.shape, dtype=np.uint8)
        self.revision = 0
        self._lock = threading.RLock()
        self._counts = np.zeros(256, dtype=np.int64)
        self._counts[0] = self.labels.size
        #: Labeled voxels per plane along each axis (z, y, x), for :meth:`plane_coverage`.
        self._plane_counts = tuple(np.zeros(n, np.int64) for n in self.shape)
        self._changes: list[tuple[int, Box]] = []
        #: Labels in these blocks get weight 0 in training patches (:mod:`.holdout`; None: every label trains).
        self.holdout: HoldOut | None = None
        #: Soft targets for unlabeled voxels from the first responder (None: unlabeled voxels weigh 0).
        self.pseudo: PseudoLabels | None = None
        if annotation is not None:
            self.set_labels(Box.full(self.shape).slices, annotation, Source.PAINTED)

    # -- edits -----------------------------------------------------------------
    def _check_values(self, values: np.ndarray) -> None:
        if values.dtype.kind == "f" and values.size and not (np.isfinite(values) & (values == np.round(values))).all():
            raise ValueError(f"label values must be whole numbers, got {values.dtype} with fractions or NaN")
        if values.size and int(values.max()) > self.num_classes + 1:
            raise ValueError(
                f"label value {int(values.max())} exceeds the {self.num_classes} foreground classes "
                f"(annotation values are 0 = unlabeled, 1 = background, 2..{self.num_classes + 1})"
            )
        if values.size and int(values.min()) < 0:
            raise ValueError(f"negative label value {int(values.min())}")

    def set_labels(self, index: tuple, values: np.ndarray | int, source: Source = Source.PAINTED) -> Box:
        """Write labels at a NumPy index (slices or coordinate arrays) of ``(z, y, x)``.

        Parameters
        ----------
        index : tuple
            Three slices or integers, or three equally long integer arrays
            (a voxel listed twice is written once, with its last value).
        values : np.ndarray or int
            Annotation-encoded values broadcastable to ``labels[index]``;
            ``0`` erases (the voxels become unlabeled again).
        source : Source
            ``PAINTED`` or ``CORRECTED``; sets the source factor of ``w``.

        Returns
        -------
        Box
            Bounding box of the change (empty if nothing was written).
        """
        vals = np.asarray(values)
        self._check_values(vals)
        if isinstance(values, np.ndarray) and all(isinstance(i, slice) for i in index):
            target_shape = np.broadcast_to(np.zeros((), np.uint8), self.shape)[index].shape  # no voxel read
            if vals.shape != target_shape:
                raise ValueError(f"labels of shape {vals.shape} do not match the image region {target_shape}")
        if not _is_basic(index):
            if any(isinstance(i, slice) for i in index):
                raise ValueError("index edits with three slices/integers or three integer arrays, not a mix of "
                                 "slices and arrays")
            index, vals = self._unique_coordinates(index, vals)
        else:  # a negative plane number counts from the end, as NumPy reads it (the box and plane counts too)
            index = tuple(i if isinstance(i, slice) or int(i) >= 0 else int(i) + n for i, n in zip(index, self.shape))
        box = Box.from_slices(index, self.shape)
        if box.empty:
            return box
        with self._lock:
            old = self.labels[index]
            self._counts -= np.bincount(old.ravel(), minlength=256)[:256]
            was_labeled = old > UNLABELED  # a copy: ``old`` may be a view that the write below changes
            self.labels[index] = vals
            new = self.labels[index]
            self._counts += np.bincount(new.ravel(), minlength=256)[:256]
            self._count_planes(index, box, was_labeled, new > UNLABELED)
            self.source[index] = np.where(new > UNLABELED, int(source), int(Source.NONE))
            self.revision += 1
            self._changes.append((self.revision, box))
            if len(self._changes) > MAX_CHANGE_RECORDS:  # merge the older half: a superset box, memory bounded
                old, self._changes = self._changes[: MAX_CHANGE_RECORDS // 2], self._changes[MAX_CHANGE_RECORDS // 2:]
                merged = old[0][1]
                for _, b in old[1:]:
                    merged = merged.union(b)
                self._changes.insert(0, (old[-1][0], merged))
        return box

    def _unique_coordinates(self, index: tuple, values: np.ndarray) -> tuple[tuple, np.ndarray]:
        """Coordinate arrays (and their values) with each voxel once, its last value kept as NumPy writes it (a voxel
        listed twice would otherwise be counted twice in the class and plane counts)."""
        grid = np.broadcast_arrays(*map(np.asarray, index))
        if grid[0].size == 0:
            return index, values
        coords = [np.where(c < 0, c + n, c).ravel() for c, n in zip(grid, self.shape)]
        flat = np.ravel_multi_index(coords, self.shape)
        _, last_reversed = np.unique(flat[::-1], return_index=True)
        keep = np.sort(flat.size - 1 - last_reversed)
        if values.ndim:
            values = np.broadcast_to(values, grid[0].shape).ravel()[keep]
        return tuple(c[keep] for c in coords), values

    def _count_planes(self, index: tuple, box: Box, was_labeled: np.ndarray, is_labeled: np.ndarray) -> None:
        """Update the per-plane labeled counts (:meth:`plane_coverage`) after writing ``labels[index]``.

        ``was_labeled`` and ``is_labeled`` are ``labels[index] > UNLABELED``
        before and after the write: the box content for slices and integers,
        one value per coordinate for (deduplicated) integer arrays.
        """
        if _is_basic(index):  # per-plane sums of the two masks: no voxel-sized integer array
            was_labeled, is_labeled = was_labeled.reshape(box.shape), is_labeled.reshape(box.shape)
            for axis, counts in enumerate(self._plane_counts):
                others = tuple(a for a in range(3) if a != axis)
                counts[box.start[axis] : box.stop[axis]] += (is_labeled.sum(axis=others, dtype=np.int64)
                                                             - was_labeled.sum(axis=others, dtype=np.int64))
            return
        change = is_labeled.astype(np.int64) - was_labeled  # one entry per (unique) coordinate
        for axis, counts in enumerate(self._plane_counts):
            np.add.at(counts, index[axis], change)

    def changes_since(self, revision: int) -> Box:
        """Union of the boxes edited after ``revision`` (empty box if none)."""
        with self._lock:
            box = Box((0, 0, 0), (0, 0, 0))
            for rev, b in self._changes:
                if rev > revision:
                    box = box.union(b)
            return box

    def snapshot(self, box: Box) -> tuple[np.ndarray, np.ndarray]:
        """Copies of ``(labels, source)`` in ``box``, read together under the lock (one revision)."""
        with self._lock:
            return self.labels[box.slices].copy(), self.source[box.slices].copy()

    # -- statistics and weights ------------------------------------------------------
    @property
    def class_counts(self) -> np.ndarray:
        """Labeled voxel counts per class index ``0..K`` (background first)."""
        with self._lock:
            return self._counts[1 : self.num_classes + 2].copy()

    @property
    def n_labeled(self) -> int:
        return int(self.class_counts.sum())

    def plane_coverage(self) -> float:
        """How densely the labels fill the planes they lie in, in ``[0, 1]``.

        For each axis, the labeled voxels' mean fraction of their plane (of
        that axis) that is labeled; summed over the three axes and capped at
        1. Whole annotated slices in any orientation give 1 (each voxel lies
        in a fully labeled plane), brush strokes covering 5 % of their slices
        about 0.05, and nothing labeled 0. It tells whether the labels mark
        object boundaries (whole slices do, strokes kept inside objects and
        in far background do not), which decides how much the class-balance
        tilt should be undone at prediction (``InferenceConfig.prior_correction``).
        """
        with self._lock:
            n = self.n_labeled
            if n == 0:
                return 0.0
            total = 0.0
            for axis, counts in enumerate(self._plane_counts):
                plane_size = self.labels.size // self.shape[axis]
                total += float(np.dot(counts, counts)) / plane_size
            return min(total / n, 1.0)

    def labeled_centre(self) -> tuple[float, float, float]:
        """Mean (z, y, x) position of the labeled voxels; the volume's centre while nothing is labeled."""
        with self._lock:
            if self.n_labeled == 0:
                return tuple((n - 1) / 2 for n in self.shape)  # type: ignore[return-value]
            return tuple(float(np.dot(counts, np.arange(counts.size))) / float(counts.sum())  # type: ignore[return-value]
                         for counts in self._plane_counts)

    def class_weights(self, power: float) -> np.ndarray:
        """Class-balance weights ``(n_labeled / n_class) ** power``, mean 1 over present classes."""
        counts = self.class_counts.astype(np.float64)
        present = counts > 0
        w = np.zeros_like(counts)
        if present.any():
            w[present] = (counts[present].sum() / counts[present]) ** power
            w[present] /= w[present].mean()
        return w.astype(np.float32)

    def weights(self, index: tuple, class_weight: np.ndarray, correction_weight: float) -> np.ndarray:
        """``w(y)`` at ``index``: 0 unlabeled, else class weight x source factor."""
        with self._lock:
            return _weights(self.labels[index], self.source[index], class_weight, correction_weight)

    # -- sampling --------------------------------------------------------------
    def labeled_coordinates(self) -> list[np.ndarray]:
        """Per class index ``0..K``, the ``(n, 3)`` coordinates of labeled voxels."""
        with self._lock:
            if isinstance(self.labels, SparseChunkedArray):
                coords = self.labels.nonzero()  # C order, like flatnonzero below
                order = np.ravel_multi_index(coords, self.shape) if coords[0].size else np.empty(0, np.int64)
                vals = self.labels[coords]
            else:
                flat = self.labels.ravel()
                order = np.flatnonzero(flat)
                vals = flat[order]
        out = []
        for c in range(self.num_classes + 1):
            idx = order[vals == c + 1]
            out.append(np.stack(np.unravel_index(idx, self.shape), axis=1) if idx.size else np.empty((0, 3), int))
        return out

    def read_patch(self, start: Sequence[int], size: Sequence[int], class_weight: np.ndarray,
                   correction_weight: float) -> Patch:
        """Cut a patch at ``start``; it may reach outside the volume.

        Outside the volume the image is mirrored (so intensity statistics, and
        with them instance normalisation, stay those of real content) and the
        weight is 0 (mirrored voxels are never trained on).
        """
        stop = [s + n for s, n in zip(start, size)]
        inside = [(r >= 0) & (r < dim) for r, dim in zip(map(np.arange, start, stop), self.shape)]
        valid = inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :]
        # Features never change: read them (from disk for a lazy volume) without holding up edits.
        image = read_mirrored(self.features, start, stop, self.shape, lead=1).astype(np.float32, copy=False)
        with self._lock:  # labels and sources are copied here: edits may change them as soon as it is released
            labels = np.where(valid, read_mirrored(self.labels, start, stop, self.shape), 0)
            source = read_mirrored(self.source, start, stop, self.shape).copy()
        target = np.maximum(labels.astype(np.int64) - 1, 0)
        weight = _weights(labels, source, class_weight, correction_weight)
        pseudo = self.pseudo
        if pseudo is not None and pseudo.weight > 0:  # the first responder's confident answers, where unlabeled
            free = valid & (labels == UNLABELED)
            guess = read_mirrored(pseudo.classes, start, stop, self.shape).astype(np.int64)
            confidence = read_mirrored(pseudo.confidence, start, stop, self.shape).astype(np.float32)
            lut = np.zeros(256, np.float32)
            lut[: class_weight.size] = class_weight
            target = np.where(free, guess, target)
            weight = np.where(free, np.float32(pseudo.weight) * confidence * lut[guess], weight).astype(np.float32)
        if self.holdout is not None:  # held-back labels score the learners; none trains on them
            held = self.holdout.box(start, size)
            if self.holdout.released:
                held &= ~((labels > UNLABELED) & np.isin(labels.astype(np.int64) - 1, list(self.holdout.released)))
            held &= source != Source.CORRECTED  # corrections always train (and are never scored on)
            weight[held] = 0
        return Patch(np.ascontiguousarray(image), target, weight, tuple(int(v) for v in start))

    def add_class(self) -> int:
        """Add a foreground class; returns the new ``num_classes``."""
        with self._lock:
            self.num_classes += 1
            self.revision += 1
            return self.num_classes


def _is_basic(index: tuple) -> bool:
    """Whether a ``(z, y, x)`` index is slices and integers only (it then selects exactly its box)."""
    return all(isinstance(i, slice) or np.ndim(i) == 0 for i in index)


def _weights(labels: np.ndarray, source: np.ndarray, class_weight: np.ndarray,
             correction_weight: float) -> np.ndarray:
    lut = np.zeros(256, np.float32)
    lut[1 : class_weight.size + 1] = class_weight
    w = lut[labels]
    if correction_weight != 1.0:
        w = np.where(source == Source.CORRECTED, w * np.float32(correction_weight), w)
    return w.astype(np.float32, copy=False)
