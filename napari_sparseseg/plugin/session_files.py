"""The widget's Session box: Save, Open and autosave of session stores.

A store opened in napari (:mod:`~.session_reader`) comes back as image, annotation and prediction layers
carrying ``metadata["sparseseg_store"]``. The first Start of the dock
widget on those layers reopens the store (labels with their sources, model
from ``checkpoints/latest.pt``) and training resumes at the checkpoint's step.

A session the widget starts without a store gets one under
``$NAPARI_SPARSESEG_HOME/sessions/<timestamp>.sparseseg`` (default home
``~/.napari-sparseseg``): every stroke reaches disk within about a second.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..store import is_session_store
from .layers import layer_geometry, store_of
from .session_reader import (
    STORE_SUFFIX,
    STORE_SUFFIXES,
    new_store_path,
    prefer_this_reader_for_stores,
    sessions_home,
    store_layers,
)
from .store_layers import StoreLayers

if TYPE_CHECKING:
    from ..core.session import SegmentationSession
    from ..store import SessionStore
    from .host import DockHost

log = logging.getLogger(__name__)


# ==================================================================== widget part
class SessionFiles(StoreLayers):
    """The widget's session store: Save/Open buttons, autosave of its session, checkpoints on Stop/close.

    Parameters
    ----------
    widget : DockHost
        The dock widget; a "Session" group box is added to its layout.
    """

    def __init__(self, widget: DockHost) -> None:
        from qtpy.QtWidgets import QGroupBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout

        self.widget = widget
        #: Store of the widget's current session (``None`` before the first Start).
        self.store: SessionStore | None = None
        self._open_path: Path | None = None  # a store to reopen at the next Start
        self._save_path: Path | None = None  # where the next session's store goes (Save before Start)
        self._detached: list[Any] = []  # stores of dropped sessions, unlocked once no run writes into them
        self._failing: BaseException | None = None  # the autosave error last reported
        self._unsaved: str | None = None  # why the last session built has no store (said when it is ready)
        self._left: Path | None = None  # the store of the session dropped last (the next one saves elsewhere)
        self._opened: set[str] = set()  # stores already reopened by this widget (layer metadata)
        self._save_after_open: Path | None = None  # Save before the Start that reopens a store: once it has
        #: What the last :meth:`wrap` took (open and save paths, stores reopened), given back when its run ends
        #: without a session (:meth:`not_started`).
        self._taken: tuple[Path | None, Path | None, set[str]] | None = None
        #: The store :meth:`open` opened last and its image layers, a channel each, in its order.
        self._open_images: tuple[Path | None, list[Any]] = (None, [])
        try:  # File > Open on a store this widget writes then opens it with this plugin, without asking
            prefer_this_reader_for_stores()
        except Exception as exc:  # noqa: BLE001 (a settings file napari cannot write must not stop the widget)
            log.warning("napari-sparseseg: could not record the reader preference for session stores: %s", exc)
        box = QGroupBox("Session")
        col = QVBoxLayout(box)
        row = QHBoxLayout()
        self.save_button = QPushButton("Save session…")
        self.save_button.setToolTip("keep this session (labels, model, prediction) in a session folder (zarr), "
                                    "autosaved while you work")
        self.open_button = QPushButton("Open session…")
        self.open_button.setToolTip("reopen a saved session: layers come back and Start resumes training")
        row.addWidget(self.save_button)
        row.addWidget(self.open_button)
        col.addLayout(row)
        self.path_label = QLabel("")
        self.path_label.setWordWrap(True)
        col.addWidget(self.path_label)
        layout = widget.layout()
        layout.insertWidget(max(layout.count() - 1, 0), box)  # above the trailing stretch
        self.save_button.clicked.connect(self._save_dialog)
        self.open_button.clicked.connect(self._open_dialog)
        widget.viewer.layers.events.inserted.connect(self._on_inserted)
        for layer in list(widget.viewer.layers):
            self._adopt(layer)

    # -- training lifecycle (called by the widget) ---------------------------------------
    def wrap(self, build: Callable[[], SegmentationSession], device: str) -> Callable[[], SegmentationSession]:
        """The worker's session builder, extended to open or create the session's store (GUI thread).

        The returned function runs in the worker thread: it reopens the store the layers came
        from (first Start after opening one) or builds the session and creates a store for it,
        then starts autosave.
        """
        from ..store import SessionStore

        w = self.widget
        open_path = None
        save_path = None
        self._taken, self._save_after_open = (self._open_path, self._save_path, set(self._opened)), None
        if w.session is None:
            image_store, ann_store = store_of(w.image_layer), store_of(w.annotation_layer)
            open_path = self._open_path
            if open_path is None and image_store and image_store == ann_store and image_store not in self._opened:
                open_path = Path(image_store)
            if open_path is not None:
                self._opened.add(str(open_path))
                if not self._chose_the_stores_image(open_path):  # its net reads other channels, in its order
                    from napari.utils.notifications import show_info

                    show_info(f"sparseseg: the chosen image and channels are not those of the session opened from "
                              f"{open_path.name}: a new session starts (the opened one stays in its store)")
                    open_path = None
            if open_path is None:
                save_path = self._save_path or new_store_path()
            else:
                self._save_after_open = self._save_path  # the reopened session moves there once it runs
            self._open_path = self._save_path = None
        names, colors = list(w.classes.names), [c.color for c in w.classes.classes]
        image_name = w.image_layer.name if w.image_layer is not None else None
        where = layer_geometry(w.image_layer)

        def build_with_store() -> SegmentationSession:
            if open_path is not None:
                store, session = SessionStore.open(open_path, device=device)
            else:
                session = build()
                store = session.store
                if store is None and save_path is not None:
                    try:
                        store = SessionStore.create(save_path, session, class_names=names[: session.num_classes],
                                                    colors=colors[: session.num_classes], image_name=image_name,
                                                    **where)
                    except OSError as exc:  # an unwritable home, a full disk: train all the same, and say so
                        self._unsaved = f"not saved: cannot create {save_path} ({exc}); use Save session… elsewhere"
            if store is not None:
                store.start_autosave()
            return session

        return build_with_store

    def _chose_the_stores_image(self, path: Path) -> bool:
        """Whether the Data box's image and ticked channels are the image layers of the store at ``path``, in its
        channel order (those :meth:`open` added, or else the viewer's image layers read from it)."""
        from napari.layers import Image

        opened, layers = self._open_images
        stored = [ly for ly in layers if ly in self.widget.viewer.layers] if opened == path else []
        stored = stored or [
            ly for ly in self.widget.viewer.layers if isinstance(ly, Image) and store_of(ly) == str(path)
            and ly.metadata.get("class_names") is not None]
        chosen = [self.widget.image_layer, *self.widget.data_panel.channel_layers]
        return len(chosen) == len(stored) and all(a is b for a, b in zip(chosen, stored))

    def not_started(self) -> None:
        """The run of the last :meth:`wrap` ended without a session (stopped while it was built, or failed): the
        store it was to reopen, or the path it was to save to, wait for the next Start."""
        if self._taken is not None:
            self._open_path, self._save_path, self._opened = self._taken
        self._taken, self._save_after_open = None, None

    def on_session_ready(self, session: SegmentationSession) -> None:
        """Remember the session's store and show where it is saved (moved to the path chosen with Save before this
        Start reopened a store)."""
        self._taken = None
        save_after, self._save_after_open = self._save_after_open, None
        self.store = session.store
        unsaved, self._unsaved = self._unsaved, None
        if unsaved is not None:
            from napari.utils.notifications import show_warning

            show_warning(f"sparseseg: the session is {unsaved}")
            self.path_label.setText(unsaved)
        if self.store is None:
            return
        self.sync_classes()
        resumed = f" (resumed at step {session.trainer.step})" if session.trainer.step else ""
        self.path_label.setText(f"autosaving to {self.store.path}{resumed}")
        left, self._left = self._left, None
        chosen = left is not None and sessions_home().resolve() not in left.resolve().parents  # not an autosave
        if chosen and left != Path(self.store.path):
            from napari.utils.notifications import show_info  # a store the user chose stays as it was

            show_info(f"sparseseg: a new session is saved to {self.store.path}; {left} keeps the one before "
                      "(Save session… to choose where this one goes)")
        w = self.widget
        w.status_panel.say(f"{w.status_panel.label.text()}; saving to {self.store.path}")
        if self.store.resume_error:
            w.status_panel.say(self.store.resume_error)
        if save_after is not None:
            self.save(save_after)

    def checkpoint(self) -> None:
        """Write a checkpoint and flush (training has ended: the weights are not changing)."""
        session = self.widget.session
        if self.store is None or session is None or session.store is not self.store:
            return
        try:
            self.sync_classes()
            self.store.save_checkpoint(session.trainer)
            self.store.flush()
        except Exception as exc:  # noqa: BLE001 (a full disk must not crash the app)
            from napari.utils.notifications import show_error

            show_error(f"sparseseg: saving the session failed: {exc}")

    def check_autosave(self) -> None:
        """Say at once when autosaving fails (a full disk, a folder gone), and when it works again (the 1 s tick):
        strokes are kept in memory meanwhile, and the user can Save session elsewhere."""
        store = self.store
        error = getattr(store, "last_error", None) if store is not None else None
        if error is not None and self._failing is None:
            from napari.utils.notifications import show_error

            show_error(f"sparseseg: autosaving to {store.path} fails ({error}); your labels are kept in this window: "
                       "free some space, or Save session… elsewhere")
            self.path_label.setText(f"autosave failing: {error}")
        elif error is None and self._failing is not None and store is not None:
            self.path_label.setText(f"autosaving to {store.path} (again)")
        self._failing = error

    def forget_opened(self) -> bool:
        """The store opened for the next Start no longer fits the classes (one was removed): the next Start trains a
        new model in a new store, the opened one left as it was. Returns whether one was waiting."""
        stores = {str(self._open_path), str(Path(self._open_path).resolve())} if self._open_path else set()
        if store_of(self.widget.image_layer):  # layers read from a store reopen it at Start otherwise
            stores.add(store_of(self.widget.image_layer))
        waiting = bool(stores - self._opened)
        self._opened |= stores
        self._open_path = None
        return waiting

    def detach(self) -> None:
        """The widget dropped its session: stop autosaving it (the store stays on disk) and give up its lock once no
        run writes into it (:meth:`run_ended`), so that it opens elsewhere (another process, another machine)."""
        self.sync_classes()  # renamed or recoloured after the last checkpoint
        store, self.store = self.store, None
        if store is not None:
            self._left = Path(store.path)
            self.path_label.setText(f"the session before is kept in {store.path}: Open session… resumes it")
            store.stop_autosave(flush=True)
            self._detached.append(store)
            if not self.widget.run.running:
                self.run_ended()

    def run_ended(self) -> None:
        """The run ended: the stores of sessions the widget dropped are unlocked."""
        from ..store_lock import release

        detached, self._detached = self._detached, []
        for store in detached:
            if self.store is None or Path(self.store.path) != Path(store.path):  # not reopened by a later session
                release(store.path)

    def close(self, training_ended: bool) -> None:
        """Widget closing: last flush, and a checkpoint if the worker has ended."""
        try:
            self.widget.viewer.layers.events.inserted.disconnect(self._on_inserted)
        except (RuntimeError, ValueError, TypeError):
            pass
        if training_ended:
            self.checkpoint()
        if self.store is None and self._open_path is not None:  # opened, painted on, never started
            self.keep_unstarted_strokes(self._open_path)
        self.detach()

    def sync_classes(self) -> None:
        """Write the widget's class names and colours into the session's store (those of its classes)."""
        if self.store is not None and len(self.widget.classes) >= self.store.session.num_classes:  # (a class
            w = self.widget  # removed: the list no longer names that store's classes, which stay as they were)
            k = self.store.session.num_classes
            self.store.set_classes(w.classes.names[:k], [c.color for c in w.classes.classes][:k])

    # -- save / open ---------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Keep the widget's session in the store ``path`` (created; autosaved from now on).

        Before the first Start the path is remembered and the store is created when the session is.
        """
        from ..store import SessionStore

        path = Path(path)
        if not path.name.endswith(STORE_SUFFIXES):
            path = path.with_name(path.name + STORE_SUFFIX)
        w = self.widget
        session = w.session
        if session is None:
            self._save_path = path
            self.path_label.setText(f"will be saved to {path} when training starts")
            return path
        old = self.store
        if old is not None and old.path.resolve() == path.resolve():
            if w.run.running:
                old.flush()
            else:
                self.checkpoint()
            return path
        k = session.num_classes
        store = SessionStore.create(path, session, class_names=w.classes.names[:k],
                                    colors=[c.color for c in w.classes.classes][:k],
                                    overwrite=is_session_store(path),
                                    image_name=w.image_layer.name if w.image_layer is not None else None,
                                    **layer_geometry(w.image_layer))
        if old is not None:  # the new store takes over the old one's history (and checkpoint, while training)
            old.stop_autosave(flush=True)
            store.prepend_history(old.path)
            store.copy_prediction_from(old)  # reopened, it shows what was on screen
            if (old.path / "checkpoints" / "latest.pt").exists() and w.run.running:
                shutil.copyfile(old.path / "checkpoints" / "latest.pt", path / "checkpoints" / "latest.pt")
        if w.run.running:
            store._last_checkpoint = 0.0  # the training thread writes one at its next step
        else:
            store.save_checkpoint(session.trainer)
        store.start_autosave()
        self.store = store
        self.path_label.setText(f"autosaving to {path}")
        return path

    def open(self, path: str | Path) -> list[Any]:
        """Add a store's layers to the viewer and bind the widget: the next Start resumes training.

        Returns the added layers (empty, with a warning, if training runs or ``path`` is no store).
        """
        from napari.utils.notifications import show_warning

        w = self.widget
        if w.run.running:
            show_warning("stop training before opening a session")
            return []
        if not is_session_store(path):
            show_warning(f"{path} is not a napari-sparseseg session store")
            return []
        path = Path(path).resolve()
        layers = []
        for data, meta, kind in store_layers(path):  # an image of several channels: a layer each, as napari opens it
            added = getattr(w.viewer, f"add_{kind}")(data, **meta)
            layers += added if isinstance(added, list) else [added]
        images = [ly for ly in layers if ly.metadata.get("class_names") is not None]
        self._open_images = (path, images)
        image = images[0]
        annotation = next(ly for ly in layers if ly.metadata.get("sparseseg_role") == "annotation")
        _select(w.data_panel.image_combo, image)
        _select(w.data_panel.annotation_combo, annotation)
        self._set_classes(image.metadata["class_names"], image.metadata.get("class_colors"))
        self._show_stored_weight(path)
        self._open_path = path
        prediction = next((ly for ly in layers if ly.metadata.get("sparseseg_role") == "prediction"), None)
        if prediction is not None:
            w.adopt_prediction(prediction, image)
        w.viewer.layers.selection.active = annotation
        self.path_label.setText(f"opened {path}: Start resumes training")
        w.status_panel.say("session opened: " + ("its last prediction is shown; " if prediction is not None
                                                      else "") + "Start resumes training")
        return layers

    def _show_stored_weight(self, path: Path) -> None:
        """Show the correction weight the store's session trained with (the box's value is the one used at Start)."""
        import zarr

        try:
            weight = float(zarr.open_group(str(path), mode="r").attrs["config"]["train"]["correction_weight"])
        except (KeyError, TypeError, ValueError, OSError):
            return
        spin = self.widget.training_panel.weight_spin
        spin.blockSignals(True)
        spin.setValue(weight)
        spin.blockSignals(False)

    def _save_dialog(self) -> None:
        from napari.utils.notifications import show_error
        from qtpy.QtWidgets import QFileDialog

        start = str(sessions_home() / f"session{STORE_SUFFIX}")
        path, _ = QFileDialog.getSaveFileName(self.widget, "Save session", start,
                                              f"Session store (*{STORE_SUFFIX} *.zarr)")
        if path:
            try:
                self.save(path)
            except Exception as exc:  # noqa: BLE001 (a user action: report, never crash the app)
                show_error(f"sparseseg: saving the session failed: {exc}")

    def _open_dialog(self) -> None:
        from napari.utils.notifications import show_error
        from qtpy.QtWidgets import QFileDialog

        path = QFileDialog.getExistingDirectory(self.widget, f"Open session ({STORE_SUFFIX} or .zarr folder)",
                                                str(sessions_home()))
        if path:
            try:
                self.open(path)
            except Exception as exc:  # noqa: BLE001
                show_error(f"sparseseg: opening the session failed: {exc}")


def _select(combo: Any, layer: Any) -> None:
    for i in range(combo.count()):
        if combo.itemData(i) is layer:
            combo.setCurrentIndex(i)
            return
