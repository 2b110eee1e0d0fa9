"""The command line writes what the window would show: the first responder's mask while the net is behind."""

from dataclasses import replace

import numpy as np
import pytest

from napari_sparseseg.core.box import Box
from napari_sparseseg.core.encoding import merge_labels
from napari_sparseseg.core.events import Prediction
from napari_sparseseg.core.session import SegmentationSession
from napari_sparseseg.core.shown import ShownMask, final_mask, run_shown
from tests.conftest import sphere_volume, tiny_config

SHAPE = (16, 32, 32)


def _session() -> tuple[SegmentationSession, np.ndarray]:
    image, mask = sphere_volume(SHAPE, radius=7)
    session = SegmentationSession(image, num_classes=1, spacing=(2.0, 1.0, 1.0), config=tiny_config(trees=8))
    for z in (5, 8, 11):
        session.add_labels((z, slice(None), slice(None)), mask[z] + 1)
    return session, mask


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.sum((a > 0) & (b > 0)) / max(1, np.sum(a > 0) + np.sum(b > 0)))


def test_the_mask_written_is_the_first_responders_while_the_net_is_behind():
    session, mask = _session()
    state = {"whole": False, "events": 0}

    def note(event, shown, elapsed):  # the budget ends once the first responder has shown the whole volume
        state["events"] += 1
        state["whole"] = state["whole"] or (isinstance(event, Prediction) and event.box == Box.full(SHAPE))

    shown = run_shown(session, 60.0, note, clock=lambda: float("inf") if state["whole"] else 0.0)
    assert shown.learner == shown.written == "forest" and shown.whole and state["events"] >= 1
    assert shown.overtime == 0  # whole within the budget (the clock passed it only after)
    written = final_mask(session, shown)
    np.testing.assert_array_equal(written, merge_labels(shown.labels, session.volume.labels))
    np.testing.assert_array_equal(written[8], mask[8])  # labels kept where painted
    assert _dice(written, mask) > 0.9
    assert _dice(written, mask) > _dice(session.segment(), mask) + 0.2  # the net, barely trained, is far behind
    assert shown.estimate is not None and 0 < shown.estimate.dice <= 1
    assert session.volume.holdout is None  # the loop closed and cleaned up


def test_the_net_is_written_when_it_is_shown_or_nothing_covered_the_volume():
    session, _ = _session()
    shown = ShownMask.empty(SHAPE)
    np.testing.assert_array_equal(final_mask(session, shown), session.segment())  # nothing shown yet
    prediction = session.predict(Box((0, 0, 0), (4, 32, 32)))
    shown.update(prediction)
    assert shown.learner == shown.written == "net" and not shown.whole
    np.testing.assert_array_equal(final_mask(session, shown), session.segment())
    shown.update(replace(prediction, volume=1, box=Box.full(SHAPE), labels=np.ones(SHAPE, np.uint8)))
    assert not shown.whole and not shown.labels[4:].any()  # another training volume's is not shown over this one


def test_the_budget_must_be_positive():
    session, _ = _session()
    with pytest.raises(ValueError, match="seconds"):
        run_shown(session, 0.0)


def test_a_budget_too_short_for_a_whole_mask_waits_for_the_first_one():
    session, mask = _session()
    ticks = iter(range(10**6))  # every clock reading a second later: the budget is over at once

    shown = run_shown(session, 0.5, clock=lambda: float(next(ticks)))
    assert shown.whole and shown.overtime > 0 and shown.written == "forest"
    assert _dice(final_mask(session, shown), mask) > 0.9


def test_without_labels_nothing_is_waited_for():
    image, _ = sphere_volume(SHAPE, radius=7)
    session = SegmentationSession(image, num_classes=1, config=tiny_config(trees=8))
    ticks = iter(range(10**6))
    shown = run_shown(session, 0.5, clock=lambda: float(next(ticks)))
    assert not shown.whole and shown.learner is None


def test_the_wait_for_a_whole_mask_is_bounded():
    from napari_sparseseg.core.shown import MAX_OVERTIME

    session, _ = _session()
    ticks = iter(range(10**6))
    shown = run_shown(session, 0.5, clock=lambda: (MAX_OVERTIME + 1) * next(ticks))
    assert shown.overtime >= MAX_OVERTIME and not shown.whole  # the first poll is past the longest wait
