"""The quality estimate shown to the user: the mask's expected Dice under its own probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sparseseg.core.estimate import expected_dice

SHAPE = (24, 32, 32)


def _probabilities(rng: np.random.Generator, classes: int) -> np.ndarray:
    logits = rng.normal(size=(classes,) + SHAPE).astype(np.float32) * 2.5
    logits[1:, 6:18, 8:24, 8:24] += 3.0  # a confident object in the middle
    p = np.exp(logits)
    return p / p.sum(0)


@pytest.mark.parametrize("classes", [2, 4])
def test_with_calibrated_probabilities_the_estimate_is_the_dice_a_truth_drawn_from_them_gets(classes):
    rng = np.random.default_rng(0)
    p = _probabilities(rng, classes)
    unlabeled = np.zeros(SHAPE, np.uint8)
    estimate = expected_dice(p, unlabeled)
    mask = p.argmax(0)
    dices = []
    for _ in range(5):  # truths drawn voxel by voxel from the probabilities
        u = rng.random(SHAPE)
        truth = (u[None] > np.cumsum(p, 0)).sum(0)
        dices.append(2 * np.sum((truth > 0) & (mask > 0)) / (np.sum(truth > 0) + np.sum(mask > 0)))
    assert abs(estimate.dice - np.mean(dices)) < 0.01
    low, high = estimate.interval
    assert low <= estimate.dice <= high
    assert len(estimate.per_class) == classes - 1 and all(0 < v < 1 for v in estimate.per_class)


def test_labeled_voxels_count_with_their_labels_and_an_absent_class_has_no_estimate():
    rng = np.random.default_rng(1)
    p = _probabilities(rng, 3)
    p[2] = 0.0  # class 2 is never predicted...
    p /= p.sum(0)
    unsure = expected_dice(p, np.zeros(SHAPE, np.uint8))
    assert unsure.per_class[1] is None  # ...nor labeled
    labels = np.zeros(SHAPE, np.uint8)
    labels[6:18] = np.where(p[:, 6:18].argmax(0) > 0, 2, 1)  # half the volume labeled as the mask says
    surer = expected_dice(p, labels)
    assert surer.dice > unsure.dice  # labeled voxels are certain
    labels[12] = 3  # a slice labeled class 2, which the probabilities know nothing of (a class just added)
    assert expected_dice(p, labels).per_class[1] is None  # not 1.0 for a mask "predicted exactly where labeled"
    p[2, 2], p[:2, 2] = 1.0, 0.0  # once it has learned it: an unlabeled slice certainly class 2
    assert expected_dice(p, labels).per_class[1] == pytest.approx(1.0)  # and the mask says so


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError):
        expected_dice(np.ones((2,) + SHAPE, np.float32) / 2, np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(ValueError):
        expected_dice(np.ones((1,) + SHAPE, np.float32), np.zeros(SHAPE, np.uint8))


def test_another_learners_mask_is_scored_under_these_probabilities():
    rng = np.random.default_rng(2)
    p = _probabilities(rng, 2)
    labels = np.zeros(SHAPE, np.uint8)
    own = expected_dice(p, labels)
    assert expected_dice(p, labels, p.argmax(0)).dice == pytest.approx(own.dice)
    empty = expected_dice(p, labels, np.zeros(SHAPE, np.int64))  # a mask that finds nothing scores 0
    assert empty.dice == 0.0
    worse = p.argmax(0).copy()
    worse[6:18, 8:24, 8:24] = 0  # misses the confident object
    assert expected_dice(p, labels, worse).dice < own.dice
    with pytest.raises(ValueError):
        expected_dice(p, labels, np.zeros((2, 2, 2), np.int64))


def test_the_interval_allows_for_miscalibration_and_widens_as_the_estimate_falls():
    from napari_sparseseg.core.estimate import CALIBRATION_SHARE

    rng = np.random.default_rng(3)
    p = _probabilities(rng, 2)
    labels = np.zeros(SHAPE, np.uint8)
    good = expected_dice(p, labels)
    poor = expected_dice(p, labels, np.zeros(SHAPE, np.int64) + (rng.random(SHAPE) < 0.3))
    for estimate in (good, poor):
        low, high = estimate.interval
        spread = CALIBRATION_SHARE * (1 - estimate.dice)
        assert 0 <= low <= estimate.dice - spread + 1e-9 or low == 0
        assert estimate.dice + spread - 1e-9 <= high <= 1 or high == 1
    assert poor.dice < good.dice
    assert poor.interval[1] - poor.interval[0] > good.interval[1] - good.interval[0]


def test_no_estimate_where_no_foreground_class_is_labeled_or_known():
    rng = np.random.default_rng(2)
    p = _probabilities(rng, 3)
    p[1:] = 0.0  # the learner knows background alone (only background was painted)
    p[0] = 1.0
    labels = np.zeros(SHAPE, np.uint8)
    labels[4] = 1
    assert expected_dice(p, labels) is None  # a Dice of nothing: no "estimated Dice 0.00"

