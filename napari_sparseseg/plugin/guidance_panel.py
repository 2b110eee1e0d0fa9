"""The "Where to paint next" box of the dock widget: the best slice to paint and the likely errors, a click away.

It shows the latest :class:`~.core.events.Guidance` and moves the viewer: to the
suggested slice in its orientation (the axis the slice is normal to becomes the
slider, the other two are displayed), outlining the slice's uncertain region in
a shapes layer, or to the middle of a likely error. It knows the viewer and how
to find the image layer, nothing of the widget.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtWidgets import QComboBox, QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout

from ..core.box import Box
from ..core.events import Guidance
from ..core.guidance import SliceSuggestion

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer


def show_plane(viewer: napari.Viewer, layer: Layer, axis: int, point: tuple[int, int, int]) -> None:
    """Show the plane of ``layer`` normal to data ``axis`` through data ``point`` ``(z, y, x)`` (2D view)."""
    offset = viewer.dims.ndim - 3  # the world axis of the image's z (layers align on their last axes)
    viewer.dims.ndisplay = 2
    normal = offset + axis
    image_axes = [offset + a for a in range(3)]
    leading = [a for a in viewer.dims.order if a not in image_axes]  # other layers' axes, as the user ordered them
    # the two displayed axes are the image's own, in z, y, x order: a plane comes up the same way every time
    viewer.dims.order = tuple(leading + [normal] + [a for a in image_axes if a != normal])
    world = layer.data_to_world(point)
    viewer.dims.set_point(normal, world[-3 + axis])


#: Name of the shapes layer that outlines the suggested slice's uncertain region.
HIGHLIGHT_NAME = "sparseseg: paint here"


def region_outline(suggestion: SliceSuggestion) -> np.ndarray:
    """float ``(4, 3)`` data coordinates ``(z, y, x)`` of the rectangle around a suggestion's uncertain region,
    in its slice (constant along the axis the slice is normal to)."""
    return box_outline(suggestion.box, suggestion.axis, suggestion.index)


def box_outline(box: Box, axis: int, index: int) -> np.ndarray:
    """float ``(4, 3)`` data coordinates ``(z, y, x)`` of the rectangle ``box`` spans in the plane normal to
    ``axis`` at ``index``."""
    a, b = (ax for ax in range(3) if ax != axis)
    lo, hi = box.start, box.stop
    corners = []
    for u, v in ((lo[a], lo[b]), (lo[a], hi[b] - 1), (hi[a] - 1, hi[b] - 1), (hi[a] - 1, lo[b])):
        point = [0.0, 0.0, 0.0]
        point[axis], point[a], point[b] = index, u, v
        corners.append(point)
    return np.asarray(corners, dtype=np.float64)


#: What the box says before the first prediction of a session.
NO_GUIDANCE = "suggestions follow the first prediction"


class GuidancePanel(QGroupBox):
    """Parameters: ``viewer``, and ``layer`` returning the image layer the guidance is about (or None)."""

    def __init__(self, viewer: napari.Viewer, layer: Callable[[], Layer | None]) -> None:
        super().__init__("Where to paint next")
        self.viewer, self._layer = viewer, layer
        self.guidance: Guidance | None = None
        col = QVBoxLayout(self)
        row = QHBoxLayout()
        self.suggestion_label = QLabel(NO_GUIDANCE)
        self.suggestion_label.setWordWrap(True)
        self.go_button = QPushButton("Go there")
        self.go_button.setToolTip("show the suggested slice, in its orientation")
        row.addWidget(self.suggestion_label, 1)
        row.addWidget(self.go_button)
        col.addLayout(row)
        row = QHBoxLayout()
        self.error_combo = QComboBox()
        self.error_combo.setToolTip("the largest regions where the mask is least certain: check and correct them")
        self.error_button = QPushButton("Show")
        row.addWidget(self.error_combo, 1)
        row.addWidget(self.error_button)
        col.addLayout(row)
        self.go_button.clicked.connect(self.go_to_suggestion)
        self.error_button.clicked.connect(lambda: self.go_to_error(self.error_combo.currentIndex()))
        self._enable()

    def _enable(self) -> None:
        g = self.guidance
        self.go_button.setEnabled(bool(g and g.slices))
        self.error_button.setEnabled(bool(g and g.errors))

    def show_guidance(self, guidance: Guidance) -> None:
        """Show a new set of suggestions (an outline of the ones before goes)."""
        self.guidance = guidance
        self._clear_outline()
        if guidance.slices:
            self.suggestion_label.setText(guidance.slices[0].describe() + ": the mask is least certain there")
        else:
            self.suggestion_label.setText("no uncertain region left outside your labels")
        self.error_combo.clear()
        for i, region in enumerate(guidance.errors, 1):
            z, y, x = region.centre
            self.error_combo.addItem(f"likely error {i}: {region.voxels:,} voxels around z {z}, y {y}, x {x}")
        self._enable()

    def forget(self) -> None:
        """The session was dropped: its suggestions are no guide to the next one."""
        self.guidance = None
        self.suggestion_label.setText(NO_GUIDANCE)
        self.error_combo.clear()
        self._clear_outline()
        self._enable()

    def _clear_outline(self) -> None:
        existing = next((lyr for lyr in self.viewer.layers if lyr.name == HIGHLIGHT_NAME), None)
        if existing is not None:
            self.viewer.layers.remove(existing)

    def go_to_suggestion(self) -> None:
        """Move the viewer to the best suggested slice."""
        layer = self._layer()
        if layer is None or not self.guidance or not self.guidance.slices:
            return
        best = self.guidance.slices[0]
        centre = tuple((a + b - 1) // 2 for a, b in zip(best.box.start, best.box.stop))
        show_plane(self.viewer, layer, best.axis, centre)
        self._outline(layer, region_outline(best))

    def _outline(self, layer: Layer, outline: np.ndarray) -> None:
        """Outline a region (:func:`box_outline`) in a shapes layer placed like ``layer`` (the active layer, the
        one the user paints on, stays active)."""
        existing = next((lyr for lyr in self.viewer.layers if lyr.name == HIGHLIGHT_NAME), None)
        if existing is not None and existing.ndim == 3:
            existing.scale, existing.translate = tuple(layer.scale[-3:]), tuple(layer.translate[-3:])
            existing.data = [outline]
            existing.shape_type = ["rectangle"]
            return
        active = self.viewer.layers.selection.active
        self.viewer.add_shapes([outline], shape_type="rectangle", name=HIGHLIGHT_NAME, edge_color="yellow",
                               face_color="transparent", edge_width=2, scale=tuple(layer.scale[-3:]),
                               translate=tuple(layer.translate[-3:]), ndim=3)
        if active is not None and active in self.viewer.layers:
            self.viewer.layers.selection.active = active

    def go_to_error(self, index: int) -> None:
        """Move the viewer to the axial slice through likely error ``index`` (at a voxel of it) and outline it."""
        layer = self._layer()
        if layer is None or not self.guidance or not 0 <= index < len(self.guidance.errors):
            return
        region = self.guidance.errors[index]
        show_plane(self.viewer, layer, 0, region.centre)
        self._outline(layer, box_outline(region.box, 0, region.centre[0]))
