"""Training steps per second on each volume's own patch, with and without the axis-ordered convolution.

    python benchmarks/conv_order.py ../shared/data/*.npz --sample --repeats 3 --steps 12

For the sample and each file, a session in float32 on the CPU (``TrainConfig(amp=False)``, z:3 labels) plans its
patch as the product does; its training steps (``Trainer.train_step``: sampling, augmentation, forward, loss,
backward, optimiser, EMA) are timed with the net's convolutions in the order
:func:`napari_sparseseg.core.conv_order.faster_order` gives (the product) and as PyTorch lays them out (``plain``),
alternating ``--repeats`` times in the same process, a fresh session each time. The first ``--warm-up`` steps of
each are not counted; the median of the rest is reported, with ``plain / ordered`` (above 1: the product is faster)
and the convolutions that were reordered, by input shape. Then the session predicts the whole volume once
(``SegmentationSession.predict``, the net's refresh), timed the same way.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from helpers import load_volumes

from napari_sparseseg.core import conv_order
from napari_sparseseg.core.config import SessionConfig, TrainConfig
from napari_sparseseg.core.session import SegmentationSession
from napari_sparseseg.evaluation.protocols import simulate_annotation

ORDERED = conv_order.faster_order


def median_step(image, labels, spacing, *, ordered: bool, steps: int,
                warm_up: int) -> tuple[float, float, tuple, list]:
    """Median seconds of a training step of a fresh session, the seconds of its whole-volume prediction, its patch
    and the reordered convolutions' inputs."""
    reordered = []

    def order(conv, x):
        found = ORDERED(conv, x) if ordered else None
        if found is not None:
            reordered.append(tuple(x.shape))
        return found

    conv_order.faster_order = order
    torch.manual_seed(0)
    session = SegmentationSession(image, num_classes=int(labels.max()), spacing=spacing,
                                  annotation=simulate_annotation(labels, "z:3"),
                                  config=SessionConfig(train=TrainConfig(amp=False), device="cpu"))
    times = []
    for i in range(warm_up + steps):
        t0 = time.perf_counter()
        session.trainer.train_step()
        if i >= warm_up:
            times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    session.predict()
    predict_seconds = time.perf_counter() - t0
    session.trainer.close()
    return statistics.median(times), predict_seconds, tuple(session.trainer.patch_size), reordered


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*")
    ap.add_argument("--sample", action="store_true")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warm-up", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# torch {torch.__version__}, {args.threads} threads, float32; median s a step, plain / ordered")
    for name, image, labels, spacing in load_volumes(args.files, args.sample):
        runs: dict[str, list[float]] = {"plain": [], "ordered": []}
        predictions: dict[str, list[float]] = {"plain": [], "ordered": []}
        shapes: set = set()
        for _ in range(args.repeats):
            for variant in ("plain", "ordered"):
                seconds, predict_seconds, patch, reordered = median_step(
                    image, labels, spacing, ordered=variant == "ordered", steps=args.steps, warm_up=args.warm_up)
                runs[variant].append(seconds)
                predictions[variant].append(predict_seconds)
                shapes |= set(reordered)
        plain, ordered = (statistics.median(runs[v]) for v in ("plain", "ordered"))
        plain_p, ordered_p = (statistics.median(predictions[v]) for v in ("plain", "ordered"))
        print(f"{name} patch {patch}: step plain {plain:.3f} s, ordered {ordered:.3f} s, plain / ordered "
              f"{plain / ordered:.3f} (runs {[round(v, 3) for v in runs['plain']]} / "
              f"{[round(v, 3) for v in runs['ordered']]}); whole-volume prediction {plain_p:.1f} s / {ordered_p:.1f} s"
              f" = {plain_p / ordered_p:.3f}; reordered inputs {sorted(shapes) or 'none'}", flush=True)


if __name__ == "__main__":
    main()
