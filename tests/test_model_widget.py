"""GUI tests of saved models in napari: Save model from the widget, Apply model to another image layer."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sparseseg.core.checkpoint import read_model, save_model
from napari_sparseseg.core.config import ModelConfig, SessionConfig, TrainConfig
from napari_sparseseg.core.encoding import mask_to_annotation
from napari_sparseseg.core.session import SegmentationSession
from napari_sparseseg.plugin.sample import make_sample_data
from napari_sparseseg.plugin.widget import SparseSegWidget

pytestmark = pytest.mark.gui

SHAPE = (16, 48, 48)
CONFIG = SessionConfig(model=ModelConfig(base_channels=4, depth=2),
                       train=TrainConfig(patch_voxels=8 * 32 * 32, augment=False), device="cpu")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model trained a few steps on two painted slices of the sample, saved to disk."""
    image, meta, _ = make_sample_data(SHAPE)[0]
    gt = meta["metadata"]["ground_truth"]
    session = SegmentationSession(image, num_classes=2, spacing=meta["scale"], config=CONFIG)
    for z in (4, 11):
        session.add_labels((z, slice(None), slice(None)), mask_to_annotation(gt[z]))
    list(session.train(max_steps=5))
    path = save_model(session.trainer, tmp_path_factory.mktemp("model") / "cells.pt")
    return session, path


def make_widget(viewer):
    widget = SparseSegWidget(viewer, config=CONFIG)
    viewer.window.add_dock_widget(widget, name="sparseseg")
    return widget


def test_apply_model_adds_the_mask_of_another_layer_over_it(make_napari_viewer, qtbot, trained):
    session, path = trained
    viewer = make_napari_viewer()
    widget = make_widget(viewer)
    other, meta, _ = make_sample_data(SHAPE, seed=3)[0]  # the next volume
    layer = viewer.add_image(other, name="next volume", scale=meta["scale"], translate=(0, 5, 5))
    worker = widget.models.apply(path, layer)
    assert not widget.models.apply_all_button.isEnabled()  # one prediction run at a time
    qtbot.waitUntil(lambda: "next volume (cells)" in viewer.layers, timeout=60000)
    out = viewer.layers["next volume (cells)"]
    assert out.data.shape == other.shape and out.data.dtype == np.uint8
    assert set(np.unique(out.data)) <= {0, 1, 2}
    if len(widget.classes) < 2:  # a class the Classes box does not name is still shown
        assert out.colormap.map(np.array([2]))[0][3] > 0
    assert tuple(out.scale) == tuple(layer.scale) and tuple(out.translate) == tuple(layer.translate)
    # Same weights, same image, same spacing: the widget's result is the core's.
    expected = SegmentationSession.from_model(other, path, spacing=meta["scale"], device="cpu").segment()
    np.testing.assert_array_equal(out.data, expected)
    qtbot.waitUntil(lambda: widget.models.apply_button.isEnabled(), timeout=10000)
    assert worker is widget.models.worker


def test_apply_model_refuses_an_image_with_other_channels(make_napari_viewer, qtbot, trained, monkeypatch):
    _, path = trained
    viewer = make_napari_viewer()
    widget = make_widget(viewer)
    errors = []
    monkeypatch.setattr("napari_sparseseg.plugin.models.show_error", errors.append)
    two_channel = np.random.default_rng(0).random((2,) + SHAPE).astype(np.float32)
    layer = viewer.add_image(two_channel, name="two channels", channel_axis=None)
    n_layers = len(viewer.layers)
    widget.models.apply(path, layer)
    qtbot.waitUntil(lambda: bool(errors), timeout=60000)
    assert "image channel" in errors[0] and len(viewer.layers) == n_layers
    qtbot.waitUntil(lambda: widget.models.apply_button.isEnabled(), timeout=10000)


def test_save_model_needs_a_trained_session_then_writes_a_loadable_file(make_napari_viewer, trained, tmp_path):
    session, _ = trained
    viewer = make_napari_viewer()
    widget = make_widget(viewer)
    with pytest.raises(ValueError, match="no trained model"):
        widget.models.save(tmp_path / "m.pt")
    widget.session = session  # as after Start
    path = widget.models.save(tmp_path / "m.pt")
    payload = read_model(path)
    assert payload["num_classes"] == 2 and payload["state"]["step"] == session.trainer.step


def test_apply_to_all_images_adds_a_mask_per_volume_and_skips_what_it_cannot_predict(
        make_napari_viewer, qtbot, trained, monkeypatch):
    _, path = trained
    viewer = make_napari_viewer()
    widget = make_widget(viewer)
    errors, infos = [], []
    monkeypatch.setattr("napari_sparseseg.plugin.models.show_error", errors.append)
    monkeypatch.setattr("napari_sparseseg.plugin.models.show_info", infos.append)
    with pytest.raises(ValueError, match="no 3D image layer"):
        widget.models.apply_all(path)
    volumes = []
    for seed in (3, 4):
        image, meta, _ = make_sample_data(SHAPE, seed=seed)[0]
        volumes.append(viewer.add_image(image, name=f"embryo {seed}", scale=meta["scale"]))
    viewer.add_image(np.random.default_rng(0).random((2,) + SHAPE).astype(np.float32), name="two channels",
                     channel_axis=None)
    viewer.add_image(np.zeros((48, 48), np.float32), name="a 2D image")  # not a volume: not offered
    widget.models.apply_all(path)
    assert not widget.models.apply_all_button.isEnabled()  # one run at a time
    qtbot.waitUntil(lambda: widget.models.apply_all_button.isEnabled(), timeout=120000)
    for layer in volumes:
        mask = viewer.layers[f"{layer.name} (cells)"].data
        assert mask.shape == SHAPE and set(np.unique(mask)) <= {0, 1, 2}
    assert "two channels (cells)" not in viewer.layers and "a 2D image (cells)" not in viewer.layers
    assert len(errors) == 1 and "two channels" in errors[0] and "channel" in errors[0]
    assert "applied to 2 of 3 images; skipped: two channels" in infos[-1]


def test_a_model_of_two_channels_is_applied_to_a_4d_layer_and_its_mask_lies_over_the_volume(
        make_napari_viewer, qtbot, monkeypatch, tmp_path):
    image, meta, _ = make_sample_data(SHAPE)[0]
    gt = meta["metadata"]["ground_truth"]
    two = np.stack([image, image[:, ::-1]])  # (c, z, y, x)
    session = SegmentationSession(two, num_classes=2, spacing=meta["scale"], channel_axis=0, config=CONFIG)
    session.add_labels((8, slice(None), slice(None)), mask_to_annotation(gt[8]))
    list(session.train(max_steps=2))
    path = save_model(session.trainer, tmp_path / "two.pt")
    viewer = make_napari_viewer()
    widget = make_widget(viewer)
    infos = []
    monkeypatch.setattr("napari_sparseseg.plugin.models.show_info", infos.append)
    layer = viewer.add_image(two, name="stack", scale=(1.0,) + tuple(meta["scale"]), translate=(0, 3, 4, 5))
    widget.models.apply_all(path)
    qtbot.waitUntil(lambda: widget.models.apply_all_button.isEnabled(), timeout=120000)
    out = viewer.layers["stack (two)"]  # before: a traceback (a 4-axis scale for a 3D mask), the mask lost
    assert out.data.shape == SHAPE
    assert tuple(out.scale) == tuple(layer.scale)[1:] and tuple(out.translate) == (3, 4, 5)
    assert "applied to 1 of 1 images" in infos[-1]


def test_closing_the_window_while_a_model_is_applied_raises_nothing(make_napari_viewer, qtbot, trained):
    import sys
    import traceback

    from qtpy.QtCore import QThreadPool

    _, path = trained
    viewer = make_napari_viewer()
    widget = make_widget(viewer)
    image, meta, _ = make_sample_data(SHAPE, seed=3)[0]
    layer = viewer.add_image(image, name="next volume", scale=meta["scale"])
    errors: list[str] = []
    hook, sys.excepthook = sys.excepthook, lambda *exc: errors.append("".join(traceback.format_exception(*exc)))
    try:
        widget.models.apply(path, layer)
        viewer.close()  # the dock and its buttons go while the worker predicts
        qtbot.waitUntil(lambda: QThreadPool.globalInstance().activeThreadCount() == 0, timeout=120000)
        qtbot.wait(200)  # the worker's finished signal is delivered
    finally:
        sys.excepthook = hook
    assert errors == []  # before: "wrapped C/C++ object of type QPushButton has been deleted"
