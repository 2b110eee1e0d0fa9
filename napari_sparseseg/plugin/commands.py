"""Layer-menu commands (npe2): small conversions on a labels layer."""

from __future__ import annotations

import numpy as np
from napari.layers import Labels
from napari.types import LayerDataTuple

from ..core.encoding import LAYER_BACKGROUND, annotation_to_mask, layer_to_annotation


def annotation_to_mask_layer(layer: Labels) -> LayerDataTuple:
    """A plain mask (0 = background, 1..K) from an annotation layer (0 = unlabeled, 255 = background, k = class k).

    Unlabeled voxels become background. Offered under Layers > Segment.
    """
    mask = annotation_to_mask(layer_to_annotation(layer.data))
    return (mask, {"name": f"{layer.name} mask", "scale": tuple(layer.scale), "translate": tuple(layer.translate)},
            "labels")


def separate_objects_layer(layer: Labels) -> LayerDataTuple:
    """Separate objects from a class mask (0 = background, 1..K): touching objects of a class split by a
    watershed of the distance to the background (:func:`~napari_sparseseg.core.instances.split_instances`), one
    label per object. Offered under Layers > Segment; for a prediction or an accepted mask (background painted as
    a correction on the prediction layer, 255, counts as background)."""
    from ..core.instances import split_instances

    data = np.asarray(layer.data)
    if data.ndim != 3:
        raise ValueError(f"{layer.name}: separate objects needs a 3D mask (z, y, x), got {data.ndim} dimensions")
    data = np.where(data == LAYER_BACKGROUND, 0, data)
    objects = split_instances(data, tuple(float(s) for s in layer.scale[-3:]))
    return (objects, {"name": f"{layer.name} objects", "scale": tuple(layer.scale),
                      "translate": tuple(layer.translate)}, "labels")
