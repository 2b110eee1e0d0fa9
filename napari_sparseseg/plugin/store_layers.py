"""What the Session box does with layers read from a session store (File > Open or Open session…): a store's
prediction layer becomes the prediction layer of the store's image, and a store's class names and colours are
taken when its image is chosen while idle (what its stored labels mean)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .layers import store_of

if TYPE_CHECKING:
    from .host import DockHost


class StoreLayers:
    """Mixin of :class:`~.session_files.SessionFiles`: its ``widget`` adopts the layers of session stores."""

    widget: DockHost

    # -- layers ---------------------------------------------------------------------------
    def _on_inserted(self, event: Any) -> None:
        self._adopt(event.value)

    def _adopt(self, layer: Any) -> None:
        """Use a store's prediction layer as the prediction layer of the store's image (the widget's once that image
        is chosen), and its class names/colours while idle."""
        from .layers import role

        w, store = self.widget, store_of(layer)
        if store is None:
            return
        if role(layer) == "prediction":
            image = self._image_of(store)
            if image is not None:
                w.adopt_prediction(layer, image)
            elif w.session is None and (w.prediction_layer is None or w.prediction_layer not in w.viewer.layers):
                w.adopt_prediction(layer)
        elif w.session is None and layer is w.image_layer:  # not while the user works on another image
            self.take_classes_of(layer)

    def take_classes_of(self, layer: Any) -> bool:
        """Name and colour the classes as the store ``layer`` (an image) was read from does (while idle, when that
        image is chosen: what its stored labels mean); False when ``layer`` is no store's image."""
        if store_of(layer) is None or not layer.metadata.get("class_names"):
            return False
        self._set_classes(layer.metadata["class_names"], layer.metadata.get("class_colors"))
        return True

    def _image_of(self, store: str) -> Any:
        """The image layer (its first channel) read from the session store ``store``, if the viewer holds one."""
        from napari.layers import Image

        return next((ly for ly in self.widget.viewer.layers if isinstance(ly, Image) and store_of(ly) == store
                     and ly.metadata.get("class_names") is not None), None)

    def _set_classes(self, names: Any, colors: Any) -> None:
        from .classes import MAX_CLASSES, PALETTE, ClassList, SegClass

        names = list(names)[:MAX_CLASSES]
        if not names:
            return
        colors = list(colors or [])
        self.widget.set_classes(ClassList([SegClass(str(n), tuple(colors[i]) if i < len(colors)
                                                    else PALETTE[i % len(PALETTE)]) for i, n in enumerate(names)]))

    def keep_unstarted_strokes(self, path: Path | None) -> int:
        """Write the strokes painted on a reopened store's annotation layer before any Start into that store at
        ``path`` (the window closes: they would be lost), corrections as corrections. Returns how many voxels."""
        import numpy as np
        import zarr

        from ..core.encoding import layer_to_annotation

        layers = self.widget.layers
        if path is None or layers.sync is None or store_of(layers.annotation) != str(path):
            return 0
        stored = np.asarray(zarr.open_array(str(Path(path) / "labels"), mode="r"))
        if np.array_equal(layer_to_annotation(np.asarray(layers.annotation.data)), stored):
            return 0
        from ..store import SessionStore

        store, session = SessionStore.open(path, device="cpu")
        try:
            return layers.sync.resync(session)  # as when the session is ready, into the session of that store
        finally:
            store.close()
