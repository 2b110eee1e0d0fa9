"""Other rules for where to paint next, against the product's, with the simulated user of suggestions.py.

    python benchmarks/suggestion_rules.py RULE ../shared/data/*.npz     # RULE: base, reach, both or experr

The user of ``benchmarks/suggestions.py`` (the middle z slice, then the top suggestion painted whole from the
ground truth, the three-stage first responder after each; three seeds, up to 4 slices) with the suggestion made by:

- ``base``: the product's ``core.guidance.suggest_slices`` on the entropy;
- ``reach``: distances in physical units, ``reach`` = the typical object radius of the mask shown
  (``core.instances.typical_objects``, median over classes), ``spread`` 2 planes;
- ``both``: as ``reach``, and ``spread`` that radius in planes of each axis;
- ``experr``: the product's rule on the expected errors (1 - the largest class probability) of every unlabeled
  voxel, no threshold.

Prints each seed's Dice after 1..4 slices and the slices painted, and the mean over seeds.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from helpers import load_volumes
from scipy import ndimage as ndi
from suggestions import _plane, dice_fg

from napari_sparseseg.core import guidance
from napari_sparseseg.core.annotation import AnnotatedVolume
from napari_sparseseg.core.config import ResponderConfig
from napari_sparseseg.core.encoding import mask_to_annotation
from napari_sparseseg.core.feature_stack import FeatureStack
from napari_sparseseg.core.first_responder import FirstResponder
from napari_sparseseg.core.inference import entropy
from napari_sparseseg.core.instances import typical_objects


def suggest(rule: str, probs: np.ndarray, labeled: np.ndarray, shown: np.ndarray, spacing) -> tuple[int, int] | None:
    """``(axis, index)`` of the slice ``rule`` suggests (None: nothing uncertain)."""
    if rule in ("base", "experr"):
        uncertainty = entropy(probs) if rule == "base" else 1.0 - probs.max(0)
        best = guidance.suggest_slices(uncertainty, labeled, top=1, threshold=guidance.UNCERTAIN if rule == "base"
                                       else 0.0)
        return (best[0].axis, best[0].index) if best else None
    typical = typical_objects(shown, spacing)
    radius = float(np.median([r for _, r in typical.values()])) if typical else 3.0 * min(spacing)
    sp = np.asarray(spacing, float)
    uncertainty = entropy(probs)
    uncertain = (uncertainty > guidance.UNCERTAIN) & ~labeled
    mass = np.where(uncertain, uncertainty, 0.0).astype(np.float64)
    if labeled.any() and uncertain.any():
        mass *= 1.0 - np.exp(-((ndi.distance_transform_edt(~labeled, sampling=sp) / radius) ** 2))
    best = None
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        per = ndi.gaussian_filter1d(mass.sum(axis=other), radius / sp[axis] if rule == "both" else 2.0,
                                    mode="constant")
        per[guidance._painted_planes(labeled, axis)] = 0.0
        per[~(mass > 0).any(axis=other)] = 0.0
        i = int(np.argmax(per))
        if per[i] > 0 and (best is None or per[i] > best[0]):
            best = (per[i], axis, i)
    return None if best is None else (best[1], best[2])


def main() -> None:
    rule, files = sys.argv[1], sys.argv[2:]
    torch.set_num_threads(2)
    for name, image, truth, spacing in load_volumes(files, True):
        features = FeatureStack(image, spacing)
        k, n = int(truth.max()), truth.shape[0]
        curves = []
        for seed in (0, 1, 2):
            painted, dices = [(0, n // 2)], []
            for count in range(1, 5):
                annotation = np.zeros(truth.shape, np.uint8)
                for axis, index in painted:
                    annotation[_plane(axis, index)] = mask_to_annotation(truth[_plane(axis, index)])
                volume = AnnotatedVolume(image, num_classes=k, spacing=spacing, annotation=annotation)
                responder = FirstResponder(image, volume, ResponderConfig(), seed=seed, features=features)
                responder.fit()
                while responder.refine():
                    pass
                probs = responder.predict()
                labeled = annotation > 0
                shown = np.where(labeled, annotation.astype(np.int64) - 1, probs.argmax(0))
                dices.append(dice_fg(truth, shown))
                if count == 4:
                    break
                painted.append(suggest(rule, probs, labeled, shown, spacing))
            curves.append(dices)
            print(name, rule, seed, np.round(dices, 3), painted[1:], flush=True)
        print(name, rule, "mean", np.round(np.mean(curves, 0), 3), flush=True)


if __name__ == "__main__":
    main()
