"""Exploratory: does undoing the class-balance weights at decision time reduce over-segmentation?

Training weights class ``c`` by ``w_c`` (``TrainConfig.class_balance_power``),
so the net's softmax estimates a posterior tilted towards the up-weighted
(rare, foreground) classes. Dividing the probabilities by ``w_c ** tau``
before the argmax undoes that tilt (``tau = 1``: the prior correction of
Saerens et al. 2002 / logit adjustment) while training keeps the balanced
gradients. This script trains the default model for a fixed number of steps
on each file under each protocol, then scores the same model's final
segmentation at several ``tau`` (the product's own correction is switched off
here, so each column applies ``tau`` once), and at the ``tau`` the product's
defaults pick for the labels' plane coverage. The product defaults
``InferenceConfig.prior_correction = 0.25`` (whole slices) and
``sparse_prior_correction = 1`` (brush strokes) came from these results.

    python benchmarks/prior_correction.py --data ../shared/data --protocols z:3,scribble:3 --steps 300 \
        --json benchmarks/results/prior_correction.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from napari_sparseseg.core.config import InferenceConfig, SessionConfig
from napari_sparseseg.core.session import SegmentationSession
from napari_sparseseg.evaluation.metrics import evaluate_masks
from napari_sparseseg.evaluation.protocols import protocol_mask, simulate_annotation

TAUS = (0.0, 0.25, 0.5, 1.0)


def run(path: Path, protocol: str, steps: int, device: str = "cpu") -> dict:
    with np.load(path) as d:
        image, truth, spacing = d["image"], d["labels"], d["spacing"]
    k = int(truth.max())
    config = SessionConfig(device=device, inference=InferenceConfig(prior_correction=0.0, sparse_prior_correction=0.0))
    session = SegmentationSession(image, num_classes=k, spacing=spacing, config=config,
                                  annotation=simulate_annotation(truth, protocol, protocol_mask(truth.shape, protocol,
                                                                                                truth)))
    trainer = session.trainer
    t0 = time.perf_counter()
    for _ in trainer.run(max_steps=steps):
        pass
    train_seconds = time.perf_counter() - t0
    prediction = trainer.predict(final=True)
    probs = prediction.probabilities
    weights = session.volume.class_weights(session.config.train.class_balance_power).astype(np.float64)
    coverage = session.volume.plane_coverage()
    default_tau = InferenceConfig().correction_for(coverage)
    out = {"file": path.stem, "protocol": protocol, "steps": trainer.step, "device": str(trainer.device),
           "train_seconds": round(train_seconds, 1), "plane_coverage": round(coverage, 4),
           "default_tau": round(default_tau, 4), "class_weights": weights.tolist(), "tau": {}}
    for tau in sorted({*TAUS, round(default_tau, 4)}):
        scale = np.where(weights > 0, weights, 1.0) ** -tau
        pred = np.argmax(probs * scale.reshape(-1, 1, 1, 1).astype(np.float32), axis=0).astype(np.uint8)
        # painted voxels keep their labels (the fully supervised bound is scored on the raw prediction)
        merged = pred if protocol == "full" else session.merge(replace(prediction, labels=pred))
        m = evaluate_masks(truth, merged, k + 1)
        out["tau"][str(tau)] = {"dice_fg": m["dice_fg"], "dice": m["dice"], "mpa": m["mpa"], "pa": m["pa"]}
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--protocols", default="z:3,scribble:3")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    files = sorted(data.glob("*.npz")) if data.is_dir() else [data]
    results = []
    print("| file | protocol | steps | " + " | ".join(f"tau {t}" for t in TAUS) + " | plane coverage | default tau | "
          "Dice at default tau |")
    print("|---|---|---|" + "---|" * (len(TAUS) + 3))
    for path in files:
        for protocol in args.protocols.split(","):
            r = run(path, protocol, args.steps, args.device)
            results.append(r)
            cells = " | ".join(f"{r['tau'][str(t)]['dice_fg']:.3f}" for t in TAUS)
            tau = r["default_tau"]
            print(f"| {r['file']} | {protocol} | {r['steps']} | {cells} | {r['plane_coverage']:.3f} | {tau:.2f} | "
                  f"{r['tau'][str(tau)]['dice_fg']:.3f} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
