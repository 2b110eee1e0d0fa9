import pytest
import torch

from napari_sparseseg.core.loss import (
    contrast_smoothness,
    hardest_cross_entropy,
    labeled_soft_dice,
    partial_label_loss,
    weighted_cross_entropy,
)


def _batch(seed=0, shape=(2, 3, 4, 6, 6)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=g)
    target = torch.randint(0, shape[1], (shape[0],) + shape[2:], generator=g)
    weight = (torch.rand((shape[0],) + shape[2:], generator=g) > 0.7).float() * 1.5
    return logits, target, weight


@pytest.mark.parametrize("dice_weight", [0.0, 1.0])
def test_unlabeled_voxels_change_neither_loss_nor_gradient(dice_weight):
    logits, target, weight = _batch()
    unlabeled = (weight == 0).unsqueeze(1).expand_as(logits)
    a = logits.clone().requires_grad_(True)
    la = partial_label_loss(a, target, weight, dice_weight)
    la.backward()
    perturbed = logits.clone()
    perturbed[unlabeled] += 100 * torch.randn(int(unlabeled.sum()))
    b = perturbed.clone().requires_grad_(True)
    lb = partial_label_loss(b, target, weight, dice_weight)
    lb.backward()
    assert torch.allclose(la, lb, atol=1e-6)
    assert torch.all(a.grad[unlabeled] == 0)
    assert torch.all(b.grad[unlabeled] == 0)
    assert torch.allclose(a.grad, b.grad, atol=1e-6)


def test_unlabeled_targets_are_ignored():
    logits, target, weight = _batch()
    other = target.clone()
    other[weight == 0] = (other[weight == 0] + 1) % logits.shape[1]
    assert torch.allclose(partial_label_loss(logits, target, weight), partial_label_loss(logits, other, weight))


def test_nothing_labeled_gives_zero_finite_loss_and_zero_gradient():
    logits, target, _ = _batch()
    x = logits.clone().requires_grad_(True)
    loss = partial_label_loss(x, target, torch.zeros_like(target, dtype=torch.float32))
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert torch.all(x.grad == 0)


def test_nan_logits_on_unlabeled_voxels_do_not_leak():
    logits, target, weight = _batch()
    bad = logits.clone()
    bad.permute(0, 2, 3, 4, 1)[weight == 0] = float("inf")
    assert torch.isfinite(weighted_cross_entropy(bad, target, weight))


def test_weighted_ce_is_weighted_mean_of_voxel_ce():
    logits, target, weight = _batch()
    ce = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    expected = (ce * weight).sum() / weight.sum()
    assert torch.allclose(weighted_cross_entropy(logits, target, weight), expected)


def test_perfect_prediction_has_near_zero_dice_loss():
    _, target, weight = _batch()
    logits = torch.nn.functional.one_hot(target, 3).movedim(-1, 1).float() * 50
    assert float(labeled_soft_dice(logits, target, weight)) < 1e-3


def _split_logits(cut: int, shape=(1, 2, 4, 8, 8), scale: float = 20.0) -> torch.Tensor:
    """Confident two-class logits (B, 2, Z, Y, X): class 1 for x >= cut, class 0 before."""
    logits = torch.zeros(shape)
    logits[:, 0, ..., :cut] = scale
    logits[:, 1, ..., cut:] = scale
    return logits


def test_smoothness_is_zero_for_one_class_and_cheapest_on_the_image_edge():
    image = torch.zeros(1, 1, 4, 8, 8)
    image[..., 4:] = 1.0  # an edge between x = 3 and x = 4
    uniform = _split_logits(0)
    assert float(contrast_smoothness(uniform, image)) < 1e-6
    on_edge = float(contrast_smoothness(_split_logits(4), image))
    off_edge = float(contrast_smoothness(_split_logits(2), image))
    assert 0 < on_edge < off_edge / 2


def test_smoothness_pulls_unlabeled_voxels_towards_their_neighbours():
    """The term reads unlabeled voxels: its gradient moves an odd voxel in a flat region to its neighbours' class."""
    image = torch.zeros(1, 1, 4, 8, 8)
    image[0, 0, 0, 0, 0] = 1.0  # some contrast somewhere, so beta is finite
    logits = _split_logits(0)  # all class 1
    logits[0, :, 2, 4, 4] = torch.tensor([20.0, 0.0])  # one voxel says class 0
    x = logits.clone().requires_grad_(True)
    contrast_smoothness(x, image).backward()  # no label anywhere: only the image and the neighbours act
    grad = x.grad[0, :, 2, 4, 4]
    assert grad[0] > 0 > grad[1]  # descent lowers class 0 and raises class 1 there


def test_hardest_cross_entropy_averages_the_worst_labeled_voxels_only():
    logits, target, weight = _batch()
    ce = torch.nn.functional.cross_entropy(logits, target, reduction="none")[weight > 0]
    k = round(0.25 * ce.numel())
    expected = ce.sort(descending=True).values[:k].mean()
    assert torch.allclose(hardest_cross_entropy(logits, target, weight, share=0.25), expected)
    unlabeled = (weight == 0).unsqueeze(1).expand_as(logits)
    perturbed = logits.clone()
    perturbed[unlabeled] += 100 * torch.randn(int(unlabeled.sum()))
    assert torch.allclose(hardest_cross_entropy(perturbed, target, weight, share=0.25), expected)
    x = logits.clone().requires_grad_(True)
    hardest_cross_entropy(x, target, torch.zeros_like(weight)).backward()
    assert torch.all(x.grad == 0)


def test_labeled_error_share_counts_only_labeled_voxels():
    from napari_sparseseg.core.loss import labeled_error_share

    logits = torch.zeros(1, 2, 1, 1, 4)
    logits[:, 1] = 1.0  # class 1 everywhere
    target = torch.tensor([[[[1, 0, 0, 1]]]])
    weight = torch.tensor([[[[1.0, 1.0, 0.0, 0.0]]]])  # the last two are unlabeled
    assert labeled_error_share(logits, target, weight) == pytest.approx(0.5)
    assert labeled_error_share(logits, target, torch.zeros_like(weight)) is None
