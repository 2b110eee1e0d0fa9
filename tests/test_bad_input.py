"""Every bad input gets a clear ValueError naming what was received (never a torch traceback)."""

import numpy as np
import pytest

from napari_sparseseg.core.annotation import AnnotatedVolume
from napari_sparseseg.core.session import SegmentationSession
from napari_sparseseg.evaluation.protocols import protocol_mask
from napari_sparseseg.evaluation.simulated_user import evaluate_volume

GOOD = np.random.default_rng(0).random((8, 16, 16)).astype(np.float32)


@pytest.mark.parametrize(
    "image, kwargs, match",
    [
        (GOOD[0], {}, "got 2D"),
        (np.stack([GOOD, GOOD]), {}, "pass channel_axis"),
        (GOOD[None, None], {}, "got 5D"),
        (np.where(GOOD > 0.5, np.nan, GOOD), {}, "NaN/inf"),
        (np.where(GOOD > 0.5, np.inf, GOOD), {}, "NaN/inf"),
        (np.full((8, 16, 16), 7.0), {}, "constant"),
        (GOOD > 0.5, {}, "dtype bool"),
        (GOOD.astype(np.complex64), {}, "dtype complex64"),
        (GOOD, {"channel_axis": 0}, "channel_axis=0 given for a 3D image"),
        (GOOD, {"spacing": (1.0, 0.0, 1.0)}, "spacing"),
        (GOOD, {"spacing": (1.0, 1.0)}, "spacing"),
        (GOOD, {"annotation": np.zeros((8, 16, 15), np.uint8)}, r"\(8, 16, 15\)"),
        (GOOD, {"annotation": np.full((8, 16, 16), 9, np.uint8)}, "exceeds"),
    ],
)
def test_bad_volume_input_is_named(image, kwargs, match):
    with pytest.raises(ValueError, match=match):
        AnnotatedVolume(image, num_classes=1, **kwargs)


def test_channel_axis_makes_4d_valid():
    vol = AnnotatedVolume(np.stack([GOOD, 1 - GOOD], axis=-1), channel_axis=-1, num_classes=1)
    assert vol.shape == (8, 16, 16)
    assert vol.features.shape[0] == 4  # two channels x (linear, equalized)


def test_empty_annotation_trains_nothing_and_says_so():
    s = SegmentationSession(GOOD, num_classes=1)
    event = next(s.train(max_steps=1, idle_sleep=0))
    assert "no labeled voxels" in event.reason


@pytest.mark.parametrize("protocol, match", [("z:9", "only 8"), ("z:0", "at least 1"), ("axial:3", "unknown protocol"),
                                             ("z:7", "distinct slices")])
def test_bad_protocols(protocol, match):
    with pytest.raises(ValueError, match=match):
        protocol_mask((8, 16, 16), protocol)


def test_evaluate_refuses_labels_of_another_shape():
    with pytest.raises(ValueError, match="do not match"):
        evaluate_volume(GOOD, np.zeros((8, 16, 17), np.uint8), spacing=None, protocol="z:1", budget_seconds=1)


def test_evaluate_refuses_ground_truth_without_foreground():
    with pytest.raises(ValueError, match="no foreground"):
        evaluate_volume(GOOD, np.zeros((8, 16, 16), np.uint8), spacing=None, protocol="z:1", budget_seconds=1)
