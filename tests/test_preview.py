"""The first look at a large volume: a strided answer of the forest shown, before its exact pass."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sparseseg.core import preview
from napari_sparseseg.core.box import Box
from napari_sparseseg.core.events import Guidance, Prediction
from napari_sparseseg.core.session import SegmentationSession
from tests.conftest import sphere_volume, tiny_config

SHAPE, SPACING = (12, 33, 30), (2.0, 1.0, 1.0)  # odd y: the last row of answers stands for one voxel


def _session() -> tuple[SegmentationSession, np.ndarray]:
    image, mask = sphere_volume(SHAPE, radius=7)
    session = SegmentationSession(image, num_classes=1, spacing=SPACING, config=tiny_config(trees=8))
    for z in (3, 6, 9):
        session.add_labels((z, slice(None), slice(None)), mask[z] + 1)
    return session, mask


@pytest.mark.parametrize("step", [1, 2, 3])
def test_the_strided_answer_is_the_forests_at_every_step_th_voxel_repeated_over_the_voxels_it_starts(step,
                                                                                                     monkeypatch):
    session, _ = _session()
    responder = session.responder
    assert responder.fit()
    monkeypatch.setattr(preview, "_ROWS", 200)  # several slabs of z
    rough = preview.strided_answer(responder, SHAPE, step)
    exact = responder.predict()
    assert rough.shape == exact.shape and rough.dtype == np.float32
    np.testing.assert_allclose(rough[:, :, ::step, ::step], exact[:, :, ::step, ::step], atol=1e-6)
    for dy in range(step):
        for dx in range(step):
            part = rough[:, :, dy::step, dx::step]
            np.testing.assert_array_equal(part, rough[:, :, ::step, ::step][:, :, :part.shape[2], :part.shape[3]])
    with pytest.raises(ValueError):
        preview.strided_answer(responder, SHAPE, 0)


def test_a_preview_is_due_when_the_whole_volume_would_take_long_at_the_rate_of_the_view():
    assert preview.preview_due(0.5, 1000, (10, 100, 100))  # 50 s expected
    assert not preview.preview_due(0.001, 1000, (10, 10, 10))
    assert not preview.preview_due(0.5, 0, (10, 100, 100)) and not preview.preview_due(0.0, 1000, (10, 100, 100))


@pytest.mark.parametrize("slow", [False, True])
def test_a_slow_volume_shows_the_view_then_a_preview_then_the_exact_volume_and_stores_only_that(slow, monkeypatch):
    session, mask = _session()
    monkeypatch.setattr(preview, "PREVIEW_AFTER_SECONDS", 0.0 if slow else 1e9)
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
    first_whole = shown[1]
    if slow:  # the preview, then the exact pass of the same forest
        assert len(shown) >= 3
        rough, exact = first_whole.probabilities, shown[2].probabilities
        np.testing.assert_allclose(rough[:, :, ::2, ::2], exact[:, :, ::2, ::2], atol=1e-6)
        assert not np.array_equal(rough, exact)
        dice = 2 * np.sum(first_whole.labels & mask) / (first_whole.labels.sum() + mask.sum())
        assert dice > 0.85  # a fair first look
    exact_last = shown[-1]
    assert len(recorded) == 1 and recorded[0] is exact_last  # what is stored is the exact pass of the last stage
    np.testing.assert_allclose(exact_last.probabilities, session.responder.predict(), atol=1e-6)
