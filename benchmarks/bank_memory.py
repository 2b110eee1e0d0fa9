"""The memory the first responder's filter bank takes while it is computed, beyond the bank itself.

    python benchmarks/bank_memory.py --shape 96 128 128 --workers 1 2
    git worktree add /tmp/before REV && python benchmarks/bank_memory.py --before /tmp/before   # beside older code

For each worker count: ``compute_features`` (the product's bank: every scale and the local contrast columns, float32
and float16) on the synthetic sample of ``--shape``, with NumPy's allocations traced (``tracemalloc``: exact, not
sampled). Printed: the traced peak less the bank, as float32 copies of the volume, and the seconds. ``--before DIR``
runs the same in another checkout of the package, in a fresh process each, for a before/after on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(shape: tuple[int, int, int], workers: int) -> list[dict]:
    """The traced peak beyond the bank, in float32 copies of the volume, and the seconds, per bank precision."""
    import time
    import tracemalloc

    import numpy as np

    from napari_sparseseg.core.features import compute_features
    from napari_sparseseg.sample_data import make_cells_volume

    volume = make_cells_volume(shape)
    rows = []
    for dtype in (np.float32, np.float16):
        tracemalloc.start()
        t0 = time.perf_counter()
        bank = compute_features(volume.image, volume.spacing, contrast=True, workers=workers, dtype=dtype)
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        rows.append({"dtype": np.dtype(dtype).name, "copies": (peak - bank.nbytes) / (4 * volume.image.size),
                     "seconds": seconds})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[96, 128, 128])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--before", help="another checkout of the package, measured beside the current one")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a worker count, measured in this process
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(measure(tuple(args.shape), args.one)))
        return
    codes = [("now", ROOT)] + ([("before", Path(args.before).resolve())] if args.before else [])
    for workers in args.workers:
        for name, root in codes:
            env = dict(os.environ, PYTHONPATH=str(root))
            out = subprocess.run([sys.executable, __file__, "--one", str(workers), "--shape", *map(str, args.shape)],
                                 check=True, capture_output=True, text=True, env=env, cwd=root).stdout
            for row in json.loads(out.strip().splitlines()[-1]):
                print(f"{name:6s} {workers} worker(s), {row['dtype']} bank: {row['copies']:.1f} float32 copies of "
                      f"the volume beside the bank, {row['seconds']:.1f} s", flush=True)


if __name__ == "__main__":
    main()
