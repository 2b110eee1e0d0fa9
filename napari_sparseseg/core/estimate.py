"""How good is the mask shown? Its expected Dice under its own class probabilities, per class and overall.

No ground truth is needed: if the learner's probabilities were calibrated, the
truth would be drawn voxel by voxel with them, and the mask's Dice against it
would be close to ``2 sum(p m) / (sum(p) + sum(m))`` (``p`` the class
probability, ``m`` the mask of that class; the ratio of the expectations, exact
as the volume grows). Labeled voxels count with their labels (``p`` is 1 for
the painted class). On the shared volumes and the synthetic sample, for the
first responder's mask, this estimate's mean absolute error against the true
foreground Dice is 0.025 over 45 runs, against 0.163 for the Dice measured on
held-back labels (``BENCHMARKS.md``, ``benchmarks/estimators.py``): held-back
voxels lie in painted slices and strokes, the easy part of the volume.

A net's probabilities are not calibrated that way: trained with class weights,
it spreads foreground probability over the background even where its mask is
right (the estimate of a good blend fell to 0.37 against a true 0.93). So the
session scores whatever mask is shown under the first responder's
probabilities when it has them (:meth:`~.session.SegmentationSession.interactive`):
for the net's or the blend's mask that is the forest's opinion of it, which
undervalues where the net is right and the forest unsure.

Its interval covers two things. How much the estimate rests on a few slices:
resampling whole slices along the first axis. How far the probabilities are
from calibrated: an error of up to ``CALIBRATION_SHARE * (1 - estimate)``
either way, the share that covered 80 % of the errors over the 45 runs above
with the first responder's three stages (split conformal;
``benchmarks/estimators.py``, ``results/estimators_plane_max_features.txt``).
Computed from the other volumes only, an interval of that width held each
volume's true Dice in 33 of 45 runs: all runs on the sample and the tumour
MRI, 8 of 9 on the embryo nuclei, 6 of 9 on the plant nuclei, 1 of 9 on the
spleen CT, where the forest is the furthest from calibrated. The
interval widens as the estimate falls, where a mask is the least certain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .encoding import UNLABELED

#: Half-width of the interval for miscalibration, as a share of ``1 - estimate`` (see the module docstring).
CALIBRATION_SHARE = 0.404

#: A class expected on fewer unlabeled voxels than this, summed over the volume, is one the probabilities know
#: nothing of (a class added since the learner was fitted, or never learned: a learner fitted on labels of a class
#: gives it some probability somewhere); its mask would score 1.0 where it is labeled, so it gets no estimate.
UNKNOWN_CLASS_VOXELS = 0.5


@dataclass(frozen=True)
class DiceEstimate:
    """The expected Dice of a mask under its own probabilities.

    Attributes
    ----------
    dice : float
        Foreground (any class against background).
    interval : tuple of float
        ``(low, high)``: the 90 % slice-bootstrap interval of ``dice`` widened to at least
        ``dice -/+ CALIBRATION_SHARE * (1 - dice)`` (within ``[0, 1]``), which held the true Dice in about 80 % of
        the benchmark runs.
    per_class : tuple of float or None
        Per foreground class ``1..K``; None for a class neither predicted nor labeled, or one the probabilities
        know nothing of (:data:`UNKNOWN_CLASS_VOXELS`).
    """

    dice: float
    interval: tuple[float, float]
    per_class: tuple[float | None, ...]


def _slice_sums(p: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``(3, z)``: per slice along axis 0, the sums of ``p * m``, ``p`` and ``m``."""
    return np.stack([np.einsum("zyx,zyx->z", p, m, dtype=np.float64),
                     p.sum(axis=(1, 2), dtype=np.float64), m.sum(axis=(1, 2), dtype=np.float64)])


def _ratio(sums: np.ndarray) -> np.ndarray:
    both, p, m = sums
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(p + m > 0, 2 * both / (p + m), np.nan)


def expected_dice(probabilities: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None, *,
                  resamples: int = 200, level: float = 0.9, seed: int = 0) -> DiceEstimate | None:
    """Expected Dice of the mask shown (labels merged in) under ``probabilities``.

    Parameters
    ----------
    probabilities : np.ndarray
        float ``(K + 1, z, y, x)`` class probabilities of the whole volume: the truth is taken to be drawn from
        them on unlabeled voxels.
    labels : np.ndarray
        ``(z, y, x)`` labels in annotation encoding (0 unlabeled, 1 background, ``c + 1`` class ``c``).
    mask : np.ndarray, optional
        ``(z, y, x)`` class map shown (mask encoding); default: the class of highest probability. Another
        learner's mask is scored under these probabilities when they are the better calibrated.
    resamples, level, seed
        Slice-bootstrap resamples, the interval's coverage and the resampling seed.

    Returns
    -------
    DiceEstimate or None
        None where no foreground class has an estimate (none labeled or known to the probabilities: background
        alone painted, say): a Dice of nothing is no 0.

    Raises
    ------
    ValueError
        If the shapes disagree or there are fewer than two classes.
    """
    if probabilities.ndim != 4 or probabilities.shape[1:] != labels.shape or probabilities.shape[0] < 2:
        raise ValueError(f"probabilities (K + 1, z, y, x) with K >= 1 and labels (z, y, x) must agree, got "
                         f"{probabilities.shape} and {labels.shape}")
    if mask is not None and mask.shape != labels.shape:
        raise ValueError(f"mask {mask.shape} and labels {labels.shape} must be the same shape")
    labeled = labels > UNLABELED
    label_class = labels.astype(np.int64) - 1
    mask = np.where(labeled, label_class, probabilities.argmax(0) if mask is None else mask)

    def truth_probability(c: int) -> np.ndarray:
        return np.where(labeled, (label_class == c).astype(np.float32), probabilities[c])

    fg = _slice_sums(1.0 - truth_probability(0), (mask > 0).astype(np.float32))
    per_class = []
    unlabeled = ~labeled
    for c in range(1, probabilities.shape[0]):
        if probabilities[c].sum(dtype=np.float64, where=unlabeled) < UNKNOWN_CLASS_VOXELS:  # (no copy per class)
            per_class.append(None)  # it knows nothing of the class (added since it learned): no estimate, not 1.0
            continue
        sums = _slice_sums(truth_probability(c), (mask == c).astype(np.float32))
        value = _ratio(sums.sum(axis=1))
        per_class.append(None if not np.isfinite(value) else float(value))
    if all(value is None for value in per_class):
        return None
    dice = _ratio(fg.sum(axis=1))
    n = fg.shape[1]
    draws = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)
    boot = _ratio(np.einsum("rz,sz->sr", draws, fg))
    boot = boot[np.isfinite(boot)]
    tail = (1.0 - level) / 2
    low, high = np.quantile(boot, [tail, 1.0 - tail]) if boot.size else (dice, dice)
    dice = float(dice) if np.isfinite(dice) else 0.0
    spread = CALIBRATION_SHARE * (1.0 - dice)
    low, high = max(0.0, min(float(low), dice - spread)), min(1.0, max(float(high), dice + spread))
    return DiceEstimate(dice, (low, high), tuple(per_class))
