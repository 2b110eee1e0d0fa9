"""Training steps per second with the next batch built ahead in a thread (``TrainConfig.prefetch``) and without.

    python benchmarks/prefetch.py --data ../shared/data/msd_spleen_ct_crop.npz --protocol z:3 --threads 1
    python benchmarks/prefetch.py --sample --device cuda --json out.json

For each repeat, a session with the default config (seeded) trains ``--warm``
untimed steps and then ``--steps`` timed ones, once building every batch
inline (``prefetch="never"``) and once building the next batch in a worker
thread (``"always"``); the two alternate in the same process, so the ratio
compares like with like. It also times the host part of a step alone (sampling,
cutting and augmenting one batch: :meth:`BatchMaker.build_now`), the most that
prefetching can hide. The losses of the two modes are compared too: they must be
equal on the CPU, since the batches are the same (on CUDA, nondeterministic
kernels may make them differ slightly).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_sparseseg.core.config import SessionConfig, TrainConfig
from napari_sparseseg.core.events import TrainStep
from napari_sparseseg.core.session import SegmentationSession
from napari_sparseseg.evaluation.protocols import simulate_annotation


def _load(args: argparse.Namespace) -> tuple[str, np.ndarray, np.ndarray, tuple[float, ...]]:
    if args.sample:
        from napari_sparseseg.sample_data import make_cells_volume

        vol = make_cells_volume()
        return "synthetic_cells", vol.image, vol.labels, tuple(vol.spacing)
    data = np.load(args.data)
    return Path(args.data).stem, data["image"], data["labels"], tuple(float(s) for s in data["spacing"])


def _timed_run(image: np.ndarray, annotation: np.ndarray, spacing: tuple[float, ...], k: int, mode: str,
               args: argparse.Namespace) -> dict[str, Any]:
    config = SessionConfig(train=TrainConfig(prefetch=mode, seed=args.seed), device=args.device)
    session = SegmentationSession(image, num_classes=k, spacing=spacing, annotation=annotation, config=config)
    trainer = session.trainer
    losses = [e.loss for e in session.train(max_steps=args.warm) if isinstance(e, TrainStep)]
    t0 = time.perf_counter()
    losses += [e.loss for e in session.train(max_steps=args.steps) if isinstance(e, TrainStep)]
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    trainer.close()
    host = []
    for _ in range(args.host_samples):
        t = time.perf_counter()
        trainer.batches.build_now(True, trainer.batch_size, trainer.config.train)
        host.append(time.perf_counter() - t)
    return {"mode": mode, "prefetching": trainer.prefetching, "seconds_per_step": seconds / args.steps,
            "host_batch_seconds": statistics.median(host), "hits": trainer.batches.built_ahead[0], "losses": losses}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="an .npz with image, labels, spacing")
    ap.add_argument("--sample", action="store_true", help="the package's synthetic cells volume instead")
    ap.add_argument("--protocol", default="z:3")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the widget uses all cores but one)")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warm", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--host-samples", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="append the result as one JSON line to this file")
    args = ap.parse_args(argv)
    if not args.sample and not args.data:
        ap.error("give --data FILE or --sample")
    torch.set_num_threads(args.threads)
    name, image, truth, spacing = _load(args)
    annotation = simulate_annotation(truth, args.protocol)
    k = int(truth.max())
    runs = [_timed_run(image, annotation, spacing, k, mode, args)
            for _ in range(args.repeats) for mode in ("never", "always")]
    inline = statistics.median(r["seconds_per_step"] for r in runs if r["mode"] == "never")
    ahead = statistics.median(r["seconds_per_step"] for r in runs if r["mode"] == "always")
    host = statistics.median(r["host_batch_seconds"] for r in runs)
    same = all(r["losses"] == runs[0]["losses"] for r in runs)
    result = {"data": name, "protocol": args.protocol, "device": args.device, "threads": args.threads,
              "steps": args.steps, "repeats": args.repeats, "torch": torch.__version__, "host_batch_seconds": host,
              "seconds_per_step_inline": inline, "seconds_per_step_prefetch": ahead, "speedup": inline / ahead,
              "same_losses": same, "runs": [{k: v for k, v in r.items() if k != "losses"} for r in runs]}
    print(f"{name} {args.protocol}, {args.device}, {args.threads} torch thread(s), "
          f"{args.steps} steps x {args.repeats}:")
    print(f"  host part of a step (sample, cut, augment one batch): {1e3 * host:.1f} ms")
    print(f"  step, batch built inline: {1e3 * inline:.1f} ms; built ahead in a thread: {1e3 * ahead:.1f} ms "
          f"-> {inline / ahead:.2f}x")
    print(f"  same losses in both modes: {same}")
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(result) + "\n")
    return 0 if same or args.device == "cuda" else 1


if __name__ == "__main__":
    sys.exit(main())
