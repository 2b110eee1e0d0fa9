"""Segmentation metrics from a (k+1)-class confusion matrix.

PA = sum_i p_ii / sum_ij p_ij; MPA = mean_i p_ii / sum_j p_ij;
MIoU = mean_i p_ii / (sum_j p_ij + sum_j p_ji - p_ii); Dice_i = 2 p_ii /
(sum_j p_ij + sum_j p_ji). Rows are the truth, columns the prediction.
Classes absent from both truth and prediction are left out of the means.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(truth: np.ndarray, pred: np.ndarray, num_classes: int,
                     mask: np.ndarray | None = None) -> np.ndarray:
    """``(n, n)`` int64 counts; ``mask`` restricts to a subset of voxels."""
    if truth.shape != pred.shape:
        raise ValueError(f"truth {truth.shape} and prediction {pred.shape} differ in shape")
    t = truth.ravel().astype(np.int64)
    p = pred.ravel().astype(np.int64)
    if mask is not None:
        m = mask.ravel().astype(bool)
        t, p = t[m], p[m]
    if t.size and (t.max() >= num_classes or p.max() >= num_classes or min(t.min(), p.min()) < 0):
        raise ValueError(f"class values must lie in 0..{num_classes - 1}")
    return np.bincount(t * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.full(a.shape, np.nan)
    np.divide(a, b, out=out, where=b > 0)
    return out


def scores(cm: np.ndarray) -> dict[str, float | list[float]]:
    """PA, MPA, MIoU, per-class IoU and Dice, and foreground Dice from ``cm``."""
    cm = cm.astype(np.float64)
    diag = np.diag(cm)
    rows, cols = cm.sum(1), cm.sum(0)
    iou = _safe_div(diag, rows + cols - diag)
    dice = _safe_div(2 * diag, rows + cols)
    acc = _safe_div(diag, rows)
    fg_tp = cm[1:, 1:].sum()
    fg_truth, fg_pred = cm[1:, :].sum(), cm[:, 1:].sum()
    dice_fg = 2 * fg_tp / (fg_truth + fg_pred) if fg_truth + fg_pred > 0 else float("nan")
    return {
        "pa": float(diag.sum() / cm.sum()) if cm.sum() else float("nan"),
        "mpa": float(np.nanmean(acc)) if np.isfinite(acc).any() else float("nan"),
        "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        "iou": [float(v) for v in iou],
        "dice": [float(v) for v in dice],
        "dice_fg": float(dice_fg),
    }


def evaluate_masks(truth: np.ndarray, pred: np.ndarray, num_classes: int,
                   mask: np.ndarray | None = None) -> dict[str, float | list[float]]:
    """Scores of ``pred`` against ``truth`` (mask encoding, ``num_classes`` incl. background)."""
    return scores(confusion_matrix(truth, pred, num_classes, mask))
