"""Named, coloured segmentation classes and the label colormaps built from them.

The class list is plain data (no Qt). Index ``k`` (1-based) of a foreground
class is the number it has in every layer the user paints on: the
annotation and the prediction layer both show class ``k`` as value ``k`` and
painted background as ``LAYER_BACKGROUND`` (255); the layer encoding of
:mod:`napari_sparseseg.core.encoding`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from napari.utils.colormaps import DirectLabelColormap

from ..core.encoding import LAYER_BACKGROUND

#: Most foreground classes the widget offers (the core takes up to 254).
MAX_CLASSES = 8

#: Colour of painted background on the annotation layer (RGBA).
BACKGROUND_COLOR: tuple[float, float, float, float] = (0.35, 0.55, 1.0, 0.55)

#: Default colours of foreground classes 1, 2, ... (RGBA, colour-blind safe first).
PALETTE: tuple[tuple[float, float, float, float], ...] = (
    (1.00, 0.50, 0.05, 1.0),  # orange
    (0.10, 0.85, 0.85, 1.0),  # cyan
    (0.90, 0.20, 0.80, 1.0),  # magenta
    (0.30, 0.85, 0.20, 1.0),  # green
    (1.00, 0.90, 0.10, 1.0),  # yellow
    (0.90, 0.15, 0.15, 1.0),  # red
    (0.55, 0.35, 0.95, 1.0),  # violet
    (0.60, 0.40, 0.20, 1.0),  # brown
)

_TRANSPARENT = np.zeros(4, np.float32)


@dataclass
class SegClass:
    """One foreground class.

    Attributes
    ----------
    name : str
        Display name.
    color : tuple of float
        RGBA in ``[0, 1]``.
    """

    name: str
    color: tuple[float, float, float, float]


@dataclass
class ClassList:
    """Ordered foreground classes; class ``k`` is ``classes[k - 1]``.

    Parameters
    ----------
    classes : list of SegClass
        Initial classes (at least one).
    """

    classes: list[SegClass] = field(default_factory=lambda: [SegClass("class 1", PALETTE[0])])

    def __post_init__(self) -> None:
        if not 1 <= len(self.classes) <= MAX_CLASSES:
            raise ValueError(f"a class list holds 1..{MAX_CLASSES} classes, got {len(self.classes)}")

    @classmethod
    def from_names(cls, names: list[str] | tuple[str, ...]) -> ClassList:
        """Classes with the given names and default colours."""
        if not names:
            raise ValueError("at least one class name is needed")
        return cls([SegClass(str(n), PALETTE[i % len(PALETTE)]) for i, n in enumerate(names)])

    def __len__(self) -> int:
        return len(self.classes)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    def add(self, name: str | None = None) -> int:
        """Append a class; returns its 1-based index ``k``.

        Raises
        ------
        ValueError
            When :data:`MAX_CLASSES` classes exist already.
        """
        if len(self.classes) >= MAX_CLASSES:
            raise ValueError(f"at most {MAX_CLASSES} foreground classes are supported")
        k = len(self.classes) + 1
        used = {c.color for c in self.classes}
        color = next((c for c in PALETTE if c not in used), PALETTE[(k - 1) % len(PALETTE)])
        self.classes.append(SegClass(name or f"class {k}", color))
        return k

    def rename(self, k: int, name: str) -> None:
        """Rename class ``k`` (1-based)."""
        self._check(k)
        name = name.strip()
        if not name:
            raise ValueError("a class name cannot be empty")
        if name.lower() == "background":
            raise ValueError("'background' is the class of label 255 already: name this class otherwise")
        if any(i != k - 1 and c.name == name for i, c in enumerate(self.classes)):
            raise ValueError(f"another class is named '{name}' already: the estimates and exports name classes")
        self.classes[k - 1].name = name

    def set_color(self, k: int, color: tuple[float, float, float, float]) -> None:
        """Recolour class ``k`` (1-based), RGBA in ``[0, 1]``."""
        self._check(k)
        rgba = tuple(float(c) for c in color)
        if len(rgba) == 3:
            rgba = rgba + (1.0,)
        if len(rgba) != 4 or not all(0.0 <= c <= 1.0 for c in rgba):
            raise ValueError(f"colour must be RGB(A) in [0, 1], got {color!r}")
        self.classes[k - 1].color = rgba  # type: ignore[assignment]

    def remove(self, k: int) -> None:
        """Remove class ``k`` (1-based); classes above it move down by one."""
        self._check(k)
        if len(self.classes) == 1:
            raise ValueError("the last foreground class cannot be removed")
        del self.classes[k - 1]

    def _check(self, k: int) -> None:
        if not 1 <= k <= len(self.classes):
            raise ValueError(f"class index must be in 1..{len(self.classes)}, got {k}")

    # -- colormap ----------------------------------------------------------------
    def colormap(self, upto: int = 0) -> DirectLabelColormap:
        """Layer encoding, for the annotation and the prediction layer alike: 0 transparent (unlabeled, or
        predicted background), ``k`` the colour of class ``k``, ``LAYER_BACKGROUND`` the background colour; classes
        past this list up to ``upto`` (a model of more classes) in the palette's colours, never invisible."""
        colors = {None: _TRANSPARENT, 0: _TRANSPARENT, LAYER_BACKGROUND: np.asarray(BACKGROUND_COLOR, np.float32)}
        colors.update({k: np.asarray(PALETTE[(k - 1) % len(PALETTE)], np.float32)
                       for k in range(len(self.classes) + 1, min(upto, LAYER_BACKGROUND - 1) + 1)})
        colors.update({k: np.asarray(c.color, np.float32) for k, c in enumerate(self.classes, start=1)})
        return DirectLabelColormap(color_dict=colors, background_value=0)

    def layer_value(self, row: int) -> int:
        """The value painted for row ``row`` of the class list (0 is background)."""
        return LAYER_BACKGROUND if row == 0 else row


def remove_class_values(data: np.ndarray, value: int, erase_to: int) -> None:
    """In place, on a layer-encoded array: voxels of class ``value`` become ``erase_to``; higher classes shift
    down by one (painted background, ``LAYER_BACKGROUND``, stays)."""
    hit = data == value
    above = (data > value) & (data != LAYER_BACKGROUND)
    data[above] -= 1
    data[hit] = erase_to
