"""Saved models in napari: the widget's "Save model…" and "Apply model…" buttons.

A model file (``.pt``, :mod:`napari_sparseseg.core.checkpoint`) holds the
weights and the configuration that built them. Applying it to an image layer
predicts that layer in a worker thread and adds the dense mask
(0 = background, 1..K) as a new labels layer over the image; a model whose
input channels do not fit the image is refused with a message. "Apply model…"
reads the chosen image with the channels ticked in the Data box. "Apply to all
images…" does the same for every open volume in turn, each mask added as soon
as it is ready: each 3D image layer for a one-channel model; for a model of C
channels, each file's C channel layers together (napari opens a multichannel
file as a layer per channel) and each 4D layer. An image the model cannot
predict is reported and skipped.
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


#: A volume to predict: an image layer and the layers read as its further channels.
Volume = tuple["Image", tuple["Image", ...]]


def predict_layer(layer: Image, model: str | Path, device: str = "auto", channels: Sequence[Image] = (),
                  notes: list[str] | None = None) -> np.ndarray:
    """Dense mask ``(z, y, x)`` (0 = background, 1..K) of an image layer (with ``channels``, layers read as its
    further channels) predicted by a saved model.

    Runs on the calling thread (the widget calls it from a worker). Spacing is
    the layer's ``scale``; a 4D layer is read with its first axis as channels.
    A model that recorded its channels' names is fed the layers in the order their names match
    (:func:`~..core.channels.channel_order`), which is said in ``notes``.
    """
    from ..core.channels import ChannelStack, channel_order, matched_words
    from ..core.checkpoint import channel_names, read_model
    from ..core.session import SegmentationSession

    payload = read_model(model)
    layers = [layer, *channels]
    trained = channel_names(payload)
    order = channel_order(trained, [ly.name for ly in layers]) if trained and channels else None
    if order is not None:
        if notes is not None:
            notes.append(matched_words(trained, [ly.name for ly in layers], order))
        layers = [layers[i] for i in order]
    data = np.asarray(ChannelStack([ly.data for ly in layers]) if channels else layer.data)
    channel_axis = 0 if data.ndim == 4 else None
    spacing = tuple(float(s) for s in layer.scale[-3:])
    session = SegmentationSession.from_model(data, payload, spacing=spacing, channel_axis=channel_axis,
                                             device=device)
    return session.segment()


def predict_layers(volumes: Sequence[Volume], model: str | Path, device: str = "auto"
                   ) -> Iterator[tuple[Image, np.ndarray | None, str | None]]:
    """``(layer, mask, note)`` for each volume in turn (``note``: what the user should know, or None), or
    ``(layer, None, reason)`` where it cannot be predicted (e.g. other channels than the model's): one image's
    failure does not stop the others."""
    for layer, channels in volumes:
        notes: list[str] = []
        try:
            mask = predict_layer(layer, model, device, channels, notes)
        except (ValueError, RuntimeError, OSError, MemoryError) as exc:
            yield layer, None, str(exc)
        else:
            yield layer, mask, "; ".join(notes) or None


def volume_layers(viewer: Any, channels: int = 1, chosen: Volume | None = None) -> list[Volume]:
    """The viewer's volumes for a model of ``channels`` image channels: each 4D image layer (its first axis the
    channels) and each 3D one, or, for a model of several channels, ``chosen`` (the Data box's image and the
    channels ticked there, first) and the 3D layers of each file together (:func:`~.layers.same_file`, same shape
    and voxel size, in the viewer's order; a file of another number of channels is offered as it is, for the model
    to refuse)."""
    from napari.layers import Image

    from .layers import is_output, same_file

    images = [layer for layer in viewer.layers
              if isinstance(layer, Image) and not layer.rgb and not is_output(layer) and np.ndim(layer.data) in (3, 4)]
    if channels == 1:
        return [(layer, ()) for layer in images]
    volumes: list[Volume] = []
    grouped: set[int] = set()
    if chosen is not None and chosen[1]:
        volumes.append((chosen[0], tuple(chosen[1])))
        grouped.update(id(ly) for ly in (chosen[0], *chosen[1]))
    for layer in images:
        if id(layer) in grouped:
            continue
        siblings = [] if np.ndim(layer.data) == 4 else [
            other for other in images if other is not layer and id(other) not in grouped and np.ndim(other.data) == 3
            and same_file(other, layer) and other.data.shape == layer.data.shape
            and tuple(other.scale) == tuple(layer.scale)]
        grouped.update(id(ly) for ly in (layer, *siblings))
        volumes.append((layer, tuple(siblings)))
    return volumes


def add_mask_layer(widget: DockHost, layer: Image, mask: np.ndarray, model: str | Path) -> Labels:
    """Add ``mask`` over ``layer`` as a labels layer named after the layer and the model (classes the widget does
    not name, of a model of more classes, in the palette's colours, with a note)."""
    top = int(mask.max()) if mask.size else 0
    if top > len(widget.classes):
        show_info(f"sparseseg: {Path(model).name} gives {top} classes, the Classes box names {len(widget.classes)}: "
                  "the others are shown in the palette's colours")
    return widget.viewer.add_labels(mask, name=f"{layer.name} ({Path(model).stem})", **placement(layer),
                                    colormap=widget.classes.colormap(upto=top),
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
        self._closed = False
        box = QGroupBox("Model")
        grid = QGridLayout(box)  # two rows, so the dock does not widen
        self.save_button = QPushButton("Save model…")
        self.save_button.setToolTip("write the current model (weights + settings) to a .pt file")
        self.apply_button = QPushButton("Apply model…")
        self.apply_button.setToolTip("predict the chosen image layer with a saved model; the mask is added as "
                                     "a new labels layer")
        self.apply_all_button = QPushButton("Apply to all images…")
        self.apply_all_button.setToolTip("predict every open image with a saved model, one after the other (for a "
                                         "model of several channels, each file's channel layers together); each "
                                         "mask is added as a new labels layer over its image")
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
            raise ValueError("no trained model in this window yet: paint a few slices and press Start (a reopened "
                             "session resumes from its checkpoint), then Save model; a session store's "
                             "checkpoints/latest.pt is a model file too")
        key = self.widget.session_key  # the layers the session was trained on, not those ticked since
        image, channels = (key[0], list(key[-1])) if key else (self.widget.image_layer, [])
        names = [ly.name for ly in (image, *channels)] if image is not None and channels else None
        return save_model(session.trainer, path, channel_names=names)

    def apply(self, model: str | Path, layer: Image | None = None) -> Any:
        """Predict ``layer`` (default: the widget's image) with ``model`` in a worker; returns the worker.

        The mask layer is added on the GUI thread when the worker returns;
        errors (e.g. a model for another number of channels) become a notification.
        """
        from napari.qt.threading import create_worker

        channels = self.widget.data_panel.channel_layers if layer is None else []
        layer = layer if layer is not None else self.widget.image_layer
        if layer is None:
            raise ValueError("pick an image layer to apply the model to")
        device = self.widget.training_panel.session_config().device
        notes: list[str] = []
        worker = create_worker(predict_layer, layer, model, device, channels, notes,
                               _ignore_errors=True)  # errors: notified

        def on_returned(mask: np.ndarray) -> None:
            if self._closed:
                return
            add_mask_layer(self.widget, layer, mask, model)
            for note in notes:
                show_info(f"sparseseg: {note}")

        worker.returned.connect(on_returned)
        worker.errored.connect(lambda exc: show_error(f"sparseseg: applying {Path(model).name} failed: {exc}"))
        worker.finished.connect(lambda: self._busy(False))
        self._busy(True)
        show_info(f"sparseseg: predicting {layer.name} with {Path(model).name}…")
        self.worker = worker
        worker.start()
        return worker

    def apply_all(self, model: str | Path, layers: Sequence[Image] | None = None) -> Any:
        """Predict each of ``layers`` (default: every open volume for the model's channels, :func:`volume_layers`)
        with ``model`` in one worker, adding each mask when it is ready; returns the worker.

        Raises
        ------
        ValueError
            When there is no image layer to predict, or ``model`` is no model file.
        """
        from napari.qt.threading import create_worker

        from ..core.checkpoint import image_channels, read_model

        chosen = (self.widget.image_layer, self.widget.data_panel.channel_layers) \
            if self.widget.image_layer is not None else None
        volumes = [(layer, ()) for layer in layers] if layers is not None else volume_layers(
            self.widget.viewer, image_channels(read_model(model)), chosen)
        if not volumes:
            raise ValueError("no 3D image layer is open to apply the model to")
        device = self.widget.training_panel.session_config().device
        done: list[str] = []
        failed: list[str] = []

        def on_result(result: tuple[Image, np.ndarray | None, str | None]) -> None:
            layer, mask, message = result
            if self._closed:
                return
            if mask is None:
                failed.append(layer.name)
                show_error(f"sparseseg: {layer.name} skipped: {message}")
                return
            try:
                add_mask_layer(self.widget, layer, mask, model)
            except (ValueError, TypeError, MemoryError) as exc:  # the mask is not lost silently: it is counted
                failed.append(layer.name)
                show_error(f"sparseseg: {layer.name}: its mask could not be shown ({exc})")
                return
            done.append(layer.name)
            show_info(f"sparseseg: {len(done) + len(failed)} of {len(volumes)} images predicted"
                      + (f" ({layer.name}: {message})" if message else ""))

        def on_finished() -> None:
            self._busy(False)
            if self._closed:
                return
            show_info(f"sparseseg: {Path(model).name} applied to {len(done)} of {len(volumes)} images"
                      + (f"; skipped: {', '.join(failed)}" if failed else ""))

        worker = create_worker(predict_layers, volumes, model, device, _ignore_errors=True)
        worker.yielded.connect(on_result)
        worker.errored.connect(lambda exc: show_error(f"sparseseg: applying {Path(model).name} failed: {exc}"))
        worker.finished.connect(on_finished)
        self._busy(True)
        show_info(f"sparseseg: predicting {len(volumes)} images with {Path(model).name}…")
        self.worker = worker
        worker.start()
        return worker

    def _busy(self, busy: bool) -> None:
        """One prediction run at a time: both apply buttons off while a worker predicts."""
        if self._closed:
            return
        for button in (self.apply_button, self.apply_all_button):
            button.setEnabled(not busy)

    def close(self) -> None:
        """The widget closes: a prediction still running adds no layer and touches no button when it ends."""
        self._closed = True
        worker, self.worker = self.worker, None
        if worker is not None:
            try:
                worker.quit()
            except RuntimeError:  # its Qt object is gone already
                pass

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

