"""Typed events yielded by the compute generators (training and prediction)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from .box import Box
from .estimate import DiceEstimate
from .guidance import Region, SliceSuggestion


@dataclass(frozen=True)
class Waiting:
    """Nothing to train on yet (no labeled voxel)."""

    reason: str


@dataclass(frozen=True)
class Notice:
    """Something the user should know that did not stop the run (e.g. sizes shrunk after a GPU out-of-memory).

    Attributes
    ----------
    message : str
        One sentence for a notification.
    level : {"info", "warning"}
        How prominently to show it.
    """

    message: str
    level: Literal["info", "warning"] = "warning"


@dataclass(frozen=True)
class TrainStep:
    """One optimisation step finished.

    Attributes
    ----------
    step : int
        Steps run so far (1-based).
    loss : float
        Loss optimised at this step: :attr:`label_loss` plus the smoothness and
        hardest-voxel terms at their current weights (which ramp in and out).
    revision : int
        Annotation revision the step's batch was read from.
    elapsed : float
        Seconds of training so far (excludes prediction time).
    voxels_per_second : float
        Patch voxels processed per second, averaged over recent steps.
    learning_rate : float
        Learning rate used.
    labeled_error_rate : float
        Running mean over recent steps (``Trainer.fit_error_rate``) of the
        share of each batch's labeled voxels whose predicted class (of the
        training forward pass, on the augmented patch) contradicts the label.
    label_loss : float or None
        The label terms of :attr:`loss` alone (weighted cross-entropy and
        soft Dice): the part comparable from step to step (None: not given).
    """

    step: int
    loss: float
    revision: int
    elapsed: float
    voxels_per_second: float
    learning_rate: float
    labeled_error_rate: float = 0.0
    label_loss: float | None = None

    @property
    def tracked_loss(self) -> float:
        """The loss to compare between steps (shown, smoothed for the best checkpoint): :attr:`label_loss` when
        given, else :attr:`loss`."""
        return self.loss if self.label_loss is None else self.label_loss


@dataclass(frozen=True)
class Prediction:
    """Prediction of one box of the volume.

    Attributes
    ----------
    box : Box
        Region predicted, ``(z, y, x)``.
    labels : np.ndarray
        uint8 class map of the box, mask encoding (0 = background).
    probabilities : np.ndarray
        float32 ``(K + 1, z, y, x)`` softmax over classes.
    uncertainty : np.ndarray
        float32 ``(z, y, x)`` normalised entropy in ``[0, 1]``.
    step : int
        Training step of the net's weights (also for the first responder's predictions: the net's step then).
    revision : int
        Annotation revision at the time of prediction.
    learner : {"net", "forest", "blend"}
        Who predicted it: the 3D U-Net, the first responder (:mod:`~.first_responder`) or their blend.
    scores : dict
        The latest Dice of each learner on the held-back labels (:mod:`~.handover`); empty when none is scored.
    intervals : dict
        A 90 % block-bootstrap interval ``(low, high)`` of each of those scores.
    estimate : DiceEstimate or None
        The expected Dice of the whole mask shown, per class and overall (:mod:`~.estimate`): what to tell the
        user. Made from the latest whole-volume prediction shown (a prediction of the view carries it on); None
        before there was one.
    volume : int
        Which training volume it predicts: 0 the session's own, ``i`` its ``other_volumes[i - 1]`` (the net's
        alone, unscored).
    """

    box: Box
    labels: np.ndarray
    probabilities: np.ndarray
    uncertainty: np.ndarray
    step: int
    revision: int
    learner: str = "net"
    scores: dict[str, float] = field(default_factory=dict)
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    estimate: DiceEstimate | None = None
    volume: int = 0

    @property
    def score(self) -> float | None:
        """Dice of the learner shown on the held-back labels (None when not scored)."""
        return self.scores.get(self.learner)

    @property
    def interval(self) -> tuple[float, float] | None:
        """90 % interval of :attr:`score` (None when not scored)."""
        return self.intervals.get(self.learner)


@dataclass(frozen=True)
class Guidance:
    """Where to paint next, from the whole-volume prediction just shown (see :mod:`~.guidance`).

    Attributes
    ----------
    slices : tuple of SliceSuggestion
        Slices to paint, best first.
    errors : tuple of Region
        The largest uncertain regions, to check and correct.
    revision : int
        Annotation revision of the labels the suggestions avoid.
    """

    slices: tuple[SliceSuggestion, ...]
    errors: tuple[Region, ...]
    revision: int
