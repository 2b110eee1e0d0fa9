"""A classifier fitted on brush strokes, moved from the strokes' class shares towards the volume's.

A user paints objects more densely than the volume holds them: from the
simulated strokes (``evaluation.protocols``, ``scribble:3``) the foreground
was 15-34 % of the labels of the shared volumes and the synthetic sample for
2-23 % of their voxels (thin tubes: 6 % for 0.4 %), while whole slices hold
about the volume's shares. A classifier fitted on a class-stratified sample of
the labels learns the labels' shares as its prior and, where strokes leave the
object edges unlabeled, grows the foreground past them (the first responder's
precision 0.76-0.79 at recall 0.94 on the nuclei volumes;
``benchmarks/stroke_shares.py``).

The volume's own shares are estimated from the classifier's answers on the
volume by the EM of Saerens, Latinne & Decaestecker (2002, "Adjusting the
outputs of a classifier to new a priori probabilities"): reweight each answer
by the ratio of the current estimate to the training shares, take the mean
reweighted answer as the new estimate, repeat. Each class's probability is
then multiplied by that ratio raised to ``tau`` (:func:`shift_for`: a share of
the way, less the more the labels fill their planes; whole slices are left
as they are) and renormalised. Measured on the user's own volume, not a
constant share: ``benchmarks/autocontext.py``, docs/decisions.md.

Axes: probabilities are ``(n, k)`` rows, one column per class the classifier
knows (its ``classes_``; a class never labeled has no column).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

__all__ = ["MAX_RATIO", "PRIOR_SAMPLE", "Classifier", "ShiftedClassifier", "shift_for", "volume_prior"]

#: Voxels of the volume (drawn at random) the class shares are estimated from.
PRIOR_SAMPLE = 50_000
#: Bound on a class's estimated share over its training share (and the reverse): EM's fixed point puts a class the
#: answers never favour at a share of 0 (an infinite shift). A guard, not a tuned value: on the shared volumes the
#: ratios ran from 0.01 (a tumour class) to 1.5 (``benchmarks/stroke_shares.py``).
MAX_RATIO = 1000.0


class Classifier(Protocol):
    """A fitted scikit-learn classifier."""

    classes_: np.ndarray

    def predict_proba(self, rows: np.ndarray) -> np.ndarray: ...


def shift_for(strength: float, plane_coverage: float) -> float:
    """The exponent ``tau`` of the shift for labels of this plane coverage.

    Parameters
    ----------
    strength : float
        ``ResponderConfig.prior_shift``: ``tau`` for labels that fill none of their planes.
    plane_coverage : float
        ``AnnotatedVolume.plane_coverage`` of the labels, in ``[0, 1]`` (whole slices 1, strokes about 0.05-0.15).

    Returns
    -------
    float
        ``strength * (1 - plane_coverage)``: 0 for whole slices, whose class shares are the volume's.
    """
    return float(strength) * (1.0 - min(max(float(plane_coverage), 0.0), 1.0))


def volume_prior(probabilities: np.ndarray, train_prior: np.ndarray, *, max_iter: int = 100,
                 tol: float = 1e-5) -> np.ndarray:
    """The class shares of the voxels the answers ``probabilities`` were given on, by EM (Saerens et al. 2002).

    Parameters
    ----------
    probabilities : np.ndarray
        ``(n, k)`` answers of a classifier on ``n`` voxels (rows summing to 1).
    train_prior : np.ndarray
        ``(k,)`` class shares of the samples it was fitted on (all positive).
    max_iter, tol : int, float
        At most this many EM steps; stop once no share moves more than ``tol``.

    Returns
    -------
    np.ndarray
        float64 ``(k,)`` estimated class shares (summing to 1).
    """
    p = np.asarray(probabilities, dtype=np.float64)
    train = np.asarray(train_prior, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != train.shape[0]:
        raise ValueError(f"probabilities must be (n, {train.shape[0]}), got shape {p.shape}")
    if np.any(train <= 0):
        raise ValueError(f"training class shares must be positive, got {train}")
    prior = train.copy()
    for _ in range(max_iter):
        q = p * (prior / train)
        q /= np.maximum(q.sum(axis=1, keepdims=True), 1e-12)
        new = q.mean(axis=0)
        done = np.abs(new - prior).max() < tol
        prior = new
        if done:
            break
    return prior / prior.sum()


class ShiftedClassifier:
    """A fitted classifier whose probabilities are multiplied by fixed class weights and renormalised.

    Parameters
    ----------
    classifier : Classifier
        Fitted; has ``classes_`` and ``predict_proba``.
    weights : np.ndarray
        ``(k,)`` positive weights, one per column of ``predict_proba`` (``(prior / train_prior) ** tau``).
    """

    def __init__(self, classifier: Classifier, weights: np.ndarray) -> None:
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != (len(classifier.classes_),) or np.any(~np.isfinite(weights)) or np.any(weights <= 0):
            raise ValueError(f"need {len(classifier.classes_)} positive finite weights, got {weights}")
        self.classifier, self.weights = classifier, weights
        self.classes_ = classifier.classes_
        self.n_features_in_ = getattr(classifier, "n_features_in_", None)

    @classmethod
    def fit_to(cls, classifier: Classifier, rows: np.ndarray, train_prior: np.ndarray,
               tau: float) -> ShiftedClassifier:
        """``classifier`` moved ``tau`` of the way (in log odds) from its training shares to the volume's.

        Parameters
        ----------
        classifier : Classifier
            Fitted.
        rows : np.ndarray
            ``(n, F)`` feature rows of voxels drawn at random from the volume: its answers there estimate the
            volume's class shares (:func:`volume_prior`).
        train_prior : np.ndarray
            ``(k,)`` class shares of the rows it was fitted on, in the order of ``classifier.classes_``.
        tau : float
            0 leaves it as it is, 1 moves it all the way.

        Returns
        -------
        ShiftedClassifier
            With weights ``(prior / train_prior) ** tau``, the ratio kept within ``[1 / MAX_RATIO, MAX_RATIO]``.
        """
        train = np.asarray(train_prior, np.float64)
        ratio = np.clip(volume_prior(classifier.predict_proba(rows), train) / train, 1.0 / MAX_RATIO, MAX_RATIO)
        return cls(classifier, ratio ** float(tau))

    def predict_proba(self, rows: np.ndarray) -> np.ndarray:
        """``(n, k)`` reweighted probabilities of ``(n, F)`` rows."""
        p = self.classifier.predict_proba(rows) * self.weights
        return p / np.maximum(p.sum(axis=1, keepdims=True), 1e-12)
