"""The first responder's later stages (ilastik's autocontext): Dice after each stage, and of the baseline.

    python benchmarks/autocontext.py ../shared/data/*.npz --sample --seeds 0 1 2
    python benchmarks/autocontext.py --tubes --seeds 0 1 2 --protocols z:3 scribble:3 --no-baseline
    python benchmarks/autocontext.py --from benchmarks/results/autocontext.txt
    python benchmarks/autocontext.py ../shared/data/*.npz --sample --protocols scribble:3 --no-baseline --trees 96
    python benchmarks/autocontext.py ../shared/data/*.npz --sample --protocols scribble:3 --no-baseline \
        --contrast-from-strokes
    python benchmarks/autocontext.py ../shared/data/*.npz --sample --tubes --protocols scribble:3 --prior-shift 0
    python benchmarks/autocontext.py ../shared/data/*.npz --sample --tubes --seeds 0 1 2 --no-baseline --forest random
    python benchmarks/autocontext.py ../shared/data/*.npz --sample --seeds 0 1 2 --no-baseline --stages 2 \\
        --contexts 1,3.5,10+raw 1.6,3.5,10 3.5,10,20 5,15

For each volume, protocol and seed this prints the foreground Dice against ground truth, and the seconds since
the fit began, after each of the first responder's stages (``--stages``, default the product's
``ResponderConfig.stages``; ``FirstResponder.refine``: each later forest reads the filter bank plus the previous
one's foreground probabilities smoothed at ``core.context.CONTEXT_SIGMAS``), after the last stage with other
context scales given with ``--contexts`` (comma-separated scales; ``+raw`` adds the unsmoothed probability as a
column), and of the 100-tree random forest baseline. Every
forest is fitted on every label (nothing held back), as the forest shown is. ``--tubes`` adds a synthetic
volume of thin curved tubes (radius 1.5 voxels, 0.4-0.7 % of the volume, on a smooth uneven background): does
a context smoothed over 10 voxels lose a thin structure? Float32 on the CPU; no net. ``--from`` prints the
mean over seeds of each column of a printed run, per volume and protocol, as a markdown table. ``--trees`` and
``--contrast-from-strokes`` try other first responders (more trees; the local contrast columns read from labels of
any plane coverage, ``forest_plan.CONTRAST_MIN_COVERAGE = 0``); ``--prior-shift`` sets how far the forests move
towards the volume's class shares (``ResponderConfig.prior_shift``, :mod:`napari_sparseseg.core.prior_shift`).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from helpers import labeled_runs, load_volumes

from napari_sparseseg.baselines.random_forest import random_forest_segment
from napari_sparseseg.core import forest_plan
from napari_sparseseg.core.config import ResponderConfig
from napari_sparseseg.core.context import context_features
from napari_sparseseg.core.first_responder import FirstResponder

PROTOCOLS = ("z:1", "z:3", "scribble:3")


def dice_fg(truth: np.ndarray, pred: np.ndarray) -> float:
    """Foreground (any class > 0) Dice."""
    t, p = truth > 0, pred > 0
    return float(2 * np.logical_and(t, p).sum() / max(1, t.sum() + p.sum()))


def thin_tubes(seed: int, shape=(48, 128, 128), tubes: int = 12, radius: float = 1.5):
    """``(image, mask, spacing)``: random-walk tubes of ``radius`` voxels, blurred, on noise and a smooth
    background that varies more than the tubes' contrast."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, bool)
    r = int(np.ceil(radius))
    for _ in range(tubes):
        point, step = rng.uniform((0, 0, 0), shape), rng.normal(size=3)
        for _ in range(200):
            step += rng.normal(scale=0.15, size=3)
            step /= np.linalg.norm(step)
            point = point + step
            if not all(0 <= point[a] < shape[a] for a in range(3)):
                break
            lo = np.maximum(point.astype(int) - r, 0)
            hi = np.minimum(point.astype(int) + r + 1, shape)
            grid = np.indices(hi - lo).reshape(3, -1).T + lo
            inside = grid[((grid - point) ** 2).sum(1) < radius ** 2]
            mask[tuple(inside.T)] = True
    image = (2 * ndi.gaussian_filter(mask.astype(np.float32), 1.0) + rng.normal(0, 0.3, shape)
             + 3 * ndi.gaussian_filter(rng.normal(0, 1, shape), 8))
    return image.astype(np.float32), mask.astype(np.uint8), (1.0, 1.0, 1.0)


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


class ForestParamsResponder(FirstResponder):
    """The first responder whose extremely randomised trees take other scikit-learn parameters."""

    def __init__(self, *args, params: dict, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.params = params

    def new_forest(self):
        forest = super().new_forest()
        return forest.set_params(**self.params)


class RandomForestResponder(ForestParamsResponder):
    """The first responder with a random forest (best split of a few columns on a bootstrap sample) of as many
    trees in place of the extremely randomised trees (a random threshold per column)."""

    def new_forest(self):
        from sklearn.ensemble import RandomForestClassifier

        forest = RandomForestClassifier(self.config.trees, random_state=self.seed, n_jobs=torch.get_num_threads())
        return forest.set_params(**self.params)


def summarise(path: str) -> None:
    """The mean Dice over seeds of each column of a printed run, per volume and protocol (markdown)."""
    rows: dict[tuple[str, str], list[list[float]]] = {}
    header = []
    for line in open(path):
        if line.startswith("#"):  # the command and the machine
            continue
        cells = [c.strip() for c in line.split("|")]
        if line.startswith("volume"):
            header = [c.replace(" Dice (s)", "") for c in cells[1:]]
            continue
        name, protocol, _ = cells[0].split()
        rows.setdefault((name, protocol), []).append([float(c.split()[0]) for c in cells[1:]])
    header = header[:len(next(iter(rows.values()))[0])]  # a run without the baseline printed no rf100 column
    baseline = header[-1] == "rf100"
    last = max(i for i, h in enumerate(header) if h.startswith("stage "))
    print("| volume | protocol | " + " | ".join(header) + f" | {header[last]} − stage 1 |"
          + (f" {header[last]} − rf100 |" if baseline else ""))
    print("|---" * (len(header) + 3 + baseline) + "|")
    for (name, protocol), values in rows.items():
        mean = np.mean(values, axis=0)
        diffs = f" | {mean[last] - mean[0]:+.3f} |" + (f" {mean[last] - mean[-1]:+.3f} |" if baseline else "")
        print(f"| {name} | {protocol} | " + " | ".join(f"{v:.3f}" for v in mean) + diffs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*")
    ap.add_argument("--sample", action="store_true")
    ap.add_argument("--tubes", action="store_true", help="also a synthetic volume of thin tubes (see above)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--protocols", nargs="+", default=list(PROTOCOLS))
    ap.add_argument("--stages", type=int, default=ResponderConfig().stages,
                    help="stages fitted (default: the product's)")
    ap.add_argument("--contexts", nargs="*", default=[], metavar="SCALES[+raw]")
    ap.add_argument("--no-baseline", action="store_true", help="skip the 100-tree random forest")
    ap.add_argument("--from", dest="from_file", help="summarise this printed run instead")
    ap.add_argument("--trees", type=int, help="trees per forest (default: the product's ResponderConfig.trees)")
    ap.add_argument("--forest-params", type=json.loads, default={}, metavar="JSON",
                    help='ExtraTreesClassifier parameters for every forest, e.g. \'{"min_samples_leaf": 2}\'')
    ap.add_argument("--max-samples", type=int,
                    help="labeled voxels each forest is fitted on (default: the product's ResponderConfig.max_samples)")
    ap.add_argument("--prior-shift", type=float,
                    help="ResponderConfig.prior_shift (default: the product's; 0: forests keep the labels' shares)")
    ap.add_argument("--forest", choices=("extra", "random"), default="extra",
                    help="extremely randomised trees (the product's) or a random forest of as many trees")
    ap.add_argument("--contrast-from-strokes", action="store_true",
                    help="read the local contrast columns from labels of any plane coverage")
    args = ap.parse_args()
    if args.from_file:
        summarise(args.from_file)
        return
    if args.contexts and args.stages < 2:
        ap.error("--contexts vary the later stages: give --stages 2 or more")
    torch.set_num_threads(2)
    config = ResponderConfig(stages=args.stages, **({"trees": args.trees} if args.trees else {}),
                             **({"max_samples": args.max_samples} if args.max_samples else {}),
                             **({} if args.prior_shift is None else {"prior_shift": args.prior_shift}))
    if args.contrast_from_strokes:
        forest_plan.CONTRAST_MIN_COVERAGE = 0.0
    print("volume protocol seed | " + "".join(f"stage {i} Dice (s) | " for i in range(1, args.stages + 1))
          + "".join(f"{c} Dice (s) | " for c in args.contexts) + "rf100 Dice (s)")
    volumes = load_volumes(args.files, args.sample, args.tubes)
    for name, image, truth, spacing in volumes:
        for protocol, seed, annotation, volume, features in labeled_runs(image, truth, spacing, args.protocols,
                                                                         args.seeds):
            cells = []
            variants = [None] + [parse_context(c) for c in args.contexts]
            for variant in variants:
                kind = RandomForestResponder if args.forest == "random" else ForestParamsResponder
                responder = kind(image, volume, config, seed=seed, features=features,
                                 params=args.forest_params) if variant is None \
                    else VariantResponder(image, volume, config, seed=seed, features=features, sigmas=variant[0],
                                          raw=variant[1])
                t0 = time.perf_counter()
                responder.fit()
                proba = responder.predict()
                if variant is None:
                    cells.append(f"{dice_fg(truth, proba.argmax(0)):.3f} ({time.perf_counter() - t0:.1f})")
                while responder.refine(proba):
                    proba = responder.predict()
                    if variant is None or responder.refined:
                        cells.append(f"{dice_fg(truth, proba.argmax(0)):.3f} ({time.perf_counter() - t0:.1f})")
            if not args.no_baseline:
                t0 = time.perf_counter()
                rf = dice_fg(truth, random_forest_segment(image, annotation, spacing, seed=seed))
                cells.append(f"{rf:.3f} ({time.perf_counter() - t0:.1f})")
            print(f"{name} {protocol} {seed} | " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
