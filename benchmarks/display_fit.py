"""What the first responder shows: a forest fitted on the labels left after the held-back split, or on all of them.

    python benchmarks/display_fit.py --sample ../shared/data/*.npz --seeds 0 1 2

The held-back labels (``core/holdout.py``) must stay unseen by the fit that is *scored*, but the fit that is
*shown* may use every label. For each volume, protocol and seed this prints the foreground Dice against ground
truth of the extremely randomised forest (the product's ``FirstResponder``) fitted on the training side of the
split and on all labels, beside the 100-tree random forest baseline on all labels, and the fit seconds. Float32
on the CPU; no net is trained, so one run takes minutes, not hours.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch
from helpers import labeled_runs, load_volumes

from napari_sparseseg.baselines.random_forest import random_forest_segment
from napari_sparseseg.core.config import ResponderConfig
from napari_sparseseg.core.first_responder import FirstResponder
from napari_sparseseg.core.holdout import HoldOut

PROTOCOLS = ("z:1", "z:3", "scribble:3")


def dice_fg(truth: np.ndarray, pred: np.ndarray) -> float:
    """Foreground (any class > 0) Dice."""
    t, p = truth > 0, pred > 0
    return float(2 * np.logical_and(t, p).sum() / max(1, t.sum() + p.sum()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*")
    ap.add_argument("--sample", action="store_true")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--protocols", nargs="+", default=list(PROTOCOLS))
    ap.add_argument("--no-baseline", action="store_true", help="skip the 100-tree random forest")
    ap.add_argument("--shown", nargs="*", default=[], metavar="TREES:SAMPLES",
                    help="also fit the forest shown with these trees and samples (e.g. 100:100000)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    volumes = load_volumes(args.files, args.sample)
    config = ResponderConfig()
    print("volume protocol seed | split Dice (both fits s) | all Dice (both fits s) | all - split | rf100 Dice | "
          "all - rf100")
    for name, image, truth, spacing in volumes:
        for protocol, seed, annotation, volume, features in labeled_runs(image, truth, spacing, args.protocols,
                                                                         args.seeds):
            # Both: the forest scored (without the held-back labels) and the forest shown (all).
            responder = FirstResponder(image, volume, config, seed=seed, features=features)
            t0 = time.perf_counter()
            responder.fit(HoldOut(spacing, config.held_back, seed=seed))
            responder.fit_scored()
            fit = time.perf_counter() - t0
            every = np.indices(truth.shape).reshape(3, -1).T
            scored = np.concatenate([responder.predict_scored_at(every[i:i + (1 << 20)]).argmax(1)
                                     for i in range(0, len(every), 1 << 20)]).reshape(truth.shape)
            shown = responder.predict().argmax(0)
            row = {"split": (dice_fg(truth, scored), fit), "all": (dice_fg(truth, shown), fit)}
            extra = []
            for text in args.shown:
                trees, samples = (int(v) for v in text.split(":"))
                variant = replace(config, trees=trees, max_samples=samples)
                responder = FirstResponder(image, volume, variant, seed=seed, features=features)
                t0 = time.perf_counter()
                responder.fit()
                fit = time.perf_counter() - t0
                t0 = time.perf_counter()
                pred = responder.predict().argmax(0)
                extra.append(f" | {text} {dice_fg(truth, pred):.3f} (fit {fit:.2f} s, predict "
                             f"{time.perf_counter() - t0:.1f} s)")
            rf = float("nan") if args.no_baseline else dice_fg(
                truth, random_forest_segment(image, annotation, spacing, seed=seed))
            (ds, fs), (da, fa) = row["split"], row["all"]
            print(f"{name} {protocol} {seed} | {ds:.3f} ({fs:.2f}) | {da:.3f} ({fa:.2f}) | {da - ds:+.3f} | "
                  f"{rf:.3f} | {da - rf:+.3f}" + "".join(extra), flush=True)


if __name__ == "__main__":
    main()
