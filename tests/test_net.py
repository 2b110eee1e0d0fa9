import pytest
import torch

from napari_sparseseg.core.config import ModelConfig
from napari_sparseseg.core.net import UNet3D, plan_levels


@pytest.mark.parametrize(
    "spacing, expected_first_stride, expected_first_kernel",
    [((1.0, 1.0, 1.0), (2, 2, 2), (3, 3, 3)), ((5.0, 0.8, 0.8), (1, 2, 2), (1, 3, 3)),
     ((1.75, 0.8, 0.8), (1, 2, 2), (1, 3, 3))],
)
def test_anisotropic_plan_keeps_z_until_voxels_are_near_isotropic(spacing, expected_first_stride,
                                                                   expected_first_kernel):
    kernels, strides = plan_levels(spacing, depth=4)
    assert strides[0] == expected_first_stride
    assert kernels[0] == expected_first_kernel
    assert strides[-1] == (2, 2, 2)  # deep levels pool z once in-plane pooling caught up


@pytest.mark.parametrize("depth", [2, 3, 4])
@pytest.mark.parametrize("classes", [2, 4])
def test_output_shape_matches_input(depth, classes):
    net = UNet3D(ModelConfig(in_channels=2, num_classes=classes, base_channels=4, depth=depth), (2.0, 1.0, 1.0))
    m = net.size_multiple
    x = torch.randn(1, 2, 2 * m[0], 2 * m[1], 2 * m[2])
    assert net(x).shape == (1, classes, *x.shape[2:])


def test_growing_the_head_keeps_existing_class_weights():
    net = UNet3D(ModelConfig(in_channels=1, num_classes=2, base_channels=4, depth=2))
    old = net.head.weight.detach().clone()
    net.set_num_classes(3)
    assert net.head.out_channels == 3
    assert torch.equal(net.head.weight[:2], old)


@pytest.mark.parametrize("bad", [{"num_classes": 1}, {"depth": 1}, {"base_channels": 2}])
def test_config_validates(bad):
    with pytest.raises(ValueError):
        ModelConfig(**bad)


@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"warmup_steps": -1}, {"warmup_steps": 2.5},
                                 {"class_balance_power": 1.5}, {"class_balance_power": -0.1}])
def test_training_config_validates(bad):
    from napari_sparseseg.core.config import TrainConfig

    with pytest.raises(ValueError, match=next(iter(bad))):
        TrainConfig(**bad)


def test_settings_written_by_an_earlier_version_still_read():
    """Sessions and models saved when TrainConfig held the parts' settings open; unknown keys are still refused."""
    from napari_sparseseg.core.config import RETIRED_TRAIN_DEFAULTS, SessionConfig

    old = SessionConfig().to_dict()
    old["train"].update(RETIRED_TRAIN_DEFAULTS)  # every retired key at the value such files held
    assert SessionConfig.from_dict(old, legacy=True) == SessionConfig() == SessionConfig.from_dict(old)
    old["train"]["clean_tail"] = 0.0  # a value that would now be ignored: a file is told, a caller refused
    with pytest.warns(UserWarning, match="clean_tail"):
        assert SessionConfig.from_dict(old, legacy=True) == SessionConfig()
    with pytest.raises(ValueError, match="clean_tail"):
        SessionConfig.from_dict(old)
    old["train"].update(clean_tail=0.5, unheard_of=1)
    with pytest.raises(ValueError, match="unheard_of"):
        SessionConfig.from_dict(old, legacy=True)


@pytest.mark.parametrize("bad", [{"stages": 0}, {"stages": 6}, {"stages": 2.0}, {"trees": 0}, {"held_back": 0.6},
                                 {"prior_shift": -0.1}, {"prior_shift": 1.5}])
def test_responder_config_validates(bad):
    from napari_sparseseg.core.config import ResponderConfig

    with pytest.raises(ValueError, match=next(iter(bad))):
        ResponderConfig(**bad)


def test_a_session_file_written_before_the_stages_setting_reads_with_the_default():
    from napari_sparseseg.core.config import SessionConfig

    old = SessionConfig().to_dict()
    del old["responder"]["stages"]
    assert SessionConfig.from_dict(old).responder.stages == SessionConfig().responder.stages


def test_the_ema_follows_the_first_steps_closely_then_averages_over_more():
    from napari_sparseseg.core.weights import EMA_DECAY, ema_decay

    assert ema_decay(0) == pytest.approx(0.1)  # the first step's weights weigh 90 %
    assert ema_decay(90) == pytest.approx(0.91)  # about the last ninth of 100 steps
    assert ema_decay(10_000) == EMA_DECAY
    assert ema_decay(0, decay=0.995, warm_up=4) == pytest.approx(0.25)
