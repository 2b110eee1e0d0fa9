"""Real GUI tests of the napari layer (make_napari_viewer under Xvfb, started by pytest-xvfb).

Painting goes through the labels layers' own paint API (``data_setitem``,
``paint``), which emits ``events.paint`` exactly like a mouse stroke.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from qtpy.QtCore import QThreadPool

from napari_sparseseg.core.annotation import Source
from napari_sparseseg.core.box import Box
from napari_sparseseg.core.config import ModelConfig, SessionConfig, TrainConfig
from napari_sparseseg.core.encoding import layer_to_annotation, mask_to_layer
from napari_sparseseg.plugin.guidance_panel import HIGHLIGHT_NAME
from napari_sparseseg.plugin.paint_atoms import read_paint_item
from napari_sparseseg.plugin.sample import make_sample_data
from napari_sparseseg.plugin.status_panel import IDLE
from napari_sparseseg.plugin.widget import SparseSegWidget

pytestmark = pytest.mark.gui

SHAPE = (32, 64, 64)
#: A small, fast model: the loop is what is tested here, not the net.
TEST_CONFIG = SessionConfig(model=ModelConfig(base_channels=8, depth=3),
                            train=TrainConfig(patch_voxels=16 * 32 * 32), device="cpu")


@pytest.fixture(scope="module")
def sample_layers():
    return make_sample_data(SHAPE)


@pytest.fixture
def app(make_napari_viewer, sample_layers, qtbot):
    """A viewer with the sample (image + empty annotation) and the docked widget."""
    viewer = make_napari_viewer()
    image_data, image_meta, _ = sample_layers[0]
    ann_data, ann_meta, _ = sample_layers[1]
    viewer.add_image(image_data, **image_meta)
    viewer.add_labels(ann_data.copy(), **ann_meta)
    widget = SparseSegWidget(viewer, config=TEST_CONFIG, refresh_seconds=1.0, first_refresh_steps=5)
    viewer.window.add_dock_widget(widget, name="sparseseg")
    yield viewer, widget
    widget.close_session()


def ground_truth(widget: SparseSegWidget) -> np.ndarray:
    return widget.image_layer.metadata["ground_truth"]


def paint_slice(layer, z: int, mask_slice: np.ndarray) -> None:
    """Paint one full z slice (mask encoding in, annotation encoding written) as one undoable edit."""
    yy, xx = np.indices(mask_slice.shape).reshape(2, -1)
    layer.data_setitem((np.full(yy.size, z), yy, xx), mask_to_layer(mask_slice)[yy, xx])


def foreground_dice(pred: np.ndarray, gt: np.ndarray) -> float:
    a, b = pred > 0, gt > 0
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def start_and_wait_for_session(widget, qtbot) -> None:
    assert widget.start()
    qtbot.waitUntil(lambda: widget.session is not None, timeout=60000)


def stop_and_wait(widget, qtbot) -> None:
    """Stop and wait until the widget has handled the end of the run (its checkpoint included): the worker marks
    the run ended before Qt delivers the queued ``finished`` signal."""
    finished: list[bool] = []
    widget.run_finished.connect(lambda: finished.append(True))  # on the GUI thread, as the signal's handler
    was_running = widget.run.running
    widget.stop()
    qtbot.waitUntil(lambda: not widget.run.running and (bool(finished) or not was_running), timeout=60000)
    assert widget.run.wait(5)
    qtbot.waitUntil(lambda: QThreadPool.globalInstance().activeThreadCount() == 0, timeout=60000)


def test_end_to_end_paint_train_correct(app, qtbot, tmp_path):
    viewer, widget = app
    assert widget.image_layer.name == "cells"
    annotation = widget.annotation_layer
    assert annotation is not None and annotation.name == "annotation"
    assert widget.classes.names == ["nucleus", "vesicle"]  # taken from the sample's metadata
    gt = ground_truth(widget)
    painted = []
    annotation.events.paint.connect(lambda e: painted.append(e))
    for z in (8, 16, 24):
        paint_slice(annotation, z, gt[z])
    assert len(painted) == 3

    widget.training_panel.device_combo.setCurrentText("cpu")
    start_and_wait_for_session(widget, qtbot)
    session = widget.session
    assert str(session.trainer.device) == "cpu"
    assert session.volume.n_labeled == 3 * SHAPE[1] * SHAPE[2]
    np.testing.assert_array_equal(session.volume.labels, layer_to_annotation(annotation.data))

    widget.training_panel.uncertainty_check.setChecked(True)
    shown = []
    widget.prediction_shown.connect(lambda r: shown.append(r))
    pred_layer = widget.prediction_layer
    # The first responder's mask comes first; wait for the net's first steps as well.
    qtbot.waitUntil(lambda: widget.refreshes.count > 0 and foreground_dice(pred_layer.data, gt) >= 0.6
                    and widget.last_step is not None, timeout=120000)
    assert widget.last_step is not None and widget.last_step.step > 0
    assert widget.status_panel.sparkline.values
    assert widget.results_panel.accept_button.isEnabled()
    unc = widget.outputs.uncertainty
    assert unc is not None and 0.0 <= unc.data.min() and unc.data.max() <= 1.0 and unc.data.max() > 0
    widget.toggle_pause()
    qtbot.waitUntil(lambda: widget.run.paused, timeout=60000)  # the worker pauses at its next yield
    widget._update_status()  # the 1 s tick
    assert "paused" in widget.status_panel.label.text() and "refreshed" not in widget.status_panel.rate_label.text()
    widget.toggle_pause()
    widget.training_panel.uncertainty_check.setChecked(False)
    assert not unc.visible  # no longer written: hidden, not left stale on screen
    widget.training_panel.uncertainty_check.setChecked(True)
    # A refresh never overwrites labeled voxels.
    for z in (8, 16, 24):
        np.testing.assert_array_equal(pred_layer.data[z], gt[z])

    # A correction on the prediction layer: class 2 (vesicle) over an unlabeled patch.
    z, y, x = 12, 30, 30
    rev_before = session.volume.revision
    cw = session.volume.class_weights(session.config.train.class_balance_power)
    w_before = session.volume.weights((z, slice(y - 1, y + 2), slice(x - 1, x + 2)), cw, 2.0).copy()
    pred_layer.brush_size = 5
    pred_layer.paint((z, y, x), 2)
    assert session.volume.labels[z, y, x] == 3  # annotation encoding of class 2
    assert session.volume.source[z, y, x] == Source.CORRECTED
    assert annotation.data[z, y, x] == 2  # the annotation layer mirrors y: class 2 is 2 on both layers
    w_after = session.volume.weights((z, slice(y - 1, y + 2), slice(x - 1, x + 2)), cw, 2.0)
    assert np.all(w_before == 0) and np.all(w_after > 0)
    corr_rev = session.volume.revision
    assert corr_rev > rev_before
    qtbot.waitUntil(lambda: session.trainer.last_revision >= corr_rev, timeout=60000)
    # The next refresh keeps the correction.
    n = len(shown)
    qtbot.waitUntil(lambda: len(shown) > n, timeout=60000)
    assert pred_layer.data[z, y, x] == 2

    # Erasing on the prediction layer means background.
    pred_layer.paint((z, y, x), 0)
    assert session.volume.labels[z, y, x] == 1

    stop_and_wait(widget, qtbot)
    assert widget.run.worker is not None and not widget.run.worker._running
    assert widget.status_panel.label.text() == f"stopped at step {session.trainer.step}"  # the steps it ran
    # A value that is no class is refused, and the layer shows the prediction there again (not exported as 7;
    # no refresh comes after Stop).
    before = np.array(pred_layer.data[z + 2, 5:8, 5:8])
    pred_layer.brush_size = 1
    pred_layer.paint((z + 2, 6, 6), 7)
    qtbot.waitUntil(lambda: 7 not in pred_layer.data[z + 2], timeout=10000)
    np.testing.assert_array_equal(pred_layer.data[z + 2, 5:8, 5:8], before)

    # Accept the prediction of the slice in view, then export.
    viewer.dims.set_current_step(0, 20)
    annotation.visible = False  # napari's edit of a hidden layer raised part-way through
    accepted = widget.results_panel.accept_in_view()
    assert annotation.visible
    assert accepted > 0
    assert (annotation.data[20] > 0).all() and (session.volume.labels[20] > 0).all()
    annotation.undo()  # accepting is one undoable edit
    assert (session.volume.labels[20] == 0).all()
    out = tmp_path / "mask.npz"
    layer = widget.results_panel.export("prediction", out)
    assert layer.data.max() <= 2 and set(np.unique(layer.data)) <= {0, 1, 2}
    with np.load(out) as f:
        np.testing.assert_array_equal(f["labels"], layer.data)
    widget._drop_session(None)  # as when another image is chosen
    assert widget.status_panel.label.text() == IDLE and unc.data.max() == 0  # nothing of the session stays


def test_first_responder_fills_the_view_before_the_net_has_predicted(app, qtbot):
    viewer, widget = app
    gt = ground_truth(widget)
    for z in (8, 16, 24):
        paint_slice(widget.annotation_layer, z, gt[z])
    widget.refreshes.first_refresh_steps = 10**6  # the net never predicts here: what is shown is the forest's
    viewer.dims.set_current_step(0, 12)
    shown = []
    widget.prediction_shown.connect(lambda r: shown.append(r))
    start_and_wait_for_session(widget, qtbot)
    qtbot.waitUntil(lambda: len(shown) >= 2, timeout=60000)
    assert shown[0].prediction.learner == "forest"
    assert shown[0].prediction.box.start[0] <= 12 < shown[0].prediction.box.stop[0]  # the view came first
    assert foreground_dice(widget.prediction_layer.data[12], gt[12]) > 0.6
    widget._update_status()
    status = widget.status_panel.label.text()
    assert "first responder" in status and "estimated Dice" in status
    qtbot.waitUntil(lambda: widget.guidance_panel.guidance is not None, timeout=60000)
    stop_and_wait(widget, qtbot)
    best = widget.guidance_panel.guidance.slices[0]
    assert widget.guidance_panel.go_button.isEnabled()
    active = viewer.layers.selection.active
    widget.guidance_panel.go_to_suggestion()
    assert viewer.dims.order[0] == best.axis and best.axis not in viewer.dims.displayed
    assert viewer.dims.current_step[best.axis] == best.index
    outline = viewer.layers[HIGHLIGHT_NAME]  # the uncertain region is outlined on that slice
    corners = np.asarray(outline.data[0])
    assert (corners[:, best.axis] == best.index).all()
    others = [a for a in range(3) if a != best.axis]
    assert corners[:, others].min(0).tolist() == [best.box.start[a] for a in others]
    assert viewer.layers.selection.active is active  # the user keeps painting where they were
    widget.guidance_panel.go_to_suggestion()
    assert [lyr.name for lyr in viewer.layers].count(HIGHLIGHT_NAME) == 1  # moved, not added again


def test_a_zarr_image_gets_its_filter_bank_while_the_user_paints(make_napari_viewer, sample_layers, qtbot, tmp_path):
    import zarr

    viewer = make_napari_viewer()
    image_data, image_meta, _ = sample_layers[0]
    ann_data, ann_meta, _ = sample_layers[1]
    stored = zarr.open_array(str(tmp_path / "image.zarr"), mode="w", shape=image_data.shape, chunks=(16, 32, 32),
                             dtype=image_data.dtype)
    stored[:] = image_data
    viewer.add_image(stored, **image_meta)  # read from disk on demand, as the reader opens a .zarr
    viewer.add_labels(ann_data.copy(), **ann_meta)
    widget = SparseSegWidget(viewer, config=TEST_CONFIG, refresh_seconds=1.0, first_refresh_steps=10**6)
    viewer.window.add_dock_widget(widget, name="sparseseg")
    try:
        assert widget.image_layer.data is stored and widget.data_panel.image_problem() is None
        stack = widget.features.held_for(widget.image_layer)
        assert stack is not None  # computing from the moment the image was chosen, not from Start
        qtbot.waitUntil(lambda: stack.ready, timeout=60000)
        widget._update_status()  # the 1 s timer's redraw
        assert widget.data_panel.bank_message.text().startswith("first responder ready (filter bank computed in")
        assert widget.data_panel.bank_message.isVisibleTo(widget)
        gt = ground_truth(widget)
        for z in (8, 16, 24):
            paint_slice(widget.annotation_layer, z, gt[z])
        shown = []
        widget.prediction_shown.connect(lambda r: shown.append(r))
        start_and_wait_for_session(widget, qtbot)
        assert widget.session.responder.features is stack  # the session reads the array the bank was made from
        qtbot.waitUntil(lambda: len(shown) >= 2, timeout=60000)  # the slice in view, then the volume
        assert shown[0].prediction.learner == "forest"
        assert foreground_dice(widget.prediction_layer.data[12], gt[12]) > 0.6
        stop_and_wait(widget, qtbot)
    finally:
        widget.close_session()


def test_undo_withdraws_strokes(app, qtbot):
    _viewer, widget = app
    start_and_wait_for_session(widget, qtbot)
    stop_and_wait(widget, qtbot)
    session, annotation = widget.session, widget.annotation_layer
    annotation.brush_size = 5
    annotation.paint((5, 20, 20), 1)  # class 1
    assert session.volume.labels[5, 20, 20] == 2
    n = session.volume.n_labeled
    assert n > 0
    rev = session.volume.revision
    annotation.undo()
    assert session.volume.n_labeled == 0 and annotation.data.max() == 0
    assert session.volume.revision > rev
    annotation.redo()
    assert session.volume.n_labeled == n and session.volume.labels[5, 20, 20] == 2

    # Undoing a correction restores the annotation that was under it.
    pred = widget.prediction_layer
    pred.data[5, 15:26, 15:26] = 1  # as if predicted; napari only records voxels a stroke changes
    pred.brush_size = 3
    pred.paint((5, 20, 20), 0)  # background correction over the painted class
    assert session.volume.labels[5, 20, 20] == 1
    assert session.volume.source[5, 20, 20] == Source.CORRECTED
    pred.undo()
    assert session.volume.labels[5, 20, 20] == 2 and annotation.data[5, 20, 20] == 1
    assert session.volume.source[5, 20, 20] == Source.PAINTED
    np.testing.assert_array_equal(session.volume.labels, layer_to_annotation(annotation.data))


def test_rolled_axis_order_paints_xz_slice(app, qtbot):
    viewer, widget = app
    start_and_wait_for_session(widget, qtbot)
    stop_and_wait(widget, qtbot)
    session, annotation = widget.session, widget.annotation_layer
    viewer.dims.order = (1, 0, 2)  # display (z, x): an xz slice at fixed y
    viewer.dims.set_current_step(1, 40)
    box = widget.current_view_box()
    assert box == Box((0, 40, 0), (SHAPE[0], 41, SHAPE[2]))
    annotation.brush_size = 20  # physically round: ~20 voxels along x, ~5 along z (4x coarser)
    annotation.paint((10, 40, 30), 1)
    zz, yy, xx = np.nonzero(session.volume.labels)
    assert zz.size > 1
    assert set(yy.tolist()) == {40}
    assert len(set(zz.tolist())) > 1 and len(set(xx.tolist())) > 1
    np.testing.assert_array_equal(session.volume.labels, layer_to_annotation(annotation.data))
    viewer.dims.ndisplay = 3
    assert widget.current_view_box() is None


def test_class_management(app, qtbot):
    _viewer, widget = app
    annotation = widget.annotation_layer
    assert widget.classes.names == ["nucleus", "vesicle"]
    k = widget.class_panel.add()
    assert k == 3 and widget.class_panel.list.count() == 4  # background + 3
    assert 3 in annotation.colormap.color_dict  # class 3 is label 3
    widget.class_panel.list.item(3).setText("membrane")
    assert widget.classes.names == ["nucleus", "vesicle", "membrane"]
    widget.class_panel.list.setCurrentRow(3)
    assert annotation.selected_label == 3
    annotation.data[0, 0, :4] = [255, 1, 2, 3]  # background, nucleus, vesicle, membrane
    start_and_wait_for_session(widget, qtbot)
    assert widget.session.volume.num_classes == 3
    widget.class_panel.add("extra")
    assert widget.session.volume.num_classes == 4
    widget.class_panel.remove(4)  # refused while training
    assert len(widget.classes) == 4
    stop_and_wait(widget, qtbot)
    widget.class_panel.remove(2)  # vesicle: its voxels become unlabeled, membrane moves down
    assert widget.classes.names == ["nucleus", "membrane", "extra"]
    np.testing.assert_array_equal(annotation.data[0, 0, :4], [255, 1, 0, 2])
    assert widget.session is None  # the next Start trains a new model
    start_and_wait_for_session(widget, qtbot)
    assert widget.session.volume.num_classes == 3
    np.testing.assert_array_equal(widget.session.volume.labels, layer_to_annotation(annotation.data))
    stop_and_wait(widget, qtbot)


def test_refuses_2d_and_rgb_images(app):
    viewer, widget = app
    viewer.add_image(np.zeros((32, 32)), name="flat")
    viewer.add_image(np.zeros((8, 32, 32, 3), np.uint8), name="colour", rgb=True)
    for name in ("flat", "colour"):
        widget.data_panel.image_combo.setCurrentIndex(widget.data_panel.image_combo.findText(name))
        assert not widget.data_panel.image_message.isHidden()
        assert ("2D" if name == "flat" else "RGB") in widget.data_panel.image_message.text()
        assert not widget.start()
        assert not widget.training_panel.start_button.isEnabled()


def test_an_image_too_large_for_this_machine_is_refused_when_chosen_not_at_start(app, monkeypatch):
    viewer, widget = app
    monkeypatch.setattr("napari_sparseseg.core.footprint.physical_memory", lambda: 2**20)  # a 1 MiB machine
    viewer.add_image(np.zeros((16, 64, 64), np.float32), name="big")
    widget.data_panel.image_combo.setCurrentIndex(widget.data_panel.image_combo.findText("big"))
    assert not widget.data_panel.image_message.isHidden()
    assert "too large to train on in this window" in widget.data_panel.image_message.text()
    assert not widget.start() and widget.session is None
    assert not widget.training_panel.start_button.isEnabled()


def test_worker_error_is_reported_and_session_stays_usable(app, qtbot, monkeypatch):
    _viewer, widget = app
    errors = []
    monkeypatch.setattr("napari_sparseseg.plugin.widget.show_error", lambda msg: errors.append(msg))
    paint_slice(widget.annotation_layer, 16, ground_truth(widget)[16])
    start_and_wait_for_session(widget, qtbot)
    session = widget.session
    qtbot.waitUntil(lambda: widget.last_step is not None, timeout=60000)

    def boom(*args, **kwargs):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(session.trainer, "train_step", boom)
    # The worker thread marks the run ended before Qt delivers its queued
    # ``errored`` signal to the GUI thread: wait for the message itself.
    qtbot.waitUntil(lambda: bool(errors) and not widget.run.running, timeout=60000)
    assert "simulated failure" in errors[0]
    monkeypatch.undo()
    monkeypatch.setattr("napari_sparseseg.plugin.widget.show_error", lambda msg: errors.append(msg))
    step = session.trainer.step
    assert widget.start()
    qtbot.waitUntil(lambda: session.trainer.step > step + 2, timeout=60000)
    assert widget.session is session
    stop_and_wait(widget, qtbot)


def test_closing_viewer_mid_training_leaves_no_thread(make_napari_viewer, sample_layers, qtbot):
    viewer = make_napari_viewer()
    image_data, image_meta, _ = sample_layers[0]
    viewer.add_image(image_data, **image_meta)
    viewer.add_labels(sample_layers[1][0].copy(), **sample_layers[1][1])
    widget = SparseSegWidget(viewer, config=TEST_CONFIG)
    viewer.window.add_dock_widget(widget)
    paint_slice(widget.annotation_layer, 16, image_meta["metadata"]["ground_truth"][16])
    assert widget.start()
    qtbot.waitUntil(lambda: widget.last_step is not None and widget.last_step.step >= 2, timeout=60000)
    run = widget.run
    viewer.close()
    assert not run.running
    assert run.worker is not None and not run.worker._running
    qtbot.waitUntil(lambda: QThreadPool.globalInstance().activeThreadCount() == 0, timeout=60000)


def test_stroke_coords_reads_napari_atoms():
    from napari.layers import Labels

    layer = Labels(np.zeros((4, 8, 8), np.uint8))
    items = []
    layer.events.paint.connect(lambda e: items.append(e.value))
    layer.brush_size = 3
    layer.paint((1, 4, 4), 2)
    layer.data_setitem((np.array([3, 3]), np.array([0, 1]), np.array([5, 5])), 7)
    s0 = read_paint_item(items[0], layer.data.shape)
    np.testing.assert_array_equal(np.sort(np.ravel_multi_index(s0.coords, layer.data.shape)),
                                  np.flatnonzero(layer.data == 2))
    assert (s0.new == 2).all() and s0.old is not None and (s0.old == 0).all()
    s1 = read_paint_item(items[1], layer.data.shape)
    assert sorted(zip(*[c.tolist() for c in s1.coords])) == [(3, 0, 5), (3, 1, 5)]
    assert (s1.new == 7).all() and s1.old is not None and (s1.old == 0).all()


def test_removing_dock_widget_mid_training_stops_worker(app, qtbot):
    viewer, widget = app
    paint_slice(widget.annotation_layer, 16, ground_truth(widget)[16])
    assert widget.start()
    qtbot.waitUntil(lambda: widget.last_step is not None, timeout=60000)
    viewer.window.remove_dock_widget(widget)  # what the dock's close button does
    assert not widget.run.running
    qtbot.waitUntil(lambda: QThreadPool.globalInstance().activeThreadCount() == 0, timeout=60000)


def test_manifest_sample_and_widget(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-sparseseg", "cells")
    assert [ly.name for ly in viewer.layers] == ["cells", "annotation"]
    image, annotation = viewer.layers
    assert tuple(image.scale) == (2.0, 0.5, 0.5) and tuple(annotation.scale) == (2.0, 0.5, 0.5)
    assert annotation.data.dtype == np.uint8 and annotation.data.max() == 0
    _, widget = viewer.window.add_plugin_dock_widget("napari-sparseseg", "Sparse-slice 3D segmentation")
    assert isinstance(widget, SparseSegWidget)
    assert widget.image_layer is image and widget.annotation_layer is annotation
    widget.close_session()


def test_annotation_to_mask_command():
    from napari.layers import Labels

    from napari_sparseseg.plugin.commands import annotation_to_mask_layer

    layer = Labels(np.array([[[0, 255, 1, 2]]], np.uint8), name="a")  # unlabeled, background, classes 1 and 2
    data, meta, kind = annotation_to_mask_layer(layer)
    np.testing.assert_array_equal(data, [[[0, 0, 1, 2]]])
    assert kind == "labels" and meta["name"] == "a mask"


def test_launch_opens_sample_with_widget(make_napari_viewer):
    from napari_sparseseg.plugin.launch import launch

    viewer, widget = launch(viewer=make_napari_viewer(), run=False)
    assert [ly.name for ly in viewer.layers] == ["cells", "annotation"]
    assert widget.annotation_layer is viewer.layers["annotation"]
    assert viewer.layers.selection.active.mode == "paint"
    widget.close_session()


def test_launch_opens_a_file_through_the_reader_with_its_spacing(make_napari_viewer, tmp_path):
    from napari_sparseseg.plugin.launch import launch

    path = tmp_path / "scan.npz"
    image = np.random.default_rng(0).normal(size=(2, 6, 20, 24)).astype(np.float32)
    np.savez(path, image=image, spacing=np.array([2.0, 0.5, 0.5]))  # a 4D npz has its channels first
    viewer, widget = launch(path, viewer=make_napari_viewer(), run=False)
    images = [ly for ly in viewer.layers if ly._type_string == "image"]
    assert len(images) == 2  # one layer per declared channel
    annotation = viewer.layers["annotation"]
    assert annotation.data.shape == (6, 20, 24)
    np.testing.assert_allclose(annotation.scale, [2.0, 0.5, 0.5])
    widget.close_session()


def test_export_to_nifti_keeps_the_source_affine(app, tmp_path):
    import nibabel as nib

    viewer, widget = app
    affine = np.array([[-0.8, 0, 0, 10.0], [0, -0.8, 0, 20.0], [0, 0, 2.0, -30.0], [0, 0, 0, 1]])
    widget.image_layer.metadata["affine"] = affine
    paint_slice(widget.annotation_layer, 5, ground_truth(widget)[5])
    out = tmp_path / "annotation.nii.gz"
    widget.results_panel.export("annotation", out)
    saved = nib.load(out)
    np.testing.assert_allclose(saved.affine, affine)
    assert (np.asarray(saved.dataobj) > 0).sum() == (ground_truth(widget)[5] > 0).sum()
    from napari_sparseseg.io import read_volume

    widget.image_layer.translate = (3.0, 2.0, 1.0)  # an image that lies elsewhere: a zarr export keeps where
    widget.results_panel.export("annotation", tmp_path / "annotation.zarr")
    assert read_volume(tmp_path / "annotation.zarr").origin == (3.0, 2.0, 1.0)


def test_the_status_names_the_learner_and_the_estimate_per_class():
    from napari_sparseseg.core.box import Box
    from napari_sparseseg.core.estimate import DiceEstimate
    from napari_sparseseg.core.events import Prediction
    from napari_sparseseg.plugin.widget import shown_in_words

    empty = np.zeros((1, 1, 1))
    prediction = Prediction(Box((0, 0, 0), (1, 1, 1)), empty.astype(np.uint8), np.ones((3, 1, 1, 1), np.float32),
                            empty.astype(np.float32), step=0, revision=0, learner="forest",
                            estimate=DiceEstimate(0.91, (0.88, 0.94), (0.93, None)))
    words = shown_in_words(prediction, ["tumour"])
    assert words == ("showing the fast first responder (a pixel classifier): estimated Dice 0.91 (0.88-0.94); "
                     "tumour 0.93")
    assert "estimated" not in shown_in_words(replace(prediction, estimate=None))


def test_labels_all_erased_mid_run_the_status_says_training_waits_not_a_stale_estimate(app, qtbot):
    viewer, widget = app
    gt = ground_truth(widget)
    for z in (8, 16):
        paint_slice(widget.annotation_layer, z, gt[z])
    start_and_wait_for_session(widget, qtbot)
    qtbot.waitUntil(lambda: widget.refreshes.count > 0, timeout=60000)
    for z in (8, 16):  # the user erases every label
        yy, xx = np.indices(gt.shape[1:]).reshape(2, -1)
        widget.annotation_layer.data_setitem((np.full(yy.size, z), yy, xx), 0)
    qtbot.waitUntil(lambda: widget._waiting is not None, timeout=60000)
    widget._update_status()  # the 1 s tick
    status = widget.status_panel.label.text()
    assert "no labeled voxels" in status and "estimated Dice" not in status
    assert "labels wrong" not in widget.status_panel.rate_label.text()
    stop_and_wait(widget, qtbot)
    widget._update_status()
    assert widget.status_panel.label.text().startswith("stopped at step")


def test_an_exported_mask_does_not_cover_the_live_prediction(app):
    """The export is a snapshot: hidden, below the prediction, so the prediction the user watches stays in view."""
    viewer, widget = app
    paint_slice(widget.annotation_layer, 5, ground_truth(widget)[5])
    prediction = widget._ensure_prediction_layer()
    layer = widget.results_panel.export("prediction")
    assert not layer.visible and prediction.visible
    assert viewer.layers.index(layer) < viewer.layers.index(prediction)
    assert viewer.layers.selection.active is widget.annotation_layer  # the user keeps painting where they were


def test_after_stop_the_status_clock_stops_counting(app, qtbot):
    viewer, widget = app
    widget.refreshes.refreshed()  # as if a prediction had been shown
    widget._update_status()
    assert "refreshed" not in widget.status_panel.rate_label.text()  # not running: nothing is refreshing


def test_one_class_is_one_number_on_every_layer_the_user_paints_on(app, qtbot):
    """Class k is label k on the annotation and the prediction layer; painted background is 255 on both."""
    from napari_sparseseg.core.encoding import LAYER_BACKGROUND

    _viewer, widget = app
    start_and_wait_for_session(widget, qtbot)
    stop_and_wait(widget, qtbot)
    session, annotation = widget.session, widget.annotation_layer
    prediction = widget._ensure_prediction_layer()
    widget.class_panel.list.setCurrentRow(2)  # vesicle: class 2
    assert annotation.selected_label == prediction.selected_label == 2
    widget.class_panel.list.setCurrentRow(0)  # background
    assert annotation.selected_label == prediction.selected_label == LAYER_BACKGROUND
    for value in (1, 2, LAYER_BACKGROUND):  # the same colour for the same number on both layers
        np.testing.assert_array_equal(annotation.colormap.map(value), prediction.colormap.map(value))
    annotation.brush_size = 1
    annotation.paint((3, 10, 10), 2)  # vesicle on the annotation layer
    annotation.paint((3, 20, 20), LAYER_BACKGROUND)
    prediction.brush_size = 1
    prediction.paint((3, 30, 30), 1)  # a nucleus correction on the prediction layer ...
    assert annotation.data[3, 30, 30] == 1  # ... is label 1 on the annotation layer too
    prediction.paint((3, 40, 40), LAYER_BACKGROUND)  # background as 255 ...
    prediction.data[3, 50, 50] = 1  # as if predicted: napari records only voxels a stroke changes
    prediction.paint((3, 50, 50), 0)  # ... or erased
    # the session holds annotation encoding: 1 background, k + 1 class k
    assert [int(session.volume.labels[3, y, y]) for y in (10, 20, 30, 40, 50)] == [3, 1, 2, 1, 1]
    assert [int(annotation.data[3, y, y]) for y in (10, 20, 30, 40, 50)] == [2, 255, 1, 255, 255]


def test_a_label_that_is_no_class_is_refused_with_a_word(app, qtbot):
    _viewer, widget = app
    start_and_wait_for_session(widget, qtbot)
    stop_and_wait(widget, qtbot)
    warned = []
    widget.layers.sync._notify = warned.append
    annotation = widget.annotation_layer
    annotation.brush_size = 1
    annotation.paint((3, 10, 10), 7)  # two classes here: 7 is none
    qtbot.waitUntil(lambda: annotation.data[3, 10, 10] == 0, timeout=30000)
    assert widget.session.volume.labels[3, 10, 10] == 0
    assert warned and "classes are 1..2, background 255" in warned[0]


def test_a_class_cannot_take_another_class_name_or_background():
    from napari_sparseseg.plugin.classes import ClassList

    classes = ClassList.from_names(["nucleus", "vesicle"])
    for name in ("vesicle", " Background "):  # the status line and exports name classes: each name one class
        with pytest.raises(ValueError, match="vesicle|background"):
            classes.rename(1, name)
    classes.rename(1, "nucleus")  # its own name again: fine
    classes.rename(2, "vesicles")
    assert classes.names == ["nucleus", "vesicles"]
