"""The layers bound to a training session: the annotation layer the user paints on, the prediction and
uncertainty layers the plugin writes, their colours, and the slice in view.

Strokes on the annotation layer and corrections on the prediction layer reach
the session through one :class:`~.strokes.LabelSync`; the prediction layer is
created on demand (:class:`~.output_layers.OutputLayers`); both layers take
their colours from the widget's :class:`~.classes.ClassList`: class ``k`` is
label ``k`` on both, painted background 255 (the layer encoding of
:mod:`napari_sparseseg.core.encoding`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from napari.utils.notifications import show_warning

from .output_layers import OutputLayers
from .strokes import LabelSync
from .view import view_box

if TYPE_CHECKING:
    import napari
    import numpy as np
    from napari.layers import Image, Labels

    from ..core.box import Box
    from ..core.events import Prediction
    from ..core.session import SegmentationSession
    from .classes import ClassList


class LayerBinding:
    """The layers of one viewer bound to the widget's session.

    Parameters
    ----------
    viewer : napari.Viewer
        Where the layers live.
    session : callable
        Returns the session strokes go to (None before Start: strokes wait in the layer).
    classes : callable
        Returns the widget's classes (names and colours).
    stop_at_edges : callable, optional
        Whether corrections stop at the edges of the predicted region they begin on (off when not given).
    """

    def __init__(self, viewer: napari.Viewer, session: Callable[[], SegmentationSession | None],
                 classes: Callable[[], ClassList], stop_at_edges: Callable[[], bool] | None = None) -> None:
        self.viewer = viewer
        self._session, self._classes = session, classes
        self._stop_at_edges = stop_at_edges
        #: The prediction and uncertainty layers.
        self.outputs = OutputLayers(viewer)
        #: Turns strokes on the bound annotation (and prediction) layer into session edits (None: nothing bound).
        self.sync: LabelSync | None = None
        self._view_box: Box | None = None
        #: ``(annotation layer, LabelSync.corrected)`` of every layer bound: a layer bound again keeps its corrections.
        self._corrected: list[tuple[Labels, np.ndarray]] = []

    @property
    def annotation(self) -> Labels | None:
        """The annotation layer bound now."""
        return self.sync.annotation if self.sync is not None else None

    def bind(self, annotation: Labels) -> None:
        """Send the strokes painted on ``annotation`` (and corrections on the prediction layer) to the session."""
        self.unbind()
        self._corrected = [(ly, m) for ly, m in self._corrected if ly in self.viewer.layers
                           and m.shape == ly.data.shape]
        corrected = next((m for ly, m in self._corrected if ly is annotation), None)
        self.sync = LabelSync(annotation, self._session, lambda: len(self._classes()), show_warning,
                              self._stop_at_edges, corrected)
        if corrected is None:
            self._corrected.append((annotation, self.sync.corrected))
        self._attach_prediction()
        self.recolour(annotation)
        if annotation.mode == "pan_zoom":
            annotation.mode = "paint"  # the first thing a user does is paint: no hunt for the brush

    def unbind(self) -> None:
        """Stop sending strokes to the session."""
        if self.sync is not None:
            self.sync.close()
            self.sync = None

    def _attach_prediction(self) -> None:
        """Take strokes on the prediction layer as corrections of the bound annotation layer, when there is one of
        its shape (no other image's prediction layer)."""
        if self.sync is None:
            return
        layer = self.outputs.prediction
        if layer is None or layer.data.shape != self.sync.annotation.data.shape:
            self.sync.detach_prediction()
        else:
            self.sync.attach_prediction(layer)

    def image_chosen(self, image: Image | None, annotation: Labels | None) -> None:
        """Another image was chosen: its own prediction layer (if it has one) becomes the prediction layer."""
        self.outputs.for_image(image)
        self._attach_prediction()
        self.recolour(annotation)

    def ensure_prediction(self, image: Image, annotation: Labels) -> Labels:
        """The prediction layer over ``image`` (created if missing), bound for corrections and coloured."""
        layer, _created = self.outputs.ensure_prediction(image, keep_active=annotation)
        self._attach_prediction()
        self.recolour(annotation)
        return layer

    def adopt(self, layer: Labels, image: Image | None, annotation: Labels | None, current: bool = True) -> None:
        """A stored prediction (a reopened session) becomes the prediction layer of ``image`` (the store's): shown,
        correctable, acceptable; the prediction layer now when ``current`` (``image`` is the one chosen)."""
        self.outputs.adopt(layer, image, current)
        if current:
            self._attach_prediction()
            self.recolour(annotation)
        else:
            layer.colormap = self._classes().colormap()

    def show(self, prediction: Prediction, merged: np.ndarray, image: Image, annotation: Labels,
             uncertainty: bool) -> Labels:
        """Write a prediction on screen: ``merged`` (its class map with the labels winning) into the prediction
        layer (created if missing), and its uncertainty into the uncertainty layer when ``uncertainty``."""
        layer = self.outputs.prediction
        if layer is None or layer not in self.viewer.layers:
            layer = self.ensure_prediction(image, annotation)
        self.outputs.write_prediction(prediction.box, merged)
        if uncertainty:
            self.outputs.write_uncertainty(image, prediction.box, prediction.uncertainty, annotation)
        return layer

    def recolour(self, annotation: Labels | None) -> None:
        """Colour ``annotation`` and the prediction layers (of every image) from the classes."""
        classes = self._classes()
        if annotation is not None:
            annotation.colormap = classes.colormap()
        layers = (self.outputs.prediction, *self.outputs.layers())
        for layer in {id(ly): ly for ly in layers if ly is not None}.values():
            layer.colormap = classes.colormap()

    def removed(self, layer: Any) -> None:
        """A layer left the viewer: forget it if it was an output."""
        if self.outputs.removed(layer) and self.sync is not None:
            self.sync.detach_prediction()

    def update_view_box(self, image: Image | None) -> None:
        """Work out the slice in view of ``image`` (call on the GUI thread when the view changes)."""
        self._view_box = view_box(self.viewer, image) if image is not None and image.ndim == 3 else None

    def view_box(self) -> Box | None:
        """The slice in view (image voxels), None in 3D view; thread-safe (a cached value)."""
        return self._view_box

    def close(self) -> None:
        """Let go of the layers (the widget closes)."""
        self.unbind()
