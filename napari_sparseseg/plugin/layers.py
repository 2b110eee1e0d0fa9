"""Which layers the widget accepts, and the layers it makes."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from napari.layers import Image

from ..core import footprint

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


#: The widget's layers over the image: annotation and prediction (uint8), which voxels are predicted (bool) and the
#: uncertainty (float32).
LAYER_BYTES_PER_VOXEL = 7


def _image_read_in(layer: Image) -> int:
    """Bytes per voxel of reading ``layer``'s image in: none for an array already in memory."""
    return 0 if isinstance(layer.data, np.ndarray) else np.dtype(layer.data.dtype).itemsize


def volume_bytes(layer: Image, num_classes: int) -> int:
    """Memory one volume of a session takes in the window, about, beside the first responder's bank: the session's
    arrays of it (:func:`~napari_sparseseg.core.footprint.volume_bytes`), the widget's layers, and the image itself
    unless it is already in memory."""
    return footprint.volume_bytes(layer.data.shape[-3:], num_classes,
                                  extra_per_voxel=LAYER_BYTES_PER_VOXEL + _image_read_in(layer))


def session_bytes(layer: Image, num_classes: int, others: Sequence[Image] = (),
                  channels: Sequence[Image] = ()) -> int:
    """Memory that training on ``layer`` (with ``channels``, further layers read as its channels, and the ``others``
    volumes the session also learns from) in the window takes, about: the session's
    (:func:`~napari_sparseseg.core.footprint.session_bytes`), each volume's layers and image read in, and the
    channels stacked into one array."""
    volumes = (layer, *others)
    extra = sum(math.prod(int(n) for n in v.data.shape[-3:]) * (LAYER_BYTES_PER_VOXEL + _image_read_in(v))
                for v in volumes)
    if channels:  # the channels stacked into one array of their common type
        stacked = np.result_type(*(np.dtype(c.data.dtype) for c in (layer, *channels)))
        extra += math.prod(int(n) for n in layer.data.shape[-3:]) * (1 + len(channels)) * stacked.itemsize
    return extra + footprint.session_bytes(layer.data.shape[-3:], layer.scale[-3:], num_classes, 1 + len(channels),
                                           others=[(o.data.shape[-3:], 1) for o in others])


def memory_problem(layer: Image, num_classes: int, total: int | None = None,
                   others: Sequence[Image] = (), channels: Sequence[Image] = ()) -> str | None:
    """Why training on ``layer`` (with ``channels``, its further channel layers, and ``others``, the session's other
    volumes) in the window would not fit this machine's memory (``total`` bytes, default the physical memory), or
    None. Said when the image is chosen (or another volume added), rather than the window being killed for memory
    at Start with the user's strokes in it."""
    what = f"'{layer.name}'" + (f" with {', '.join(repr(o.name) for o in (*channels, *others))}"
                                if others or channels else "")
    return footprint.too_large(what, session_bytes(layer, num_classes, others, channels), total,
                               "Open a crop or a coarser level of it (the Python API trains on a zarr image without "
                               "reading it in: README, Volumes larger than memory)", "in this window")


def file_name(layer_name: str) -> str:
    """A layer's name less napari's `` [i]`` suffix of one channel of a file (``brain [1]`` -> ``brain``): the layers
    of one multichannel file share it (as do layers of files of one name: :func:`same_file` tells them apart)."""
    return re.sub(r" \[\d+\]$", "", layer_name)


def same_file(layer: Any, other: Any) -> bool:
    """Whether two layers look like channels of one file: one name less napari's `` [i]`` suffix, and the same file
    (or session store) where they were read from one (two patients' ``t1.nii.gz`` share a name, not a path; the
    sample made in code and its image read back from a saved session share a name, not a file)."""
    paths = [_read_from(ly) for ly in (layer, other)]
    return file_name(layer.name) == file_name(other.name) and paths[0] == paths[1]


def _read_from(layer: Any) -> str | None:
    """The file or session store a layer was read from (None: made in code)."""
    store, path = store_of(layer), getattr(getattr(layer, "source", None), "path", None)
    return str(store) if store else (str(path) if path else None)


def role(layer: Any) -> str | None:
    """The ``sparseseg_role`` a layer was tagged with, if any."""
    meta = getattr(layer, "metadata", None)
    return meta.get("sparseseg_role") if hasattr(meta, "get") else None


def is_output(layer: Any) -> bool:
    """Layers the widget made for output (never offered as image or annotation)."""
    return role(layer) in OUTPUT_ROLES


def placement(image: Image) -> dict[str, Any]:
    """Keyword arguments that put a new 3D layer exactly over ``image`` (of a 4D ``(c, z, y, x)`` image, over its
    last three axes)."""
    return {"scale": tuple(image.scale)[-3:], "translate": tuple(image.translate)[-3:]}


def layer_geometry(image: Any) -> dict[str, Any]:
    """Where ``image`` lies, for a session store to keep (``origin``: the last three of its ``translate``;
    ``affine``: the NIfTI affine its reader put in its metadata); empty for no layer."""
    if image is None:
        return {}
    meta = getattr(image, "metadata", None)
    affine = meta.get("affine") if hasattr(meta, "get") else None
    return {"origin": tuple(float(t) for t in image.translate[-3:]), "affine": affine}


def store_of(layer: Any) -> str | None:
    """The session store a layer was read from (``metadata["sparseseg_store"]``), if any."""
    meta = getattr(layer, "metadata", None)
    return meta.get("sparseseg_store") if hasattr(meta, "get") else None


def belongs_to(labels: Any, image: Any) -> bool:
    """Whether a labels layer looks like ``image``'s own: read from the same session store, or named after it
    (``cells annotation`` for ``cells``, as the Data box's New names it)."""
    store = store_of(image)
    if store is not None and store == store_of(labels):
        return True
    return file_name(labels.name).startswith(file_name(image.name) + " ")
