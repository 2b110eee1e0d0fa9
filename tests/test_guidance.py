"""Where to paint next: slice suggestions in all orientations and the likely errors."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sparseseg.core.guidance import likely_errors, suggest_slices


def test_the_most_uncertain_unpainted_slice_is_suggested_first_in_its_orientation():
    uncertainty = np.zeros((20, 30, 40), np.float32)
    uncertainty[5:15, 10:20, 33] = 0.9  # a sheet of doubt normal to x
    uncertainty[2, 0:5, 0:5] = 0.8  # a small patch on z = 2
    labeled = np.zeros(uncertainty.shape, bool)
    best, *rest = suggest_slices(uncertainty, labeled, top=3)
    assert (best.axis, best.index) == (2, 33)
    assert best.describe() == "paint the yz slice at x = 33"
    assert best.box.start == (5, 10, 33) and best.box.stop == (15, 20, 34)
    assert all(s.score <= best.score for s in rest)


def test_painted_planes_and_their_neighbours_are_not_suggested():
    uncertainty = np.full((20, 16, 16), 0.9, np.float32)
    labeled = np.zeros(uncertainty.shape, bool)
    labeled[10] = True  # z = 10 is painted
    suggestions = suggest_slices(uncertainty, labeled, top=40, axes=(0,))
    ranked = [s.index for s in suggestions]
    assert 10 not in ranked
    assert ranked.index(9) > ranked.index(0) and ranked.index(11) > ranked.index(19)  # nearby planes rank lower
    assert suggest_slices(np.zeros((4, 4, 4)), np.zeros((4, 4, 4), bool)) == []


def test_likely_errors_are_the_largest_uncertain_unlabeled_regions():
    uncertainty = np.zeros((10, 20, 20), np.float32)
    uncertainty[1:3, 1:3, 1:3] = 0.9  # 8 voxels
    uncertainty[5:9, 10:15, 10:15] = 0.7  # 100 voxels
    labeled = np.zeros(uncertainty.shape, bool)
    labeled[5, 10:15, 10:15] = True  # labeled voxels are not errors to look at
    first, second = likely_errors(uncertainty, labeled)
    assert first.voxels == 75 and first.box.start == (6, 10, 10)
    assert 6 <= first.centre[0] < 9 and second.voxels == 8
    with pytest.raises(ValueError):
        likely_errors(uncertainty, labeled[:5])


def test_a_slice_inside_a_doubtful_band_ranks_above_one_at_the_volume_face():
    uncertainty = np.zeros((20, 16, 16), np.float32)
    uncertainty[0:3] = 0.9  # doubt at the face: a label there informs the planes on one side only
    uncertainty[8:11] = 0.9  # the same doubt inside the volume
    suggestions = suggest_slices(uncertainty, np.zeros(uncertainty.shape, bool), top=2, axes=(0,))
    assert suggestions[0].index == 9


def test_labels_of_another_orientation_discount_the_voxels_they_cross():
    uncertainty = np.full((20, 20, 20), 0.9, np.float32)
    labeled = np.zeros(uncertainty.shape, bool)
    labeled[:, :, 4] = True  # a painted yz slice at x = 4
    best = suggest_slices(uncertainty, labeled, top=1, axes=(0,))[0]
    crossing = suggest_slices(uncertainty, np.zeros_like(labeled), top=1, axes=(0,))[0]
    assert best.score < crossing.score  # the z slices cross the painted slice: the voxels beside it count less
