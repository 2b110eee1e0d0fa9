"""Separate objects: object-level F1 of the watershed split (``core/instances.py``) against connected components.

    python benchmarks/instances.py --sample ../shared/data/gonuclear_1135_plant_nuclei.npz \\
        ../shared/data/msd_spleen_ct_crop.npz --seeds 0 1 2 --depth-shares 0.1 0.25 0.4

For each volume with instance ground truth (an ``instances`` array in the ``.npz``; the synthetic sample's
nuclei and vesicles) and each protocol, the class mask is split into objects by connected components (touching
objects merge), by connected components without the specks (components far smaller than the typical one) and
by the seeded watershed at each ``h`` share (specks left out too); printed are the F1 at IoU 0.5 and the counts of
merged and split objects. Masks: the ground truth's own (what splitting alone can reach) and the first
responder's (the forest shown, fitted on every label of the protocol; one row per seed). A volume without
instances (one organ) prints the number of objects each method makes of it, which should stay 1 per class.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from helpers import labeled_runs, load_volumes

from napari_sparseseg.core.config import ResponderConfig
from napari_sparseseg.core.first_responder import FirstResponder
from napari_sparseseg.core.instances import DEPTH_SHARE, connected_objects, split_instances
from napari_sparseseg.evaluation.metrics import object_scores


def instance_truth(name: str, files: list[str]) -> np.ndarray | None:
    """The instance ground truth of a volume (None when it has none)."""
    if name == "sample_cells":
        from napari_sparseseg.sample_data import make_cells_volume

        return make_cells_volume().instances
    for f in files:
        if f.rsplit("/", 1)[-1][:-4] == name:
            with np.load(f) as d:
                return d["instances"] if "instances" in d.files else None
    return None


def forest_masks(image: np.ndarray, labels: np.ndarray, spacing, protocols, seeds):
    """``(label, mask)`` of the first responder's first stage, fitted on every label of each protocol and seed
    (uint8 class map, labels merged in)."""
    for protocol, seed, annotation, volume, features in labeled_runs(image, labels, spacing, protocols, seeds):
        responder = FirstResponder(image, volume, ResponderConfig(), seed=seed, features=features)
        responder.fit()
        mask = np.where(annotation > 0, annotation.astype(np.int64) - 1, responder.predict().argmax(0))
        yield f"forest {protocol} seed {seed}", mask.astype(np.uint8)


def row(label: str, mask: np.ndarray, spacing, truth: np.ndarray | None, shares: list[float]) -> str:
    cells = []
    for method, objects in [("cc", connected_objects(mask)), ("cc-specks", split_instances(mask, classes=()))] + [
            (f"ws {s:g}", split_instances(mask, spacing, depth_share=s)) for s in shares]:
        if truth is None:
            cells.append(f"{method}: {int(objects.max())} objects")
        else:
            r = object_scores(truth, objects)
            cells.append(f"{method}: F1 {r['f1']:.3f} ({r['n_predicted']}/{r['n_true']}, "
                         f"merged {r['merged']}, split {r['split']})")
    return f"  {label:28s} " + " | ".join(cells)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*")
    ap.add_argument("--sample", action="store_true")
    ap.add_argument("--protocols", nargs="+", default=["z:3", "scribble:3"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--depth-shares", type=float, nargs="+", default=[DEPTH_SHARE])
    args = ap.parse_args()
    torch.set_num_threads(2)
    for name, image, labels, spacing in load_volumes(args.files, args.sample):
        truth = instance_truth(name, args.files)
        print(f"{name} ({'instances' if truth is not None else 'no instances'}; "
              f"{int(truth.max()) if truth is not None else 'n/a'} objects)")
        print(row("ground-truth mask", labels, spacing, truth, args.depth_shares))
        for label, mask in forest_masks(image, labels, spacing, args.protocols, args.seeds):
            print(row(label, mask, spacing, truth, args.depth_shares), flush=True)


if __name__ == "__main__":
    main()
