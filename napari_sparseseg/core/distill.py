"""The net learns from the first responder: its confident answers as low-weight targets on unlabeled voxels.

Before the net has learned anything, the first responder (:mod:`.first_responder`) already segments the volume
about as well as a forest can. Its confident answers are handed to the net as pseudo-labels
(:class:`~.annotation.PseudoLabels`): where the top class beats the runner-up by at least
:data:`CONFIDENT_MARGIN` in probability, the voxel trains towards it with weight
``distill x margin x class weight``, while the user's own labels keep their full weight (and a label always
replaces a pseudo-label). The weight fades as the net catches up on the held-back labels: it is full while
the net scores :data:`FADE_GAP` or more below the first responder, and zero once the net scores as well as it.
Held-back voxels never receive pseudo-labels (they are zeroed with the labels there), so the net's held-back
score stays honest.
"""

from __future__ import annotations

import numpy as np

from .annotation import PseudoLabels
from .box import plane_blocks

#: Smallest gap between the top two class probabilities for a first-responder answer to be trained on.
CONFIDENT_MARGIN = 0.5
#: Held-back Dice gap (first responder minus net) from which the pseudo-labels weigh in full.
FADE_GAP = 0.05


def distill_weight(distill: float, scores: dict[str, float]) -> float:
    """Weight factor of the pseudo-labels now: ``distill`` faded by how far the net is behind the first responder.

    Parameters
    ----------
    distill : float
        The configured weight (``ResponderConfig.distill``); 0 turns pseudo-labels off.
    scores : dict
        Latest held-back Dice per learner (``"forest"``, ``"net"``); a learner not scored yet counts as behind.
    """
    forest, net = scores.get("forest"), scores.get("net")
    if distill <= 0 or forest is None:
        return 0.0 if distill <= 0 else float(distill)
    if net is None:
        return float(distill)
    return float(distill) * min(max((forest - net) / FADE_GAP, 0.0), 1.0)


def pseudo_labels(probabilities: np.ndarray, weight: float) -> PseudoLabels:
    """Pseudo-labels from class probabilities ``(K + 1, z, y, x)``: the top class, and its margin where confident
    (computed in blocks of planes, :func:`~.box.plane_blocks`)."""
    if probabilities.shape[0] < 2:
        raise ValueError(f"need at least 2 class channels, got probabilities of shape {probabilities.shape}")
    shape = probabilities.shape[1:]
    classes, confidence = np.empty(shape, np.uint8), np.empty(shape, np.float16)
    for block in plane_blocks(shape):
        p = probabilities[:, block]
        top2 = np.partition(p, p.shape[0] - 2, axis=0)[-2:]
        margin = top2[1] - top2[0]
        confidence[block] = np.where(margin >= CONFIDENT_MARGIN, margin, 0)
        classes[block] = p.argmax(0)
    return PseudoLabels(classes, confidence, float(weight))
