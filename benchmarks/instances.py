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

``--seam-widths W ...`` tries a boundary-aware training target: the simulated user also paints the seams between
touching objects (the voxels of an object next to another one, grown to ``W`` voxels) as one more class; the forest
learns it like any class (no weight on unlabeled voxels), the predicted seams are cut from the mask before the
split and the objects grown back over them. Printed per seam width: the seams' Dice, the object F1 and the
foreground Dice beside the same run without seams. ``--net-steps N`` does the same with the net alone, trained ``N``
steps (float32 on the CPU) on each protocol's labels, for the first seed.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from helpers import clock_in_steps, labeled_runs, load_volumes

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


def seam_voxels(instances: np.ndarray, width: int) -> np.ndarray:
    """bool ``(z, y, x)``: voxels of an object with another object among their 6 neighbours, grown to ``width``
    voxels inside the objects."""
    from scipy import ndimage as ndi

    seams = np.zeros(instances.shape, bool)
    for axis in range(3):
        a = [slice(None)] * 3
        b = [slice(None)] * 3
        a[axis], b[axis] = slice(1, None), slice(None, -1)
        touch = (instances[tuple(a)] > 0) & (instances[tuple(b)] > 0) & (instances[tuple(a)] != instances[tuple(b)])
        seams[tuple(a)] |= touch
        seams[tuple(b)] |= touch
    if width > 1:
        seams = ndi.binary_dilation(seams, iterations=width - 1) & (instances > 0)
    return seams


def split_along_seams(mask: np.ndarray, spacing, seam_class: int) -> np.ndarray:
    """Objects of a class map whose class ``seam_class`` marks seams: cut there, split, grown back over them."""
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    objects = split_instances(np.where(mask == seam_class, 0, mask).astype(np.uint8), spacing)
    distance = ndi.distance_transform_edt(objects == 0, sampling=spacing)
    return watershed(distance, objects, mask=mask > 0).astype(np.uint32)


def seam_rows(image, labels, truth, spacing, protocols, seeds, widths) -> None:
    """The forest with and without a seam class, same labels otherwise (see the module docstring)."""
    k = int(labels.max())
    fg = labels > 0
    dice = lambda a, b: 2 * np.sum(a & b) / max(np.sum(a) + np.sum(b), 1)  # noqa: E731
    plain = {(p, s): m for (p, s), m in _masks(image, labels, spacing, protocols, seeds)}
    for width in widths:
        seams = seam_voxels(truth, width)
        with_seams = np.where(seams, k + 1, labels).astype(np.uint8)
        print(f"  seams of {width} voxel(s): {seams.sum() / max(fg.sum(), 1):.2%} of the foreground")
        for (protocol, seed), mask in _masks(image, with_seams, spacing, protocols, seeds):
            base = plain[protocol, seed]
            f1 = object_scores(truth, split_instances(base, spacing))["f1"]
            f1_seams = object_scores(truth, split_along_seams(mask, spacing, k + 1))["f1"]
            print(f"    {protocol} seed {seed}: seam Dice {dice(mask == k + 1, seams):.3f}; object F1 {f1:.3f} -> "
                  f"{f1_seams:.3f}; foreground Dice {dice(base > 0, fg):.3f} -> {dice(mask > 0, fg):.3f}", flush=True)


def net_seam_rows(image, labels, truth, spacing, protocols, seed, widths, steps) -> None:
    """The net alone with and without a seam class (see the module docstring)."""
    from napari_sparseseg.core.config import SessionConfig, TrainConfig
    from napari_sparseseg.core.session import SegmentationSession
    from napari_sparseseg.evaluation.protocols import simulate_annotation

    config = SessionConfig(train=TrainConfig(amp=False, seed=seed), responder=ResponderConfig(enabled=False),
                           device="cpu")
    clock_in_steps(1.0)  # the learning rate decays, and the guards act, over exactly ``steps`` steps
    k, fg = int(labels.max()), labels > 0
    dice = lambda a, b: 2 * np.sum(a & b) / max(np.sum(a) + np.sum(b), 1)  # noqa: E731

    def net_mask(truth_classes: np.ndarray, protocol: str) -> np.ndarray:
        annotation = simulate_annotation(truth_classes, protocol)
        session = SegmentationSession(image, num_classes=int(truth_classes.max()), spacing=spacing,
                                      annotation=annotation, config=config)
        for _ in session.train(max_steps=steps, decay_until=float(steps)):
            pass
        return session.segment()

    for protocol in protocols:
        base = net_mask(labels, protocol)
        f1 = object_scores(truth, split_instances(base, spacing))["f1"]
        for width in widths:
            seams = seam_voxels(truth, width)
            mask = net_mask(np.where(seams, k + 1, labels).astype(np.uint8), protocol)
            f1_seams = object_scores(truth, split_along_seams(mask, spacing, k + 1))["f1"]
            print(f"  net, {steps} steps, seams of {width}, {protocol} seed {seed}: seam Dice "
                  f"{dice(mask == k + 1, seams):.3f}; object F1 {f1:.3f} -> {f1_seams:.3f}; foreground Dice "
                  f"{dice(base > 0, fg):.3f} -> {dice(mask > 0, fg):.3f}", flush=True)


def _masks(image, labels, spacing, protocols, seeds):
    for label, mask in forest_masks(image, labels, spacing, protocols, seeds):
        _, protocol, _, seed = label.split()
        yield (protocol, int(seed)), mask


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
    ap.add_argument("--seam-widths", type=int, nargs="+", default=[],
                    help="also train the forest with a seam class of these widths (voxels)")
    ap.add_argument("--net-steps", type=int, default=0, help="with --seam-widths: the net alone, this many steps")
    args = ap.parse_args()
    torch.set_num_threads(2)
    for name, image, labels, spacing in load_volumes(args.files, args.sample):
        truth = instance_truth(name, args.files)
        print(f"{name} ({'instances' if truth is not None else 'no instances'}; "
              f"{int(truth.max()) if truth is not None else 'n/a'} objects)")
        print(row("ground-truth mask", labels, spacing, truth, args.depth_shares))
        if args.seam_widths:
            if truth is not None and args.net_steps:
                net_seam_rows(image, labels, truth, spacing, args.protocols, args.seeds[0], args.seam_widths,
                              args.net_steps)
            elif truth is not None:
                seam_rows(image, labels, truth, spacing, args.protocols, args.seeds, args.seam_widths)
            else:
                print("  no instance ground truth: no seams to paint")
            continue
        for label, mask in forest_masks(image, labels, spacing, args.protocols, args.seeds):
            print(row(label, mask, spacing, truth, args.depth_shares), flush=True)


if __name__ == "__main__":
    main()
