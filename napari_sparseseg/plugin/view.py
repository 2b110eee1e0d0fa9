"""Which part of the volume the user looks at, in the image's ``(z, y, x)`` voxels."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..core.box import Box

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer


def view_box(viewer: napari.Viewer, layer: Layer) -> Box | None:
    """The slice in view of a 3D ``layer``, or ``None`` in 3D view.

    In 2D view the box is one voxel thick along the axis not displayed (in
    whatever axis order the user rolled to: an xz view gives a ``y`` slab)
    and spans the displayed axes.

    Parameters
    ----------
    viewer : napari.Viewer
        Its dims give the displayed axes and the current point.
    layer : napari.layers.Layer
        A 3D layer; the box is in its data (voxel) coordinates.
    """
    if viewer.dims.ndisplay == 3 or layer.ndim != 3:
        return None
    offset = viewer.dims.ndim - layer.ndim
    if offset < 0:
        return None
    displayed = {a - offset for a in viewer.dims.displayed if a >= offset}
    point = np.asarray(layer.world_to_data(viewer.dims.point), dtype=float)[-3:]
    shape = layer.data.shape
    start, stop = [], []
    for axis in range(3):
        if axis in displayed:
            start.append(0)
            stop.append(int(shape[axis]))
        else:
            c = int(np.clip(np.round(point[axis]), 0, shape[axis] - 1))
            start.append(c)
            stop.append(c + 1)
    return Box(tuple(start), tuple(stop))  # type: ignore[arg-type]
