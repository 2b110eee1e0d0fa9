"""How far is the suggested third slice from the best third slice? An upper bound for the suggestions' target.

    python benchmarks/suggestions_oracle.py --sample ../shared/data/*.npz --step 8 --seed 0

The simulated user of ``suggestions.py`` (the middle z slice, then the top suggestion, the first responder's mask
after each) is stopped at two slices; then every plane ``--step`` apart in each orientation, and the top five
suggestions, is tried as the third slice. Prints the Dice of the mask shown after the suggested third slice, after
the best one tried (an oracle that knows the ground truth), the median one, and the evenly spaced z:5 of the
target ("the Dice of evenly spaced z:5 with at most three slices").
"""

from __future__ import annotations

import argparse
import functools

import numpy as np
import torch
from helpers import load_volumes
from suggestions import _plane, dice_fg

from napari_sparseseg.core.annotation import AnnotatedVolume
from napari_sparseseg.core.config import ResponderConfig
from napari_sparseseg.core.encoding import mask_to_annotation
from napari_sparseseg.core.feature_stack import FeatureStack
from napari_sparseseg.core.first_responder import FirstResponder
from napari_sparseseg.core.guidance import suggest_slices
from napari_sparseseg.core.inference import entropy
from napari_sparseseg.evaluation.protocols import slice_positions


def shown_after(image, truth, spacing, features, painted, *, seed: int):
    """``(Dice, probabilities, annotation)`` of the first responder's mask (every stage) after ``painted`` planes."""
    annotation = np.zeros(truth.shape, np.uint8)
    for axis, index in painted:
        annotation[_plane(axis, index)] = mask_to_annotation(truth[_plane(axis, index)])
    volume = AnnotatedVolume(image, num_classes=int(truth.max()), spacing=spacing, annotation=annotation)
    responder = FirstResponder(image, volume, ResponderConfig(), seed=seed, features=features)
    responder.fit()
    while responder.refine():
        pass
    probs = responder.predict()
    shown = np.where(annotation > 0, annotation.astype(np.int64) - 1, probs.argmax(0))
    return dice_fg(truth, shown), probs, annotation


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*")
    ap.add_argument("--sample", action="store_true")
    ap.add_argument("--step", type=int, default=8, help="planes between two third slices tried, each orientation")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(2)
    print("volume | K=2 slices (Dice) | third: suggested | best tried (slice) | median tried | even z:5")
    for name, image, truth, spacing in load_volumes(args.files, args.sample):
        features = FeatureStack(image, spacing)
        run = functools.partial(shown_after, image, truth, spacing, features, seed=args.seed)
        painted = [(0, slice_positions(truth.shape[0], 1)[0])]  # z:1's slice
        _, probs, annotation = run(painted)
        first = suggest_slices(entropy(probs), annotation > 0, top=1)[0]
        painted.append((first.axis, first.index))
        two, probs, annotation = run(painted)
        suggested = suggest_slices(entropy(probs), annotation > 0, top=5)
        tried = {(s.axis, s.index): run(painted + [(s.axis, s.index)])[0] for s in suggested}
        for axis in range(3):
            for index in range(args.step // 2, truth.shape[axis], args.step):
                if (axis, index) not in tried and (axis, index) not in painted:
                    tried[axis, index] = run(painted + [(axis, index)])[0]
        best = max(tried, key=tried.get)
        even5 = run([(0, z) for z in slice_positions(truth.shape[0], 5)])[0]
        top = (suggested[0].axis, suggested[0].index)
        print(f"{name} | {painted} ({two:.4f}) | {tried[top]:.4f} {top} | {tried[best]:.4f} {best} | "
              f"{np.median(list(tried.values())):.4f} ({len(tried)} tried) | {even5:.4f}", flush=True)


if __name__ == "__main__":
    main()
