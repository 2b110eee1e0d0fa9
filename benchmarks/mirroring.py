"""Test-time mirroring against training augmentation: one model, its final mask scored under three mirror sets.

    python benchmarks/mirroring.py ../shared/data/bbbc050_mouse_embryo_nuclei.npz z:5 --steps 400 \
        --train '{"augment": false}' --json out.json

Trains for ``--steps`` steps on one thread (the LR schedule decays over exactly those steps, as a budgeted
run does), then scores the merged final segmentation with no mirroring, mirroring of y and x, and mirroring
of z, y and x (the default ``InferenceConfig.final_mirror_axes``), all from the same weights.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from helpers import step_clocked_session

from napari_sparseseg.evaluation.metrics import evaluate_masks

MIRROR_SETS = {"none": (), "yx": (1, 2), "zyx": (0, 1, 2)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("protocol")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--train", default="{}", help="TrainConfig overrides as JSON")
    ap.add_argument("--parts", default="{}", help="variants of the training step's parts as JSON "
                    "(helpers.vary_parts), e.g. '{\"losses\": {\"smoothness\": 0}}'")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    session, truth, k = step_clocked_session(args.data, args.protocol, json.loads(args.train), args.threads,
                                             json.loads(args.parts))
    trainer = session.trainer
    config = trainer.config
    for _ in session.train(max_steps=args.steps, decay_until=float(args.steps)):
        pass
    result = {"data": str(args.data), "protocol": args.protocol, "steps": trainer.step,
              "train": json.loads(args.train)}
    for name, axes in MIRROR_SETS.items():  # segment() predicts with the trainer's config
        trainer.config = replace(config, inference=replace(config.inference, final_mirror_axes=axes))
        result[name] = evaluate_masks(truth, session.segment(), k + 1)["dice_fg"]
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
