"""Synthetic volumes of shapes the shared files do not have, for the product's loop and the first responder.

    python benchmarks/odd_shapes.py --write /tmp/odd
    for f in /tmp/odd/*.npz; do for p in z:1 scribble:3 ortho:1 suggest:3; do
      napari-sparseseg evaluate $f --protocol $p --budget-seconds 20 --device cpu --baselines rf; done; done
    python benchmarks/autocontext.py /tmp/odd/*.npz --seeds 0 --protocols z:1 scribble:3
    python benchmarks/odd_shapes.py --bf16-check   # the verdict of core/bf16_check.py on a few patches

Writes five ``.npz`` files (``image``, ``labels`` in mask encoding, ``spacing``), each deterministic:
``flat_em`` (6 x 200 x 200, uint8, spacing 8:1:1: a few serial sections, the whole stack one training patch),
``tiny`` (12 x 48 x 48), ``elongated`` (40 x 300 x 40, spacing 4:1:1), ``six_classes`` (48 x 96 x 96, six
classes of equal share) and ``thin_lines`` (32 x 96 x 96: one-voxel lines along y and z, 0.5 % of the volume).
The labels are smoothed noise cut at its quantiles (blobs of every class touching each other), the image the
labels plus noise, blurred. Made to find crashes and weak spots on volumes nobody tuned for, not to score the
product.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

#: name: (shape, classes, blob sigma in voxels, spacing)
BLOBS = {
    "flat_em": ((6, 200, 200), 2, (0.5, 4, 4), (8.0, 1.0, 1.0)),
    "tiny": ((12, 48, 48), 2, 3, (1.0, 1.0, 1.0)),
    "elongated": ((40, 300, 40), 2, (2, 6, 2), (4.0, 1.0, 1.0)),
    "six_classes": ((48, 96, 96), 6, 5, (1.0, 1.0, 1.0)),
}


def write_volumes(out: Path) -> list[Path]:
    """Write the volumes into ``out``; returns their paths."""
    rng = np.random.default_rng(0)  # one generator for all, in this order: the files are the same on every run

    def image_from(labels: np.ndarray, noise: float) -> np.ndarray:
        return ndi.gaussian_filter(labels.astype(np.float32) + noise * rng.standard_normal(labels.shape), 0.7)

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (shape, k, sigma, spacing) in BLOBS.items():
        field = ndi.gaussian_filter(rng.standard_normal(shape), sigma)
        labels = np.digitize(field, np.quantile(field, np.linspace(0, 1, k + 1)[1:-1])).astype(np.uint8)
        image = image_from(labels, 0.5)
        if name == "flat_em":
            image = np.clip(image * 60 + 80, 0, 255).astype(np.uint8)
        paths.append(out / f"{name}.npz")
        np.savez(paths[-1], image=image, labels=labels, spacing=np.array(spacing))
    labels = np.zeros((32, 96, 96), np.uint8)
    for _ in range(12):
        z, y = rng.integers(2, 30), rng.integers(2, 94)
        labels[z, y, 5:90] = 1
        x = rng.integers(2, 94)
        labels[3:29, rng.integers(2, 94), x] = 1
    paths.append(out / "thin_lines.npz")
    np.savez(paths[-1], image=image_from(labels, 0.3), labels=labels, spacing=np.array((1.0, 1.0, 1.0)))
    return paths


#: (spacing, patch) of the bf16 check: the two that crashed or hung on an AMX CPU, two the planner makes.
CHECKED_PATCHES = (((8.0, 1.0, 1.0), (6, 200, 200)), ((1.0, 1.0, 1.0), (8, 160, 160)),
                   ((1.0, 1.0, 1.0), (24, 96, 96)), ((1.0, 1.0, 1.0), (64, 64, 64)))


def bf16_verdicts() -> None:
    """Print :func:`~napari_sparseseg.core.bf16_check.training_verdict` of the default net for each of
    :data:`CHECKED_PATCHES`, on 2 threads, with the seconds it took."""
    import time

    import torch

    from napari_sparseseg.core.bf16_check import training_verdict
    from napari_sparseseg.core.config import ModelConfig
    from napari_sparseseg.core.device import fast_bf16
    from napari_sparseseg.core.net import UNet3D

    print(f"bf16 fast on this CPU (AMX): {fast_bf16('cpu')}; torch {torch.__version__}")
    for spacing, patch in CHECKED_PATCHES:
        t0 = time.perf_counter()
        verdict = training_verdict(UNet3D(ModelConfig(), spacing), spacing, patch, 1, 2, wait=True)
        print(f"spacing {spacing} patch {patch}: {verdict} in {time.perf_counter() - t0:.1f} s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", type=Path, help="folder to write the volumes into")
    ap.add_argument("--bf16-check", action="store_true", help="print the bf16 check's verdicts (see above)")
    args = ap.parse_args()
    if args.bf16_check:
        bf16_verdicts()
    if args.write is None:
        return
    for path in write_volumes(args.write):
        with np.load(path) as d:
            print(path, d["image"].shape, d["image"].dtype, "class voxels", np.bincount(d["labels"].ravel()).tolist())


if __name__ == "__main__":
    main()
