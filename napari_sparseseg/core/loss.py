"""Partial-label loss: cross-entropy and soft Dice weighted by ``w(y)``, and two optional terms.

Unlabeled voxels carry ``w = 0``: they contribute nothing to the label terms
(cross-entropy, soft Dice, :func:`hardest_cross_entropy`) or their gradients,
and a batch with no labeled voxel has a label loss of exactly 0. The one term
that reads unlabeled voxels is :func:`contrast_smoothness`, which asks
neighbouring voxels of similar intensity to agree and never names a class;
the trainer weights it by how little of the object boundaries the labels mark
(brush strokes), and not at all for whole slices.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .inference import class_map

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


def hardest_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                          share: float = 0.1) -> torch.Tensor:
    """Mean cross-entropy of the ``share`` of labeled voxels the net gets most wrong (nnU-Net's TopK loss).

    A small labeled region the net keeps contradicting (a few hundred
    background voxels on a neighbouring organ among tens of thousands of
    labeled ones) weighs little in the mean; among the hardest tenth it
    weighs in full. Voxel weights only select (``w > 0``); returns 0 when
    nothing is labeled.

    Parameters
    ----------
    logits : torch.Tensor
        ``(B, C, Z, Y, X)`` raw scores.
    target : torch.Tensor
        int64 ``(B, Z, Y, X)`` class indices.
    weight : torch.Tensor
        float ``(B, Z, Y, X)`` voxel weights, ``0`` on unlabeled voxels.
    share : float
        Fraction of the labeled voxels averaged, in ``(0, 1]``.
    """
    labeled = weight > 0
    n = int(labeled.sum())
    if n == 0:
        return logits.sum() * 0.0
    ce = F.cross_entropy(logits.float(), target, reduction="none")[labeled]
    k = max(1, int(round(share * n)))
    return ce.topk(k, sorted=False).values.mean()


def contrast_smoothness(logits: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Contrast-sensitive Potts term: the mean price of a class change between neighbouring voxels.

    For each pair of face neighbours ``i, j`` along z, y and x, the relaxed
    Potts cost ``1 - p_i . p_j`` (0 when both predict the same class with
    certainty, up to 1) is weighted by ``exp(-beta * |f_i - f_j|^2)``, where
    ``f`` are the image channels and ``beta = 1 / (2 <|f_i - f_j|^2>)`` is
    set from the patch itself (GrabCut's rule), so the term carries no
    intensity scale of its own. A boundary costs little across an edge of the
    image and much inside a flat region: on voxels no label reaches, it moves
    the class boundaries onto the image's edges (the "regularized loss" of
    Tang et al. 2018, on the 6-neighbour grid). Unlike the label terms it
    reads every voxel of the patch, labeled or not.

    Parameters
    ----------
    logits : torch.Tensor
        ``(B, C, Z, Y, X)`` raw scores.
    image : torch.Tensor
        ``(B, F, Z, Y, X)`` the image channels the net saw.

    Returns
    -------
    torch.Tensor
        Scalar: the weighted cost averaged over all neighbour pairs.
    """
    probs = torch.softmax(logits.float(), dim=1)
    image = image.float()
    contrast, cost = [], []
    for axis in (2, 3, 4):
        n = probs.shape[axis]
        if n < 2:
            continue
        head, tail = probs.narrow(axis, 0, n - 1), probs.narrow(axis, 1, n - 1)
        cost.append(1.0 - (head * tail).sum(1))
        contrast.append((image.narrow(axis, 1, n - 1) - image.narrow(axis, 0, n - 1)).square().sum(1))
    if not cost:
        return logits.sum() * 0.0
    # beta per patch (B,), kept on the device: no host sync between forward and backward
    mean_contrast = sum(c.sum(dim=(1, 2, 3)) for c in contrast) / sum(c[0].numel() for c in contrast)
    beta = (0.5 / mean_contrast.clamp_min(EPS)).view(-1, 1, 1, 1)
    total = sum((torch.exp(-beta * c) * k).sum() for c, k in zip(contrast, cost, strict=True))
    return total / sum(k.numel() for k in cost)


def partial_label_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                       dice_weight: float = 1.0) -> torch.Tensor:
    """Weighted cross-entropy plus ``dice_weight`` x labeled soft Dice (the label terms).

    The trainer adds :func:`contrast_smoothness` and :func:`hardest_cross_entropy` at their current weights
    (``Trainer._backward``) and reports this part alone as ``TrainStep.label_loss``.
    """
    loss = weighted_cross_entropy(logits, target, weight)
    if dice_weight > 0:
        loss = loss + dice_weight * labeled_soft_dice(logits, target, weight)
    return loss


@torch.no_grad()
def labeled_error_share(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> float | None:
    """Share of the labeled voxels (``weight > 0``) whose most likely class is not their label (None: none labeled).

    ``logits`` ``(B, K + 1, Z, Y, X)``, ``target`` and ``weight`` ``(B, Z, Y, X)``; one host sync.
    """
    labeled = weight > 0
    predicted = class_map(logits, 1)
    counts = torch.stack((labeled.sum(), ((predicted != target) & labeled).sum()))
    n, wrong = counts.tolist()
    return wrong / n if n else None
