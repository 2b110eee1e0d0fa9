"""GUI tests of session stores in napari: the reader, Open/Save in the widget, autosave, resumed training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr
from napari.errors import MultipleReaderError
from napari.settings import get_settings
from qtpy.QtCore import QThreadPool

from napari_sparseseg.core.annotation import Source
from napari_sparseseg.core.box import Box
from napari_sparseseg.core.config import ModelConfig, SessionConfig, TrainConfig
from napari_sparseseg.core.encoding import annotation_to_layer, mask_to_annotation, mask_to_layer
from napari_sparseseg.core.session import SegmentationSession
from napari_sparseseg.plugin.sample import make_sample_data
from napari_sparseseg.plugin.session_reader import (
    STORE_META,
    STORE_READER_PATTERN,
    get_reader,
    prefer_this_reader_for_stores,
    read_session,
    store_layers,
)
from napari_sparseseg.plugin.widget import SparseSegWidget
from napari_sparseseg.store import SessionStore

pytestmark = pytest.mark.gui

SHAPE = (16, 48, 48)
CONFIG = SessionConfig(model=ModelConfig(base_channels=4, depth=2),
                       train=TrainConfig(patch_voxels=8 * 32 * 32, augment=False), device="cpu")


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_SPARSESEG_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def sample():
    return make_sample_data(SHAPE)


def core_store(path, sample, steps=3):
    """A store written by the core API: two painted slices, a correction, a prediction, a checkpoint."""
    image, meta, _ = sample[0]
    gt = meta["metadata"]["ground_truth"]
    session = SegmentationSession(image, num_classes=2, spacing=meta["scale"], config=CONFIG)
    for z in (4, 11):
        session.add_labels((z, slice(None), slice(None)), mask_to_annotation(gt[z]))
    session.add_correction((8, slice(0, 8), slice(0, 8)), 1)
    store = SessionStore.create(path, session, class_names=["nucleus", "vesicle"],
                                colors=[(1, 0, 0, 1), (0, 1, 0, 1)])
    for event in session.train(max_steps=steps):
        store.record_step(event)
    store.save_checkpoint(session.trainer)
    store.record_prediction(session.predict(Box((0, 0, 0), (8, 48, 48))))
    store.close()
    return session


def make_widget(viewer):
    widget = SparseSegWidget(viewer, config=CONFIG, refresh_seconds=1.0, first_refresh_steps=2)
    viewer.window.add_dock_widget(widget, name="sparseseg")
    return widget

def sample_widget_with_a_slice(make_napari_viewer, sample):
    """A viewer with the sample and its annotation layer, the docked widget, and z slice 5 painted."""
    viewer = make_napari_viewer()
    viewer.add_image(sample[0][0], **sample[0][1])
    viewer.add_labels(sample[1][0].copy(), **sample[1][1])
    widget = make_widget(viewer)
    gt = sample[0][1]["metadata"]["ground_truth"]
    yy, xx = np.indices(SHAPE[1:]).reshape(2, -1)
    widget.annotation_layer.data_setitem((np.full(yy.size, 5), yy, xx), mask_to_layer(gt[5])[yy, xx])
    return viewer, widget



def stop_and_wait(widget, qtbot):
    """Stop and wait until the widget has handled the end of the run (its checkpoint included): the worker marks
    the run ended before Qt delivers the queued ``finished`` signal."""
    finished: list[bool] = []
    widget.run_finished.connect(lambda: finished.append(True))  # on the GUI thread, as the signal's handler
    was_running = widget.run.running
    widget.stop()
    qtbot.waitUntil(lambda: not widget.run.running and (bool(finished) or not was_running), timeout=60000)
    assert widget.run.wait(5)
    qtbot.waitUntil(lambda: QThreadPool.globalInstance().activeThreadCount() == 0, timeout=60000)


def test_reader_gives_the_layers_of_a_store_written_by_the_core(make_napari_viewer, sample, tmp_path,
                                                                  monkeypatch):
    path = tmp_path / "s.zarr"
    session = core_store(path, sample)
    assert get_reader(str(path)) is read_session
    assert get_reader(str(tmp_path)) is None and get_reader([str(path), str(path)]) is None
    (tmp_path / "broken.zarr").mkdir()
    (tmp_path / "broken.zarr" / "zarr.json").write_text('{"attributes": {"napari_sparseseg_session": {}}}')
    warnings = []
    monkeypatch.setattr("napari.utils.notifications.show_warning", warnings.append)
    assert read_session(str(tmp_path / "broken.zarr")) is None  # a reader returns None, never raises
    assert "cannot open the session store" in warnings[-1]  # and says why (napari alone: "no data")
    import shutil

    import zarr

    shutil.copytree(path, tmp_path / "flipped.zarr")
    zarr.open_group(str(tmp_path / "flipped.zarr"), mode="r+").attrs["spacing"] = [-2.0, 1.0, 1.0]
    assert read_session(str(tmp_path / "flipped.zarr")) is None and "spacing is invalid" in warnings[-1]

    viewer = make_napari_viewer()
    layers = viewer.open(str(path), plugin="napari-sparseseg")
    image, annotation, prediction = layers
    assert image.data.shape == SHAPE and tuple(image.scale) == tuple(session.volume.spacing)
    np.testing.assert_array_equal(annotation.data, annotation_to_layer(session.volume.labels))
    assert prediction.metadata["sparseseg_role"] == "prediction" and prediction.data.max() >= 1
    labels = zarr.open_array(str(path / "labels"), mode="r+")
    labels[2, :4, :4] = 3  # a correction to the second class after the last prediction was stored
    [prediction] = [ly for ly in viewer.open(str(path), plugin="napari-sparseseg") if ly.name.startswith("pred")]
    assert (prediction.data[2, :4, :4] == 2).all()  # as it was on screen: labels over the stored prediction
    assert all(ly.metadata[STORE_META] == str(path.resolve()) for ly in layers)
    assert image.metadata["class_names"] == ("nucleus", "vesicle")

    # Named as the widget names stores, a store opens with this plugin when napari picks the reader (File > Open,
    # ``plugin=None``), once the widget has recorded napari's reader preference for such folders.
    named = tmp_path / "scan.sparseseg"
    core_store(named, sample)
    with pytest.raises(MultipleReaderError):
        viewer.open(str(named), plugin=None)  # every folder reader accepts every folder: napari asks
    make_widget(viewer).close_session()
    assert get_settings().plugins.extension2reader[STORE_READER_PATTERN] == "napari-sparseseg"
    opened = viewer.open(str(named), plugin=None)
    assert [ly.metadata.get(STORE_META) for ly in opened] == [str(named.resolve())] * 3
    get_settings().plugins.extension2reader = {STORE_READER_PATTERN: "napari"}
    assert not prefer_this_reader_for_stores()
    assert get_settings().plugins.extension2reader[STORE_READER_PATTERN] == "napari"


def test_open_session_restores_layers_and_start_resumes_training_from_the_checkpoint(make_napari_viewer, sample,
                                                                                      tmp_path, qtbot):
    path = tmp_path / "s.zarr"
    original = core_store(path, sample, steps=3)
    viewer = make_napari_viewer()
    widget = make_widget(viewer)
    try:
        layers = widget.files.open(path)
        assert len(layers) == 3
        assert widget.image_layer is layers[0] and widget.annotation_layer is layers[1]
        assert widget.prediction_layer is layers[2]
        assert widget.classes.names == ["nucleus", "vesicle"]
        assert widget.classes.classes[0].color == (1.0, 0.0, 0.0, 1.0)
        assert widget.start()
        qtbot.waitUntil(lambda: widget.session is not None, timeout=60000)
        session = widget.session
        assert session.store is not None and session.store.path == path.resolve()
        assert session.trainer.step >= 3  # resumed at the checkpoint's step
        assert (session.volume.source == Source.CORRECTED).sum() == 64  # corrections keep their weight
        np.testing.assert_array_equal(session.volume.labels, original.volume.labels)
        qtbot.waitUntil(lambda: widget.last_step is not None and widget.last_step.step >= 5, timeout=60000)
        assert widget.last_step.step > 3
        assert str(path.resolve()) in widget.files.path_label.text()  # the user sees where it autosaves
        # the once-a-second redraw then says which learner is shown (or the step before the first refresh)
        qtbot.waitUntil(lambda: widget.status_panel.label.text().startswith(("showing", "step")), timeout=10000)
        stop_and_wait(widget, qtbot)
        index = session.store.checkpoint_index()
        assert index["latest"]["step"] == session.trainer.step  # a checkpoint on Stop
    finally:
        widget.close_session()


def test_autosave_by_default_then_save_and_reopen_round_trip(make_napari_viewer, sample, tmp_path, qtbot):
    viewer = make_napari_viewer()
    image_data, image_meta, _ = sample[0]
    ann_data, ann_meta, _ = sample[1]
    viewer.add_image(image_data, **image_meta)
    viewer.add_labels(ann_data.copy(), **ann_meta)
    widget = make_widget(viewer)
    gt = image_meta["metadata"]["ground_truth"]
    annotation = widget.annotation_layer
    yy, xx = np.indices(SHAPE[1:]).reshape(2, -1)
    annotation.data_setitem((np.full(yy.size, 5), yy, xx), mask_to_layer(gt[5])[yy, xx])
    try:
        assert widget.start()
        qtbot.waitUntil(lambda: widget.session is not None and widget.files.store is not None, timeout=60000)
        store = widget.files.store
        assert store.path.parent == tmp_path / "home" / "sessions" and store.autosaving
        assert store.path.suffix == ".sparseseg"  # the name no other napari reader claims
        assert str(store.path) in widget.files.path_label.text()
        # A stroke while training reaches the store's labels, by the autosave (its latency: benchmarks/durability.py).
        annotation.data_setitem((np.full(yy.size, 10), yy, xx), mask_to_layer(gt[10])[yy, xx])
        labels = zarr.open_array(str(store.path / "labels"), mode="r")
        qtbot.waitUntil(lambda: np.array_equal(labels[10], mask_to_annotation(gt[10])), timeout=30000)
        qtbot.waitUntil(lambda: widget.last_step is not None and widget.last_step.step >= 3, timeout=60000)

        widget.class_panel.rename(1, "nuclei")  # while training: kept in the store at once, not at the checkpoint
        assert zarr.open_group(str(store.path), mode="r").attrs["class_names"][0] == "nuclei"
        mine = widget.files.save(tmp_path / "mine")  # while training: takes over autosave
        assert mine == tmp_path / "mine.sparseseg" and widget.files.store.path == mine and not store.autosaving
        stop_and_wait(widget, qtbot)
        step = widget.session.trainer.step
        assert json.loads((mine / "checkpoints" / "index.json").read_text())["latest"]["step"] == step
        expected = np.asarray(annotation.data).copy()
    finally:
        widget.close_session()
    assert not (mine / "lock.json").exists()  # a closed window leaves its store free to open anywhere

    viewer2 = make_napari_viewer()
    widget2 = make_widget(viewer2)
    try:
        widget2.files.open(mine)
        np.testing.assert_array_equal(widget2.annotation_layer.data, expected)
        assert widget2.image_layer.name == image_meta["name"]  # named after the image, not the store's timestamp
        # the stored prediction is shown and acceptable
        assert widget2.prediction_layer is not None and widget2.results_panel.accept_button.isEnabled()
        assert "Start resumes training" in widget2.status_panel.label.text()
        widget2.training_panel.weight_spin.setValue(5.0)  # set before resuming: the weight shown is the one used
        assert widget2.start()
        qtbot.waitUntil(lambda: widget2.session is not None, timeout=60000)
        assert widget2.session.config.train.correction_weight == 5.0
        # Resumed from the checkpoint, not from step 0: the first step after the stored ones is the next one.
        history = widget2.session.store.history
        qtbot.waitUntil(lambda: len(history()) > step, timeout=60000)
        assert [r["step"] for r in history()[:step + 1]] == list(range(1, step + 2))
        stop_and_wait(widget2, qtbot)
    finally:
        widget2.close_session()


@pytest.mark.parametrize("how", ["viewer closes", "annotation layer removed"])
def test_closing_the_viewer_or_removing_a_layer_mid_training_keeps_every_step(make_napari_viewer, sample, qtbot,
                                                                               how):
    viewer = make_napari_viewer()
    image_data, image_meta, _ = sample[0]
    viewer.add_image(image_data, **image_meta)
    viewer.add_labels(sample[1][0].copy(), **sample[1][1])
    widget = make_widget(viewer)
    gt = image_meta["metadata"]["ground_truth"]
    yy, xx = np.indices(SHAPE[1:]).reshape(2, -1)
    widget.annotation_layer.data_setitem((np.full(yy.size, 5), yy, xx), mask_to_layer(gt[5])[yy, xx])
    try:
        assert widget.start()
        qtbot.waitUntil(lambda: widget.session is not None and widget.files.store is not None, timeout=60000)
        session, store = widget.session, widget.files.store
        qtbot.waitUntil(lambda: session.trainer.step >= 3, timeout=60000)
        if how == "viewer closes":
            viewer.close()
        else:
            viewer.layers.remove(widget.annotation_layer)
        assert not widget.run.running
        latest = json.loads((store.path / "checkpoints" / "index.json").read_text())["latest"]
        assert latest["step"] == session.trainer.step  # nothing trained since the last checkpoint is lost
    finally:
        widget.close_session()


def test_opening_a_store_while_working_on_another_image_keeps_that_images_classes(make_napari_viewer, sample,
                                                                                   tmp_path):
    path = tmp_path / "old.sparseseg"
    core_store(path, sample)  # classes nucleus, vesicle
    viewer = make_napari_viewer()
    mine = viewer.add_image(np.random.default_rng(0).random(SHAPE).astype(np.float32), name="mine")
    annotation = viewer.add_labels(np.zeros(SHAPE, np.uint8), name="mine annotation")
    widget = SparseSegWidget(viewer, config=CONFIG)
    viewer.window.add_dock_widget(widget, name="sparseseg")
    try:
        for name in ("a", "b", "c"):
            widget.class_panel.add(name)
        annotation.data_setitem((np.full(4, 3), np.arange(4), np.full(4, 3)), 4)  # the fourth class, painted
        viewer.open(str(path), plugin="napari-sparseseg")  # File > Open, to look at it
        assert widget.image_layer is mine and len(widget.classes) == 4  # before: the store's two replaced them
        store_image = next(ly for ly in viewer.layers if ly.metadata.get(STORE_META) and ly.ndim == 3
                           and type(ly).__name__ == "Image")
        combo = widget.data_panel.image_combo
        combo.setCurrentIndex(next(i for i in range(combo.count()) if combo.itemData(i) is store_image))
        assert widget.classes.names == ["nucleus", "vesicle"]  # the store's, with its image chosen
    finally:
        widget.close_session()


def test_a_class_removed_after_opening_a_store_starts_a_new_model_in_a_new_store(make_napari_viewer, sample,
                                                                                  tmp_path, qtbot):
    path = tmp_path / "s.zarr"
    core_store(path, sample, steps=3)  # two classes, a model of three outputs
    viewer = make_napari_viewer()
    widget = make_widget(viewer)
    try:
        widget.files.open(path)
        widget.class_panel.remove(2)
        assert widget.start()
        qtbot.waitUntil(lambda: widget.session is not None, timeout=60000)
        session = widget.session
        assert session.num_classes == 1 and session.trainer.step == 0  # not the old model of two classes
        assert session.store is not None and session.store.path != path.resolve()
        stop_and_wait(widget, qtbot)
    finally:
        widget.close_session()
    assert SessionStore.open(path)[1].num_classes == 2  # the store opened is left as it was


def test_a_session_opened_beside_the_image_it_was_made_from_resumes(make_napari_viewer, sample, tmp_path, qtbot):
    """The sample made in code is open (as `napari-sparseseg gui` opens it) when its saved session is opened: the two
    images share a name, not a file, and the sample is no channel of the stored image."""
    path = tmp_path / "s.sparseseg"
    core_store(path, sample, steps=3)
    viewer = make_napari_viewer()
    name = store_layers(path)[0][1]["name"]
    viewer.add_image(sample[0][0], name=name, scale=sample[0][1]["scale"])
    widget = make_widget(viewer)
    try:
        widget.files.open(path)
        assert widget.data_panel.channel_layers == []  # before: the sample ticked as a second channel
        assert widget.start()
        qtbot.waitUntil(lambda: widget.session is not None, timeout=60000)
        assert widget.session.store.path == path.resolve() and widget.session.trainer.step >= 3  # resumed
        stop_and_wait(widget, qtbot)
    finally:
        widget.close_session()


def test_an_autosave_that_fails_is_said_at_once_and_when_it_works_again(make_napari_viewer, sample, qtbot,
                                                                         monkeypatch):
    viewer, widget = sample_widget_with_a_slice(make_napari_viewer, sample)
    errors = []
    monkeypatch.setattr("napari.utils.notifications.show_error", errors.append)
    try:
        assert widget.start()
        qtbot.waitUntil(lambda: widget.files.store is not None, timeout=60000)
        store = widget.files.store

        def disk_full():
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(store, "flush", disk_full)  # the autosave thread's next flushes fail
        qtbot.waitUntil(lambda: store.last_error is not None, timeout=30000)
        widget._update_status()  # the 1 s tick
        assert "No space left on device" in errors[-1] and "autosave failing" in widget.files.path_label.text()
        widget._update_status()
        assert len(errors) == 1  # said once, not every second
        monkeypatch.undo()  # space again
        qtbot.waitUntil(lambda: store.last_error is None, timeout=30000)
        widget._update_status()
        assert "(again)" in widget.files.path_label.text()
        stop_and_wait(widget, qtbot)
    finally:
        widget.close_session()


def test_a_home_where_no_store_can_be_made_trains_all_the_same_and_says_so(make_napari_viewer, sample, qtbot,
                                                                           monkeypatch, tmp_path):
    (tmp_path / "a file").write_text("not a folder")
    monkeypatch.setenv("NAPARI_SPARSESEG_HOME", str(tmp_path / "a file"))  # the sessions folder cannot be made
    warnings = []
    monkeypatch.setattr("napari.utils.notifications.show_warning", warnings.append)
    viewer, widget = sample_widget_with_a_slice(make_napari_viewer, sample)
    try:
        assert widget.start()
        qtbot.waitUntil(lambda: widget.last_step is not None, timeout=60000)  # before: training stopped at once
        assert widget.files.store is None and "Save session" in widget.files.path_label.text()
        assert any("not saved" in w for w in warnings)
        stop_and_wait(widget, qtbot)
    finally:
        widget.close_session()


def test_a_new_session_after_a_class_removal_says_the_store_chosen_keeps_the_one_before(make_napari_viewer, sample,
                                                                                         qtbot, monkeypatch, tmp_path):
    viewer, widget = sample_widget_with_a_slice(make_napari_viewer, sample)
    notes = []
    monkeypatch.setattr("napari.utils.notifications.show_info", notes.append)
    try:
        chosen = widget.files.save(tmp_path / "mine")
        assert widget.start()
        qtbot.waitUntil(lambda: widget.files.store is not None, timeout=60000)
        stop_and_wait(widget, qtbot)
        widget.class_panel.remove(2)
        assert widget.start()
        qtbot.waitUntil(lambda: widget.files.store is not None, timeout=60000)
        assert widget.files.store.path != chosen and any(f"{chosen} keeps the one before" in n for n in notes)
        assert len(zarr.open_group(str(chosen), mode="r").attrs["class_names"]) == 2  # its classes, as they were
        stop_and_wait(widget, qtbot)
    finally:
        widget.close_session()


def test_strokes_painted_after_opening_a_session_and_never_started_are_kept_when_the_window_closes(
        make_napari_viewer, sample, tmp_path):
    path = tmp_path / "s.sparseseg"
    core_store(path, sample, steps=3)
    viewer = make_napari_viewer()
    widget = make_widget(viewer)
    gt = sample[0][1]["metadata"]["ground_truth"]
    yy, xx = np.indices(SHAPE[1:]).reshape(2, -1)
    try:
        widget.files.open(path)
        widget.annotation_layer.data_setitem((np.full(yy.size, 13), yy, xx), mask_to_layer(gt[13])[yy, xx])
    finally:
        widget.close_session()  # no Start: before, these strokes were never written anywhere
    store, session = SessionStore.open(path)
    try:
        np.testing.assert_array_equal(session.volume.labels[13], mask_to_annotation(gt[13]))
        assert (session.volume.source[8, :8, :8] == Source.CORRECTED).all()  # what was stored stays as it was
    finally:
        store.close()


def test_a_reopened_store_lies_where_its_image_lay_and_a_nifti_mask_saved_from_it_overlays_the_scan(
        make_napari_viewer, sample, tmp_path, monkeypatch):
    import nibabel as nib
    import zarr

    from napari_sparseseg.plugin.layers import layer_geometry

    image, meta, _ = sample[0]
    session = SegmentationSession(image, num_classes=2, spacing=meta["scale"], config=CONFIG)
    session.add_labels((4, slice(None), slice(None)), mask_to_annotation(meta["metadata"]["ground_truth"][4]))
    scan = np.diag([-0.5, -0.5, 2.0, 1.0])  # a CT stored flipped in x and y, moved
    scan[:3, 3] = (170.0, 120.0, -300.0)
    viewer = make_napari_viewer()
    layer = viewer.add_image(image, scale=meta["scale"], translate=(4.0, 2.0, 1.0), metadata={"affine": scan})
    SessionStore.create(tmp_path / "s.sparseseg", session, **layer_geometry(layer)).close()
    image_layer, annotation, *_ = viewer.open(str(tmp_path / "s.sparseseg"), plugin="napari-sparseseg")
    assert tuple(image_layer.translate) == tuple(annotation.translate) == (4.0, 2.0, 1.0)
    np.testing.assert_array_equal(annotation.metadata["affine"], scan)
    viewer.layers.selection = {annotation}
    viewer.layers.save(str(tmp_path / "mask.nii.gz"), selected=True, plugin="napari-sparseseg")
    np.testing.assert_allclose(nib.load(tmp_path / "mask.nii.gz").affine, scan)  # on the scan, not diag(spacing)
    warnings = []
    monkeypatch.setattr("napari.utils.notifications.show_warning", warnings.append)
    zarr.open_group(str(tmp_path / "s.sparseseg"), mode="r+").attrs["affine"] = [[1.0, 0.0], [0.0, 1.0]]
    assert read_session(str(tmp_path / "s.sparseseg")) is None and "affine" in warnings[-1]  # untrusted: checked
