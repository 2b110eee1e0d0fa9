"""The Data box of the dock widget: which image to segment and which labels layer the user paints on.

It lists the viewer's layers that qualify (3D images that are not the plugin's
outputs; labels layers of the image's shape; further image layers of the same
grid to read as the image's channels, such as the sequences of an MRI opened as
one layer each, those of one file ticked when the image is chosen), keeps the
choice across layer changes (another image brings back the labels layer chosen
for it, or its own, never one chosen for another image), says what is wrong with an image that cannot be
used, and creates an empty annotation layer on request. What a new choice means for the training
session stays with the widget (the ``on_image_changed`` and
``on_annotation_changed`` callbacks).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_warning
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
)

from ..core.encoding import ANNOTATION_DTYPE
from .layers import belongs_to, image_layer_problem, is_output, memory_problem, placement, role, same_file
from .status_panel import set_text

if TYPE_CHECKING:
    import napari

#: Shown when no image can be chosen.
NO_IMAGE = "open a 3D image (File > Open Sample > napari-sparseseg for a demo)"


class DataPanel(QGroupBox):
    """The Data box.

    Parameters
    ----------
    viewer : napari.Viewer
        Whose layers are offered.
    excluded : callable
        Returns a labels layer never offered as the annotation (the prediction layer), or None.
    on_image_changed, on_annotation_changed : callable
        Called after the chosen image or annotation layer changed (or may have).
    num_classes : callable
        The number of foreground classes (the memory a session takes grows with it).
    """

    def __init__(self, viewer: napari.Viewer, excluded: Callable[[], Labels | None],
                 on_image_changed: Callable[[], None], on_annotation_changed: Callable[[], None],
                 num_classes: Callable[[], int] = lambda: 1) -> None:
        super().__init__("Data")
        self.viewer = viewer
        self._excluded = excluded
        self._num_classes = num_classes
        self._on_image_changed = on_image_changed
        self._on_annotation_changed = on_annotation_changed
        #: ``(image, annotation)``: the labels layer last chosen for each image (an image gets its own back).
        self._chosen_for: list[tuple[Image, Labels]] = []
        self._pair: tuple[Image | None, Labels | None] = (None, None)  # the image and annotation shown last
        self._named: list[Any] = []  # the layers whose renaming refreshes the choices (their names are shown)
        form = QFormLayout(self)
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("3D image to segment (its further channels, if any, below)")
        self.channel_list = QListWidget()
        self.channel_list.setToolTip("other images of this volume (same shape and voxel size) read as further "
                                     "channels of it, e.g. the other MRI sequences; a file's channels are ticked "
                                     "when one of them is chosen")
        self.channel_list.setMaximumHeight(72)
        self.channel_label = QLabel("Channels")
        self.image_message = QLabel()
        self.image_message.setWordWrap(True)
        self.image_message.setStyleSheet("color: #ff8c69")
        self.bank_message = QLabel()
        self.bank_message.setWordWrap(True)
        self.bank_message.setToolTip("the first responder's filter features of the chosen image, computed while you "
                                     "paint so that its mask comes within seconds of Start")
        self.annotation_combo = QComboBox()
        self.annotation_combo.setToolTip("labels layer you paint on: class k is label k, background 255 "
                                         "(pick a class in the Classes box)")
        self.new_annotation_button = QPushButton("New")
        row = QHBoxLayout()
        row.addWidget(self.annotation_combo, 1)
        row.addWidget(self.new_annotation_button)
        form.addRow("Image", self.image_combo)
        form.addRow(self.channel_label, self.channel_list)
        form.addRow(self.image_message)
        form.addRow(self.bank_message)
        form.addRow("Annotation", row)
        self.image_combo.currentIndexChanged.connect(lambda *_: self._image_chosen())
        self.channel_list.itemChanged.connect(lambda *_: self._channels_ticked())
        self.annotation_combo.currentIndexChanged.connect(lambda *_: self._annotation_chosen(remember=True))
        self.new_annotation_button.clicked.connect(lambda: self.create_annotation_layer())

    @property
    def image_layer(self) -> Image | None:
        """The chosen image layer, if it is still in the viewer."""
        layer = self.image_combo.currentData()
        return layer if isinstance(layer, Image) and layer in self.viewer.layers else None

    @property
    def channel_layers(self) -> list[Image]:
        """The image layers ticked as further channels of the chosen image (still in the viewer, in list order)."""
        return [layer for layer in self._ticked() if layer in self.viewer.layers]

    def _ticked(self) -> list[Image]:
        """The layers of the ticked items, whether or not they are still in the viewer."""
        items = (self.channel_list.item(i) for i in range(self.channel_list.count()))
        return [item.data(Qt.ItemDataRole.UserRole) for item in items if item.checkState() == Qt.CheckState.Checked]

    def fill_channel_choices(self, image_changed: bool = False) -> None:
        """Offer the image layers that can be further channels of the chosen image (:func:`channel_candidates`),
        keeping those ticked; the layers of the image's own file (``name [i]``) are ticked when the image is chosen
        or when they arrive (napari adds a file's channels one layer at a time)."""
        image = self.image_layer
        kept, offered = ([], []) if image_changed else (self.channel_layers, [
            self.channel_list.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.channel_list.count())])
        candidates = channel_candidates(self.viewer.layers, image) if image is not None else []
        arrived = [ly for ly in candidates if not any(ly is o for o in offered)]
        # not while training (the list is disabled): a new tick would mean a new model at the next Start
        ticked = kept + ([ly for ly in arrived if same_file(ly, image)] if self.channel_list.isEnabled() else [])
        self.channel_list.blockSignals(True)
        self.channel_list.clear()
        for layer in candidates:
            item = QListWidgetItem(layer.name)
            item.setData(Qt.ItemDataRole.UserRole, layer)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            item.setCheckState(Qt.CheckState.Checked if layer in ticked else Qt.CheckState.Unchecked)
            self.channel_list.addItem(item)
        self.channel_list.blockSignals(False)
        for widget in (self.channel_label, self.channel_list):
            widget.setVisible(bool(candidates))

    def _channels_ticked(self) -> None:
        self.show_problem()
        self._on_image_changed()

    @property
    def annotation_layer(self) -> Labels | None:
        """The chosen annotation layer, if it is still in the viewer."""
        layer = self.annotation_combo.currentData()
        return layer if isinstance(layer, Labels) and layer in self.viewer.layers else None

    def refresh(self, *_: Any) -> None:
        """Offer the layers the viewer holds now, under their names now, keeping the current choices where they
        still qualify."""
        self._follow_names()
        image, annotation = self.image_combo.currentData(), self.annotation_combo.currentData()
        images = [ly for ly in self.viewer.layers if isinstance(ly, Image) and not is_output(ly)]
        usable = [ly for ly in images if image_layer_problem(ly) is None]
        _offer(self.image_combo, images, image if image in images else (usable[-1] if usable else None))
        if self.image_combo.currentData() is not image:
            self._image_chosen()
        else:
            self.fill_annotation_choices(annotation)
            ticked = self._ticked()
            self.fill_channel_choices()
            if self.channel_layers != ticked:  # a channel layer removed, or one of the image's file arrived
                self._channels_ticked()

    def _follow_names(self, follow: bool = True) -> None:
        """Refresh when a layer of the viewer is renamed (``follow``), or no more (the widget closes)."""
        for layer in self._named:
            layer.events.name.disconnect(self.refresh)
        self._named = [ly for ly in self.viewer.layers if isinstance(ly, (Image, Labels))] if follow else []
        for layer in self._named:
            layer.events.name.connect(self.refresh)

    def close(self) -> None:
        """Let go of the layers (the widget closes)."""
        self._follow_names(False)

    def fill_annotation_choices(self, keep: Any = None) -> None:
        """Offer the labels layers of the image's shape (not another volume's annotation); keep ``keep`` chosen if it
        is one of them, else choose one that is no other image's (none: Start or New makes one)."""
        image = self.image_layer
        shape = image.data.shape if image is not None else None
        excluded = self._excluded()
        labels = [ly for ly in self.viewer.layers if isinstance(ly, Labels) and not is_output(ly)
                  and role(ly) != "volume_annotation" and ly is not excluded and shape is not None
                  and ly.data.shape == shape]
        others = [ly for ly in self.viewer.layers if isinstance(ly, Image) and ly is not image]
        free = [ly for ly in labels if not any(ly is a and i is not image for i, a in self._chosen_for)
                and (belongs_to(ly, image) or not any(belongs_to(ly, other) for other in others))
                and not read_from_file(ly)]  # a file's labels (a ground truth) are offered, never picked
        preferred = [ly for ly in free if role(ly) == "annotation" or ly.name == "annotation"]
        _offer(self.annotation_combo, labels, keep if keep in labels else (preferred or free or [None])[0],
               none=True)
        self._annotation_chosen()

    def annotations(self) -> list[Labels]:
        """The labels layers chosen as annotation of an image (the current one and those of other images)."""
        return [a for _, a in self._chosen_for if a in self.viewer.layers]

    def remember(self, image: Image | None, annotation: Labels | None) -> None:
        """``annotation`` is ``image``'s (the user chose it, made it with New, or trained on it): it comes back with
        the image and is no other image's default (:meth:`_annotation_for`)."""
        layers = self.viewer.layers
        self._chosen_for = [(i, a) for i, a in self._chosen_for if i in layers and a in layers and i is not image
                            and a is not annotation]
        if image is not None and annotation is not None:
            self._chosen_for.append((image, annotation))

    def _annotation_chosen(self, remember: bool = False) -> None:
        if remember:  # by the user
            self.remember(self.image_layer, self.annotation_layer)
        self._pair = (self.image_layer, self.annotation_layer)
        self._on_annotation_changed()

    def _remember_painted(self) -> None:
        """The image shown until now keeps the annotation layer painted for it, chosen by the user or not: it comes
        back with it, and a class removal renumbers it (:func:`~.class_panel.class_layers`)."""
        image, annotation = self._pair  # an annotation layer, not any labels layer picked for it (a reference mask)
        if (image is not None and annotation is not None and image in self.viewer.layers
                and annotation in self.viewer.layers and np.asarray(annotation.data).any()
                and (role(annotation) == "annotation" or annotation.name == f"{image.name} annotation")):
            self.remember(image, annotation)

    def _annotation_for(self, image: Image | None, previous: Any) -> Labels | None:
        """The labels layer to paint on for a newly chosen ``image``: the one last chosen for it, else its own
        (:func:`~.layers.belongs_to`), else ``previous`` unless it was chosen for another image (another image's
        labels would train this one's model); None leaves the choice to :meth:`fill_annotation_choices`."""
        if image is None:
            return None
        labels = [self.annotation_combo.itemData(i) for i in range(self.annotation_combo.count())]
        last = next((a for i, a in self._chosen_for if i is image and a in self.viewer.layers), None)
        if last is not None:
            return last
        own = [ly for ly in self.viewer.layers if isinstance(ly, Labels) and not is_output(ly)
               and role(ly) != "volume_annotation" and ly.data.shape == image.data.shape and belongs_to(ly, image)
               and not read_from_file(ly)]
        if own:
            return own[0]
        taken = any(previous is a and i is not image for i, a in self._chosen_for)
        return previous if previous in labels and not taken and not read_from_file(previous) else None

    def image_problem(self) -> str | None:
        """Why the chosen image cannot be segmented (None when it can): not a 3D image, or too large to train on in
        this window (:func:`~.layers.memory_problem`)."""
        layer = self.image_combo.currentData()
        if layer is None:
            return NO_IMAGE
        return image_layer_problem(layer) or memory_problem(layer, self._num_classes(), channels=self.channel_layers)

    def show_problem(self) -> str | None:
        """:meth:`image_problem`, also shown under the image choice (it may change with the number of classes)."""
        problem = self.image_problem()
        self.image_message.setText(problem or "")
        self.image_message.setVisible(bool(problem))
        return problem

    def show_bank(self, words: str) -> None:
        """Say how the chosen image's filter bank is coming on (``background.bank_words``; empty: nothing)."""
        set_text(self.bank_message, words)
        self.bank_message.setVisible(bool(words))

    def _image_chosen(self) -> None:
        self._remember_painted()
        self.fill_channel_choices(image_changed=True)
        self.show_problem()
        self._on_image_changed()
        self.fill_annotation_choices(self._annotation_for(self.image_layer, self.annotation_combo.currentData()))

    def create_annotation_layer(self) -> Labels | None:
        """Add an empty annotation layer matching the image and select it."""
        image = self.image_layer
        if image is None or image_layer_problem(image):
            show_warning(image_layer_problem(image) or "pick a 3D image first")
            return None
        layer = self.viewer.add_labels(np.zeros(image.data.shape, ANNOTATION_DTYPE), name=f"{image.name} annotation",
                                       **placement(image), opacity=0.7,
                                       metadata={"sparseseg_role": "annotation"})
        self.remember(image, layer)
        self.fill_annotation_choices(layer)
        self.viewer.layers.selection.active = layer
        return layer

    def chosen_layers(self) -> tuple[Image, Labels] | None:
        """The image and the annotation layer to train on (an empty annotation layer is created when none is
        chosen); None, with a warning to the user, when they cannot be used."""
        image, problem = self.image_layer, self.image_problem()
        if image is None or problem:
            show_warning(problem or "pick a 3D image first")
            return None
        annotation = self.annotation_layer or self.create_annotation_layer()
        if annotation is None:
            return None
        if annotation.data.shape != image.data.shape:
            show_warning(f"annotation shape {annotation.data.shape} differs from image shape {image.data.shape}")
            return None
        return image, annotation

    def set_enabled(self, enabled: bool) -> None:
        """Allow or forbid another choice (none while training)."""
        for w in (self.image_combo, self.channel_list, self.annotation_combo, self.new_annotation_button):
            w.setEnabled(enabled)


def channel_candidates(layers: Any, image: Image) -> list[Image]:
    """The image layers that can be read as further channels of ``image``: usable 3D images that are not the
    plugin's outputs, of the same shape, voxel size and position (a layer shown shifted is another volume, whose
    voxels do not lie under the image's), other than ``image``."""
    return [ly for ly in layers if isinstance(ly, Image) and ly is not image and not is_output(ly)
            and image_layer_problem(ly) is None and ly.data.shape == image.data.shape
            and tuple(ly.scale[-3:]) == tuple(image.scale[-3:])
            and np.allclose(ly.translate[-3:], image.translate[-3:])]


def _offer(combo: QComboBox, layers: list[Any], chosen: Any, none: bool = False) -> None:
    """Fill ``combo`` with ``layers`` (by name) and choose ``chosen`` (None: the first, or none when ``none``),
    without signals."""
    combo.blockSignals(True)
    combo.clear()
    for layer in layers:
        combo.addItem(layer.name, layer)
    if chosen is not None:
        combo.setCurrentIndex(layers.index(chosen))
    elif none:
        combo.setCurrentIndex(-1)
    combo.blockSignals(False)


def read_from_file(layer: Any) -> bool:
    """Whether a labels layer is a file's own labels as this plugin's reader opened them (a ground truth, a saved
    mask): the Data box never picks one to paint on by itself (its 0 = background would train as unlabeled)."""
    meta = getattr(layer, "metadata", None)
    return hasattr(meta, "get") and bool(meta.get("source_path")) and role(layer) is None
