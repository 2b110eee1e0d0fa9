"""Training augmentation: image, target and weight move together, through flips and 90 degree rotations only."""

from __future__ import annotations

import pytest
import torch

from napari_sparseseg.core.augment import augment_batch


def _batch(shape=(2, 6, 8, 8)):
    gen = torch.Generator().manual_seed(0)
    target = torch.randint(0, 3, shape, generator=gen)
    weight = target.float() * 0.5 + 1.0  # a function of the target, voxel by voxel
    image = target[:, None].float()  # so is the image, before the intensity jitter
    return image, target, weight


def _spatial_variants(t: torch.Tensor, rotate: bool) -> list[torch.Tensor]:
    """Every (Z, Y, X) tensor that flips of any axes and in-plane quarter turns make of ``t``."""
    out = []
    for mask in range(8):
        flipped = [a for a in range(3) if mask >> a & 1]
        f = t.flip(flipped) if flipped else t
        out += [f.rot90(k, (1, 2)) if k else f for k in range(4 if rotate else 1)]
    return out


@pytest.mark.parametrize("shape", [(2, 6, 8, 8), (1, 4, 6, 10)])  # square in-plane: rotations; not square: none
def test_target_weight_and_image_move_together(shape):
    image, target, weight = _batch(shape)
    gen = torch.Generator().manual_seed(1)
    seen = set()
    for _ in range(16):
        im, tg, wt = augment_batch(image, target, weight, gen, p_affine=0.0)
        assert tg.shape == target.shape and im.shape == image.shape
        assert torch.equal(wt, tg.float() * 0.5 + 1.0)  # the weight followed the target
        for b in range(shape[0]):
            # intensity jitter is monotone per sample: the brightest voxels are still where target == 2
            assert im[b, 0][tg[b] == 2].mean() > im[b, 0][tg[b] == 0].mean()
            variants = _spatial_variants(target[b], rotate=shape[-1] == shape[-2])
            matches = [i for i, v in enumerate(variants) if torch.equal(v, tg[b])]
            assert matches, "the target went through a transform other than flips and quarter turns"
            seen.add(matches[0])
    assert len(seen) > 4  # the transforms are actually drawn


def test_affine_warp_keeps_labels_integral_and_zeroes_weight_outside():
    image, target, weight = _batch((2, 8, 16, 16))
    gen = torch.Generator().manual_seed(3)
    _, tg, wt = augment_batch(image, target, weight, gen, p_affine=1.0, scale_range=(0.7, 0.7))
    assert tg.dtype == torch.int64 and set(tg.unique().tolist()) <= {0, 1, 2}
    # zoomed out by 0.7: the rim samples outside the patch and must not train
    assert (wt == 0).any()
    inside = wt > 0
    assert torch.equal(wt[inside], tg[inside].float() * 0.5 + 1.0)


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_intensity_share_sets_which_samples_get_the_intensity_jitter(share):
    image, target, weight = _batch((64, 2, 4, 4))
    gen = torch.Generator().manual_seed(2)
    im, tg, _ = augment_batch(image, target, weight, gen, p_affine=0.0, p_intensity=share)
    # without the jitter the image is the flipped/rotated target exactly
    untouched = torch.tensor([torch.equal(im[b, 0], tg[b].float()) for b in range(im.shape[0])])
    if share == 0.0:
        assert untouched.all()
    elif share == 1.0:
        assert not untouched.any()
    else:
        assert 10 < int(untouched.sum()) < 54
