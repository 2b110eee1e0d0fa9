"""The layers the plugin writes: the prediction (labels the user can correct) and the uncertainty.

Both are created on demand, placed over the image, and written only on the GUI
thread. :attr:`OutputLayers.predicted` marks the voxels the prediction layer
holds a prediction for (what "Accept prediction in view" may take).

A prediction layer belongs to the image it was made for (or, reopened from a
session store, to that store's image): another image, even of the same shape,
gets its own (:meth:`OutputLayers.for_image`), so that its predictions are
never drawn over the first image's. The uncertainty layer is one, moved over
the image it shows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.encoding import MASK_DTYPE
from .layers import placement

if TYPE_CHECKING:
    import napari
    from napari.layers import Image, Labels

    from ..core.box import Box

PREDICTION_NAME = "prediction"
UNCERTAINTY_NAME = "uncertainty"


class OutputLayers:
    """The prediction and uncertainty layers of one viewer."""

    def __init__(self, viewer: napari.Viewer) -> None:
        self.viewer = viewer
        #: The prediction layer of the chosen image (None: none yet).
        self.prediction: Labels | None = None
        self.uncertainty: Image | None = None
        #: bool ``(Z, Y, X)``: voxels the prediction layer holds a prediction for (None: no prediction layer).
        self.predicted: np.ndarray | None = None
        #: ``[image, prediction layer, predicted]`` of every image a prediction layer was made for.
        self._made: list[list[Any]] = []
        self._uncertainty_of: Image | None = None

    def has_prediction(self) -> bool:
        """Whether any voxel of the prediction layer holds a prediction."""
        return self.prediction is not None and self.predicted is not None and bool(self.predicted.any())

    def layers(self) -> list[Labels]:
        """The prediction layers of every image, still in the viewer."""
        return [layer for _, layer, _ in self._made if layer in self.viewer.layers]

    def for_image(self, image: Image | None) -> Labels | None:
        """Make the prediction layer made for ``image`` (still in the viewer, of its shape) the prediction layer;
        returns it, or None (then there is none until :meth:`ensure_prediction`)."""
        self._made = [m for m in self._made if m[1] in self.viewer.layers]
        made = None if image is None else next(
            (m for m in self._made if m[0] is image and m[1].data.shape == image.data.shape), None)
        self.prediction, self.predicted = (made[1], made[2]) if made is not None else (None, None)
        return self.prediction

    def ensure_prediction(self, image: Image, keep_active: Labels) -> tuple[Labels, bool]:
        """The prediction layer for ``image``, created (empty) when it has none; returns it and whether it was
        created. A new layer leaves ``keep_active`` the layer painted on."""
        layer = self.for_image(image)
        if layer is not None:
            return layer, False
        layer = self.viewer.add_labels(np.zeros(image.data.shape, MASK_DTYPE), name=PREDICTION_NAME,
                                       **placement(image), opacity=0.45, metadata={"sparseseg_role": "prediction"})
        self._register(image, layer, np.zeros(image.data.shape, bool))
        self.viewer.layers.selection.active = keep_active
        return layer, True

    def adopt(self, layer: Labels, image: Image | None, current: bool = True) -> None:
        """A stored prediction (a reopened session) becomes the prediction layer of ``image`` (the store's),
        predicted everywhere; the prediction layer now when ``current``."""
        self._register(image, layer, np.ones(layer.data.shape, bool), current)

    def _register(self, image: Image | None, layer: Labels, predicted: np.ndarray, current: bool = True) -> None:
        self._made = [m for m in self._made if m[1] is not layer and (image is None or m[0] is not image)]
        self._made.append([image, layer, predicted])
        if current:
            self.prediction, self.predicted = layer, predicted

    def write_prediction(self, box: Box, labels: np.ndarray) -> None:
        """Write ``labels`` (the merged class map of ``box``) into the prediction layer."""
        assert self.prediction is not None
        self.prediction.data[box.slices] = labels
        self.prediction.refresh(extent=False)
        if self.predicted is not None:
            self.predicted[box.slices] = True

    def write_uncertainty(self, image: Image, box: Box, uncertainty: np.ndarray, keep_active: Labels | None) -> None:
        """Write the normalised entropy of ``box`` into the uncertainty layer, created over ``image`` if missing,
        emptied and moved over ``image`` if it showed another image."""
        layer = self.uncertainty
        if layer is not None and layer in self.viewer.layers and (
                self._uncertainty_of is not image or layer.data.shape != image.data.shape):
            layer.data = np.zeros(image.data.shape, np.float32)
            for name, value in placement(image).items():
                setattr(layer, name, value)
        elif layer is None or layer not in self.viewer.layers:
            layer = self.viewer.add_image(np.zeros(image.data.shape, np.float32), name=UNCERTAINTY_NAME,
                                          **placement(image), colormap="magma", contrast_limits=(0.0, 1.0),
                                          blending="additive", opacity=0.6,
                                          metadata={"sparseseg_role": "uncertainty"})
            self.uncertainty = layer
            if keep_active is not None:
                self.viewer.layers.selection.active = keep_active
        self._uncertainty_of = image
        layer.visible = True
        layer.data[box.slices] = uncertainty
        layer.refresh(extent=False)

    def forget_predicted(self) -> None:
        """The predictions on screen no longer come from the session (it was dropped); its uncertainty goes."""
        for _, _, predicted in self._made:
            predicted[:] = False
        if self.uncertainty is not None and self.uncertainty in self.viewer.layers:
            self.uncertainty.data[...] = 0
            self.uncertainty.refresh()

    def show_uncertainty(self, on: bool) -> None:
        """Show or hide the uncertainty layer (the tick box): hidden, it is no longer written and would be stale."""
        if self.uncertainty is not None and self.uncertainty in self.viewer.layers:
            self.uncertainty.visible = on

    def removed(self, layer: Any) -> bool:
        """A layer left the viewer; returns whether it was the prediction layer."""
        if layer is self.uncertainty:
            self.uncertainty = self._uncertainty_of = None
        self._made = [m for m in self._made if m[1] is not layer]
        if layer is self.prediction:
            self.prediction, self.predicted = None, None
            return True
        return False
