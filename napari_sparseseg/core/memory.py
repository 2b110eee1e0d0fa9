"""Training memory: choose the patch and batch that fit the memory free (the GPU's; for CPU training the machine's,
``device.free_memory``), and back off after a GPU out-of-memory.

A pure estimate (no torch, no device): :func:`training_bytes` is the memory
one training step of :class:`~.net.UNet3D` needs, :func:`fit_patch_and_batch`
shrinks the requested batch, then the patch, until that estimate fits
(:func:`fit_to_free_memory` says what the user is told); :func:`back_off`
halves the batch, then the patch, after an out-of-memory all the same.

The estimate
------------
Per patch voxel at level ``i`` (widths ``w_i = min(base * 2**i, max)``), the
autograd graph keeps for the backward pass

* encoder level: two ``conv -> InstanceNorm -> LeakyReLU`` units, each
  saving the conv output and the norm output: ``4 w_i`` values;
* decoder level (all but the deepest): the upsampled tensor ``w_i``, the
  concatenation ``2 w_i`` and two units ``4 w_i``: ``7 w_i`` values;
* input (``in_channels``) and the head's logits, softmax and loss terms
  (``4 (K + 1)``) at full resolution.

Level ``i`` holds ``1 / 4**i`` of the voxels: pooling in-plane only, the
anisotropic worst case (isotropic pooling divides by 8, so the estimate
errs on the safe side). The backward pass allocates gradients of about the
same size as the saved activations while they are still alive, so the
activation total is doubled. Values take 2 bytes under bf16 autocast (the
instance norms run in fp32; the factor 2 covers them) and 4 bytes
otherwise. Weights cost 5 copies (weights, gradients, two AdamW moments, the
EMA copy) of 4 bytes. The budget is :data:`USABLE_FRACTION` of the free
memory less :data:`RESERVED_BYTES` for the CUDA context, cuDNN workspaces and
allocator fragmentation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .config import ModelConfig
from .sampler import patch_shape

#: Smallest patch :func:`fit_patch_and_batch` and the OOM back-off go down to.
MIN_PATCH_VOXELS: int = 16**3
#: Share of the free memory a training step may plan to use.
USABLE_FRACTION: float = 0.8
#: Bytes kept free for the CUDA context, cuDNN workspaces and fragmentation.
RESERVED_BYTES: int = 512 * 2**20


def _widths(config: ModelConfig) -> list[int]:
    return [min(config.base_channels * 2**i, config.max_channels) for i in range(config.depth)]


def parameter_count(config: ModelConfig, in_channels: int, num_classes: int) -> int:
    """Approximate weights of the U-Net (3x3x3 kernels everywhere, the largest case)."""
    widths = _widths(config)
    total, cin = 0, in_channels
    for w in widths:
        total += 27 * (cin * w + w * w) + 4 * w
        cin = w
    for i in range(len(widths) - 2, -1, -1):
        w = widths[i]
        total += 8 * widths[i + 1] * w + 27 * (2 * w * w + w * w) + 4 * w
    return total + widths[0] * num_classes + num_classes


def training_bytes(model_config: ModelConfig, in_channels: int, num_classes: int, patch_voxels: int,
                   batch_size: int, amp: bool) -> int:
    """Estimated peak bytes of one training step (see the module notes for the model).

    Parameters
    ----------
    model_config : ModelConfig
        Widths and depth of the net.
    in_channels : int
        Network input channels.
    num_classes : int
        Output channels ``K + 1``.
    patch_voxels : int
        Voxels of one patch.
    batch_size : int
        Patches per step.
    amp : bool
        bf16 autocast (2-byte activations).
    """
    widths = _widths(model_config)
    per_voxel = float(in_channels + 4 * num_classes)
    for i, w in enumerate(widths):
        per_level = 4 * w + (7 * w if i < len(widths) - 1 else 0)
        per_voxel += per_level / 4**i
    value_bytes = 2 if amp else 4
    activations = 2.0 * per_voxel * value_bytes * patch_voxels * batch_size
    weights = 5 * 4 * parameter_count(model_config, in_channels, num_classes)
    return int(activations + weights)


def fit_patch_and_batch(free_bytes: int, model_config: ModelConfig, in_channels: int, num_classes: int,
                        patch_voxels: int, batch_size: int, amp: bool) -> tuple[int, int]:
    """The largest ``(patch_voxels, batch_size)`` not above the request whose step fits ``free_bytes``.

    Halves the batch first (down to 1), then the patch voxels (down to
    :data:`MIN_PATCH_VOXELS`), until :func:`training_bytes` fits in
    ``USABLE_FRACTION * free_bytes - RESERVED_BYTES``. The search walks one
    fixed sequence of sizes, so more free memory never gives a smaller patch
    or batch. When even the floor does not fit, the floor is returned (the
    trainer's out-of-memory back-off then reports the failure).

    Parameters
    ----------
    free_bytes : int
        Free device memory, e.g. ``torch.cuda.mem_get_info()[0]``.
    model_config, in_channels, num_classes, amp
        See :func:`training_bytes`.
    patch_voxels, batch_size : int
        The requested sizes (upper bounds of the answer).

    Returns
    -------
    (int, int)
        ``(patch_voxels, batch_size)``, each ``<=`` the request.

    Raises
    ------
    ValueError
        For a non-positive request.
    """
    if patch_voxels < 1 or batch_size < 1:
        raise ValueError(f"need positive sizes, got patch_voxels={patch_voxels}, batch_size={batch_size}")
    budget = USABLE_FRACTION * max(int(free_bytes), 0) - RESERVED_BYTES
    pv, bs = int(patch_voxels), int(batch_size)
    floor = min(MIN_PATCH_VOXELS, pv)
    while training_bytes(model_config, in_channels, num_classes, pv, bs, amp) > budget:
        if bs > 1:
            bs //= 2
        elif pv > floor:
            pv = max(pv // 2, floor)
        else:
            break
    return pv, bs


def fit_to_free_memory(free_bytes: int, model_config: ModelConfig, patch_voxels: int, batch_size: int,
                       amp: bool, where: str) -> tuple[int, int, str | None]:
    """:func:`fit_patch_and_batch` for a net whose ``model_config`` holds its input channels and classes.

    Returns the patch voxels, the batch, and what the user is told when they are smaller than asked (else None).
    """
    voxels, batch = fit_patch_and_batch(free_bytes, model_config, model_config.in_channels,
                                        model_config.num_classes, patch_voxels, batch_size, amp)
    if (voxels, batch) == (patch_voxels, batch_size):
        return voxels, batch, None
    return voxels, batch, (f"{free_bytes / 2**30:.1f} GiB free on {where}: training with {voxels} voxel patches, "
                           f"batch {batch}")


def back_off(what: str, batch: int, size: tuple[int, int, int], volume_shape: Sequence[int],
             spacing: Sequence[float], multiple: Sequence[int]) -> tuple[int, tuple[int, int, int], str]:
    """After an out-of-memory in ``what`` ("training" or "prediction"): a halved batch, else a halved patch.

    Parameters
    ----------
    what : str
        What ran out of memory (named in the message).
    batch : int
        Patches or windows per forward pass.
    size : tuple of int
        ``(z, y, x)`` patch or window size.
    volume_shape, spacing, multiple
        The volume's shape and voxel size and the net's size multiple (see :func:`~.sampler.patch_shape`).

    Returns
    -------
    (int, tuple of int, str)
        The new batch and size, and what changed, in words.

    Raises
    ------
    RuntimeError
        At batch 1 and a patch of :data:`MIN_PATCH_VOXELS` or fewer voxels.
    """
    if batch > 1:
        return batch // 2, size, f"batch {batch // 2}"
    voxels = int(np.prod(size))
    smaller = None
    if voxels > MIN_PATCH_VOXELS:
        smaller = patch_shape(volume_shape, spacing, max(voxels // 2, MIN_PATCH_VOXELS), multiple)
    if smaller is None or np.prod(smaller) >= voxels:
        raise RuntimeError(f"out of GPU memory during {what} even at batch 1 and a {size} window; free GPU "
                           "memory (close other programs) or use a smaller model or the CPU (--device cpu)")
    return batch, smaller, f"{'x'.join(map(str, smaller))} {'patches' if what == 'training' else 'windows'}"
