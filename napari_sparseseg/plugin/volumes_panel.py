"""The widget's "More volumes" box: other images the net learns from too, painted on and predicted like the first.

A user with several volumes of one kind (embryos, time points, a series of
scans) picks another image layer and presses *Learn from it too*: an
annotation layer ``"<image> annotation"`` is made over it, whose strokes go to
that volume of the session (:meth:`~.core.session.SegmentationSession.add_training_volume`)
through its own :class:`~.strokes.LabelSync`. While one of its layers is
selected, every other refresh of the training run predicts that volume with the
net (``view_volume`` of the session's loop: the slice in view when it changed, else
the whole volume) into ``"<image> prediction"``, on
which strokes are corrections, as on the first image's prediction.

Volumes join a session at Start, in the worker, before the first step (after
the session's store is created or reopened, which then keeps them): reading a
large image and copying it into the store never blocks the window, and the
trainer's volumes never change under a step. A reopened session store brings
its volumes back as layers (:func:`~.session_reader.store_layers`), matched to
the session's volumes at Start.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import QComboBox, QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout

from ..core.annotation import Source
from ..core.encoding import ANNOTATION_DTYPE, MASK_DTYPE, annotation_to_layer, layer_to_annotation
from .layers import image_layer_problem, is_output, layer_geometry, memory_problem, placement, role
from .session_reader import STORE_META, VOLUME_META
from .strokes import LabelSync
from .view import view_box

if TYPE_CHECKING:
    from ..core.annotation import AnnotatedVolume
    from ..core.box import Box
    from ..core.session import SegmentationSession
    from .bridge import Refresh
    from .host import DockHost


class VolumeLabels:
    """What a :class:`~.strokes.LabelSync` asks of a session, for one of its other volumes."""

    def __init__(self, volume: AnnotatedVolume) -> None:
        self.volume = volume

    @property
    def num_classes(self) -> int:
        return self.volume.num_classes

    def labels_at(self, index: tuple) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the labels (annotation encoding) and their sources at ``index``."""
        return np.array(self.volume.labels[index]), np.array(self.volume.source[index])

    def add_labels(self, index: tuple, values: np.ndarray | int, source: Source = Source.PAINTED) -> Any:
        return self.volume.set_labels(index, values, source)


@dataclass(eq=False)
class VolumeEntry:
    """One more volume: its layers, the strokes' route, and its volume in the current session (None: not yet)."""

    image: Image
    annotation: Labels
    sync: LabelSync
    labels: VolumeLabels | None = None
    prediction: Labels | None = None
    #: ``(store path, n)`` of a reopened store's ``volumes/<n>``, until matched to the session's volume.
    stored: tuple[str, int] | None = None

    def layers(self) -> list[Any]:
        return [ly for ly in (self.image, self.annotation, self.prediction) if ly is not None]


#: Why no other volume joins a session whose image has several channels.
SEVERAL_CHANNELS = ("other volumes join a session of one image channel only: untick the further channels in the Data "
                    "box, or train on several multi-channel volumes with `napari-sparseseg train --also`")


class VolumesPanel(QGroupBox):
    """Other images of the same kind that the net learns from: add, paint, see them predicted.

    Parameters
    ----------
    host : DockHost
        The dock widget (its viewer, classes, session and run).
    """

    def __init__(self, host: DockHost) -> None:
        super().__init__("More volumes")
        self.host = host
        self.viewer = host.viewer
        self.entries: list[VolumeEntry] = []
        self._in_view: tuple[int, Box | None] = (0, None)
        #: What became of the volumes the last Start let join: ``(entry, volume or why not, matched to the store's
        #: volume)``, filled in the worker.
        self._joined: list[tuple[VolumeEntry, AnnotatedVolume | str, bool]] = []
        #: ``(image, annotation layer)`` of volumes refused at Start: added again, the image gets its layer back.
        self._refused: list[tuple[Image, Labels]] = []
        col = QVBoxLayout(self)
        row = QHBoxLayout()
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("another image of the same kind (same channels, similar voxel size)")
        self.add_button = QPushButton("Learn from it too")
        self.add_button.setToolTip("paint on its annotation layer: the net learns from those labels as well, and "
                                   "predicts it while one of its layers is selected")
        row.addWidget(self.image_combo, 1)
        row.addWidget(self.add_button)
        col.addLayout(row)
        self.list_label = QLabel("")
        self.list_label.setWordWrap(True)
        col.addWidget(self.list_label)
        self.add_button.clicked.connect(lambda: self.add(self.image_combo.currentData()))
        self.viewer.layers.events.inserted.connect(self._on_inserted)
        self.viewer.layers.events.removed.connect(self._on_removed)
        self.viewer.layers.selection.events.active.connect(self._on_active)
        for name in ("current_step", "ndisplay", "order"):  # the box in view of the volume looked at
            getattr(self.viewer.dims.events, name).connect(self._on_active)
        self.refresh()

    # -- choices -------------------------------------------------------------------------
    def refresh(self) -> None:
        """Offer every 3D image layer that is neither the widget's image nor added already. A volume added and then
        chosen as the widget's image leaves this box: its labels layer becomes an annotation the Data box offers."""
        for entry in [e for e in self.entries if e.image is self.host.image_layer and e.labels is None]:
            self._drop(entry)
            if entry.prediction is not None and entry.prediction in self.viewer.layers:
                self.viewer.layers.remove(entry.prediction)  # the old session's, stale: the new one makes its own
            entry.annotation.metadata["sparseseg_role"] = "annotation"
            show_info(f"sparseseg: '{entry.image.name}' is the image to segment now, no other volume; its labels "
                      f"'{entry.annotation.name}' are its annotation")
        taken = [self.host.image_layer] + [e.image for e in self.entries]
        layers = [ly for ly in self.viewer.layers if isinstance(ly, Image) and not is_output(ly)  # no uncertainty
                  and image_layer_problem(ly) is None and not any(ly is t for t in taken)]
        self.image_combo.clear()
        for layer in layers:
            self.image_combo.addItem(layer.name, layer)
        joined = ", ".join(e.image.name for e in self.entries if e.labels is not None)
        waiting = ", ".join(e.image.name for e in self.entries if e.labels is None)
        self.list_label.setText("; ".join(([f"also learning from: {joined}"] if joined else [])
                                          + ([f"joining at the next Start: {waiting}"] if waiting else [])))
        self.update_buttons(self.host.run.running)

    def update_buttons(self, running: bool) -> None:
        """Volumes are added while no training runs."""
        self.add_button.setEnabled(not running and self.image_combo.count() > 0)

    def accepts_channels(self, channels: list) -> bool:
        """Whether a session whose image has ``channels`` (further channel layers) can learn from the volumes
        added; if not, the user is told why."""
        if channels and self.entries:
            show_warning(f"sparseseg: {SEVERAL_CHANNELS}")
            return False
        return True

    # -- adding --------------------------------------------------------------------------
    def add(self, image: Image | None, annotation: Labels | None = None) -> VolumeEntry | None:
        """Learn from ``image`` too, from the next Start: bind its annotation layer (made when not given; strokes wait
        in it until then). None, with a message, when it cannot be added."""
        problem = image_layer_problem(image) if image is not None else "pick another image layer"
        if problem is None and (image is self.host.image_layer or any(e.image is image for e in self.entries)):
            problem = f"'{image.name}' is trained on already"  # type: ignore[union-attr]
        if problem is None and self.host.run.running:
            problem = "stop training before adding a volume"
        if problem is None and self.host.data_panel.channel_layers:
            problem = SEVERAL_CHANNELS
        if problem is None and self.host.image_layer is not None:
            problem = memory_problem(self.host.image_layer, len(self.host.classes),
                                     others=[*(e.image for e in self.entries), image])
        if problem is not None:
            show_warning(f"sparseseg: {problem}")
            return None
        assert image is not None
        if annotation is None:  # the layer of this image's earlier try (refused at Start), strokes and all
            annotation = next((ly for im, ly in self._refused if im is image and ly in self.viewer.layers
                               and ly.data.shape == image.data.shape), None)
            if annotation is not None:
                for name, value in placement(image).items():  # over the image as it lies now (resampled, moved)
                    setattr(annotation, name, value)
        self._refused = [(im, ly) for im, ly in self._refused if im is not image]
        if annotation is None:
            annotation = self.viewer.add_labels(np.zeros(image.data.shape, ANNOTATION_DTYPE),
                                                name=f"{image.name} annotation", **placement(image), opacity=0.7,
                                                metadata={"sparseseg_role": "volume_annotation"})
        entry = self._entry(image, annotation)
        annotation.colormap = self.host.classes.colormap()
        self.viewer.layers.selection.active = annotation
        self.refresh()
        return entry

    def _entry(self, image: Image, annotation: Labels, stored: tuple[str, int] | None = None) -> VolumeEntry:
        entry = VolumeEntry(image, annotation, sync=None, stored=stored)  # type: ignore[arg-type]
        entry.sync = LabelSync(annotation, lambda: entry.labels, lambda: len(self.host.classes),
                               lambda text: show_warning(f"sparseseg: {text}"))
        self.entries.append(entry)
        return entry

    @staticmethod
    def _join(session: SegmentationSession, entry: VolumeEntry) -> AnnotatedVolume | str:
        """Add ``entry``'s volume to ``session`` with the labels on its layer now (in the worker, before training;
        no layer or entry is written). Returns the volume, or why it cannot be added.

        An image the session learns from already (its layers removed while it trained, then added again) joins as
        the volume it is: the labels on the layer now are added to the volume's, and
        :meth:`on_session_ready` shows the volume's labels in the layer.
        """
        image = entry.image
        labels = layer_to_annotation(np.asarray(entry.annotation.data), session.num_classes)
        known = _known_volume(session, image)
        if known is not None:
            painted = np.nonzero(labels)
            if painted[0].size:
                known.set_labels(painted, labels[painted])
            return known
        try:
            return session.add_training_volume(np.asarray(image.data), annotation=labels, name=image.name,
                                               spacing=tuple(float(s) for s in image.scale[-3:]),
                                               geometry=layer_geometry(image))
        except (ValueError, OSError) as exc:  # another kind of volume, or a store that cannot keep it
            return f"cannot learn from '{image.name}' too: {exc}"

    def wrap(self, build: Callable[[], SegmentationSession]) -> Callable[[], SegmentationSession]:
        """The worker's session builder, extended to add the volumes waiting for a session (GUI thread).

        The returned function runs in the worker thread before training starts: volumes of a reopened store are
        matched to the session's, the others added (to its store too). It only records what became of each;
        :meth:`on_session_ready` (GUI thread) binds the volumes to their layers and reports those that could not
        join.
        """
        waiting = [e for e in self.entries if e.labels is None]
        self._joined = joined = []

        def build_with_volumes() -> SegmentationSession:
            session = build()
            store = getattr(session.store, "path", None)
            for entry in waiting:
                if entry.stored is not None and store is not None and Path(entry.stored[0]) == Path(store).resolve():
                    n = entry.stored[1]
                    if n <= len(session.other_volumes):
                        joined.append((entry, session.other_volumes[n - 1].volume, True))
                        continue
                joined.append((entry, self._join(session, entry), False))
            return session

        return build_with_volumes

    def on_session_ready(self, session: SegmentationSession) -> None:
        """The session runs (GUI thread): bind the volumes that joined to their layers, report those that could not
        (or whose layer was removed meanwhile), catch up with strokes painted while it was built."""
        joined, self._joined = self._joined, []
        for entry, result, from_store in joined:
            kept = any(entry is e for e in self.entries)
            if isinstance(result, str):
                show_error(f"sparseseg: {result}")
                self._drop(entry)
                self._refused.append((entry.image, entry.annotation))  # its strokes wait for it to be added again
            elif kept:
                entry.labels = VolumeLabels(result)
                if not from_store:  # a layer opened from the store shows its labels, erasures since included
                    _show_held_labels(entry.annotation, result)
            else:
                show_info(f"sparseseg: '{entry.image.name}' was removed while training started: its labels stay in "
                          "this session's training until a new model starts")
        for entry in self.entries:
            entry.stored = None
            if entry.labels is not None:
                entry.sync.resync()
        self._on_active(session=session)
        self.refresh()

    def forget(self) -> None:
        """The widget dropped its session: the volumes wait for the next one (their labels stay in the layers)."""
        for entry in self.entries:
            entry.labels, entry.stored = None, None

    # -- predictions ---------------------------------------------------------------------
    def in_view(self) -> tuple[int, Box | None]:
        """The session's volume whose layer is selected (1-based in ``session.other_volumes``; 0 none) and the box
        in view of it (None in 3D view); thread-safe (a cached value)."""
        return self._in_view

    def _on_active(self, event: Any = None, session: SegmentationSession | None = None) -> None:
        active = self.viewer.layers.selection.active
        session = session or self.host.session
        in_view: tuple[int, Box | None] = (0, None)
        for entry in self.entries:
            if entry.labels is not None and session is not None and any(active is ly for ly in entry.layers()):
                volumes = [o.volume for o in session.other_volumes]
                n = next((i + 1 for i, v in enumerate(volumes) if v is entry.labels.volume), 0)
                in_view = (n, view_box(self.viewer, entry.image) if n else None)
        self._in_view = in_view

    def show(self, refresh: Refresh, merged: np.ndarray) -> None:
        """Write a prediction of another volume into its prediction layer (made when missing)."""
        session = self.host.session
        if session is None or not 0 < refresh.prediction.volume <= len(session.other_volumes):
            return
        volume = session.other_volumes[refresh.prediction.volume - 1].volume
        entry = next((e for e in self.entries if e.labels is not None and e.labels.volume is volume), None)
        if entry is None:
            return
        if entry.prediction is None or entry.prediction not in self.viewer.layers:
            active = self.viewer.layers.selection.active
            entry.prediction = self.viewer.add_labels(
                np.zeros(entry.image.data.shape, MASK_DTYPE), name=f"{entry.image.name} prediction",
                **placement(entry.image), opacity=0.45, metadata={"sparseseg_role": "volume_prediction"})
            entry.prediction.colormap = self.host.classes.colormap()
            entry.sync.attach_prediction(entry.prediction)
            self.viewer.layers.selection.active = active
        entry.prediction.data[refresh.prediction.box.slices] = merged
        entry.prediction.refresh()

    def recolour(self) -> None:
        """Colour every volume's annotation and prediction layer from the classes."""
        for entry in self.entries:
            for layer in (entry.annotation, entry.prediction):
                if layer is not None:
                    layer.colormap = self.host.classes.colormap()

    # -- layers of a reopened store, and layers removed ----------------------------------------
    def _on_inserted(self, event: Any) -> None:
        layer = event.value
        meta = getattr(layer, "metadata", {})
        if role(layer) == "volume_annotation" and meta.get(STORE_META) and meta.get(VOLUME_META):
            key = (meta[STORE_META], meta[VOLUME_META])
            image = next((ly for ly in self.viewer.layers if isinstance(ly, Image)
                          and (ly.metadata.get(STORE_META), ly.metadata.get(VOLUME_META)) == key), None)
            if image is not None and not any(e.image is image for e in self.entries):
                self._entry(image, layer, key)
                layer.colormap = self.host.classes.colormap()
        elif role(layer) == "volume_prediction" and meta.get(STORE_META):
            key = (meta[STORE_META], meta.get(VOLUME_META))
            entry = next((e for e in self.entries if e.stored == key), None)
            if entry is not None:
                entry.prediction = layer
                entry.sync.attach_prediction(layer)
        self.refresh()

    def _on_removed(self, event: Any) -> None:
        layer = event.value
        for entry in list(self.entries):
            if layer is entry.prediction:
                entry.sync.detach_prediction()
                entry.prediction = None
            elif layer is entry.image or layer is entry.annotation:
                self._drop(entry)
                if entry.labels is not None:
                    show_info(f"sparseseg: '{layer.name}' was removed: its labels stay in this session's training "
                              "until a new model starts")
        self.refresh()

    def _drop(self, entry: VolumeEntry) -> None:
        entry.sync.close()
        self.entries = [e for e in self.entries if e is not entry]
        self._on_active()  # the worker stops predicting it

    def close(self) -> None:
        """Let go of the layers and the viewer (the widget closes)."""
        self._refused = []
        for entry in self.entries:
            entry.sync.close()
        dims = self.viewer.dims.events
        for emitter, handler in ((self.viewer.layers.events.inserted, self._on_inserted),
                                 (self.viewer.layers.events.removed, self._on_removed),
                                 (self.viewer.layers.selection.events.active, self._on_active),
                                 (dims.current_step, self._on_active), (dims.ndisplay, self._on_active),
                                 (dims.order, self._on_active)):
            try:
                emitter.disconnect(handler)
            except (RuntimeError, ValueError, TypeError):
                pass


def _known_volume(session: SegmentationSession, image: Image) -> AnnotatedVolume | None:
    """The volume of ``session`` that holds ``image``'s voxels already (same array, or same name and same values)."""
    data = np.asarray(image.data)
    for other in session.other_volumes:
        if other.image is data or (other.name == image.name and np.shape(other.image) == data.shape
                                   and np.array_equal(np.asarray(other.image), data)):
            return other.volume
    return None


def _show_held_labels(annotation: Labels, volume: AnnotatedVolume) -> None:
    """Show in ``annotation`` the labels ``volume`` holds where the layer has none (GUI thread): a volume that
    joined again brings back the labels the session kept for it."""
    data = np.asarray(annotation.data)
    held = annotation_to_layer(volume.labels) if volume.labels.shape == data.shape else None
    if held is None:
        return
    missing = (data == 0) & (held > 0)
    if missing.any():
        data[missing] = held[missing]
        annotation.refresh()
