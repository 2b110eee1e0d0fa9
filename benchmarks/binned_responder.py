"""The first responder's bank in half precision and on a binned grid (a volume whose full float32 bank would not fit).

    python benchmarks/binned_responder.py ../shared/data/*.npz --sample --tubes --seeds 0
    python benchmarks/binned_responder.py --large 96 512 512 --seeds 0 --protocols z:3 scribble:3
    python benchmarks/binned_responder.py --large 96 512 512 --write /tmp/large/sample_cells_96x512x512.npz

For each volume, protocol and seed, the product's three-stage first responder is fitted on every label on three
grids (``core.feature_stack.choose_grid`` at three memory limits): the full grid in float32, the full grid in
float16 (the limit just under the float32 need), and the first round of bins in float16 (the limit just under the
float16 need: the finest axes halved). It prints the foreground Dice of the mask shown (every stage done) on the
float32 grid and the other two's differences from it, measured in the same run, and the seconds of each bank and of
each grid's three stages. ``--tubes`` adds ``autocontext.py``'s thin tubes (radius 1.5 voxels). ``--large Z Y X``
runs the synthetic sample at that size instead; ``--write PATH`` saves it as a ``.npz`` (image, labels, spacing) for
``benchmarks/suite.py --data PATH`` and does nothing else. The last line per volume is the grid the product picks at
the default limit. Banks use the threads of ``core.feature_stack.feature_workers`` for ``--threads``. Float32
forests on the CPU; no net.
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
from napari_sparseseg.core.feature_stack import FeatureStack, Grid, choose_grid, responder_bytes
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
        raise SystemExit(f"the responder wanted the grid {responder.grid}, the stack has {stack.grid}")
    t0 = time.perf_counter()
    responder.fit()
    while responder.refine():
        pass
    pred = responder.predict().argmax(0)
    return dice_fg(truth, pred), time.perf_counter() - t0


def grids(shape, spacing, k: int) -> dict[str, tuple[ResponderConfig, Grid]]:
    """The three grids compared, each with a config whose memory limit makes ``choose_grid`` pick it: the full grid
    in float32, in float16, and the first round of bins (float16)."""
    default = ResponderConfig()
    full, half = responder_bytes(shape, 1, k), responder_bytes(shape, 1, k, 2)
    out = {}
    for key, limit in (("float32", max(full, default.max_feature_bytes)), ("float16", full - 1), ("binned", half - 1)):
        config = replace(default, max_feature_bytes=limit)
        out[key] = (config, choose_grid(shape, spacing, limit, 1, k))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*")
    parser.add_argument("--sample", action="store_true")
    parser.add_argument("--tubes", action="store_true", help="also autocontext.py's thin tubes (radius 1.5 voxels)")
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
        volumes = load_volumes(args.files, args.sample, args.tubes)
    print("volume | protocol | seed | bins | Dice float32 | float16 - float32 | binned - float32 | "
          "bank s float32 / float16 / binned | stages s float32 / float16 / binned")
    for name, image, truth, spacing in volumes:
        k = int(truth.max())
        chosen = grids(image.shape, spacing, k)
        stacks = {key: FeatureStack(image, spacing, grid=grid) for key, (_, grid) in chosen.items()}
        for stack in stacks.values():
            stack.get()
        product = choose_grid(image.shape, spacing, ResponderConfig().max_feature_bytes, 1, k)
        bins = "x".join(map(str, chosen["binned"][1].factors))
        for protocol in args.protocols:
            annotation = simulate_annotation(truth, protocol)
            for seed in args.seeds:
                row = {}
                for key, (config, _) in chosen.items():
                    volume = AnnotatedVolume(image, num_classes=k, spacing=spacing, annotation=annotation)
                    row[key] = shown_dice(image, volume, config, stacks[key], truth, seed)
                d32 = row["float32"][0]
                print(f"{name} | {protocol} | {seed} | {bins} | {d32:.3f} | {row['float16'][0] - d32:+.3f} | "
                      f"{row['binned'][0] - d32:+.3f} | "
                      f"{' / '.join(f'{stacks[key].seconds:.1f}' for key in chosen)} | "
                      f"{' / '.join(f'{row[key][1]:.1f}' for key in chosen)}", flush=True)
        print(f"{name}: the product's grid at the default limit: {product}")

if __name__ == "__main__":
    main()
