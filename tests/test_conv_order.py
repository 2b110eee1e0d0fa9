"""The axis-ordered convolution: the same convolution as ``nn.Conv3d``, run through oneDNN where PyTorch would not."""

import pytest
import torch

from napari_sparseseg.core import conv_order
from napari_sparseseg.core.config import ModelConfig
from napari_sparseseg.core.conv_order import AxisOrderedConv3d, faster_order
from napari_sparseseg.core.net import UNet3D

SLOW = getattr(getattr(torch._C, "_ConvBackend", None), "Slow3d", None)


def twins(cin: int, cout: int, kernel, stride) -> tuple[AxisOrderedConv3d, torch.nn.Conv3d]:
    torch.manual_seed(0)
    ordered = AxisOrderedConv3d(cin, cout, kernel, stride=stride, padding=tuple(k // 2 for k in kernel), bias=True)
    plain = torch.nn.Conv3d(cin, cout, kernel, stride=stride, padding=tuple(k // 2 for k in kernel), bias=True)
    plain.load_state_dict(ordered.state_dict())  # same parameters, same names
    return ordered, plain


@pytest.mark.parametrize("shape, cout, kernel, stride, reordered", [
    ((1, 64, 12, 24, 24), 64, (3, 3, 3), (1, 1, 1), True),  # the sample's deep level: order (1, 2, 0)
    ((1, 64, 12, 24, 24), 128, (3, 3, 3), (2, 2, 2), True),  # strided
    ((1, 2, 18, 112, 112), 16, (1, 3, 3), (1, 1, 1), True),  # an anisotropic kernel
    ((1, 32, 9, 41, 35), 32, (1, 3, 3), (1, 2, 2), True),  # anisotropic and strided over odd sizes
    ((1, 32, 30, 9, 25), 32, (3, 3, 3), (1, 1, 1), True),  # y the shortest: order (0, 2, 1)
    ((1, 64, 8, 8, 8), 64, (3, 3, 3), (1, 1, 1), False),  # cubic: as it is
    ((2, 64, 12, 24, 24), 64, (3, 3, 3), (1, 1, 1), False),  # a batch of two: oneDNN already
])
def test_same_output_and_gradients_as_conv3d(shape, cout, kernel, stride, reordered):
    ordered, plain = twins(shape[1], cout, kernel, stride)
    x = torch.randn(shape, requires_grad=True)
    if SLOW is not None:  # this PyTorch says which kernel it picks: the case is the one named
        assert (faster_order(ordered, x) is not None) == reordered
    x_plain = x.detach().clone().requires_grad_(True)
    y, y_plain = ordered(x), plain(x_plain)
    assert y.shape == y_plain.shape
    torch.testing.assert_close(y, y_plain, rtol=1e-4, atol=1e-4)
    grad = torch.randn_like(y)
    y.backward(grad)
    y_plain.backward(grad)
    torch.testing.assert_close(x.grad, x_plain.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ordered.weight.grad, plain.weight.grad, rtol=1e-4, atol=1e-2)
    torch.testing.assert_close(ordered.bias.grad, plain.bias.grad, rtol=1e-4, atol=1e-2)


@pytest.mark.skipif(SLOW is None, reason="this PyTorch does not say which convolution kernel it picks")
def test_reorders_only_what_pytorch_runs_on_its_slow_path():
    deep, _ = twins(64, 64, (3, 3, 3), (1, 1, 1))
    flat = torch.zeros(1, 64, 12, 24, 24)  # batch x channels x Z x Y = 18,432: the slow path as it is
    assert faster_order(deep, flat) == (1, 2, 0)  # y and x counted instead: 36,864
    assert faster_order(deep, torch.zeros(1, 64, 8, 8, 8)) is None  # cubic: no order helps
    assert faster_order(deep, torch.zeros(1, 64, 32, 32, 32)) is None  # oneDNN as it is
    assert faster_order(deep, torch.zeros(1, 64, 12, 24, 24, dtype=torch.float64)) is None


def test_net_keeps_its_state_dict_and_answers(monkeypatch):
    """The net's parameters are named as with ``nn.Conv3d`` (model files written before load), and it predicts what
    it would with the plain convolution everywhere."""
    net = UNet3D(ModelConfig(), (2.0, 0.5, 0.5)).eval()
    ordered, plain = twins(2, 16, (1, 3, 3), (1, 1, 1))
    assert set(ordered.state_dict()) == set(plain.state_dict())
    twin = UNet3D(ModelConfig(), (2.0, 0.5, 0.5)).eval()
    twin.load_state_dict(net.state_dict())
    x = torch.randn(1, 2, 24, 96, 96)
    with torch.no_grad():
        reordered = net(x)
        monkeypatch.setattr(conv_order, "faster_order", lambda conv, x: None)  # the plain convolution everywhere
        torch.testing.assert_close(reordered, twin(x), rtol=1e-4, atol=1e-4)


def test_asks_for_cpu_autocast_the_way_older_pytorch_answers(monkeypatch):
    """PyTorch before 2.4 takes no device argument: the convolution still runs (and reorders) there."""
    def no_device_argument(*args):
        if args:
            raise TypeError("is_autocast_enabled() takes no arguments")
        return False

    monkeypatch.setattr(torch, "is_autocast_enabled", no_device_argument)
    monkeypatch.setattr(torch, "is_autocast_cpu_enabled", lambda: False, raising=False)
    ordered, plain = twins(64, 64, (3, 3, 3), (1, 1, 1))
    x = torch.randn(1, 64, 12, 24, 24)
    with torch.no_grad():
        torch.testing.assert_close(ordered(x), plain(x), rtol=1e-4, atol=1e-4)
