"""Which runs hold back no foreground? Per volume, protocol and seed: the labels held back and their foreground.

    python benchmarks/heldback_foreground.py ../shared/data/*.npz --sample --seeds 0 1 2

The labels of each protocol (as ``evaluate`` paints them) split by the session's :class:`~.core.holdout.HoldOut`
(its default share and blocks, the seed of ``TrainConfig(seed=S)``, the full-resolution grid). Where the held-back
labels hold no foreground, no learner is scored (:func:`~.core.handover.held_back_scores`) and the first responder
stays shown; the learners are ranked on the foreground voxels held back elsewhere. No training: seconds a volume.
"""

from __future__ import annotations

import argparse

import numpy as np
from helpers import load_volumes

from napari_sparseseg.core.config import ResponderConfig
from napari_sparseseg.core.holdout import HoldOut
from napari_sparseseg.evaluation.protocols import protocol_mask, simulate_annotation


def held_back(annotation: np.ndarray, spacing: tuple[float, ...], seed: int) -> tuple[int, int, list[int]]:
    """``(labeled voxels held back, their foreground, classes released)`` of an annotation (annotation encoding)."""
    coords = np.argwhere(annotation > 0)
    classes = annotation[tuple(coords.T)].astype(np.int64) - 1
    holdout = HoldOut(spacing, ResponderConfig().held_back, seed=seed)
    held = holdout.split(coords, classes)
    return int(held.sum()), int((classes[held] > 0).sum()), sorted(holdout.released)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*")
    ap.add_argument("--sample", action="store_true")
    ap.add_argument("--protocols", nargs="+", default=["z:1", "z:3", "scribble:3"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    runs, without = 0, []
    for name, _, truth, spacing in load_volumes(args.files, args.sample):
        for protocol in args.protocols:
            annotation = simulate_annotation(truth, protocol, protocol_mask(truth.shape, protocol, truth))
            for seed in args.seeds:
                n, foreground, released = held_back(annotation, spacing, seed)
                runs += 1
                if foreground == 0:
                    without.append(f"{name} {protocol} seed {seed}")
                print(f"{name:40s} {protocol:11s} seed {seed}: {n:6d} held back, {foreground:5d} foreground"
                      + (f", classes released {released}" if released else ""), flush=True)
    print(f"\n{len(without)} of {runs} runs hold back no foreground: {'; '.join(without) or 'none'}")


if __name__ == "__main__":
    main()
