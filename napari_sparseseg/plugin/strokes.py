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
  source ``CORRECTED``. Where corrections stop at edges
  (:mod:`~.edge_stop`), the voxels of other predicted regions the brush
  covered get their predicted class back and are no correction.
* napari's undo/redo restores layer data without a paint event, so the
  layers' ``undo``/``redo`` are wrapped: each paint event is mirrored by an
  :class:`Edit` on a stack; undo reverts it in the session (and, for a
  correction, in the annotation layer). An undone stroke is thereby withdrawn
  from training.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..core.annotation import Source
from ..core.encoding import LAYER_BACKGROUND, annotation_to_layer, layer_to_annotation
from .edge_stop import start_region
from .paint_atoms import Coords, PaintedVoxels, read_paint_item

if TYPE_CHECKING:
    from napari.layers import Labels

    from ..core.session import SegmentationSession

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
    kept : tuple of 3 int arrays and np.ndarray, or None
        Voxels of a correction stroke that kept their predicted class (:mod:`~.edge_stop`) and that class
        (layer values), so that a redo, which napari applies to the whole stroke, gives it back.
    """

    coords: Coords
    old: np.ndarray | None
    old_source: np.ndarray | None
    new: np.ndarray
    source: Source
    kept: tuple[Coords, np.ndarray] | None = None


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
    stop_at_edges : callable, optional
        Whether a correction stops at the edges of the predicted region it began on (:mod:`~.edge_stop`);
        off when not given.
    corrected : np.ndarray, optional
        bool, the annotation layer's shape: voxels whose label is a correction, kept up to date here (a new one
        when not given), so that a new session, and :meth:`resync`, give them their source back.
    """

    def __init__(self, annotation: Labels, session: Callable[[], SegmentationSession | None],
                 num_classes: Callable[[], int], notify: Callable[[str], None],
                 stop_at_edges: Callable[[], bool] | None = None, corrected: np.ndarray | None = None) -> None:
        if annotation.ndim != 3:
            raise ValueError(f"the annotation layer must be 3D (z, y, x), got {annotation.ndim}D")
        if corrected is not None and corrected.shape != annotation.data.shape:
            raise ValueError(f"corrected mask shape {corrected.shape} differs from the annotation layer shape "
                             f"{annotation.data.shape}")
        self.annotation = annotation
        #: bool: voxels whose label is a correction (source ``CORRECTED``), however painted (session or not).
        self.corrected = corrected if corrected is not None else np.zeros(annotation.data.shape, bool)
        self.prediction: Labels | None = None
        self._session = session
        self._num_classes = num_classes
        self._notify = notify
        self._stop_at_edges = stop_at_edges or (lambda: False)
        self._stroke_start: tuple[tuple[int, int, int], int] | None = None
        self._edge_stop_explained = False
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
        layer.mouse_drag_callbacks.insert(0, self._on_prediction_press)  # before napari's brush paints

    def _on_prediction_press(self, layer: Labels, event: Any) -> None:
        """Remember the voxel under the brush where a stroke begins and its predicted class."""
        self._stroke_start = None
        if layer.mode not in ("paint", "erase"):
            return
        voxel = tuple(int(round(c)) for c in layer.world_to_data(event.position)[-3:])
        if len(voxel) == 3 and all(0 <= c < n for c, n in zip(voxel, layer.data.shape)):
            self._stroke_start = (voxel, int(np.asarray(layer.data[voxel])))  # type: ignore[assignment]

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
        if self._on_prediction_press in layer.mouse_drag_callbacks:
            layer.mouse_drag_callbacks.remove(self._on_prediction_press)
        handler = self._on_annotation_paint if kind == "annotation" else self._on_prediction_paint
        layer.events.paint.disconnect(handler)
        for name in ("undo", "redo"):
            layer.__dict__.pop(name, None)
        self._undo.pop(key, None)
        self._redo.pop(key, None)

    # -- strokes -----------------------------------------------------------------------
    def _stroke(self, event: Any) -> PaintedVoxels | None:
        return read_paint_item(event.value, self.annotation.data.shape)

    def _on_annotation_paint(self, event: Any) -> None:
        stroke = self._stroke(event)
        if stroke is None:
            # Unknown edit: the layer holds it once napari has written it.
            _later(self.resync)
            return
        coords, painted = stroke.coords, stroke.new
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
        self.corrected[coords] = False
        session = self._session()
        old = old_source = None
        if session is not None:
            old, old_source = session.labels_at(coords)
            session.add_labels(coords, new, Source.PAINTED)
        self._push(self.annotation, Edit(coords, old, old_source, new, Source.PAINTED))

    def _on_prediction_paint(self, event: Any) -> None:
        layer = self.prediction
        start, self._stroke_start = self._stroke_start, None
        if layer is None:
            return
        stroke = self._stroke(event)
        if stroke is None or stroke.size == 0:
            return
        k = self._num_classes()
        bad = (stroke.new > k) & (stroke.new != LAYER_BACKGROUND)
        if bad.any():
            self._notify(f"label {int(stroke.new[bad].max())} is not a class (classes are 1..{k}, background 0 or "
                         f"{LAYER_BACKGROUND}); those voxels were not taken as corrections")
            refused = stroke.subset(bad)
            if refused.old is not None:  # and they show the prediction again, not a value no export can mean
                back = (refused.coords, refused.old)
                _later(lambda: self._restore(layer, back))
            stroke = stroke.subset(~bad)
            if stroke.size == 0:
                return
        kept = None
        if self._stop_at_edges():
            inside = start_region(stroke, start)
            if not inside.all():
                kept = self._keep_prediction(layer, stroke.subset(~inside))
                stroke = stroke.subset(inside)
        coords, classes = stroke.coords, stroke.new
        new = layer_to_annotation(np.where(classes == 0, LAYER_BACKGROUND, classes))  # erasing paints background
        session = self._session()
        old = layer_to_annotation(np.asarray(self.annotation.data[coords]))
        old_source = session.labels_at(coords)[1] if session is not None else None
        edit = Edit(coords, old, old_source, new, Source.CORRECTED, kept)
        if coords[0].size:
            self._apply(edit.coords, edit.new, None, Source.CORRECTED, write_annotation=True)
        self._push(layer, edit)

    def _keep_prediction(self, layer: Labels, outside: PaintedVoxels) -> tuple[Coords, np.ndarray]:
        """Give the voxels of other predicted regions under a correction stroke their class back."""
        assert outside.old is not None
        kept = (outside.coords, outside.old)
        _later(lambda: self._restore(layer, kept))
        if not self._edge_stop_explained:
            self._edge_stop_explained = True
            self._notify(f"the correction stopped at the edge of the predicted region it began on: {outside.size} "
                         "voxels of other regions under the brush kept their class (untick 'Corrections stop at "
                         "edges' in the Training box to paint over them)")
        return kept

    @staticmethod
    def _restore(layer: Labels, kept: tuple[Coords, np.ndarray]) -> None:
        coords, values = kept
        layer.data[coords] = values
        layer.refresh()

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
            if edit.kept is not None:
                self._restore(layer, edit.kept)  # napari redid the whole stroke

    def _apply(self, coords: Coords, values: np.ndarray, sources: np.ndarray | None, source: Source,
               *, write_annotation: bool) -> None:
        if write_annotation:
            self.annotation.data[coords] = annotation_to_layer(values)
            self.annotation.refresh()
        self.corrected[coords] = (sources == Source.CORRECTED) if sources is not None else source == Source.CORRECTED
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

    def resync(self, session: Any = None) -> int:
        """Write every voxel where the annotation layer and the session (default: the bound one) differ, or that is
        a correction the session holds as painted (:attr:`corrected`, e.g. painted while the session was built);
        returns their count."""
        session = session if session is not None else self._session()
        if session is None:
            return 0
        data = np.asarray(self.annotation.data)
        labels = layer_to_annotation(data, session.num_classes)  # values that are no class stay unlabeled
        held, sources = session.labels_at((slice(None),) * 3)
        corrected = self.corrected & (labels > 0)
        diff = (labels != held) | (corrected & (sources != Source.CORRECTED))
        for sel, source in ((diff & ~corrected, Source.PAINTED), (diff & corrected, Source.CORRECTED)):
            where = np.nonzero(sel)
            if where[0].size:
                session.add_labels(where, labels[where], source)
        return int(np.count_nonzero(diff))
