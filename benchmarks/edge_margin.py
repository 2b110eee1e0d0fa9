"""How far the inference window grid should reach past the volume edges.

Trains the default model for a fixed number of steps (deterministic on CPU)
on each file under one protocol, then segments the volume with that same
model with the window grid padded (mirrored content) along z only, along z,
y and x, along y and x only, and not at all. Prints foreground Dice per
setting and per axial slice band (first, middle and last fifth of the slices)
so the effect on the edge slices is visible.

    python benchmarks/edge_margin.py --data ../shared/data --protocol z:1 --steps 100 \
        --json benchmarks/results/edge_margin.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from napari_sparseseg.core.config import SessionConfig
from napari_sparseseg.core.session import SegmentationSession
from napari_sparseseg.evaluation.metrics import evaluate_masks
from napari_sparseseg.evaluation.protocols import protocol_mask, simulate_annotation

#: Padding settings compared: name -> ``InferenceConfig.edge_margin``.
SETTINGS: dict[str, tuple[float, float, float]] = {
    "none": (0.0, 0.0, 0.0),
    "z (default)": (0.25, 0.0, 0.0),
    "z, y, x": (0.25, 0.25, 0.25),
    "y, x": (0.0, 0.25, 0.25),
}


def band_dice(truth: np.ndarray, pred: np.ndarray) -> list[float]:
    """Foreground Dice over the first, middle and last fifth of the axial slices."""
    z = truth.shape[0]
    bands = [slice(0, max(1, z // 5)), slice(2 * z // 5, 3 * z // 5), slice(z - max(1, z // 5), z)]
    out = []
    for band in bands:
        a, b = truth[band] > 0, pred[band] > 0
        denom = a.sum() + b.sum()
        out.append(float(2 * (a & b).sum() / denom) if denom else 1.0)
    return out


def run_file(path: Path, protocol: str, steps: int) -> dict:
    with np.load(path) as d:
        image, truth, spacing = d["image"], d["labels"], d["spacing"]
    k = int(truth.max())
    labeled = protocol_mask(truth.shape, protocol, truth)
    session = SegmentationSession(image, num_classes=k, spacing=spacing, config=SessionConfig(device="cpu"),
                                  annotation=simulate_annotation(truth, protocol, labeled))
    trainer = session.trainer
    t0 = time.perf_counter()
    for _ in trainer.run(max_steps=steps):
        pass
    result = {"file": path.stem, "protocol": protocol, "steps": trainer.step,
              "train_seconds": round(time.perf_counter() - t0, 1), "window": list(trainer.patch_size), "settings": {}}
    base = trainer.config
    for name, margin in SETTINGS.items():
        trainer.config = replace(base, inference=replace(base.inference, edge_margin=margin))
        t0 = time.perf_counter()
        pred = session.segment()
        seconds = time.perf_counter() - t0
        result["settings"][name] = {"edge_margin": list(margin),
                                    "dice_fg": evaluate_masks(truth, pred, k + 1)["dice_fg"],
                                    "band_dice": band_dice(truth, pred), "segment_seconds": round(seconds, 2)}
    trainer.config = base
    return result


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data", help="folder of .npz files, or one .npz")
    ap.add_argument("--protocol", default="z:1")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    files = sorted(data.glob("*.npz")) if data.is_dir() else [data]
    results = []
    print("| file | padded along | Dice | first fifth | middle fifth | last fifth | segment s |")
    print("|---|---|---|---|---|---|---|")
    for path in files:
        r = run_file(path, args.protocol, args.steps)
        results.append(r)
        for name, s in r["settings"].items():
            bands = " | ".join(f"{v:.3f}" for v in s["band_dice"])
            print(f"| {r['file']} | {name} | {s['dice_fg']:.3f} | {bands} | {s['segment_seconds']:.1f} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
