"""napari writer contribution: a labels layer to .tif, .nii(.gz), .zarr, .ome.zarr or .npz with its spacing.

napari-free: it gets the layer's data and attributes from napari. Spacing is
the last three entries of the layer's ``scale``; a NIfTI ``affine`` in the
layer's ``metadata`` (set by this plugin's reader) is written back so the mask
overlays the source image in other tools.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..io import save_mask


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one labels layer; returns ``[path]`` as napari expects.

    Parameters
    ----------
    path : str
        Output file; the suffix picks the format (see :func:`napari_sparseseg.io.save_mask`).
    data : array-like
        ``(z, y, x)`` labels (the full-resolution level of a multiscale layer).
    meta : dict
        The layer's attributes: ``scale`` and ``metadata`` are used.
    """
    if isinstance(data, (list, tuple)) or type(data).__name__ == "MultiScaleData":
        data = data[0]
    scale = tuple(float(s) for s in (meta.get("scale") or (1.0, 1.0, 1.0))[-3:])
    affine = (meta.get("metadata") or {}).get("affine")
    save_mask(path, np.asarray(data), scale, affine=affine if str(path).lower().endswith((".nii", ".nii.gz")) else None)
    return [path]
