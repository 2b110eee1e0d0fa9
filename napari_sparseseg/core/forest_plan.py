"""What the first responder's forests read and how they split, chosen from how the labels fill their planes.

Whole painted slices mark object boundaries and hold about the volume's class
shares; brush strokes sit inside objects and in far background. The same
forest settings do not serve both (``benchmarks/autocontext.py``, three seeds,
docs/decisions.md), so two settings follow the labels' plane coverage
(``AnnotatedVolume.plane_coverage``: whole slices 1, strokes about 0.05):

- the local contrast columns of the stack (:mod:`.features`) are read only from
  whole planes: fitted on them the forests read objects far from the planes by
  them; fitted on strokes they lost up to 0.03 Dice;
- each split draws from a third of the columns from whole planes, from their
  square root (scikit-learn's default) from strokes: on one-voxel lines
  painted on one slice the square root rarely offers a split the few
  informative columns (a third: +0.06 Dice; the spleen CT +0.03, the sample
  +0.007, within -0.002 elsewhere); from strokes, half of the columns cost
  the embryo nuclei 0.024 and a serial-section stack 0.07.
"""

from __future__ import annotations

import numpy as np

from .features import feature_names

__all__ = ["CONTRAST_MIN_COVERAGE", "PLANE_MAX_FEATURES", "WIDE_SPLITS_MIN_COVERAGE", "columns_for",
           "max_features_for"]

#: Labels of at least this plane coverage let the forests read the local contrast columns.
CONTRAST_MIN_COVERAGE = 0.5
#: Labels of at least this plane coverage have each split draw from :data:`PLANE_MAX_FEATURES` of the columns.
WIDE_SPLITS_MIN_COVERAGE = 0.5
#: Share of the columns each split draws from, from labels filling their planes.
PLANE_MAX_FEATURES = 0.33


def columns_for(coverage: float, image_channels: int) -> np.ndarray | None:
    """The stack's columns to fit on (None: all of them, contrast columns included).

    Parameters
    ----------
    coverage : float
        The labels' plane coverage, in ``[0, 1]``.
    image_channels : int
        Channels of the image: the stack holds a bank (and its contrast columns) per channel.
    """
    if coverage >= CONTRAST_MIN_COVERAGE:
        return None
    per_channel, bank = len(feature_names(contrast=True)), len(feature_names())
    return np.concatenate([np.arange(c * per_channel, c * per_channel + bank) for c in range(image_channels)])


def max_features_for(coverage: float) -> float | str:
    """scikit-learn's ``max_features`` of the forests fitted on labels of this plane coverage."""
    return PLANE_MAX_FEATURES if coverage >= WIDE_SPLITS_MIN_COVERAGE else "sqrt"
