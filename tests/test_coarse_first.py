"""A large volume's first pass in two parts, the coarse one shown first (before the exact one, nothing twice)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sparseseg.core import coarse_first
from napari_sparseseg.core.box import Box
from napari_sparseseg.core.config import ResponderConfig
from napari_sparseseg.core.events import Guidance, Prediction
from napari_sparseseg.core.first_responder import FirstResponder
from napari_sparseseg.core.session import SegmentationSession
from tests.conftest import sphere_volume, tiny_config

SHAPE, SPACING = (12, 33, 30), (2.0, 1.0, 1.0)  # odd y: the last row of coarse answers stands for one voxel


def _session() -> tuple[SegmentationSession, np.ndarray]:
    image, mask = sphere_volume(SHAPE, radius=7)
    session = SegmentationSession(image, num_classes=1, spacing=SPACING, config=tiny_config(trees=8))
    for z in (3, 6, 9):
        session.add_labels((z, slice(None), slice(None)), mask[z] + 1)
    return session, mask


@pytest.mark.parametrize("step", [1, 2, 3])
def test_the_coarse_part_repeats_every_step_th_answer_and_the_second_is_the_exact_pass(step, monkeypatch):
    session, _ = _session()
    responder = session.responder
    assert responder.fit() and responder.refine()  # a stage that reads context columns too
    monkeypatch.setattr(coarse_first, "_ROWS", 200)  # several slabs of z
    coarse, exact = coarse_first.coarse_then_exact(responder, SHAPE, step)
    whole = responder.predict()
    assert coarse.shape == exact.shape == whole.shape and coarse.dtype == exact.dtype == np.float32
    np.testing.assert_allclose(exact, whole, atol=1e-6)  # every voxel's own answer, none predicted twice
    np.testing.assert_allclose(coarse[:, :, ::step, ::step], whole[:, :, ::step, ::step], atol=1e-6)
    for dy in range(step):
        for dx in range(step):
            part = coarse[:, :, dy::step, dx::step]
            np.testing.assert_array_equal(part, coarse[:, :, ::step, ::step][:, :, :part.shape[2], :part.shape[3]])
    with pytest.raises(ValueError):
        next(coarse_first.coarse_then_exact(responder, SHAPE, 0))


def test_strided_answers_need_the_full_grid():
    image, mask = sphere_volume(SHAPE, radius=7)
    session, _ = _session()
    binned = FirstResponder(image, session.volume, ResponderConfig(trees=4, max_feature_bytes=1 << 20))
    assert binned.grid is not None and binned.grid.binned and binned.fit() and binned.binned
    with pytest.raises(RuntimeError):
        binned.predict_strided((slice(None), slice(0, None, 2), slice(0, None, 2)))


def test_the_coarse_part_is_due_when_the_last_pass_or_else_the_view_says_the_volume_takes_long():
    assert coarse_first.coarse_due((0.5, 1000), (10, 100, 100))  # 50 s expected from the view
    assert not coarse_first.coarse_due((0.5, 1000), (10, 100, 100), last_seconds=0.9)  # the last pass knows better
    assert coarse_first.coarse_due(None, (10, 100, 100), last_seconds=3.0)
    assert not coarse_first.coarse_due((0.001, 1000), (10, 10, 10))
    assert not coarse_first.coarse_due((0.5, 0), (10, 100, 100)) and not coarse_first.coarse_due(None, (10, 10, 10))


@pytest.mark.parametrize("slow", [False, True])
def test_a_slow_volume_shows_the_view_then_the_coarse_part_then_the_exact_volume_and_stores_only_that(slow,
                                                                                                      monkeypatch):
    session, mask = _session()
    monkeypatch.setattr(coarse_first, "COARSE_AFTER_SECONDS", 0.0 if slow else 1e9)
    recorded: list[Prediction] = []

    class Recorder:
        def record_prediction(self, prediction):
            recorded.append(prediction)

    view = Box((6, 0, 0), (7, SHAPE[1], SHAPE[2]))
    shown = []
    for event in session.display.respond(session.responder, lambda: view, Recorder()):
        if isinstance(event, Guidance):
            break
        shown.append(event)
    boxes = [p.box for p in shown]
    assert boxes[0] == view and all(b == Box.full(SHAPE) for b in boxes[1:])
    assert all(p.learner == "forest" for p in shown)
    if slow:  # the coarse part, then the exact pass of the same forest
        rough, exact = shown[1].probabilities, shown[2].probabilities
        np.testing.assert_allclose(rough[:, :, ::2, ::2], exact[:, :, ::2, ::2], atol=1e-6)
        assert not np.array_equal(rough, exact)
        dice = 2 * np.sum(shown[1].labels & mask) / (shown[1].labels.sum() + mask.sum())
        assert dice > 0.85  # a fair first look
    assert len(shown) == 1 + slow + session.responder.stage  # the view, [the coarse part,] each stage's volume
    assert len(recorded) == 1 and recorded[0] is shown[-1]  # what is stored is the exact pass of the last stage
    np.testing.assert_allclose(shown[-1].probabilities, session.responder.predict(), atol=1e-6)


def test_once_a_pass_over_the_volume_was_timed_it_decides_not_the_view(monkeypatch):
    session, _ = _session()
    display, responder = session.display, session.responder
    monkeypatch.setattr(coarse_first, "COARSE_AFTER_SECONDS", 1e-9)  # any view calls the volume slow
    view = Box((6, 0, 0), (7, SHAPE[1], SHAPE[2]))

    def whole_volumes() -> int:
        return sum(isinstance(e, Prediction) and e.box == Box.full(SHAPE) for e in display.respond(responder,
                                                                                                    lambda: view))

    assert whole_volumes() == 1 + responder.stage  # the coarse part, then each stage
    assert display._pass_seconds is not None and display._pass_seconds > 0
    display._pass_seconds = 0.0  # the last pass over this volume took no time: no coarse part next time
    session.add_correction((2, slice(None), slice(None)), 1)
    assert whole_volumes() == responder.stage


def test_without_a_view_the_middle_slice_times_the_first_pass(monkeypatch):
    session, _ = _session()
    monkeypatch.setattr(coarse_first, "COARSE_AFTER_SECONDS", 1e-9)
    shown = [e for e in session.display.respond(session.responder, lambda: None) if isinstance(e, Prediction)]
    assert all(p.box == Box.full(SHAPE) for p in shown)  # (3D view: nothing but whole volumes shown)
    assert len(shown) == 1 + session.responder.stage  # the coarse part first


def test_a_stack_one_voxel_wide_is_answered_in_two_parts_too():
    image, mask = sphere_volume((12, 33, 1), radius=7)
    session = SegmentationSession(image, num_classes=1, config=tiny_config(trees=8))
    for y in (8, 16, 24):
        session.add_labels((slice(None), y, slice(None)), mask[:, y] + 1)
    responder = session.responder
    assert responder.fit()
    coarse, exact = coarse_first.coarse_then_exact(responder, image.shape, 2)  # raised: no second column
    np.testing.assert_allclose(exact, responder.predict(), atol=1e-6)
    assert coarse.shape == exact.shape
