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
