"""Merges and splits painted on separate objects: found, learned from, and kept."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sparseseg.core.instances import split_instances
from napari_sparseseg.core.object_edits import find_edits, fit_depth_share, matched_share, resplit


def _pairs_of_balls(neck: float) -> tuple[np.ndarray, np.ndarray]:
    """A class map of four pairs of overlapping balls (radius 6, centres ``2 * 6 - neck`` apart along x), and the
    ids of the balls (8 objects; where two overlap, the nearer centre's)."""
    z, y, x = np.mgrid[:16, :64, :64]
    mask = np.zeros(z.shape, np.uint8)
    ids = np.zeros(z.shape, np.uint32)
    dist_best = np.full(z.shape, np.inf)
    n = 0
    for cy in (16, 46):
        for cx in (12, 42):
            for dx in (0, 12 - neck):
                n += 1
                d = np.sqrt((z - 8) ** 2 + (y - cy) ** 2 + (x - cx - dx) ** 2)
                inside = d <= 6
                mask[inside] = 1
                nearer = inside & (d < dist_best)
                ids[nearer], dist_best[nearer] = n, d[nearer]
    return mask, ids


def test_a_merge_painted_on_one_pair_merges_the_others_like_it():
    mask, _ = _pairs_of_balls(neck=4)  # a deep overlap: one elongated object per pair, as the user sees it
    shown = split_instances(mask, depth_share=0.05)
    assert shown.max() == 8  # too shallow: each pair cut in two
    edited = shown.copy()
    first_pair = np.unique(shown[8, 10:22, 4:34])  # the pair at y = 16, x = 12
    first_pair = first_pair[first_pair > 0]
    assert first_pair.size == 2
    edited[edited == first_pair[1]] = first_pair[0]  # the user paints one label over the other
    edits = find_edits(shown, edited)
    assert (edits.merges, edits.splits) == (1, 0)
    assert edits.touched[8, 16, 12] and not edits.touched[8, 46, 42]
    share = fit_depth_share(mask, edited, edits.touched, current=0.05)
    assert share > 0.05
    objects = resplit(mask, edited, edits, share)
    assert objects.max() == 4  # every pair is one object now
    assert len(np.unique(objects[edits.touched])) == 1


def test_a_split_painted_on_one_pair_splits_the_others_like_it():
    mask, balls = _pairs_of_balls(neck=2)  # two balls touching over a narrow face
    shown = split_instances(mask, depth_share=1.0)
    assert shown.max() == 4  # too deep: each pair kept as one
    edited = shown.copy()
    pair = shown[8, 16, 12]
    second_ball = (shown == pair) & (balls == balls[8, 16, 22])
    edited[second_ball] = shown.max() + 1  # the user paints a new label over one ball
    edits = find_edits(shown, edited)
    assert (edits.merges, edits.splits) == (0, 1)
    share = fit_depth_share(mask, edited, edits.touched, current=1.0)
    assert share < 1.0
    objects = resplit(mask, edited, edits, share)
    assert objects.max() == 8
    assert matched_share(balls, objects) == 1.0


def test_a_split_painted_with_a_negative_label_is_a_split_too():
    mask, balls = _pairs_of_balls(neck=2)
    shown = split_instances(mask, depth_share=1.0).astype(np.int32)  # a signed layer may hold labels below 0
    edited = shown.copy()
    pair = shown[8, 16, 12]
    edited[(shown == pair) & (balls == balls[8, 16, 22])] = -3
    edits = find_edits(shown, edited)
    assert (edits.merges, edits.splits) == (0, 1)
    assert not edits.touched[shown == 0].any()  # the background stays background


def test_a_brush_spilling_onto_a_neighbour_is_no_edit_of_it():
    mask, balls = _pairs_of_balls(neck=2)
    shown = split_instances(mask, depth_share=0.25)
    edited = shown.copy()
    a, b = shown[8, 16, 12], shown[8, 16, 24]
    assert a != b
    edited[8, 16, 18:21] = a  # a few voxels of a over b, where they touch
    edits = find_edits(shown, edited)
    assert not edits.any and not edits.touched.any()
    assert fit_depth_share(mask, edited, edits.touched, current=0.25) == 0.25


def test_edits_of_another_shape_are_refused():
    with pytest.raises(ValueError, match="same 3D shape"):
        find_edits(np.zeros((4, 4, 4), np.uint32), np.zeros((4, 4, 5), np.uint32))


def test_merging_objects_with_napari_fill_and_learning_from_it_in_the_window(make_napari_viewer):
    """In a real viewer: separate objects from the Layers menu, merge two with napari's fill bucket, run the
    learning command through napari's command registry: every pair like the merged one is one object."""
    from napari._app_model import get_app_model

    viewer = make_napari_viewer()
    mask, _ = _pairs_of_balls(neck=4)
    source = viewer.add_labels(mask, name="mask")
    app = get_app_model()
    viewer.layers.selection.active = source
    app.commands.execute_command("napari-sparseseg.separate_objects").result()
    objects = viewer.layers["mask objects"]
    objects.data = split_instances(mask, depth_share=0.05)  # as if split too shallow: each pair in two
    objects.metadata["napari_sparseseg_objects"]["depth_share"] = 0.05
    assert objects.data.max() == 8
    keep = objects.data[8, 16, 8]
    objects.n_edit_dimensions = 3  # the layer controls' "n edit dim": the bucket fills the whole object
    objects.fill((8, 16, 24), keep)  # the bucket: the neighbour takes this object's label
    viewer.layers.selection.active = objects
    app.commands.execute_command("napari-sparseseg.learn_object_edits").result()
    assert objects.data.max() == 4
    assert objects.metadata["napari_sparseseg_objects"]["depth_share"] > 0.05
    assert objects.data[8, 16, 8] == objects.data[8, 16, 24] != 0
    assert objects.data[8, 46, 38] == objects.data[8, 46, 54] != 0  # a pair the user did not touch


def test_learning_needs_an_objects_layer_made_by_the_plugin():
    from napari.layers import Labels

    from napari_sparseseg.plugin.commands import learn_object_edits

    with pytest.raises(ValueError, match="Separate objects"):
        learn_object_edits(Labels(np.zeros((4, 8, 8), np.uint8), name="plain"))


def test_labels_of_any_size_are_edits_like_small_ones():
    mask, balls = _pairs_of_balls(neck=2)
    shown = split_instances(mask, depth_share=1.0)
    edited = shown.copy()
    edited[(shown == shown[8, 16, 12]) & (balls == balls[8, 16, 22])] = 2**32 - 1  # napari allows any uint32
    edits = find_edits(shown, edited)
    assert edits.splits == 1
    objects = resplit(mask, edited, edits, fit_depth_share(mask, edited, edits.touched, current=1.0))
    assert objects.max() == 8


def test_an_object_painted_where_none_was_shown_stays_as_painted_with_any_label():
    """A merge learned from, and beside it a small object the user painted on the background with a huge label:
    it survives the split (never dropped as a speck) and no table the size of the label is allocated."""
    from napari.layers import Labels

    from napari_sparseseg.plugin.commands import learn_object_edits, separate_objects_layer

    mask, _ = _pairs_of_balls(neck=4)
    data, meta, _ = separate_objects_layer(Labels(mask, name="mask"))
    layer = Labels(split_instances(mask, depth_share=0.05), name="mask objects", metadata=meta["metadata"])
    layer.metadata["napari_sparseseg_objects"]["depth_share"] = 0.05
    edited = np.asarray(layer.data).astype(np.uint32)
    first = edited[8, 16, 8]
    edited[edited == edited[8, 16, 24]] = first  # a merge
    edited[0:2, 0:2, 0:2] = 4_000_000_000  # 8 voxels painted on the background
    layer.data = edited
    learn_object_edits(layer)
    out = np.asarray(layer.data)
    new = out[0:2, 0:2, 0:2]
    assert new.min() > 0 and np.unique(new).size == 1 and np.count_nonzero(out == new[0, 0, 0]) == 8
    assert out[8, 16, 8] == out[8, 16, 24] != 0


def test_the_segment_commands_line_up_with_their_layer_and_refuse_values_that_are_no_class():
    from napari.layers import Labels

    from napari_sparseseg.plugin.commands import annotation_to_mask_layer, separate_objects_layer

    mask, _ = _pairs_of_balls(neck=4)
    rotate = [[0.866, -0.5], [0.5, 0.866]]
    layer = Labels(mask, name="mask", scale=(2, 1, 1), translate=(5, 6, 7), rotate=rotate,
                   metadata={"affine": np.diag([-1.0, -1.0, 2.0, 1.0])})
    for command in (annotation_to_mask_layer, separate_objects_layer):
        _, meta, _ = command(layer)
        made = Labels(mask, **meta)
        np.testing.assert_allclose(made.affine.affine_matrix, layer.affine.affine_matrix)
        np.testing.assert_allclose(made.rotate, layer.rotate)
        assert tuple(made.translate) == (5, 6, 7) and tuple(made.scale) == (2, 1, 1)
        np.testing.assert_array_equal(made.metadata["affine"], layer.metadata["affine"])  # for the NIfTI writer
    objects = Labels(np.where(mask > 0, 300, 0).astype(np.uint16), name="objects")  # an objects layer: ids > 255
    for command in (annotation_to_mask_layer, separate_objects_layer):
        with pytest.raises(ValueError, match="not classes"):
            command(objects)


#: A ball of pair A (y = 16, x = 12), the other ball of A, and the same of pair B (y = 46, x = 42).
A1, A2, B1, B2 = (8, 16, 12), (8, 16, 24), (8, 46, 42), (8, 46, 54)


def _pair_a_merged_in_a_first_round():
    """An objects layer made by Separate objects, shown split too shallow (each pair in two), after a first round
    of learning from pair A merged with the fill bucket; and the ids of the balls."""
    from napari.layers import Labels

    from napari_sparseseg.plugin.commands import OBJECTS_KEY, learn_object_edits, separate_objects_layer

    mask, balls = _pairs_of_balls(neck=4)
    _, meta, _ = separate_objects_layer(Labels(mask, name="mask"))
    layer = Labels(split_instances(mask, depth_share=0.05), name="mask objects", metadata=meta["metadata"])
    layer.metadata[OBJECTS_KEY]["depth_share"] = 0.05
    layer.n_edit_dimensions = 3
    layer.fill(A2, int(layer.data[A1]))
    learn_object_edits(layer)
    return layer, balls


def test_the_objects_edited_in_an_earlier_round_stay_as_painted_and_still_teach_the_depth(monkeypatch):
    from napari_sparseseg.plugin.commands import OBJECTS_KEY, learn_object_edits

    layer, balls = _pair_a_merged_in_a_first_round()
    a1, a2, b1, b2 = A1, A2, B1, B2
    assert layer.data[a1] == layer.data[a2]
    edited = np.asarray(layer.data).copy()  # round 2: pair B split, along its balls
    b = (edited == edited[b1]) & (balls == balls[b2])
    edited[b] = edited.max() + 1
    layer.data = edited
    learn_object_edits(layer)
    assert layer.data[b1] != layer.data[b2]  # this round's split
    assert layer.data[a1] == layer.data[a2] != 0  # round 1's merge, kept (it was split again before)
    assert layer.metadata[OBJECTS_KEY]["edited"][a1]
    kept = np.asarray(layer.data).copy()
    said = []
    monkeypatch.setattr("napari.utils.notifications.show_info", said.append)
    learn_object_edits(layer)  # a third round with nothing newly painted changes nothing, and says so
    np.testing.assert_array_equal(layer.data, kept)
    assert "no newly merged or split object" in said[-1]
    edited = np.asarray(layer.data).copy()  # the user changes their mind: pair A split again, along its balls
    a = (edited == edited[a1]) & (balls == balls[a2])
    edited[a] = edited.max() + 1
    layer.data = edited
    learn_object_edits(layer)
    assert layer.data[a1] != layer.data[a2]  # an earlier edit's region edited anew: as painted now


def test_an_earlier_edit_painted_over_again_is_learned_from():
    from napari_sparseseg.plugin.commands import OBJECTS_KEY, learn_object_edits

    layer, balls = _pair_a_merged_in_a_first_round()  # every pair merged like A
    a1, a2, b1, b2 = A1, A2, B1, B2
    merged_at = layer.metadata[OBJECTS_KEY]["depth_share"]
    assert layer.data[b1] == layer.data[b2]
    edited = np.asarray(layer.data).copy()  # the user changes their mind: pair A split again, along its balls
    edited[(edited == edited[a1]) & (balls == balls[a2])] = edited.max() + 1
    layer.data = edited
    learn_object_edits(layer)  # (the region was edited before: still a new edit, learned from)
    assert layer.metadata[OBJECTS_KEY]["depth_share"] < merged_at
    assert layer.data[a1] != layer.data[a2] and layer.data[b1] != layer.data[b2]  # every pair split like A again
