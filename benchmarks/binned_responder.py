"""The first responder on a binned grid (a volume whose full filter bank would not fit): what it costs, what it saves.

    python benchmarks/binned_responder.py ../shared/data/*.npz --sample --seeds 0 1 2
    python benchmarks/binned_responder.py --large 96 512 512 --seeds 0 --protocols z:3
    python benchmarks/binned_responder.py --large 96 512 512 --write /tmp/large/sample_cells_96x512x512.npz

For each volume, protocol and seed, the product's three-stage first responder is fitted on every label twice: on
the full grid, and on the grid ``core.feature_stack.grid_factors`` picks when the memory limit is just under the
full grid's need (one round of binning: the finest axes halved). Each prints the foreground Dice of the mask shown
(every stage done) against ground truth, and the seconds of the filter bank and of the three stages; the row's
difference is binned minus full, measured in the same run. ``--large Z Y X`` runs the synthetic sample at that
size instead (a volume over the default limit of ``ResponderConfig().max_feature_bytes`` when large enough, where
the product bins by itself: the full grid is computed only for the comparison); ``--write PATH`` saves it as a
``.npz`` (image, labels, spacing) for ``benchmarks/suite.py --data PATH`` and does nothing else. The bank is
computed with the threads of ``core.feature_stack.feature_workers`` for ``--threads``. Float32 on the CPU; no net.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch
from helpers import load_volumes

from napari_sparseseg.core.annotation import AnnotatedVolume
from napari_sparseseg.core.config import ResponderConfig
from napari_sparseseg.core.feature_stack import FeatureStack, grid_factors, responder_bytes
from napari_sparseseg.core.first_responder import FirstResponder
from napari_sparseseg.evaluation.protocols import simulate_annotation

PROTOCOLS = ("z:1", "z:3", "scribble:3")


def dice_fg(truth: np.ndarray, pred: np.ndarray) -> float:
    """Foreground (any class > 0) Dice."""
    t, p = truth > 0, pred > 0
    return float(2 * np.logical_and(t, p).sum() / max(1, t.sum() + p.sum()))


def shown_dice(image, volume: AnnotatedVolume, config: ResponderConfig, stack: FeatureStack, truth, seed: int):
    """``(Dice, seconds of the three stages)`` of the first responder's mask on ``stack``'s grid."""
    responder = FirstResponder(image, volume, config, seed=seed, features=stack)
    if responder.features is not stack:
        raise SystemExit(f"the responder wanted bins {responder.factors}, the stack has {stack.factors}")
    t0 = time.perf_counter()
    responder.fit()
    while responder.refine():
        pass
    pred = responder.predict().argmax(0)
    return dice_fg(truth, pred), time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*")
    parser.add_argument("--sample", action="store_true")
    parser.add_argument("--large", nargs=3, type=int, metavar=("Z", "Y", "X"))
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write", metavar="PATH")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.large:
        from napari_sparseseg.sample_data import make_cells_volume

        v = make_cells_volume(tuple(args.large), n_cells=int(20 * np.prod(args.large) / (48 * 128 * 128)))
        volumes = [(f"sample_cells_{'x'.join(map(str, args.large))}", v.image, v.labels, tuple(v.spacing))]
        if args.write:
            np.savez(args.write, image=v.image, labels=v.labels, spacing=np.asarray(v.spacing, np.float32))
            return
    else:
        volumes = load_volumes(args.files, args.sample)
    print("volume | protocol | seed | bins | Dice full | Dice binned | binned - full | bank s full / binned | "
          "stages s full / binned")
    for name, image, truth, spacing in volumes:
        k = int(truth.max())
        full_bytes = responder_bytes(image.shape, 1, k)
        default = ResponderConfig()
        if args.large and full_bytes > default.max_feature_bytes:
            binned_config = default
        else:
            binned_config = replace(default, max_feature_bytes=full_bytes - 1)
        factors = grid_factors(image.shape, spacing, binned_config.max_feature_bytes, 1, k)
        full_config = replace(default, max_feature_bytes=max(full_bytes, default.max_feature_bytes))
        stacks = {}
        for key, f in (("full", (1, 1, 1)), ("binned", factors)):
            stacks[key] = FeatureStack(image, spacing, factors=f)
            stacks[key].get()
        for protocol in args.protocols:
            annotation = simulate_annotation(truth, protocol)
            for seed in args.seeds:
                row = {}
                for key, config in (("full", full_config), ("binned", binned_config)):
                    volume = AnnotatedVolume(image, num_classes=k, spacing=spacing, annotation=annotation)
                    row[key] = shown_dice(image, volume, config, stacks[key], truth, seed)
                (df, sf), (db, sb) = row["full"], row["binned"]
                print(f"{name} | {protocol} | {seed} | {'x'.join(map(str, factors))} | {df:.3f} | {db:.3f} | "
                      f"{db - df:+.3f} | {stacks['full'].seconds:.1f} / {stacks['binned'].seconds:.1f} | "
                      f"{sf:.1f} / {sb:.1f}", flush=True)


if __name__ == "__main__":
    main()
