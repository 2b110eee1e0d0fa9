"""GUI tests of the widget across images, classes and runs: each image keeps its own layers, a run stopped early
delivers nothing, and what the widget shows belongs to the session it shows it for."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import QThreadPool

from napari_sparseseg.core.annotation import Source
from napari_sparseseg.core.encoding import layer_to_annotation, mask_to_layer
from napari_sparseseg.plugin.widget import SparseSegWidget
from tests.conftest import sphere_volume, tiny_config

pytestmark = pytest.mark.gui

SHAPE = (16, 32, 32)
CONFIG = tiny_config()


def add_volume(viewer, name, *, shape=SHAPE, seed=0, translate=(0, 0, 0), annotation=True):
    """A sphere image ``name`` (its mask in ``metadata["truth"]``) and, when ``annotation``, its empty labels layer
    ``name annotation``."""
    image, mask = sphere_volume(shape, radius=min(shape) / 3, seed=seed)
    layer = viewer.add_image(image, name=name, translate=translate, metadata={"truth": mask})
    labels = viewer.add_labels(np.zeros(shape, np.uint8), name=f"{name} annotation", translate=translate) \
        if annotation else None
    return layer, labels


def make_widget(viewer):
    widget = SparseSegWidget(viewer, config=CONFIG, refresh_seconds=0.5, first_refresh_steps=1)
    viewer.window.add_dock_widget(widget, name="sparseseg")
    return widget


def choose(combo, layer) -> None:
    combo.setCurrentIndex(next(i for i in range(combo.count()) if combo.itemData(i) is layer))


def paint_slices(layer, truth, zs=(4, 8, 12)) -> None:
    """Paint whole z slices of ``truth`` (mask encoding) on ``layer``, one undoable stroke each."""
    for z in zs:
        yy, xx = np.indices(truth[z].shape).reshape(2, -1)
        layer.data_setitem((np.full(yy.size, z), yy, xx), mask_to_layer(truth[z])[yy, xx])


def start_and_wait_for_prediction(widget, qtbot) -> None:
    shown: list[object] = []
    widget.prediction_shown.connect(shown.append)
    assert widget.start()
    qtbot.waitUntil(lambda: widget.session is not None and bool(shown), timeout=120000)


def stop_and_wait(widget, qtbot) -> None:
    """Stop, and wait until the widget has handled the end of the run."""
    finished: list[bool] = []
    widget.run_finished.connect(lambda: finished.append(True))
    was_running = widget.run.running
    widget.stop()
    qtbot.waitUntil(lambda: not widget.run.running and (bool(finished) or not was_running), timeout=60000)
    assert widget.run.wait(5)
    qtbot.waitUntil(lambda: QThreadPool.globalInstance().activeThreadCount() == 0, timeout=60000)


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


def test_another_image_of_the_same_shape_gets_its_own_annotation_and_prediction(viewer, qtbot):
    a, a_labels = add_volume(viewer, "A")
    widget = make_widget(viewer)
    try:
        assert widget.image_layer is a and widget.annotation_layer is a_labels
        paint_slices(a_labels, a.metadata["truth"])
        start_and_wait_for_prediction(widget, qtbot)
        stop_and_wait(widget, qtbot)
        a_prediction = widget.prediction_layer
        a_predicted = a_prediction.data.copy()

        b, b_labels = add_volume(viewer, "B", seed=3, translate=(0, 0, 40))
        assert widget.image_layer is a  # a new layer does not change the choice
        choose(widget.data_panel.image_combo, b)
        assert widget.annotation_layer is b_labels and widget.layers.annotation is b_labels
        assert widget.prediction_layer is None  # A's prediction layer is A's
        paint_slices(b_labels, b.metadata["truth"], zs=(5, 10))
        start_and_wait_for_prediction(widget, qtbot)
        np.testing.assert_array_equal(widget.session.volume.labels, layer_to_annotation(b_labels.data))
        paint_slices(b_labels, b.metadata["truth"], zs=(7,))  # a stroke while B trains reaches B's session
        assert widget.session.volume.labels[7].any()
        b_prediction = widget.prediction_layer
        stop_and_wait(widget, qtbot)
        assert b_prediction is not a_prediction
        assert tuple(b_prediction.translate) == tuple(b.translate)
        np.testing.assert_array_equal(a_prediction.data, a_predicted)  # B's predictions never reached A's layer

        choose(widget.data_panel.image_combo, a)  # back to A: its own layers come back
        assert widget.annotation_layer is a_labels and widget.prediction_layer is a_prediction
        start_and_wait_for_prediction(widget, qtbot)
        choose(widget.data_panel.image_combo, b)  # another image chosen while A trains: A's run ends with it
        qtbot.waitUntil(lambda: not widget.run.running, timeout=60000)
        assert widget.session is None and widget.annotation_layer is b_labels
    finally:
        widget.close_session()


def test_removing_a_class_renumbers_the_layers_of_every_volume(viewer, qtbot):
    a, a_labels = add_volume(viewer, "A")
    b, _ = add_volume(viewer, "B", seed=5, annotation=False)
    widget = make_widget(viewer)
    try:
        choose(widget.data_panel.image_combo, a)
        widget.class_panel.add("second")
        assert len(widget.classes) == 2
        entry = widget.volumes_panel.add(b)
        voxels = (np.array([1, 2, 3]), np.array([5, 5, 5]), np.array([5, 6, 7]))
        for layer in (a_labels, entry.annotation):
            layer.data_setitem(voxels, np.array([1, 2, 2], np.uint8))
        widget.class_panel.remove(1)  # the second class becomes class 1
        for layer in (a_labels, entry.annotation):
            assert layer.data[voxels].tolist() == [0, 1, 1], layer.name
        assert widget.start()
        qtbot.waitUntil(lambda: widget.session is not None and len(widget.session.other_volumes) == 1, timeout=60000)
        assert widget.session.other_volumes[0].volume.labels[voxels].tolist() == [0, 2, 2]  # annotation encoding
        stop_and_wait(widget, qtbot)
    finally:
        widget.close_session()


def gate_the_build(widget, gate: threading.Event | None = None) -> threading.Event:
    """Hold the next run's builder, once it has made the session and its store, until ``gate`` is set or the run is
    asked to stop: what the test does meanwhile happens while the model is being built, however fast this machine
    builds it. Returns an event set when the builder is held."""
    gate, held = gate or threading.Event(), threading.Event()
    wrap, stop = widget.volumes_panel.wrap, widget.run.stop

    def gated_wrap(build):
        inner = wrap(build)

        def gated():
            session = inner()
            held.set()
            assert gate.wait(60)
            return session

        return gated

    def stop_then_open():
        stop()
        gate.set()

    widget.volumes_panel.wrap, widget.run.stop = gated_wrap, stop_then_open
    return held


def autosaving() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "sparseseg-autosave" and t.is_alive()]


def stores() -> list[Path]:
    return sorted((Path(os.environ["NAPARI_SPARSESEG_HOME"]) / "sessions").glob("*"))


def test_removing_the_image_while_the_model_is_built_drops_the_run(viewer, qtbot):
    a, a_labels = add_volume(viewer, "A")
    widget = make_widget(viewer)
    try:
        paint_slices(a_labels, a.metadata["truth"])
        held = gate_the_build(widget)
        finished: list[bool] = []
        widget.run_finished.connect(lambda: finished.append(True))
        assert widget.start()
        qtbot.waitUntil(held.is_set, timeout=60000)
        viewer.layers.remove(a)
        qtbot.waitUntil(lambda: bool(finished), timeout=60000)
        qtbot.wait(50)  # anything the worker yielded is delivered by now
        assert widget.session is None and widget.files.store is None
        assert widget.status_panel.label.text() == "layer 'A' was removed: training stopped"
        qtbot.waitUntil(lambda: not autosaving() and not [s for s in stores() if (s / "lock.json").exists()],
                        timeout=60000)
    finally:
        widget.close_session()


def test_closing_the_widget_while_the_model_is_built_leaves_no_store_open(viewer, qtbot):
    a, a_labels = add_volume(viewer, "A")
    widget = make_widget(viewer)
    paint_slices(a_labels, a.metadata["truth"])
    held = gate_the_build(widget)
    assert widget.start()
    qtbot.waitUntil(held.is_set, timeout=60000)
    assert autosaving()
    assert widget.close_session()
    assert len(stores()) == 1
    # the worker closes the store the build made: its autosave thread ends, then its lock goes
    qtbot.waitUntil(lambda: not autosaving() and not (stores()[0] / "lock.json").exists(), timeout=60000)


def test_an_image_of_another_shape_gets_prediction_and_uncertainty_of_its_shape(viewer, qtbot):
    a, a_labels = add_volume(viewer, "A")
    widget = make_widget(viewer)
    try:
        widget.training_panel.uncertainty_check.setChecked(True)
        paint_slices(a_labels, a.metadata["truth"])
        start_and_wait_for_prediction(widget, qtbot)
        stop_and_wait(widget, qtbot)
        uncertainty = widget.outputs.uncertainty
        assert uncertainty.data.shape == SHAPE

        shape = (12, 24, 24)
        b, b_labels = add_volume(viewer, "B", shape=shape, seed=3, translate=(0, 0, 40))
        c, _ = add_volume(viewer, "C", shape=shape, seed=4, annotation=False)
        choose(widget.data_panel.image_combo, c)  # no labels layer of its shape: New makes one
        assert widget.annotation_layer is None and widget.prediction_layer is None
        assert widget.data_panel.create_annotation_layer() is widget.annotation_layer
        choose(widget.data_panel.image_combo, b)  # its own labels layer is bound (no other shape's prediction)
        assert widget.annotation_layer is b_labels and widget.layers.sync.prediction is None

        paint_slices(b_labels, b.metadata["truth"], zs=(3, 6, 9))
        start_and_wait_for_prediction(widget, qtbot)
        stop_and_wait(widget, qtbot)
        assert widget.prediction_layer.data.shape == shape and widget.layers.sync.prediction is widget.prediction_layer
        assert widget.outputs.uncertainty is uncertainty  # one uncertainty layer, moved over B
        assert uncertainty.data.shape == shape and tuple(uncertainty.translate) == tuple(b.translate)
    finally:
        widget.close_session()


def test_each_session_starts_with_a_clean_slate(viewer, qtbot):
    a, a_labels = add_volume(viewer, "A")
    widget = make_widget(viewer)
    try:
        paint_slices(a_labels, a.metadata["truth"])
        start_and_wait_for_prediction(widget, qtbot)
        qtbot.waitUntil(lambda: widget.guidance_panel.guidance is not None and widget.last_step is not None
                        and bool(widget.status_panel.quality_plot.values), timeout=120000)
        assert widget.results_panel.accept_button.isEnabled()
        stop_and_wait(widget, qtbot)

        widget.training_panel.device_combo.setCurrentText("auto")  # another setting: a new model at Start
        first = widget.session
        start_and_wait_for_prediction(widget, qtbot)
        assert widget.session is not first
        assert widget.results_panel.accept_button.isEnabled()  # the new session's first prediction enables Accept
        stop_and_wait(widget, qtbot)

        b, _ = add_volume(viewer, "B", shape=(12, 24, 24), seed=3)
        choose(widget.data_panel.image_combo, b)  # A's session is dropped: nothing of it is shown for B
        widget._update_status()  # the 1 s timer's redraw
        panel = widget.guidance_panel
        assert widget.session is None and widget.last_step is None and widget.refreshes.count == 0
        assert panel.guidance is None and not panel.go_button.isEnabled() and panel.error_combo.count() == 0
        assert panel.suggestion_label.text() == "suggestions follow the first prediction"
        assert widget.status_panel.quality_plot.values == [] and widget.status_panel.rate_label.text() == ""
        assert widget.training_panel.progress.value() == 0
        assert not widget.results_panel.accept_button.isEnabled()
    finally:
        widget.close_session()


def trained_store(viewer, qtbot) -> Path:
    """The session store of a short run on a sphere ``A`` in ``viewer`` (its widget closed after)."""
    a, a_labels = add_volume(viewer, "A")
    widget = make_widget(viewer)
    try:
        paint_slices(a_labels, a.metadata["truth"])
        start_and_wait_for_prediction(widget, qtbot)
        qtbot.waitUntil(lambda: widget.session.store.has_prediction(), timeout=120000)
        stop_and_wait(widget, qtbot)
        return widget.files.store.path
    finally:
        widget.close_session()


def test_a_store_opened_beside_another_prediction_resumes_with_its_own(make_napari_viewer, qtbot):
    store = trained_store(make_napari_viewer(), qtbot)
    viewer = make_napari_viewer()
    other, other_labels = add_volume(viewer, "other", seed=7)
    widget = make_widget(viewer)
    try:
        paint_slices(other_labels, other.metadata["truth"], zs=(4, 8))
        start_and_wait_for_prediction(widget, qtbot)
        stop_and_wait(widget, qtbot)
        other_prediction = widget.prediction_layer

        added = viewer.open(str(store), plugin="napari-sparseseg")  # File > Open
        image = next(ly for ly in added if ly.metadata.get("class_names") is not None)
        annotation = next(ly for ly in added if ly.metadata.get("sparseseg_role") == "annotation")
        stored = next(ly for ly in added if ly.metadata.get("sparseseg_role") == "prediction")
        assert widget.image_layer is other and widget.prediction_layer is other_prediction
        choose(widget.data_panel.image_combo, image)
        assert widget.annotation_layer is annotation and widget.prediction_layer is stored
        start_and_wait_for_prediction(widget, qtbot)
        assert widget.files.store.path == store and widget.session.trainer.step > 0  # resumed
        assert widget.prediction_layer is stored
        widget.training_panel.edge_check.setChecked(False)
        stored.brush_size = 1
        stored.paint((6, 3, 3), 1)  # a correction on the store's prediction layer reaches its session
        assert widget.session.volume.labels[6, 3, 3] == 2
        stop_and_wait(widget, qtbot)
    finally:
        widget.close_session()


def test_corrections_stay_corrections_in_a_new_model(viewer, qtbot):
    a, a_labels = add_volume(viewer, "A")
    widget = make_widget(viewer)
    try:
        widget.training_panel.edge_check.setChecked(False)
        paint_slices(a_labels, a.metadata["truth"])
        start_and_wait_for_prediction(widget, qtbot)
        prediction = widget.prediction_layer
        prediction.brush_size = 3
        prediction.paint((6, 1, 1), 1)  # far from the sphere: a change whatever has been predicted (napari sends
        assert widget.session.volume.source[6, 1, 1] == Source.CORRECTED  # no event for voxels it leaves as they were)
        stop_and_wait(widget, qtbot)

        first = widget.session
        widget.training_panel.device_combo.setCurrentText("auto")  # another setting: a new model
        assert widget.start()
        qtbot.waitUntil(lambda: widget.session not in (None, first), timeout=60000)
        assert widget.session.volume.source[6, 1, 1] == Source.CORRECTED
        assert widget.session.volume.source[4, 16, 16] == Source.PAINTED
        stop_and_wait(widget, qtbot)

        second, gate = widget.session, threading.Event()
        widget.training_panel.device_combo.setCurrentText("cpu")
        held = gate_the_build(widget, gate)
        assert widget.start()
        qtbot.waitUntil(held.is_set, timeout=60000)
        prediction.paint((10, 1, 30), 1)  # a correction while the new model is built
        gate.set()
        qtbot.waitUntil(lambda: widget.session not in (None, second), timeout=60000)
        source = widget.session.volume.source
        assert source[10, 1, 30] == Source.CORRECTED and source[6, 1, 1] == Source.CORRECTED
        stop_and_wait(widget, qtbot)
    finally:
        widget.close_session()


def test_save_after_open_and_before_start_moves_the_reopened_session_there(make_napari_viewer, qtbot, tmp_path):
    from napari_sparseseg.store import is_session_store

    store = trained_store(make_napari_viewer(), qtbot)
    viewer = make_napari_viewer()
    widget = make_widget(viewer)
    try:
        widget.files.open(store)
        target = widget.files.save(tmp_path / "copy.sparseseg")
        assert str(target) in widget.files.path_label.text()
        assert widget.start()
        qtbot.waitUntil(lambda: widget.session is not None, timeout=60000)
        assert widget.session.trainer.step > 0  # resumed from the opened store
        assert widget.files.store.path.resolve() == target.resolve() and is_session_store(target)
        assert f"autosaving to {target}" in widget.files.path_label.text()
        stop_and_wait(widget, qtbot)
    finally:
        widget.close_session()


def test_a_removed_layer_is_said_after_the_run_ends_and_renamed_layers_show_their_names(viewer, qtbot):
    a, a_labels = add_volume(viewer, "A")
    widget = make_widget(viewer)
    try:
        a.name = "A renamed"
        a_labels.name = "A labels"
        data = widget.data_panel
        assert data.image_combo.currentText() == "A renamed" and data.annotation_combo.currentText() == "A labels"
        assert data.image_combo.currentData() is a and data.annotation_combo.currentData() is a_labels

        paint_slices(a_labels, a.metadata["truth"])
        finished: list[bool] = []
        widget.run_finished.connect(lambda: finished.append(True))
        start_and_wait_for_prediction(widget, qtbot)
        viewer.layers.remove(a_labels)
        qtbot.waitUntil(lambda: bool(finished), timeout=60000)
        assert widget.status_panel.label.text() == "layer 'A labels' was removed: training stopped"
    finally:
        widget.close_session()
    a.name = "A again"  # a closed widget no longer follows the names


def test_a_volume_added_then_chosen_as_the_image_is_segmented_once_from_its_own_labels(viewer, qtbot):
    a, a_labels = add_volume(viewer, "A")
    b, _ = add_volume(viewer, "B", seed=3, annotation=False)
    widget = make_widget(viewer)
    try:
        choose(widget.data_panel.image_combo, a)
        entry = widget.volumes_panel.add(b)  # "learn from it too", its labels painted
        paint_slices(entry.annotation, b.metadata["truth"], zs=(8,))
        choose(widget.data_panel.image_combo, b)  # then chosen as the image to segment
        assert widget.volumes_panel.entries == [] and widget.annotation_layer is entry.annotation
        start_and_wait_for_prediction(widget, qtbot)
        assert widget.session.other_volumes == [] and widget.session.volume.labels[8].any()
        stop_and_wait(widget, qtbot)
    finally:
        widget.close_session()


def test_exports_name_their_layer_and_a_saved_model_names_its_channels(viewer, qtbot, tmp_path, monkeypatch):
    from qtpy.QtCore import Qt

    from napari_sparseseg.core.checkpoint import channel_names, read_model
    from napari_sparseseg.plugin import results_panel

    a, a_labels = add_volume(viewer, "A")
    second = viewer.add_image(a.data * 0.5 + 0.1, name="A channel 2")
    widget = make_widget(viewer)

    def tick(layer, on: bool) -> None:
        box = widget.data_panel.channel_list
        item = next(box.item(i) for i in range(box.count()) if box.item(i).data(Qt.ItemDataRole.UserRole) is layer)
        item.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)

    try:
        choose(widget.data_panel.image_combo, a)
        tick(second, True)
        assert widget.data_panel.channel_layers == [second]
        paint_slices(a_labels, a.metadata["truth"])
        start_and_wait_for_prediction(widget, qtbot)
        qtbot.waitUntil(lambda: widget.last_step is not None, timeout=60000)  # the net trained a step
        stop_and_wait(widget, qtbot)
        path = widget.models.save(tmp_path / "m.pt")  # the channels of the session's key
        assert list(channel_names(read_model(path))) == ["A", "A channel 2"]
        said: list[str] = []
        monkeypatch.setattr(results_panel, "show_info", said.append)
        widget.results_panel.export("prediction")
        again = widget.results_panel.export("prediction")  # napari renames the second layer
        assert again.name in said[-1] and again in viewer.layers
    finally:
        widget.close_session()


def test_removing_a_class_renumbers_an_image_painted_but_never_trained_on(make_napari_viewer):
    viewer = make_napari_viewer()
    cells, cells_annotation = add_volume(viewer, "cells")
    other, _ = add_volume(viewer, "other", seed=1)
    widget = make_widget(viewer)
    try:
        choose(widget.data_panel.image_combo, cells)
        assert widget.annotation_layer is cells_annotation  # picked for it, never chosen by the user
        widget.class_panel.add("vesicle")
        widget.class_panel.add("membrane")
        for value, z in ((1, 2), (2, 3), (3, 4)):
            cells_annotation.data_setitem((np.full(3, z), np.arange(3), np.full(3, z)), value)
        choose(widget.data_panel.image_combo, other)
        widget.class_panel.remove(2)  # the second class, on another image's layer too
        assert sorted(np.unique(cells_annotation.data)) == [0, 1, 2]  # membrane is 2 now; before: 3, no class
        assert not (cells_annotation.data[3] > 0).any()  # the removed class's strokes are gone
        choose(widget.data_panel.image_combo, cells)
        assert widget.annotation_layer is cells_annotation  # and it comes back with its image

    finally:
        widget.close_session()


def test_a_files_ground_truth_is_offered_but_never_picked_to_paint_on(make_napari_viewer, tmp_path):
    image, mask = sphere_volume(SHAPE, radius=8)
    np.savez(tmp_path / "scan.npz", image=image, labels=mask, spacing=np.ones(3))
    viewer = make_napari_viewer()
    layers = viewer.open(str(tmp_path / "scan.npz"), plugin="napari-sparseseg")
    truth = next(ly for ly in layers if type(ly).__name__ == "Labels")
    widget = make_widget(viewer)
    try:
        choose(widget.data_panel.image_combo, layers[0])
        combo = widget.data_panel.annotation_combo
        assert any(combo.itemData(i) is truth for i in range(combo.count()))  # the user may still choose it
        assert widget.annotation_layer is not truth  # before: picked, its background trained as unlabeled
    finally:
        widget.close_session()


def test_choosing_another_image_says_where_the_session_before_is_kept(make_napari_viewer, qtbot, monkeypatch):
    viewer = make_napari_viewer()
    a, a_labels = add_volume(viewer, "A")
    b, _ = add_volume(viewer, "B", seed=1)
    widget = make_widget(viewer)
    notes = []
    monkeypatch.setattr("napari_sparseseg.plugin.layer_choice.show_info", notes.append)
    try:
        choose(widget.data_panel.image_combo, a)
        paint_slices(a_labels, a.metadata["truth"])
        start_and_wait_for_prediction(widget, qtbot)
        stop_and_wait(widget, qtbot)
        store = widget.files.store.path
        choose(widget.data_panel.image_combo, b)  # before: the trained session went without a word
        assert widget.session is None and any(f"kept in {store}: Open session" in n for n in notes)
        assert "autosaving" not in widget.files.path_label.text()
    finally:
        widget.close_session()
