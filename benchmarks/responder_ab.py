"""A/B of first-responder settings: the product's loop on each file with each ``ResponderConfig`` variant.

    python benchmarks/responder_ab.py --budget 60 --protocol z:3 --variants distill=0,distill=0.5 --sample \\
        ../shared/data/*.npz

Prints, per file and variant, the Dice of the mask shown and of the net alone at the end of the budget, the net's
steps, the held-back scores and the curve of the mask shown (``evaluate_volume``; float32 on the CPU).
"""

from __future__ import annotations

import argparse
from dataclasses import fields, replace

import torch
from helpers import load_volumes

from napari_sparseseg.core.config import ResponderConfig, SessionConfig, TrainConfig
from napari_sparseseg.evaluation.simulated_user import evaluate_volume


def parse_variant(text: str) -> ResponderConfig:
    """``name=value`` of a ResponderConfig field (typed like its default)."""
    name, _, value = text.partition("=")
    kinds = {f.name: type(getattr(ResponderConfig(), f.name)) for f in fields(ResponderConfig)}
    if name not in kinds:
        raise SystemExit(f"unknown ResponderConfig field {name!r}; choose from {sorted(kinds)}")
    kind = kinds[name]
    return replace(ResponderConfig(), **{name: (value == "True") if kind is bool else kind(value)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*")
    ap.add_argument("--sample", action="store_true")
    ap.add_argument("--budget", type=float, default=60.0)
    ap.add_argument("--protocol", default="z:3")
    ap.add_argument("--variants", required=True, help="comma list of name=value")
    args = ap.parse_args()
    torch.set_num_threads(2)
    volumes = load_volumes(args.files, args.sample)
    for name, image, truth, spacing in volumes:
        for text in args.variants.split(","):
            config = SessionConfig(train=TrainConfig(amp=False), responder=parse_variant(text), device="cpu")
            r = evaluate_volume(image, truth, spacing=spacing, protocol=args.protocol, budget_seconds=args.budget,
                                config=config)
            curve = [(p["seconds"], round(p["dice_fg"], 3), p["learner"]) for p in r["curve"]]
            net = r["dice_fg_net"]
            print(f"{name} {args.protocol} {text}: shown {r['dice_fg']:.3f} ({r['learner']}), net "
                  f"{'-' if net is None else f'{net:.3f}'} in {r['steps']} steps, held-back "
                  f"{ {k: round(v, 3) for k, v in r['held_back_scores'].items()} }, curve {curve}", flush=True)


if __name__ == "__main__":
    main()
