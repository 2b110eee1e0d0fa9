"""Which layers the widget accepts, and the layers it makes."""

from __future__ import annotations

from typing import Any

from napari.layers import Image

#: ``layer.metadata["sparseseg_role"]`` of layers the widget creates as output.
OUTPUT_ROLES = ("prediction", "uncertainty", "export", "volume_prediction")


def image_layer_problem(layer: Any) -> str | None:
    """Why ``layer`` cannot be segmented, or ``None`` if it can (3D, single channel)."""
    if not isinstance(layer, Image):
        return "pick an image layer"
    if layer.rgb:
        return f"'{layer.name}' is an RGB(A) image: convert it to a single-channel 3D volume first"
    if layer.multiscale:
        return f"'{layer.name}' is multiscale: open its full-resolution level as a plain image"
    if layer.ndim != 3:
        return f"'{layer.name}' is {layer.ndim}D: a 3D (z, y, x) volume is needed (2D images are not supported)"
    return None


def role(layer: Any) -> str | None:
    """The ``sparseseg_role`` a layer was tagged with, if any."""
    meta = getattr(layer, "metadata", None)
    return meta.get("sparseseg_role") if hasattr(meta, "get") else None


def is_output(layer: Any) -> bool:
    """Layers the widget made for output (never offered as image or annotation)."""
    return role(layer) in OUTPUT_ROLES


def placement(image: Image) -> dict[str, Any]:
    """Keyword arguments that put a new layer exactly over ``image``."""
    return {"scale": tuple(image.scale), "translate": tuple(image.translate)}
