"""User strokes on labels layers -> the session's labels ``y`` and weights ``w``.

Invariant kept here: *the annotation layer's data is ``y``*, in the layer
encoding of :mod:`napari_sparseseg.core.encoding` (class ``k`` is ``k``, painted
background 255, unlabeled 0: the numbers the user sees on both layers); the
session holds it in annotation encoding, and the conversion happens here.
Every user edit reaches the session on the GUI thread, right after napari
emits it, so the trainer's next batch sees it (the annotated volume is
lock-protected; an edit costs a bincount over the stroke's voxels).

* A stroke on the annotation layer (``events.paint``) writes the painted
  voxels into the session (source ``PAINTED``).
* A stroke on the prediction layer with class ``k`` (erasing paints ``0``,
  and 255 is background too) is a correction: the class is written into the
  annotation layer (from code, so no paint event) and into the session with
  source ``CORRECTED``.
* napari's undo/redo restores layer data without a paint event, so the
  layers' ``undo``/``redo`` are wrapped: each paint event is mirrored by an
  :class:`Edit` on a stack; undo reverts it in the session (and, for a
  correction, in the annotation layer). An undone stroke is thereby withdrawn
  from training.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..core.annotation import Source
from ..core.encoding import LAYER_BACKGROUND, annotation_to_layer, layer_to_annotation

if TYPE_CHECKING:
    from napari.layers import Labels

    from ..core.session import SegmentationSession

Coords = tuple[np.ndarray, np.ndarray, np.ndarray]
LayerKind = Literal["annotation", "prediction"]


@dataclass(frozen=True)
class Edit:
    """One user stroke (one napari undo item), in annotation encoding.

    Attributes
    ----------
    coords : tuple of 3 int arrays
        Voxels changed, ``(z, y, x)``.
    old : np.ndarray or None
        Annotation values (annotation encoding, as ``new``) before the stroke (``None`` where unknown: no
        session yet and napari restores the annotation layer itself).
    old_source : np.ndarray or None
        :class:`~.core.annotation.Source` of those voxels before the stroke.
    new : np.ndarray
        Annotation values written.
    source : Source
        ``PAINTED`` (annotation layer) or ``CORRECTED`` (prediction layer).
    """

    coords: Coords
    old: np.ndarray | None
    old_source: np.ndarray | None
    new: np.ndarray
    source: Source


def stroke_values(item: Sequence[Any], shape: Sequence[int]) -> tuple[Coords, np.ndarray] | None:
    """Voxels written by one napari paint-history item (a list of atoms) and their new values.

    Understands napari's mask atoms (``slice_key``, ``mask``, ``new_value``)
    written by paint/fill/polygon and the ``(indices, old, new)`` tuples
    written by ``data_setitem``. The values come from the atoms, not from the
    layer: napari emits ``events.paint`` for a single ``paint()`` call *before*
    it writes the data. Returns ``None`` for an atom it cannot read (the
    caller then resynchronises the whole volume, which is always correct).
    """
    parts: list[tuple[tuple[slice, ...], np.ndarray | None, Any] | tuple[Coords, Any]] = []
    lo = np.array(shape, dtype=np.int64)
    hi = np.zeros(3, dtype=np.int64)
    for atom in item:
        if hasattr(atom, "slice_key"):
            key = tuple(atom.slice_key)
            if len(key) != 3 or not all(isinstance(s, slice) for s in key):
                return None
            sl = tuple(slice(*s.indices(n)[:2]) for s, n in zip(key, shape))
            mask = None if atom.mask is None else np.asarray(atom.mask, bool)
            if mask is not None:
                mask = mask.reshape(tuple(s.stop - s.start for s in sl))
            parts.append((sl, mask, atom.new_value))
            lo = np.minimum(lo, [s.start for s in sl])
            hi = np.maximum(hi, [s.stop for s in sl])
            continue
        try:
            indices, _old, new = atom
        except (TypeError, ValueError):
            return None
        if len(indices) != 3:
            return None
        if all(isinstance(i, slice) for i in indices):
            sl = tuple(slice(*s.indices(n)[:2]) for s, n in zip(indices, shape))
            parts.append((sl, None, new))
            lo = np.minimum(lo, [s.start for s in sl])
            hi = np.maximum(hi, [s.stop for s in sl])
            continue
        if any(isinstance(i, slice) for i in indices):
            return None
        arrays = tuple(np.ravel(a).astype(np.int64) for a in np.broadcast_arrays(*[np.asarray(i) for i in indices]))
        if arrays[0].size == 0:
            continue
        parts.append((arrays, new))  # type: ignore[arg-type]
        lo = np.minimum(lo, [a.min() for a in arrays])
        hi = np.maximum(hi, [a.max() + 1 for a in arrays])
    if not parts or np.any(hi <= lo):
        return (np.empty(0, np.int64),) * 3, np.empty(0, np.int64)  # type: ignore[return-value]
    box = tuple(hi - lo)
    touched = np.zeros(box, dtype=bool)
    values = np.zeros(box, dtype=np.int64)
    for part in parts:
        if len(part) == 3:  # (slices, mask, new value)
            sl, mask, new = part  # type: ignore[misc]
            local = tuple(slice(s.start - o, s.stop - o) for s, o in zip(sl, lo))
            if mask is None:
                touched[local] = True
                values[local] = np.asarray(new)
            else:
                touched[local] |= mask
                values[local][mask] = new
        else:
            arrays, new = part  # type: ignore[misc]
            local = tuple(a - o for a, o in zip(arrays, lo))
            touched[local] = True
            values[local] = np.ravel(np.broadcast_to(np.asarray(new), arrays[0].shape))
    nz = np.nonzero(touched)
    return tuple(n + o for n, o in zip(nz, lo)), values[nz]  # type: ignore[return-value]


def _later(fn: Callable[[], None]) -> None:
    """Run ``fn`` on the GUI thread once the current event is handled (napari writes after emitting)."""
    from qtpy.QtCore import QTimer

    QTimer.singleShot(0, fn)


class LabelSync:
    """Mirror user strokes on the annotation and prediction layers into a session.

    Parameters
    ----------
    annotation : napari.layers.Labels
        The layer that holds ``y`` (layer encoding), 3D.
    session : callable
        Returns the current session, or ``None`` before one exists (edits
        then live in the annotation layer only and are read in when the
        session is created).
    num_classes : callable
        Current number of foreground classes ``K``; values above it are refused.
    notify : callable
        Shows a message to the user (a napari warning in the app).
    """

    def __init__(self, annotation: Labels, session: Callable[[], SegmentationSession | None],
                 num_classes: Callable[[], int], notify: Callable[[str], None]) -> None:
        if annotation.ndim != 3:
            raise ValueError(f"the annotation layer must be 3D (z, y, x), got {annotation.ndim}D")
        self.annotation = annotation
        self.prediction: Labels | None = None
        self._session = session
        self._num_classes = num_classes
        self._notify = notify
        self._undo: dict[int, deque[Edit]] = {}
        self._redo: dict[int, deque[Edit]] = {}
        self._layers: dict[int, tuple[Labels, LayerKind]] = {}
        self._attach(annotation, "annotation")

    # -- wiring ------------------------------------------------------------------------
    def attach_prediction(self, layer: Labels) -> None:
        """Treat strokes on ``layer`` (class k painted as k, background as 0 or 255) as corrections."""
        if self.prediction is layer:
            return
        if self.prediction is not None:
            self._detach(self.prediction)
        if layer.data.shape != self.annotation.data.shape:
            raise ValueError(f"prediction layer shape {layer.data.shape} differs from the annotation "
                             f"layer shape {self.annotation.data.shape}")
        self.prediction = layer
        self._attach(layer, "prediction")

    def detach_prediction(self) -> None:
        """Stop treating strokes on the prediction layer as corrections (it was removed)."""
        if self.prediction is not None:
            self._detach(self.prediction)
            self.prediction = None

    def close(self) -> None:
        """Disconnect from every layer and restore their undo/redo."""
        for layer, _ in list(self._layers.values()):
            self._detach(layer)
        self.prediction = None

    def _attach(self, layer: Labels, kind: LayerKind) -> None:
        key = id(layer)
        limit = int(getattr(layer, "_history_limit", 100))
        self._undo[key], self._redo[key] = deque(maxlen=limit), deque(maxlen=limit)
        self._layers[key] = (layer, kind)
        handler = self._on_annotation_paint if kind == "annotation" else self._on_prediction_paint
        layer.events.paint.connect(handler)
        undo, redo = layer.undo, layer.redo

        def wrapped_undo() -> None:
            undo()
            self._history(layer, undoing=True)

        def wrapped_redo() -> None:
            redo()
            self._history(layer, undoing=False)

        # napari's undo/redo restore data without a paint event; the keybindings
        # call ``layer.undo()``, so instance attributes catch every undo.
        layer.undo, layer.redo = wrapped_undo, wrapped_redo  # type: ignore[method-assign]

    def _detach(self, layer: Labels) -> None:
        key = id(layer)
        if key not in self._layers:
            return
        _, kind = self._layers.pop(key)
        handler = self._on_annotation_paint if kind == "annotation" else self._on_prediction_paint
        layer.events.paint.disconnect(handler)
        for name in ("undo", "redo"):
            layer.__dict__.pop(name, None)
        self._undo.pop(key, None)
        self._redo.pop(key, None)

    # -- strokes -----------------------------------------------------------------------
    def _stroke(self, event: Any) -> tuple[Coords, np.ndarray] | None:
        return stroke_values(event.value, self.annotation.data.shape)

    def _on_annotation_paint(self, event: Any) -> None:
        stroke = self._stroke(event)
        if stroke is None:
            # Unknown edit: the layer holds it once napari has written it.
            _later(self.resync)
            return
        coords, painted = stroke
        if coords[0].size == 0:
            return
        k = self._num_classes()
        bad = (painted > k) & (painted != LAYER_BACKGROUND)
        if bad.any():
            self._notify(f"label {int(painted[bad].max())} is not a class here: classes are 1..{k}, background "
                         f"{LAYER_BACKGROUND} (pick a class in the widget); those voxels were left unlabeled")
            painted = np.where(bad, 0, painted)
            fix = tuple(c[bad] for c in coords)

            def unlabel() -> None:  # after napari has written the stroke
                self.annotation.data[fix] = 0
                self.annotation.refresh()

            _later(unlabel)
        new = layer_to_annotation(painted)
        session = self._session()
        old = old_source = None
        if session is not None:
            old, old_source = session.labels_at(coords)
            session.add_labels(coords, new, Source.PAINTED)
        self._push(self.annotation, Edit(coords, old, old_source, new, Source.PAINTED))

    def _on_prediction_paint(self, event: Any) -> None:
        layer = self.prediction
        if layer is None:
            return
        stroke = self._stroke(event)
        if stroke is None or stroke[0][0].size == 0:
            return
        coords, classes = stroke
        k = self._num_classes()
        bad = (classes > k) & (classes != LAYER_BACKGROUND)
        if bad.any():
            self._notify(f"label {int(classes[bad].max())} is not a class (classes are 1..{k}, background 0 or "
                         f"{LAYER_BACKGROUND}); those voxels were not taken as corrections")
            keep = ~bad
            coords = tuple(c[keep] for c in coords)  # type: ignore[assignment]
            classes = classes[keep]
            if classes.size == 0:
                return
        new = layer_to_annotation(np.where(classes == 0, LAYER_BACKGROUND, classes))  # erasing paints background
        session = self._session()
        old = layer_to_annotation(np.asarray(self.annotation.data[coords]))
        old_source = session.labels_at(coords)[1] if session is not None else None
        edit = Edit(coords, old, old_source, new, Source.CORRECTED)
        self._apply(edit.coords, edit.new, None, Source.CORRECTED, write_annotation=True)
        self._push(layer, edit)

    def _push(self, layer: Labels, edit: Edit) -> None:
        self._undo[id(layer)].append(edit)
        self._redo[id(layer)].clear()

    # -- undo / redo -------------------------------------------------------------------
    def _history(self, layer: Labels, undoing: bool) -> None:
        key = id(layer)
        if key not in self._layers:
            return
        _, kind = self._layers[key]
        src, dst = (self._undo[key], self._redo[key]) if undoing else (self._redo[key], self._undo[key])
        if not src:
            # napari undid something we never saw (e.g. painted before the widget
            # attached): read the whole annotation layer again.
            if kind == "annotation":
                self.resync()
            return
        edit = src.pop()
        dst.append(edit)
        if kind == "annotation":
            # napari has restored the layer; the session follows it.
            values = layer_to_annotation(np.asarray(self.annotation.data[edit.coords]))
            sources = edit.old_source if undoing else None
            self._apply(edit.coords, values, sources, Source.PAINTED, write_annotation=False)
        elif undoing:
            old = edit.old if edit.old is not None else np.zeros_like(edit.new)
            self._apply(edit.coords, old, edit.old_source, Source.PAINTED, write_annotation=True)
        else:
            self._apply(edit.coords, edit.new, None, Source.CORRECTED, write_annotation=True)

    def _apply(self, coords: Coords, values: np.ndarray, sources: np.ndarray | None, source: Source,
               *, write_annotation: bool) -> None:
        if write_annotation:
            self.annotation.data[coords] = annotation_to_layer(values)
            self.annotation.refresh()
        session = self._session()
        if session is None:
            return
        if sources is None:
            session.add_labels(coords, values, source)
            return
        corrected = sources == Source.CORRECTED
        for sel, src in ((~corrected, Source.PAINTED), (corrected, Source.CORRECTED)):
            if sel.any():
                session.add_labels(tuple(c[sel] for c in coords), values[sel], src)

    def resync(self) -> int:
        """Write every voxel where the annotation layer and the session differ; returns their count."""
        session = self._session()
        if session is None:
            return 0
        data = np.asarray(self.annotation.data)
        labels = layer_to_annotation(data, session.num_classes)  # values that are no class stay unlabeled
        diff = np.nonzero(labels != session.labels_at((slice(None),) * 3)[0])
        if diff[0].size:
            session.add_labels(diff, labels[diff])
        return int(diff[0].size)
