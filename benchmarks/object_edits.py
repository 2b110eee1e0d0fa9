"""Separate objects that learn from the user's merges and splits: object F1 where the user did not edit.

    python benchmarks/object_edits.py --sample ../shared/data/gonuclear_1135_plant_nuclei.npz \\
        ../shared/data/bbbc050_mouse_embryo_nuclei.npz ../shared/data/msd_spleen_ct_crop.npz --seeds 0 1 2

For each volume and mask (the ground truth's own, and the first responder's from each protocol and seed), the
mask is split into objects at the default depth share (``core/instances.py``; ``--start-share`` for another), as
the user first sees them. A
simulated user then corrects up to ``--edits`` objects in the first half of the volume along x, largest error
first: a shown object that holds two or more true objects is painted with the true objects' labels (a split), and
true objects cut into pieces get the label of their largest piece (a merge). The split learns a depth share from
those edits (``core/object_edits.py``) and splits the mask again. Printed: the object F1 at IoU 0.5 on the other
half (objects cut at the middle count on each side) at the default share and at the learned one, and the share
learned. Instance truth: the ``instances`` array where a file has one (plant nuclei; the sample's own); else the
connected components of the true mask (one organ; nuclei that touch count as one object there).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from helpers import load_volumes
from instances import forest_masks, instance_truth

from napari_sparseseg.core.instances import DEPTH_SHARE, connected_objects, split_instances
from napari_sparseseg.core.object_edits import PAIR_SHARE, find_edits, fit_depth_share, resplit
from napari_sparseseg.evaluation.metrics import object_scores


def _partners(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> dict[int, list[int]]:
    """For each id of ``a`` in ``where``, the ids of ``b`` covering at least PAIR_SHARE of the smaller of the two."""
    keep = where & (a > 0) & (b > 0)
    keys, counts = np.unique(a[keep].astype(np.int64) * (int(b.max()) + 1) + b[keep], return_counts=True)
    size_a, size_b = np.bincount(a.ravel().astype(np.int64)), np.bincount(b.ravel().astype(np.int64))
    out: dict[int, list[int]] = {}
    for key, n in zip(keys, counts):
        i, j = divmod(int(key), int(b.max()) + 1)
        if n >= PAIR_SHARE * min(size_a[i], size_b[j]):
            out.setdefault(i, []).append(j)
    return out


def simulated_edits(shown: np.ndarray, truth: np.ndarray, half: np.ndarray, count: int) -> np.ndarray:
    """The objects layer after a user corrected up to ``count`` merge or split errors lying in ``half``."""
    edited = shown.copy()
    sizes = np.bincount(shown.ravel().astype(np.int64))
    errors = [(sizes[s], "split", s, t) for s, t in _partners(shown, truth, half).items() if len(t) > 1]
    tsizes = np.bincount(truth.ravel().astype(np.int64))
    errors += [(tsizes[t], "merge", t, s) for t, s in _partners(truth, shown, half).items() if len(s) > 1]
    next_id = int(shown.max()) + 1
    for _, kind, obj, parts in sorted(errors, key=lambda e: -e[0])[:count]:
        if kind == "split":  # the shown object holds several true ones: paint each its own label
            inside = shown == obj
            for t in parts:
                edited[inside & (truth == t)] = next_id
                next_id += 1
        else:  # a true object in several shown pieces: the largest piece's label over the others
            keep = max(parts, key=lambda s: sizes[s])
            edited[np.isin(shown, parts) & (truth == obj)] = keep
    return edited


def row(label: str, mask: np.ndarray, truth: np.ndarray, spacing, count: int,
        start: float) -> tuple[float, float, float]:
    half = np.zeros(mask.shape, bool)
    half[..., : mask.shape[-1] // 2] = True
    shown = split_instances(mask, spacing, depth_share=start)
    edited = simulated_edits(shown, truth, half, count)
    edits = find_edits(shown, edited)
    share = fit_depth_share(mask, edited, edits.touched, spacing, current=start)
    learned = resplit(mask, edited, edits, share, spacing) if edits.any else shown
    rest = ~half & ~edits.touched  # where the user did not edit (a region edited may reach past the middle)
    before = object_scores(np.where(rest, truth, 0), np.where(rest, shown, 0))["f1"]
    after = object_scores(np.where(rest, truth, 0), np.where(rest, learned, 0))["f1"]
    print(f"  {label:28s} edits: {edits.merges} merges, {edits.splits} splits | F1 on the other half: shown "
          f"{before:.3f} -> learned {after:.3f} ({after - before:+.3f}), share {start:g} -> {share:g}",
          flush=True)
    return before, after, share


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*")
    ap.add_argument("--sample", action="store_true")
    ap.add_argument("--protocols", nargs="+", default=["z:3", "scribble:3"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--edits", type=int, default=3, help="objects the simulated user corrects")
    ap.add_argument("--start-share", type=float, default=DEPTH_SHARE,
                    help="depth share of the split first shown (the default; 0.05 or 1.0: a split too shallow or "
                         "too deep for the objects, which the edits should mend)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    for name, image, labels, spacing in load_volumes(args.files, args.sample):
        truth = instance_truth(name, args.files)
        source = "instances" if truth is not None else "connected components of the true mask"
        truth = truth if truth is not None else connected_objects(labels)
        print(f"{name} ({source}; {int(truth.max())} objects)")
        rows = [row("ground-truth mask", labels, truth, spacing, args.edits, args.start_share)]
        for label, mask in forest_masks(image, labels, spacing, args.protocols, args.seeds):
            rows.append(row(label, mask, truth, spacing, args.edits, args.start_share))
        gains = np.array([a - b for b, a, _ in rows])
        print(f"  mean gain {gains.mean():+.3f}, worst {gains.min():+.3f}, better on {int((gains > 0.005).sum())} "
              f"and worse on {int((gains < -0.005).sum())} of {len(rows)}")


if __name__ == "__main__":
    main()
