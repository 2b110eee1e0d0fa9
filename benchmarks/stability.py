"""How far the prediction still moves during training, beside its Dice: the data for a convergence rule.

    python benchmarks/stability.py ../shared/data/msd_spleen_ct_crop.npz z:3 --steps 700 --json out.json

Trains one step-clocked run (one thread, the LR decaying over exactly ``--steps`` steps, as in a budgeted
run) and every ``--every`` steps predicts the whole volume with the EMA weights (the streamed, unmirrored
prediction). For each probe it prints the foreground Dice against the ground truth, two measures that need
no ground truth (so the trainer can compute them) and the mean training loss of the steps in between:

* ``change``: voxels whose class changed since the previous probe, over the voxels either calls foreground;
* ``drift``: the product's measure, ``core.convergence.surface_drift`` against the probe ``--lag`` probes
  earlier (100 steps by default), i.e. the changed voxels in layers of the current surface;
* ``labeled_errors``: labeled voxels whose predicted class differs from their label, i.e. how well the
  prediction fits the training labels themselves;
* ``batch_error_rate``: the same as a share, from the training steps' own forward passes (augmented patches,
  raw weights; the trainer's running mean, ``TrainStep.labeled_error_rate``) averaged since the previous probe,
  and ``hardest_weight``, the weight of the hardest-voxel term that this rate gates.

``--from-maps MAPS --json OUT`` recomputes ``drift`` (at ``--lag``) for an earlier run from its saved maps, and
``labeled_errors`` too when DATA and PROTOCOL are given (``-`` skips them).
"""

from __future__ import annotations

import argparse
import json
from collections import deque
from pathlib import Path

import numpy as np
from helpers import step_clocked_session

from napari_sparseseg.core.convergence import surface_drift
from napari_sparseseg.core.events import TrainStep
from napari_sparseseg.evaluation.metrics import evaluate_masks


def change(previous: np.ndarray, current: np.ndarray) -> float:
    """Voxels whose class changed, as a share of the voxels either map calls foreground (axes z, y, x)."""
    union = int(np.count_nonzero((previous > 0) | (current > 0)))
    return int(np.count_nonzero(previous != current)) / max(union, 1)


def labeled_errors(annotation: np.ndarray, labels: np.ndarray) -> int:
    """Labeled voxels predicted as another class (annotation: 0 unlabeled, 1 background, 2.. classes)."""
    labeled = annotation > 0
    return int(np.count_nonzero(labels[labeled] != annotation[labeled] - 1))


def labeled_errors_from_maps(maps_path: str, data: str, protocol: str) -> dict[int, int]:
    """:func:`labeled_errors` of every saved probe map against the annotation ``protocol`` makes of ``data``."""
    from napari_sparseseg.evaluation.protocols import protocol_mask, simulate_annotation

    with np.load(data) as d:
        truth = d["labels"]
    annotation = simulate_annotation(truth, protocol, protocol_mask(truth.shape, protocol, truth))
    with np.load(maps_path) as maps:
        return {int(name[4:]): labeled_errors(annotation, maps[name]) for name in maps.files}


def drifts_from_maps(maps_path: str, lag: int) -> dict[int, float]:
    """``surface_drift`` of every saved probe map against the map ``lag`` probes earlier, by step."""
    with np.load(maps_path) as maps:
        steps = sorted(int(name[4:]) for name in maps.files)
        labels = {step: maps[f"step{step}"] for step in steps}
    return {step: surface_drift(labels[steps[i - lag]], labels[step]) for i, step in enumerate(steps) if i >= lag}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("protocol")
    ap.add_argument("--steps", type=int, default=700)
    ap.add_argument("--every", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", default="{}", help="TrainConfig overrides as JSON")
    ap.add_argument("--parts", default="{}", help="variants of the training step's parts as JSON "
                    "(helpers.vary_parts), e.g. '{\"losses\": {\"smoothness\": 0}}'")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json")
    ap.add_argument("--lag", type=int, default=4, help="probes between the maps that drift compares")
    ap.add_argument("--maps", help="save every probe's class map (uint8, z, y, x) to this .npz")
    ap.add_argument("--from-maps", help="add drift to --json from an earlier run's saved maps; no training")
    args = ap.parse_args(argv)
    if args.from_maps:
        result = json.loads(Path(args.json).read_text())
        drifts = drifts_from_maps(args.from_maps, args.lag)
        errors = labeled_errors_from_maps(args.from_maps, args.data, args.protocol) if args.data != "-" else {}
        for probe in result["probes"]:
            probe["drift"] = drifts.get(probe["step"])
            if errors:
                probe["labeled_errors"] = errors[probe["step"]]
            print(f"step {probe['step']:4d}  dice {probe['dice_fg']:.4f}  drift {probe['drift']}  "
                  f"labeled errors {probe.get('labeled_errors')}")
        result["lag"] = args.lag
        Path(args.json).write_text(json.dumps(result, indent=2))
        return result
    train = {**json.loads(args.train), "seed": args.seed}
    session, truth, k = step_clocked_session(args.data, args.protocol, train, args.threads, json.loads(args.parts))
    trainer = session.trainer
    probes, losses, rates, previous, maps = [], [], [], deque(maxlen=args.lag + 1), {}
    for event in session.train(max_steps=args.steps, decay_until=float(args.steps)):
        if not isinstance(event, TrainStep):
            continue
        losses.append(event.loss)
        rates.append(event.labeled_error_rate)
        if event.step % args.every:
            continue
        labels = trainer.predict().labels
        probe = {"step": event.step, "dice_fg": evaluate_masks(truth, labels, k + 1)["dice_fg"],
                 "labeled_errors": labeled_errors(trainer.volume.labels, labels),
                 "change": change(previous[-1], labels) if previous else None,
                 "drift": surface_drift(previous[0], labels) if len(previous) > args.lag else None,
                 "loss": float(np.mean(losses)), "batch_error_rate": float(np.mean(rates)),
                 "fit_error_rate": trainer.fit_error_rate,
                 "hardest_weight": trainer.losses.hardest_at(trainer.step, trainer.fit_error_rate)}
        previous.append(labels)
        losses, rates = [], []
        if args.maps:
            maps[f"step{event.step}"] = labels.astype(np.uint8)
        probes.append(probe)
        print(f"step {probe['step']:4d}  dice {probe['dice_fg']:.4f}  change {probe['change']}  "
              f"drift {probe['drift']}  labeled errors {probe['labeled_errors']}  loss {probe['loss']:.4f}  "
              f"batch errors {probe['batch_error_rate']:.4f}  hardest {probe['hardest_weight']:.2f}", flush=True)
    final = evaluate_masks(truth, session.segment(), k + 1)["dice_fg"]
    print(f"final segmentation: {final:.4f}")
    result = {"data": str(args.data), "protocol": args.protocol, "steps": trainer.step, "seed": args.seed,
              "train": json.loads(args.train), "every": args.every, "lag": args.lag, "probes": probes,
              "final_dice_fg": final}
    if args.maps:
        np.savez_compressed(args.maps, **maps)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
