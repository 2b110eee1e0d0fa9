"""What the dock widget's panels may use of the widget that hosts them.

The Classes, Results, Model and Session panels are built by :class:`~.widget.SparseSegWidget` and handed the widget as a
:class:`DockHost`; they read and call only what is listed here and never import the widget module, so the
widget depends on its panels and not the other way round.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from napari.layers import Image, Labels
    from napari.viewer import Viewer

    from ..core.session import SegmentationSession
    from .classes import ClassList


class DockHost(Protocol):
    """The dock widget as its panels see it."""

    viewer: Viewer
    #: The session training now, or last trained (None before Start).
    session: SegmentationSession | None
    #: The Training box (``session_config()``: the settings a new session starts with).
    training_panel: Any
    #: The class names and colours.
    classes: ClassList
    class_panel: Any
    image_layer: Image | None
    annotation_layer: Labels | None
    prediction_layer: Labels | None
    #: What the session was built for (``session_build.session_key``: image layer first, channel layers last).
    session_key: tuple | None
    #: The Data box: the image and annotation layer pickers (``image_combo``, ``annotation_combo``, ``annotations()``).
    data_panel: Any
    #: The "More volumes" box (``entries``: their ``annotation`` and ``prediction`` layers).
    volumes_panel: Any
    #: The Status box (``say(text)``, ``label``).
    status_panel: Any
    #: The prediction and uncertainty layers (``prediction``, ``predicted``, ``has_prediction()``).
    outputs: Any
    #: The layers bound to the session (``annotation``; ``sync``: the strokes' route, its ``corrected`` voxels).
    layers: Any
    #: The background training run (``run.running``).
    run: Any

    def current_view_box(self) -> Any:
        """The slice in view (a ``Box`` of image voxels), None in 3D view."""

    def layout(self) -> Any:
        """The widget's Qt layout, where a panel inserts its box."""

    def apply_colormaps(self) -> None:
        """Recolour the annotation and prediction layers after the classes changed."""

    def update_buttons(self) -> None:
        """Enable or disable the widget's buttons for the current state."""

    def adopt_prediction(self, layer: Labels, image: Image | None = None) -> None:
        """Make a stored prediction the prediction layer of ``image`` (shown, correctable, acceptable)."""

    def set_classes(self, classes: ClassList) -> None:
        """Replace the classes (names and colours) and show them."""

    def class_added(self) -> None:
        """A class was added to :attr:`classes`."""

    def class_removed(self, k: int) -> None:
        """Class ``k`` was removed from :attr:`classes`."""
