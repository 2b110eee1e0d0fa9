"""Training steps per second of the product's trainer in float32 on the CPU, and what changes them.

    python benchmarks/cpu_step.py --steps 12 --out benchmarks/results/cpu_step.json

Times ``Trainer.train_step`` (sampling, augmentation, forward, loss, backward, optimiser, EMA) on the synthetic
sample with whole-slice labels, at ``TrainConfig(amp=False)`` (float32, as on a CPU without bf16 matrix units),
for each variant in turn in the same process: the defaults; one torch thread instead of all; the net and its
input in ``channels_last_3d``; smaller patches; and the net under ``torch.compile`` (inductor), first with an
empty compile cache (a machine's first session), then compiled again in the same process after
``torch._dynamo.reset()``, reading the caches the first compilation left in memory and on disk (a later session,
which has the disk cache only, pays a few seconds more). The
first ``--warm-up`` steps of each variant are not counted; the median of the rest is reported with the voxels per
second, and each variant's ratio to the defaults measured in the same run. The compiled variants also report the
seconds their first step took beyond the median (``compile_s``: tracing and compiling the forward and backward
passes) and ``break_even_steps``, the compiled steps after which their time saved has paid for the compilation.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
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
               channels_last: bool = False, compiled: bool = False) -> dict:
    """Median seconds of a training step of a fresh session with ``config``."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    annotation = simulate_annotation(vol.labels, "z:3")
    session = SegmentationSession(vol.image, num_classes=len(vol.class_names), spacing=vol.spacing,
                                  annotation=annotation, config=config)
    trainer = session.trainer
    if channels_last:
        trainer.model.to(memory_format=torch.channels_last_3d)
        model = trainer.model
        trainer._forward = lambda x: model(x.contiguous(memory_format=torch.channels_last_3d))
    if compiled:
        torch._dynamo.reset()  # trace anew: only inductor's caches (in memory and on disk) carry over
        trainer._forward = torch.compile(trainer.model)
    times = []
    for i in range(warm_up + steps):
        t0 = time.perf_counter()
        trainer.train_step()
        if i == 0:
            first_step = time.perf_counter() - t0
        if i >= warm_up:
            times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    voxels = trainer.batch_size * int(np.prod(trainer.patch_size))
    result = {"median_step_s": round(median, 4), "steps_per_s": round(1 / median, 3),
              "mvox_per_s": round(voxels / median / 1e6, 3), "patch": list(trainer.patch_size),
              "batch": trainer.batch_size, "threads": threads}
    if compiled:
        result["compile_s"] = round(first_step - median, 2)
    return result


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
        "torch.compile, empty cache": (base, threads, False),
        "torch.compile, cached": (base, threads, False),
    }
    # inductor reads its cache folder from the environment when it compiles: a fresh one makes the first compile cold
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="cpu_step_inductor_")
    results = {}
    for name, (config, n, cl) in variants.items():
        results[name] = time_steps(config, vol, steps=args.steps, warm_up=args.warm_up, threads=n, channels_last=cl,
                                   compiled=name.startswith("torch.compile"))
        ref = results["defaults"]
        results[name]["vs_defaults_steps_per_s"] = round(results[name]["steps_per_s"] / ref["steps_per_s"], 3)
        results[name]["vs_defaults_mvox_per_s"] = round(results[name]["mvox_per_s"] / ref["mvox_per_s"], 3)
        if "compile_s" in results[name]:
            saved = ref["median_step_s"] - results[name]["median_step_s"]
            results[name]["break_even_steps"] = round(results[name]["compile_s"] / saved) if saved > 0 else None
        print(json.dumps({"variant": name, **results[name]}), flush=True)
    record = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
              "threads": threads, "results": results}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
