"""The probe monitor: drift between probes ``lag`` apart, the labeled error rate, a new epoch on new labels."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sparseseg.core.probe import ProbeMonitor


def _ball(radius: int) -> np.ndarray:
    zz, yy, xx = np.indices((12, 16, 16))
    return ((zz - 6) ** 2 + (yy - 8) ** 2 + (xx - 8) ** 2 <= radius**2).astype(np.uint8)


def test_drift_compares_probes_lag_apart_and_waits_for_enough_of_them():
    monitor = ProbeMonitor(every=5, lag=2)
    target, weight = _ball(4), np.ones((12, 16, 16), np.float32)
    monitor.record(0, 1, _ball(4), target, weight)
    monitor.record(5, 1, _ball(5), target, weight)
    assert monitor.drift is None  # two probes: not yet lag apart
    monitor.record(10, 1, _ball(4), target, weight)
    assert monitor.drift == 0.0  # same map as two probes ago
    monitor.record(15, 1, _ball(4), target, weight)
    assert monitor.drift > 0.5  # against the grown ball: about a layer of surface moved


def test_error_rate_is_the_share_of_labeled_voxels_predicted_wrong():
    monitor = ProbeMonitor()
    target = np.array([[[1, 1, 0, 0]]], np.uint8)
    weight = np.array([[[1.0, 1.0, 1.0, 0.0]]], np.float32)  # the last voxel is unlabeled
    monitor.record(0, 1, np.array([[[1, 0, 0, 1]]], np.uint8), target, weight)
    assert monitor.error_rate == pytest.approx(1 / 3)


def test_new_labels_or_another_patch_start_a_new_epoch():
    monitor = ProbeMonitor(every=1, lag=1)
    target, weight = _ball(4), np.ones((12, 16, 16), np.float32)
    monitor.record(0, 1, _ball(4), target, weight)
    monitor.record(1, 1, _ball(4), target, weight)
    epoch = monitor.epoch
    assert monitor.drift == 0.0
    monitor.record(2, 2, _ball(4), target, weight)  # the labels changed: earlier probes answer another question
    assert monitor.drift is None and monitor.epoch == epoch + 1
    monitor.record(3, 2, _ball(4)[:8], target[:8], weight[:8])  # the patch shrank
    assert monitor.drift is None and monitor.epoch == epoch + 2


def test_due_once_per_probing_step():
    monitor = ProbeMonitor(every=50)
    assert monitor.due(0) and monitor.due(100) and not monitor.due(30)
    monitor.record(100, 1, _ball(3), _ball(3), np.ones((12, 16, 16), np.float32))
    assert not monitor.due(100)


@pytest.mark.parametrize("every, lag", [(0, 2), (50, 0)])
def test_monitor_rejects_a_zero_interval(every, lag):
    with pytest.raises(ValueError, match="every and lag"):
        ProbeMonitor(every, lag)
