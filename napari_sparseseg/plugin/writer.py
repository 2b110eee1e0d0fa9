"""napari writer contribution: a labels layer to .tif, .nii(.gz), .zarr, .ome.zarr or .npz with its spacing.

Spacing is the last three entries of the layer's ``scale`` and its position the
last three of ``translate`` (kept by OME-Zarr, zarr and NIfTI). A NIfTI
``affine`` in the layer's ``metadata`` (set by this plugin's reader and carried
by the layers the plugin makes) is written back so the mask overlays the source
image in other tools; a labels layer without one (napari's own *New labels
layer*) takes the affine of the open NIfTI image of its shape, when there is
exactly one (lying where the labels lie).
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
        The layer's attributes: ``scale``, ``translate`` and ``metadata`` are used.
    """
    if isinstance(data, (list, tuple)) or type(data).__name__ == "MultiScaleData":
        data = data[0]
    data = np.asarray(data)
    scale = tuple(float(s) for s in (meta.get("scale") or (1.0, 1.0, 1.0))[-3:])
    translate = tuple(float(t) for t in (meta.get("translate") or (0.0, 0.0, 0.0))[-3:])
    affine = None
    if str(path).lower().endswith((".nii", ".nii.gz")):
        affine = (meta.get("metadata") or {}).get("affine")
        if affine is None:
            affine = _open_image_affine(data.shape, scale, translate)
    save_mask(path, data, scale, affine=affine, origin=translate if any(translate) else None)
    return [path]


def _open_image_affine(shape: tuple[int, ...], scale: tuple[float, ...],
                       translate: tuple[float, ...]) -> np.ndarray | None:
    """The NIfTI affine of the image layers open in napari's current viewer that the labels overlay (same shape,
    scale and translate), if they agree on one."""
    try:
        from napari import current_viewer

        viewer = current_viewer()
    except Exception:  # noqa: BLE001 (no napari, no viewer: write without)
        return None
    if viewer is None:
        return None
    found = [np.asarray(ly.metadata["affine"], float) for ly in viewer.layers
             if type(ly).__name__ == "Image" and isinstance(getattr(ly, "metadata", None), dict)
             and ly.metadata.get("affine") is not None and tuple(ly.data.shape[-3:]) == tuple(shape[-3:])
             and np.allclose(ly.scale[-3:], scale) and np.allclose(ly.translate[-3:], translate)]
    if not found or any(not np.allclose(a, found[0]) for a in found[1:]):
        return None
    return found[0]
