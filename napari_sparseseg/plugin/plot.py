"""A tiny loss curve drawn with QPainter (no plotting library, cheap to repaint)."""

from __future__ import annotations

from collections import deque

import numpy as np
from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget


class Sparkline(QWidget):
    """Line plot of the last ``capacity`` values (log or linear scale, smoothed trace on top).

    Parameters
    ----------
    capacity : int
        Values kept; older ones scroll out.
    parent : QWidget, optional
    """

    def __init__(self, capacity: int = 500, parent: QWidget | None = None, *, log: bool = True,
                 tooltip: str = "training loss (log scale); bright line: moving average") -> None:
        super().__init__(parent)
        self._values: deque[float] = deque(maxlen=capacity)
        self._log = log
        self.setMinimumHeight(48)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip(tooltip)

    @property
    def values(self) -> list[float]:
        return list(self._values)

    def append(self, value: float, redraw: bool = True) -> None:
        """Add a value (non-finite values are dropped); schedule a repaint unless ``redraw`` is false."""
        if np.isfinite(value):
            self._values.append(float(value))
            if redraw:
                self.update()

    def clear(self) -> None:
        self._values.clear()
        self.update()

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.fillRect(self.rect(), QColor(30, 30, 36))
        values = np.asarray(self._values, dtype=np.float64)
        if values.size >= 2:
            y = np.log10(np.maximum(values, 1e-6)) if self._log else values
            k = max(1, values.size // 25)
            smooth = np.convolve(y, np.ones(k) / k, mode="valid") if values.size > k else y
            lo, hi = float(y.min()), float(y.max())
            span = hi - lo if hi > lo else 1.0
            w, h, pad = self.width(), self.height(), 4

            def poly(trace: np.ndarray, first: int) -> QPolygonF:
                xs = pad + (np.arange(trace.size) + first) * (w - 2 * pad) / max(values.size - 1, 1)
                ys = h - pad - (trace - lo) / span * (h - 2 * pad)
                return QPolygonF([QPointF(float(a), float(b)) for a, b in zip(xs, ys)])

            painter.setPen(QPen(QColor(110, 110, 130), 1))
            painter.drawPolyline(poly(y, 0))
            painter.setPen(QPen(QColor(255, 170, 60), 2))
            painter.drawPolyline(poly(smooth, (values.size - smooth.size)))
            painter.setPen(QColor(200, 200, 200))
            corner = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop
            painter.drawText(self.rect().adjusted(4, 2, -4, -2), corner, f"{values[-1]:.3g}")
        painter.end()


class ProgressStrip(QWidget):
    """A thin progress bar that repaints lazily (``update()``, never ``repaint()``).

    ``QProgressBar.setValue`` repaints synchronously; in a window holding
    napari's OpenGL canvas every repaint composes the whole window, which
    costs tens of ms under software rendering. This strip's paints coalesce
    with the other status updates into one composition.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._fraction = 0.0
        self.setFixedHeight(6)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def value(self) -> float:
        return self._fraction

    def setValue(self, fraction: float) -> None:
        fraction = float(min(max(fraction, 0.0), 1.0))
        if abs(fraction - self._fraction) >= 0.005:
            self._fraction = fraction
            self.update()

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(50, 50, 60))
        done = self.rect().adjusted(0, 0, -int(self.width() * (1.0 - self._fraction)), 0)
        painter.fillRect(done, QColor(255, 170, 60))
        painter.end()
