"""The self-supervised warm start, measured: the net's Dice over time with and without blind-spot pretraining.

    python benchmarks/warm_start.py --budget 60 --protocol z:3 --pretrain 0,30 \\
        ../shared/data/bbbc050_mouse_embryo_nuclei.npz ../shared/data/msd_spleen_ct_crop.npz

For each file and pretraining time P: P seconds of blind-spot pretraining (``warm_start_pretext.py``) before the
labels are in (what the minutes a user paints would allow), then the product's loop for the budget; prints the
net's own Dice at each instant of the curve and the Dice of the mask shown. Float32 on the CPU.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from warm_start_pretext import pretrain

from napari_sparseseg.core.config import SessionConfig, TrainConfig  # noqa: E402
from napari_sparseseg.core.session import SegmentationSession  # noqa: E402
from napari_sparseseg.evaluation.simulated_user import evaluate_volume  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", help=".npz files with image, labels, spacing")
    ap.add_argument("--budget", type=float, default=60.0)
    ap.add_argument("--protocol", default="z:3")
    ap.add_argument("--pretrain", default="0,30", help="comma list of pretraining seconds")
    args = ap.parse_args()
    torch.set_num_threads(2)
    original = SegmentationSession.warm_up
    for f in args.files:
        with np.load(f) as d:
            image, truth, spacing = d["image"], d["labels"], tuple(d["spacing"])
        for seconds in (float(x) for x in args.pretrain.split(",")):
            steps: list = []

            def warm(self, seconds=seconds, steps=steps):
                original(self)
                steps.extend(pretrain(self.trainer, max_seconds=seconds))

            SegmentationSession.warm_up = warm
            r = evaluate_volume(image, truth, spacing=spacing, protocol=args.protocol, budget_seconds=args.budget,
                                config=SessionConfig(train=TrainConfig(amp=False), device="cpu"))
            net = [(p["seconds"], None if p["dice_fg_net"] is None else round(p["dice_fg_net"], 3))
                   for p in r["curve"]]
            print(f"{Path(f).stem} {args.protocol} pretrain {seconds:g} s ({len(steps)} steps, masked-voxel MSE "
                  f"{steps[0].loss if steps else float('nan'):.3f} -> {steps[-1].loss if steps else float('nan'):.3f})"
                  f": net {net}, shown {r['dice_fg']:.3f} ({r['learner']})", flush=True)
    SegmentationSession.warm_up = original


if __name__ == "__main__":
    main()
