"""The first responder's second stage (ilastik's autocontext): Dice of one stage, of two, and of the baseline.

    python benchmarks/autocontext.py ../shared/data/*.npz --sample --seeds 0 1 2
    python benchmarks/autocontext.py ../shared/data/*.npz --sample --seeds 0 1 2 --no-baseline \\
        --contexts 1,3.5,10+raw 1.6,3.5,10 3.5,10,20 5,15

For each volume, protocol and seed this prints the foreground Dice against ground truth, and the seconds, of
the first responder's first stage alone, of the product's two stages (``FirstResponder.refine``: the second
forest reads the filter bank plus the first one's foreground probabilities smoothed at
``core.context.CONTEXT_SIGMAS``), of other context scales given with ``--contexts`` (comma-separated scales;
``+raw`` adds the unsmoothed probability as a column), and of the 100-tree random forest baseline. Every
forest is fitted on every label (nothing held back), as the forest shown is. Float32 on the CPU; no net.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from helpers import labeled_runs, load_volumes

from napari_sparseseg.baselines.random_forest import random_forest_segment
from napari_sparseseg.core.config import ResponderConfig
from napari_sparseseg.core.context import context_features
from napari_sparseseg.core.first_responder import FirstResponder

PROTOCOLS = ("z:1", "z:3", "scribble:3")


def dice_fg(truth: np.ndarray, pred: np.ndarray) -> float:
    """Foreground (any class > 0) Dice."""
    t, p = truth > 0, pred > 0
    return float(2 * np.logical_and(t, p).sum() / max(1, t.sum() + p.sum()))


def parse_context(text: str) -> tuple[tuple[float, ...], bool]:
    """``"1,3.5,10+raw"`` -> ``((1.0, 3.5, 10.0), True)``."""
    scales, _, raw = text.partition("+")
    return tuple(float(v) for v in scales.split(",")), raw == "raw"


class VariantResponder(FirstResponder):
    """The first responder with other context scales (and optionally the unsmoothed probability as a column)."""

    def __init__(self, *args, sigmas: tuple[float, ...], raw: bool, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sigmas, self.raw = sigmas, raw

    def context(self, probabilities: np.ndarray) -> np.ndarray:
        smoothed = context_features(probabilities, self.volume.spacing, self.sigmas)
        if not self.raw:
            return smoothed
        return np.concatenate([np.moveaxis(probabilities[1:], 0, -1).astype(np.float32), smoothed], axis=-1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*")
    ap.add_argument("--sample", action="store_true")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--protocols", nargs="+", default=list(PROTOCOLS))
    ap.add_argument("--contexts", nargs="*", default=[], metavar="SCALES[+raw]")
    ap.add_argument("--no-baseline", action="store_true", help="skip the 100-tree random forest")
    args = ap.parse_args()
    torch.set_num_threads(2)
    config = ResponderConfig()
    print("volume protocol seed | one stage Dice (s) | two stages Dice (s) | "
          + "".join(f"{c} Dice (s) | " for c in args.contexts) + "rf100 Dice (s)")
    for name, image, truth, spacing in load_volumes(args.files, args.sample):
        for protocol, seed, annotation, volume, features in labeled_runs(image, truth, spacing, args.protocols,
                                                                         args.seeds):
            cells = []
            variants = [None] + [parse_context(c) for c in args.contexts]
            for variant in variants:
                responder = FirstResponder(image, volume, config, seed=seed, features=features) if variant is None \
                    else VariantResponder(image, volume, config, seed=seed, features=features, sigmas=variant[0],
                                          raw=variant[1])
                t0 = time.perf_counter()
                responder.fit()
                first = responder.predict()
                first_s = time.perf_counter() - t0
                if variant is None:
                    cells.append(f"{dice_fg(truth, first.argmax(0)):.3f} ({first_s:.1f})")
                responder.refine(first)
                second = responder.predict()
                cells.append(f"{dice_fg(truth, second.argmax(0)):.3f} ({time.perf_counter() - t0:.1f})")
            if not args.no_baseline:
                t0 = time.perf_counter()
                rf = dice_fg(truth, random_forest_segment(image, annotation, spacing, seed=seed))
                cells.append(f"{rf:.3f} ({time.perf_counter() - t0:.1f})")
            print(f"{name} {protocol} {seed} | " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
