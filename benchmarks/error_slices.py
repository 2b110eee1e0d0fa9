"""Where a run's errors lie, slice by slice: false and missed foreground per axial slice of saved probe maps.

    python benchmarks/stability.py ../shared/data/msd_spleen_ct_crop.npz z:5 --steps 800 --maps maps.npz
    python benchmarks/error_slices.py ../shared/data/msd_spleen_ct_crop.npz maps.npz --steps 200,800 \
        --png docs/ct_z5_kidney.png --slices 1,4,12

For every chosen probe (``--steps``, default all) it prints the foreground Dice and, per slice ``z``, the
voxels predicted foreground where the truth is background (FP) and the reverse (FN). ``--png`` draws the
chosen slices of the first and last chosen probe with the truth (green) and prediction (red) outlined.
"""

from __future__ import annotations

import argparse

import numpy as np

from napari_sparseseg.core.metrics import evaluate_masks


def per_slice_errors(truth: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False-positive and false-negative foreground voxels per axial slice; both ``(z,)`` int arrays."""
    fg, predicted = truth > 0, labels > 0
    return (predicted & ~fg).sum(axis=(1, 2)), (~predicted & fg).sum(axis=(1, 2))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="npz with image, labels (the truth), spacing")
    ap.add_argument("maps", help="class maps saved by stability.py --maps")
    ap.add_argument("--steps", help="comma list of probe steps (default: all)")
    ap.add_argument("--png", help="draw the first and last chosen probe here")
    ap.add_argument("--slices", default="", help="comma list of axial slices to draw")
    args = ap.parse_args(argv)
    with np.load(args.data) as d:
        image, truth = d["image"], d["labels"]
    with np.load(args.maps) as maps:
        available = sorted(int(name[4:]) for name in maps.files)
        steps = [int(s) for s in args.steps.split(",")] if args.steps else available
        probes = {step: maps[f"step{step}"] for step in steps}
    for step, labels in probes.items():
        fp, fn = per_slice_errors(truth, labels)
        dice = evaluate_masks(truth, labels, int(truth.max()) + 1)["dice_fg"]
        print(f"step {step:4d}  dice {dice:.3f}  FP {int(fp.sum())}  FN {int(fn.sum())}")
        print(f"  FP per slice {fp.tolist()}")
        print(f"  FN per slice {fn.tolist()}")
    if args.png:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        zs = [int(z) for z in args.slices.split(",")] if args.slices else [truth.shape[0] // 2]
        shown = [steps[0], steps[-1]]
        lo, hi = np.percentile(image, (1, 99))
        fig, axes = plt.subplots(len(shown), len(zs), figsize=(3 * len(zs), 3 * len(shown)), squeeze=False)
        for row, step in enumerate(shown):
            for col, z in enumerate(zs):
                ax = axes[row, col]
                ax.imshow(np.clip(image[z], lo, hi), cmap="gray")
                ax.contour(truth[z] > 0, levels=[0.5], colors="lime", linewidths=0.8)
                if (probes[step][z] > 0).any():
                    ax.contour(probes[step][z] > 0, levels=[0.5], colors="red", linewidths=0.8)
                ax.set_title(f"step {step}, z = {z}", fontsize=9)
                ax.axis("off")
        fig.tight_layout()
        fig.savefig(args.png, dpi=72)
        print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
