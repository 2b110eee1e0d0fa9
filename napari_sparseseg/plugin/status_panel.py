"""The Status box of the dock widget: what the user sees now, in words, and how its estimated quality moved.

The first line says which learner's mask is shown and its estimated Dice
(per class when there are several); a small plot follows the estimate over the
refreshes. Steps, speed and the training loss are behind a details toggle.
Everything is redrawn by :meth:`StatusPanel.tick`, once a second: each change
of a label repaints the window.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from qtpy.QtWidgets import QCheckBox, QGroupBox, QLabel, QVBoxLayout

from ..core.events import Prediction, TrainStep
from .plot import Sparkline

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
            known = [f"{name} {value:.2f}" for name, value in zip(names, estimate.per_class) if value is not None]
            words += "; " + ", ".join(known) if known else ""
    return words


def set_text(label: QLabel, text: str) -> None:
    """Set a label's text only when it changes (each change repaints the window)."""
    if label.text() != text:
        label.setText(text)


#: The status before a session runs.
IDLE = "idle: paint a few slices, then Start"


class StatusPanel(QGroupBox):
    """The status line, the estimated-Dice plot, and behind a toggle the step, speed and loss."""

    def __init__(self) -> None:
        super().__init__("Status")
        col = QVBoxLayout(self)
        self.label = QLabel(IDLE)
        self.label.setWordWrap(True)
        self.rate_label = QLabel("")
        self.rate_label.setWordWrap(True)  # a long line would widen the dock and shrink the canvas
        self.quality_plot = Sparkline(log=False, tooltip="estimated Dice of the mask shown at each refresh (its "
                                      "expected Dice under the learner's own class probabilities, labels included)")
        self.sparkline = Sparkline()
        self.details_check = QCheckBox("details (steps, speed, training loss)")
        for part in (self.label, self.quality_plot, self.details_check, self.rate_label, self.sparkline):
            col.addWidget(part)
        self.details_check.toggled.connect(self.show_details)
        self.show_details(False)
        self._drawn_step = -1

    def show_details(self, on: bool) -> None:
        """Steps, speed and the loss curve are for the curious; the estimated Dice is for everyone."""
        self.rate_label.setVisible(on)
        self.sparkline.setVisible(on)

    def say(self, text: str) -> None:
        """Put ``text`` on the status line."""
        set_text(self.label, text)

    def add_step(self, event: TrainStep) -> None:
        """Record a training step's loss (drawn at the next :meth:`tick`)."""
        self.sparkline.append(event.tracked_loss, redraw=False)

    def forget(self) -> None:
        """The session was dropped: no estimate plot, loss curve, rates or status of it any more (:meth:`tick`
        redraws)."""
        self.quality_plot.clear()
        self.sparkline.clear()
        self._drawn_step = -1
        set_text(self.rate_label, "")
        self.say(IDLE)

    def add_estimate(self, dice: float) -> None:
        """Plot the estimated Dice of a whole-volume refresh."""
        self.quality_plot.append(dice)

    def tick(self, step: TrainStep | None, shown: Prediction | None, running: bool, last_refresh: float | None,
             class_names: Sequence[str] = (), *, paused: bool = False, stopping: bool = False,
             waiting: str | None = None) -> None:
        """Redraw for the latest step and the prediction on screen (``last_refresh``: its ``perf_counter`` time).

        While the run is ``paused`` or ``stopping`` the status says so (what is shown stays named after it), and no
        refresh clock counts up. While training ``waiting`` (its reason: no labels, say, after all were erased) the
        status says that, not the estimate of labels gone, and no step figures.
        """
        parts = []
        state = "paused: press Resume to train on" if paused else "stopping…" if stopping else ""
        if waiting and running and not state:
            self.say(waiting + ("   (the mask shown is of the labels before)" if shown is not None else ""))
            running = False  # no step figures of a run that does not step
        elif shown is not None and running:
            self.say(shown_in_words(shown, class_names) + (f"   ({state})" if state else ""))
        elif state and running:
            self.say(state)
        elif step is not None and running:
            self.say(f"step {step.step}   loss {step.tracked_loss:.4f}")
        running = running and not (paused or stopping)
        if step is not None and running:
            parts.append(f"step {step.step}")
            parts.append(f"{step.voxels_per_second / 1e6:.2f} Mvox/s")
            parts.append(f"training: {step.labeled_error_rate:.1%} of labels wrong")
        if last_refresh is not None and running:  # after Stop nothing is refreshed: no clock counting up
            parts.append(f"refreshed {time.perf_counter() - last_refresh:.0f} s ago")
        set_text(self.rate_label, "   ".join(parts))
        if step is not None and step.step != self._drawn_step:
            self._drawn_step = step.step
            self.sparkline.update()


class RefreshClock:
    """When predictions reached the screen: their count, the last one's time and the typical interval.

    Parameters
    ----------
    refresh_seconds : float
        The interval asked for between refreshes.
    first_refresh_steps : int
        Training steps before the first refresh.
    """

    def __init__(self, refresh_seconds: float, first_refresh_steps: int) -> None:
        self.refresh_seconds = float(refresh_seconds)
        self.first_refresh_steps = int(first_refresh_steps)
        self.count = 0
        #: ``time.perf_counter()`` of the latest refresh (None: none yet).
        self.last: float | None = None
        self._interval = float(refresh_seconds)

    def reset(self) -> None:
        """A new session: no refresh of it yet."""
        self.count, self.last, self._interval = 0, None, self.refresh_seconds

    def refreshed(self) -> None:
        """A prediction reached the screen now."""
        now = time.perf_counter()
        if self.last is not None:
            self._interval = 0.5 * self._interval + 0.5 * (now - self.last)
        self.last = now
        self.count += 1

    def progress(self, steps: int) -> float:
        """Fraction of the way to the next refresh: by training steps before the first, then by time."""
        if self.last is None:
            return min(0.99, steps / max(self.first_refresh_steps, 1))
        interval = max(self._interval, self.refresh_seconds)
        return min(0.99, (time.perf_counter() - self.last) / interval)
