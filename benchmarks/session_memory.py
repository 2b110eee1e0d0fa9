"""Host memory an in-memory session holds per voxel: the figure the widget checks before it reads an image in.

    python benchmarks/session_memory.py --shapes 48,192,192 96,192,192 192,192,192 --seconds 40
    python benchmarks/session_memory.py --predict   # what `predict` holds: a model applied, no session loop
    python benchmarks/session_memory.py --shapes 192,192,192 --classes 8   # the objects in 8 classes, not 2

Each shape runs in its own process: the synthetic sample (``make_cells_volume``, one channel, two classes) at
that shape and z:3 labels, both made before the count starts (as the widget's layers are); then the product's
loop (``SegmentationSession.interactive``: the first responder's three stages, training, predictions of the slice
in view and of the whole volume) for ``--seconds``, and the final segmentation (``segment``, as an export runs
it). Printed per shape: the peak resident memory (psutil, sampled every 50 ms) less the process's before the
session was made, the first responder's bank and context maps (``responder_bytes``, exact), and the rest per
voxel. The slope of a least-squares line of the rest over the shapes is what the session holds per voxel beside its
fixed costs (torch, the model): ``core/footprint.py`` (``SESSION_BYTES_PER_VOXEL``). The peak depends on what the
loop is doing at that instant, so take three shapes or more. Float32 on the CPU, 2 torch threads.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np


def split_classes(labels: np.ndarray, classes: int) -> np.ndarray:
    """The sample's objects (``labels > 0``, each connected component) dealt round-robin into ``classes`` foreground
    classes: a volume of as many classes, its objects and image unchanged."""
    from scipy import ndimage as ndi

    components, n = ndi.label(labels > 0)
    lookup = np.concatenate([[0], np.arange(n) % classes + 1]).astype(np.uint8)
    return lookup[components]


def one(shape: tuple[int, int, int], seconds: float, classes: int | None = None) -> dict:
    import torch
    from larger_than_memory import PeakRSS

    from napari_sparseseg.core.binning import binned_shape
    from napari_sparseseg.core.box import Box
    from napari_sparseseg.core.feature_stack import responder_bytes
    from napari_sparseseg.core.session import SegmentationSession
    from napari_sparseseg.evaluation.protocols import simulate_annotation
    from napari_sparseseg.sample_data import make_cells_volume

    torch.set_num_threads(2)
    volume = make_cells_volume(shape)
    labels = volume.labels if classes is None else split_classes(volume.labels, classes)
    annotation = simulate_annotation(labels, "z:3")
    rss = PeakRSS()
    before = rss.reset()  # the image and the labels painted exist before the session, as in the widget
    session = SegmentationSession(volume.image, num_classes=int(labels.max()), spacing=volume.spacing,
                                  annotation=annotation)
    middle = shape[0] // 2
    view = Box((middle, 0, 0), (middle + 1,) + tuple(shape[1:]))
    end = time.perf_counter() + seconds
    for _ in session.interactive(lambda: view, should_stop=lambda: time.perf_counter() > end):
        pass
    session.segment()
    peak = rss.peak - before
    rss.stop()
    grid = session.responder.grid
    bank = 0 if grid is None else responder_bytes(binned_shape(shape, grid.factors), 1, int(labels.max()),
                                                  grid.itemsize)
    voxels = int(np.prod(shape))
    return {"shape": list(shape), "voxels": voxels, "peak_bytes": int(peak), "responder_bytes": int(bank),
            "rest_per_voxel": (peak - bank) / voxels, "steps": int(session.trainer.step)}


def one_predict(shape: tuple[int, int, int]) -> dict:
    """``predict``'s peak on an image of ``shape`` in memory: a model (the default net, untrained: the weights do not
    change the memory) applied with the final mirrored sliding window, as ``SegmentationSession.from_model`` and
    ``segment`` run it for ``napari-sparseseg predict``."""
    import tempfile
    from pathlib import Path

    import torch
    from larger_than_memory import PeakRSS

    from napari_sparseseg.core.checkpoint import save_model
    from napari_sparseseg.core.session import SegmentationSession
    from napari_sparseseg.sample_data import make_cells_volume

    torch.set_num_threads(2)
    volume = make_cells_volume(shape)
    with tempfile.TemporaryDirectory() as folder:
        small = SegmentationSession(volume.image[:16, :64, :64], num_classes=int(volume.labels.max()),
                                    spacing=volume.spacing)
        model = save_model(small.trainer, Path(folder) / "m.pt")
        del small
        rss = PeakRSS()
        before = rss.reset()  # the image exists before: predict reads it first
        session = SegmentationSession.from_model(volume.image, model, spacing=volume.spacing, device="cpu")
        session.segment()
        peak = rss.peak - before
        rss.stop()
    voxels = int(np.prod(shape))
    return {"shape": list(shape), "voxels": voxels, "peak_bytes": int(peak), "responder_bytes": 0,
            "rest_per_voxel": peak / voxels, "steps": 0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="+", default=["48,192,192", "96,192,192", "192,192,192"])
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--predict", action="store_true", help="measure `predict` (a model applied) instead")
    ap.add_argument("--classes", type=int, help="the sample's objects dealt into this many foreground classes")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        shape = tuple(int(n) for n in args.one.split(","))
        print(json.dumps(one_predict(shape) if args.predict else one(shape, args.seconds, args.classes)), flush=True)
        return
    runs = []
    for shape in args.shapes:
        out = subprocess.run([sys.executable, __file__, "--one", shape, "--seconds", str(args.seconds)]
                             + (["--predict"] if args.predict else [])
                             + (["--classes", str(args.classes)] if args.classes else []),
                             check=True, capture_output=True, text=True).stdout
        run = json.loads(out.strip().splitlines()[-1])
        runs.append(run)
        print(f"{shape}: {run['voxels'] / 1e6:.2f} Mvoxel, peak {run['peak_bytes'] / 2**20:.0f} MiB above the start, "
              f"first responder {run['responder_bytes'] / 2**20:.0f} MiB, the rest {run['rest_per_voxel']:.1f} "
              f"bytes per voxel ({run['steps']} steps)", flush=True)
    if len(runs) >= 2:  # the peak is noisy (what the loop is doing at that instant): a least-squares line
        x = np.array([r["voxels"] for r in runs], np.float64)
        y = np.array([r["peak_bytes"] - r["responder_bytes"] for r in runs], np.float64)
        slope, intercept = np.polyfit(x, y, 1)
        print(f"least squares over {len(runs)} shapes: {slope:.1f} bytes per voxel and {intercept / 2**20:.0f} MiB "
              "beside the first responder's bank and maps")


if __name__ == "__main__":
    main()
