"""When each part of the training signal acts: the learning rate and the weights of the extra loss terms.

Pure functions of the step, the run's progress and what the labels look like;
no torch. The reasons for the values are in ``docs/decisions.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import require

#: In a budgeted run the rate decays (poly 0.9) towards this share of the peak at the end of the budget.
LR_FLOOR = 0.3


def learning_rate(peak: float, step: int, warmup_steps: int, progress: float | None) -> float:
    """Linear warm-up over ``warmup_steps``, then constant (``progress`` None) or poly decay to :data:`LR_FLOOR`.

    Parameters
    ----------
    peak : float
        The rate after warm-up.
    step : int
        Steps already made (the rate is for step ``step + 1``).
    warmup_steps : int
        Length of the linear warm-up.
    progress : float or None
        Share of a budgeted run done, in [0, 1]; None for open-ended (interactive) training.
    """
    rate = peak * min(1.0, (step + 1) / max(warmup_steps, 1))
    if progress is not None:
        rate *= max(1.0 - progress, LR_FLOOR) ** 0.9
    return rate


@dataclass(frozen=True)
class LossSchedule:
    """Weights of the loss terms added to the weighted cross-entropy, and when they act.

    Attributes
    ----------
    dice : float
        Soft Dice over the labeled voxels (:func:`~.loss.partial_label_loss`); 0 turns it off.
    smoothness : float
        Contrast-sensitive Potts term over every voxel (:func:`~.loss.contrast_smoothness`), times one minus the
        labels' plane coverage: it acts on brush strokes, whose object boundaries nobody labeled, and not on whole
        slices. Ramped in over ``smoothness_ramp_steps``: from random weights the cheapest smooth answer is one
        class everywhere. 0 turns it off.
    smoothness_ramp_steps : int
        Steps over which the smoothness term ramps in linearly.
    hardest : float
        Mean cross-entropy of the hardest tenth of the labeled voxels (:func:`~.loss.hardest_cross_entropy`),
        ramped in as the running share of misclassified labeled voxels goes through ``hardest_ramp``, from step
        ``hardest_from_step`` on: off while the net fits its labels but for boundary voxels (where it would only
        overfit them), on while it contradicts a whole labeled region. 0 turns it off.
    hardest_ramp : tuple of float
        Labeled error rates at which the hardest-voxel term starts and reaches full weight.
    hardest_from_step : int
        An untrained net contradicts a third of its labels: the term waits this many steps.
    """

    dice: float = 1.0
    smoothness: float = 10.0
    smoothness_ramp_steps: int = 200
    hardest: float = 1.0
    hardest_ramp: tuple[float, float] = (0.02, 0.04)
    hardest_from_step: int = 200

    def __post_init__(self) -> None:
        for name in ("dice", "smoothness", "hardest", "smoothness_ramp_steps", "hardest_from_step"):
            require(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        lo, hi = self.hardest_ramp
        require(0 <= lo < hi <= 1, f"hardest_ramp must be 0 <= start < end <= 1, got {self.hardest_ramp}")

    def smoothness_at(self, step: int, plane_coverage: float) -> float:
        """Weight of the smoothness term at ``step`` for labels of this plane coverage (0: strokes, 1: slices)."""
        if not self.smoothness:
            return 0.0
        ramp = min(1.0, step / self.smoothness_ramp_steps) if self.smoothness_ramp_steps else 1.0
        return self.smoothness * (1.0 - plane_coverage) * ramp

    def hardest_at(self, step: int, fit_error_rate: float | None) -> float:
        """Weight of the hardest-voxel term at ``step`` given the running labeled error rate (None: unknown)."""
        if not self.hardest or fit_error_rate is None or step < self.hardest_from_step:
            return 0.0
        lo, hi = self.hardest_ramp
        return self.hardest * min(max((fit_error_rate - lo) / (hi - lo), 0.0), 1.0)
