"""Where the errors of a final mask lie: volume ratio, distance of wrong voxels to the true surface, stray blobs.

    python benchmarks/error_structure.py ../shared/data/bbbc050_mouse_embryo_nuclei.npz full --steps 500
    python benchmarks/error_structure.py ../shared/data/bbbc050_mouse_embryo_nuclei.npz z:5 --steps 500 --rf

Trains the default model for ``--steps`` steps (step clock, as ``tune.py``), predicts the raw final mask (no
painted labels merged in, so ``full`` scores the fit to the training labels) and prints, for it and with
``--rf`` for the random forest on the same labels, the foreground Dice, the predicted/true foreground volume,
the 50/90/99th percentiles of the physical distance of false positives to the truth and of false negatives to
the background, and the sizes of predicted components that touch no true foreground.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi

from napari_sparseseg.core.config import SessionConfig
from napari_sparseseg.core.protocols import protocol_mask, simulate_annotation
from napari_sparseseg.core.session import SegmentationSession

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tune import clock_in_steps  # noqa: E402


def error_structure(truth: np.ndarray, pred: np.ndarray, spacing) -> dict:
    """Error statistics of a foreground mask ``pred`` against ``truth`` (both ``(z, y, x)``, nonzero = foreground)."""
    gt, pr = truth > 0, pred > 0
    fp, fn = pr & ~gt, ~pr & gt
    outside = ndi.distance_transform_edt(~gt, sampling=spacing)
    inside = ndi.distance_transform_edt(gt, sampling=spacing)
    blobs, n = ndi.label(pr)
    touching = np.unique(blobs[gt & pr])
    stray = [int(s) for i, s in enumerate(ndi.sum_labels(pr, blobs, range(1, n + 1)), 1) if i not in touching]
    q = [50, 90, 99]
    return {"dice_fg": float(2 * (gt & pr).sum() / (gt.sum() + pr.sum())),
            "volume_ratio": float(pr.sum() / gt.sum()),
            "false_positives": int(fp.sum()), "false_negatives": int(fn.sum()),
            "fp_distance_q50_90_99": np.percentile(outside[fp], q).round(2).tolist() if fp.any() else [],
            "fn_distance_q50_90_99": np.percentile(inside[fn], q).round(2).tolist() if fn.any() else [],
            "stray_component_sizes": stray}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("protocol")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--train", default="{}", help="TrainConfig overrides as JSON")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rf", action="store_true", help="also the random forest on the same labels")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    with np.load(args.data) as d:
        image, truth, spacing = d["image"], d["labels"], d["spacing"]
    annotation = simulate_annotation(truth, args.protocol, protocol_mask(truth.shape, args.protocol, truth))
    config = SessionConfig.from_dict({"train": json.loads(args.train), "device": "cpu"})
    session = SegmentationSession(image, num_classes=int(truth.max()), spacing=spacing, annotation=annotation,
                                  config=config)
    clock_in_steps(1.0)
    for _ in session.train(max_steps=args.steps, decay_until=float(args.steps)):
        pass
    result = {"data": str(args.data), "protocol": args.protocol, "steps": session.trainer.step,
              "ours": error_structure(truth, session.trainer.predict(final=True).labels, spacing)}
    if args.rf:
        from napari_sparseseg.baselines.random_forest import random_forest_segment
        result["rf"] = error_structure(truth, random_forest_segment(image, annotation, spacing), spacing)
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
