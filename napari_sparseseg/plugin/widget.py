"""The dock widget: pick layers and classes, train while painting, accept and export.

The widget composes small parts and owns no compute:

* :class:`~.classes.ClassList` names and colours the classes (edited in
  the :class:`~.class_panel.ClassPanel` box),
* :class:`~.strokes.LabelSync` turns strokes (and undo) into session edits,
* :class:`~.bridge.TrainingRun` runs the session in a worker thread,
* :func:`~.view.view_box` says which slice to predict first.

Every layer write happens here, on the GUI thread, in the handlers of the
worker's events.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QEvent, QObject, QTimer, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..core.annotation import Box
from ..core.config import MODEL_SIZE_CHANNELS, ResponderConfig, SessionConfig, preset
from ..core.encoding import ANNOTATION_DTYPE, MASK_DTYPE
from ..core.events import Guidance, Notice, Prediction, TrainStep, Waiting
from .bridge import Refresh, SessionReady, TrainingRun, merge_late_edits
from .class_panel import ClassPanel
from .classes import MAX_CLASSES, ClassList, remove_class_values
from .guidance_panel import GuidancePanel
from .layers import image_layer_problem, is_output, placement, role
from .models import ModelFiles
from .plot import ProgressStrip, Sparkline
from .results import ExportKind, accepted_labels, export_mask
from .session_files import SessionFiles
from .strokes import LabelSync
from .view import view_box

if TYPE_CHECKING:
    import napari

    from ..core.first_responder import FeatureStack
    from ..core.session import SegmentationSession

DEVICES = ("auto", "cpu", "cuda")
PREDICTION_NAME = "prediction"
UNCERTAINTY_NAME = "uncertainty"


class _CloseWatcher(QObject):
    """Calls ``callback`` when the watched window gets a close event."""

    def __init__(self, target: QObject, callback: Any) -> None:
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


class SparseSegWidget(QWidget):
    """Paint a few slices, train a 3D U-Net in the background, correct its prediction.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer the widget docks into.
    config : SessionConfig, optional
        Base settings; the widget's device, model size and correction weight
        override it. A model that matches no size preset shows as ``custom``.
    refresh_seconds : float
        Seconds between prediction refreshes while training.
    first_refresh_steps : int
        Training steps before the first prediction appears.
    """

    #: Emitted with each :class:`~.core.events.TrainStep` after the status is updated.
    step_done = Signal(object)
    #: Emitted with each :class:`~.bridge.Refresh` once it is on screen.
    prediction_shown = Signal(object)
    #: Emitted when a training run has ended (stopped, failed or closed).
    run_finished = Signal()

    def __init__(self, napari_viewer: napari.viewer.Viewer, *, config: SessionConfig | None = None,
                 refresh_seconds: float = 3.0, first_refresh_steps: int = 5,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        # napari hands plugin widgets a PublicOnlyProxy of the viewer; every object
        # reached through it is a fresh proxy, so identity checks (``layer is
        # self.prediction_layer``) and id()-keyed maps would fail. The widget only
        # uses public API, except the two guarded Labels history attributes.
        self.viewer = getattr(napari_viewer, "__wrapped__", napari_viewer)
        self._base_config = config or SessionConfig()
        self.refresh_seconds = float(refresh_seconds)
        self.first_refresh_steps = int(first_refresh_steps)
        self.classes = ClassList()
        self.session: SegmentationSession | None = None
        self._session_key: tuple | None = None
        self.sync: LabelSync | None = None
        self.prediction_layer: Labels | None = None
        self.uncertainty_layer: Image | None = None
        self._predicted: np.ndarray | None = None
        self._view_box: Box | None = None
        self.last_step: TrainStep | None = None
        self.n_refreshes = 0
        self._last_refresh: float | None = None
        #: The latest prediction on screen (who made it, and how it scores on the held-back labels).
        self._shown: Prediction | None = None
        #: The first responder's filter bank of the chosen image (see :meth:`_feature_stack`).
        self._features: FeatureStack | None = None
        self._drawn_step = -1
        self._refresh_interval = float(refresh_seconds)
        self._closed = False
        self._pending_key: tuple | None = None
        self.run = TrainingRun(self._on_event, self._on_error, self._on_finished, self.update_buttons)
        self._build_ui()
        self.files = SessionFiles(self)  # session store: Save/Open buttons, autosave, checkpoints
        self.models = ModelFiles(self)  # Save model / Apply model to a layer
        self._connect_viewer()
        self._refresh_layer_choices()
        self._warm_up_device()
        self.destroyed.connect(lambda *_: self.close_session())
        self._close_watcher: _CloseWatcher | None = None

    def _warm_up_device(self) -> None:
        """Pay the process's one-time start-up costs while the user paints (see ``core.device.warm_up``).

        A plain daemon thread: it touches no Qt object and nobody waits for it.
        """
        import threading

        from ..core.device import warm_up

        device = self.device_combo.currentText()
        threading.Thread(target=warm_up, args=(device,), kwargs={"quiet": True}, daemon=True,
                         name="sparseseg-warm-up").start()

    def _show_details(self, on: bool) -> None:
        """Steps, speed and the loss curve are for the curious; the estimated Dice is for everyone."""
        self.rate_label.setVisible(on)
        self.sparkline.setVisible(on)

    def _feature_stack(self, layer: Image | None) -> FeatureStack | None:
        """The first responder's filter bank of ``layer``, computed in a background thread from the moment the
        image is chosen (while the user paints); None where the first responder will not run."""
        if layer is None or not isinstance(layer.data, np.ndarray) or layer.data.ndim != 3:
            return None
        spacing = tuple(float(s) for s in layer.scale[-3:])
        stack = self._features
        if stack is not None and stack.matches(layer.data, spacing):
            return stack
        from ..core.first_responder import stack_bytes

        if stack_bytes(layer.data.shape) > ResponderConfig().max_feature_bytes:
            return None
        import threading

        from ..core.first_responder import FeatureStack

        self._features = stack = FeatureStack(layer.data, spacing)
        threading.Thread(target=stack.get, daemon=True, name="sparseseg-features").start()
        return stack

    # ======================================================================== UI
    def _build_ui(self) -> None:
        root = QVBoxLayout(self)

        data = QGroupBox("Data")
        form = QFormLayout(data)
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("3D single-channel image to segment")
        self.image_message = QLabel()
        self.image_message.setWordWrap(True)
        self.image_message.setStyleSheet("color: #ff8c69")
        self.annotation_combo = QComboBox()
        self.annotation_combo.setToolTip("labels layer you paint on: 1 = background, 2.. = classes")
        self.new_annotation_button = QPushButton("New")
        row = QHBoxLayout()
        row.addWidget(self.annotation_combo, 1)
        row.addWidget(self.new_annotation_button)
        form.addRow("Image", self.image_combo)
        form.addRow(self.image_message)
        form.addRow("Annotation", row)
        root.addWidget(data)

        self.class_panel = ClassPanel(self)
        self.class_list = self.class_panel.list
        root.addWidget(self.class_panel)

        train = QGroupBox("Training")
        form = QFormLayout(train)
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        self.device_combo.setCurrentText(self._base_config.device if self._base_config.device in DEVICES else "auto")
        self.size_combo = QComboBox()
        self.size_combo.addItems(list(MODEL_SIZE_CHANNELS))
        if self._base_config.model != preset("small") and self._base_config.model not in (
                preset(s) for s in MODEL_SIZE_CHANNELS):
            self.size_combo.addItem("custom")
            self.size_combo.setCurrentText("custom")
        self.size_combo.setToolTip("small: 16 base channels (CPU); medium 24; large 32 (GPU)")
        self.weight_spin = QDoubleSpinBox()
        self.weight_spin.setDecimals(2)
        self.weight_spin.setRange(0.1, 50.0)
        self.weight_spin.setSingleStep(0.5)
        self.weight_spin.setValue(self._base_config.train.correction_weight)
        self.weight_spin.setToolTip("weight of voxels painted on the prediction layer, relative to painted ones")
        self.uncertainty_check = QCheckBox("show uncertainty layer")
        form.addRow("Device", self.device_combo)
        form.addRow("Model size", self.size_combo)
        form.addRow("Correction weight", self.weight_spin)
        form.addRow(self.uncertainty_check)
        row = QHBoxLayout()
        self.start_button = QPushButton("Start")
        self.pause_button = QPushButton("Pause")
        self.stop_button = QPushButton("Stop")
        for b in (self.start_button, self.pause_button, self.stop_button):
            row.addWidget(b)
        form.addRow(row)
        # Not a QProgressBar: a busy one repaints continuously and setValue repaints
        # synchronously; in a window holding the OpenGL canvas each repaint composes
        # the whole window (tens of ms in software rendering). Status widgets are
        # refreshed together once a second (benchmarks/responsiveness.py).
        self.progress = ProgressStrip()
        self.progress.setToolTip("progress towards the next prediction refresh")
        self.progress.setVisible(False)
        form.addRow(self.progress)
        root.addWidget(train)

        status = QGroupBox("Status")
        col = QVBoxLayout(status)
        self.status_label = QLabel("idle: paint a few slices, then Start")
        self.status_label.setWordWrap(True)
        self.rate_label = QLabel("")
        self.rate_label.setWordWrap(True)  # a long line would widen the dock and shrink the canvas
        self.quality_plot = Sparkline(log=False, tooltip="estimated Dice of the mask shown at each refresh (its "
                                      "expected Dice under the learner's own class probabilities, labels included)")
        self.sparkline = Sparkline()
        self.details_check = QCheckBox("details (steps, speed, training loss)")
        col.addWidget(self.status_label)
        col.addWidget(self.quality_plot)
        col.addWidget(self.details_check)
        col.addWidget(self.rate_label)
        col.addWidget(self.sparkline)
        self.details_check.toggled.connect(self._show_details)
        self._show_details(False)
        root.addWidget(status)

        self.guidance_panel = GuidancePanel(self.viewer, lambda: self.image_layer)
        root.addWidget(self.guidance_panel)

        actions = QGroupBox("Results")
        col = QVBoxLayout(actions)
        self.accept_button = QPushButton("Accept prediction in view as labels")
        self.accept_button.setToolTip("unlabeled voxels of the slice in view (the volume in 3D view) take the "
                                      "predicted class as labels; undo with Ctrl+Z on the annotation layer")
        row = QHBoxLayout()
        self.export_prediction_button = QPushButton("Export prediction…")
        self.export_annotation_button = QPushButton("Export annotation…")
        row.addWidget(self.export_prediction_button)
        row.addWidget(self.export_annotation_button)
        col.addWidget(self.accept_button)
        col.addLayout(row)
        root.addWidget(actions)
        root.addStretch(1)

        self.image_combo.currentIndexChanged.connect(self._on_image_changed)
        self.annotation_combo.currentIndexChanged.connect(self._on_annotation_changed)
        self.new_annotation_button.clicked.connect(lambda: self.create_annotation_layer())
        self.weight_spin.valueChanged.connect(self._apply_correction_weight)
        self.start_button.clicked.connect(self.start)
        self.pause_button.clicked.connect(self.toggle_pause)
        self.stop_button.clicked.connect(self.stop)
        self.accept_button.clicked.connect(self.accept_prediction_in_view)
        self.export_prediction_button.clicked.connect(lambda: self._export_dialog("prediction"))
        self.export_annotation_button.clicked.connect(lambda: self._export_dialog("annotation"))
        self._timer = QTimer(self)
        self._timer.setInterval(1000)
        self._timer.timeout.connect(self._update_status)
        self._timer.start()
        self.class_panel.fill()

    # ================================================================ layers
    def _connect_viewer(self) -> None:
        self.viewer.layers.events.inserted.connect(self._refresh_layer_choices)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        for name in ("current_step", "ndisplay", "order"):
            getattr(self.viewer.dims.events, name).connect(self._update_view_box)

    def _disconnect_viewer(self) -> None:
        self.viewer.layers.events.inserted.disconnect(self._refresh_layer_choices)
        self.viewer.layers.events.removed.disconnect(self._on_layer_removed)
        for name in ("current_step", "ndisplay", "order"):
            getattr(self.viewer.dims.events, name).disconnect(self._update_view_box)

    @property
    def image_layer(self) -> Image | None:
        layer = self.image_combo.currentData()
        return layer if isinstance(layer, Image) and layer in self.viewer.layers else None

    @property
    def annotation_layer(self) -> Labels | None:
        layer = self.annotation_combo.currentData()
        return layer if isinstance(layer, Labels) and layer in self.viewer.layers else None

    def _refresh_layer_choices(self, event: Any = None) -> None:
        image, annotation = self.image_combo.currentData(), self.annotation_combo.currentData()
        images = [ly for ly in self.viewer.layers if isinstance(ly, Image) and not is_output(ly)]
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        for ly in images:
            self.image_combo.addItem(ly.name, ly)
        if image in images:
            self.image_combo.setCurrentIndex(images.index(image))
        else:
            usable = [ly for ly in images if image_layer_problem(ly) is None]
            if usable:
                self.image_combo.setCurrentIndex(images.index(usable[-1]))
        self.image_combo.blockSignals(False)
        self._fill_annotation_choices(annotation)
        if self.image_combo.currentData() is not image:
            self._on_image_changed()

    def _fill_annotation_choices(self, keep: Any = None) -> None:
        image = self.image_layer
        shape = image.data.shape if image is not None else None
        labels = [ly for ly in self.viewer.layers if isinstance(ly, Labels) and not is_output(ly)
                  and ly is not self.prediction_layer and shape is not None and ly.data.shape == shape]
        self.annotation_combo.blockSignals(True)
        self.annotation_combo.clear()
        for ly in labels:
            self.annotation_combo.addItem(ly.name, ly)
        if keep in labels:
            self.annotation_combo.setCurrentIndex(labels.index(keep))
        elif labels:
            preferred = [ly for ly in labels if role(ly) == "annotation" or ly.name == "annotation"]
            self.annotation_combo.setCurrentIndex(labels.index((preferred or labels)[0]))
        self.annotation_combo.blockSignals(False)
        self._on_annotation_changed()

    def _on_layer_removed(self, event: Any) -> None:
        layer = event.value
        if layer is self.prediction_layer:
            if self.sync is not None:
                self.sync.detach_prediction()
            self.prediction_layer = None
            self._predicted = None
        if layer is self.uncertainty_layer:
            self.uncertainty_layer = None
        if (self.sync is not None and layer is self.sync.annotation) or layer is self._session_image():
            self._stop_and_keep_training()
            self._drop_session(None)
            self.status_label.setText(f"layer '{layer.name}' was removed: training stopped")
        self._refresh_layer_choices()

    def _session_image(self) -> Any:
        return self._session_key[0] if self._session_key else None

    def _on_image_changed(self, *_: Any) -> None:
        layer = self.image_combo.currentData()
        problem = image_layer_problem(layer) if layer is not None else "open a 3D image (File > Open Sample > "\
            "napari-sparseseg for a demo)"
        self.image_message.setText(problem or "")
        self.image_message.setVisible(bool(problem))
        if problem is None and self.session is None:
            names = layer.metadata.get("class_names") if hasattr(layer.metadata, "get") else None
            if names and self.classes.names == ClassList().names:
                self.classes = ClassList.from_names(list(names)[:MAX_CLASSES])
                self.class_panel.fill()
                self.apply_colormaps()
        if problem is None:
            self._feature_stack(layer)  # the first responder's features, computed while the user paints
        self._fill_annotation_choices(self.annotation_combo.currentData())
        self._update_view_box()
        self.update_buttons()

    def _on_annotation_changed(self, *_: Any) -> None:
        layer = self.annotation_layer
        if self.sync is not None and self.sync.annotation is layer:
            return
        if self.sync is not None:
            if self.run.running:
                self.stop()
            self.sync.close()
            self.sync = None
            self._drop_session(None)
        if layer is not None:
            self.sync = LabelSync(layer, lambda: self.session, lambda: len(self.classes), show_warning)
            if self.prediction_layer is not None:
                self.sync.attach_prediction(self.prediction_layer)
            self.apply_colormaps()
            self.class_panel.select(self.class_list.currentRow())
            if layer.mode == "pan_zoom":
                layer.mode = "paint"  # the first thing a user does is paint: no hunt for the brush
        self.update_buttons()

    def create_annotation_layer(self) -> Labels | None:
        """Add an empty annotation layer matching the image and select it."""
        image = self.image_layer
        if image is None or image_layer_problem(image):
            show_warning(image_layer_problem(image) or "pick a 3D image first")
            return None
        layer = self.viewer.add_labels(np.zeros(image.data.shape, ANNOTATION_DTYPE), name=f"{image.name} annotation",
                                       **placement(image), opacity=0.7,
                                       metadata={"sparseseg_role": "annotation"})
        self._fill_annotation_choices(layer)
        self.viewer.layers.selection.active = layer
        return layer

    def _ensure_prediction_layer(self) -> Labels:
        image, annotation = self.image_layer, self.annotation_layer
        assert image is not None and annotation is not None
        layer = self.prediction_layer
        if layer is None or layer not in self.viewer.layers or layer.data.shape != image.data.shape:
            layer = self.viewer.add_labels(np.zeros(image.data.shape, MASK_DTYPE), name=PREDICTION_NAME,
                                           **placement(image), opacity=0.45,
                                           metadata={"sparseseg_role": "prediction"})
            self.prediction_layer = layer
            self._predicted = np.zeros(image.data.shape, bool)
            # Keep painting on the annotation layer by default.
            self.viewer.layers.selection.active = annotation
        if self.sync is not None:
            self.sync.attach_prediction(layer)
        self.apply_colormaps()
        return layer

    def adopt_prediction(self, layer: Labels) -> None:
        """A stored prediction (a reopened session) becomes the prediction layer: shown, correctable, acceptable."""
        self.prediction_layer = layer
        self._predicted = np.ones(layer.data.shape, bool)
        if self.sync is not None:
            self.sync.attach_prediction(layer)
        self.apply_colormaps()
        self.update_buttons()

    def set_classes(self, classes: ClassList) -> None:
        """Replace the classes (names and colours, e.g. a reopened session's) and show them."""
        self.classes = classes
        self.class_panel.fill()
        self.apply_colormaps()

    def apply_colormaps(self) -> None:
        """Recolour the annotation and prediction layers from :attr:`classes`."""
        if self.annotation_layer is not None:
            self.annotation_layer.colormap = self.classes.annotation_colormap()
        if self.prediction_layer is not None:
            self.prediction_layer.colormap = self.classes.prediction_colormap()

    def _update_view_box(self, *_: Any) -> None:
        image = self.image_layer
        self._view_box = view_box(self.viewer, image) if image is not None and image.ndim == 3 else None

    def current_view_box(self) -> Box | None:
        """The slice in view (image voxels), ``None`` in 3D view; thread-safe (a cached value)."""
        return self._view_box

    # ================================================================ classes
    def add_class(self, name: str | None = None) -> int:
        """Add a foreground class (live, also while training); returns its index ``k``."""
        return self.class_panel.add(name)

    def rename_class(self, k: int, name: str) -> None:
        """Rename class ``k`` (1-based)."""
        self.class_panel.rename(k, name)

    def remove_class(self, k: int) -> None:
        """Remove class ``k``: its voxels become unlabeled, higher classes move down (not while training)."""
        self.class_panel.remove(k)

    def set_class_color(self, k: int, color: tuple[float, ...]) -> None:
        """Recolour class ``k`` (RGBA in [0, 1])."""
        self.class_panel.set_color(k, color)

    def class_added(self) -> None:
        """A class was added to :attr:`classes`: a running session gets the output channel now."""
        if self.session is not None:
            self.session.ensure_classes(len(self.classes))

    def class_removed(self, k: int) -> None:
        """Class ``k`` was removed from :attr:`classes`: erase it from the layers and drop the session.

        The core's model cannot drop an output channel, so the next Start
        trains a new model.
        """
        for layer, value in ((self.annotation_layer, k + 1), (self.prediction_layer, k)):
            if layer is not None:
                remove_class_values(layer.data, value, 0)
                reset = getattr(layer, "_reset_history", None)
                if callable(reset):
                    reset()  # napari's undo would bring the removed class back
                layer.refresh()
        if self.sync is not None:
            self.sync.close()
            self.sync = None
            self._on_annotation_changed()
        self._drop_session("a class was removed: the next Start trains a new model")

    # ================================================================ training
    def session_config(self) -> SessionConfig:
        """The settings a new session would use (base config + widget fields)."""
        base = self._base_config
        size = self.size_combo.currentText()
        model = base.model if size == "custom" else preset(size)  # type: ignore[arg-type]
        train = replace(base.train, correction_weight=float(self.weight_spin.value()))
        return replace(base, model=model, train=train, device=self.device_combo.currentText())  # type: ignore[arg-type]

    def _key(self, config: SessionConfig) -> tuple:
        return (self.image_layer, self.annotation_layer, config.model, config.device,
                replace(config.train, correction_weight=1.0), config.inference)

    def _apply_correction_weight(self, *_: Any) -> None:
        if self.session is not None:
            self.session.update_training(correction_weight=float(self.weight_spin.value()))

    def start(self) -> bool:
        """Start (or resume) training; returns False with a message if it cannot."""
        if self.run.paused:
            self.run.resume()
            self.update_buttons()
            return True
        if self.run.running:
            return False
        image, problem = self.image_layer, image_layer_problem(self.image_layer)
        if image is None or problem:
            show_warning(problem or "pick a 3D image first")
            return False
        annotation = self.annotation_layer or self.create_annotation_layer()
        if annotation is None:
            return False
        if annotation.data.shape != image.data.shape:
            show_warning(f"annotation shape {annotation.data.shape} differs from image shape {image.data.shape}")
            return False
        self._ensure_prediction_layer()
        config = self.session_config()
        key = self._key(config)
        if self.session is not None and key != self._session_key:
            self._drop_session("settings changed: training a new model")
        if self.session is not None:
            existing = self.session
            self._apply_correction_weight()

            def build() -> SegmentationSession:
                return existing
        else:
            top = len(self.classes) + 1
            labels = np.asarray(annotation.data)
            snapshot = np.where(labels > top, 0, labels).astype(ANNOTATION_DTYPE)
            data, spacing, num_classes = image.data, tuple(float(s) for s in image.scale[-3:]), len(self.classes)
            features = self._feature_stack(image)

            def build() -> SegmentationSession:
                from ..core.device import set_cpu_threads
                from ..core.session import SegmentationSession

                set_cpu_threads(leave_free=1)  # one core keeps the GUI responsive
                return SegmentationSession(np.asarray(data), num_classes=num_classes, spacing=spacing,
                                           annotation=snapshot, config=config, features=features)
        build = self.files.wrap(build, config.device)
        self._pending_key = key
        self._update_view_box()
        self.run.start(build, self.current_view_box, refresh_seconds=self.refresh_seconds,
                       first_refresh_steps=self.first_refresh_steps)
        self.status_label.setText("starting: building the model…")
        self.update_buttons()
        return True

    def toggle_pause(self) -> None:
        if self.run.paused:
            self.run.resume()
        else:
            self.run.pause()
        self.update_buttons()

    def stop(self) -> None:
        """Ask the worker to stop after the current step (returns at once)."""
        if self.run.running:
            self.run.stop()
            self.status_label.setText("stopping…")
        self.update_buttons()

    def _stop_and_keep_training(self, timeout: float = 30.0) -> None:
        """Stop a running worker and, once it has ended (at most ``timeout`` s, one step or refresh), checkpoint
        the session, so that the steps since the last periodic checkpoint are kept (a layer removed, the viewer
        closing)."""
        if not self.run.running:
            return
        self.run.stop()
        if self.run.wait(timeout):
            self.files.checkpoint()

    def _drop_session(self, reason: str | None) -> None:
        if self.session is not None and reason:
            show_info(f"sparseseg: {reason}")
        self.files.detach()
        self.session = None
        self._session_key = None
        if self._predicted is not None:
            self._predicted[:] = False

    # -- worker events (GUI thread) ----------------------------------------------------
    def _on_event(self, event: Any) -> None:
        if self._closed:
            return
        if isinstance(event, TrainStep):
            self.last_step = event
            self.sparkline.append(event.tracked_loss, redraw=False)  # drawn by the 1 s status timer
            self.step_done.emit(event)
        elif isinstance(event, Refresh):
            self._show_prediction(event)
        elif isinstance(event, Waiting):
            _set_text(self.status_label, event.reason)
        elif isinstance(event, SessionReady):
            self._on_session_ready(event.session)
        elif isinstance(event, Guidance):
            self.guidance_panel.show_guidance(event)
        elif isinstance(event, Notice):  # e.g. sizes shrunk after a GPU out-of-memory
            (show_warning if event.level == "warning" else show_info)(f"sparseseg: {event.message}")

    def _on_session_ready(self, session: SegmentationSession) -> None:
        if session is self.session:
            return
        self.session = session
        self._session_key = getattr(self, "_pending_key", None)
        session.ensure_classes(len(self.classes))
        if self.sync is not None:
            self.sync.resync()  # strokes painted while the model was being built
        self.status_label.setText(f"training on {session.trainer.device}")
        self.files.on_session_ready(session)

    def _show_prediction(self, refresh: Refresh) -> None:
        session = self.session
        if session is None or self.image_layer is None:
            return
        layer = self.prediction_layer
        if layer is None or layer not in self.viewer.layers:
            layer = self._ensure_prediction_layer()
        box = refresh.prediction.box
        layer.data[box.slices] = merge_late_edits(session, refresh)
        layer.refresh(extent=False)
        if self._predicted is not None:
            self._predicted[box.slices] = True
        if self.uncertainty_check.isChecked():
            self._show_uncertainty(refresh)
        self.n_refreshes += 1
        if self.n_refreshes == 1:
            self.update_buttons()
        now = time.perf_counter()
        if self._last_refresh is not None:
            self._refresh_interval = 0.5 * self._refresh_interval + 0.5 * (now - self._last_refresh)
        self._last_refresh = now
        self._shown = refresh.prediction
        estimate = refresh.prediction.estimate
        if estimate is not None and refresh.prediction.box == Box.full(layer.data.shape):
            self.quality_plot.append(estimate.dice)
        self.prediction_shown.emit(refresh)

    def _show_uncertainty(self, refresh: Refresh) -> None:
        image = self.image_layer
        layer = self.uncertainty_layer
        if layer is None or layer not in self.viewer.layers:
            layer = self.viewer.add_image(np.zeros(image.data.shape, np.float32), name=UNCERTAINTY_NAME,
                                          **placement(image), colormap="magma",
                                          contrast_limits=(0.0, 1.0), blending="additive", opacity=0.6,
                                          metadata={"sparseseg_role": "uncertainty"})
            self.uncertainty_layer = layer
            if self.annotation_layer is not None:
                self.viewer.layers.selection.active = self.annotation_layer
        layer.data[refresh.prediction.box.slices] = refresh.prediction.uncertainty
        layer.refresh(extent=False)

    def _on_error(self, exc: BaseException) -> None:
        show_error(f"sparseseg: training stopped: {exc}")
        self.status_label.setText(f"error: {exc}")

    def _on_finished(self) -> None:
        if self._closed:
            return
        self.files.checkpoint()
        if not self.status_label.text().startswith("error"):
            self.status_label.setText(f"stopped at step {self.last_step.step if self.last_step else 0}")
        self.update_buttons()
        self.run_finished.emit()

    # -- status ------------------------------------------------------------------------
    def _update_status(self) -> None:
        if self._closed:
            return
        ev = self.last_step
        parts = []
        if self._shown is not None and self.run.running:
            _set_text(self.status_label, shown_in_words(self._shown, self.classes.names))
        elif ev is not None and self.run.running:
            _set_text(self.status_label, f"step {ev.step}   loss {ev.tracked_loss:.4f}")
        if ev is not None and self.run.running:
            parts.append(f"step {ev.step}")
            parts.append(f"{ev.voxels_per_second / 1e6:.2f} Mvox/s")
            parts.append(f"training: {ev.labeled_error_rate:.1%} of labels wrong")
        if self._last_refresh is not None:
            parts.append(f"refreshed {time.perf_counter() - self._last_refresh:.0f} s ago")
        _set_text(self.rate_label, "   ".join(parts))
        self.progress.setValue(self._refresh_progress())
        if ev is not None and ev.step != self._drawn_step:
            self._drawn_step = ev.step
            self.sparkline.update()

    def _refresh_progress(self) -> float:
        """Fraction of the way to the next prediction (steps before the first, then time)."""
        if self._last_refresh is None:
            done = self.last_step.step if self.last_step is not None else 0
            return min(0.99, done / max(self.first_refresh_steps, 1))
        interval = max(self._refresh_interval, self.refresh_seconds)
        return min(0.99, (time.perf_counter() - self._last_refresh) / interval)

    def update_buttons(self) -> None:
        """Enable or disable the buttons for the current state (image chosen, training, paused, prediction)."""
        running, paused = self.run.running, self.run.paused
        can_start = self.image_layer is not None and image_layer_problem(self.image_layer) is None
        self.start_button.setEnabled(can_start and (not running or paused))
        self.start_button.setText("Resume" if paused else "Start")
        self.pause_button.setEnabled(running and not self.run.stopping)
        self.pause_button.setText("Resume" if paused else "Pause")
        self.stop_button.setEnabled(running and not self.run.stopping)
        self.progress.setVisible(running and not paused)
        for w in (self.device_combo, self.size_combo, self.image_combo, self.annotation_combo,
                  self.new_annotation_button):
            w.setEnabled(not running)
        self.class_panel.update_buttons(running)
        has_pred = self.prediction_layer is not None and self._predicted is not None and bool(self._predicted.any())
        self.accept_button.setEnabled(has_pred)

    # ================================================================ results
    def accept_prediction_in_view(self) -> int:
        """Unlabeled voxels of the slice in view (the volume in 3D view) take the predicted class.

        Written through the annotation layer's ``data_setitem``, so it is one
        undoable napari edit and reaches the session as a stroke. Returns the
        number of voxels labeled.
        """
        pred, annotation = self.prediction_layer, self.annotation_layer
        if pred is None or annotation is None or self._predicted is None:
            show_warning("no prediction yet: start training first")
            return 0
        box = self.current_view_box() or Box.full(annotation.data.shape)
        coords, values = accepted_labels(annotation.data, pred.data, self._predicted, box)
        if values.size == 0:
            show_info("nothing to accept in view: every predicted voxel is labeled already")
            return 0
        annotation.data_setitem(coords, values)
        return int(values.size)

    def export(self, kind: ExportKind = "prediction", path: str | Path | None = None) -> Labels:
        """Add a plain mask layer (0 = background, 1..K) and optionally save it.

        Parameters
        ----------
        kind : {"prediction", "annotation"}
            The prediction with labels kept where painted, or only the painted labels.
        path : str or Path, optional
            ``.tif``, ``.nii(.gz)``, ``.npz``, ``.zarr`` or ``.ome.zarr`` (see
            :func:`napari_sparseseg.io.save_mask`); a NIfTI mask gets the image's
            source affine when it was read from NIfTI, so it overlays the scan in other tools.
        """
        annotation, image = self.annotation_layer, self.image_layer
        if annotation is None or image is None:
            raise ValueError("pick an image and an annotation layer first")
        pred = self.prediction_layer.data if self.prediction_layer is not None else None
        mask = export_mask(kind, annotation.data, pred)
        layer = self.viewer.add_labels(mask, name=f"{image.name} {kind} mask", **placement(image),
                                       colormap=self.classes.prediction_colormap(),
                                       metadata={"class_names": tuple(self.classes.names),
                                                 "sparseseg_role": "export"})
        if path is not None:
            from ..io import save_mask

            save_mask(path, mask, tuple(float(s) for s in image.scale[-3:]), affine=image.metadata.get("affine"))
        self.viewer.layers.selection.active = annotation
        return layer

    def _export_dialog(self, kind: str) -> None:
        try:
            path, _ = QFileDialog.getSaveFileName(self, f"Save {kind} mask", f"{kind}_mask.tif",
                                                  "Masks (*.tif *.tiff *.nii.gz *.nii *.npz *.zarr *.ome.zarr)")
            self.export(kind, path or None)
        except Exception as exc:  # noqa: BLE001 (a user action: report, never crash the app)
            show_error(f"sparseseg: export failed: {exc}")

    # ================================================================ teardown
    def close_session(self, timeout: float = 60.0) -> bool:
        """Stop the worker and wait for its thread; disconnect from the viewer (idempotent)."""
        if self._closed:
            return True
        self._closed = True
        ended = self.run.shutdown(timeout)
        self.files.close(ended)
        try:
            self._timer.stop()
        except RuntimeError:
            pass
        if self.sync is not None:
            self.sync.close()
        try:
            self._disconnect_viewer()
        except (RuntimeError, ValueError):
            pass
        if self._close_watcher is not None:
            try:
                self._close_watcher.detach()
            except RuntimeError:  # the window is already gone
                pass
            self._close_watcher = None
        return ended

    def closeEvent(self, event: Any) -> None:
        self.close_session()
        super().closeEvent(event)

    def event(self, event: QEvent) -> bool:
        # napari's dock close button un-parents the widget (it is not closed or
        # deleted): that ends the session too. Hiding the dock does not.
        if event.type() == QEvent.Type.ParentChange:
            if self.parent() is not None:
                self._docked = True
                self._watch_main_window()
            elif getattr(self, "_docked", False):
                self.close_session()
        return super().event(event)

    def _watch_main_window(self) -> None:
        """Stop training when the window holding this widget closes (napari's main window)."""
        root = self
        while root.parentWidget() is not None:
            root = root.parentWidget()
        if root is self or (self._close_watcher is not None and self._close_watcher.parent() is root):
            return
        if self._close_watcher is not None:
            self._close_watcher.detach()
        self._close_watcher = _CloseWatcher(root, self.close_session)


def _set_text(label: QLabel, text: str) -> None:
    """Set a label's text only when it changes (each change repaints the window)."""
    if label.text() != text:
        label.setText(text)


#: What the status line calls each learner.
LEARNER_WORDS: dict[str, str] = {
    "forest": "the fast first responder (a pixel classifier)",
    "net": "the 3D U-Net",
    "blend": "the 3D U-Net blended with the first responder",
}


def shown_in_words(prediction: Prediction, class_names: Sequence[str] = ()) -> str:
    """The status line for a prediction on screen: who made it and its estimated Dice, per class when several."""
    words = f"showing {LEARNER_WORDS.get(prediction.learner, prediction.learner)}"
    estimate = prediction.estimate
    if estimate is not None:
        low, high = estimate.interval
        words += f": estimated Dice {estimate.dice:.2f} ({low:.2f}-{high:.2f})"
        if len(estimate.per_class) > 1:
            names = list(class_names) + [f"class {c}" for c in range(len(class_names) + 1, len(estimate.per_class) + 1)]
            words += "; " + ", ".join(f"{name} {value:.2f}" for name, value in zip(names, estimate.per_class)
                                      if value is not None)
    return words
