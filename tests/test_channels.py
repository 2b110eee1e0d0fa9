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

    def layer(name, path=None):
        return SimpleNamespace(name=name, source=SimpleNamespace(path=path))

    assert same_file(layer("brain"), layer("brain [1]")) and same_file(layer("x [0]"), layer("x [2]"))
    assert not same_file(layer("brain"), layer("brains"))
    assert same_file(layer("t1", "/a/t1.nii.gz"), layer("t1 [1]", "/a/t1.nii.gz"))
    assert not same_file(layer("t1", "/a/t1.nii.gz"), layer("t1 [1]", "/b/t1.nii.gz"))  # two patients' files

