"""Do the suggested slices help more than evenly spaced or random ones? A simulated user, with the first responder.

    python benchmarks/suggestions.py --sample ../shared/data/*.npz --seeds 0 1 2 --max-slices 6 \\
        --plot docs/benchmark_suggestions.png

Three users start from the same middle z slice (that of ``z:1``), painted whole from ground truth, and paint one
more whole slice at a time up to ``--max-slices``:

- ``suggest`` paints the widget's top suggestion (``core/guidance.py``: any orientation), computed from the
  uncertainty of the mask shown after the previous slice;
- ``even`` paints the evenly spaced z slices of protocol ``z:K`` (not nested: the K slices of ``z:K``);
- ``random`` adds a random unpainted z slice.

After each slice the first responder (the forest the widget shows in the first minute, fitted on every label,
every stage) predicts the volume, and the foreground Dice of the mask shown (labels merged in) is printed. No net
is trained: this measures the guidance with the learner a user sees first, in minutes rather than hours of CPU
time. Three seeds change the forest and the random order. The last lines summarise the issue's targets.
"""

from __future__ import annotations

import argparse
import collections

import numpy as np
import torch
from helpers import load_volumes

from napari_sparseseg.core.annotation import AnnotatedVolume
from napari_sparseseg.core.config import ResponderConfig
from napari_sparseseg.core.encoding import mask_to_annotation
from napari_sparseseg.core.feature_stack import FeatureStack
from napari_sparseseg.core.first_responder import FirstResponder
from napari_sparseseg.core.guidance import suggest_slices
from napari_sparseseg.core.inference import entropy
from napari_sparseseg.evaluation.protocols import slice_positions

STRATEGIES = ("suggest", "even", "random")


def _plane(axis: int, index: int) -> tuple:
    return tuple(index if a == axis else slice(None) for a in range(3))


def dice_fg(truth: np.ndarray, pred: np.ndarray) -> float:
    t, p = truth > 0, pred > 0
    return float(2 * np.logical_and(t, p).sum() / max(1, t.sum() + p.sum()))


def run_user(image, truth, spacing, features, strategy: str, seed: int, max_slices: int) -> list[float]:
    """Dice of the mask shown after 1..max_slices painted slices."""
    k = int(truth.max())
    n = truth.shape[0]
    rng = np.random.default_rng(seed)
    painted: list[tuple[int, int]] = [(0, slice_positions(n, 1)[0])]  # z:1's slice, where `even` starts too
    dices = []
    for count in range(1, max_slices + 1):
        if strategy == "even":
            painted = [(0, z) for z in slice_positions(n, count)]
        annotation = np.zeros(truth.shape, np.uint8)
        for axis, index in painted:
            plane = _plane(axis, index)
            annotation[plane] = mask_to_annotation(truth[plane])
        volume = AnnotatedVolume(image, num_classes=k, spacing=spacing, annotation=annotation)
        responder = FirstResponder(image, volume, ResponderConfig(), seed=seed, features=features)
        if not responder.fit():
            dices.append(float("nan"))
        else:
            while responder.refine():  # every stage, as the widget shows it
                pass
            probs = responder.predict()
            labeled = annotation > 0
            shown = np.where(labeled, annotation.astype(np.int64) - 1, probs.argmax(0))
            dices.append(dice_fg(truth, shown))
        if count == max_slices:
            break
        if strategy == "suggest":
            best = suggest_slices(entropy(probs), annotation > 0, top=1) if responder.fitted else []
            if best:
                painted.append((best[0].axis, best[0].index))
            else:  # nothing uncertain left: fall back to the next random slice
                strategy = "random"
        if strategy == "random":
            free = sorted(set(range(n)) - {i for a, i in painted if a == 0})
            painted.append((0, int(rng.choice(free))))
    return dices


def read_means(path: str) -> list[tuple[str, dict[str, np.ndarray]]]:
    """The per-volume means from this script's printed output."""
    summary, name, means = [], None, {}
    for line in open(path).read().splitlines():
        if " mean of " in line:
            name, means = line.split(" mean of ")[0], {}
            summary.append((name, means))
        elif name is not None and line.strip().split(" ")[0] in STRATEGIES and "seed" not in line:
            parts = line.split()
            means[parts[0]] = np.array([float(v) for v in parts[1:]])
    return summary


def plot(summary: list[tuple[str, dict[str, np.ndarray]]], path: str) -> None:
    """Dice of the mask shown against painted slices, one panel per volume, one line per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(summary), figsize=(3.2 * len(summary), 3.0), squeeze=False)
    for ax, (name, means) in zip(axes[0], summary):
        for strategy, style in zip(STRATEGIES, ("o-", "s--", "^:")):
            values = means[strategy]
            ax.plot(np.arange(1, len(values) + 1), values, style, label=strategy, ms=4)
        ax.set_title(name.split("_NC_")[0].replace("_", " ")[:28], fontsize=8)
        ax.set_xlabel("painted slices")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("foreground Dice (first responder)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*")
    ap.add_argument("--sample", action="store_true")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--max-slices", type=int, default=6)
    ap.add_argument("--plot", help="write a plot of Dice against painted slices, per volume and strategy, here")
    ap.add_argument("--replot", help="only plot: read the means from this script's printed output")
    args = ap.parse_args()
    if args.replot:
        plot(read_means(args.replot), args.plot or "docs/benchmark_suggestions.png")
        return
    torch.set_num_threads(2)
    volumes = load_volumes(args.files, args.sample)
    summary = []
    for name, image, truth, spacing in volumes:
        features = FeatureStack(image, spacing)
        curves = collections.defaultdict(list)
        for strategy in STRATEGIES:
            for seed in args.seeds:
                curve = run_user(image, truth, spacing, features, strategy, seed, args.max_slices)
                curves[strategy].append(curve)
                print(f"{name} {strategy} seed {seed}: " + " ".join(f"{d:.3f}" for d in curve), flush=True)
        means = {s: np.nanmean(np.array(c), axis=0) for s, c in curves.items()}
        print(f"{name} mean of {len(args.seeds)} seeds, K = 1..{args.max_slices}:")
        for s in STRATEGIES:
            print(f"  {s:8s} " + " ".join(f"{d:.3f}" for d in means[s]))
        summary.append((name, means))
    if args.plot:
        plot(summary, args.plot)
    print("\ntargets:")
    for name, means in summary:
        even5 = means["even"][4] if args.max_slices >= 5 else float("nan")
        reach = next((k + 1 for k, d in enumerate(means["suggest"]) if d >= even5), None)
        worst = float(np.min(means["suggest"][1:] - means["even"][1:]))
        print(f"  {name}: suggestions reach even z:5 ({even5:.3f}) with {reach or 'more than ' + str(args.max_slices)}"
              f" slices; worst suggest - even over K = 2..{args.max_slices}: {worst:+.3f}")


if __name__ == "__main__":
    main()
