"""Experiment, not in the product: a self-supervised warm start of the net before any label exists.

Measured with ``benchmarks/warm_start.py`` and left out: it helped on one volume and cost 0.09 Dice on another
(BENCHMARKS.md, "Self-supervised warm start").

Pretext task (Noise2Void's blind spot, Krull et al. 2019): a small share of the
voxels of a random patch is replaced by a value from a random nearby voxel, and
the net predicts the original intensities there from their surroundings (mean
squared error on those voxels only). It needs no labels, so it can use the
time a user spends painting. A temporary regression head (one output per input
channel) is put on the net for it; the body keeps what it learned and the
class head, the optimiser and the EMA weights start afresh for the labels.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_sparseseg.core.trainer import Trainer
from napari_sparseseg.core.volume import read_mirrored

#: Share of a patch's voxels whose intensity is hidden and predicted.
BLIND_SHARE = 0.02
#: Largest offset (voxels, per axis) of the neighbour whose value replaces a hidden voxel.
NEIGHBOUR_RADIUS = 2


@dataclass(frozen=True)
class PretrainStep:
    """One self-supervised step: its number, the masked-voxel MSE and the seconds spent so far."""

    step: int
    loss: float
    elapsed: float


def blind_spot(image: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Hide :data:`BLIND_SHARE` of the voxels behind a random neighbour's value.

    Parameters
    ----------
    image : torch.Tensor
        float ``(B, C, Z, Y, X)``.
    gen : torch.Generator
        CPU generator (reproducible masks).

    Returns
    -------
    tuple of torch.Tensor
        The masked input ``(B, C, Z, Y, X)`` and the bool mask ``(B, 1, Z, Y, X)`` of hidden voxels.
    """
    b, _, *spatial = image.shape
    mask = torch.rand((b, 1, *spatial), generator=gen) < BLIND_SHARE
    shifts = torch.randint(-NEIGHBOUR_RADIUS, NEIGHBOUR_RADIUS + 1, (3,), generator=gen).tolist()
    if not any(shifts):
        shifts[2] = 1
    neighbour = torch.roll(image, shifts=shifts, dims=(2, 3, 4))
    mask = mask.to(image.device)
    return torch.where(mask, neighbour, image), mask


def pretrain(trainer: Trainer, *, max_seconds: float | None = None, max_steps: int | None = None,
             should_stop: Callable[[], bool] = lambda: False) -> Iterator[PretrainStep]:
    """Warm the net's body up on the blind-spot task; yields after every step.

    The class head, optimiser and EMA weights are reset when the generator ends (however it ends), so the
    supervised steps that follow start from the pretrained body. Random patches of the trainer's size are read
    from anywhere in the volume; augmentation is not needed (the task has no labels to overfit).
    """
    model, device = trainer.model, trainer.device
    volume, size = trainer.volume, trainer.patch_size
    channels = int(volume.features.shape[0])
    class_head = model.head
    model.head = nn.Conv3d(class_head.in_channels, channels, 1).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=trainer.config.train.learning_rate)
    gen = torch.Generator().manual_seed(trainer.config.train.seed + 1)
    rng = np.random.default_rng(trainer.config.train.seed + 1)
    elapsed, step = 0.0, 0
    model.train()
    try:
        while not should_stop():
            if (max_seconds is not None and elapsed >= max_seconds) or (max_steps is not None and step >= max_steps):
                return
            t0 = time.perf_counter()
            start = [int(rng.integers(0, max(n - s, 0) + 1)) for n, s in zip(volume.shape, size)]
            stop = [a + s for a, s in zip(start, size)]
            patch = read_mirrored(volume.features, start, stop, volume.shape, lead=1).astype(np.float32, copy=False)
            image = torch.from_numpy(np.ascontiguousarray(patch))[None].to(device)
            masked, hidden = blind_spot(image, gen)
            prediction = model(masked)
            loss = F.mse_loss(prediction.float()[hidden.expand_as(prediction)], image[hidden.expand_as(image)])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 12.0)
            optimizer.step()
            step += 1
            elapsed += time.perf_counter() - t0
            yield PretrainStep(step, float(loss.detach()), elapsed)
    finally:
        model.head = class_head
        trainer.weights.optimizer = trainer.weights.new_optimizer()
        trainer.weights.ema = trainer.weights.new_ema()
