"""What the dock widget does when the viewer's layers change: another image or annotation layer chosen, a layer
removed or renamed (a mixin of :class:`~.widget.SparseSegWidget`).

A new image brings its own annotation and prediction layers (:meth:`~.data_panel.DataPanel.refresh` chooses them,
:meth:`~.layer_binding.LayerBinding.image_chosen` binds them); a session trained on another image or annotation
layer is dropped, and so is one whose layers were removed (a run still building its model included).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from napari.utils.notifications import show_info

if TYPE_CHECKING:
    from napari.layers import Image, Labels


class FollowsLayers:
    """The widget's reactions to the viewer's layers.

    The widget provides ``viewer``, ``session``, ``_session_key``, ``_pending_key``, ``run``, ``layers``
    (:class:`~.layer_binding.LayerBinding`), ``outputs``, ``data_panel``, ``class_panel``, ``volumes_panel``,
    ``status_panel``, ``features``, ``classes`` and the methods used below.
    """

    def _wire_viewer(self, connect: bool = True) -> None:
        """Follow (or stop following) the viewer's layers and the slice in view."""
        how = "connect" if connect else "disconnect"
        getattr(self.viewer.layers.events.inserted, how)(self._refresh_layer_choices)
        getattr(self.viewer.layers.events.removed, how)(self._on_layer_removed)
        for name in ("current_step", "ndisplay", "order"):
            getattr(getattr(self.viewer.dims.events, name), how)(self._update_view_box)

    def _refresh_layer_choices(self, event: Any = None) -> None:
        self.data_panel.refresh()

    @property
    def image_layer(self) -> Image | None:
        return self.data_panel.image_layer

    @property
    def annotation_layer(self) -> Labels | None:
        return self.data_panel.annotation_layer

    @property
    def prediction_layer(self) -> Labels | None:
        return self.outputs.prediction

    def _on_layer_removed(self, event: Any) -> None:
        layer = event.value
        self.layers.removed(layer)
        key = self._session_key if self.session is not None else self._pending_key if self.run.running else None
        images = (key[0], *key[-1]) if key else ()  # also those of a session still being built
        if (layer is not None and layer is self.layers.annotation) or any(layer is ly for ly in images):
            self._stop_and_keep_training()
            self._drop_session(None)
            self._stopped_because = f"layer '{layer.name}' was removed: training stopped"
            self.status_panel.say(self._stopped_because)
        self._refresh_layer_choices()

    def _on_image_changed(self) -> None:
        layer, problem = self.data_panel.image_combo.currentData(), self.data_panel.image_problem()
        if self.session is not None and self._session_key is not None and self._session_key[0] is not layer:
            if self.run.running:  # its worker must not go on training, and showing, another image's session
                self.stop()
            self._drop_session(None)  # the session (and what is shown of it) was another image's
            if self.files.path_label.text().startswith("the session before is kept"):
                show_info(f"sparseseg: {self.files.path_label.text()}")  # choosing its image again starts anew
        self.layers.image_chosen(self.image_layer, self.annotation_layer)  # its own prediction layer, if any
        if problem is None:
            if self.session is None and not self.files.take_classes_of(layer):
                self.class_panel.take_names_of(layer)
            self.features.for_layer(layer, len(self.classes), channels=self.data_panel.channel_layers)  # the bank
        self.volumes_panel.refresh()  # the image chosen here is no other volume
        self._update_view_box()
        self.update_buttons()

    def _on_annotation_changed(self) -> None:
        layer = self.annotation_layer
        if layer is not None and self.layers.annotation is layer:
            return
        if self.layers.annotation is not None:
            if self.run.running:
                self.stop()
            self.layers.unbind()
            self._drop_session(None)
        if layer is not None:
            self.layers.bind(layer)
            self.class_panel.select(self.class_panel.list.currentRow())
        self.update_buttons()

    def _ensure_prediction_layer(self) -> Labels:
        image, annotation = self.image_layer, self.annotation_layer
        assert image is not None and annotation is not None
        return self.layers.ensure_prediction(image, annotation)

    def adopt_prediction(self, layer: Labels, image: Image | None = None) -> None:
        """A stored prediction (a reopened session) becomes the prediction layer of ``image`` (its store's image,
        the chosen one when not given): shown, correctable, acceptable once that image is chosen."""
        image = image or self.image_layer
        self.layers.adopt(layer, image, self.annotation_layer, current=image is self.image_layer)
        self.update_buttons()
