"""Separate objects: touching objects split where connected components merge them, specks left out, and the
object-level scores that measure it."""

import numpy as np
import pytest

from napari_sparseseg.core.instances import connected_objects, split_instances, typical_object
from napari_sparseseg.evaluation.metrics import object_scores


def _touching_pair(shape=(32, 48, 64)):
    """Two overlapping balls (ids 1, 2) and a small separate one (id 3): instance truth ``(z, y, x)``."""
    z, y, x = np.indices(shape)
    truth = np.zeros(shape, np.uint16)
    truth[((z - 16) ** 2 + (y - 24) ** 2 + (x - 38) ** 2) < 100] = 2
    truth[((z - 16) ** 2 + (y - 24) ** 2 + (x - 20) ** 2) < 100] = 1
    truth[((z - 16) ** 2 + (y - 8) ** 2 + (x - 55) ** 2) < 16] = 3
    return truth


def test_touching_objects_are_split_where_connected_components_merge_them():
    truth = _touching_pair()
    mask = (truth > 0).astype(np.uint8)
    assert connected_objects(mask).max() == 2  # the touching pair is one component
    objects = split_instances(mask)
    assert objects.max() == 3 and objects.dtype == np.uint32
    assert np.array_equal(objects > 0, mask > 0)
    scores = object_scores(truth, objects)
    assert scores["f1"] == 1.0 and scores["merged"] == scores["split"] == 0
    merged = object_scores(truth, connected_objects(mask))
    assert merged["merged"] == 1 and merged["recall"] == pytest.approx(2 / 3)


def test_specks_are_not_objects_and_one_object_stays_one():
    truth = _touching_pair()
    mask = (truth == 1).astype(np.uint8)  # one ball
    mask[2, 2, 2] = mask[30, 40, 60] = 1  # two one-voxel specks
    objects = split_instances(mask, (2.0, 1.0, 1.0))
    assert objects.max() == 1 and objects[2, 2, 2] == 0 and objects[16, 24, 20] == 1
    assert connected_objects(mask).max() == 3  # the reference keeps every component


def test_classes_are_split_separately_with_ids_unique_across_classes():
    truth = _touching_pair()
    mask = np.where(truth == 3, 2, truth > 0).astype(np.uint8)  # class 1: the pair, class 2: the small ball
    objects = split_instances(mask)
    assert sorted(np.unique(objects[mask == 1]).tolist()) == [1, 2]
    assert np.unique(objects[mask == 2]).tolist() == [3]
    only_first = split_instances(mask, classes=[2])  # class 1 not split: its one component
    assert np.unique(only_first[mask == 1]).size == 1


def test_typical_object_is_the_one_the_median_foreground_voxel_lies_in():
    sizes = np.array([1, 1, 1, 1, 1, 1000, 900])
    assert typical_object(sizes, np.arange(7.0)) == (1000.0, 5.0)  # specks do not make it small
    assert typical_object(np.array([]), np.array([])) == (0.0, 0.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"mask": np.zeros((4, 4), np.uint8)}, "3D integer"),
    ({"mask": np.zeros((4, 4, 4), np.float32)}, "3D integer"),
    ({"mask": np.zeros((4, 4, 4), np.uint8), "spacing": (1.0, 0.0, 1.0)}, "spacing"),
    ({"mask": np.zeros((4, 4, 4), np.uint8), "depth_share": 2.0}, "depth_share"),
])
def test_bad_input_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        split_instances(**kwargs)


def test_object_scores_count_merges_and_splits():
    truth = np.zeros((1, 1, 12), np.uint8)
    truth[0, 0, :4], truth[0, 0, 4:8], truth[0, 0, 8:] = 1, 2, 3
    pred = np.zeros_like(truth)
    pred[0, 0, :8] = 1  # objects 1 and 2 merged
    pred[0, 0, 8:10], pred[0, 0, 10:] = 2, 3  # object 3 split in two
    r = object_scores(truth, pred)
    assert (r["merged"], r["split"], r["n_true"], r["n_predicted"]) == (1, 1, 3, 3)
    assert r["f1"] == 0.0
    assert object_scores(truth, truth)["f1"] == 1.0
    with pytest.raises(ValueError, match="iou"):
        object_scores(truth, pred, iou=0.3)


def test_the_synthetic_sample_has_instance_truth_of_its_labels():
    from napari_sparseseg.sample_data import make_cells_volume

    v = make_cells_volume((16, 64, 64), n_cells=4, seed=1)
    assert v.instances is not None and np.array_equal(v.instances > 0, v.labels > 0)
    for i in np.unique(v.instances[v.instances > 0]):
        assert np.unique(v.labels[v.instances == i]).size == 1  # an object lies in one class


def test_the_layer_menu_command_separates_a_labels_layer():
    from napari.layers import Labels

    from napari_sparseseg.plugin.commands import separate_objects_layer

    truth = _touching_pair()
    layer = Labels((truth > 0).astype(np.uint8), scale=(2.0, 1.0, 1.0), name="mask")
    data, meta, kind = separate_objects_layer(layer)
    assert kind == "labels" and data.max() == 3 and meta["scale"] == (2.0, 1.0, 1.0) and meta["name"] == "mask objects"
