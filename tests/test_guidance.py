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


def test_a_likely_error_shaped_as_a_shell_is_shown_at_one_of_its_own_voxels():
    z, y, x = np.mgrid[:20, :40, :40]
    r = np.sqrt((z - 10) ** 2 + (y - 20) ** 2 + (x - 20) ** 2)
    uncertainty = ((r > 7) & (r < 9)).astype(np.float32)  # doubt around an object's edge, none inside
    [region] = likely_errors(uncertainty, np.zeros(uncertainty.shape, bool), top=1)
    assert uncertainty[region.centre] > 0.5  # the centre of mass (10, 20, 20) is certain


@pytest.mark.gui
def test_go_there_shows_each_plane_the_same_way_and_the_outline_follows_the_image(make_napari_viewer):
    from napari_sparseseg.core.box import Box
    from napari_sparseseg.core.events import Guidance
    from napari_sparseseg.core.guidance import Region, SliceSuggestion
    from napari_sparseseg.plugin.guidance_panel import HIGHLIGHT_NAME, GuidancePanel

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((3, 10, 12, 14), np.float32), name="a time series")  # a 4D layer beside
    first = viewer.add_image(np.zeros((10, 12, 14), np.float32), name="first", scale=(5, 1, 1))
    second = viewer.add_image(np.zeros((10, 12, 14), np.float32), name="second", scale=(2, 3, 3),
                              translate=(100, -20, 7))
    chosen = [first]
    panel = GuidancePanel(viewer, lambda: chosen[0])
    boxes = {0: Box((4, 2, 3), (5, 8, 9)), 1: Box((1, 4, 3), (9, 5, 9)), 2: Box((1, 2, 4), (9, 8, 5))}
    suggestion = {axis: SliceSuggestion(axis, 4, 1.0, boxes[axis]) for axis in range(3)}
    error = Region(Box((2, 2, 2), (6, 6, 6)), (3, 4, 5), 40)

    def go(axis):
        panel.show_guidance(Guidance((suggestion[axis],), (error,), 0))
        panel.go_to_suggestion()
        return tuple(viewer.dims.displayed)

    viewer.dims.order = (2, 0, 1, 3)  # the user reordered the axes
    seen = {axis: go(axis) for axis in (2, 1, 0)}
    assert seen == {0: (2, 3), 1: (1, 3), 2: (1, 2)}  # the image's own two axes, in z, y, x order
    panel.go_to_error(0)
    assert tuple(viewer.dims.displayed) == (2, 3) and viewer.dims.point[1] == pytest.approx(3 * 5)  # z 3, world
    assert [go(axis) for axis in (2, 1, 0)] == [seen[2], seen[1], seen[0]]  # the same, whatever came before
    chosen[0] = second
    go(1)
    outline = viewer.layers[HIGHLIGHT_NAME]
    assert tuple(outline.scale) == (2, 3, 3) and tuple(outline.translate) == (100, -20, 7)  # on the image shown
    panel.forget()
    assert HIGHLIGHT_NAME not in [ly.name for ly in viewer.layers]  # no outline of a dropped session
