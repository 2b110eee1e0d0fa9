"""The Results box of the dock widget: accept the prediction in view as labels, export a mask.

An exported mask is a snapshot: its layer is added hidden and below the live
prediction, so the prediction the user watches stays in view; the
notification says where the snapshot is.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from napari.layers import Labels
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import QFileDialog, QGroupBox, QHBoxLayout, QPushButton, QVBoxLayout

from ..core.box import Box
from ..core.encoding import layer_to_annotation
from .layers import layer_geometry, placement
from .results import ExportKind, accepted_labels, export_mask

if TYPE_CHECKING:
    from .host import DockHost


class ResultsPanel(QGroupBox):
    """Accept and export, for the layers of the widget ``host``."""

    def __init__(self, host: DockHost) -> None:
        super().__init__("Results")
        self.host = host
        col = QVBoxLayout(self)
        self.accept_button = QPushButton("Accept prediction in view as labels")
        self.accept_button.setToolTip("unlabeled voxels of the slice in view (the volume in 3D view) take the "
                                      "predicted class as labels; undo with Ctrl+Z on the annotation layer")
        row = QHBoxLayout()
        self.export_prediction_button = QPushButton("Export prediction…")
        self.export_annotation_button = QPushButton("Export annotation…")
        row.addWidget(self.export_prediction_button)
        row.addWidget(self.export_annotation_button)
        col.addWidget(self.accept_button)
        col.addLayout(row)
        self.accept_button.clicked.connect(self.accept_in_view)
        self.export_prediction_button.clicked.connect(lambda: self._export_dialog("prediction"))
        self.export_annotation_button.clicked.connect(lambda: self._export_dialog("annotation"))

    def update_buttons(self) -> None:
        """Accept is possible once a prediction is on screen."""
        self.accept_button.setEnabled(self.host.outputs.has_prediction())

    def accept_in_view(self) -> int:
        """Unlabeled voxels of the slice in view (the volume in 3D view) take the predicted class.

        Written through the annotation layer's ``data_setitem``, so it is one
        undoable napari edit and reaches the session as a stroke. Returns the
        number of voxels labeled.
        """
        outputs, annotation = self.host.outputs, self.host.annotation_layer
        if outputs.prediction is None or annotation is None or outputs.predicted is None:
            show_warning("no prediction yet: start training first")
            return 0
        if self.host.volumes_panel.in_view()[0]:  # the layer selected is another volume's, not the one in view here
            show_warning("Accept takes the prediction of the image being segmented: select its layers first")
            return 0
        box = self.host.current_view_box() or Box.full(annotation.data.shape)
        coords, values = accepted_labels(annotation.data, outputs.prediction.data, outputs.predicted, box)
        if values.size == 0:
            show_info("nothing to accept in view: every predicted voxel is labeled already")
            return 0
        annotation.visible = True  # napari's edit of a hidden labels layer fails part-way; the user sees what changed
        annotation.data_setitem(coords, values)
        return int(values.size)

    def export(self, kind: ExportKind = "prediction", path: str | Path | None = None) -> Labels:
        """Add a plain mask layer (0 = background, 1..K), hidden below the live prediction, and optionally save it.

        Parameters
        ----------
        kind : {"prediction", "annotation"}
            The prediction with labels kept where painted, or only the painted labels.
        path : str or Path, optional
            ``.tif``, ``.nii(.gz)``, ``.npz``, ``.zarr`` or ``.ome.zarr`` (see
            :func:`napari_sparseseg.io.save_mask`); a NIfTI mask gets the image's
            source affine when it was read from NIfTI, so it overlays the scan in other tools.
        """
        host = self.host
        annotation, image, prediction = host.annotation_layer, host.image_layer, host.outputs.prediction
        if annotation is None or image is None:
            raise ValueError("pick an image and an annotation layer first")
        labels = layer_to_annotation(annotation.data)
        mask = export_mask(kind, labels, prediction.data if prediction is not None else None)
        name = f"{image.name} {kind} mask"
        layer = host.viewer.add_labels(mask, name=name, **placement(image), visible=False,
                                       colormap=host.classes.colormap(),
                                       metadata={"class_names": tuple(host.classes.names), "sparseseg_role": "export"})
        layers = host.viewer.layers
        if prediction is not None and prediction in layers:  # a snapshot must not cover the live prediction
            layers.move(layers.index(layer), layers.index(prediction))
        if path is not None:
            from ..io import save_mask

            save_mask(path, mask, tuple(float(s) for s in image.scale[-3:]), **layer_geometry(image))  # where it lies
        layers.selection.active = annotation
        where = f" and saved to {path}" if path is not None else ""
        show_info(f"sparseseg: the {kind} mask is the hidden layer '{layer.name}'{where}")  # napari may rename it
        return layer

    def _export_dialog(self, kind: ExportKind) -> None:
        try:
            path, _ = QFileDialog.getSaveFileName(self, f"Save {kind} mask", f"{kind}_mask.tif",
                                                  "Masks (*.tif *.tiff *.nii.gz *.nii *.npz *.zarr *.ome.zarr)")
            self.export(kind, path or None)
        except Exception as exc:  # noqa: BLE001 (a user action: report, never crash the app)
            show_error(f"sparseseg: export failed: {exc}")
