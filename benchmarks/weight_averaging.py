"""Tail weight averaging against the EMA: one training run, its final mask scored with several weight sets.

    python benchmarks/weight_averaging.py ../shared/data/bbbc050_mouse_embryo_nuclei.npz z:5 --steps 800 \
        --json out.json

Trains for ``--steps`` steps on one thread, the LR decaying over exactly those steps as in a budgeted run
(800 steps is about what 300 s buy on the 2-core CPU). Along the way it keeps uniform averages of the raw
weights over the last half and the last quarter of the run (stochastic weight averaging, Izmailov et al.
2018, at the schedule's own learning rate), slower EMAs of the raw weights, and copies of the EMA weights at
50 % and 75 % of the run.
The final segmentation (``session.segment()``: mirroring, prior correction, labels merged) is then scored
with each weight set, so every variant is compared on one and the same run.

With ``--train '{"clean_tail": 0.25}'`` the same script compares training settings: runs that differ only
after 50 % or 75 % of the steps (such as ``TrainConfig.clean_tail``) print identical ``ema_at50`` /
``ema_at75`` scores, which checks that they are the same run up to there.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from napari_sparseseg.core.events import TrainStep
from napari_sparseseg.core.metrics import evaluate_masks

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tune import step_clocked_session  # noqa: E402  (the step clock of the tuning runs)

#: Tail averages: name -> share of the run (at its end) whose raw weights are averaged uniformly.
TAILS = {"avg_last50": 0.5, "avg_last25": 0.25}
#: Slower EMAs of the raw weights: name -> decay (the product's EMA is ``TrainConfig.ema_decay``, 0.98,
#: about a 50-step window); each uses the product's warm-up ``min(decay, (1 + s) / (10 + s))``.
SLOW_EMAS = {"ema_995": 0.995}
#: EMA snapshots: name -> share of the run after which the EMA weights are copied.
SNAPSHOTS = {"ema_at50": 0.5, "ema_at75": 0.75}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("protocol")
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", default="{}", help="TrainConfig overrides as JSON")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    train = {**json.loads(args.train), "seed": args.seed}
    session, truth, k = step_clocked_session(args.data, args.protocol, train, args.threads)
    trainer = session.trainer
    sums: dict[str, list[torch.Tensor]] = {}
    counts = dict.fromkeys(TAILS, 0)
    weight_sets: dict[str, list[torch.Tensor]] = {}
    slow: dict[str, list[torch.Tensor]] = {}
    for event in session.train(max_steps=args.steps, decay_until=float(args.steps)):
        if not isinstance(event, TrainStep):
            continue
        params = [p.detach().float() for p in trainer.model.parameters()]
        for name, share in TAILS.items():
            if event.step > args.steps * (1 - share):
                if name not in sums:
                    sums[name] = [torch.zeros_like(p) for p in params]
                torch._foreach_add_(sums[name], params)
                counts[name] += 1
        for name, decay in SLOW_EMAS.items():
            if name not in slow:
                slow[name] = [p.clone() for p in params]
            else:
                torch._foreach_lerp_(slow[name], params, 1.0 - min(decay, (1 + event.step) / (10 + event.step)))
        for name, share in SNAPSHOTS.items():
            if event.step == round(args.steps * share):
                weight_sets[name] = [p.detach().clone() for p in trainer.ema_model.parameters()]
    weight_sets["ema"] = [p.detach().clone() for p in trainer.ema_model.parameters()]
    weight_sets.update(slow)
    for name, total in sums.items():
        weight_sets[name] = [s / counts[name] for s in total]
    result = {"data": str(args.data), "protocol": args.protocol, "steps": trainer.step, "seed": args.seed,
              "train": json.loads(args.train), "tail_steps": counts, "dice_fg": {}}
    for name, values in weight_sets.items():  # segment() predicts with trainer.ema_model, overwritten here
        with torch.no_grad():
            for p, v in zip(trainer.ema_model.parameters(), values):
                p.copy_(v)
        result["dice_fg"][name] = evaluate_masks(truth, session.segment(), k + 1)["dice_fg"]
        print(f"{name:>12}: {result['dice_fg'][name]:.4f}", flush=True)
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
