"""Layer-menu commands (npe2): small conversions on a labels layer."""

from __future__ import annotations

from napari.layers import Labels
from napari.types import LayerDataTuple

from ..core.encoding import annotation_to_mask


def annotation_to_mask_layer(layer: Labels) -> LayerDataTuple:
    """A plain mask (0 = background, 1..K) from an annotation layer (0 = unlabeled, 1 = background).

    Unlabeled voxels become background. Offered under Layers > Segment.
    """
    mask = annotation_to_mask(layer.data)
    return (mask, {"name": f"{layer.name} mask", "scale": tuple(layer.scale), "translate": tuple(layer.translate)},
            "labels")
