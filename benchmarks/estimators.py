"""Which estimate of the shown mask's Dice, made without ground truth, is closest to the truth?

    python benchmarks/estimators.py --sample ../shared/data/*.npz --seeds 0 1 2

For each volume, protocol and seed the first responder is fitted as in the product (the forest shown on every
label, the forest scored without the held-back labels, both refined through the product's stages unless
``--stages`` says otherwise) and three estimates of the shown mask's foreground Dice are printed beside the true
one:

- ``held-back``: the foreground Dice of the scored forest on the held-back labels (what the widget shows now);
- ``expected``: the Dice the shown mask would have if its own class probabilities were calibrated,
  ``2 sum(p * m) / (sum(p) + sum(m))`` with ``p`` the foreground probability and ``m`` the mask; no labels used;
- ``min``: the lower of the two.

Then the mean absolute error of each over the runs, and the calibration of the interval the widget states
(``core/estimate.py``): the share ``q`` of ``1 - expected`` that covers 80 % of the errors (split conformal:
the ``ceil(0.8 (n + 1))``-th smallest of ``|expected - true| / (1 - expected)``), and the coverage of an interval
of that half-width on each volume when ``q`` is computed from the other volumes only. The forest alone, no net:
minutes, not hours. ``--from RESULTS.txt`` recomputes the summary from a printed run.
"""

from __future__ import annotations

import argparse
import collections

import numpy as np
import torch
from helpers import load_volumes

from napari_sparseseg.core.annotation import AnnotatedVolume
from napari_sparseseg.core.config import ResponderConfig
from napari_sparseseg.core.feature_stack import FeatureStack
from napari_sparseseg.core.first_responder import FirstResponder
from napari_sparseseg.core.holdout import HoldOut
from napari_sparseseg.evaluation.protocols import simulate_annotation


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.logical_and(a, b).sum() / max(1, a.sum() + b.sum()))


def expected_dice(p_fg: np.ndarray, mask: np.ndarray) -> float:
    """Dice of ``mask`` against a truth drawn voxel by voxel with probability ``p_fg`` (its expectation's ratio)."""
    return float(2 * (p_fg * mask).sum() / max(1e-9, p_fg.sum() + mask.sum()))


def conformal_share(residuals: np.ndarray, level: float = 0.8) -> float:
    """The ``ceil(level (n + 1))``-th smallest normalised residual (the largest when there are too few)."""
    r = np.sort(residuals)
    return float(r[min(r.size - 1, int(np.ceil(level * (r.size + 1))) - 1)])


def print_calibration(runs: list[tuple[str, float, float]], level: float = 0.8) -> None:
    """Conformal share of ``1 - expected`` over all runs, and its leave-one-volume-out coverage."""
    residual = np.array([abs(e - t) / max(1e-9, 1 - e) for _, t, e in runs])
    names = np.array([n for n, _, _ in runs])
    print(f"interval: half-width q * (1 - expected), q = {conformal_share(residual, level):.3f} "
          f"({level:.0%} of {len(runs)} runs)")
    covered = 0
    for name in dict.fromkeys(names):
        q = conformal_share(residual[names != name], level)
        inside = int((residual[names == name] <= q).sum())
        covered += inside
        print(f"  {name}: q from the other volumes {q:.3f}, covers {inside} of {(names == name).sum()} runs")
    print(f"  leave-one-volume-out coverage {covered} of {len(runs)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*")
    ap.add_argument("--from", dest="from_file", help="recompute the summary from this printed run")
    ap.add_argument("--sample", action="store_true")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--protocols", nargs="+", default=["z:1", "z:3", "scribble:3"])
    ap.add_argument("--stages", type=int, default=ResponderConfig().stages,
                    help="the first responder's stages (default: the product's)")
    args = ap.parse_args()
    if args.from_file:
        rows = [line.split("|") for line in open(args.from_file).read().splitlines() if line.count("|") == 4]
        print_calibration([(r[0].split()[0], float(r[1]), float(r[3])) for r in rows[1:]])
        return
    torch.set_num_threads(2)
    volumes = load_volumes(args.files, args.sample)
    runs: list[tuple[str, float, float]] = []
    config = ResponderConfig(stages=args.stages)
    errors: dict[str, list[float]] = collections.defaultdict(list)
    print("volume protocol seed | true | held-back | expected | min")
    for name, image, truth, spacing in volumes:
        features = FeatureStack(image, spacing)
        k = int(truth.max())
        for protocol in args.protocols:
            annotation = simulate_annotation(truth, protocol)
            labeled = annotation > 0
            for seed in args.seeds:
                volume = AnnotatedVolume(image, num_classes=k, spacing=spacing, annotation=annotation)
                holdout = HoldOut(spacing, config.held_back, seed=seed)
                responder = FirstResponder(image, volume, config, seed=seed, features=features)
                responder.fit(holdout)
                while responder.refine():  # every stage, as the widget shows it
                    pass
                responder.fit_scored()  # the scored forests of the stage shown
                coords, classes, held = responder.labeled_rows(holdout)
                probs = responder.predict()
                mask = probs.argmax(0) > 0
                shown = np.where(labeled, annotation > 1, mask)  # labels merged in, as the layer shows them
                true = dice(truth > 0, shown)
                at = coords[held]
                held_back = dice(classes[held] > 0, responder.predict_scored_at(at).argmax(1) > 0) \
                    if responder.scored and len(at) else float("nan")
                p_fg = np.where(labeled, (annotation > 1).astype(np.float32), 1.0 - probs[0])
                expected = expected_dice(p_fg, shown)
                low = np.nanmin([held_back, expected])
                runs.append((name, true, expected))
                for key, value in (("held-back", held_back), ("expected", expected), ("min", low)):
                    if np.isfinite(value):
                        errors[key].append(abs(value - true))
                print(f"{name} {protocol} {seed} | {true:.3f} | {held_back:.3f} | {expected:.3f} | {low:.3f}",
                      flush=True)
    for key, values in errors.items():
        print(f"{key}: mean absolute error {np.mean(values):.3f} over {len(values)} runs, "
              f"largest {np.max(values):.3f}")
    print_calibration(runs)


if __name__ == "__main__":
    main()
