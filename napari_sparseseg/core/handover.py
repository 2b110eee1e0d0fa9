"""Which prediction the user sees: the first responder's, the net's or their blend, scored on held-back labels.

Every learner is scored on the same held-back labels (:mod:`.holdout`), which
none of them trained on, with :func:`held_back_scores`. :class:`HandOver`
shows the first responder (its *home*) unless another learner leads it by
``margin`` on the held-back labels and on ``confidence`` (99 %) of their
shared block-bootstrap resamples, and returns to it as soon as it scores at
least as high as the learner shown. The test is strict because it is taken
at every refresh: held-back labels lie in painted slices and strokes, where
they rank the learners poorly, and a looser test (90 %) switched to a worse
learner on 3 of 45 recorded runs (``benchmarks/handover_replay.py``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Learner = Literal["forest", "net", "blend"]
LEARNERS: tuple[str, ...] = ("forest", "net", "blend")


@dataclass(frozen=True)
class HeldBackScore:
    """One learner's score on the held-back labels.

    Attributes
    ----------
    dice : float
        :func:`held_back_dice` of its prediction.
    interval : tuple of float
        90 % block-bootstrap interval ``(low, high)`` of ``dice``.
    samples : np.ndarray
        float ``(R,)`` the score on each bootstrap resample; learners scored together share the resamples, so
        their samples compare pairwise.
    """

    dice: float
    interval: tuple[float, float]
    samples: np.ndarray


def _dice(sums: list[tuple[np.ndarray, np.ndarray, np.ndarray]], weights: np.ndarray) -> np.ndarray:
    """Mean Dice over ``(truth, predicted, both)`` per-block sums, each weighted by ``weights`` ``(R, n)``."""
    values = []
    for t, p, tp in sums:
        size = weights @ (t + p)
        with np.errstate(invalid="ignore", divide="ignore"):
            values.append(np.where(size > 0, 2 * (weights @ tp) / size, np.nan))
    with warnings.catch_warnings():  # a resample without a class gives NaN there; all-NaN rows stay NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.stack(values), axis=0)


def held_back_scores(truth: np.ndarray, predicted: dict[str, np.ndarray], num_classes: int, groups: np.ndarray, *,
                     resamples: int = 200, level: float = 0.9, seed: int = 0) -> dict[str, HeldBackScore]:
    """Score learners on the held-back labels, with a block bootstrap shared by all of them.

    The score is the foreground Dice (any class against background) for one class; for several it is the mean
    of that and of the per-class Dice over the classes held back, so that a learner gains by finding the objects
    and by naming them. The held-back voxels come in spatial blocks (:mod:`.holdout`) and voxels of one block err
    together, so whole blocks are resampled with replacement.

    Parameters
    ----------
    truth : np.ndarray
        int ``(n,)`` class indices ``0..K`` of the held-back labeled voxels.
    predicted : dict
        Learner name to its int ``(n,)`` predicted classes there.
    num_classes : int
        ``K + 1`` (background included).
    groups : np.ndarray
        ``(n,)`` code of the block each voxel lies in.
    resamples, level, seed
        Bootstrap resamples, coverage of the interval and the resampling seed.

    Returns
    -------
    dict
        Learner name to :class:`HeldBackScore`; empty when nothing is held back, and when no foreground is:
        background alone cannot tell a learner that finds the objects from one that finds none (a net that
        predicted nothing yet scored 0.99 there against the first responder's 0.95, and replaced its mask).
    """
    if truth.size == 0 or not predicted or not np.any(truth > 0):
        return {}
    _, block = np.unique(groups, return_inverse=True)
    n = int(block.max()) + 1
    draws = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)
    weights = np.vstack([np.ones((1, n)), draws])  # row 0: the sample itself

    def sums(mask: np.ndarray) -> np.ndarray:
        return np.bincount(block, weights=mask, minlength=n)

    classes = [c for c in range(1, num_classes) if np.any(truth == c)]
    out = {}
    for name, pred in predicted.items():
        fg = [(sums(truth > 0), sums(pred > 0), sums((truth > 0) & (pred > 0)))]
        per_class = [(sums(truth == c), sums(pred == c), sums((truth == c) & (pred == c))) for c in classes]
        values = _dice(fg, weights) if num_classes == 2 else 0.5 * (_dice(fg, weights) + _dice(per_class, weights))
        boot = values[1:]
        boot = boot[np.isfinite(boot)]
        tail = (1.0 - level) / 2
        low, high = np.quantile(boot, [tail, 1.0 - tail]) if boot.size else (values[0], values[0])
        out[name] = HeldBackScore(float(values[0]), (float(low), float(high)), values[1:])
    return out


def held_back_dice(truth: np.ndarray, predicted: np.ndarray, num_classes: int) -> float | None:
    """The score of :func:`held_back_scores` without the bootstrap (None when nothing, or no foreground, is held
    back)."""
    scores = held_back_scores(truth, {"x": predicted}, num_classes, np.zeros(truth.size, np.int64), resamples=1)
    return scores["x"].dice if scores else None


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
    confidence : float
        Share of the shared bootstrap resamples on which it must score higher, too.
    home : str or None
        The learner shown unless another is shown to be better (the first responder): any other learner must
        win by ``margin`` with ``confidence`` to replace it, and it returns as soon as it scores at least as
        high as the learner shown. ``None`` treats every learner alike (a learner shown stays until another
        wins by the margin, with confidence).

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
    confidence: float = 0.99
    home: str | None = "forest"
    shown: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    _samples: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.margin < 1:
            raise ValueError(f"margin must be in [0, 1), got {self.margin}")
        if not 0.5 <= self.confidence <= 1:
            raise ValueError(f"confidence must be in [0.5, 1], got {self.confidence}")
        if self.home is not None and self.home not in LEARNERS:
            raise ValueError(f"unknown home learner {self.home!r}; expected one of {LEARNERS} or None")

    def forget(self, *learners: str) -> None:
        """Drop the scores of ``learners`` (their predictions are gone); one of them shown is shown no longer."""
        for name in learners:
            self.scores.pop(name, None)
            self.intervals.pop(name, None)
            self._samples.pop(name, None)
        if self.shown in learners:
            self.shown = None

    def unscored(self) -> None:
        """The held-back labels no longer rank the learners (they hold no foreground now: its strokes erased, or
        its class released from the held-back blocks as a new stroke fell mostly in them): drop every score, the
        learner shown stays (nothing shows another to be better; switching on a stroke would flicker) until
        scores come back."""
        self.scores.clear()
        self.intervals.clear()
        self._samples.clear()

    def offer(self, learner: str) -> str:
        """A learner has a prediction but no score yet (nothing labeled is held back): shown only if none is."""
        if self.shown is None:
            self.shown = learner
        return self.shown

    def update(self, scores: dict[str, HeldBackScore | float | None]) -> str | None:
        """Record new scores (``None`` entries are ignored) and return the learner to show now.

        A learner replaces the one shown when it scores at least ``margin`` higher and, where both were scored
        on the same bootstrap resamples (:class:`HeldBackScore`), higher on at least ``confidence`` of them: a
        lead the held-back labels cannot tell from chance does not change the mask. The ``home`` learner comes
        back without either, once it scores at least as high as the learner shown.
        """
        for name, value in scores.items():
            if name not in LEARNERS:
                raise ValueError(f"unknown learner {name!r}; expected one of {LEARNERS}")
            if value is None:
                continue
            if isinstance(value, HeldBackScore):
                self.scores[name], self.intervals[name] = value.dice, value.interval
                self._samples[name] = value.samples
            else:
                self.scores[name] = float(value)
                self._samples.pop(name, None)
        if not self.scores:
            return self.shown
        best = max(self.scores, key=lambda name: (self.scores[name], name == self.shown))
        current = self.scores.get(self.shown) if self.shown is not None else None
        if current is None:
            self.shown = best
            return self.shown
        home = self.scores.get(self.home) if self.home is not None else None
        if self.shown != self.home and home is not None and home >= current:
            self.shown, current = self.home, home  # the evidence that moved the display away from home is gone
        if best != self.shown and self.scores[best] >= current + self.margin and self._sure(best):
            self.shown = best
        return self.shown

    def _sure(self, challenger: str) -> bool:
        """Whether ``challenger`` beats the learner shown on ``confidence`` of their shared resamples."""
        mine, theirs = self._samples.get(self.shown), self._samples.get(challenger)
        if mine is None or theirs is None or mine.shape != theirs.shape or mine.size == 0:
            return True  # not scored together: the margin alone decides
        return float(np.mean(theirs > mine)) >= self.confidence
