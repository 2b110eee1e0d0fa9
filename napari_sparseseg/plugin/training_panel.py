"""The Training box of the dock widget: device, model size, corrections, and Start / Pause / Stop.

It holds the choices a new session is built with (:meth:`TrainingPanel.session_config`) and the buttons; what
they do stays with the widget.
"""

from __future__ import annotations

from dataclasses import replace

from qtpy.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox, QHBoxLayout, QPushButton

from ..core.config import MODEL_SIZE_CHANNELS, SessionConfig, preset
from .plot import ProgressStrip

DEVICES = ("auto", "cpu", "cuda")


class TrainingPanel(QGroupBox):
    """The Training box.

    Parameters
    ----------
    base : SessionConfig
        The settings the widget was given: its model size, device and correction weight show.
    """

    def __init__(self, base: SessionConfig) -> None:
        super().__init__("Training")
        self.base = base
        form = QFormLayout(self)
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        self.device_combo.setCurrentText(base.device if base.device in DEVICES else "auto")
        self.size_combo = QComboBox()
        self.size_combo.addItems(list(MODEL_SIZE_CHANNELS))
        sizes = [s for s in MODEL_SIZE_CHANNELS if preset(s) == base.model]  # type: ignore[arg-type]
        if not sizes:
            self.size_combo.addItem("custom")
        self.size_combo.setCurrentText(sizes[0] if sizes else "custom")
        self.size_combo.setToolTip("small: 16 base channels (CPU); medium 24; large 32 (GPU)")
        self.weight_spin = QDoubleSpinBox()
        self.weight_spin.setDecimals(2)
        self.weight_spin.setRange(0.1, 50.0)
        self.weight_spin.setSingleStep(0.5)
        self.weight_spin.setValue(base.train.correction_weight)
        self.weight_spin.setToolTip("weight of voxels painted on the prediction layer, relative to painted ones")
        self.edge_check = QCheckBox("Corrections stop at edges")
        self.edge_check.setChecked(True)
        self.edge_check.setToolTip("a stroke on the prediction layer changes only the predicted region it begins "
                                   "on (or, begun on the class it paints, the first region it paints over); "
                                   "other regions under the brush keep their class")
        self.uncertainty_check = QCheckBox("show uncertainty layer")
        form.addRow("Device", self.device_combo)
        form.addRow("Model size", self.size_combo)
        form.addRow("Correction weight", self.weight_spin)
        form.addRow(self.edge_check)
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

    @property
    def correction_weight(self) -> float:
        """Weight of corrected voxels relative to painted ones, as set in the box."""
        return float(self.weight_spin.value())

    def session_config(self) -> SessionConfig:
        """The settings a new session would use: the base settings with this box's choices."""
        size = self.size_combo.currentText()
        model = self.base.model if size == "custom" else preset(size)  # type: ignore[arg-type]
        train = replace(self.base.train, correction_weight=self.correction_weight)
        return replace(self.base, model=model, train=train, device=self.device_combo.currentText())  # type: ignore[arg-type]

    def update_buttons(self, can_start: bool, running: bool, paused: bool, stopping: bool) -> None:
        """Enable what the state allows: Start (or Resume) with a usable image, no new settings while training."""
        self.start_button.setEnabled(can_start and (not running or paused))
        self.start_button.setText("Resume" if paused else "Start")
        self.pause_button.setEnabled(running and not stopping)
        self.pause_button.setText("Resume" if paused else "Pause")
        self.stop_button.setEnabled(running and not stopping)
        self.progress.setVisible(running and not paused)
        for w in (self.device_combo, self.size_combo):
            w.setEnabled(not running)
