"""What a correction brush does beside the error it is meant to fix: with and without stopping at edges.

    python benchmarks/correction_brush.py ../shared/data/*.npz --sample --tubes --radii 2 5

For each volume: the first responder (every stage) is fitted on ``z:1`` labels and its class map is what a user
corrects. On five evenly spaced z slices away from the painted one, a simulated user strokes once over each
error region (a 2D connected region where the map differs from the ground truth, at least 5 voxels): a brush
disc of the given radius swept over every voxel of the region, painting the region's most common true class,
begun at the region's voxel nearest its centroid. Napari writes only voxels whose value changes; the stroke is
then taken whole (``free``) or cut by the product's rule (``stop``, :func:`napari_sparseseg.plugin.edge_stop.
start_region`). Printed per volume, radius and brush: strokes, voxels *fixed* (wrong -> right), voxels *broken*
(right -> wrong: the collateral), and the foreground Dice of the five slices before and after. Float32, CPU.
"""

from __future__ import annotations

import argparse

import numpy as np
from autocontext import dice_fg
from helpers import labeled_runs, load_volumes
from scipy import ndimage as ndi

from napari_sparseseg.core.config import ResponderConfig
from napari_sparseseg.core.first_responder import FirstResponder
from napari_sparseseg.plugin.edge_stop import start_region
from napari_sparseseg.plugin.paint_atoms import PaintedVoxels

MIN_REGION = 5
SLICES = 5


def disc(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius ** 2


def first_responder_map(image, truth, spacing) -> tuple[np.ndarray, set[int]]:
    """The first responder's class map from ``z:1`` labels (every stage), seed 0, and the painted z slices."""
    for _protocol, seed, annotation, volume, features in labeled_runs(image, truth, spacing, ["z:1"], [0]):
        responder = FirstResponder(image, volume, ResponderConfig(), seed=seed, features=features)
        responder.fit()
        proba = responder.predict()
        while responder.refine(proba):
            proba = responder.predict()
        return proba.argmax(0).astype(np.int64), set(np.flatnonzero((annotation > 0).any((1, 2))).tolist())
    raise AssertionError("no run")


def stroke_over(region: np.ndarray, pred: np.ndarray, label: int, radius: int, z: int):
    """The stroke (as napari writes it) sweeping the brush over ``region`` (2D bool), and where it began."""
    swept = ndi.binary_dilation(region, disc(radius))
    ys, xs = np.nonzero(region)
    i = int(np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2))
    start = (ys[i], xs[i])
    dab = np.zeros_like(region)
    dab[start] = True
    first = ndi.binary_dilation(dab, disc(radius))
    written = swept & (pred != label)
    yy, xx = np.nonzero(written)
    stroke = PaintedVoxels((np.full(yy.size, z), yy, xx), np.full(yy.size, label), pred[yy, xx],
                           np.where(first[yy, xx], 0, 1))
    return stroke, ((z, int(start[0]), int(start[1])), int(pred[start]))


def correct_slices(pred: np.ndarray, truth: np.ndarray, painted: set[int], radius: int, stop: bool) -> dict:
    zs = [int(z) for z in np.linspace(0, pred.shape[0] - 1, SLICES + 2)[1:-1].round()]
    zs = [z + 1 if z in painted else z for z in zs]
    fixed = broken = strokes = 0
    before = after = 0.0
    for z in zs:
        p, t = pred[z].copy(), truth[z]
        before += dice_fg(t, p) / len(zs)
        regions, n = ndi.label(p != t)
        for r in range(1, n + 1):
            region = regions == r
            if region.sum() < MIN_REGION:
                continue
            label = int(np.bincount(t[region]).argmax())
            stroke, start = stroke_over(region, p, label, radius, z)
            if stroke.size == 0:
                continue
            if stop:
                stroke = stroke.subset(start_region(stroke, start))
            _, yy, xx = stroke.coords
            was_right = p[yy, xx] == t[yy, xx]
            now_right = label == t[yy, xx]
            fixed += int((~was_right & now_right).sum())
            broken += int((was_right & ~now_right).sum())
            p[yy, xx] = label
            strokes += 1
        after += dice_fg(t, p) / len(zs)
    return {"strokes": strokes, "fixed": fixed, "broken": broken, "dice_before": before, "dice_after": after}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="*")
    parser.add_argument("--sample", action="store_true")
    parser.add_argument("--tubes", action="store_true", help="add thin_tubes from autocontext.py (radius 1.5)")
    parser.add_argument("--radii", type=int, nargs="+", default=[2, 5])
    args = parser.parse_args()
    volumes = load_volumes(args.files, args.sample, args.tubes)
    print("volume | radius | brush | strokes | fixed | broken | slice Dice before -> after")
    for name, image, truth, spacing in volumes:
        pred, painted = first_responder_map(image, truth, spacing)
        truth = truth.astype(np.int64)
        for radius in args.radii:
            for stop in (False, True):
                r = correct_slices(pred, truth, painted, radius, stop)
                print(f"{name} | {radius} | {'stop' if stop else 'free'} | {r['strokes']} | {r['fixed']} | "
                      f"{r['broken']} | {r['dice_before']:.3f} -> {r['dice_after']:.3f}", flush=True)


if __name__ == "__main__":
    main()
