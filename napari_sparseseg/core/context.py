"""Context features: a first pixel classifier's probabilities, smoothed, as columns for a second (autocontext).

A pixel classifier sees each voxel's filter responses alone; its mistakes are
scattered specks and holes that its neighbours would correct. A second
classifier that also reads the first one's class probabilities averaged over a
neighbourhood (ilastik's autocontext) learns how likely a voxel is to belong
to a class *given what surrounds it*. Only smoothed maps are given, not the
probability at the voxel itself: on its own training voxels the first forest
is nearly certain, and a second stage offered that column learns to copy it
(``benchmarks/autocontext.py``: the unsmoothed column lowered the gain on four
of five volumes and halved it on the tumour MRI). The scales are physical, in
units of the finest voxel step, as in the filter bank (:mod:`.features`).

A later stage is kept only if it is about as certain as the one before on
unlabeled voxels (:func:`less_certain`): a stage that reads context it never
saw on the labels (strokes keep off object edges, where the smoothed maps lie
between 0 and 1) answers there less certainly, and did worse.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

__all__ = ["CONTEXT_SIGMAS", "STAGE_TOLERANCE", "context_columns", "context_features", "less_certain"]

#: Smoothing scales of the context maps, in units of the finest voxel step. Wider scales (20) helped large
#: structures more and cost up to 0.03 Dice on small nuclei from strokes (``benchmarks/autocontext.py``).
CONTEXT_SIGMAS: tuple[float, ...] = (3.5, 10.0)


#: A later stage whose mean uncertainty on unlabeled voxels exceeds the current one's by more than this share is not
#: kept. Three seeds, every shared volume, the sample and five synthetic shapes, z:1, z:3 and strokes
#: (``benchmarks/stage_certainty.py``, docs/decisions.md): no run did worse for it; the stroke stack +0.049, one-voxel
#: lines +0.022 (strokes) and +0.006 (one slice), an elongated volume +0.008. With no tolerance, noise in uncertainties
#: of 0.006 stopped a stage that helped the embryo nuclei by 0.025 (one seed).
STAGE_TOLERANCE = 0.05


def less_certain(current: np.ndarray, candidate: np.ndarray, tolerance: float = STAGE_TOLERANCE) -> bool:
    """Whether a candidate stage answers less certainly than the current one on the same unlabeled voxels.

    Parameters
    ----------
    current, candidate : np.ndarray
        ``(n, K + 1)`` class probabilities of the two stages at the same ``n`` voxels.
    tolerance : float
        Share by which the candidate's mean uncertainty ``1 - max_c p_c`` may exceed the current one's.

    Returns
    -------
    bool
        True when the candidate is less certain by more than ``tolerance`` (False when ``n`` is 0).
    """
    if len(current) == 0:
        return False
    now, new = (float(np.mean(1.0 - np.max(p, axis=1))) for p in (current, candidate))
    return new > now * (1.0 + tolerance)


def context_columns(num_classes: int, sigmas: Sequence[float] = CONTEXT_SIGMAS) -> int:
    """Number of context columns for ``num_classes`` foreground classes."""
    return int(num_classes) * len(sigmas)


def context_features(probabilities: np.ndarray, spacing: Sequence[float],
                     sigmas: Sequence[float] = CONTEXT_SIGMAS) -> np.ndarray:
    """The smoothed foreground probabilities of a first classifier, one column per class and scale.

    Parameters
    ----------
    probabilities : np.ndarray
        float32 ``(K + 1, z, y, x)`` class probabilities (background first).
    spacing : sequence of float
        Voxel size ``(z, y, x)``; the smoothing is isotropic in physical units.
    sigmas : sequence of float
        Scales in units of the finest voxel step.

    Returns
    -------
    np.ndarray
        float32 ``(z, y, x, K * len(sigmas))``, class-major: class 1 at every scale, then class 2, ...
    """
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 4 or probabilities.shape[0] < 2:
        raise ValueError(f"probabilities must be (K + 1, z, y, x) with K >= 1, got shape {probabilities.shape}")
    sp = np.asarray(spacing, dtype=np.float64)
    if sp.shape != (3,) or not np.all(sp > 0):
        raise ValueError(f"spacing must be 3 positive numbers, got {spacing!r}")
    rel = sp.min() / sp
    out = np.empty(probabilities.shape[1:] + (context_columns(probabilities.shape[0] - 1, sigmas),), np.float32)
    col = 0
    for p in probabilities[1:]:
        p = np.asarray(p, dtype=np.float32)
        for s in sigmas:
            out[..., col] = ndi.gaussian_filter(p, s * rel, mode="reflect", output=np.float32)
            col += 1
    return out
