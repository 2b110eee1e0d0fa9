"""The layers the plugin writes: the prediction (labels the user can correct) and the uncertainty.

Both are created on demand, placed over the image, and written only on the GUI
thread. :attr:`OutputLayers.predicted` marks the voxels the prediction layer
holds a prediction for (what "Accept prediction in view" may take).
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
        self.prediction: Labels | None = None
        self.uncertainty: Image | None = None
        #: bool ``(Z, Y, X)``: voxels the prediction layer holds a prediction for (None: no prediction layer).
        self.predicted: np.ndarray | None = None

    def has_prediction(self) -> bool:
        """Whether any voxel of the prediction layer holds a prediction."""
        return self.prediction is not None and self.predicted is not None and bool(self.predicted.any())

    def ensure_prediction(self, image: Image, keep_active: Labels) -> tuple[Labels, bool]:
        """The prediction layer for ``image``, created (empty) when missing or of another shape; returns it and
        whether it was created. A new layer leaves ``keep_active`` the layer painted on."""
        layer = self.prediction
        if layer is not None and layer in self.viewer.layers and layer.data.shape == image.data.shape:
            return layer, False
        layer = self.viewer.add_labels(np.zeros(image.data.shape, MASK_DTYPE), name=PREDICTION_NAME,
                                       **placement(image), opacity=0.45, metadata={"sparseseg_role": "prediction"})
        self.prediction = layer
        self.predicted = np.zeros(image.data.shape, bool)
        self.viewer.layers.selection.active = keep_active
        return layer, True

    def adopt(self, layer: Labels) -> None:
        """A stored prediction (a reopened session) becomes the prediction layer, predicted everywhere."""
        self.prediction = layer
        self.predicted = np.ones(layer.data.shape, bool)

    def write_prediction(self, box: Box, labels: np.ndarray) -> None:
        """Write ``labels`` (the merged class map of ``box``) into the prediction layer."""
        assert self.prediction is not None
        self.prediction.data[box.slices] = labels
        self.prediction.refresh(extent=False)
        if self.predicted is not None:
            self.predicted[box.slices] = True

    def write_uncertainty(self, image: Image, box: Box, uncertainty: np.ndarray, keep_active: Labels | None) -> None:
        """Write the normalised entropy of ``box`` into the uncertainty layer, created over ``image`` if missing."""
        layer = self.uncertainty
        if layer is None or layer not in self.viewer.layers:
            layer = self.viewer.add_image(np.zeros(image.data.shape, np.float32), name=UNCERTAINTY_NAME,
                                          **placement(image), colormap="magma", contrast_limits=(0.0, 1.0),
                                          blending="additive", opacity=0.6,
                                          metadata={"sparseseg_role": "uncertainty"})
            self.uncertainty = layer
            if keep_active is not None:
                self.viewer.layers.selection.active = keep_active
        layer.data[box.slices] = uncertainty
        layer.refresh(extent=False)

    def forget_predicted(self) -> None:
        """The predictions on screen no longer come from the session (it was dropped)."""
        if self.predicted is not None:
            self.predicted[:] = False

    def removed(self, layer: Any) -> bool:
        """A layer left the viewer; returns whether it was the prediction layer."""
        if layer is self.uncertainty:
            self.uncertainty = None
        if layer is self.prediction:
            self.prediction, self.predicted = None, None
            return True
        return False
