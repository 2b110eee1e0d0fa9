"""The fit guard: keeps the best-fitting weights of a budget's second half, restores them only if clearly better."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sparseseg.core.fit_guard import FitGuard
from napari_sparseseg.core.probe import ProbeMonitor


def _read(monitor: ProbeMonitor, rate: float, revision: int = 1) -> None:
    """A probe whose labeled error rate is ``rate`` (on 1,000 labeled voxels)."""
    target = np.zeros((1, 1, 1000), np.uint8)
    labels = target.copy()
    labels[..., : int(round(rate * 1000))] = 1
    monitor.record(monitor.probed_at + 1, revision, labels, target, np.ones_like(target, np.float32))


def _run(rates, final, *, revision_at_end=1):
    """Probes with ``rates`` while the model's weight is set to the probe's index; the end reads ``final``."""
    guard, monitor, model = FitGuard(ratio=1.25), ProbeMonitor(every=1), torch.nn.Linear(1, 1, bias=False)
    guard.begin(10.0)
    for i, rate in enumerate(rates):
        with torch.no_grad():
            model.weight.fill_(float(i))
        _read(monitor, rate)
        guard.observe(i, monitor, model)
    with torch.no_grad():
        model.weight.fill_(-1.0)
    message = guard.end(monitor, lambda: _read(monitor, final, revision_at_end), model)
    return guard, model, message


def test_the_best_fitting_weights_come_back_when_the_final_ones_fit_clearly_worse():
    guard, model, message = _run([0.05, 0.01, 0.03], final=0.04)  # 0.04 > 1.25 * 0.01
    assert guard.restored_from == 1 and model.weight.item() == 1.0
    assert "keeping those of step 1" in message


def test_final_weights_that_fit_about_as_well_stay():
    guard, model, message = _run([0.05, 0.01, 0.03], final=0.012)  # within 1.25x
    assert guard.restored_from is None and model.weight.item() == -1.0 and message is None


def test_weights_kept_for_other_labels_do_not_come_back():
    guard, model, message = _run([0.05, 0.01, 0.03], final=0.04, revision_at_end=2)
    assert guard.restored_from is None and model.weight.item() == -1.0 and message is None


def test_guard_probes_only_in_the_guarded_part_of_a_budgeted_run():
    guard, monitor = FitGuard(start=0.5), ProbeMonitor(every=50)
    assert not guard.due(100, None, monitor)  # open-ended training is never guarded
    assert not guard.due(100, 0.4, monitor)
    assert guard.due(100, 0.5, monitor) and not guard.due(120, 0.9, monitor)
    assert not FitGuard(ratio=0).due(100, 0.9, monitor)


def test_another_budget_drops_the_kept_weights():
    guard, monitor, model = FitGuard(), ProbeMonitor(), torch.nn.Linear(1, 1)
    assert guard.begin(10.0)
    _read(monitor, 0.1)
    guard.observe(0, monitor, model)
    assert guard.kept is not None and not guard.begin(10.0)
    assert guard.begin(20.0) and guard.kept is None


@pytest.mark.parametrize("bad", [{"ratio": 0.5}, {"start": 1.5}, {"floor": -1.0}])
def test_fit_guard_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        FitGuard(**bad)
