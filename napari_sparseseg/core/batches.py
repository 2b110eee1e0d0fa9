"""Training batches: patches sampled from the labeled volumes, augmented on the CPU, optionally built one ahead.

A batch is cut from the labels as they are when it is built; one built ahead
(in a worker thread while the previous step computes) is thrown away when the
labels changed meanwhile, so an edit still reaches the next step, and seeded
training trains on the same batches either way.

The net may learn from several volumes (the 3D U-Net paper's sparsely annotated
volumes of one kind): the session's volume first, then others added with
:meth:`BatchMaker.add_volume`. Each patch comes from one volume, drawn by its
share of the labeled voxels, and a volume with few labels still gets at least
:data:`MIN_VOLUME_SHARE` of its even share; each volume is normalised and
class-weighted on its own.
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

#: A labeled volume gets at least this share of ``1 / (labeled volumes)`` of the patches, however few its labels.
MIN_VOLUME_SHARE = 0.5
#: Largest relative difference of voxel size between volumes trained together (patches are cut in voxels).
SPACING_TOLERANCE = 0.1


def check_compatible(first: AnnotatedVolume, other: AnnotatedVolume) -> None:
    """Raise ValueError unless ``other`` can train one net with ``first``: the same image channels and classes, and
    voxel sizes within :data:`SPACING_TOLERANCE`."""
    if other.features.shape[0] != first.features.shape[0]:
        raise ValueError(f"a volume with {other.image_channels} image channel(s) cannot train with one of "
                         f"{first.image_channels}")
    if other.num_classes != first.num_classes:
        raise ValueError(f"a volume with {other.num_classes} classes cannot train with one of {first.num_classes}")
    a, b = np.asarray(first.spacing, float), np.asarray(other.spacing, float)
    if np.any(np.abs(a - b) > SPACING_TOLERANCE * a):
        raise ValueError(f"voxel size {tuple(b.tolist())} differs from {tuple(a.tolist())} by more than "
                         f"{SPACING_TOLERANCE:.0%}: resample the volumes to one voxel size first")


class HostBatch(NamedTuple):
    """One training batch on the CPU: image ``(B, C, Z, Y, X)``, target and weight ``(B, Z, Y, X)``, and the
    annotation revision of every volume it was cut from, the session's first."""

    image: torch.Tensor
    target: torch.Tensor
    weight: torch.Tensor
    revisions: tuple[int, ...]

    @property
    def revision(self) -> int:
        """The annotation revision of the session's volume the batch was cut from."""
        return self.revisions[0]


class BatchMaker:
    """Builds the training batches of one volume, or of several (:meth:`add_volume`).

    Parameters
    ----------
    volume : AnnotatedVolume
        Image, labels and weights, read when a batch is built; the session's volume, whose annotation revision a
        batch reports.
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
        #: Every volume patches are cut from, the session's first.
        self.volumes: list[AnnotatedVolume] = [volume]
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
        self._samplers = [PatchSampler(v, size, rng=self.rng, sampling=self._sampling) for v in self.volumes]

    @property
    def sampler(self) -> PatchSampler:
        """The patch sampler of the session's volume."""
        return self._samplers[0]

    def add_volume(self, volume: AnnotatedVolume) -> None:
        """Also cut patches from ``volume`` (same channels and classes, about the same voxel size), from the next
        batch on.

        Raises
        ------
        ValueError
            If ``volume`` cannot train one net with the session's volume (:func:`check_compatible`).
        """
        check_compatible(self.volume, volume)
        if any(volume is v for v in self.volumes):
            raise ValueError("this volume is trained on already")
        self.volumes.append(volume)
        self._samplers.append(PatchSampler(volume, self.patch_size, rng=self.rng, sampling=self._sampling))

    def volume_shares(self) -> np.ndarray:
        """float ``(V,)``: the share of patches each volume gets now (labeled-voxel share, floored; 0 unlabeled)."""
        counts = np.array([v.n_labeled for v in self.volumes], np.float64)
        labeled = counts > 0
        if not labeled.any():
            return np.zeros(len(counts))
        share = np.where(labeled, np.maximum(counts / counts.sum(), MIN_VOLUME_SHARE / labeled.sum()), 0.0)
        return share / share.sum()

    def _revisions(self) -> tuple[int, ...]:
        return tuple(v.revision for v in self.volumes)

    def prefetching(self, config: TrainConfig) -> bool:
        """Whether the next batch is built in a worker thread while a step computes (``TrainConfig.prefetch``):
        ``"auto"`` does so on CUDA, where the GPU computes while the host would otherwise wait."""
        return config.prefetch == "always" or (config.prefetch == "auto" and self.device.type == "cuda")

    def _host_batch(self, key: tuple) -> HostBatch:
        """Sample and augment one batch on the CPU for ``key`` (see :meth:`_key`)."""
        augment, batch_size, config = key[0], key[1], key[-1]
        revisions = self._revisions()
        if len(self.volumes) == 1:  # no draw of the volume: one volume's seeded batches stay as they were
            picks = np.zeros(batch_size, np.int64)
        else:
            picks = self.rng.choice(len(self.volumes), size=batch_size, p=self.volume_shares())
        weights = {int(i): self.volumes[i].class_weights(config.class_balance_power) for i in np.unique(picks)}
        patches = [self._samplers[i].sample(weights[int(i)], config.correction_weight) for i in picks]
        image = torch.from_numpy(np.stack([p.image for p in patches]))
        target = torch.from_numpy(np.stack([p.target for p in patches]))
        weight = torch.from_numpy(np.stack([p.weight for p in patches]))
        if config.augment and augment:
            image, target, weight = augment_batch(image, target, weight, self.gen)
        if self.device.type == "cuda":  # page-locked, so the copy to the device can overlap
            image, target, weight = image.pin_memory(), target.pin_memory(), weight.pin_memory()
        return HostBatch(image, target, weight, revisions)

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
            host = self._prefetch.take(key, fresh=lambda b: b.revisions == self._revisions())
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
