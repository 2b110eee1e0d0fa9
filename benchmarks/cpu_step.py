"""Training steps per second of the product's trainer in float32 on the CPU, and what changes them.

    python benchmarks/cpu_step.py --steps 12 --out benchmarks/results/cpu_step.json

Times ``Trainer.train_step`` (sampling, augmentation, forward, loss, backward, optimiser, EMA) on the synthetic
sample with whole-slice labels, at ``TrainConfig(amp=False)`` (float32, as on a CPU without bf16 matrix units),
for each variant in turn in the same process: the defaults; one torch thread instead of all; the net and its
input in ``channels_last_3d``; and smaller patches. The first ``--warm-up`` steps of each variant are not
counted; the median of the rest is reported with the voxels per second, and each variant's ratio to the
defaults measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from napari_sparseseg.core.config import SessionConfig, TrainConfig
from napari_sparseseg.core.session import SegmentationSession
from napari_sparseseg.evaluation.protocols import simulate_annotation
from napari_sparseseg.sample_data import make_cells_volume


def time_steps(config: SessionConfig, vol, *, steps: int, warm_up: int, threads: int,
               channels_last: bool = False) -> dict:
    """Median seconds of a training step of a fresh session with ``config``."""
    torch.set_num_threads(threads)
    annotation = simulate_annotation(vol.labels, "z:3")
    session = SegmentationSession(vol.image, num_classes=len(vol.class_names), spacing=vol.spacing,
                                  annotation=annotation, config=config)
    trainer = session.trainer
    if channels_last:
        trainer.model.to(memory_format=torch.channels_last_3d)
        model = trainer.model
        trainer._forward = lambda x: model(x.contiguous(memory_format=torch.channels_last_3d))
    times = []
    for i in range(warm_up + steps):
        t0 = time.perf_counter()
        trainer.train_step()
        if i >= warm_up:
            times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    voxels = trainer.batch_size * int(np.prod(trainer.patch_size))
    return {"median_step_s": round(median, 4), "steps_per_s": round(1 / median, 3),
            "mvox_per_s": round(voxels / median / 1e6, 3), "patch": list(trainer.patch_size),
            "batch": trainer.batch_size, "threads": threads}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warm-up", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    vol = make_cells_volume()
    threads = torch.get_num_threads()
    base = SessionConfig(train=TrainConfig(amp=False, augment=True), device="cpu")
    variants = {
        "defaults": (base, threads, False),
        "1 thread": (base, 1, False),
        "channels_last_3d": (base, threads, True),
        "patch 48^3": (replace(base, train=replace(base.train, patch_voxels=48**3)), threads, False),
        "patch 32^3": (replace(base, train=replace(base.train, patch_voxels=32**3)), threads, False),
    }
    results = {}
    for name, (config, n, cl) in variants.items():
        results[name] = time_steps(config, vol, steps=args.steps, warm_up=args.warm_up, threads=n, channels_last=cl)
        ref = results["defaults"]
        results[name]["vs_defaults_steps_per_s"] = round(results[name]["steps_per_s"] / ref["steps_per_s"], 3)
        results[name]["vs_defaults_mvox_per_s"] = round(results[name]["mvox_per_s"] / ref["mvox_per_s"], 3)
        print(json.dumps({"variant": name, **results[name]}), flush=True)
    record = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
              "threads": threads, "results": results}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
