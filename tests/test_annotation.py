import numpy as np
import pytest

from napari_sparseseg.core.annotation import AnnotatedVolume, Source
from napari_sparseseg.core.box import Box
from napari_sparseseg.core.chunked import SparseChunkedArray
from napari_sparseseg.core.volume import mirror_index, read_mirrored


@pytest.fixture
def volume(sphere):
    image, _ = sphere
    return AnnotatedVolume(image, num_classes=2, spacing=(2.0, 1.0, 1.0))


def test_edit_returns_box_and_bumps_revision(volume):
    box = volume.set_labels((3, slice(2, 10), slice(5, 7)), 2)
    assert box == Box((3, 2, 5), (4, 10, 7))
    assert volume.revision == 1
    assert volume.changes_since(0) == box
    assert volume.changes_since(1).empty


def test_weights_zero_on_unlabeled_and_scaled_by_source(volume):
    volume.set_labels((2, slice(None), slice(None)), 1)            # background slice
    volume.set_labels((2, slice(0, 4), slice(0, 4)), 2)            # some class 1
    volume.set_labels((5, slice(0, 2), slice(0, 2)), 3, Source.CORRECTED)
    cw = volume.class_weights(0.5)
    w = volume.weights((slice(None),) * 3, cw, correction_weight=3.0)
    assert np.all(w[volume.labels == 0] == 0)
    assert np.all(w[volume.labels > 0] > 0)
    # class-balance: the rarer class weighs more than background
    assert w[2, 0, 0] > w[2, 10, 10]
    # source factor: corrected voxels weigh correction_weight x their class weight
    assert w[5, 0, 0] == pytest.approx(3.0 * cw[2])


def test_counts_follow_overwrites_and_erasing(volume):
    volume.set_labels((1, slice(None), slice(None)), 1)
    n = volume.labels[1].size
    assert volume.class_counts.tolist() == [n, 0, 0]
    volume.set_labels((1, slice(0, 2), slice(None)), 2)
    volume.set_labels((1, slice(0, 1), slice(None)), 0)   # erase -> unlabeled
    assert volume.class_counts.tolist() == [n - 2 * 32, 32, 0]
    assert volume.n_labeled == int(np.count_nonzero(volume.labels))


def test_coordinate_edits_like_napari_strokes(volume):
    idx = (np.array([1, 1, 2]), np.array([3, 4, 5]), np.array([6, 7, 8]))
    box = volume.set_labels(idx, 3)
    assert box == Box((1, 3, 6), (3, 6, 9))
    assert volume.labels[idx].tolist() == [3, 3, 3]


@pytest.mark.parametrize("value", [4, -1, 1.5, np.nan])
def test_out_of_range_label_values_are_refused(volume, value):
    with pytest.raises(ValueError):
        volume.set_labels((0, 0, 0), np.array(value))
    assert volume.revision == 0


def test_annotation_shape_mismatch_is_refused(sphere):
    image, _ = sphere
    with pytest.raises(ValueError, match="do not match"):
        AnnotatedVolume(image, num_classes=1, annotation=np.zeros((4, 4, 4), np.uint8))


def test_patch_outside_volume_is_zero_weight(volume):
    volume.set_labels((slice(None),) * 3, np.ones(volume.shape, np.uint8))
    p = volume.read_patch((-4, -4, -4), (8, 8, 8), volume.class_weights(0.5), 1.0)
    assert p.image.shape == (2, 8, 8, 8)
    assert np.all(p.weight[:4] == 0) and np.all(p.weight[4:, 4:, 4:] > 0)


def test_mirror_index_reflects_about_edges_at_any_distance():
    from napari_sparseseg.core.volume import mirror_index

    assert mirror_index(np.arange(-3, 8), 4).tolist() == [3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1]
    assert mirror_index(np.arange(-2, 3), 1).tolist() == [0] * 5


def _coverage_from_scratch(labels: np.ndarray) -> float:
    labeled = labels > 0
    if not labeled.any():
        return 0.0
    total = 0.0
    for axis in range(3):
        counts = labeled.sum(axis=tuple(a for a in range(3) if a != axis)).astype(np.float64)
        total += float(counts @ counts) / (labeled.size / labeled.shape[axis])
    return min(total / labeled.sum(), 1.0)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_a_whole_slice_in_any_orientation_has_plane_coverage_one(volume, axis):
    assert volume.plane_coverage() == 0.0
    index = [slice(None)] * 3
    index[axis] = 3
    volume.set_labels(tuple(index), 1)
    assert volume.plane_coverage() == pytest.approx(1.0)


def test_strokes_have_low_plane_coverage_and_erasing_restores_it(volume):
    volume.set_labels((4, slice(None), slice(None)), 1)
    volume.set_labels((4, slice(10, 12), slice(4, 20)), 2)  # a stroke over the labeled slice: still a whole slice
    assert volume.plane_coverage() == pytest.approx(1.0)
    volume.set_labels((4, slice(None), slice(None)), 0)
    assert volume.plane_coverage() == 0.0
    volume.set_labels((4, slice(10, 12), slice(4, 20)), 2)  # 32 voxels of a 32 x 32 slice
    volume.set_labels((9, slice(3, 5), slice(8, 24)), 1)
    assert 0 < volume.plane_coverage() < 0.1
    assert volume.plane_coverage() == pytest.approx(_coverage_from_scratch(volume.labels))


def test_plane_coverage_follows_random_edits_of_every_index_kind(volume):
    rng = np.random.default_rng(0)
    shape = volume.shape
    for _ in range(30):
        kind = rng.integers(3)
        if kind == 0:  # a box
            a = [int(rng.integers(n)) for n in shape]
            b = [int(rng.integers(lo, n)) + 1 for lo, n in zip(a, shape)]
            index = tuple(slice(lo, hi) for lo, hi in zip(a, b))
        elif kind == 1:  # napari-style coordinates, some listed twice
            n = int(rng.integers(1, 40))
            coords = [rng.integers(0, s, n) for s in shape]
            index = tuple(np.concatenate([c, c[: n // 2]]) for c in coords)
        else:  # one voxel by integers
            index = tuple(int(rng.integers(s)) for s in shape)
        volume.set_labels(index, int(rng.integers(0, 4)))
        assert volume.plane_coverage() == pytest.approx(_coverage_from_scratch(volume.labels))


def test_an_index_mixing_slices_and_arrays_is_refused_before_anything_changes(volume):
    with pytest.raises(ValueError, match="mix"):
        volume.set_labels((slice(None), np.array([1, 2]), np.array([3, 4])), 1)
    assert volume.revision == 0 and volume.n_labeled == 0


def test_a_voxel_listed_twice_is_counted_once_and_keeps_its_last_value(volume):
    idx = (np.array([1, 1, 2]), np.array([2, 2, 3]), np.array([3, 3, 4]))
    volume.set_labels(idx, np.array([2, 3, 2]))
    assert volume.labels[1, 2, 3] == 3
    assert volume.class_counts.tolist() == [0, 1, 1]
    assert volume.n_labeled == int(np.count_nonzero(volume.labels))


def test_labeled_centre_is_the_mean_position_of_the_labeled_voxels():
    image = np.random.default_rng(0).random((8, 10, 12), np.float32)
    vol = AnnotatedVolume(image, num_classes=1)
    assert vol.labeled_centre() == (3.5, 4.5, 5.5)  # nothing labeled: the volume's centre
    vol.set_labels((2, slice(0, 4), slice(6, 8)), 1)
    vol.set_labels((6, slice(0, 4), slice(6, 8)), 2)
    assert vol.labeled_centre() == pytest.approx((4.0, 1.5, 6.5))


@pytest.mark.parametrize(("chunked", "lead"), [(False, 0), (False, 1), (True, 0)],
                         ids=["labels", "channels-first-features", "sparse-chunked-labels"])
def test_read_mirrored_equals_the_ix_gather_of_the_mirrored_indices(chunked, lead):
    rng = np.random.default_rng(1)
    shape = (2, 9, 13, 11)[1 - lead:]
    dense = rng.integers(0, 200, shape).astype(np.uint8)
    array = dense
    if chunked:
        array = SparseChunkedArray(shape, (4, 4, 4), np.uint8)
        array[(slice(None),) * len(shape)] = dense
    spatial = shape[lead:]
    for _ in range(40):
        size = rng.integers(1, 2 * max(spatial), 3)
        start = [int(rng.integers(-n, d + 2)) for n, d in zip(size, spatial)]  # inside, past one or both edges
        stop = [s + n for s, n in zip(start, size)]
        index = [mirror_index(np.arange(s, e), d) for s, e, d in zip(start, stop, spatial)]
        got = read_mirrored(array, start, stop, spatial, lead=lead)
        assert np.array_equal(got, dense[(slice(None),) * lead + np.ix_(*index)])


@pytest.mark.parametrize("start", [(0, 0, 0), (-2, -3, 1)], ids=["inside", "mirrored"])
def test_a_patch_is_cut_from_the_labels_as_they_were_under_the_lock(volume, monkeypatch, start):
    """The weights are computed after the lock is released: an edit landing then must not reach them."""
    import napari_sparseseg.core.annotation as annotation

    volume.set_labels((slice(None),) * 3, np.ones(volume.shape, np.uint8), source=Source.CORRECTED)
    weights = annotation._weights

    def edit_then_weigh(*args):
        volume.set_labels((slice(None),) * 3, np.ones(volume.shape, np.uint8), source=Source.PAINTED)
        return weights(*args)

    monkeypatch.setattr(annotation, "_weights", edit_then_weigh)
    cw = volume.class_weights(0.5)
    patch = volume.read_patch(start, (2, 4, 4), cw, 2.0)
    inside = patch.weight[2:, 3:] if start != (0, 0, 0) else patch.weight
    assert np.allclose(inside, 2.0 * cw[0])  # the corrected source's factor, not the later edit's


def test_edit_records_stay_bounded_and_changes_since_still_covers_every_edit():
    from napari_sparseseg.core.annotation import MAX_CHANGE_RECORDS

    volume = AnnotatedVolume(np.random.default_rng(0).random((4, 64, 64)).astype(np.float32), num_classes=1)
    for i in range(3 * MAX_CHANGE_RECORDS):
        volume.set_labels((i % 4, (i // 4) % 64, i % 64), 1 + i % 2)
    assert len(volume._changes) <= MAX_CHANGE_RECORDS + 1
    box = volume.changes_since(5)
    assert box.start == (0, 0, 0) and box.stop == (4, 64, 64)
    last = volume.changes_since(volume.revision - 1)
    assert last.shape == (1, 1, 1)


def test_layer_encoding_round_trips_and_keeps_class_numbers():
    from napari_sparseseg.core.encoding import (
        LAYER_BACKGROUND,
        annotation_to_layer,
        layer_to_annotation,
        mask_to_layer,
    )

    annotation = np.array([0, 1, 2, 3, 9], np.uint8)  # unlabeled, background, classes 1, 2, 8
    layer = annotation_to_layer(annotation)
    np.testing.assert_array_equal(layer, [0, LAYER_BACKGROUND, 1, 2, 8])
    np.testing.assert_array_equal(layer_to_annotation(layer), annotation)
    np.testing.assert_array_equal(mask_to_layer(np.array([0, 1, 2])), [LAYER_BACKGROUND, 1, 2])
    assert layer.dtype == np.uint8 and layer_to_annotation(layer).dtype == np.uint8
