"""Which pixel classifier can answer within a second: Dice, fit and prediction time on the same filter bank.

    python benchmarks/forest_choice.py --sample ../shared/data/*.npz

For each volume and protocol (z:3, scribble:3): the ilastik filter bank (``core/features.py``) once, then each
classifier fitted on (a class-stratified subsample of) the labeled voxels and predicted on the whole volume;
labeled voxels keep their labels. The 100-tree random forest on 100,000 voxels is the baseline the benchmarks
compare against; the others are candidates for the product's first responder.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

from napari_sparseseg.core.encoding import annotation_to_mask
from napari_sparseseg.core.features import compute_features
from napari_sparseseg.core.first_responder import PREDICT_CHUNK, stratified_subsample
from napari_sparseseg.core.metrics import evaluate_masks
from napari_sparseseg.core.protocols import protocol_mask, simulate_annotation

CANDIDATES = {
    "random forest, 100 trees, 100k voxels (baseline)": (lambda: RandomForestClassifier(100, n_jobs=2,
                                                                                        random_state=0), 100_000),
    "random forest, 32 trees, 20k": (lambda: RandomForestClassifier(32, n_jobs=2, random_state=0), 20_000),
    "extra trees, 32 trees, 30k (first responder)": (lambda: ExtraTreesClassifier(32, n_jobs=2, random_state=0),
                                                     30_000),
    "extra trees, 64 trees, 50k": (lambda: ExtraTreesClassifier(64, n_jobs=2, random_state=0), 50_000),
}


def load(name: str):
    if name == "sample":
        from napari_sparseseg.sample_data import make_cells_volume

        v = make_cells_volume()
        return "sample_cells", v.image, v.labels, v.spacing
    with np.load(name) as d:
        return name.rsplit("/", 1)[-1][:-4], d["image"], d["labels"], tuple(d["spacing"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*")
    ap.add_argument("--sample", action="store_true")
    args = ap.parse_args()
    for f in (["sample"] if args.sample else []) + args.files:
        name, image, truth, spacing = load(f)
        t0 = time.perf_counter()
        features = compute_features(image, spacing)
        feature_s = time.perf_counter() - t0
        flat = features.reshape(-1, features.shape[-1])
        for protocol in ("z:3", "scribble:3"):
            labeled = protocol_mask(truth.shape, protocol, truth)
            annotation = simulate_annotation(truth, protocol, labeled)
            rows = np.flatnonzero(labeled.ravel())
            classes = annotation_to_mask(annotation).ravel()[rows]
            for label, (make, samples) in CANDIDATES.items():
                pick = stratified_subsample(classes, samples, np.random.default_rng(0))
                t0 = time.perf_counter()
                model = make().fit(flat[rows[pick]], classes[pick])
                fit_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                pred = np.concatenate([model.classes_[model.predict_proba(flat[s:s + PREDICT_CHUNK]).argmax(1)]
                                       for s in range(0, len(flat), PREDICT_CHUNK)]).astype(np.uint8)
                predict_s = time.perf_counter() - t0
                pred = pred.reshape(truth.shape)
                pred[labeled] = truth[labeled]
                dice = evaluate_masks(truth, pred, int(truth.max()) + 1)["dice_fg"]
                print(f"| {name} | {protocol} | {label} | {dice:.3f} | {fit_s:.2f} | {predict_s:.1f} | "
                      f"{feature_s:.1f} |", flush=True)


if __name__ == "__main__":
    main()
