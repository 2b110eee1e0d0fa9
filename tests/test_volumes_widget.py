"""GUI tests of several volumes in the widget: add another image, paint on it, see it predicted, correct it, and
get it back from the session store."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from napari_sparseseg.core.annotation import Source
from napari_sparseseg.core.encoding import layer_to_annotation, mask_to_layer
from napari_sparseseg.plugin.sample import make_sample_data
from napari_sparseseg.plugin.widget import SparseSegWidget
from tests.test_store_widget import CONFIG, SHAPE, stop_and_wait
from tests.test_widget import paint_slice

pytestmark = pytest.mark.gui


def two_volumes(viewer):
    """The sample twice (two seeds): the first as the widget's image with its annotation layer, the second added."""
    first, second = make_sample_data(SHAPE, seed=0), make_sample_data(SHAPE, seed=1)
    image = viewer.add_image(first[0][0], **first[0][1])
    annotation = viewer.add_labels(first[1][0].copy(), **first[1][1])
    meta = dict(second[0][1], name="cells 2")
    other = viewer.add_image(second[0][0], **meta)
    return image, annotation, other, first[0][1]["metadata"]["ground_truth"], meta["metadata"]["ground_truth"]


def make_widget(viewer, image):
    """The docked widget with ``image`` chosen as its (first) image."""
    widget = SparseSegWidget(viewer, config=CONFIG, refresh_seconds=0.5, first_refresh_steps=2)
    viewer.window.add_dock_widget(widget, name="sparseseg")
    combo = widget.data_panel.image_combo
    combo.setCurrentIndex(next(i for i in range(combo.count()) if combo.itemData(i) is image))
    return widget


def test_another_volume_is_learned_from_predicted_while_selected_corrected_and_stored(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image, annotation, other, truth, other_truth = two_volumes(viewer)
    widget = make_widget(viewer, image)
    try:
        panel = widget.volumes_panel
        assert [panel.image_combo.itemText(i) for i in range(panel.image_combo.count())] == ["cells 2"]
        paint_slice(annotation, 8, truth[8])
        entry = panel.add(other)
        assert entry is not None and entry.annotation.name == "cells 2 annotation"
        assert entry.annotation.data.shape == other.data.shape
        paint_slice(entry.annotation, 5, other_truth[5])  # before Start: waits in the layer
        assert "cells 2" in panel.list_label.text()

        assert widget.start()
        qtbot.waitUntil(lambda: widget.session is not None, timeout=60000)
        session = widget.session
        assert len(session.other_volumes) == 1 and session.other_volumes[0].name == "cells 2"
        volume = session.other_volumes[0].volume
        np.testing.assert_array_equal(volume.labels[5], layer_to_annotation(mask_to_layer(other_truth[5])))
        assert not panel.add_button.isEnabled()  # no volume joins a running session

        paint_slice(entry.annotation, 11, other_truth[11])  # while training: reaches that volume
        assert volume.labels[11].any() and not session.volume.labels[11].any()

        viewer.layers.selection.active = entry.annotation  # the user looks at the other volume
        assert panel.in_view()[0] == 1 and panel.in_view()[1] is not None  # the volume and the slice in view of it
        before = np.array(annotation.data)
        viewer.dims.set_current_step(0, 3)  # a slice nobody painted, on both volumes
        qtbot.waitUntil(lambda: widget.outputs.prediction is not None and widget.outputs.predicted[3].any(),
                        timeout=60000)
        assert widget.results_panel.accept_in_view() == 0  # not the first image's slice, unseen, into its labels
        np.testing.assert_array_equal(annotation.data, before)
        qtbot.waitUntil(lambda: entry.prediction is not None and entry.prediction.data.any(), timeout=60000)
        assert entry.prediction.name == "cells 2 prediction" and entry.prediction.data.shape == other.data.shape

        entry.prediction.paint((2, 3, 3), 1)  # a correction on the other volume's prediction
        assert volume.labels[2, 3, 3] == 2 and volume.source[2, 3, 3] == Source.CORRECTED
        assert entry.annotation.data[2, 3, 3] == 1  # and on its annotation layer

        stop_and_wait(widget, qtbot)
        store = session.store
        stored = zarr.open_group(str(store.path / "volumes" / "1"), mode="r")
        np.testing.assert_array_equal(np.asarray(stored["labels"]), volume.labels)
        assert stored.attrs["image_name"] == "cells 2"
        path = store.path
    finally:
        widget.close_session()

    viewer = make_napari_viewer()  # the store reopened in a new window brings both volumes back
    widget = SparseSegWidget(viewer, config=CONFIG, refresh_seconds=0.5, first_refresh_steps=2)
    viewer.window.add_dock_widget(widget, name="sparseseg")
    try:
        layers = widget.files.open(path)
        assert [ly.name for ly in layers][3:] == ["cells 2", "cells 2 annotation", "cells 2 prediction"]
        entry = widget.volumes_panel.entries[0]
        assert entry.image is layers[3] and entry.prediction is layers[5]
        yy, xx = np.indices(SHAPE[1:]).reshape(2, -1)
        entry.annotation.data_setitem((np.full(yy.size, 5), yy, xx), 0)  # slice 5 erased before Start
        assert widget.start()
        qtbot.waitUntil(lambda: widget.session is not None, timeout=60000)
        reopened = widget.session
        assert len(reopened.other_volumes) == 1  # matched to the stored volume, not added twice
        expected = volume.labels.copy()
        expected[5] = 0  # the erasure is kept, not painted back from the store and trained on
        np.testing.assert_array_equal(reopened.other_volumes[0].volume.labels, expected)
        assert not entry.annotation.data[5].any()
        paint_slice(entry.annotation, 13, other_truth[13])
        assert reopened.other_volumes[0].volume.labels[13].any()
        stop_and_wait(widget, qtbot)
    finally:
        widget.close_session()


def test_a_volume_that_cannot_train_with_the_first_is_refused_and_one_added_after_stop_joins_at_start(
        make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image, annotation, other, truth, other_truth = two_volumes(viewer)
    other.scale = (other.scale[0] * 3, *other.scale[1:])  # another voxel size
    widget = make_widget(viewer, image)
    try:
        paint_slice(annotation, 8, truth[8])
        viewer.add_image(np.zeros(SHAPE, np.float32), name="uncertainty", metadata={"sparseseg_role": "uncertainty"})
        offered = widget.volumes_panel.image_combo
        assert [offered.itemText(i) for i in range(offered.count())] == ["cells 2"]  # never an output layer
        entry = widget.volumes_panel.add(other)
        assert entry is not None  # waits for the session
        refused_layer = entry.annotation
        paint_slice(refused_layer, 5, other_truth[5])
        combo = widget.data_panel.annotation_combo  # never offered as the first image's annotation
        assert all(combo.itemData(i) is not entry.annotation for i in range(combo.count()))
        assert widget.start()
        qtbot.waitUntil(lambda: widget.session is not None, timeout=60000)
        session = widget.session
        assert session.other_volumes == [] and widget.volumes_panel.entries == []  # refused, training goes on
        qtbot.waitUntil(lambda: widget.last_step is not None, timeout=60000)
        stop_and_wait(widget, qtbot)

        third = viewer.add_image(make_sample_data(SHAPE, seed=2)[0][0], name="cells 3", scale=image.scale)
        entry = widget.volumes_panel.add(third)  # after Stop: joins the same session at the next Start
        paint_slice(entry.annotation, 6, other_truth[6])
        assert "joining at the next Start: cells 3" in widget.volumes_panel.list_label.text()
        other.scale = image.scale  # the refused volume, resampled: added again with the strokes painted on it
        assert widget.volumes_panel.add(other).annotation is refused_layer
        assert tuple(refused_layer.scale) == tuple(other.scale)  # and laid over it as it lies now
        assert widget.start()
        qtbot.waitUntil(lambda: len(session.other_volumes) == 2, timeout=60000)
        assert widget.session is session and [v.name for v in session.other_volumes] == ["cells 3", "cells 2"]
        assert session.other_volumes[0].volume.labels[6].any() and session.other_volumes[1].volume.labels[5].any()
        qtbot.waitUntil(lambda: "also learning from: cells 3, cells 2" in widget.volumes_panel.list_label.text(),
                        timeout=10000)
        stop_and_wait(widget, qtbot)
    finally:
        widget.close_session()


def test_another_volume_that_would_not_fit_the_machine_with_the_first_is_refused(make_napari_viewer, monkeypatch):
    from napari_sparseseg.plugin.layers import session_bytes

    viewer = make_napari_viewer()
    image, _annotation, other, _truth, _other_truth = two_volumes(viewer)
    widget = make_widget(viewer, image)
    warnings = []
    monkeypatch.setattr("napari_sparseseg.plugin.volumes_panel.show_warning", warnings.append)
    alone = session_bytes(image, len(widget.classes))  # the first image fits, not both
    monkeypatch.setattr("napari_sparseseg.core.footprint.physical_memory", lambda: alone + 1)
    try:
        assert widget.data_panel.image_problem() is None
        assert widget.volumes_panel.add(other) is None and widget.volumes_panel.entries == []
        assert "with 'cells 2' is too large to train on in this window" in warnings[-1]
    finally:
        widget.close_session()


def test_a_volume_removed_while_training_and_added_again_joins_as_the_volume_it_was(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image, annotation, other, truth, other_truth = two_volumes(viewer)
    widget = make_widget(viewer, image)
    try:
        panel = widget.volumes_panel
        paint_slice(annotation, 8, truth[8])
        entry = panel.add(other)
        paint_slice(entry.annotation, 5, other_truth[5])
        assert widget.start()
        qtbot.waitUntil(lambda: widget.session is not None and panel.entries[0].labels is not None, timeout=60000)
        session = widget.session
        volume = session.other_volumes[0].volume
        viewer.layers.remove(entry.image)  # its labels stay in training
        assert panel.entries == []
        stop_and_wait(widget, qtbot)

        again = viewer.add_image(np.array(other.data), name="cells 2", scale=other.scale)  # the same image, reopened
        entry = panel.add(again)
        assert entry is not None and not entry.annotation.data[5].any()
        paint_slice(entry.annotation, 9, other_truth[9])
        assert widget.start()
        qtbot.waitUntil(lambda: panel.entries[0].labels is not None, timeout=60000)
        assert widget.session is session and len(session.other_volumes) == 1  # not a second copy
        assert panel.entries[0].labels.volume is volume
        assert volume.labels[5].any() and volume.labels[9].any()  # the labels held and the new ones
        np.testing.assert_array_equal(layer_to_annotation(entry.annotation.data), volume.labels)  # shown again
        stop_and_wait(widget, qtbot)
    finally:
        widget.close_session()


def test_another_volume_chosen_as_the_image_leaves_no_stale_prediction_layer(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image, annotation, other, truth, other_truth = two_volumes(viewer)
    widget = make_widget(viewer, image)
    try:
        paint_slice(annotation, 8, truth[8])
        entry = widget.volumes_panel.add(other)
        paint_slice(entry.annotation, 5, other_truth[5])
        assert widget.start()
        qtbot.waitUntil(lambda: widget.session is not None, timeout=60000)
        viewer.layers.selection.active = entry.annotation
        qtbot.waitUntil(lambda: entry.prediction is not None and entry.prediction.data.any(), timeout=60000)
        stop_and_wait(widget, qtbot)
        combo = widget.data_panel.image_combo
        combo.setCurrentIndex(next(i for i in range(combo.count()) if combo.itemData(i) is other))
        assert widget.image_layer is other and widget.volumes_panel.entries == []
        assert "cells 2 prediction" not in viewer.layers  # the old session's: no second prediction layer beside it
        assert entry.annotation in viewer.layers and entry.annotation.data[5].any()  # the labels stay
    finally:
        widget.close_session()
