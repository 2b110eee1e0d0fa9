"""Ending the dock widget's session when its window closes.

napari's dock close button un-parents the widget (it is neither closed nor
deleted), and closing the main window does not close the dock's widget first:
:func:`watch_window` installs a :class:`CloseWatcher` on the top-level window
holding the widget, and the widget ends its session when either happens.
"""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import QWidget


class CloseWatcher(QObject):
    """Calls ``callback`` when the watched window gets a close event."""

    def __init__(self, target: QObject, callback: Callable[[], object]) -> None:
        super().__init__(target)
        self._callback = callback
        target.installEventFilter(self)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Close:
            self._callback()
        return False

    def detach(self) -> None:
        """Stop watching; safe from inside :meth:`eventFilter` (deletion is deferred)."""
        self._callback = lambda: None
        target = self.parent()
        if target is not None:
            target.removeEventFilter(self)
        self.deleteLater()


def watch_window(widget: QWidget, watcher: CloseWatcher | None, on_close: Callable[[], object]
                 ) -> CloseWatcher | None:
    """Watch the top-level window that holds ``widget`` now; returns the watcher to keep (``watcher`` itself when
    it already watches that window, None when the widget is its own window)."""
    root = widget
    while root.parentWidget() is not None:
        root = root.parentWidget()
    if root is widget or (watcher is not None and watcher.parent() is root):
        return watcher
    if watcher is not None:
        watcher.detach()
    return CloseWatcher(root, on_close)


def detach(watcher: CloseWatcher | None) -> None:
    """Stop ``watcher`` (if any), also when its window is already gone."""
    if watcher is not None:
        try:
            watcher.detach()
        except RuntimeError:  # the window is already gone
            pass


class EndsWithItsWindow:
    """Mixin for a ``QWidget`` whose :meth:`close_session` must run when it closes, when napari's dock close
    button un-parents it (hiding the dock does not count), or when the window holding it closes."""

    _close_watcher: CloseWatcher | None = None
    _docked = False

    def close_session(self, timeout: float = 60.0) -> bool:  # pragma: no cover - the widget defines it
        raise NotImplementedError

    def stop_watching(self) -> None:
        """Stop watching the window (part of closing the session)."""
        detach(self._close_watcher)
        self._close_watcher = None

    def closeEvent(self, event: QEvent) -> None:
        self.close_session()
        super().closeEvent(event)  # type: ignore[misc]

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ParentChange:
            if self.parent() is not None:  # type: ignore[attr-defined]
                self._docked = True
                self._close_watcher = watch_window(self, self._close_watcher, self.close_session)  # type: ignore[arg-type]
            elif self._docked:
                self.close_session()
        return super().event(event)  # type: ignore[misc]
