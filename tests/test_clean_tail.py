"""The clean tail: a budgeted run's end trains without augmentation, scaled by the coverage, once settled."""

from __future__ import annotations

import pytest

from napari_sparseseg.core.clean_tail import CleanTail
from napari_sparseseg.core.probe import ProbeMonitor


class _Drifts:
    """A probe whose drift reads the given values in turn."""

    def __init__(self, monitor: ProbeMonitor, values):
        self.monitor, self.values, self.at = monitor, iter(values), []

    def __call__(self):
        self.monitor.drift = next(self.values)


@pytest.mark.parametrize("share", [0.0, 0.25, 1.0])
def test_without_a_gate_the_tail_is_its_share_of_the_budget(share):
    tail, monitor = CleanTail(share=share, max_drift=0.0), ProbeMonitor()
    progress = (0.0, 0.5, 0.74, 0.76, 0.99)
    augmented = [tail.augment(step, p, 1.0, monitor, lambda: None) for step, p in enumerate(progress)]
    assert augmented == [p < 1 - share for p in progress]


def test_open_ended_training_always_augments():
    tail = CleanTail(share=1.0, max_drift=0.0)
    assert tail.augment(0, None, 1.0, ProbeMonitor(), lambda: None)
    assert tail.since is None


def test_the_tail_waits_until_the_prediction_has_settled():
    monitor = ProbeMonitor(every=1)
    tail = CleanTail(share=0.5, max_drift=0.15, lead=0.15)
    probe = _Drifts(monitor, [0.9, 0.6, 0.3, 0.1])
    probed = []
    augmented = [tail.augment(step, p, 1.0, monitor, lambda: probed.append(1) or probe())
                 for step, p in enumerate((0.1, 0.34, 0.5, 0.6, 0.7, 0.8, 0.9))]
    # no probe before 0.5 - lead; past its share the tail waits for a drift below 0.15 (the 4th probe)
    assert len(probed) == 4
    assert augmented == [True, True, True, True, True, False, False]
    assert tail.since == 5
    assert "without augmentation" in tail.describe(monitor) and "0.100" in tail.describe(monitor)


def test_strokes_get_a_share_scaled_by_their_plane_coverage():
    tail = CleanTail(share=0.5)
    assert tail.share_for(0.05) == pytest.approx(0.025)
    assert tail.share_for(1.0) == pytest.approx(0.5)


def test_a_new_budget_augments_again():
    tail = CleanTail(share=1.0, max_drift=0.0)
    assert not tail.augment(0, 0.5, 1.0, ProbeMonitor(), lambda: None)
    tail.restart()
    assert tail.since is None


@pytest.mark.parametrize("bad", [{"share": -0.1}, {"share": 1.5}, {"max_drift": -1.0}, {"lead": 2.0}])
def test_clean_tail_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        CleanTail(**bad)
