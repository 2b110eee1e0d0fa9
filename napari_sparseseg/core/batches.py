"""Training batches: patches sampled from the labeled volume, augmented on the CPU, optionally built one ahead.

A batch is cut from the labels as they are when it is built; one built ahead
(in a worker thread while the previous step computes) is thrown away when the
labels changed meanwhile, so an edit still reaches the next step, and seeded
training trains on the same batches either way.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from .annotation import AnnotatedVolume
from .augment import augment_batch
from .config import TrainConfig
from .prefetch import OneAhead
from .sampler import PatchSampler, Sampling


class HostBatch(NamedTuple):
    """One training batch on the CPU: image ``(B, C, Z, Y, X)``, target and weight ``(B, Z, Y, X)``, and the
    annotation revision it was cut from."""

    image: torch.Tensor
    target: torch.Tensor
    weight: torch.Tensor
    revision: int


class BatchMaker:
    """Builds the training batches of one volume.

    Parameters
    ----------
    volume : AnnotatedVolume
        Image, labels and weights, read when a batch is built.
    patch_size : tuple of int
        ``(z, y, x)`` size of a training patch.
    rng : numpy.random.Generator
        Draws the patch centres.
    gen : torch.Generator
        Draws the augmentations (a CPU generator: seeded training is reproducible).
    device : torch.device
        Where batches go; on CUDA they are page-locked so the copy overlaps the step.
    sampling : Sampling
        Where patches are centred.
    """

    def __init__(self, volume: AnnotatedVolume, patch_size: tuple[int, int, int], *, rng: np.random.Generator,
                 gen: torch.Generator, device: torch.device, sampling: Sampling = Sampling()) -> None:
        self.volume, self.rng, self.gen, self.device = volume, rng, gen, device
        self._sampling = sampling
        self.set_patch(patch_size)
        self._prefetch: OneAhead[HostBatch] = OneAhead(self._host_batch)

    @property
    def sampling(self) -> Sampling:
        """Where patches are centred; setting it takes effect from the next batch."""
        return self._sampling

    @sampling.setter
    def sampling(self, value: Sampling) -> None:
        self._sampling = value
        self.set_patch(self.patch_size)

    def set_patch(self, size: tuple[int, int, int]) -> None:
        """Cut patches of ``size`` from now on (after an out-of-memory, or for a net planned for another spacing)."""
        self.patch_size = size
        self.sampler = PatchSampler(self.volume, size, rng=self.rng, sampling=self._sampling)

    def prefetching(self, config: TrainConfig) -> bool:
        """Whether the next batch is built in a worker thread while a step computes (``TrainConfig.prefetch``):
        ``"auto"`` does so on CUDA, where the GPU computes while the host would otherwise wait."""
        return config.prefetch == "always" or (config.prefetch == "auto" and self.device.type == "cuda")

    def _host_batch(self, key: tuple) -> HostBatch:
        """Sample and augment one batch on the CPU for ``key`` (see :meth:`_key`)."""
        augment, batch_size, config = key[0], key[1], key[-1]
        revision = self.volume.revision
        class_weight = self.volume.class_weights(config.class_balance_power)
        patches = [self.sampler.sample(class_weight, config.correction_weight) for _ in range(batch_size)]
        image = torch.from_numpy(np.stack([p.image for p in patches]))
        target = torch.from_numpy(np.stack([p.target for p in patches]))
        weight = torch.from_numpy(np.stack([p.weight for p in patches]))
        if config.augment and augment:
            image, target, weight = augment_batch(image, target, weight, self.gen)
        if self.device.type == "cuda":  # page-locked, so the copy to the device can overlap
            image, target, weight = image.pin_memory(), target.pin_memory(), weight.pin_memory()
        return HostBatch(image, target, weight, revision)

    def _key(self, augment: bool, batch_size: int, config: TrainConfig) -> tuple:
        """What a batch is built for: a prefetched batch with another key is rebuilt."""
        return augment, batch_size, self.patch_size, id(self.sampler), config

    def take(self, augment: bool, batch_size: int, config: TrainConfig
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """The batch for the next step: image ``(B, C, Z, Y, X)``, target and weight ``(B, Z, Y, X)`` on the
        device, and the annotation revision it was cut from.

        When prefetching, it was built during the previous step unless the labels (revision), the augmentation
        switch, the batch or patch size, or the training settings changed since: then it is built now.
        """
        key = self._key(augment, batch_size, config)
        if self.prefetching(config):
            host = self._prefetch.take(key, fresh=lambda b: b.revision == self.volume.revision)
        else:
            self._prefetch.close()
            host = self._host_batch(key)
        nb = self.device.type == "cuda"
        return (host.image.to(self.device, non_blocking=nb), host.target.to(self.device, non_blocking=nb),
                host.weight.to(self.device, non_blocking=nb), host.revision)

    def build_now(self, augment: bool, batch_size: int, config: TrainConfig) -> HostBatch:
        """One batch built on the calling thread, without touching the prefetch (for timing the host part)."""
        return self._host_batch(self._key(augment, batch_size, config))

    @property
    def built_ahead(self) -> tuple[int, int]:
        """``(ahead, in_step)``: batches taken from the prefetch worker, and batches it could not supply."""
        return self._prefetch.hits, self._prefetch.misses

    def close(self) -> None:
        """End the prefetching thread (idempotent; training again starts a new one)."""
        self._prefetch.close()
