"""Strokes spread over their slice before the first responder fits: does the first responder gain? (Left out.)

    python benchmarks/stroke_propagation.py ../shared/data/*.npz --sample --tubes --thresholds 0.5 0.8 0.95 --seeds 0
    python benchmarks/stroke_propagation.py ../shared/data/*.npz --sample --tubes --thresholds 0.95 0.99 --keep-gate

From ``scribble:3`` labels, each painted z slice's strokes are spread to the rest of the slice by a 2D random walker
(scikit-image, the strokes as seeds, intensities scaled to their 1-99 percentiles, beta 130), kept where the walker's
probability is at least the threshold; the first responder (every stage) is then fitted on strokes plus spread
labels. Printed per volume and threshold: the foreground Dice against ground truth (``None``: the strokes alone), the
spread labels' accuracy and how many labels there are against the strokes. ``--keep-gate``: the first responder reads
the plane coverage of the strokes, not of the spread labels (so the prior shift and the contrast columns stay as for
strokes). Float32 on the CPU, 2 threads.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from autocontext import dice_fg
from helpers import labeled_runs, load_volumes

from napari_sparseseg.core.annotation import AnnotatedVolume
from napari_sparseseg.core.config import ResponderConfig
from napari_sparseseg.core.first_responder import FirstResponder


def spread(image: np.ndarray, annotation: np.ndarray, threshold: float, beta: float = 130.0) -> np.ndarray:
    """``annotation`` (annotation encoding) with each z slice's strokes spread by a random walker where confident."""
    from skimage.segmentation import random_walker

    out = annotation.copy()
    for z in np.flatnonzero((annotation > 0).any(axis=(1, 2))):
        seeds = annotation[z].astype(np.int32)
        labels = np.unique(seeds[seeds > 0])
        if len(labels) < 2:
            continue
        plane = image[z].astype(np.float64)
        lo, hi = np.percentile(plane, (1, 99))
        plane = np.clip((plane - lo) / max(hi - lo, 1e-6), 0, 1)
        prob = random_walker(plane, seeds, beta=beta, mode="cg_j", return_full_prob=True, tol=1e-3)
        keep = (prob.max(0) >= threshold) & (seeds == 0)
        out[z][keep] = labels[prob.argmax(0)][keep]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*")
    ap.add_argument("--sample", action="store_true")
    ap.add_argument("--tubes", action="store_true")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.8, 0.95])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--keep-gate", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    config = ResponderConfig()
    for name, image, truth, spacing in load_volumes(args.files, args.sample, args.tubes):
        for _, seed, annotation, volume, features in labeled_runs(image, truth, spacing, ["scribble:3"], args.seeds):
            cells = []
            for t in [None, *args.thresholds]:
                t0 = time.perf_counter()
                labels = annotation if t is None else spread(image, annotation, t)
                extra = ""
                if t is not None:
                    lab = labels > 0
                    extra = (f" acc {float(((labels[lab] - 1) == truth[lab]).mean()):.3f}"
                             f" lab {lab.sum() / (annotation > 0).sum():.1f}x")
                spread_seconds = time.perf_counter() - t0
                fitted = AnnotatedVolume(image, num_classes=int(truth.max()), spacing=spacing, annotation=labels)
                if args.keep_gate:
                    coverage = volume.plane_coverage()
                    fitted.plane_coverage = lambda coverage=coverage: coverage
                responder = FirstResponder(image, fitted, config, seed=seed, features=features)
                responder.fit()
                proba = responder.predict()
                while responder.refine(proba):
                    proba = responder.predict()
                cells.append(f"{t}: {dice_fg(truth, proba.argmax(0)):.3f} (rw {spread_seconds:.1f}s{extra})")
            print(name, seed, " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
