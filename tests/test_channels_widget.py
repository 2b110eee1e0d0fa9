"""The window trains on several channels: a file's channel layers are ticked, the bank and the session read them."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_sparseseg.core.channels import ChannelStack
from napari_sparseseg.plugin.sample import make_sample_data
from napari_sparseseg.plugin.volumes_panel import SEVERAL_CHANNELS
from napari_sparseseg.plugin.widget import SparseSegWidget
from tests.test_widget import (
    SHAPE,
    TEST_CONFIG,
    foreground_dice,
    paint_slice,
    start_and_wait_for_session,
    stop_and_wait,
)

pytestmark = pytest.mark.gui


@pytest.fixture
def two_channels(make_napari_viewer, qtbot):
    """A viewer with a two-channel image opened as napari opens one (a layer per channel), the objects in the
    second channel only, an empty annotation layer, an image of another shape, and the docked widget."""
    (image, meta, _), (annotation, ann_meta, _) = make_sample_data(SHAPE)
    truth = meta["metadata"]["ground_truth"]
    noise = np.random.default_rng(1).normal(size=SHAPE).astype(np.float32)
    viewer = make_napari_viewer()
    viewer.add_image(np.stack([noise, image]), channel_axis=0, name="mri", scale=meta["scale"],
                     metadata=meta["metadata"])
    viewer.add_image(np.zeros((8, 16, 16), np.float32), name="other")
    viewer.add_labels(annotation.copy(), **ann_meta)
    widget = SparseSegWidget(viewer, config=TEST_CONFIG, refresh_seconds=1.0, first_refresh_steps=10**6)
    viewer.window.add_dock_widget(widget, name="sparseseg")
    widget.data_panel.image_combo.setCurrentIndex(0)  # the first channel's layer
    yield viewer, widget, truth
    widget.close_session()


def test_a_files_channels_are_ticked_and_trained_on(two_channels, qtbot, tmp_path, monkeypatch):
    viewer, widget, truth = two_channels
    noise_layer, image_layer = viewer.layers["mri"], viewer.layers["mri [1]"]
    panel = widget.data_panel
    assert widget.image_layer is noise_layer and panel.channel_layers == [image_layer]  # the file's other channel
    assert panel.channel_list.count() == 1 and panel.channel_list.isVisibleTo(widget)  # "other": another shape
    stack = widget.features.held_for(noise_layer, [image_layer])
    assert stack is not None and isinstance(stack.source.image, ChannelStack)  # computing while the user paints
    assert widget.features.held_for(noise_layer) is None  # not the bank of the first channel alone
    for z in (8, 16, 24):
        paint_slice(widget.annotation_layer, z, truth[z])
    shown = []
    widget.prediction_shown.connect(lambda r: shown.append(r))
    start_and_wait_for_session(widget, qtbot)
    assert widget.session.volume.image_channels == 2 and widget.session.responder.features is stack
    qtbot.waitUntil(lambda: len(shown) >= 2, timeout=60000)
    assert foreground_dice(widget.prediction_layer.data[12], truth[12]) > 0.6  # from the second channel's objects
    qtbot.waitUntil(lambda: widget.session.trainer.step >= 1, timeout=60000)  # a model to save
    stop_and_wait(widget, qtbot)
    _apply_the_model_to_every_channel(viewer, widget, qtbot, tmp_path)
    warnings = []
    monkeypatch.setattr("napari_sparseseg.plugin.volumes_panel.show_warning", warnings.append)
    assert widget.volumes_panel.add(viewer.layers["other"]) is None  # one channel only for other volumes
    assert warnings == [f"sparseseg: {SEVERAL_CHANNELS}"]
    widget.volumes_panel.entries.append(object())  # as if a volume had been added before the channel was ticked
    try:
        assert not widget.volumes_panel.accepts_channels(panel.channel_layers)
    finally:
        widget.volumes_panel.entries.pop()
    assert SEVERAL_CHANNELS.startswith("other volumes join a session of one image channel only")
    viewer.layers.remove(image_layer)  # a channel of the session removed: the session goes, one channel is left
    assert widget.session is None and panel.channel_layers == [] and not panel.channel_list.isVisibleTo(widget)
    assert widget.features.held_for(noise_layer) is not None  # and the bank of the one channel left is computing


def _apply_the_model_to_every_channel(viewer, widget, qtbot, tmp_path) -> None:
    """The two-channel model, applied to the chosen image, reads its ticked channel; applied to every image, it
    predicts the file's two layers as one volume and skips the one-channel image."""
    from napari_sparseseg.core.checkpoint import image_channels, read_model
    from napari_sparseseg.plugin.models import volume_layers

    model = widget.models.save(tmp_path / "two.pt")
    assert image_channels(read_model(model)) == 2
    noise_layer, image_layer = viewer.layers["mri"], viewer.layers["mri [1]"]
    assert volume_layers(viewer, 2) == [(noise_layer, (image_layer,)), (viewer.layers["other"], ())]
    assert len(volume_layers(viewer, 1)) == 3
    widget.models.apply(model)
    qtbot.waitUntil(lambda: "mri (two)" in viewer.layers, timeout=60000)
    from napari_sparseseg.core.session import SegmentationSession

    both = np.stack([noise_layer.data, image_layer.data])  # the same weights and channels: the core's mask
    expected = SegmentationSession.from_model(both, model, spacing=tuple(noise_layer.scale), channel_axis=0,
                                              device="cpu").segment()
    np.testing.assert_array_equal(viewer.layers["mri (two)"].data, expected)
    qtbot.waitUntil(lambda: widget.models.apply_all_button.isEnabled(), timeout=10000)
    viewer.layers.remove("mri (two)")
    widget.models.apply_all(model)
    qtbot.waitUntil(lambda: widget.models.apply_all_button.isEnabled(), timeout=120000)
    assert "mri (two)" in viewer.layers and "mri [1] (two)" not in viewer.layers and "other (two)" not in viewer.layers


def test_a_model_is_fed_the_channels_in_the_order_their_names_match(two_channels, qtbot, tmp_path, monkeypatch):
    """A model trained on ("mri", "mri [1]"), applied with "mri [1]" chosen and "mri" ticked: the layers are fed
    in the model's order, and the window says so."""
    from napari_sparseseg.core.checkpoint import save_model
    from napari_sparseseg.core.session import SegmentationSession

    viewer, widget, _ = two_channels
    noise_layer, image_layer = viewer.layers["mri"], viewer.layers["mri [1]"]
    both = np.stack([noise_layer.data, image_layer.data])
    trained = SegmentationSession(both, channel_axis=0, spacing=tuple(noise_layer.scale), config=TEST_CONFIG)
    model = save_model(trained.trainer, tmp_path / "named.pt", channel_names=["mri", "mri [1]"])
    widget.data_panel.image_combo.setCurrentText("mri [1]")
    assert widget.image_layer is image_layer and widget.data_panel.channel_layers == [noise_layer]
    notes = []
    monkeypatch.setattr("napari_sparseseg.plugin.models.show_info", notes.append)
    widget.models.apply(model)
    qtbot.waitUntil(lambda: "mri [1] (named)" in viewer.layers, timeout=60000)
    expected = SegmentationSession.from_model(both, model, spacing=tuple(noise_layer.scale), channel_axis=0,
                                              device="cpu").segment()
    np.testing.assert_array_equal(viewer.layers["mri [1] (named)"].data, expected)
    assert "sparseseg: channels matched to the model's by name: mri <- mri, mri [1] <- mri [1]" in notes
    qtbot.waitUntil(lambda: widget.models.apply_all_button.isEnabled(), timeout=10000)
    viewer.layers.remove("mri [1] (named)")
    widget.models.apply_all(model)  # the chosen image and its ticked channel first: fed in the model's order too
    qtbot.waitUntil(lambda: widget.models.apply_all_button.isEnabled(), timeout=120000)
    np.testing.assert_array_equal(viewer.layers["mri [1] (named)"].data, expected)
    assert any("(mri [1]: channels matched to the model's by name" in note for note in notes)


def test_unticking_a_channel_means_a_new_bank_and_a_new_session(two_channels, qtbot):
    viewer, widget, truth = two_channels
    panel = widget.data_panel
    for z in (8, 16, 24):
        paint_slice(widget.annotation_layer, z, truth[z])
    start_and_wait_for_session(widget, qtbot)
    stop_and_wait(widget, qtbot)
    first, channel = widget.session, panel.channel_layers[0]
    bank = first.responder.features
    panel.channel_list.item(0).setCheckState(Qt.CheckState.Unchecked)
    assert panel.channel_layers == [] and widget.features.held_for(widget.image_layer) not in (None, bank)
    panel.channel_list.item(0).setCheckState(Qt.CheckState.Checked)  # back: the session's own bank, not a second
    assert widget.features.held_for(widget.image_layer, [channel]) is bank
    panel.channel_list.item(0).setCheckState(Qt.CheckState.Unchecked)
    start_and_wait_for_session(widget, qtbot)
    assert widget.session is not first and widget.session.volume.image_channels == 1
    stop_and_wait(widget, qtbot)


def test_a_session_of_two_channels_is_saved_reopened_and_resumed(two_channels, make_napari_viewer, qtbot,
                                                                  tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_SPARSESEG_HOME", str(tmp_path / "home"))
    viewer, widget, truth = two_channels
    for z in (8, 16, 24):
        paint_slice(widget.annotation_layer, z, truth[z])
    start_and_wait_for_session(widget, qtbot)
    stop_and_wait(widget, qtbot)
    path, step = widget.session.store.path, widget.session.trainer.step
    widget.close_session()
    other = make_napari_viewer()
    reopened = SparseSegWidget(other, config=TEST_CONFIG, refresh_seconds=1.0, first_refresh_steps=10**6)
    other.window.add_dock_widget(reopened, name="sparseseg")
    try:
        layers = reopened.files.open(path)
        images = [ly for ly in layers if ly.data.ndim == 3 and ly.data.dtype != np.uint8]
        assert len(images) == 2  # one layer per channel, as napari shows a multi-channel image
        assert [reopened.image_layer, *reopened.data_panel.channel_layers] in (images, images[::-1])
        start_and_wait_for_session(reopened, qtbot)
        assert reopened.session.volume.image_channels == 2 and reopened.session.trainer.step >= step
        np.testing.assert_array_equal(reopened.session.image[1], widget.session.image[1])
        stop_and_wait(reopened, qtbot)
    finally:
        reopened.close_session()
    third = make_napari_viewer()  # opened again, one channel unticked: not the stored net's input, a new session
    fresh = SparseSegWidget(third, config=TEST_CONFIG, refresh_seconds=1.0, first_refresh_steps=10**6)
    third.window.add_dock_widget(fresh, name="sparseseg")
    said = []
    monkeypatch.setattr("napari.utils.notifications.show_info", said.append)  # a notice: the status moves on
    try:
        fresh.files.open(path)
        fresh.data_panel.channel_list.item(0).setCheckState(Qt.CheckState.Unchecked)
        start_and_wait_for_session(fresh, qtbot)
        assert fresh.session.volume.image_channels == 1 and fresh.session.store.path != path.resolve()
        assert any("a new session starts (the opened one stays in its store)" in text for text in said)
        stop_and_wait(fresh, qtbot)
    finally:
        fresh.close_session()


def test_closing_the_widget_stops_the_banks_it_computes(two_channels):
    viewer, widget, _ = two_channels
    stack = widget.features.held_for(widget.image_layer, widget.data_panel.channel_layers)
    assert stack is not None and not stack.cancelled
    widget.close_session()
    assert stack.cancelled and widget.features.held_for(widget.image_layer) is None



def test_an_image_shown_shifted_is_not_offered_as_a_channel(two_channels):
    viewer, widget, _truth = two_channels
    image = viewer.layers["mri [1]"]
    shifted = viewer.add_image(np.array(image.data), name="next scan", scale=image.scale,
                               translate=(0, 0, image.data.shape[-1] * image.scale[-1]))
    aligned = viewer.add_image(np.array(image.data), name="same place", scale=image.scale)
    offered = [widget.data_panel.channel_list.item(i).text() for i in range(widget.data_panel.channel_list.count())]
    assert aligned.name in offered and shifted.name not in offered
