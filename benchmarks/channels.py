"""Does a second channel help? A volume as its first channel alone and as every channel, in the window's loop.

    python benchmarks/channels.py ../shared/data/brats2013_pat0005_mri_tumour_NC_license.npz \\
        --protocols z:3 scribble:3 --seconds 60 --seeds 0 1 2

The BraTS tumour MRI holds FLAIR (``image``) and the contrast-enhanced T1 (``image_t1c``) on one grid; its four
classes show in different sequences. For each protocol and seed, the loop the window and ``train`` run
(``core.shown.run_shown``: the first responder, the net, the hand-over) runs for ``--seconds`` on the first channel,
then on every channel (``image`` and each ``image_*`` array of its shape, channel axis 0), the same labels and seed.
Printed, of the mask shown at the end (labels merged in): who it is, the foreground Dice, the mean IoU over the
classes (background left out) and each class's Dice. 2 torch threads; one run at a time (wall-clock budgets).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from napari_sparseseg.core.config import SessionConfig, TrainConfig
from napari_sparseseg.core.session import SegmentationSession
from napari_sparseseg.core.shown import final_mask, run_shown
from napari_sparseseg.evaluation.metrics import evaluate_masks
from napari_sparseseg.evaluation.protocols import simulate_annotation


def channels_of(path: str) -> tuple[np.ndarray, np.ndarray, tuple[float, ...], list[str]]:
    """``(image (c, z, y, x), labels, spacing, channel names)``: ``image`` first, then each ``image_*`` of its shape."""
    with np.load(path) as d:
        names = ["image"] + sorted(k for k in d.files if k.startswith("image_") and d[k].shape == d["image"].shape)
        return (np.stack([d[n].astype(np.float32) for n in names]), d["labels"],
                tuple(float(s) for s in d["spacing"]), names)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("--protocols", nargs="+", default=["z:3", "scribble:3"])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    torch.set_num_threads(2)
    image, truth, spacing, names = channels_of(args.file)
    if len(names) < 2:
        ap.error(f"{args.file}: one channel only ({names})")
    k = int(truth.max())
    print(f"# {args.file}: channels {names}, {k} classes, {args.seconds:g} s of the window's loop, 2 threads")
    print("protocol seed channels | shown | fg Dice | mIoU (classes) | Dice per class | s")
    for protocol in args.protocols:
        annotation = simulate_annotation(truth, protocol)
        for seed in args.seeds:
            for label, data, axis in (("first", image[0], None), ("all", image, 0)):
                session = SegmentationSession(data, num_classes=k, spacing=spacing, annotation=annotation,
                                              channel_axis=axis, config=SessionConfig(train=TrainConfig(seed=seed),
                                                                                      device="cpu"))
                t0 = time.perf_counter()
                shown = run_shown(session, args.seconds)
                mask = final_mask(session, shown)
                seconds = time.perf_counter() - t0
                s = evaluate_masks(truth, mask, k + 1)
                print(f"{protocol} {seed} {label} | {shown.written} | {s['dice_fg']:.3f} | "
                      f"{np.nanmean(s['iou'][1:]):.3f} | {' '.join(f'{v:.3f}' for v in s['dice'][1:])} | "
                      f"{seconds:.0f}", flush=True)


if __name__ == "__main__":
    main()
