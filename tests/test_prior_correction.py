"""Prior correction: prediction undoes ``tau`` of the class-balance tilt, and the offset travels with the model."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_sparseseg.core.checkpoint import save_model
from napari_sparseseg.core.config import InferenceConfig, ModelConfig, SessionConfig, TrainConfig
from napari_sparseseg.core.encoding import mask_to_annotation
from napari_sparseseg.core.inference import NEVER_LABELED, _forward
from napari_sparseseg.core.net import UNet3D
from napari_sparseseg.core.session import SegmentationSession

from .conftest import sphere_volume

TINY = SessionConfig(model=ModelConfig(base_channels=4, depth=2),
                     train=TrainConfig(patch_voxels=8 * 16 * 16, batch_size=1, warmup_steps=1), device="cpu")


def _trained(tau: float = 0.5) -> SegmentationSession:
    torch.set_num_threads(1)
    image, mask = sphere_volume((16, 32, 32))
    annotation = np.zeros_like(mask)
    annotation[8] = mask_to_annotation(mask[8])  # far more background than sphere: unequal class weights
    config = replace(TINY, inference=replace(TINY.inference, prior_correction=tau))
    s = SegmentationSession(image, num_classes=1, spacing=(2.0, 1.0, 1.0), annotation=annotation, config=config)
    list(s.train(max_steps=3))
    return s


def test_the_offset_is_added_to_the_logits_before_the_softmax():
    net = UNet3D(ModelConfig(in_channels=1, num_classes=3, base_channels=4, depth=2)).eval()
    x = torch.randn(1, 1, 8, 16, 16)
    with torch.no_grad():
        plain = torch.softmax(net(x), 1)
        net.decision_offset.copy_(torch.tensor([0.0, np.log(0.5), np.log(2.0)]))
        shifted = _forward(net, x, (), amp=False)
    expected = plain * torch.tensor([1.0, 0.5, 2.0]).view(1, -1, 1, 1, 1)
    torch.testing.assert_close(shifted, expected / expected.sum(1, keepdim=True), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("tau", [0.5, 1.0])
def test_prediction_divides_each_class_by_its_weight_to_the_power_tau(tau):
    s = _trained(tau=0.0)
    # the offset acts on each window's logits, before blending: compare windows that meet nowhere
    s.trainer.config = replace(s.config, inference=replace(s.config.inference, overlap=0.0, edge_margin=(0, 0, 0)))
    base = s.predict().probabilities.astype(np.float64)
    s.trainer.config = replace(s.trainer.config, inference=replace(s.trainer.config.inference, prior_correction=tau))
    corrected = s.predict().probabilities.astype(np.float64)
    w = s.volume.class_weights(s.config.train.class_balance_power).astype(np.float64)
    assert w[1] > w[0] > 0  # the sphere is the rarer class
    expected = base * (w ** -tau).reshape(-1, 1, 1, 1)
    expected /= expected.sum(0, keepdims=True)
    np.testing.assert_allclose(corrected, expected, atol=1e-4)
    assert (corrected[1] <= base[1] + 1e-6).all()  # the up-weighted class loses probability everywhere


def test_tau_zero_leaves_the_prediction_untouched():
    s = _trained(tau=0.0)
    assert torch.count_nonzero(s.trainer.ema_model.decision_offset) == 0
    s.predict()
    assert torch.count_nonzero(s.trainer.ema_model.decision_offset) == 0


def test_a_saved_model_applies_its_offset_to_an_image_without_labels(tmp_path):
    s = _trained(tau=0.5)
    path = save_model(s.trainer, tmp_path / "model.pt")
    offset = s.trainer.ema_model.decision_offset.clone()
    assert offset[1] < 0 < offset[0]
    image, _ = sphere_volume((16, 32, 32))
    loaded = SegmentationSession.from_model(image, path, spacing=(2.0, 1.0, 1.0), device="cpu")
    assert loaded.volume.n_labeled == 0
    torch.testing.assert_close(loaded.trainer.ema_model.decision_offset, offset)
    np.testing.assert_allclose(loaded.predict().probabilities, s.predict().probabilities, atol=1e-5)


def test_weights_saved_before_the_offset_existed_load_with_no_correction():
    net = UNet3D(ModelConfig(in_channels=1, num_classes=2, base_channels=4, depth=2))
    state = {k: v for k, v in net.state_dict().items() if k != "decision_offset"}
    other = UNet3D(ModelConfig(in_channels=1, num_classes=2, base_channels=4, depth=2))
    other.decision_offset.fill_(1.0)
    other.load_state_dict(state)
    assert torch.count_nonzero(other.decision_offset) == 0


def test_growing_the_head_keeps_the_offsets_of_existing_classes():
    net = UNet3D(ModelConfig(in_channels=1, num_classes=2, base_channels=4, depth=2))
    net.decision_offset.copy_(torch.tensor([0.3, -0.3]))
    net.set_num_classes(3)
    torch.testing.assert_close(net.decision_offset, torch.tensor([0.3, -0.3, NEVER_LABELED]))  # random head
    assert "decision_offset" in net.state_dict()


def test_strokes_get_the_sparse_tau_and_whole_slices_the_dense_one():
    image, mask = sphere_volume((16, 32, 32))
    annotation = np.zeros_like(mask)
    annotation[8, 14:18, 10:22] = mask_to_annotation(mask[8, 14:18, 10:22])  # a stroke through the sphere
    annotation[8, 1:3, 2:30] = 1                                              # and one through background
    config = replace(TINY, inference=replace(TINY.inference, prior_correction=0.25, sparse_prior_correction=1.0))
    s = SegmentationSession(image, num_classes=1, spacing=(2.0, 1.0, 1.0), annotation=annotation, config=config)

    def tau_in_use() -> float:
        s.trainer.update_decision_offset()
        log_w = np.log(s.volume.class_weights(config.train.class_balance_power).astype(np.float64))
        offset = s.trainer.ema_model.decision_offset.numpy().astype(np.float64)
        return float(offset[1] / -log_w[1])

    coverage = s.volume.plane_coverage()
    assert 0 < coverage < 0.2
    assert tau_in_use() == pytest.approx(config.inference.correction_for(coverage), rel=1e-4)
    assert tau_in_use() > 0.8
    s.add_labels((slice(4, 5), slice(None), slice(None)), mask_to_annotation(mask[4:5]))  # now a whole slice too
    assert s.volume.plane_coverage() > 0.9
    assert tau_in_use() == pytest.approx(config.inference.correction_for(s.volume.plane_coverage()), rel=1e-4)
    assert tau_in_use() < 0.35


def test_the_tau_goes_linearly_from_sparse_to_dense_with_plane_coverage():
    config = InferenceConfig(prior_correction=0.25, sparse_prior_correction=1.0)
    assert config.correction_for(0.0) == 1.0
    assert config.correction_for(1.0) == 0.25
    assert config.correction_for(0.5) == pytest.approx(0.625)
    assert config.correction_for(3.0) == 0.25  # clamped


@pytest.mark.parametrize("name", ["prior_correction", "sparse_prior_correction"])
def test_the_config_rejects_a_negative_tau(name):
    with pytest.raises(ValueError, match=name):
        InferenceConfig(**{name: -0.1})
