"""Batch augmentation on the training device, in plain torch.

Spatial: random flips of every axis, 90 degree rotations in the (y, x) plane
(when the patch is square in-plane), and a random in-plane rotation plus
scaling applied with one ``grid_sample``. Intensity: brightness, contrast,
gamma and Gaussian noise per sample, for a share ``p_intensity`` of the samples.
Spatial transforms move image, target and weight together; voxels sampled
from outside the patch get weight 0.

Tensors: image ``(B, C, Z, Y, X)``, target ``(B, Z, Y, X)`` int64, weight
``(B, Z, Y, X)`` float.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _flip_rot(image: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
              gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ims, tgs, wts = [], [], []
    square = image.shape[-1] == image.shape[-2]
    for b in range(image.shape[0]):
        im, tg, wt = image[b], target[b], weight[b]
        flips = [d for d in range(3) if torch.rand((), generator=gen) < 0.5]
        if flips:
            im = im.flip([d + 1 for d in flips])
            tg, wt = tg.flip(flips), wt.flip(flips)
        if square:
            k = int(torch.randint(0, 4, (), generator=gen))
            if k:
                im, tg, wt = im.rot90(k, (2, 3)), tg.rot90(k, (1, 2)), wt.rot90(k, (1, 2))
        ims.append(im)
        tgs.append(tg)
        wts.append(wt)
    return torch.stack(ims), torch.stack(tgs), torch.stack(wts)


def _affine(image: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, gen: torch.Generator,
            max_angle: float, scale_range: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """In-plane rotation and isotropic scaling (z scaled too, so anisotropy is kept)."""
    B = image.shape[0]
    theta = torch.zeros(B, 3, 4)
    for b in range(B):
        a = (torch.rand((), generator=gen).item() * 2 - 1) * max_angle
        s = scale_range[0] + torch.rand((), generator=gen).item() * (scale_range[1] - scale_range[0])
        c, si = math.cos(a) / s, math.sin(a) / s
        # grid coordinates are (x, y, z); rotate x-y, scale all three.
        theta[b] = torch.tensor([[c, -si, 0, 0], [si, c, 0, 0], [0, 0, 1 / s, 0]])
    theta = theta.to(image.device, torch.float32)
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    image = F.grid_sample(image, grid.to(image.dtype), mode="bilinear", padding_mode="border", align_corners=False)
    tw = torch.stack([target.float(), weight.float()], dim=1)
    tw = F.grid_sample(tw, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return image, tw[:, 0].round().long(), tw[:, 1]


def _intensity(image: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    B, C = image.shape[:2]
    shape = (B, C, 1, 1, 1)

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return (lo + (hi - lo) * torch.rand(shape, generator=gen)).to(image.device, image.dtype)

    mean = image.mean(dim=(2, 3, 4), keepdim=True)
    image = (image - mean) * uniform(0.75, 1.25) + mean * uniform(0.8, 1.2)
    gamma = torch.exp(uniform(-0.3, 0.3))
    image = image.clamp_min(0) ** gamma
    noise = torch.randn(image.shape, generator=gen).to(image.device, image.dtype)
    return image + noise * uniform(0.0, 0.05)


def augment_batch(image: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, gen: torch.Generator,
                  *, max_angle: float = math.pi / 12, scale_range: tuple[float, float] = (0.85, 1.15),
                  p_affine: float = 0.3, p_intensity: float = 1.0
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Augment one batch; ``gen`` is a CPU generator that makes it reproducible.

    ``p_affine`` is the chance of the batch to get the rotation and scaling,
    ``p_intensity`` the chance of each sample to get the intensity jitter
    (both defaults in ``docs/decisions.md``). Returns ``(image, target, weight)``.
    """
    image, target, weight = _flip_rot(image, target, weight, gen)
    if torch.rand((), generator=gen) < p_affine:
        image, target, weight = _affine(image, target, weight, gen, max_angle, scale_range)
    if p_intensity >= 1:  # every sample, with no extra draw: the default's random stream stays as it was
        image = _intensity(image, gen)
    else:
        jitter = torch.rand(image.shape[0], generator=gen) < p_intensity
        if jitter.any():
            image = torch.where(jitter.to(image.device).view(-1, 1, 1, 1, 1), _intensity(image, gen), image)
    return image, target, weight
