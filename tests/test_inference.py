import numpy as np
import pytest
import torch

from napari_sparseseg.core.box import Box
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


_FULL: dict[float, np.ndarray] = {}  # whole-volume predictions shared by the box cases


def _small_unet(spacing=(2.0, 1.0, 1.0)):
    torch.manual_seed(0)
    net = UNet3D(ModelConfig(in_channels=1, num_classes=3, base_channels=4, depth=2), spacing)
    return net.eval()


@pytest.mark.parametrize("box", [
    Box((0, 0, 0), (4, 9, 7)),          # corner
    Box((7, 13, 20), (18, 27, 31)),     # far edge
    Box((5, 3, 4), (6, 17, 19)),        # one slice, interior
    Box((3, 10, 10), (11, 11, 30)),     # thin, crosses window boundaries
    Box((0, 0, 0), (18, 27, 31)),       # whole volume
])
@pytest.mark.parametrize("overlap", [0.5, 0.25])
def test_any_box_equals_the_crop_of_the_whole_volume_prediction(box, overlap):
    # A net with spatial context: box results only match because windows come from one global grid.
    net = _small_unet()
    features = np.random.default_rng(2).random((1, 18, 27, 31), dtype=np.float32)
    config = InferenceConfig(overlap=overlap, batch_size=3)
    if overlap not in _FULL:
        _FULL[overlap] = predict_probabilities(net, features, (8, 12, 12), config=config)
    full = _FULL[overlap]
    part = predict_probabilities(net, features, (8, 12, 12), config=config, box=box)
    assert part.shape == (3, *box.shape)
    assert np.allclose(part, full[(slice(None),) + box.slices], atol=1e-5)


def test_box_of_a_volume_smaller_than_the_window_equals_the_crop():
    net = _small_unet()
    features = np.random.default_rng(3).random((1, 5, 30, 9), dtype=np.float32)  # z and x shorter than the window
    full = predict_probabilities(net, features, (8, 12, 12))
    for box in [Box((1, 2, 0), (4, 20, 9)), Box((4, 25, 8), (5, 30, 9)), Box((0, 0, 0), (5, 30, 9))]:
        part = predict_probabilities(net, features, (8, 12, 12), box=box)
        assert np.allclose(part, full[(slice(None),) + box.slices], atol=1e-5)


@pytest.mark.parametrize("size,window", [(51, 36), (26, 18), (120, 80), (300, 64), (40, 40), (20, 32)])
@pytest.mark.parametrize("margin", [0.0, 0.25, 0.5])
def test_window_grid_puts_every_voxel_at_least_the_edge_margin_deep(size, window, margin):
    from napari_sparseseg.core.inference import edge_padding, grid_starts

    starts = grid_starts((size, 8, 8), (window, 8, 8), 0.5, margin)[0]
    pad = edge_padding((window,), margin)[0]
    depth = np.full(size, -1)
    for a in starts:
        rows = np.arange(max(a, 0), min(a + window, size))
        depth[rows] = np.maximum(depth[rows], np.minimum(rows - a, a + window - 1 - rows))
    assert (depth >= 0).all()  # every voxel covered
    if size + 2 * pad > window:  # not one centred window
        assert min(depth[0], depth[-1]) >= min(pad, (window - 1) // 2)  # edge voxels sit pad rows deep
        assert starts[0] == -pad and starts[-1] + window == size + pad


def test_box_prediction_equals_the_whole_volume_crop_with_an_edge_margin():
    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 2, 3, padding=1)
    features = np.random.default_rng(0).normal(size=(1, 21, 30, 17)).astype(np.float32)
    config = InferenceConfig(edge_margin=(0.25, 0.25, 0.0))
    full = predict_probabilities(net, features, (8, 12, 12), config=config)
    for box in [Box((0, 0, 0), (3, 30, 17)), Box((18, 25, 10), (21, 30, 17))]:
        part = predict_probabilities(net, features, (8, 12, 12), box=box, config=config)
        assert np.allclose(part, full[(slice(None),) + box.slices], atol=1e-5)


def test_edge_margin_is_validated_per_axis():
    from napari_sparseseg.core.inference import edge_padding

    assert edge_padding((36, 80, 80), (0.25, 0.0, 0.0)) == (9, 0, 0)
    assert edge_padding((36, 80, 80), 0.25) == (9, 20, 20)
    with pytest.raises(ValueError, match="edge_margin"):
        InferenceConfig(edge_margin=(0.25, 0.0))
    with pytest.raises(ValueError, match="edge_margin"):
        InferenceConfig(edge_margin=(0.6, 0.0, 0.0))


def test_plan_reads_only_the_windows_meeting_the_box():
    from napari_sparseseg.core.inference import grid_starts, plan_windows, read_region

    shape, window = (40, 64, 64), (8, 16, 16)
    plan = plan_windows(shape, window, Box((10, 20, 0), (12, 30, 5)), overlap=0.5)
    starts = grid_starts(shape, window, 0.5)
    # every grid window meeting the box, and no other
    for axis, (b0, b1) in enumerate(zip(plan.box.start, plan.box.stop)):
        used = [a + plan.region.start[axis] for a in plan.starts[axis]]
        assert used == [a for a in starts[axis] if a < b1 and a + window[axis] > b0]
    assert plan.region == Box((4, 8, 0), (16, 40, 16))
    # mirrored reads past a short axis follow the volume-edge mirror rule
    feats = np.arange(5, dtype=np.float32).reshape(1, 5, 1, 1) * np.ones((1, 1, 2, 2), np.float32)
    small = plan_windows((5, 2, 2), (8, 2, 2), overlap=0.5)
    assert small.region == Box((-1, 0, 0), (7, 2, 2))  # one window, centred on the short axis
    assert read_region(feats, small.region, (5, 2, 2))[0, :, 0, 0].tolist() == [1, 0, 1, 2, 3, 4, 3, 2]
    with pytest.raises(ValueError, match="empty prediction box"):
        plan_windows(shape, window, Box((0, 0, 0), (0, 5, 5)))


def test_final_config_swaps_in_the_final_overlap_and_mirroring():
    icfg = InferenceConfig(overlap=0.25, final_overlap=0.5, mirror_axes=(), final_mirror_axes=(0, 2))
    final = icfg.final()
    assert (final.overlap, final.mirror_axes) == (0.5, (0, 2))
    assert (icfg.overlap, icfg.mirror_axes) == (0.25, ())  # frozen: the original is unchanged
    assert icfg.batch_for("cuda") == icfg.gpu_batch_size and icfg.batch_for("cpu") == icfg.batch_size
    with pytest.raises(ValueError, match="final_overlap"):
        InferenceConfig(final_overlap=1.0)
    with pytest.raises(ValueError, match="gpu_batch_size"):
        InferenceConfig(gpu_batch_size=0)


def test_streamed_and_final_predictions_use_their_own_overlap(monkeypatch, sphere):
    from napari_sparseseg.core import trainer as trainer_module
    from napari_sparseseg.core.config import SessionConfig, TrainConfig
    from napari_sparseseg.core.session import SegmentationSession

    image, mask = sphere
    s = SegmentationSession(image, num_classes=1, annotation=mask + 1, config=SessionConfig(
        model=ModelConfig(base_channels=4, depth=2), train=TrainConfig(patch_voxels=8 * 16 * 16), device="cpu"))
    seen = []
    real = trainer_module.predict_probabilities

    def spy(*args, config, **kwargs):
        seen.append((config.overlap, config.mirror_axes, config.batch_size))
        return real(*args, config=config, **kwargs)

    monkeypatch.setattr(trainer_module, "predict_probabilities", spy)
    s.predict()
    s.segment()
    icfg = s.config.inference
    assert seen == [(icfg.overlap, icfg.mirror_axes, icfg.batch_size),
                    (icfg.final_overlap, icfg.final_mirror_axes, icfg.batch_size)]
    assert icfg.overlap < icfg.final_overlap


def test_class_map_and_uncertainty_match_numpy():
    from napari_sparseseg.core.inference import class_map_and_uncertainty

    p = torch.softmax(torch.randn(3, 4, 5, 6), 0)
    probs, labels, unc = class_map_and_uncertainty(p)
    np.testing.assert_array_equal(labels, p.numpy().argmax(0))
    assert labels.dtype == np.uint8 and unc.dtype == np.float32 and probs.dtype == np.float32
    q = np.clip(p.numpy(), 1e-8, 1)
    np.testing.assert_allclose(unc, -(q * np.log(q)).sum(0) / np.log(3), rtol=1e-5)


def test_prior_offset_undoes_the_class_weights_by_tau_and_leaves_unlabeled_classes_alone():
    from napari_sparseseg.core.inference import prior_offset

    weights = np.array([0.5, 2.0, 0.0])  # class 2 has no labels
    np.testing.assert_allclose(prior_offset(weights, 0.0), [0.0, 0.0, 0.0])
    np.testing.assert_allclose(prior_offset(weights, 1.0), [-np.log(0.5), -np.log(2.0), 0.0])
    np.testing.assert_allclose(prior_offset(weights, 0.25), 0.25 * prior_offset(weights, 1.0))
