"""Partial-label loss: cross-entropy and soft Dice weighted by ``w(y)``.

Unlabeled voxels carry ``w = 0``: they contribute neither to the loss nor to
any gradient, and a batch with no labeled voxel has loss exactly 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-6


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``sum(w * CE) / max(sum(w), eps)``.

    Parameters
    ----------
    logits : torch.Tensor
        ``(B, C, Z, Y, X)`` raw scores.
    target : torch.Tensor
        int64 ``(B, Z, Y, X)`` class indices (any value where ``w = 0``).
    weight : torch.Tensor
        float ``(B, Z, Y, X)`` voxel weights, ``0`` on unlabeled voxels.
    """
    ce = F.cross_entropy(logits.float(), target, reduction="none")
    # where() (not a product) so that inf/nan logits on unlabeled voxels cannot leak in.
    ce = torch.where(weight > 0, ce, torch.zeros_like(ce))
    return (weight * ce).sum() / weight.sum().clamp_min(EPS)


def labeled_soft_dice(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                      smooth: float = 1e-5) -> torch.Tensor:
    """``1 - mean soft Dice`` of the foreground classes over labeled voxels only.

    Dice is computed over the whole batch (nnU-Net's batch Dice), so a patch
    that holds no foreground does not produce a degenerate per-sample score.
    Returns 0 when nothing is labeled.
    """
    num_classes = logits.shape[1]
    if num_classes < 2:
        return logits.sum() * 0.0
    mask = (weight > 0).unsqueeze(1).float()
    probs = torch.softmax(logits.float(), dim=1) * mask
    onehot = F.one_hot(target.clamp(0, num_classes - 1), num_classes).movedim(-1, 1).float() * mask
    dims = (0, 2, 3, 4)
    tp = (probs * onehot).sum(dims)[1:]
    fp = (probs * (1 - onehot)).sum(dims)[1:]
    fn = ((1 - probs) * onehot).sum(dims)[1:]
    dice = (2 * tp + smooth) / (2 * tp + fp + fn + smooth)
    return 1.0 - dice.mean()


def partial_label_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                       dice_weight: float = 1.0) -> torch.Tensor:
    """Weighted cross-entropy plus ``dice_weight`` x labeled soft Dice."""
    loss = weighted_cross_entropy(logits, target, weight)
    if dice_weight > 0:
        loss = loss + dice_weight * labeled_soft_dice(logits, target, weight)
    return loss
