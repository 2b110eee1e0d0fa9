"""Which prediction the user sees: the first responder's, the net's or their blend, scored on held-back labels.

Every learner is scored on the same held-back labels (:mod:`.holdout`), which
none of them trained on, with :func:`held_back_dice`. :class:`HandOver` keeps
the learner shown until another one scores at least ``margin`` higher, so the
mask does not flicker between two learners that are level, and never changes
to one that scores lower on the labels it was just measured on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Learner = Literal["forest", "net", "blend"]
LEARNERS: tuple[str, ...] = ("forest", "net", "blend")


def held_back_dice(truth: np.ndarray, predicted: np.ndarray, num_classes: int) -> float | None:
    """Mean Dice over the foreground classes present in ``truth``, on held-back voxels.

    Parameters
    ----------
    truth, predicted : np.ndarray
        int ``(n,)`` class indices ``0..K`` of the held-back labeled voxels, and a learner's prediction there.
    num_classes : int
        ``K + 1`` (background included).

    Returns
    -------
    float or None
        ``None`` when no foreground class is held back; then the share of voxels predicted right, when any are.
    """
    if truth.size == 0:
        return None
    dice = []
    for c in range(1, num_classes):
        t, p = truth == c, predicted == c
        n = int(t.sum())
        if n:
            dice.append(2.0 * np.count_nonzero(t & p) / (n + int(p.sum())))
    if not dice:
        return float(np.mean(truth == predicted))
    return float(np.mean(dice))


def held_back_interval(truth: np.ndarray, predicted: np.ndarray, num_classes: int, groups: np.ndarray, *,
                       level: float = 0.9, resamples: int = 200, seed: int = 0) -> tuple[float, float] | None:
    """How far :func:`held_back_dice` could be off: a block bootstrap interval.

    The held-back voxels come in spatial blocks (:mod:`.holdout`), and voxels of one block err together, so the
    blocks, not the voxels, are resampled with replacement; the Dice of each resample gives the interval.

    Parameters
    ----------
    truth, predicted : np.ndarray
        int ``(n,)`` class indices of the held-back voxels and a learner's prediction there.
    num_classes : int
        ``K + 1``.
    groups : np.ndarray
        ``(n,)`` the block each voxel belongs to (any hashable integer code).
    level : float
        Coverage of the interval.

    Returns
    -------
    tuple of float or None
        ``(low, high)``; None when nothing is held back.
    """
    if truth.size == 0:
        return None
    _, block = np.unique(groups, return_inverse=True)
    n = int(block.max()) + 1
    draws = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)
    per_class = []
    for c in range(1, num_classes):
        t, p = truth == c, predicted == c
        if not t.any():
            continue
        tp = draws @ np.bincount(block, weights=t & p, minlength=n)
        size = draws @ np.bincount(block, weights=t, minlength=n) + draws @ np.bincount(block, weights=p, minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_class.append(np.where(size > 0, 2 * tp / size, np.nan))
    if per_class:
        samples = np.nanmean(np.stack(per_class), axis=0) if len(per_class) > 1 else per_class[0]
    else:
        samples = (draws @ np.bincount(block, weights=truth == predicted, minlength=n)) / (draws @ np.bincount(
            block, minlength=n))
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return None
    tail = (1.0 - level) / 2
    low, high = np.quantile(samples, [tail, 1.0 - tail])
    return float(low), float(high)


def blend(forest: np.ndarray, net: np.ndarray) -> np.ndarray:
    """Mean of two learners' class probabilities (same shape, class axis anywhere)."""
    return 0.5 * (forest + net)


@dataclass
class HandOver:
    """Chooses the learner shown, with hysteresis.

    Parameters
    ----------
    margin : float
        How much higher (Dice on the held-back labels) a learner must score than the one shown to replace it.

    Attributes
    ----------
    shown : str or None
        The learner whose prediction is shown (``None`` before any was scored or shown).
    scores : dict
        Latest held-back score per learner.
    intervals : dict
        Latest ``(low, high)`` interval of each learner's score (:func:`held_back_interval`).
    """

    margin: float = 0.005
    shown: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)

    def offer(self, learner: str) -> str:
        """A learner has a prediction but no score yet (nothing labeled is held back): shown only if none is."""
        if self.shown is None:
            self.shown = learner
        return self.shown

    def update(self, scores: dict[str, float | None],
               intervals: dict[str, tuple[float, float] | None] | None = None) -> str | None:
        """Record new scores (``None`` entries are ignored), and their intervals, and return the learner to show."""
        for name, value in scores.items():
            if name not in LEARNERS:
                raise ValueError(f"unknown learner {name!r}; expected one of {LEARNERS}")
            if value is not None:
                self.scores[name] = float(value)
        for name, interval in (intervals or {}).items():
            if interval is not None:
                self.intervals[name] = interval
        if not self.scores:
            return self.shown
        best = max(self.scores, key=lambda name: (self.scores[name], name == self.shown))
        current = self.scores.get(self.shown) if self.shown is not None else None
        if current is None or self.scores[best] >= current + self.margin:
            self.shown = best
        return self.shown
