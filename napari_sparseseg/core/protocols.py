"""Simulated annotators: which voxels a user labels under a protocol.

``z:K``  K whole axial slices at ``round(linspace(0, Z-1, K+2))[1:-1]``.
``ortho:K``  the same K slices on each of the three axes.
Labels come from the ground truth, so they are exact.
"""

from __future__ import annotations

import re

import numpy as np

from .encoding import mask_to_annotation

_PROTOCOL = re.compile(r"^(z|y|x|ortho):(\d+)$")


def slice_positions(n: int, k: int) -> list[int]:
    """``round(linspace(0, n - 1, k + 2))[1:-1]``; raises if ``k`` distinct slices do not fit."""
    if k < 1:
        raise ValueError(f"protocol needs at least 1 slice, got {k}")
    if k > n:
        raise ValueError(f"protocol asks for {k} slices but the axis has only {n}")
    pos = np.round(np.linspace(0, n - 1, k + 2))[1:-1].astype(int)
    if len(set(pos.tolist())) < k:
        raise ValueError(f"protocol asks for {k} distinct slices but an axis of {n} voxels has room for fewer")
    return pos.tolist()


def protocol_mask(shape: tuple[int, int, int], protocol: str) -> np.ndarray:
    """Boolean ``(z, y, x)`` mask of the voxels a protocol labels."""
    m = _PROTOCOL.match(protocol.strip())
    if not m:
        raise ValueError(f"unknown protocol {protocol!r}; use z:K or ortho:K (e.g. z:3)")
    kind, k = m.group(1), int(m.group(2))
    axes = {"z": [0], "y": [1], "x": [2], "ortho": [0, 1, 2]}[kind]
    mask = np.zeros(shape, bool)
    for axis in axes:
        for p in slice_positions(shape[axis], k):
            index = [slice(None)] * 3
            index[axis] = p
            mask[tuple(index)] = True
    return mask


def simulate_annotation(truth: np.ndarray, protocol: str) -> np.ndarray:
    """Annotation (0 = unlabeled, 1 = background, k+1 = class k) of ``truth`` under ``protocol``."""
    mask = protocol_mask(truth.shape, protocol)
    out = np.zeros(truth.shape, np.uint8)
    out[mask] = mask_to_annotation(truth[mask])
    return out
