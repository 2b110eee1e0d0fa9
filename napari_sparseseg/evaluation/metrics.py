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


def object_scores(truth: np.ndarray, predicted: np.ndarray, iou: float = 0.5) -> dict[str, float | int]:
    """Object-level agreement of two instance maps (0 = background).

    Parameters
    ----------
    truth, predicted : np.ndarray
        ``(z, y, x)`` integer instance ids.
    iou : float
        A predicted object matches a true one when their intersection over union exceeds this (at 0.5 or more a
        match is unique).

    Returns
    -------
    dict
        ``f1``, ``precision``, ``recall`` of the matched objects; ``n_true``, ``n_predicted``; ``merged``: true
        objects that share the predicted object holding most of them with another true object (beyond the first
        of each such group); ``split``: predicted objects beyond the first whose majority lies in the same true
        object.
    """
    if truth.shape != predicted.shape:
        raise ValueError(f"shapes differ: {truth.shape} and {predicted.shape}")
    if not 0.5 <= iou < 1:
        raise ValueError(f"iou must be in [0.5, 1) so that matches are unique; got {iou}")
    t = np.asarray(truth).ravel().astype(np.int64)
    p = np.asarray(predicted).ravel().astype(np.int64)
    t_ids, t_inv = np.unique(t, return_inverse=True)
    p_ids, p_inv = np.unique(p, return_inverse=True)
    pairs, overlap = np.unique(t_inv * p_ids.size + p_inv, return_counts=True)
    ti, pi = pairs // p_ids.size, pairs % p_ids.size
    t_size, p_size = np.bincount(t_inv), np.bincount(p_inv)
    fg = (t_ids[ti] > 0) & (p_ids[pi] > 0)
    ti, pi, overlap = ti[fg], pi[fg], overlap[fg]
    matched = int((overlap / (t_size[ti] + p_size[pi] - overlap) > iou).sum())
    n_true, n_pred = int((t_ids > 0).sum()), int((p_ids > 0).sum())
    precision = matched / n_pred if n_pred else 0.0
    recall = matched / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0

    def beyond_first(owner: np.ndarray, member: np.ndarray, share: np.ndarray) -> int:
        """Members whose majority owner is shared with another member, less one per shared owner."""
        best = {}
        for o, m, s in zip(owner, member, share):
            if s > 0.5 and (m not in best or s > best[m][1]):
                best[m] = (o, s)
        owners = np.array([o for o, _ in best.values()], np.int64)
        if not owners.size:
            return 0
        _, counts = np.unique(owners, return_counts=True)
        return int((counts[counts > 1] - 1).sum())

    merged = beyond_first(pi, ti, overlap / t_size[ti])
    split = beyond_first(ti, pi, overlap / p_size[pi])
    return {"f1": f1, "precision": precision, "recall": recall, "n_true": n_true, "n_predicted": n_pred,
            "merged": merged, "split": split}
