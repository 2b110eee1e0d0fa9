"""Why the first responder moves towards the volume's class shares from strokes: the shares the labels paint, the
shares of the volume, and what the forests do with them.

    python benchmarks/stroke_shares.py ../shared/data/*.npz --sample --tubes --protocols z:3 scribble:3

For each volume and protocol (seed 0): the foreground share of the labels and of the volume; the three-stage first
responder's foreground precision and recall with ``ResponderConfig.prior_shift`` 0 and with the product's, and
the product's shift itself: each class's estimated volume share over its label share (``core/prior_shift.py``,
the last stage's forest). Float32 on the CPU, 2 threads.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from helpers import labeled_runs, load_volumes

from napari_sparseseg.core.config import ResponderConfig
from napari_sparseseg.core.first_responder import FirstResponder


def run(image, volume, features, seed: int, shift: float) -> tuple[np.ndarray, object]:
    """The last stage's probabilities ``(K + 1, z, y, x)`` and its forest."""
    responder = FirstResponder(image, volume, ResponderConfig(prior_shift=shift), seed=seed, features=features)
    responder.fit()
    proba = responder.predict()
    while responder.refine(proba):
        proba = responder.predict()
    return proba, responder._forest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*")
    ap.add_argument("--sample", action="store_true")
    ap.add_argument("--tubes", action="store_true", help="also the thin tubes of benchmarks/autocontext.py")
    ap.add_argument("--protocols", nargs="+", default=["z:3", "scribble:3"])
    args = ap.parse_args()
    torch.set_num_threads(2)
    volumes = load_volumes(args.files, args.sample, args.tubes)
    print("volume protocol | coverage | labels fg share | volume fg share | precision / recall, no shift | "
          "with the shift | volume share / label share per class (last stage)")
    for name, image, truth, spacing in volumes:
        for protocol, seed, annotation, volume, features in labeled_runs(image, truth, spacing, args.protocols, [0]):
            labeled = annotation[annotation > 0]
            cells = [f"{volume.plane_coverage():.2f}", f"{np.mean(labeled > 1):.3f}", f"{np.mean(truth > 0):.3f}"]
            for shift in (0.0, ResponderConfig().prior_shift):
                proba, forest = run(image, volume, features, seed, shift)
                mask, true = proba.argmax(0) > 0, truth > 0
                hit = np.logical_and(mask, true).sum()
                cells.append(f"{hit / max(1, mask.sum()):.3f} / {hit / max(1, true.sum()):.3f}")
            weights = getattr(forest, "weights", None)
            tau = ResponderConfig().prior_shift * (1 - volume.plane_coverage())
            ratios = "none (whole slices)" if weights is None else " ".join(f"{w ** (1 / tau):.3f}" for w in weights)
            print(f"{name} {protocol} | " + " | ".join(cells) + f" | {ratios}", flush=True)


if __name__ == "__main__":
    main()
