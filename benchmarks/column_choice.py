"""Could the held-back labels choose the first responder's columns per volume? (They cannot: see the output.)

    python benchmarks/column_choice.py scribble:3 ../shared/data/*.npz

For each volume (the synthetic sample first), protocol and seed: the held-back score (``core.handover.
held_back_scores``, the hand-over's own) of the stage-1 forest fitted without the held-back labels, reading the
filter bank alone or with the local contrast columns, and the foreground Dice of the three-stage first responder
shown with each set (labels merged in); then the Dice of the set the held-back score picks (the bank on a tie).
Float32 on the CPU; no net.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from helpers import labeled_runs, load_volumes

from napari_sparseseg.core import first_responder
from napari_sparseseg.core.config import ResponderConfig
from napari_sparseseg.core.features import feature_names
from napari_sparseseg.core.first_responder import FirstResponder
from napari_sparseseg.core.handover import held_back_scores
from napari_sparseseg.core.holdout import HoldOut


def run(image, truth, spacing, annotation, volume, features, seed: int, columns) -> tuple[float, float]:
    """``(held-back score of the stage-1 scored forest, Dice of the three stages shown)`` reading ``columns``."""
    rc = ResponderConfig()
    responder = FirstResponder(image, volume, rc, seed=seed, features=features)
    holdout = HoldOut(spacing, rc.held_back, seed=seed)
    chosen = first_responder.columns_for
    first_responder.columns_for = lambda coverage, channels: columns  # the set under test, whatever the coverage
    try:
        responder.fit(holdout)
        responder.fit_scored()
    finally:
        first_responder.columns_for = chosen
    coords, classes, held = responder.labeled_rows(holdout)
    predicted = responder.predict_scored_at(coords[held]).argmax(1)
    score = held_back_scores(classes[held], {"x": predicted}, volume.num_classes + 1,
                             holdout.block_of(coords[held]), seed=seed)["x"].dice
    while responder.refine():
        pass
    shown = np.where(annotation > 0, annotation.astype(np.int64) - 1, responder.predict().argmax(0))
    t, p = truth > 0, shown > 0
    return score, float(2 * (t & p).sum() / max(1, t.sum() + p.sum()))


def main() -> None:
    torch.set_num_threads(2)
    protocols, files = sys.argv[1].split(","), sys.argv[2:]
    bank = np.arange(len(feature_names()))
    for name, image, truth, spacing in load_volumes(files, True):
        for protocol, seed, annotation, volume, features in labeled_runs(image, truth, spacing, protocols, [0, 1, 2]):
            s0, d0 = run(image, truth, spacing, annotation, volume, features, seed, bank)
            s1, d1 = run(image, truth, spacing, annotation, volume, features, seed, None)
            pick = "all" if s1 > s0 else "bank"
            print(f"{name} {protocol} {seed} | held bank {s0:.3f} all {s1:.3f} | Dice bank {d0:.3f} all {d1:.3f} | "
                  f"picked {pick} {d1 if s1 > s0 else d0:.3f}", flush=True)


if __name__ == "__main__":
    main()
