"""Does a later stage of the first responder that is less certain on unlabeled voxels than the one before do worse?

    python benchmarks/stage_certainty.py ../shared/data/*.npz --sample --seeds 0 1 2 --protocols z:1 z:3 scribble:3

For each volume, protocol and seed: the foreground Dice of each stage's mask (labels merged in, as shown) and its
mean uncertainty ``1 - max_c p_c`` on the unlabeled voxels among the 50,000 the prior shift reads
(``prior_shift.PRIOR_SAMPLE``; no ground truth used), then what the product's rule keeps (``context.less_certain``:
stop at the first stage whose successor is more than ``STAGE_TOLERANCE`` less certain), against the last stage. Every
stage is fitted here whatever the rule says. Float32 on the CPU.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from helpers import labeled_runs, load_volumes

from napari_sparseseg.core import first_responder
from napari_sparseseg.core.config import ResponderConfig
from napari_sparseseg.core.context import STAGE_TOLERANCE
from napari_sparseseg.core.encoding import UNLABELED
from napari_sparseseg.core.first_responder import FirstResponder


def dice_fg(truth: np.ndarray, shown: np.ndarray) -> float:
    t, p = truth > 0, shown > 0
    return float(2 * (t & p).sum() / max(1, t.sum() + p.sum()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*")
    ap.add_argument("--sample", action="store_true")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--protocols", nargs="+", default=["z:1", "z:3", "scribble:3"])
    args = ap.parse_args()
    torch.set_num_threads(2)
    first_responder.less_certain = lambda current, candidate: False  # every stage fitted; the rule applied below
    print("volume protocol seed | stage Dice / uncertainty ... | rule: stage, Dice | last - rule")
    for name, image, truth, spacing in load_volumes(args.files, args.sample):
        for protocol, seed, annotation, volume, features in labeled_runs(image, truth, spacing, args.protocols,
                                                                         args.seeds):
            responder = FirstResponder(image, volume, ResponderConfig(), seed=seed, features=features)
            responder.fit()
            coords = responder._shift[1]
            coords = coords[annotation[tuple(coords.T)] == UNLABELED]
            dice, unc = [], []
            proba = None
            while True:
                proba = responder.predict()
                shown = np.where(annotation > UNLABELED, annotation.astype(np.int64) - 1, proba.argmax(0))
                dice.append(dice_fg(truth, shown))
                at = responder._proba_at(coords, responder._forest, responder._context)
                unc.append(float((1 - at.max(1)).mean()))
                if not responder.refine(proba):
                    break
            keep = 0
            while keep + 1 < len(unc) and unc[keep + 1] <= unc[keep] * (1 + STAGE_TOLERANCE):  # context.less_certain
                keep += 1
            cells = " | ".join(f"{d:.3f} / {u:.4f}" for d, u in zip(dice, unc))
            print(f"{name} {protocol} {seed} | {cells} | rule: {keep + 1}, {dice[keep]:.3f} | "
                  f"{dice[-1] - dice[keep]:+.3f}", flush=True)


if __name__ == "__main__":
    main()
