"""The memory a session in the window would take, told when an image is chosen (plugin/layers.py)."""

from __future__ import annotations

from types import SimpleNamespace

import dask.array as da
import numpy as np
import pytest
from napari.layers import Image

from napari_sparseseg.core.feature_stack import responder_bytes
from napari_sparseseg.core.footprint import CLASS_BYTES_PER_VOXEL, SESSION_BYTES_PER_VOXEL, SESSION_FIXED_BYTES
from napari_sparseseg.plugin.layers import LAYER_BYTES_PER_VOXEL, memory_problem, session_bytes, volume_bytes

SHAPE = (16, 64, 64)
VOXELS = 16 * 64 * 64


def test_an_image_in_memory_needs_the_session_the_bank_and_the_layers():
    layer = Image(np.zeros(SHAPE, np.float32))
    expected = SESSION_FIXED_BYTES + VOXELS * (SESSION_BYTES_PER_VOXEL + LAYER_BYTES_PER_VOXEL) + \
        responder_bytes(SHAPE, 1, 2)
    assert session_bytes(layer, 2) == expected
    assert session_bytes(layer, 4) == expected + VOXELS * 2 * CLASS_BYTES_PER_VOXEL + \
        responder_bytes(SHAPE, 1, 4) - responder_bytes(SHAPE, 1, 2)


def test_a_lazy_image_is_counted_as_read_in():
    lazy = Image(da.zeros(SHAPE, dtype=np.uint16, chunks=(8, 32, 32)), contrast_limits=(0, 1))
    plain = Image(np.zeros(SHAPE, np.uint16))
    assert session_bytes(lazy, 1) == session_bytes(plain, 1) + VOXELS * 2


def test_other_volumes_add_their_arrays_but_no_bank():
    layer, other = Image(np.zeros(SHAPE, np.float32), name="first"), Image(np.zeros((8, 32, 32), np.float32), name="b")
    assert volume_bytes(other, 1) == 8 * 32 * 32 * (SESSION_BYTES_PER_VOXEL + LAYER_BYTES_PER_VOXEL)
    assert session_bytes(layer, 1, [other]) == session_bytes(layer, 1) + volume_bytes(other, 1)
    problem = memory_problem(layer, 1, total=session_bytes(layer, 1), others=[other])
    assert problem is not None and problem.startswith("'first' with 'b' is too large")
    assert memory_problem(layer, 1, total=session_bytes(layer, 1)) is None


@pytest.mark.parametrize(("total", "refused"), [(2**20, True), (2**40, False)])
def test_refused_only_beyond_the_machine(total, refused):
    layer = Image(np.zeros(SHAPE, np.float32), name="stack")
    problem = memory_problem(layer, 1, total=total)
    assert (problem is not None) == refused
    if refused:
        assert "'stack' is too large" in problem and "crop" in problem


def test_a_volume_far_larger_than_the_machine_is_refused_without_reading_it():
    def unreadable(block):
        raise AssertionError("the image was read")

    data = da.zeros((2048, 4096, 4096), dtype=np.uint8, chunks=(64, 512, 512)).map_blocks(unreadable, dtype=np.uint8)
    huge = SimpleNamespace(data=data, scale=(1.0, 1.0, 1.0), name="huge")  # a layer reads data: the check must not
    problem = memory_problem(huge, 1, total=64 * 2**30)
    assert problem is not None and "GiB" in problem


def test_the_machines_memory_is_read_once_and_is_what_psutil_says():
    import psutil

    from napari_sparseseg.core.footprint import physical_memory

    assert physical_memory() == psutil.virtual_memory().total and physical_memory() is physical_memory()
