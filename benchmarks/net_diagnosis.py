"""Why does the net fall behind on a volume? Train it alone and watch what it predicts.

    python benchmarks/net_diagnosis.py ../shared/data/brats2013_pat0005_mri_tumour_NC_license.npz \\
        --protocol z:3 --seconds 120 --every 30 --variants default class_balance_power=0

Trains the net alone (no first responder, nothing held back; float32 on the CPU, 2 threads) on the labels of a
protocol, and every ``--every`` seconds predicts the whole volume and prints the step, the tracked loss, the
foreground Dice, the share of the volume predicted as each class beside its true share, and the per-class Dice.
Each variant is ``default`` or ``name=value`` of a ``TrainConfig`` field (typed like its default).

``--steps N --every-steps M`` clocks the run in steps instead (the same on any machine or load); ``--binary`` merges
the foreground classes into one; ``--parts JSON`` varies the trainer's parts (``helpers.vary_parts``, e.g.
``'{"losses": {"hardest": 0}}'``). Each report also gives the net's recall of every class on the labeled voxels
(its fit to its own labels, before they are merged in).

``--patch ZxYxX`` trains on patches of that shape instead of the planned one (``patch_shape``: a roughly
isotropic physical field of view).

``--bank-input`` trains the net on the image and its filter bank (the first responder's 48 columns,
:class:`~napari_sparseseg.core.feature_stack.FeatureStack`) as 49 channels, each scaled linearly: does the net fall
behind for want of the features a forest reads? ``--first-norm none`` drops the instance norm of the net's first
unit, which rescales each patch's first feature maps on their own: does the net lose the absolute intensity?

``--protocol full`` labels every voxel: does the net fall behind for want of labels, or of steps? Each report
gives the net's own foreground Dice, before the labels are merged in.

``--voxel-mlp`` (with ``--bank-input`` and ``--steps``) trains, in place of the U-Net, a per-voxel MLP (1x1x1
convolutions, the image and its 48 columns -> 64 -> 64 -> classes) on the trainer's own batches and label loss
(AdamW at the configured rate, each variant's class weights and ``--parts``' Dice weight; the hardest-voxel and
smoothness terms left out): do a forest's columns, learned by gradient
from the same patches, give what the forest gets from them?

``--voxelwise`` first prints the same numbers for decision trees (depths 1, 2, 4, 8, balanced classes) on the
normalised intensities the net reads, voxel by voxel (no neighbourhood): where the net's errors match a tree's, the
net has learned an intensity threshold and not yet the context around a voxel.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import fields, replace

import numpy as np
import torch
from helpers import vary_parts

from napari_sparseseg.core.config import ResponderConfig, SessionConfig, TrainConfig
from napari_sparseseg.core.feature_stack import FeatureStack
from napari_sparseseg.core.loss import partial_label_loss
from napari_sparseseg.core.session import SegmentationSession
from napari_sparseseg.evaluation.metrics import evaluate_masks
from napari_sparseseg.evaluation.protocols import simulate_annotation


def parse_variant(text: str) -> TrainConfig:
    base = TrainConfig(amp=False)
    if text == "default":
        return base
    name, _, value = text.partition("=")
    kinds = {f.name: type(getattr(base, f.name)) for f in fields(TrainConfig)}
    if name not in kinds:
        raise SystemExit(f"unknown TrainConfig field {name!r}")
    kind = kinds[name]
    return replace(base, **{name: (value == "True") if kind is bool else kind(value)})


def voxelwise_trees(image: np.ndarray, truth: np.ndarray, annotation: np.ndarray, k: int) -> None:
    """Print what decision trees on each voxel's own normalised intensities reach (see the module docstring)."""
    from sklearn.tree import DecisionTreeClassifier

    from napari_sparseseg.core.volume import as_channels_first, normalize

    views = normalize(as_channels_first(image).astype(np.float32), TrainConfig().intensity_views)
    labeled = annotation > 0
    x, y = views[:, labeled].T, annotation[labeled] - 1
    for depth in (1, 2, 4, 8):
        tree = DecisionTreeClassifier(max_depth=depth, class_weight="balanced", random_state=0).fit(x, y)
        pred = tree.predict(views.reshape(len(views), -1).T).reshape(truth.shape).astype(np.uint8)
        print(f"voxelwise tree, depth {depth}: {describe(truth, pred, pred, annotation, k)}", flush=True)


def voxel_mlp(session: SegmentationSession, train: TrainConfig, steps: int, every: int, truth: np.ndarray,
              annotation: np.ndarray, k: int) -> None:
    """Train a per-voxel MLP on ``session``'s batches (see the module docstring) and report every ``every`` steps."""
    torch.manual_seed(train.seed)
    features = torch.from_numpy(session.volume.features)  # (C, z, y, x), normalised as the batches are
    mlp = torch.nn.Sequential(torch.nn.Conv3d(features.shape[0], 64, 1), torch.nn.ReLU(), torch.nn.Conv3d(64, 64, 1),
                              torch.nn.ReLU(), torch.nn.Conv3d(64, k + 1, 1))
    optimizer = torch.optim.AdamW(mlp.parameters(), train.learning_rate)
    labeled = annotation > 0
    for step in range(1, steps + 1):
        image, target, weight, _ = session.trainer.batches.take(train.augment, 1, train)
        loss = partial_label_loss(mlp(image), target, weight, session.trainer.losses.dice)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % every == 0 or step == steps:
            with torch.no_grad():
                raw = np.concatenate([mlp(features[None, :, z:z + 8]).argmax(1)[0].numpy()
                                      for z in range(0, features.shape[1], 8)]).astype(np.uint8)
            shown = raw.copy()
            shown[labeled] = annotation[labeled] - 1
            print(f"step {step:4d} loss {loss.item():.3f} | {describe(truth, shown, raw, annotation, k)}", flush=True)


def describe(truth: np.ndarray, shown: np.ndarray, raw: np.ndarray, annotation: np.ndarray, k: int) -> str:
    """One report: the Dice and class shares of ``shown`` (``(z, y, x)`` classes), and the foreground Dice of ``raw``
    (the learner's own answer, before any labels are merged in: with ``--protocol full`` the only Dice that is not
    1) and its recall of each class on the labeled voxels."""
    s = evaluate_masks(truth, shown, k + 1)
    own = evaluate_masks(truth, raw, k + 1)["dice_fg"]
    share = np.bincount(shown.ravel(), minlength=k + 1) / shown.size
    recall = [round(float(np.mean(raw[annotation == c + 1] == c)), 3) for c in range(k + 1)]
    return (f"fg Dice {s['dice_fg']:.3f} | predicted shares {np.round(share, 4).tolist()} | "
            f"per-class Dice {[round(float(v), 3) for v in s['dice'][1:]]} | own fg Dice {own:.3f} | "
            f"recall on the labels {recall}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("--protocol", default="z:3")
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--every", type=float, default=30.0)
    ap.add_argument("--variants", nargs="*", default=["default"], help="none: no net (with --voxelwise)")
    ap.add_argument("--steps", type=int, help="train this many steps (instead of --seconds)")
    ap.add_argument("--every-steps", type=int, default=100)
    ap.add_argument("--binary", action="store_true", help="one foreground class: every class merged")
    ap.add_argument("--parts", help="JSON of the trainer's parts to vary (helpers.vary_parts)")
    ap.add_argument("--voxelwise", action="store_true", help="first, trees on each voxel's intensities alone")
    ap.add_argument("--patch", help="ZxYxX: train on patches of this shape (the net's size multiple per axis)")
    ap.add_argument("--bank-input", action="store_true", help="the net reads the image and its filter bank")
    ap.add_argument("--voxel-mlp", action="store_true", help="a per-voxel MLP on the bank instead of the U-Net")
    ap.add_argument("--first-norm", choices=("instance", "none"), default="instance",
                    help="the norm of the net's first unit")
    args = ap.parse_args()
    if args.voxel_mlp and not (args.bank_input and args.steps):
        ap.error("--voxel-mlp reads the filter bank and counts steps: give --bank-input and --steps")
    torch.set_num_threads(2)
    if args.parts:
        vary_parts(json.loads(args.parts))
    with np.load(args.file) as d:
        image, truth, spacing = d["image"], d["labels"], tuple(float(s) for s in d["spacing"])
    if args.binary:
        truth = (truth > 0).astype(np.uint8)
    k = int(truth.max())
    annotation = simulate_annotation(truth, args.protocol)
    true_share = np.bincount(truth.ravel(), minlength=k + 1) / truth.size
    print(f"true class shares: {np.round(true_share, 4).tolist()}; labeled class counts: "
          f"{np.bincount(annotation.ravel(), minlength=k + 2)[1:].tolist()}")
    if args.voxelwise:
        voxelwise_trees(image, truth, annotation, k)
    net_input, channel_axis = image, None
    if args.bank_input:
        bank = FeatureStack(image, spacing).get()  # (z, y, x, 48)
        net_input, channel_axis = np.concatenate([image[None].astype(np.float32), np.moveaxis(bank, -1, 0)]), 0
    for text in args.variants:
        train = parse_variant(text)
        if args.bank_input:
            train = replace(train, intensity_views=("linear",))
        config = SessionConfig(train=train, responder=ResponderConfig(enabled=False), device="cpu")
        session = SegmentationSession(net_input, num_classes=k, spacing=spacing, channel_axis=channel_axis,
                                      annotation=annotation, config=config)
        if args.first_norm == "none":
            for net in (session.trainer.model, session.trainer.ema_model):
                net.encoders[0][0][1] = torch.nn.Identity()  # ConvUnit: conv, norm, activation
        if args.patch:
            session.trainer.batches.set_patch(tuple(int(v) for v in args.patch.lower().split("x")))
        print(f"-- {text}: patch {session.trainer.patch_size}, class weights "
              f"{np.round(session.volume.class_weights(config.train.class_balance_power), 2).tolist()}")
        if args.voxel_mlp:
            voxel_mlp(session, train, args.steps, args.every_steps, truth, annotation, k)
            continue
        train_time, next_report = 0.0, args.every
        events = session.train()
        while (session.trainer.step < args.steps) if args.steps else (train_time < args.seconds):
            t0 = time.perf_counter()
            event = next(events)
            train_time += time.perf_counter() - t0
            if args.steps:
                due = session.trainer.step % args.every_steps == 0 or session.trainer.step >= args.steps
            else:
                due = train_time >= next_report or train_time >= args.seconds
            if due:
                next_report += args.every
                prediction = session.predict()  # the net's own labels, then with the user's merged in
                report = describe(truth, session.merge(prediction), prediction.labels, annotation, k)
                print(f"{train_time:6.0f} s step {session.trainer.step:4d} loss {getattr(event, 'tracked_loss', 0):.3f}"
                      f" | {report}", flush=True)
        events.close()
        session.trainer.close()


if __name__ == "__main__":
    main()
