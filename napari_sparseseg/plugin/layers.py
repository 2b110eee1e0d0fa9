"""Which layers the widget accepts, and the layers it makes."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
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


#: Bytes an in-memory session holds per voxel beside the first responder's filter bank and context maps (whose size
#: :func:`~napari_sparseseg.core.feature_stack.responder_bytes` gives exactly): the peak over training, predictions and
#: the final segmentation, one image channel and two foreground classes; least squares over 1.8, 3.5 and 7.1 Mvoxel
#: volumes, 135 and 169 bytes per voxel in two runs (``benchmarks/session_memory.py``, ``results/session_memory.txt``).
SESSION_BYTES_PER_VOXEL = 150
#: What a session holds whatever the volume (torch, the model, the optimiser): 0.7-0.9 GiB in the same measurement.
SESSION_FIXED_BYTES = 1 << 30
#: Per foreground class beyond two: three float32 class-probability maps (the first responder's, the net's, the one
#: shown); assumed, not measured.
CLASS_BYTES_PER_VOXEL = 12
#: The widget's layers over the image: annotation and prediction (uint8), which voxels are predicted (bool) and the
#: uncertainty (float32).
LAYER_BYTES_PER_VOXEL = 7


def volume_bytes(layer: Image, num_classes: int) -> int:
    """Memory one volume of a session takes in the window, about, beside the first responder's bank: the session's
    arrays of it, the widget's layers, and the image itself unless it is already in memory."""
    voxels = math.prod(int(n) for n in layer.data.shape[-3:])
    per_voxel = SESSION_BYTES_PER_VOXEL + CLASS_BYTES_PER_VOXEL * max(0, num_classes - 2) + LAYER_BYTES_PER_VOXEL
    image = 0 if isinstance(layer.data, np.ndarray) else voxels * np.dtype(layer.data.dtype).itemsize
    return voxels * per_voxel + image


def session_bytes(layer: Image, num_classes: int, others: Sequence[Image] = ()) -> int:
    """Memory that training on ``layer`` (and the ``others`` volumes the session also learns from) in the window
    takes, about: the fixed costs, each volume (:func:`volume_bytes`), and the first responder's bank of ``layer`` on
    the grid it would choose (other volumes get none)."""
    from ..core.binning import binned_shape
    from ..core.config import ResponderConfig
    from ..core.feature_stack import choose_grid, responder_bytes

    shape = tuple(int(n) for n in layer.data.shape[-3:])
    spacing = tuple(float(s) for s in layer.scale[-3:])
    grid = choose_grid(shape, spacing, ResponderConfig().max_feature_bytes, 1, max(1, num_classes))
    bank = 0 if grid is None else responder_bytes(binned_shape(shape, grid.factors), 1, max(1, num_classes),
                                                  grid.itemsize)
    return SESSION_FIXED_BYTES + bank + sum(volume_bytes(v, num_classes) for v in (layer, *others))


@functools.cache
def physical_memory() -> int:
    """This machine's physical memory in bytes (read once: it does not change while the window is open)."""
    import psutil

    return int(psutil.virtual_memory().total)


def memory_problem(layer: Image, num_classes: int, total: int | None = None,
                   others: Sequence[Image] = ()) -> str | None:
    """Why training on ``layer`` (with ``others``, the session's other volumes) in the window would not fit this
    machine's memory (``total`` bytes, default the physical memory), or None. Said when the image is chosen (or
    another volume added), rather than the window being killed for memory at Start with the user's strokes in it."""
    if total is None:
        total = physical_memory()
    need = session_bytes(layer, num_classes, others)
    if need <= total:
        return None
    what = f"'{layer.name}'" + (f" with {', '.join(repr(o.name) for o in others)}" if others else "")
    return (f"{what} is too large to train on in this window: about {need / 2**30:.0f} GiB, this machine has "
            f"{total / 2**30:.0f} GiB. Open a crop or a coarser level of it (the Python API trains on a zarr image "
            "without reading it in: README, Volumes larger than memory)")


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
