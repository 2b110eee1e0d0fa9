"""A class-stratified subsample of labeled voxels: what a pixel classifier is fitted on when there are too many."""

from __future__ import annotations

import numpy as np

__all__ = ["stratified_subsample"]


def stratified_subsample(y: np.ndarray, max_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Indices into ``y``: at most ``max_samples``, class proportions kept.

    Every class keeps at least ``min(count, max_samples // (10 * n_classes))``
    samples so that rare classes are not sampled away.
    """
    n = y.size
    if n <= max_samples:
        return np.arange(n)
    classes, counts = np.unique(y, return_counts=True)
    floor = max(1, max_samples // (10 * len(classes)))
    quota = np.maximum(np.floor(counts * (max_samples / n)).astype(np.int64), np.minimum(counts, floor))
    excess = int(quota.sum()) - max_samples
    if excess > 0:  # the floors of rare classes come out of the largest class
        quota[np.argmax(quota)] -= excess
    picks = []
    for c, q in zip(classes, quota):
        idx = np.flatnonzero(y == c)
        picks.append(rng.choice(idx, size=min(int(q), idx.size), replace=False))
    return np.sort(np.concatenate(picks))
