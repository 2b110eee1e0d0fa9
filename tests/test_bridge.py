"""The worker-side generators of the napari layer, run inline (no Qt)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np

from napari_sparseseg.core.box import Box
from napari_sparseseg.core.config import ResponderConfig
from napari_sparseseg.core.display import Display
from napari_sparseseg.core.events import Prediction, TrainStep
from napari_sparseseg.core.handover import HandOver
from napari_sparseseg.core.session import SegmentationSession
from napari_sparseseg.plugin.bridge import RunFlags, SessionReady, TrainingError, compute


class FakeClock:
    """``time.perf_counter`` and ``time.sleep`` of a clock that moves only when slept on."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeSession:
    """Steps take ``step_s``, predictions ``predict_s`` of ``clock`` (default: real time); records what was
    predicted."""

    def __init__(self, step_s: float = 0.005, predict_s: float = 0.05, clock=time) -> None:
        self.clock = clock
        self.trainer = SimpleNamespace(step=0, close=lambda: None)  # close(): ends the batch prefetcher
        self.volume = SimpleNamespace(shape=(8, 16, 16), revision=1, spacing=(1.0, 1.0, 1.0), holdout=None,
                                      pseudo=None)
        # No first responder: the net's predictions are shown as they come.
        self.config = SimpleNamespace(responder=ResponderConfig(enabled=False), train=SimpleNamespace(seed=0))
        # No first responder: the real display shows the net's predictions as they come.
        self.display = SimpleNamespace(live_responder=lambda: None, handover=HandOver(),
                                       guidance=lambda shown: iter(()), estimated=lambda prediction: prediction)
        self.display.show_net = lambda prediction, responder: Display.show_net(self.display, prediction, responder)
        self.step_s, self.predict_s = step_s, predict_s
        self.predicted: list[Box | None] = []
        self.store = None  # no session store bound

    def train(self, max_steps: int, should_stop=None):
        self.clock.sleep(self.step_s)
        self.trainer.step += 1
        yield TrainStep(self.trainer.step, 1.0, 1, 0.0, 0.0, 1e-3)

    def predict(self, box=None):
        self.clock.sleep(self.predict_s)
        self.predicted.append(box)
        b = box or Box.full(self.volume.shape)
        z = np.zeros(b.shape, np.uint8)
        return Prediction(b, z, np.zeros((2,) + b.shape, np.float32), z.astype(np.float32), self.trainer.step, 1)

    def merge(self, prediction):
        return prediction.labels

    @property
    def revision(self):
        return self.volume.revision

    # The real pacing loop, driven by the fake's train/predict timings.
    interactive = SegmentationSession.interactive


def test_paced_interactive_caps_prediction_time_and_alternates_view_and_volume(monkeypatch):
    import napari_sparseseg.core.session as session_module

    clock = FakeClock()  # the pacing reads the clock the fake's steps and predictions move: no wall-clock timing
    monkeypatch.setattr(session_module, "time", clock)
    session = FakeSession(clock=clock)
    view = Box((4, 0, 0), (5, 16, 16))
    t_pred = 0.0
    events = session.interactive(lambda: view, refresh_seconds=0.0, first_refresh_steps=3,
                                 should_stop=lambda: clock.now > 1.5, max_predict_share=0.3)
    last = clock.now
    for ev in events:
        if isinstance(ev, Prediction):
            t_pred += clock.now - last
        last = clock.now
    assert session.predicted[:3] == [view, None, view]
    assert len(session.predicted) >= 4
    assert t_pred / clock.now <= 0.3 + 0.05 / clock.now  # the share, give or take the prediction under way at the end


def test_compute_wraps_errors_and_always_sets_done():
    flags = RunFlags.new()

    def build():
        raise RuntimeError("no GPU")

    gen = compute(build, lambda: None, flags)
    try:
        next(gen)
    except TrainingError as exc:
        assert "RuntimeError: no GPU" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("expected TrainingError")
    assert flags.started.is_set() and flags.done.is_set()


def test_compute_stops_between_events_and_merges_predictions():
    session = FakeSession()
    flags = RunFlags.new()
    gen = compute(lambda: session, lambda: None, flags, refresh_seconds=0.0, first_refresh_steps=1)
    assert isinstance(next(gen), SessionReady)
    kinds = [type(next(gen)).__name__ for _ in range(4)]
    assert "Refresh" in kinds  # predictions arrive merged, as Refresh
    flags.stop.set()
    assert list(gen) == []  # ends at the next resume, without another step
    assert flags.done.is_set()
