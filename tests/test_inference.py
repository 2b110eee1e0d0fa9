import numpy as np
import pytest
import torch

from napari_sparseseg.core.annotation import Box
from napari_sparseseg.core.config import InferenceConfig, ModelConfig
from napari_sparseseg.core.inference import gaussian_importance, predict_probabilities, window_starts
from napari_sparseseg.core.net import UNet3D


class Constant(torch.nn.Module):
    def forward(self, x):
        logits = torch.tensor([0.3, -1.2, 2.0], device=x.device).view(1, 3, 1, 1, 1)
        return logits.expand(x.shape[0], 3, *x.shape[2:]).clone()


@pytest.mark.parametrize("window", [(8, 8, 8), (4, 16, 8), (16, 16, 16)])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
def test_constant_model_gives_constant_map_whatever_the_grid(window, overlap):
    features = np.random.default_rng(0).random((1, 13, 21, 17), dtype=np.float32)
    probs = predict_probabilities(Constant(), features, window, config=InferenceConfig(overlap=overlap))
    expected = torch.softmax(torch.tensor([0.3, -1.2, 2.0]), 0).numpy()
    assert probs.shape == (3, 13, 21, 17)
    assert np.allclose(probs, expected[:, None, None, None], atol=1e-6)


def test_region_prediction_matches_the_same_voxels_of_the_whole_volume_for_a_local_model():
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(1, 2, 1)  # no spatial context: any grid gives the same answer
    features = np.random.default_rng(1).random((1, 12, 20, 20), dtype=np.float32)
    full = predict_probabilities(conv, features, (8, 8, 8))
    box = Box((5, 3, 4), (6, 17, 19))
    part = predict_probabilities(conv, features, (8, 8, 8), box=box)
    assert np.allclose(part, full[(slice(None),) + box.slices], atol=1e-5)


def test_unet_handles_sizes_that_are_not_multiples_of_its_stride():
    net = UNet3D(ModelConfig(in_channels=1, num_classes=2, base_channels=4, depth=3), (2.0, 1.0, 1.0))
    features = np.random.default_rng(0).random((1, 7, 19, 23), dtype=np.float32)
    window = tuple(m * 2 for m in net.size_multiple)
    probs = predict_probabilities(net.eval(), features, window)
    assert probs.shape == (2, 7, 19, 23) and np.isfinite(probs).all()


def test_nan_output_is_reported():
    class Bad(torch.nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 2, *x.shape[2:]), float("nan"))

    with pytest.raises(FloatingPointError):
        predict_probabilities(Bad(), np.zeros((1, 8, 8, 8), np.float32), (8, 8, 8))


def test_windows_cover_and_weights_never_vanish():
    assert window_starts(10, 16, 8) == [0]
    starts = window_starts(50, 16, 8)
    assert starts[0] == 0 and starts[-1] == 34
    assert gaussian_importance((8, 8, 8)).min() > 0
