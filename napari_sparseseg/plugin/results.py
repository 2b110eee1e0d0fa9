"""Turning predictions into labels and masks (pure array functions)."""

from __future__ import annotations

from typing import Literal

import numpy as np

from ..core.box import Box
from ..core.encoding import LAYER_BACKGROUND, annotation_to_mask, merge_labels

ExportKind = Literal["prediction", "annotation"]


def accepted_labels(annotation: np.ndarray, prediction: np.ndarray, predicted: np.ndarray,
                    box: Box) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """Voxels of ``box`` that take the predicted class as a label, and their values on the annotation layer.

    Only voxels that are unlabeled (0) and were predicted are taken;
    painted labels and corrections stay as they are.

    Parameters
    ----------
    annotation : np.ndarray
        ``(z, y, x)`` the annotation layer's data, layer encoding (0 = unlabeled).
    prediction : np.ndarray
        ``(z, y, x)`` mask encoding (0 = background, 1..K).
    predicted : np.ndarray
        bool ``(z, y, x)``: where a prediction has been shown.
    box : Box
        Region to accept.

    Returns
    -------
    coords : tuple of 3 int arrays
        ``(z, y, x)`` voxel coordinates.
    values : np.ndarray
        Layer values: the class, ``LAYER_BACKGROUND`` for background (dtype of ``annotation``).
    """
    sl = box.slices
    take = (np.asarray(annotation[sl]) == 0) & predicted[sl]
    local = np.nonzero(take)
    coords = tuple(c + o for c, o in zip(local, box.start))
    predicted_class = np.asarray(prediction[sl])[local]
    values = np.where(predicted_class == 0, LAYER_BACKGROUND, predicted_class).astype(annotation.dtype)
    return coords, values  # type: ignore[return-value]


def export_mask(kind: ExportKind, annotation: np.ndarray, prediction: np.ndarray | None) -> np.ndarray:
    """A plain mask (0 = background, 1..K) of the prediction or of the painted labels.

    ``"prediction"`` keeps the user's labels where painted (they win over the
    network); ``"annotation"`` maps unlabeled voxels to background.

    Raises
    ------
    ValueError
        For an unknown ``kind``, or ``"prediction"`` without a prediction.
    """
    ann = np.asarray(annotation)
    if kind == "annotation":
        return annotation_to_mask(ann)
    if kind != "prediction":
        raise ValueError(f"kind must be 'prediction' or 'annotation', got {kind!r}")
    if prediction is None:
        raise ValueError("no prediction yet: start training first")
    if prediction.shape != ann.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from annotation shape {ann.shape}")
    return merge_labels(np.asarray(prediction), ann)
