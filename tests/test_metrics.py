import numpy as np
import pytest

from napari_sparseseg.evaluation.metrics import confusion_matrix, evaluate_masks, scores


def test_scores_match_hand_computed_values():
    # truth rows, prediction columns
    cm = np.array([[50, 10], [5, 35]])
    s = scores(cm)
    assert s["pa"] == pytest.approx(85 / 100)
    assert s["mpa"] == pytest.approx((50 / 60 + 35 / 40) / 2)
    assert s["iou"][1] == pytest.approx(35 / (40 + 45 - 35))
    assert s["miou"] == pytest.approx((50 / (60 + 55 - 50) + 35 / 50) / 2)
    assert s["dice"][1] == pytest.approx(70 / 85)
    assert s["dice_fg"] == pytest.approx(70 / 85)


def test_foreground_dice_pools_classes():
    truth = np.array([0, 1, 2, 2])
    pred = np.array([0, 2, 1, 2])  # every foreground voxel found, classes swapped on two
    s = evaluate_masks(truth, pred, 3)
    assert s["dice_fg"] == pytest.approx(1.0)
    assert s["dice"][1] == pytest.approx(0.0)


def test_mask_restricts_voxels():
    truth = np.array([0, 1, 1, 0])
    pred = np.array([1, 1, 0, 0])
    cm = confusion_matrix(truth, pred, 2, mask=np.array([False, True, True, True]))
    assert cm.sum() == 3


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="differ in shape"):
        confusion_matrix(np.zeros(3), np.zeros(4), 2)
