"""Seconds of the first responder's filter bank computed in one thread and in several, on the same volumes.

    python benchmarks/feature_threads.py ../shared/data/*.npz --sample --workers 2

For each volume (each image channel it holds as ``image``), ``core.features.compute_features(..., contrast=True)``
with ``workers=1`` and with ``--workers`` threads, the best of ``--repeats`` each, in the same process: the seconds,
their ratio, and whether the two stacks are identical (they must be).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from helpers import load_volumes

from napari_sparseseg.core.features import compute_features


def best_seconds(image, spacing, workers: int, repeats: int) -> tuple[float, np.ndarray]:
    """The fastest of ``repeats`` computations, and the stack."""
    best, stack = np.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        stack = compute_features(image, spacing, contrast=True, workers=workers)
        best = min(best, time.perf_counter() - t0)
    return best, stack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*")
    parser.add_argument("--sample", action="store_true")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(f"volume | Mvoxel | 1 thread s | {args.workers} threads s | speed-up | identical")
    for name, image, _, spacing in load_volumes(args.files, args.sample):
        one, a = best_seconds(image, spacing, 1, args.repeats)
        many, b = best_seconds(image, spacing, args.workers, args.repeats)
        print(f"{name} | {image.size / 1e6:.1f} | {one:.2f} | {many:.2f} | {one / many:.2f}x | "
              f"{np.array_equal(a, b)}", flush=True)


if __name__ == "__main__":
    main()
