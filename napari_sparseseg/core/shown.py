"""The mask the prediction layer would show, kept without a window: the interactive loop run for a budget.

The command line's ``train`` and ``resume`` run the plugin's loop
(:meth:`~.session.SegmentationSession.interactive`: the first responder answers
from the first seconds, the net trains and learns from it, the hand-over shows
whichever scores better on the held-back labels) and write what a user of the
window would see at the end of the budget, not the net's mask alone: on a
plain CPU the net needs minutes to catch up (``BENCHMARKS.md``), and a command
run for a minute would otherwise write the worse mask.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .box import Box
from .encoding import merge_labels
from .events import Prediction

if TYPE_CHECKING:
    from .display import Event
    from .estimate import DiceEstimate
    from .session import SegmentationSession


#: The longest :func:`run_shown` goes on past its budget waiting for the first whole mask (the first responder's
#: filter bank of a 25-million-voxel volume takes about 90 s on one core, ``BENCHMARKS.md``).
MAX_OVERTIME = 600.0


@dataclass
class ShownMask:
    """The session's own volume as the prediction layer shows it, from the loop's predictions.

    Attributes
    ----------
    labels : np.ndarray
        uint8 ``(z, y, x)`` class map (mask encoding) of the predictions shown, background where none came yet.
    covered : np.ndarray
        bool ``(z, y, x)``: voxels some prediction shown has covered.
    learner : {"net", "forest", "blend"} or None
        Who predicted the latest one shown (None: nothing shown yet).
    estimate : DiceEstimate or None
        Its expected Dice, as the window states it.
    scores : dict
        Each learner's latest Dice on the held-back labels.
    overtime : float
        Seconds :func:`run_shown` went on past its budget waiting for the first whole mask (0 when one was shown
        within the budget).
    """

    labels: np.ndarray
    covered: np.ndarray
    learner: str | None = None
    estimate: DiceEstimate | None = None
    scores: dict[str, float] = field(default_factory=dict)
    overtime: float = 0.0

    @classmethod
    def empty(cls, shape: tuple[int, int, int]) -> ShownMask:
        """Nothing shown yet over a volume of ``shape``."""
        return cls(np.zeros(shape, np.uint8), np.zeros(shape, bool))

    def update(self, prediction: Prediction) -> None:
        """Show ``prediction`` (a prediction of another training volume is not shown here)."""
        if prediction.volume:
            return
        self.labels[prediction.box.slices] = prediction.labels
        self.covered[prediction.box.slices] = True
        self.learner, self.estimate, self.scores = prediction.learner, prediction.estimate, dict(prediction.scores)

    @property
    def whole(self) -> bool:
        """Whether every voxel has been shown."""
        return bool(self.covered.all())

    @property
    def written(self) -> str:
        """Whose mask :func:`final_mask` writes: the learner shown, or ``"net"`` where the net is shown or nothing
        covered the whole volume yet."""
        return "net" if self.learner in (None, "net") or not self.whole else self.learner


def run_shown(session: SegmentationSession, seconds: float,
              on_event: Callable[[Event, ShownMask, float], None] | None = None,
              clock: Callable[[], float] = time.perf_counter) -> ShownMask:
    """Run the session's interactive loop for ``seconds`` of wall-clock time; what it would show at the end.

    Parameters
    ----------
    session : SegmentationSession
        The session (its store, if bound, is kept up to date by the loop).
    seconds : float
        Wall-clock budget, everything counted (the first responder's filter bank, fits, training, predictions).
        The loop goes on past it until a mask covers the whole volume (the first responder's whole answer, or the
        net's first prediction of the volume where there is no first responder): a budget of a few seconds writes a
        mask of some use, not an untrained net's (:attr:`ShownMask.overtime` says by how much), at most
        :data:`MAX_OVERTIME` seconds, and not at all without labels.
    on_event : callable, optional
        ``on_event(event, shown, elapsed_seconds)`` after each event (a progress bar, messages).
    clock : callable
        Seconds on a monotonic clock (the tests give one of their own).

    Returns
    -------
    ShownMask
        What the prediction layer would show. A ``KeyboardInterrupt`` propagates; the loop is closed first.
    """
    if not seconds > 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    shown = ShownMask.empty(session.volume.shape)
    t0 = clock()
    def should_stop() -> bool:
        elapsed = clock() - t0
        return elapsed >= seconds and (shown.whole or elapsed >= seconds + MAX_OVERTIME
                                       or not session.volume.n_labeled)

    events = session.interactive(should_stop=should_stop)
    whole_at = None  # seconds into the run when the whole volume was first shown
    try:
        for event in events:
            if isinstance(event, Prediction):
                shown.update(event)
                if whole_at is None and shown.whole:
                    whole_at = clock() - t0
            if on_event is not None:
                on_event(event, shown, clock() - t0)
    finally:
        events.close()
    shown.overtime = max(0.0, (clock() - t0 if whole_at is None else whole_at) - seconds)
    return shown


def final_mask(session: SegmentationSession, shown: ShownMask) -> np.ndarray:
    """The dense mask to write (labels kept where painted): the first responder's or the blend's as shown; the
    net's final, mirrored prediction (:meth:`~.session.SegmentationSession.segment`) where the net is shown or
    nothing covered the whole volume yet."""
    if shown.written == "net":
        return session.segment()
    return merge_labels(shown.labels, session.volume.labels[Box.full(shown.labels.shape).slices])  # sparse too
