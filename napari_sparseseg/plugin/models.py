"""Saved models in napari: the widget's "Save model…" and "Apply model…" buttons.

A model file (``.pt``, :mod:`napari_sparseseg.core.checkpoint`) holds the
weights and the configuration that built them. Applying it to an image layer
predicts that layer in a worker thread and adds the dense mask
(0 = background, 1..K) as a new labels layer over the image; a model whose
input channels do not fit the image is refused with a message. "Apply to all
images…" does the same for every open 3D image layer in turn, each mask added
as soon as it is ready; an image the model cannot predict is reported and
skipped.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.utils.notifications import show_error, show_info

from .layers import placement

if TYPE_CHECKING:
    from napari.layers import Image, Labels

    from .host import DockHost

MODEL_FILTER = "napari-sparseseg model (*.pt)"


def predict_layer(layer: Image, model: str | Path, device: str = "auto") -> np.ndarray:
    """Dense mask ``(z, y, x)`` (0 = background, 1..K) of an image layer predicted by a saved model.

    Runs on the calling thread (the widget calls it from a worker). Spacing is
    the layer's ``scale``; a 4D layer is read with its first axis as channels.
    """
    from ..core.session import SegmentationSession

    data = np.asarray(layer.data)
    channel_axis = 0 if data.ndim == 4 else None
    spacing = tuple(float(s) for s in layer.scale[-3:])
    session = SegmentationSession.from_model(data, model, spacing=spacing, channel_axis=channel_axis, device=device)
    return session.segment()


def predict_layers(layers: Sequence[Image], model: str | Path, device: str = "auto"
                   ) -> Iterator[tuple[Image, np.ndarray | None, str | None]]:
    """``(layer, mask, None)`` for each layer in turn, or ``(layer, None, reason)`` where it cannot be predicted
    (e.g. other channels than the model's): one image's failure does not stop the others."""
    for layer in layers:
        try:
            yield layer, predict_layer(layer, model, device), None
        except (ValueError, RuntimeError, OSError, MemoryError) as exc:
            yield layer, None, str(exc)


def volume_layers(viewer: Any) -> list[Image]:
    """The viewer's image layers that hold a volume: 3D, or 4D read with the first axis as channels."""
    from napari.layers import Image

    return [layer for layer in viewer.layers
            if isinstance(layer, Image) and not layer.rgb and np.ndim(layer.data) in (3, 4)]


def add_mask_layer(widget: DockHost, layer: Image, mask: np.ndarray, model: str | Path) -> Labels:
    """Add ``mask`` over ``layer`` as a labels layer named after the layer and the model."""
    return widget.viewer.add_labels(mask, name=f"{layer.name} ({Path(model).stem})", **placement(layer),
                                    colormap=widget.classes.colormap(),
                                    metadata={"sparseseg_role": "export", "sparseseg_model": str(model)})


class ModelFiles:
    """The widget's "Model" box: save the current model, apply a saved one to the chosen image layer.

    Parameters
    ----------
    widget : DockHost
        The dock widget; a "Model" group box is added to its layout.
    """

    def __init__(self, widget: DockHost) -> None:
        from qtpy.QtWidgets import QGridLayout, QGroupBox, QPushButton

        self.widget = widget
        self.worker: Any = None
        box = QGroupBox("Model")
        grid = QGridLayout(box)  # two rows, so the dock does not widen
        self.save_button = QPushButton("Save model…")
        self.save_button.setToolTip("write the current model (weights + settings) to a .pt file")
        self.apply_button = QPushButton("Apply model…")
        self.apply_button.setToolTip("predict the chosen image layer with a saved model; the mask is added as "
                                     "a new labels layer")
        self.apply_all_button = QPushButton("Apply to all images…")
        self.apply_all_button.setToolTip("predict every open 3D image layer with a saved model, one after the "
                                         "other; each mask is added as a new labels layer over its image")
        grid.addWidget(self.save_button, 0, 0)
        grid.addWidget(self.apply_button, 0, 1)
        grid.addWidget(self.apply_all_button, 1, 0, 1, 2)
        layout = widget.layout()
        layout.insertWidget(max(layout.count() - 1, 0), box)
        self.save_button.clicked.connect(self._save_dialog)
        self.apply_button.clicked.connect(self._apply_dialog)
        self.apply_all_button.clicked.connect(self._apply_all_dialog)

    def save(self, path: str | Path) -> Path:
        """Write the current session's model to ``path``; ``ValueError`` if nothing was trained yet."""
        from ..core.checkpoint import save_model

        session = self.widget.session
        if session is None or session.trainer.step == 0:
            raise ValueError("no trained model yet: paint a few slices and press Start first")
        return save_model(session.trainer, path)

    def apply(self, model: str | Path, layer: Image | None = None) -> Any:
        """Predict ``layer`` (default: the widget's image) with ``model`` in a worker; returns the worker.

        The mask layer is added on the GUI thread when the worker returns;
        errors (e.g. a model for another number of channels) become a notification.
        """
        from napari.qt.threading import create_worker

        layer = layer if layer is not None else self.widget.image_layer
        if layer is None:
            raise ValueError("pick an image layer to apply the model to")
        device = self.widget.training_panel.session_config().device
        worker = create_worker(predict_layer, layer, model, device, _ignore_errors=True)  # errors: notification
        worker.returned.connect(lambda mask: add_mask_layer(self.widget, layer, mask, model))
        worker.errored.connect(lambda exc: show_error(f"sparseseg: applying {Path(model).name} failed: {exc}"))
        worker.finished.connect(lambda: self._busy(False))
        self._busy(True)
        show_info(f"sparseseg: predicting {layer.name} with {Path(model).name}…")
        self.worker = worker
        worker.start()
        return worker

    def apply_all(self, model: str | Path, layers: Sequence[Image] | None = None) -> Any:
        """Predict each of ``layers`` (default: every open volume, :func:`volume_layers`) with ``model`` in one
        worker, adding each mask when it is ready; returns the worker.

        Raises
        ------
        ValueError
            When there is no image layer to predict.
        """
        from napari.qt.threading import create_worker

        layers = list(layers) if layers is not None else volume_layers(self.widget.viewer)
        if not layers:
            raise ValueError("no 3D image layer is open to apply the model to")
        device = self.widget.training_panel.session_config().device
        done: list[str] = []
        failed: list[str] = []

        def on_result(result: tuple[Image, np.ndarray | None, str | None]) -> None:
            layer, mask, reason = result
            if mask is None:
                failed.append(layer.name)
                show_error(f"sparseseg: {layer.name} skipped: {reason}")
                return
            add_mask_layer(self.widget, layer, mask, model)
            done.append(layer.name)
            show_info(f"sparseseg: {len(done) + len(failed)} of {len(layers)} images predicted")

        def on_finished() -> None:
            self._busy(False)
            show_info(f"sparseseg: {Path(model).name} applied to {len(done)} of {len(layers)} images"
                      + (f"; skipped: {', '.join(failed)}" if failed else ""))

        worker = create_worker(predict_layers, layers, model, device, _ignore_errors=True)
        worker.yielded.connect(on_result)
        worker.errored.connect(lambda exc: show_error(f"sparseseg: applying {Path(model).name} failed: {exc}"))
        worker.finished.connect(on_finished)
        self._busy(True)
        show_info(f"sparseseg: predicting {len(layers)} images with {Path(model).name}…")
        self.worker = worker
        worker.start()
        return worker

    def _busy(self, busy: bool) -> None:
        """One prediction run at a time: both apply buttons off while a worker predicts."""
        for button in (self.apply_button, self.apply_all_button):
            button.setEnabled(not busy)

    def _apply_dialog(self) -> None:
        self._open_model_then("Apply model", self.apply)

    def _apply_all_dialog(self) -> None:
        self._open_model_then("Apply model to all images", self.apply_all)

    def _open_model_then(self, title: str, action: Any) -> None:
        """Ask for a model file and run ``action(path)`` on it; a ValueError becomes a notification."""
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getOpenFileName(self.widget, title, "", MODEL_FILTER)
        if path:
            try:
                action(path)
            except ValueError as exc:
                show_error(f"sparseseg: {exc}")

    def _save_dialog(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        path, _ = QFileDialog.getSaveFileName(self.widget, "Save model", "model.pt", MODEL_FILTER)
        if path:
            try:
                show_info(f"sparseseg: model saved to {self.save(path)}")
            except (OSError, ValueError) as exc:
                show_error(f"sparseseg: {exc}")

