"""The learning rate and the loss terms' ramps: pure functions of the step, the progress and the labels."""

from __future__ import annotations

import pytest

from napari_sparseseg.core.schedule import LR_FLOOR, LossSchedule, learning_rate


def test_learning_rate_warms_up_then_stays_open_ended():
    assert learning_rate(1.0, 0, 4, None) == pytest.approx(0.25)
    assert learning_rate(1.0, 3, 4, None) == pytest.approx(1.0)
    assert learning_rate(1.0, 10_000, 4, None) == pytest.approx(1.0)  # interactive training never decays


def test_learning_rate_decays_over_a_budget_to_its_floor():
    rates = [learning_rate(1.0, 100, 4, p) for p in (0.0, 0.5, 0.69, 0.9, 1.0)]
    assert rates == sorted(rates, reverse=True)
    assert rates[0] == pytest.approx(1.0)
    assert rates[-1] == pytest.approx(LR_FLOOR**0.9)
    assert rates[-2] == pytest.approx(rates[-1])  # past 1 - floor it holds


def test_smoothness_acts_on_strokes_not_on_whole_slices_and_ramps_in():
    terms = LossSchedule(smoothness=4.0, smoothness_ramp_steps=200)
    assert terms.smoothness_at(0, 0.05) == 0.0  # from random weights the smooth answer is one class
    assert terms.smoothness_at(100, 0.05) == pytest.approx(2.0 * 0.95)
    assert terms.smoothness_at(200, 0.05) == pytest.approx(4.0 * 0.95)
    assert terms.smoothness_at(10_000, 0.05) == pytest.approx(4.0 * 0.95)
    assert terms.smoothness_at(10_000, 1.0) == 0.0  # whole slices mark the boundaries themselves
    assert LossSchedule(smoothness=0.0).smoothness_at(10_000, 0.0) == 0.0


def test_hardest_term_ramps_in_with_the_labeled_error_rate():
    """Off while the net fits its labels, full while it contradicts a whole labeled region."""
    terms = LossSchedule(hardest=2.0, hardest_ramp=(0.02, 0.04), hardest_from_step=200)
    assert terms.hardest_at(500, None) == 0.0  # nothing measured yet
    assert terms.hardest_at(199, 0.5) == 0.0  # an untrained net gets a third wrong: it waits
    for rate, expected in [(0.01, 0.0), (0.03, 1.0), (0.08, 2.0)]:
        assert terms.hardest_at(200, rate) == pytest.approx(expected)


@pytest.mark.parametrize("bad", [{"dice": -1.0}, {"smoothness": -1.0}, {"hardest": -0.1},
                                 {"smoothness_ramp_steps": -1}, {"hardest_from_step": -5},
                                 {"hardest_ramp": (0.04, 0.02)}, {"hardest_ramp": (0.0, 1.5)}])
def test_loss_schedule_rejects_bad_values(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        LossSchedule(**bad)
