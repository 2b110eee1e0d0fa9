"""The Classes box of the dock widget: list, add, rename, remove and recolour classes.

The panel shows the widget's :class:`~.classes.ClassList` (read through the
widget each time: loading a session or an image's class names replaces it)
and edits it. What a change means for the layers and the training session
(a new class reaches the running session, a removed one erases its voxels and
drops the model) stays with the widget (:meth:`DockHost.class_added`,
:meth:`DockHost.class_removed`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from napari.utils.notifications import show_warning
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import QColorDialog, QGroupBox, QHBoxLayout, QListWidget, QListWidgetItem, QPushButton, QVBoxLayout

from .classes import BACKGROUND_COLOR, MAX_CLASSES, ClassList, remove_class_values

if TYPE_CHECKING:
    from .host import DockHost


class ClassPanel(QGroupBox):
    """Row 0 is background (fixed); row ``k`` is foreground class ``k`` (1-based, editable name)."""

    def __init__(self, widget: DockHost) -> None:
        super().__init__("Classes")
        self.widget = widget
        col = QVBoxLayout(self)
        self.list = QListWidget()
        self.list.setMaximumHeight(140)
        self.list.setToolTip("double-click a name to rename; select a class to paint it")
        col.addWidget(self.list)
        row = QHBoxLayout()
        self.add_button = QPushButton("Add")
        self.remove_button = QPushButton("Remove")
        self.color_button = QPushButton("Colour…")
        for b in (self.add_button, self.remove_button, self.color_button):
            row.addWidget(b)
        col.addLayout(row)
        self.list.itemChanged.connect(self._on_item_changed)
        self.list.currentRowChanged.connect(self.select)
        self.add_button.clicked.connect(lambda: self.add())
        self.remove_button.clicked.connect(lambda: self.remove(self.list.currentRow()))
        self.color_button.clicked.connect(self._pick_color)

    def fill(self) -> None:
        """Rebuild the list from the widget's classes, keeping the selected row."""
        classes = self.widget.classes
        self.list.blockSignals(True)
        row = max(self.list.currentRow(), 1)
        self.list.clear()
        bg = QListWidgetItem(swatch(BACKGROUND_COLOR), "background")
        bg.setFlags(bg.flags() & ~Qt.ItemFlag.ItemIsEditable)
        self.list.addItem(bg)
        for c in classes.classes:
            item = QListWidgetItem(swatch(c.color), c.name)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
            self.list.addItem(item)
        self.list.setCurrentRow(min(row, len(classes)))
        self.list.blockSignals(False)
        self.select(self.list.currentRow())  # the painted label follows (a removed class is no label any more)
        self.widget.update_buttons()

    def take_names_of(self, layer: Any) -> None:
        """Name the classes after an image's ``class_names`` metadata (e.g. the sample's), while they are still
        the default ones."""
        names = layer.metadata.get("class_names") if hasattr(layer.metadata, "get") else None
        if names and self.widget.classes.names == ClassList().names:
            self.widget.set_classes(ClassList.from_names(list(names)[:MAX_CLASSES]))

    def update_buttons(self, running: bool) -> None:
        """Enable what is allowed now (no removing while training runs)."""
        n, row = len(self.widget.classes), self.list.currentRow()
        self.remove_button.setEnabled(not running and row >= 1 and n > 1)
        self.color_button.setEnabled(row >= 1)
        self.add_button.setEnabled(n < MAX_CLASSES)

    def select(self, row: int) -> None:
        """Make row ``row`` the class painted on the annotation and prediction layers."""
        if row < 0:
            return
        w = self.widget
        if w.annotation_layer is not None:
            w.annotation_layer.selected_label = w.classes.layer_value(row)
        if w.prediction_layer is not None:
            w.prediction_layer.selected_label = w.classes.layer_value(row)
        w.update_buttons()

    def add(self, name: str | None = None) -> int:
        """Add a foreground class (live, also while training); returns its index ``k``, -1 if refused."""
        try:
            k = self.widget.classes.add(name)
        except ValueError as exc:
            show_warning(str(exc))
            return -1
        self.widget.class_added()
        self.fill()
        self.list.setCurrentRow(k)
        self.widget.apply_colormaps()
        return k

    def rename(self, k: int, name: str) -> None:
        """Rename class ``k`` (1-based)."""
        self.widget.classes.rename(k, name)
        self.fill()
        self.widget.apply_colormaps()  # (and the store keeps the name)

    def remove(self, k: int) -> None:
        """Remove class ``k``: its voxels become unlabeled in the annotation and prediction layers (of every image
        and volume, :func:`class_layers`), higher classes move down (refused while training runs; what it means for
        the session: :meth:`DockHost.class_removed`)."""
        w = self.widget
        if w.run.running:
            show_warning("stop training before removing a class")
            return
        try:
            w.classes.remove(k)
        except ValueError as exc:
            show_warning(str(exc))
            return
        for layer in class_layers(w):  # class k is k on all of them (layer encoding)
            remove_class_values(layer.data, k, 0)
            reset = getattr(layer, "_reset_history", None)
            if callable(reset):
                reset()  # napari's undo would bring the removed class back
            layer.refresh()
        w.class_removed(k)
        self.fill()
        w.apply_colormaps()

    def set_color(self, k: int, color: tuple[float, ...]) -> None:
        """Recolour class ``k`` (RGBA in [0, 1])."""
        self.widget.classes.set_color(k, color)  # type: ignore[arg-type]
        self.fill()
        self.widget.apply_colormaps()

    def _on_item_changed(self, item: QListWidgetItem) -> None:
        k = self.list.row(item)
        if k < 1:
            return
        try:
            self.widget.classes.rename(k, item.text())
        except ValueError as exc:
            show_warning(str(exc))
            self.fill()
            return
        self.widget.apply_colormaps()  # (and the store keeps the name)

    def _pick_color(self) -> None:
        k = self.list.currentRow()
        if k < 1:
            return
        current = self.widget.classes.classes[k - 1]
        color = QColorDialog.getColor(QColor.fromRgbF(*current.color), self, f"Colour of {current.name}")
        if color.isValid():
            self.set_color(k, (color.redF(), color.greenF(), color.blueF(), 1.0))


def class_layers(widget: DockHost) -> list[Any]:
    """Every labels layer whose values are the widget's classes: the annotation and prediction layers of the image
    chosen, of the other images a prediction or annotation was made for, and of the "More volumes" (each once)."""
    layers = [widget.annotation_layer, widget.prediction_layer, *widget.data_panel.annotations(),
              *widget.outputs.layers()]
    for entry in widget.volumes_panel.entries:
        layers += [entry.annotation, entry.prediction]
    viewer_layers = widget.viewer.layers
    return list({id(ly): ly for ly in layers if ly is not None and ly in viewer_layers}.values())


def swatch(color: tuple[float, ...]) -> QIcon:
    """A 14 px square icon of ``color`` (RGBA in [0, 1])."""
    pix = QPixmap(14, 14)
    pix.fill(QColor.fromRgbF(*[float(c) for c in color]))
    return QIcon(pix)
