"""Train on one volume, segment another it has never seen: the net against the forest, on halves of each volume.

    python benchmarks/cross_volume.py --sample ../shared/data/*.npz --steps 300 --protocol z:3 --json out.json
    python benchmarks/cross_volume.py --sample ../shared/data/*.npz --modes both alone --json out.json
    python benchmarks/cross_volume.py --summarize seed0.json seed1.json seed2.json   # mean over seeds

Each volume is cut in two along x (``--axis``), at the middle or through the median foreground voxel (``--cut
foreground``: a structure in one corner of the volume, as the tumour of the BraTS MRI, then lies in both); half A is
labeled as a user would (``--protocol``, simulated from its ground truth) and half B is never seen. The net trains
on half A alone for ``--steps`` steps (float32 on the CPU, 2 threads; a budgeted run as ``train --seconds`` makes,
clocked in steps, so the result does not depend on the machine's load), is saved as a model file and applied to half
B with ``SegmentationSession.from_model`` (its own normalisation, the final mirrored sliding window). The forest
(100 trees on the filter bank, as the baseline) is fitted on half A's labels and applied to half B's features.
Printed: foreground Dice on half B of both, and of each on half A (where it was labeled) for reference. The 3D U-Net
paper's "fully automated" setting, on the volumes at hand.

``--distill W``: before the net of ``across`` trains, the product's first responder (every stage) is fitted on half
A's labels and its confident answers become the net's pseudo-labels at weight ``W`` (``core.distill``), as the
plugin's loop hands them (kept for the whole run here: no held-back labels to fade them by).

``--loop window``: the net of ``across`` trains in the plugin's loop (``SegmentationSession.interactive``, what
``train`` runs: the first responder answers, 12.5 % of the labels are held back from the net, its answers taught to
the net and faded as it catches up; no learning-rate decay or guards, which a budgeted run has) until ``--steps``.

``--modes`` picks what is run: ``across`` (the above), ``forest`` (its forest alone, each half's bank on its own
intensity scale and, to compare, both on the whole volume's), ``both`` (half B labeled too, by the same protocol: the
net trains on both halves' labels, B the session's volume and A added with
``SegmentationSession.add_training_volume``, and predicts B) and ``alone`` (the net on half B's labels alone, the
single-volume session: the reference for ``both``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from helpers import clock_in_steps, load_volumes

from napari_sparseseg.core.checkpoint import read_model, save_model
from napari_sparseseg.core.config import ResponderConfig, SessionConfig, TrainConfig
from napari_sparseseg.core.distill import pseudo_labels
from napari_sparseseg.core.encoding import UNLABELED, annotation_to_mask
from napari_sparseseg.core.first_responder import FirstResponder
from napari_sparseseg.core.session import SegmentationSession
from napari_sparseseg.evaluation.metrics import evaluate_masks
from napari_sparseseg.evaluation.protocols import simulate_annotation

AXES = {"z": 0, "y": 1, "x": 2}


def halves(array: np.ndarray, axis: int = 2, at: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The two parts of a ``(z, y, x)`` array cut along ``axis`` (default x) before index ``at`` (default: the
    middle)."""
    a, b = np.array_split(array, [array.shape[axis] // 2 if at is None else at], axis=axis)
    return np.ascontiguousarray(a), np.ascontiguousarray(b)


def cut_index(truth: np.ndarray, axis: int, cut: str) -> int | None:
    """Where to cut along ``axis``: the middle of the volume (None), or the median foreground voxel's index, so that
    each part holds half of a structure that fills one corner of the volume."""
    if cut == "middle" or not truth.any():
        return None
    return int(np.median(np.nonzero(truth)[axis]))


def no_pair(truth_b: np.ndarray, annotation_a: np.ndarray) -> str | None:
    """Why the halves make no pair to compare on (no foreground in half B, or none labeled in half A), or None."""
    if not truth_b.any():
        return "half B holds no foreground"
    if not (annotation_a > 1).any():
        return f"the labels of half A hold no foreground (of {int(np.count_nonzero(annotation_a))} labeled voxels)"
    return None


def forest_across(image_a: np.ndarray, annotation_a: np.ndarray, image_b: np.ndarray, spacing, seed: int,
                  scaled_by: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Class maps of half A and half B from a forest fitted on half A's labels (the baseline's settings).

    Each half's filter bank scales its intensities by its own 0.5 / 99.5 percentiles (as the product scales each
    volume), or with ``scaled_by`` by those of that image (the whole volume: a shared scale, as a fixed CT window
    would give).
    """
    from sklearn.ensemble import RandomForestClassifier

    from napari_sparseseg.core import features
    from napari_sparseseg.core.subsample import stratified_subsample

    if scaled_by is not None:
        lo, hi = np.percentile(np.asarray(scaled_by, np.float32), (0.5, 99.5))
        real, features._normalize = features._normalize, lambda img: (np.asarray(img, np.float32) - lo) / (hi - lo)
        try:
            return forest_across(image_a, annotation_a, image_b, spacing, seed)
        finally:
            features._normalize = real
    compute_features = features.compute_features

    labeled = annotation_a != UNLABELED
    target = annotation_to_mask(annotation_a)
    feats_a = compute_features(image_a, spacing)
    x, y = feats_a[labeled], target[labeled]
    keep = stratified_subsample(y, 100_000, np.random.default_rng(seed))
    forest = RandomForestClassifier(n_estimators=100, n_jobs=-1, random_state=seed).fit(x[keep], y[keep])
    out = []
    for feats, shape in ((feats_a, image_a.shape), (compute_features(image_b, spacing), image_b.shape)):
        flat = feats.reshape(-1, feats.shape[-1])
        pred = np.concatenate([forest.predict(flat[i:i + 200_000]) for i in range(0, len(flat), 200_000)])
        out.append(pred.reshape(shape).astype(np.uint8))
    return out[0], out[1]


def net_config(seed: int) -> SessionConfig:
    """The net alone (no first responder), float32 on the CPU."""
    return SessionConfig(train=TrainConfig(amp=False, seed=seed), responder=ResponderConfig(enabled=False),
                         device="cpu")


def distil_from_responder(session: SegmentationSession, image: np.ndarray, weight: float, seed: int) -> None:
    """Give the net of ``session`` the first responder's confident answers (every stage, fitted on every label of
    its volume) as pseudo-labels of ``weight`` (``core.distill``), as the plugin's loop does; kept, not faded."""
    responder = FirstResponder(image, session.volume, ResponderConfig(), seed=seed)
    if responder.fit():
        while responder.refine():
            pass
        session.volume.pseudo = pseudo_labels(responder.predict(), weight)


def net_across(image_a: np.ndarray, annotation_a: np.ndarray, image_b: np.ndarray, spacing, k: int, steps: int,
               seed: int, distill: float = 0.0, loop: str = "budget", scale: str = "own"
               ) -> tuple[np.ndarray, np.ndarray, float]:
    """Class maps of half A and half B from a net trained ``steps`` steps on half A's labels (and the first
    responder's answers at weight ``distill`` where it is above 0), and its seconds. ``loop="window"``: trained in
    the window's loop instead (``SegmentationSession.interactive``, as ``train`` runs it), until ``steps``.
    ``scale="a"``: half B's intensities normalised by half A's statistics (the product: each volume by its own)."""
    config = net_config(seed)
    if loop == "window":
        config = replace(config, responder=ResponderConfig())
    session = SegmentationSession(image_a, num_classes=k, spacing=spacing, annotation=annotation_a, config=config)
    if distill > 0:
        distil_from_responder(session, image_a, distill, seed)
    t0 = time.perf_counter()
    if loop == "window":
        events = session.interactive(should_stop=lambda: session.trainer.step >= steps)
    else:
        events = session.train(max_steps=steps, decay_until=float(steps))  # a budgeted run, clocked in steps
    for _ in events:
        pass
    seconds = time.perf_counter() - t0
    on_a = session.trainer.predict(final=True).labels
    with tempfile.TemporaryDirectory() as tmp:
        path = save_model(session.trainer, Path(tmp) / "model.pt")
        other = SegmentationSession.from_model(image_b, read_model(path), spacing=spacing, device="cpu")
    if scale == "a":
        from napari_sparseseg.core.volume import IntensityStats, as_channels_first

        stats = IntensityStats.fit(as_channels_first(image_a, None), config.train.intensity_views)
        other.volume.features = stats.apply(as_channels_first(image_b, None)).astype(np.float32)
    on_b = other.trainer.predict(final=True).labels
    return on_a, on_b, seconds


def net_on_b(image_b: np.ndarray, annotation_b: np.ndarray, spacing, k: int, steps: int, seed: int,
             also: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, float]:
    """Class map of half B from a net trained ``steps`` steps on half B's labels, and on ``also`` = ``(image,
    annotation)`` of half A too when given; and its seconds."""
    config = net_config(seed)
    session = SegmentationSession(image_b, num_classes=k, spacing=spacing, annotation=annotation_b, config=config)
    if also is not None:
        session.add_training_volume(also[0], annotation=also[1], spacing=spacing)
    t0 = time.perf_counter()
    for _ in session.train(max_steps=steps, decay_until=float(steps)):
        pass
    return session.trainer.predict(final=True).labels, time.perf_counter() - t0


def summarize(paths: list[str]) -> None:
    """Per volume, the mean (and range) over the runs in ``paths`` of the unseen half's net and forest Dice."""
    by_volume: dict[str, list[dict]] = {}
    for path in paths:
        for row in json.loads(Path(path).read_text())["rows"]:
            if "net_b" in row:
                by_volume.setdefault(row["volume"], []).append(row)
    for name, rows in by_volume.items():
        gaps = [r["net_b"] - r["forest_b"] for r in rows]
        mean = {key: sum(r[key] for r in rows) / len(rows) for key in ("net_b", "forest_b", "net_a", "forest_a")}
        print(f"{name:42s} {len(rows)} seeds: half B net {mean['net_b']:.3f} forest {mean['forest_b']:.3f} "
              f"({sum(gaps) / len(gaps):+.3f}, {min(gaps):+.3f} to {max(gaps):+.3f}) | half A net {mean['net_a']:.3f} "
              f"forest {mean['forest_a']:.3f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*")
    ap.add_argument("--sample", action="store_true")
    ap.add_argument("--protocol", default="z:3")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--distill", type=float, default=0.0,
                    help="the net of 'across' also learns the first responder's confident answers at this weight")
    ap.add_argument("--loop", choices=("budget", "window"), default="budget",
                    help="how the net of 'across' trains: a budgeted run of --steps (train before it ran the "
                         "window's loop), or the window's loop (the first responder, held-back labels, distillation "
                         "faded as the net catches up) until --steps")
    ap.add_argument("--modes", nargs="+", choices=("across", "both", "alone", "forest"), default=["across"],
                    help="what is run (above); 'forest': the forest of 'across' alone, each half on its own scale "
                         "and both on the whole volume's")
    ap.add_argument("--axis", choices=tuple(AXES), default="x", help="the axis the volume is cut in two along")
    ap.add_argument("--cut", choices=("middle", "foreground"), default="middle",
                    help="cut at the middle of the axis, or at the median foreground voxel (a structure in a corner)")
    ap.add_argument("--net-scale", choices=("own", "a"), default="own",
                    help="half B's intensities for the net of 'across': normalised on their own (the product's) or by "
                         "half A's statistics")
    ap.add_argument("--json")
    ap.add_argument("--summarize", nargs="+", metavar="JSON", help="print the mean over seeds of these runs' rows")
    args = ap.parse_args(argv)
    if args.summarize:
        summarize(args.summarize)
        return 0
    torch.set_num_threads(2)
    clock_in_steps(1.0)  # the learning rate decays, and the guards act, over exactly --steps steps
    rows = []
    for name, image, truth, spacing in load_volumes(args.files, args.sample):
        k = int(truth.max())
        at = cut_index(truth, AXES[args.axis], args.cut)
        image_a, image_b = halves(image, AXES[args.axis], at)
        truth_a, truth_b = halves(truth, AXES[args.axis], at)
        annotation_a = simulate_annotation(truth_a, args.protocol)
        if (reason := no_pair(truth_b, annotation_a)) is not None:
            where = "the middle" if at is None else at
            print(f"{name:42s} cut along {args.axis} at {where}: no pair, {reason}", flush=True)
            continue
        row = {"volume": name, "protocol": args.protocol, "steps": args.steps, "seed": args.seed, "axis": args.axis,
               "cut_at": at, "distill": args.distill, "loop": args.loop, "net_scale": args.net_scale}
        line = f"{name:42s}"
        if "forest" in args.modes:
            for key, scale in (("forest_b", None), ("forest_b_shared_scale", image)):
                _, forest_b = forest_across(image_a, annotation_a, image_b, spacing, args.seed, scale)
                row[key] = round(evaluate_masks(truth_b, forest_b, k + 1)["dice_fg"], 4)
            line += (f" half B (unseen): forest {row['forest_b']:.3f}, on the whole volume's scale "
                     f"{row['forest_b_shared_scale']:.3f}")
        if "across" in args.modes:
            forest_a, forest_b = forest_across(image_a, annotation_a, image_b, spacing, args.seed)
            net_a, net_b, seconds = net_across(image_a, annotation_a, image_b, spacing, k, args.steps, args.seed,
                                                args.distill, args.loop, args.net_scale)
            dice = {key: evaluate_masks(t, m, k + 1)["dice_fg"] for key, t, m in (
                ("forest_a", truth_a, forest_a), ("forest_b", truth_b, forest_b), ("net_a", truth_a, net_a),
                ("net_b", truth_b, net_b))}
            row.update(train_seconds=round(seconds, 1), **{key: round(v, 4) for key, v in dice.items()})
            line += (f" half B (unseen): net {dice['net_b']:.3f}  forest {dice['forest_b']:.3f}  "
                     f"({dice['net_b'] - dice['forest_b']:+.3f}) | half A (labeled): net {dice['net_a']:.3f}  "
                     f"forest {dice['forest_a']:.3f} | {args.steps} steps in {seconds:.0f} s")
        annotation_b = simulate_annotation(truth_b, args.protocol)
        for mode in [m for m in ("both", "alone") if m in args.modes]:
            also = (image_a, annotation_a) if mode == "both" else None
            labels, seconds = net_on_b(image_b, annotation_b, spacing, k, args.steps, args.seed, also)
            row[f"net_b_{mode}"] = round(evaluate_masks(truth_b, labels, k + 1)["dice_fg"], 4)
            row[f"train_seconds_{mode}"] = round(seconds, 1)
            line += f" | half B labeled, net on {'A + B' if mode == 'both' else 'B'}: {row[f'net_b_{mode}']:.3f}"
        rows.append(row)
        print(line, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "torch": torch.__version__}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
