"""One tuning run: `evaluate` with training/model settings overridden, optionally budgeted in steps.

    python benchmarks/tune.py ../shared/data/bbbc050_mouse_embryo_nuclei.npz z:3 \
        --parts '{"clean_tail": {"share": 0}}' --seconds-per-step 0.92 --threads 1 --json out.json

``--train`` overrides TrainConfig fields; ``--parts`` replaces parts of the
training step with other instances (a variant is an instance, not a flag):
``losses`` (``core.schedule.LossSchedule``), ``sampling``
(``core.sampler.Sampling``), ``clean_tail`` (``core.clean_tail.CleanTail``)
and ``fit_guard`` (``core.fit_guard.FitGuard``), each given its keyword
arguments.

``--seconds-per-step S`` makes the budget a step count: the trainer's clock
advances by exactly ``S`` per step, so the LR schedule, the curve points and
the final step match an idle run of ``budget / S`` steps even while other jobs
load the machine (0.92 s is the default model's step on 2 idle cores). Without
it the budget is wall-clock seconds, as in ``napari-sparseseg evaluate``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from helpers import clock_in_steps, vary_parts

from napari_sparseseg.core.config import SessionConfig
from napari_sparseseg.evaluation.simulated_user import evaluate_volume


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("protocol")
    ap.add_argument("--budget-seconds", type=float, default=300.0)
    ap.add_argument("--train", default="{}", help="TrainConfig overrides as JSON")
    ap.add_argument("--model", default="{}", help="ModelConfig overrides as JSON")
    ap.add_argument("--parts", default="{}", help="variants of the training step's parts as JSON (see above)")
    ap.add_argument("--seconds-per-step", type=float, default=0.0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", help="write the evaluate result here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.seconds_per_step > 0:
        clock_in_steps(args.seconds_per_step)
    vary_parts(json.loads(args.parts))
    config = SessionConfig.from_dict({"train": json.loads(args.train), "model": json.loads(args.model),
                                      "device": "cpu"})  # JSON lists become the configs' tuples
    with np.load(args.data) as d:
        image, labels, spacing = d["image"], d["labels"], d["spacing"]
    result = evaluate_volume(image, labels, spacing=spacing, protocol=args.protocol,
                             budget_seconds=args.budget_seconds, config=config)
    result.update(data=str(args.data), overrides={"train": json.loads(args.train), "model": json.loads(args.model),
                                                         "parts": json.loads(args.parts)},
                  seconds_per_step=args.seconds_per_step)
    print("curve", [(p["step"], round(p["dice_fg"], 3)) for p in result["curve"]])
    print(f"dice_fg {result['dice_fg']:.4f} after {result['steps']} steps")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
