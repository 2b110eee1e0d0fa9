"""The label encodings: what the session, the store and the CLI hold, what is exported, what napari shows.

Three encodings exist and are never mixed:

*Annotation encoding* (what the user paints, the ``y`` of the paper):

====================  ============================================
value                 meaning
====================  ============================================
``0``                 unlabeled: weight 0, ignored by the loss
``1``                 background (painted)
``2 .. K+1``          foreground class ``1 .. K``
====================  ============================================

*Mask encoding* (what is exported and what ground-truth files hold, the
convention downstream tools expect): ``0`` = background, ``1 .. K`` = classes.

*Layer encoding* (the numbers a user sees and paints in napari, on the
annotation and the prediction layer alike): class ``k`` is ``k``, painted
background is :data:`LAYER_BACKGROUND` (255), ``0`` is unlabeled on the
annotation layer and predicted background (transparent) on the prediction
layer. One class, one number, in every layer the user paints on; the
conversion happens where the napari layer meets the session
(:func:`annotation_to_layer`, :func:`layer_to_annotation`).

A network with ``K`` foreground classes has ``K + 1`` output channels, channel
``c`` being mask class ``c``. So annotation value ``v > 0`` trains channel
``v - 1``.
"""

from __future__ import annotations

import numpy as np

UNLABELED: int = 0
BACKGROUND: int = 1
#: dtype of annotation arrays; 255 classes are more than any user paints.
ANNOTATION_DTYPE = np.uint8
#: dtype of exported class maps.
MASK_DTYPE = np.uint8
#: Painted background in the layer encoding (the last uint8 value, so class numbers never move).
LAYER_BACKGROUND: int = 255


def annotation_to_target(annotation: np.ndarray) -> np.ndarray:
    """Map annotation values to training targets.

    Parameters
    ----------
    annotation : np.ndarray
        Annotation-encoded labels, any shape.

    Returns
    -------
    np.ndarray
        int64 array of the same shape: class index ``v - 1`` where labeled,
        ``0`` where unlabeled (those voxels carry weight 0 and are ignored).
    """
    a = np.asarray(annotation).astype(np.int64)
    return np.where(a > UNLABELED, a - 1, 0)


def mask_to_annotation(mask: np.ndarray) -> np.ndarray:
    """Encode a dense mask (0 = background, 1..K = classes) as annotation.

    Every voxel becomes labeled: background -> 1, class k -> k + 1.
    """
    m = np.asarray(mask)
    if m.size and int(m.max()) >= np.iinfo(ANNOTATION_DTYPE).max:
        raise ValueError(f"mask holds class {int(m.max())}; at most 254 classes are supported")
    return (m.astype(np.int64) + 1).astype(ANNOTATION_DTYPE)


def annotation_to_mask(annotation: np.ndarray) -> np.ndarray:
    """Decode annotation to mask encoding; unlabeled voxels become background."""
    a = np.asarray(annotation).astype(np.int64)
    return np.where(a > UNLABELED, a - 1, 0).astype(MASK_DTYPE)


def merge_labels(predicted: np.ndarray, annotation: np.ndarray) -> np.ndarray:
    """Labels win over the prediction: ``predicted`` (``(z, y, x)`` mask encoding) with every labeled voxel of
    ``annotation`` (annotation encoding, same shape) replaced by its label; uint8 mask encoding.

    The one place that says what a user sees where they labeled: the session's merged result, the plugin's
    refreshes and exports, and blockwise prediction all use it.
    """
    annotation = np.asarray(annotation)
    return np.where(annotation > UNLABELED, annotation.astype(np.int64) - 1, predicted).astype(MASK_DTYPE)


def _table(pairs: dict[int, int]) -> np.ndarray:
    return np.array([pairs.get(v, 0) for v in range(256)], dtype=ANNOTATION_DTYPE)


#: Lookup tables (uint8 in, uint8 out: no wide temporaries on a whole volume).
_TO_LAYER = _table({BACKGROUND: LAYER_BACKGROUND, **{v: v - 1 for v in range(2, 256)}})
_TO_ANNOTATION = _table({LAYER_BACKGROUND: BACKGROUND, **{v: v + 1 for v in range(1, 255)}})


def annotation_to_layer(annotation: np.ndarray) -> np.ndarray:
    """Annotation encoding -> layer encoding: unlabeled 0, background :data:`LAYER_BACKGROUND`, class ``k`` ``k``."""
    return _TO_LAYER[np.asarray(annotation, dtype=ANNOTATION_DTYPE)]


def layer_to_annotation(values: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """Layer encoding -> annotation encoding: 0 unlabeled, :data:`LAYER_BACKGROUND` background, ``k`` class ``k``.

    With ``num_classes`` ``K``, values that are no class (above ``K`` and not background) become unlabeled.
    """
    table = _TO_ANNOTATION
    if num_classes is not None:
        table = table.copy()
        table[num_classes + 1:LAYER_BACKGROUND] = UNLABELED
    return table[np.asarray(values, dtype=ANNOTATION_DTYPE)]


def mask_to_layer(mask: np.ndarray) -> np.ndarray:
    """A dense mask (0 = background, 1..K) in layer encoding, every voxel labeled (as if painted)."""
    return annotation_to_layer(mask_to_annotation(mask))
