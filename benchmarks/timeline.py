"""When each thing reaches the user: the seconds of every event of the plugin's loop after the labels are in.

    python benchmarks/timeline.py /tmp/large/sample_cells_96x512x512.npz --protocol z:3 --seconds 75

Opens a session on the volume with labels simulated by ``--protocol``, computes the first responder's filter bank
first (as the plugin does while the user paints; its seconds are printed), then runs
``SegmentationSession.interactive`` with the middle z slice in view and prints the seconds since the labels went in of
each notice, prediction (learner, grid and box; the Dice of a whole-volume one), where-to-paint-next and the 1st, 10th
and 50th training step, until ``--seconds``. ``--cold``: the labels go in the moment the image is opened, so the first
answers come from the bank's preview while the bank computes in the background. ``--threads`` torch threads; the net
trains as the product does (bf16 on a CPU with AMX once :mod:`napari_sparseseg.core.bf16_check` allows it), or in
float32 with ``--float32``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from napari_sparseseg.core.box import Box
from napari_sparseseg.core.config import SessionConfig
from napari_sparseseg.core.events import Guidance, Notice, Prediction, TrainStep
from napari_sparseseg.core.session import SegmentationSession
from napari_sparseseg.evaluation.protocols import simulate_annotation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", help=".npz with image, labels, spacing")
    parser.add_argument("--protocol", default="z:3")
    parser.add_argument("--seconds", type=float, default=75.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cold", action="store_true",
                        help="labels in at once: the filter bank is not computed ahead (the preview answers first)")
    parser.add_argument("--float32", action="store_true", help="TrainConfig(amp=False): no bf16, and no bf16 check")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = SessionConfig.from_dict({"train": {"amp": not args.float32}})
    with np.load(args.data) as d:
        image, labels, spacing = d["image"], d["labels"], tuple(float(s) for s in d["spacing"])
    session = SegmentationSession(image, num_classes=int(labels.max()), spacing=spacing,
                                  annotation=simulate_annotation(labels, args.protocol), config=config)
    t0 = time.perf_counter()
    if not args.cold:
        session.warm_up()
    print(f"filter bank {time.perf_counter() - t0:.1f} s on the grid {session.responder.grid} of {image.shape}"
          + (" (not computed ahead)" if args.cold else ""))
    middle = image.shape[0] // 2
    view = Box((middle, 0, 0), (middle + 1,) + image.shape[1:])
    steps = 0
    t0 = time.perf_counter()
    events = session.interactive(lambda: view)
    for event in events:
        t = time.perf_counter() - t0
        if isinstance(event, TrainStep):
            steps += 1
            if steps in (1, 10, 50):
                print(f"{t:6.1f} s  training step {steps}")
        elif isinstance(event, Prediction):
            bank = session.responder._bank
            preview = " (preview)" if bank is not session.responder.features else ""
            grid = "" if event.learner == "net" else f" on bins {bank.factors}{preview}"
            dice = ""
            if event.box.shape == labels.shape:  # the whole volume: its foreground Dice against the truth
                shown, truth = np.asarray(event.labels) > 0, labels > 0
                dice = f", Dice {2 * np.sum(shown & truth) / max(1, shown.sum() + truth.sum()):.3f}"
            print(f"{t:6.1f} s  prediction of the {event.learner}{grid}, box {event.box.shape}{dice}")
        elif isinstance(event, Guidance):
            print(f"{t:6.1f} s  where to paint next")
        elif isinstance(event, Notice):
            print(f"{t:6.1f} s  notice: {event.message}")
        if t > args.seconds:
            break
    events.close()


if __name__ == "__main__":
    main()
