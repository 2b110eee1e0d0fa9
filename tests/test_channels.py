"""Several images of one volume read as its channels: the core's stack, and the window's Channels choice."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sparseseg.core.channels import ChannelStack
from napari_sparseseg.core.feature_stack import FeatureStack
from napari_sparseseg.core.lazy import is_lazy


def test_a_channel_stack_reads_its_images_as_channels_first_once_asked():
    a, b = np.zeros((4, 5, 6), np.uint8), np.ones((4, 5, 6), np.float32)
    stack = ChannelStack([a, b])
    assert is_lazy(stack) and stack.shape == (2, 4, 5, 6) and stack.dtype == np.float32
    array = np.asarray(stack)
    assert array.shape == (2, 4, 5, 6) and (array[0] == 0).all() and (array[1] == 1).all()
    assert stack[1, 0].shape == (5, 6)
    assert stack.holds([a, b]) and not stack.holds([b, a]) and not stack.holds([a, b.copy()])


@pytest.mark.parametrize("arrays, match", [
    ([np.zeros((4, 5, 6))], "two or more"),
    ([np.zeros((4, 5, 6)), np.zeros((4, 5, 7))], "one shape"),
    ([np.zeros((5, 6)), np.zeros((5, 6))], "3D"),
])
def test_a_channel_stack_refuses_what_is_no_volume_of_one_grid(arrays, match):
    with pytest.raises(ValueError, match=match):
        ChannelStack(arrays)


def test_the_filter_bank_of_a_channel_stack_is_that_of_the_channels():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(8, 16, 16)).astype(np.float32), rng.normal(size=(8, 16, 16)).astype(np.float32)
    stacked = FeatureStack(ChannelStack([a, b]), (1.0, 1.0, 1.0), channel_axis=0).get()
    direct = FeatureStack(np.stack([a, b]), (1.0, 1.0, 1.0), channel_axis=0).get()
    np.testing.assert_array_equal(stacked, direct)
    assert stacked.shape[-1] == 2 * FeatureStack(a, (1.0, 1.0, 1.0)).get().shape[-1]


def test_channels_of_one_file_share_a_name_and_a_path():
    from types import SimpleNamespace

    from napari_sparseseg.plugin.layers import same_file

    def layer(name, path=None, store=None):
        return SimpleNamespace(name=name, source=SimpleNamespace(path=path),
                               metadata={"sparseseg_store": store} if store else {})

    assert same_file(layer("brain"), layer("brain [1]")) and same_file(layer("x [0]"), layer("x [2]"))
    assert not same_file(layer("brain"), layer("brains"))
    assert same_file(layer("t1", "/a/t1.nii.gz"), layer("t1 [1]", "/a/t1.nii.gz"))
    assert not same_file(layer("t1", "/a/t1.nii.gz"), layer("t1 [1]", "/b/t1.nii.gz"))  # two patients' files
    # the sample made in code, and its image read back from a saved session: one name, not one file
    assert not same_file(layer("cells"), layer("cells [1]", "/s.sparseseg", store="/s.sparseseg"))
    assert same_file(layer("mri", store="/s.sparseseg"), layer("mri [1]", store="/s.sparseseg"))



@pytest.mark.parametrize("trained, given, order", [
    (["pat5_flair.nii.gz", "pat5_t1c.nii.gz"], ["pat6_t1c.nii.gz", "pat6_flair.nii.gz"], [1, 0]),  # swapped
    (["pat5_flair.nii.gz", "pat5_t1c.nii.gz"], ["pat6_flair.nii.gz", "pat6_t1c.nii.gz"], None),  # as trained
    (["T1", "T2", "FLAIR"], ["s_flair", "s_t1", "s_t2"], [1, 2, 0]),
    (["mri", "mri [1]"], ["scan", "scan [1]"], None),  # napari's names of a file's channels: kept
    (["image", "image-1"], ["scan_b", "scan_a"], None),  # no likeness either way: the order given
    (["a", "b"], ["b", "a", "c"], None),  # counts differ: the model refuses them elsewhere
    ([f"c{i}" for i in range(7)], [f"c{i}" for i in reversed(range(7))], None),  # too many to compare
])
def test_channels_are_matched_to_the_models_by_name_only_where_another_order_clearly_fits(trained, given, order):
    from napari_sparseseg.core.channels import channel_order

    assert channel_order(trained, given) == order


def test_a_model_records_its_channels_names_and_refuses_malformed_ones(tmp_path):
    import torch

    from napari_sparseseg.core.checkpoint import channel_names, read_model, save_model
    from napari_sparseseg.core.config import ModelConfig, SessionConfig
    from napari_sparseseg.core.session import SegmentationSession

    image = np.random.default_rng(0).normal(size=(2, 8, 16, 16)).astype(np.float32)
    config = SessionConfig(model=ModelConfig(base_channels=4, depth=2), device="cpu")
    session = SegmentationSession(image, channel_axis=0, config=config)
    path = save_model(session.trainer, tmp_path / "m.pt", channel_names=["flair", "t1c"])
    assert channel_names(read_model(path)) == ("flair", "t1c")
    assert channel_names(read_model(save_model(session.trainer, tmp_path / "n.pt", ["only one"]))) is None
    one = SegmentationSession(image[0], config=config)
    assert channel_names(read_model(save_model(one.trainer, tmp_path / "o.pt", ["a"]))) is None
    payload = torch.load(path, weights_only=True)
    for bad in ("flair", ["flair"], ["flair", 3], ["flair", "x" * 300]):
        torch.save({**payload, "channel_names": bad}, tmp_path / "bad.pt")
        with pytest.raises(ValueError, match="channel names are malformed"):
            read_model(tmp_path / "bad.pt")
