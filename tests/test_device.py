"""Device selection and the start-up warm-up."""

import pytest
import torch

from napari_sparseseg.core import device as device_module
from napari_sparseseg.core.device import select_device, warm_up


def test_warm_up_runs_a_training_step_on_the_cpu_and_is_cheap_the_second_time():
    warm_up("cpu")
    assert warm_up("cpu") < 1.0
    assert warm_up(torch.device("cpu")) >= 0.0


def test_warm_up_reports_a_missing_device_unless_quiet(monkeypatch):
    def unavailable(name):
        raise ValueError(f"device {name!r} requested but it is not available")

    monkeypatch.setattr(device_module, "select_device", unavailable)
    with pytest.raises(ValueError, match="not available"):
        warm_up("cuda")
    assert warm_up("cuda", quiet=True) >= 0.0  # the widget's background thread must never raise


def test_select_device_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown device"):
        select_device("tpu")


def test_autocast_is_bf16_only_where_bf16_is_fast(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert device_module.fast_bf16("cpu")
    with device_module.autocast("cpu"):
        assert torch.nn.Linear(4, 4)(torch.randn(2, 4)).dtype == torch.bfloat16
    with device_module.autocast("cpu", enabled=False):  # TrainConfig.amp = False
        assert torch.nn.Linear(4, 4)(torch.randn(2, 4)).dtype == torch.float32

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert not device_module.fast_bf16("cpu")  # emulated bf16 would be slower than float32
    with device_module.autocast("cpu"):
        assert torch.nn.Linear(4, 4)(torch.randn(2, 4)).dtype == torch.float32

    def broken():
        raise RuntimeError("probe failed")

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", broken, raising=False)
    assert not device_module.fast_bf16("cpu")
    assert not device_module.fast_bf16("meta")
