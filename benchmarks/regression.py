"""CI regression guard: accuracy and speed *ratios* on the synthetic sample, never absolute times.

    python benchmarks/regression.py                        # about a minute on 2 CPU cores
    python benchmarks/regression.py --json guard.json      # also write the numbers

On a small synthetic cells volume (``napari_sparseseg.sample_data``) it trains a small 3D U-Net (8 base channels,
depth 3, ~32^3-voxel patches) on three axial slices (``z:3``) for ``--steps`` steps and checks

* our foreground Dice is above a floor and not far below the random forest (30 trees) on the same slices;
* the training loss went down (mean of the last steps against the first);
* training throughput of our trainer (sampling, augmentation, step, EMA) is not much below a plain eager fp32
  reference U-Net of the same architecture and patch, timed in the same run (``benchmarks/speed.py``);
* Gaussian sliding-window inference throughput (voxels through the net per second, blending included) is not
  much below a plain forward pass of the same net on the same window batches.

It prints every number with its bound and exits 1 when a check fails. Timings on shared CI machines are noisy,
so each throughput is the best of a few interleaved rounds and only ratios are checked.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Bounds:
    """Sanity bounds of the guard.

    Attributes
    ----------
    dice_floor : float
        Our foreground Dice over all voxels must exceed this.
    rf_margin : float
        Our Dice must be at least the random forest's minus this.
    loss_ratio_max : float
        Mean loss of the last steps over the mean of the first steps must not exceed this.
    min_train_ratio : float
        Our training voxels/s over the plain reference's must exceed this.
    min_infer_ratio : float
        Our sliding-window voxels/s (through the net) over a plain forward's must exceed this.
    """

    dice_floor: float = 0.85
    rf_margin: float = 0.05
    loss_ratio_max: float = 0.8
    min_train_ratio: float = 0.5
    min_infer_ratio: float = 0.5


def check(results: dict[str, Any], bounds: Bounds = Bounds()) -> list[tuple[str, float, str, bool]]:
    """``(name, value, bound, ok)`` per check of a guard run's ``results``."""
    rows = [
        ("dice_fg", results["dice_fg"], f"> {bounds.dice_floor}", results["dice_fg"] > bounds.dice_floor),
        ("dice_fg - rf_dice_fg", results["dice_fg"] - results["rf_dice_fg"], f">= -{bounds.rf_margin}",
         results["dice_fg"] - results["rf_dice_fg"] >= -bounds.rf_margin),
        ("loss last/first", results["loss_ratio"], f"<= {bounds.loss_ratio_max}",
         results["loss_ratio"] <= bounds.loss_ratio_max),
        ("train throughput ours/ref", results["train_ratio"], f"> {bounds.min_train_ratio}",
         results["train_ratio"] > bounds.min_train_ratio),
        ("inference throughput ours/ref", results["infer_ratio"], f"> {bounds.min_infer_ratio}",
         results["infer_ratio"] > bounds.min_infer_ratio),
    ]
    return [(n, float(v), b, bool(ok and np.isfinite(v))) for n, v, b, ok in rows]


def small_config(seed: int = 0):
    """The guard's session settings: a small net and patch, no final mirroring (CPU-sized)."""
    from napari_sparseseg.core.config import InferenceConfig, ModelConfig, SessionConfig, TrainConfig

    return SessionConfig(model=ModelConfig(base_channels=8, depth=3), train=TrainConfig(patch_voxels=32**3, seed=seed),
                         inference=InferenceConfig(final_mirror_axes=()), device="cpu")


def _train_throughput(trainer, steps: int) -> float:
    """Voxels/s of ``steps`` full training steps of our trainer (sampling and augmentation included)."""
    voxels = trainer.config.train.batch_size * float(np.prod(trainer.patch_size))
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(0.5)
    return steps * voxels / (time.perf_counter() - t0)


def _infer_throughput(trainer) -> float:
    """Voxels/s through the net of one whole-volume Gaussian sliding-window prediction (blending included)."""
    from napari_sparseseg.core.inference import predict_probabilities

    model = trainer.ema_model.eval()
    seen = [0.0]

    def count(_module, inputs, _output) -> None:
        x = inputs[0]
        seen[0] += x.shape[0] * float(np.prod(x.shape[2:]))

    handle = model.register_forward_hook(count)
    try:
        t0 = time.perf_counter()
        predict_probabilities(model, trainer.volume.features, trainer.patch_size, config=trainer.config.inference,
                              device=trainer.device, amp=trainer.amp)
        dt = time.perf_counter() - t0
    finally:
        handle.remove()
    return seen[0] / dt


def throughput_ratios(session, rounds: int = 3, steps: int = 3) -> dict[str, float]:
    """Our training and inference throughput against a plain eager fp32 U-Net of the same architecture.

    Rounds of reference and ours alternate; each side keeps its best round (noise on shared cores only
    ever slows a round down).
    """
    import torch
    from speed import time_forward, time_training

    from napari_sparseseg.core.net import UNet3D

    trainer = session.trainer
    device = trainer.device
    spacing = session.volume.spacing
    cfg = trainer.model.config
    train_shape = (trainer.config.train.batch_size, cfg.in_channels, *trainer.patch_size)
    infer_shape = (trainer.config.inference.batch_size, cfg.in_channels, *trainer.patch_size)
    torch.manual_seed(0)
    ref = UNet3D(cfg, spacing).to(device)
    ref_eval = UNet3D(cfg, spacing).to(device).eval()
    out = {"ref_train_vox_s": 0.0, "ours_train_vox_s": 0.0, "ref_infer_vox_s": 0.0, "ours_infer_vox_s": 0.0}
    trainer.train_step(0.5)  # warm-up
    time_training(ref, device, train_shape, amp=False, steps=1, warmup=1, classes=cfg.num_classes)
    for _ in range(rounds):
        out["ref_train_vox_s"] = max(out["ref_train_vox_s"], time_training(
            ref, device, train_shape, amp=False, steps=steps, warmup=0, classes=cfg.num_classes))
        out["ours_train_vox_s"] = max(out["ours_train_vox_s"], _train_throughput(trainer, steps))
        out["ref_infer_vox_s"] = max(out["ref_infer_vox_s"], time_forward(
            ref_eval, device, infer_shape, amp=False, steps=steps, warmup=1))
        out["ours_infer_vox_s"] = max(out["ours_infer_vox_s"], _infer_throughput(trainer))
    out["train_ratio"] = out["ours_train_vox_s"] / out["ref_train_vox_s"]
    out["infer_ratio"] = out["ours_infer_vox_s"] / out["ref_infer_vox_s"]
    return out


def run_guard(steps: int = 120, shape: tuple[int, int, int] = (24, 96, 96), seed: int = 0,
              rounds: int = 3) -> dict[str, Any]:
    """Train, score and time on the synthetic sample; the numbers :func:`check` reads.

    Training is budgeted in *steps* (poly decay over them), not seconds, so the Dice and loss checks are
    deterministic on a given machine whatever the load; only the throughput ratios are timed.
    """
    import torch

    from napari_sparseseg.baselines.random_forest import random_forest_segment
    from napari_sparseseg.core.session import SegmentationSession
    from napari_sparseseg.evaluation.metrics import evaluate_masks
    from napari_sparseseg.evaluation.protocols import simulate_annotation
    from napari_sparseseg.sample_data import make_cells_volume

    vol = make_cells_volume(shape, n_cells=8, seed=seed)
    k = len(vol.class_names)
    annotation = simulate_annotation(vol.labels, "z:3")
    session = SegmentationSession(vol.image, num_classes=k, spacing=vol.spacing, annotation=annotation,
                                  config=small_config(seed))
    t0 = time.perf_counter()
    losses = [session.trainer.train_step(i / steps).label_loss for i in range(steps)]  # comparable across steps
    train_seconds = time.perf_counter() - t0
    ours = evaluate_masks(vol.labels, session.segment(), k + 1)
    t0 = time.perf_counter()
    rf = evaluate_masks(vol.labels, random_forest_segment(vol.image, annotation, vol.spacing, seed=seed,
                                                          n_estimators=30), k + 1)
    n = max(min(10, steps // 4), 1)
    out: dict[str, Any] = {
        "shape": list(shape), "steps": steps, "threads": torch.get_num_threads(),
        "patch_size": list(session.trainer.patch_size), "dice_fg": ours["dice_fg"], "miou": ours["miou"],
        "rf_dice_fg": rf["dice_fg"], "rf_seconds": round(time.perf_counter() - t0, 1),
        "train_seconds": round(train_seconds, 1), "first_loss": float(np.mean(losses[:n])),
        "last_loss": float(np.mean(losses[-n:])),
    }
    out["loss_ratio"] = out["last_loss"] / max(out["first_loss"], 1e-12)
    out.update(throughput_ratios(session, rounds=rounds))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    defaults = Bounds()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=120, help="training steps (about 30 s of one CPU core)")
    ap.add_argument("--shape", type=int, nargs=3, default=(24, 96, 96))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (best of)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    for name, value in asdict(defaults).items():
        ap.add_argument(f"--{name.replace('_', '-')}", type=float, default=value)
    ap.add_argument("--json", help="write the numbers and checks here")
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    bounds = Bounds(**{k: getattr(args, k) for k in asdict(defaults)})
    results = run_guard(args.steps, tuple(args.shape), args.seed, args.rounds)
    rows = check(results, bounds)
    print(f"regression guard: {results['shape']} sample, z:3, {results['steps']} steps in "
          f"{results['train_seconds']:g} s, patch {results['patch_size']}, {results['threads']} threads")
    for key in ("dice_fg", "rf_dice_fg", "first_loss", "last_loss", "ref_train_vox_s", "ours_train_vox_s",
                "ref_infer_vox_s", "ours_infer_vox_s"):
        print(f"  {key:<28}{results[key]:>14.4g}")
    for name, value, bound, ok in rows:
        print(f"  {'ok  ' if ok else 'FAIL'} {name:<30}{value:>9.3f}  (bound {bound})")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "bounds": asdict(bounds),
                                               "checks": [dict(zip(("name", "value", "bound", "ok"), r))
                                                          for r in rows]}, indent=2))
    failed = [name for name, _, _, ok in rows if not ok]
    if failed:
        print(f"REGRESSION: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
