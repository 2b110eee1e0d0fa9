"""The dock widget: pick layers and classes, train while painting, accept and export.

The widget composes boxes and parts and owns no compute:

* the boxes: :class:`~.data_panel.DataPanel` (image and annotation layer), :class:`~.volumes_panel.VolumesPanel`
  (more volumes to learn from), :class:`~.class_panel.ClassPanel`, :class:`~.training_panel.TrainingPanel`,
  :class:`~.status_panel.StatusPanel`, :class:`~.guidance_panel.GuidancePanel`, :class:`~.results_panel.ResultsPanel`,
  and the Session and Model boxes (:class:`~.session_files.SessionFiles`, :class:`~.models.ModelFiles`);
* :class:`~.layer_binding.LayerBinding` binds the layers to the session (strokes and corrections through
  :class:`~.strokes.LabelSync`, the output layers, colours, the slice in view);
* :class:`~.bridge.TrainingRun` runs the session in a worker thread;
* :class:`~.layer_choice.FollowsLayers` (a mixin) reacts to the layers chosen, removed or renamed.

What stays here is the session's life (Start, Pause, Stop, a new model when the settings or classes change) and
the worker's events. Every layer write happens on the GUI thread, in the handlers of those events.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import QVBoxLayout, QWidget

from ..core.box import Box
from ..core.config import SessionConfig
from ..core.events import Guidance, Notice, Prediction, TrainStep, Waiting
from .background import FeatureCache, bank_words, warm_up_device
from .bridge import Refresh, SessionReady, TrainingRun, merge_late_edits
from .class_panel import ClassPanel
from .classes import ClassList
from .data_panel import DataPanel
from .guidance_panel import GuidancePanel
from .layer_binding import LayerBinding
from .layer_choice import FollowsLayers
from .models import ModelFiles
from .results_panel import ResultsPanel
from .session_build import new_session, reuse, session_key
from .session_files import SessionFiles
from .status_panel import RefreshClock, StatusPanel, shown_in_words
from .training_panel import TrainingPanel
from .volumes_panel import VolumesPanel
from .window_watch import EndsWithItsWindow

if TYPE_CHECKING:
    import napari

    from ..core.session import SegmentationSession

__all__ = ["SparseSegWidget", "shown_in_words"]


class SparseSegWidget(FollowsLayers, EndsWithItsWindow, QWidget):
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
        #: When predictions reached the screen (their count, the interval).
        self.refreshes = RefreshClock(refresh_seconds, first_refresh_steps)
        self.classes = ClassList()
        self.session: SegmentationSession | None = None
        self._session_key: tuple | None = None
        #: The annotation, prediction and uncertainty layers bound to the session, and the slice in view.
        self.layers = LayerBinding(self.viewer, lambda: self.session, lambda: self.classes,
                                   lambda: self.training_panel.edge_check.isChecked())
        self.outputs = self.layers.outputs
        self.last_step: TrainStep | None = None
        #: The latest prediction on screen (who made it, and how it scores on the held-back labels).
        self._shown: Prediction | None = None
        #: Why training waits (no labels left, say), until it steps again.
        self._waiting: str | None = None
        #: The first responder's filter bank of the chosen image, computed while the user paints.
        self.features = FeatureCache()
        self._closed = False
        self._pending_key: tuple | None = None
        #: Why the run was stopped, when not by the user (shown when it has ended).
        self._stopped_because: str | None = None
        self.run = TrainingRun(self._on_event, self._on_error, self._on_finished, self.update_buttons)
        self._build_ui()
        self.files = SessionFiles(self)  # session store: Save/Open buttons, autosave, checkpoints
        self.models = ModelFiles(self)  # Save model / Apply model to a layer
        self._wire_viewer()
        self.data_panel.refresh()
        warm_up_device(self.training_panel.device_combo.currentText())
        self.destroyed.connect(lambda *_: self.close_session())

    # ======================================================================== UI
    def _build_ui(self) -> None:
        root = QVBoxLayout(self)
        self.data_panel = DataPanel(self.viewer, lambda: self.prediction_layer, self._on_image_changed,
                                    self._on_annotation_changed, lambda: len(self.classes))
        self.class_panel = ClassPanel(self)
        self.training_panel = TrainingPanel(self._base_config)
        self.status_panel = StatusPanel()
        self.guidance_panel = GuidancePanel(self.viewer, lambda: self.image_layer)
        self.results_panel = ResultsPanel(self)
        self.volumes_panel = VolumesPanel(self)
        for panel in (self.data_panel, self.volumes_panel, self.class_panel, self.training_panel, self.status_panel,
                      self.guidance_panel, self.results_panel):
            root.addWidget(panel)
        root.addStretch(1)
        t = self.training_panel
        t.weight_spin.valueChanged.connect(self._apply_correction_weight)
        t.start_button.clicked.connect(self.start)
        t.pause_button.clicked.connect(self.toggle_pause)
        t.stop_button.clicked.connect(self.stop)
        t.uncertainty_check.toggled.connect(self.outputs.show_uncertainty)
        self._timer = QTimer(self, interval=1000)
        self._timer.timeout.connect(self._update_status)
        self._timer.start()
        self.class_panel.fill()

    @property
    def session_key(self) -> tuple | None:
        """What the session was built for (image layer first, its channel layers last); None without a session."""
        return self._session_key if self.session is not None else None

    # ================================================================ classes
    def set_classes(self, classes: ClassList) -> None:
        """Replace the classes (names and colours, e.g. a reopened session's) and show them."""
        self.classes = classes
        self.class_panel.fill()
        self.apply_colormaps()

    def apply_colormaps(self) -> None:
        """Recolour the annotation and prediction layers (of every volume) from :attr:`classes`, and keep the
        names and colours in the session's store at once (a crash keeps them)."""
        self.layers.recolour(self.annotation_layer)
        self.volumes_panel.recolour()
        self.files.sync_classes()

    def _update_view_box(self, *_: Any) -> None:
        self.layers.update_view_box(self.image_layer)

    def current_view_box(self) -> Box | None:
        """The slice in view (image voxels), ``None`` in 3D view; thread-safe (a cached value)."""
        return self.layers.view_box()

    # ================================================================ classes
    def class_added(self) -> None:
        """A class was added to :attr:`classes`: a running session gets the output channel now."""
        if self.session is not None:
            self.session.ensure_classes(len(self.classes))

    def class_removed(self, k: int) -> None:
        """Class ``k`` was removed from :attr:`classes` (and from the layers): drop the session (the core's model
        cannot drop an output channel, so the next Start trains a new model)."""
        if self.layers.annotation is not None:
            self.layers.unbind()
            self._on_annotation_changed()
        if self.files.forget_opened() and self.session is None:
            show_info("sparseseg: a class was removed: the next Start trains a new model in a new session store (the "
                      "one opened stays as it was)")
        self._drop_session("a class was removed: the next Start trains a new model")

    # ================================================================ training
    def _apply_correction_weight(self, *_: Any) -> None:
        if self.session is not None:
            self.session.update_training(correction_weight=self.training_panel.correction_weight)

    def start(self) -> bool:
        """Start (or resume) training; returns False with a message if it cannot."""
        if self.run.paused:
            self.run.resume()
            self.update_buttons()
            return True
        if self.run.running:
            return False
        chosen = self.data_panel.chosen_layers()
        if chosen is None or not self.volumes_panel.accepts_channels(self.data_panel.channel_layers):
            return False
        (image, annotation), channels = chosen, self.data_panel.channel_layers
        self.data_panel.remember(image, annotation)  # trained on: the image's own from now on
        self._ensure_prediction_layer()
        config = self.training_panel.session_config()
        key = session_key(image, annotation, config, channels)
        if self.session is not None and key != self._session_key:
            self._drop_session("settings changed: training a new model")
        if self.session is not None:
            self._apply_correction_weight()
        build = reuse(self.session) if self.session is not None else new_session(
            image, annotation, len(self.classes), config,
            self.features.for_layer(image, len(self.classes), claim=True, channels=channels), channels,
            self.layers.sync.corrected if self.layers.annotation is annotation else None)
        build = self.volumes_panel.wrap(self.files.wrap(build, config.device))
        self._pending_key, self._stopped_because = key, None
        self._update_view_box()
        self.run.start(build, self.current_view_box, refresh_seconds=self.refreshes.refresh_seconds,
                       first_refresh_steps=self.refreshes.first_refresh_steps, view_volume=self.volumes_panel.in_view,
                       held=self.session)
        self.status_panel.say("starting: building the model…")
        self.update_buttons()
        return True

    def toggle_pause(self) -> None:
        self.run.toggle_pause()
        self.update_buttons()

    def stop(self) -> None:
        """Ask the worker to stop after the current step (returns at once)."""
        if self.run.running:
            self.run.stop()
            self.status_panel.say("stopping…")
        self.update_buttons()

    def _stop_and_keep_training(self, timeout: float = 30.0) -> None:
        """Stop a running worker and, once it has ended (at most ``timeout`` s, one step or refresh), checkpoint
        the session, so that the steps since the last periodic checkpoint are kept (a layer removed, the viewer
        closing)."""
        if self.run.stop_and_wait(timeout):
            self.files.checkpoint()

    def _drop_session(self, reason: str | None) -> None:
        if self.session is not None and reason:
            show_info(f"sparseseg: {reason}")
        self.files.detach()
        self.features.unclaim()
        self.session = self._session_key = None
        self.outputs.forget_predicted()
        self.volumes_panel.forget()
        self.last_step = self._shown = self._waiting = None  # what the Status and guidance boxes showed was its
        self.refreshes.reset()
        self.status_panel.forget()
        self.guidance_panel.forget()
        self.update_buttons()

    # -- worker events (GUI thread) ----------------------------------------------------
    def _on_event(self, event: Any) -> None:
        if self._closed:
            return
        if isinstance(event, TrainStep):
            self.last_step, self._waiting = event, None
            self.status_panel.add_step(event)  # drawn by the 1 s status timer
            self.step_done.emit(event)
        elif isinstance(event, Refresh):
            self._show_prediction(event)
        elif isinstance(event, Waiting):  # said until training goes on (the 1 s tick would say what is shown)
            self._waiting = event.reason
            self.status_panel.say(event.reason)
        elif isinstance(event, SessionReady):
            self._on_session_ready(event.session)
        elif isinstance(event, Guidance):
            self.guidance_panel.show_guidance(event)
        elif isinstance(event, Notice):  # e.g. sizes shrunk after a GPU out-of-memory
            (show_warning if event.level == "warning" else show_info)(f"sparseseg: {event.message}")

    def _on_session_ready(self, session: SegmentationSession) -> None:
        self.volumes_panel.on_session_ready(session)  # volumes that joined in the worker (a reused session too)
        if session is self.session:
            return
        self.session = session
        self._session_key = getattr(self, "_pending_key", None)
        self.refreshes.reset()  # its first prediction enables what needs one (Accept)
        session.ensure_classes(len(self.classes))
        self._apply_correction_weight()  # the weight the box shows, also for a session reopened from its store
        if self.layers.sync is not None:
            self.layers.sync.resync()  # strokes painted while the model was being built
        self.status_panel.say(f"training on {session.trainer.device}")
        self.files.on_session_ready(session)

    def _show_prediction(self, refresh: Refresh) -> None:
        session, image, annotation = self.session, self.image_layer, self.annotation_layer
        if session is None or image is None or annotation is None:
            return
        if refresh.prediction.volume > 0:  # another volume the user looks at
            return self.volumes_panel.show(refresh, merge_late_edits(session, refresh))
        layer = self.layers.show(refresh.prediction, merge_late_edits(session, refresh), image, annotation,
                                 uncertainty=self.training_panel.uncertainty_check.isChecked())
        self.refreshes.refreshed()
        if self.refreshes.count == 1:
            self.update_buttons()
        self._shown = refresh.prediction
        estimate = refresh.prediction.estimate
        if estimate is not None and refresh.prediction.box == Box.full(layer.data.shape):
            self.status_panel.add_estimate(estimate.dice)
        self.prediction_shown.emit(refresh)

    def _on_error(self, exc: BaseException) -> None:
        show_error(f"sparseseg: training stopped: {exc}")
        self.status_panel.say(f"error: {exc}")

    def _on_finished(self) -> None:
        if self._closed:
            return
        self.files.checkpoint()
        self.files.run_ended()
        if self.session is None:  # stopped while the model was built, or failed: what it was to open waits
            self.files.not_started()
        if self._stopped_because:
            self.status_panel.say(self._stopped_because)
        elif not self.status_panel.label.text().startswith("error"):
            steps = self.session.trainer.step if self.session is not None else 0  # its last step may be unseen
            self.status_panel.say(f"stopped at step {steps}")
        self.update_buttons()
        self.run_finished.emit()

    # -- status ------------------------------------------------------------------------
    def _update_status(self) -> None:
        if self._closed:
            return
        self.status_panel.tick(self.last_step, self._shown, self.run.running, self.refreshes.last, self.classes.names,
                               paused=self.run.paused, stopping=self.run.stopping, waiting=self._waiting)
        self.files.check_autosave()
        self.data_panel.show_bank(bank_words(self.features.held_for(self.image_layer, self.data_panel.channel_layers)))
        steps = self.last_step.step if self.last_step is not None else 0
        self.training_panel.progress.setValue(self.refreshes.progress(steps))

    def update_buttons(self) -> None:
        """Enable or disable the buttons for the current state (image chosen, training, paused, prediction)."""
        running = self.run.running
        can_start = self.image_layer is not None and self.data_panel.show_problem() is None
        self.training_panel.update_buttons(can_start, running, self.run.paused, self.run.stopping)
        self.data_panel.set_enabled(not running)
        self.class_panel.update_buttons(running)
        self.results_panel.update_buttons()
        self.volumes_panel.update_buttons(running)

    # ================================================================ teardown
    def close_session(self, timeout: float = 60.0) -> bool:
        """Stop the worker and wait for its thread; disconnect from the viewer (idempotent)."""
        if self._closed:
            return True
        self._closed = True
        ended = self.run.shutdown(timeout)
        self.files.close(ended)
        self.models.close()
        self.features.close()
        try:
            self._timer.stop()
        except RuntimeError:
            pass
        self.layers.close()
        self.data_panel.close()
        self.volumes_panel.close()
        try:
            self._wire_viewer(connect=False)
        except (RuntimeError, ValueError):
            pass
        self.stop_watching()
        return ended
