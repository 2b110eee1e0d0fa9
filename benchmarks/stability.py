"""How far the prediction still moves during training, beside its Dice: the data for a convergence rule.

    python benchmarks/stability.py ../shared/data/msd_spleen_ct_crop.npz z:3 --steps 700 --json out.json

Trains one step-clocked run (one thread, the LR decaying over exactly ``--steps`` steps, as in a budgeted
run) and every ``--every`` steps predicts the whole volume with the EMA weights (the streamed, unmirrored
prediction). For each probe it prints the foreground Dice against the ground truth, the *change* since the
previous probe (voxels whose class changed, over the voxels that either probe calls foreground; this needs
no ground truth, so the trainer can compute it) and the mean training loss of the steps in between.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from napari_sparseseg.core.events import TrainStep
from napari_sparseseg.core.metrics import evaluate_masks

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tune import step_clocked_session  # noqa: E402  (the step clock of the tuning runs)


def change(previous: np.ndarray, current: np.ndarray) -> float:
    """Voxels whose class changed, as a share of the voxels either map calls foreground (axes z, y, x)."""
    union = int(np.count_nonzero((previous > 0) | (current > 0)))
    return int(np.count_nonzero(previous != current)) / max(union, 1)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("protocol")
    ap.add_argument("--steps", type=int, default=700)
    ap.add_argument("--every", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", default="{}", help="TrainConfig overrides as JSON")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json")
    ap.add_argument("--maps", help="save every probe's class map (uint8, z, y, x) to this .npz")
    args = ap.parse_args(argv)
    train = {**json.loads(args.train), "seed": args.seed}
    session, truth, k = step_clocked_session(args.data, args.protocol, train, args.threads)
    trainer = session.trainer
    probes, losses, previous, maps = [], [], None, {}
    for event in session.train(max_steps=args.steps, decay_until=float(args.steps)):
        if not isinstance(event, TrainStep):
            continue
        losses.append(event.loss)
        if event.step % args.every:
            continue
        labels = trainer.predict().labels
        probe = {"step": event.step, "dice_fg": evaluate_masks(truth, labels, k + 1)["dice_fg"],
                 "change": None if previous is None else change(previous, labels),
                 "loss": float(np.mean(losses))}
        previous, losses = labels, []
        if args.maps:
            maps[f"step{event.step}"] = labels.astype(np.uint8)
        probes.append(probe)
        print(f"step {probe['step']:4d}  dice {probe['dice_fg']:.4f}  change "
              f"{probe['change'] if probe['change'] is not None else float('nan'):.4f}  loss {probe['loss']:.4f}",
              flush=True)
    final = evaluate_masks(truth, session.segment(), k + 1)["dice_fg"]
    print(f"final segmentation: {final:.4f}")
    result = {"data": str(args.data), "protocol": args.protocol, "steps": trainer.step, "seed": args.seed,
              "train": json.loads(args.train), "every": args.every, "probes": probes, "final_dice_fg": final}
    if args.maps:
        np.savez_compressed(args.maps, **maps)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
