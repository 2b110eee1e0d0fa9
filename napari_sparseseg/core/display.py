"""What the prediction layer shows: the first responder's prediction, the net's, or their blend.

Every learner is scored on the held-back labels (:mod:`.holdout`) that none of
them trains on, and :class:`~.handover.HandOver` chooses the one shown: the net
takes over only when it scores better, so the mask shown never gets worse when
it does, and does not flicker between two learners that are level. Each
whole-volume mask shown carries its expected Dice (:mod:`.estimate`) and is
followed by where to paint next (:mod:`.guidance`). The first responder's
confident answers go to the net as pseudo-labels (:mod:`.distill`), fading as
the net catches up.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .annotation import AnnotatedVolume
from .box import Box
from .coarse_first import coarse_due, coarse_then_exact
from .config import SessionConfig
from .distill import distill_weight, pseudo_labels
from .estimate import DiceEstimate, expected_dice
from .events import Guidance, Notice, Prediction, TrainStep, Waiting
from .first_responder import FirstResponder
from .guidance import likely_errors, suggest_slices
from .handover import HandOver, blend, held_back_scores
from .inference import entropy, top_class

if TYPE_CHECKING:
    from .trainer import Trainer

Event = TrainStep | Waiting | Notice | Prediction | Guidance


class Recorder(Protocol):
    """What the interactive loop tells a session store (``napari_sparseseg.store``), if any."""

    def on_step(self, trainer: Trainer, event: TrainStep) -> None:
        """A training step finished (called in the training thread)."""

    def record_prediction(self, prediction: Prediction) -> None:
        """A prediction is about to be shown."""

    def record_config(self, config: SessionConfig) -> None:
        """The session's settings changed (``SegmentationSession.update_training``)."""

    def add_volume(self, other: Any) -> None:
        """The session also learns from another volume (a ``session.OtherVolume``): keep it."""

    def forget_volume(self, other: Any) -> None:
        """The session could not learn from ``other`` after all: drop what :meth:`add_volume` kept."""


class Display:
    """Chooses and composes the prediction shown, for one annotated volume.

    Parameters
    ----------
    volume : AnnotatedVolume
        The labels (the held-back ones among them) and where pseudo-labels go.
    responder : FirstResponder
        The fast first responder.
    config : SessionConfig
        Its ``responder`` settings (margin, distillation) and the seed.
    step : callable
        The net's training step now (stamped on the predictions composed here).
    """

    def __init__(self, volume: AnnotatedVolume, responder: FirstResponder, config: SessionConfig,
                 step: Callable[[], int]) -> None:
        self.volume, self.responder, self.config, self._step = volume, responder, config, step
        #: Which learner's prediction is shown, and their latest held-back scores.
        self.handover = HandOver(config.responder.margin)
        #: The latest whole-volume class probabilities ``(K + 1, z, y, x)`` of each learner (None: none yet).
        self._latest: dict[str, np.ndarray | None] = {"forest": None, "net": None}
        self._held_back_cache: tuple[int, np.ndarray, np.ndarray] = (-1, np.empty((0, 3), int), np.empty(0, int))
        #: ``(revision, (n, K + 1) probabilities)`` of the first responder fitted without the held-back labels, at
        #: the held-back voxels of that label revision (what the forest and the blend are scored with).
        self._forest_held_back: tuple[int, np.ndarray | None] = (-1, None)
        #: The expected Dice of the latest whole-volume mask shown (:mod:`.estimate`).
        self._estimate: DiceEstimate | None = None
        #: Seconds the first stage's last pass over the whole volume took (None: none yet).
        self._pass_seconds: float | None = None

    def latest(self, learner: str) -> np.ndarray | None:
        """The latest whole-volume class probabilities ``(K + 1, z, y, x)`` of ``learner`` ("forest" or "net")."""
        return self._latest.get(learner)

    def live_responder(self) -> FirstResponder | None:
        """The first responder, when this volume can have one."""
        return self.responder if self.responder.unavailable_reason() is None else None

    def _held_back(self) -> tuple[int, np.ndarray, np.ndarray]:
        """``(revision, coords (n, 3), classes (n,))`` of the labeled voxels held back now (cached per revision).

        One snapshot for a whole scoring: the user paints on while the learners predict at these voxels, and a
        second read would give labels of another length than the predictions.
        """
        revision = self.volume.revision
        if self._held_back_cache[0] != revision:
            coords, classes, held = self.responder.labeled_rows(self.volume.holdout)
            self._held_back_cache = (revision, coords[held], classes[held])
        return self._held_back_cache

    def _score(self, predicted: dict[str, np.ndarray], coords: np.ndarray, truth: np.ndarray) -> None:
        """Score learners' class predictions ``(n,)`` at the held-back voxels ``coords`` ``(n, 3)`` of classes
        ``truth`` ``(n,)`` (one :meth:`_held_back` snapshot) and let the hand-over choose."""
        if not len(coords) or not predicted:
            return
        scores = held_back_scores(truth, predicted, self.volume.num_classes + 1, self.volume.holdout.block_of(coords),
                                  seed=self.config.train.seed)
        if scores:
            self.handover.update(scores)
        else:  # background alone held back (now): no learner keeps a score of labels gone or released
            self.handover.unscored()

    def respond(self, responder: FirstResponder, view_box: Callable[[], Box | None],
                store: Recorder | None = None, should_stop: Callable[[], bool] = lambda: False) -> Iterator[Event]:
        """Bring the first responder up to the labels now (:meth:`~.first_responder.FirstResponder.behind`) and
        yield what is to be shown.

        On new labels the first stage is refitted and its answer shown at once (the box in view, then the volume;
        where that is expected to take over :data:`~.coarse_first.COARSE_AFTER_SECONDS`, its coarse part first,
        :mod:`.coarse_first`).
        Each next stage (:meth:`~.first_responder.FirstResponder.refine`) replaces the previous one's answer; where
        to paint next follows the last. While the first responder is shown, its classifiers fitted without the
        held-back labels are fitted and scored after its last mask (on the tumour MRI each later stage's mask came
        4-6 s sooner); while the net or the blend is shown, before each stage's mask, which is shown only if the
        first responder leads again. ``should_stop`` is asked before each next stage (seconds on a large volume):
        the mask on screen when it ends the call is the one stored, and a responder stopped there takes up its
        remaining stages next time. Otherwise only the last stage's mask is stored.
        """
        previous, full = None, None
        later = self.handover.shown in (None, "forest")  # the forest on screen: its mask first, then its scoring
        if responder.stale:
            if not responder.fit(self.volume.holdout):  # fewer than two classes labeled (maybe no longer)
                if self._latest.pop("forest", None) is not None:  # its mask, scores, pseudo-labels: of labels gone
                    self._forest_held_back, self.volume.pseudo = (-1, None), None
                    self.handover.forget("forest", "blend")
                return
            shown = self._learner_for_stage(responder, later)
            view: tuple[float, int] | None = None
            if shown != "net":
                box = view_box()
                box = None if box is None else box.clip(self.volume.shape)
                if box is not None and not box.empty:
                    t0 = time.perf_counter()
                    answer = responder.predict(box)
                    view = (time.perf_counter() - t0, int(np.prod(box.shape)))
                    yield self.estimated(self._composed(box, shown, forest=answer, revision=responder.revision))
            previous = yield from self._first_pass(responder, shown, view)
            self.set_forest(previous)  # kept for the blend and the net's targets while the net is shown
            full = self._full(shown, None, responder.revision) if shown != "net" else None
            if full is not None:
                yield full
        while not responder.refined:
            if should_stop():
                if full is not None and store is not None:
                    store.record_prediction(full)
                return
            if not responder.refine(previous) and full is not None:  # the next stage was not kept: the mask stays
                if store is not None:
                    store.record_prediction(full)
                break  # (with no mask yet in this call, the stage kept is shown once more below, then guidance)
            shown = self._learner_for_stage(responder, later)
            previous = responder.predict()
            self.set_forest(previous)
            full = None
            if shown != "net":
                full = self._full(shown, store if responder.refined else None, responder.revision)
                yield full
        if full is not None:
            yield from self.guidance(full)
        if later:  # should the net or the blend now lead, it is shown with the net's next prediction (show_net)
            self._score_forest(responder, should_stop)
            self._fade_pseudo_labels()

    def _first_pass(self, responder: FirstResponder, shown: str,
                    view: tuple[float, int] | None) -> Generator[Prediction, None, np.ndarray]:
        """The first stage's whole-volume probabilities ``(K + 1, z, y, x)`` (returned); where the pass is expected to
        take long (:func:`~.coarse_first.coarse_due`: as long as the last one on this volume, else at the rate the
        view was answered, ``(seconds, voxels)``, or without one the middle z slice), its coarse part yielded first
        while the forest is shown."""
        shape = self.volume.shape
        may_split = shown == "forest" and not responder.binned  # a coarse part is shown only for the full grid
        if may_split and view is None and self._pass_seconds is None:
            t0 = time.perf_counter()
            middle = responder.predict(Box((shape[0] // 2, 0, 0), (shape[0] // 2 + 1, shape[1], shape[2])))
            view = (time.perf_counter() - t0, middle[0].size)
        t0 = time.perf_counter()
        if not may_split or not coarse_due(view, shape, self._pass_seconds):
            proba = responder.predict()
            self._pass_seconds = time.perf_counter() - t0
            return proba
        passes = coarse_then_exact(responder, shape)
        coarse = next(passes)
        seconds = time.perf_counter() - t0
        yield replace(self._composed(Box.full(shape), shown, forest=coarse, revision=responder.revision),
                      estimate=self._estimate)
        t0 = time.perf_counter()
        proba = next(passes)
        self._pass_seconds = seconds + time.perf_counter() - t0
        return proba

    def _learner_for_stage(self, responder: FirstResponder, later: bool) -> str | None:
        """The learner to show with the first responder's new stage: while the forest is on screen (``later``), the
        forest at once (scored after its last mask); otherwise as the stage scores on the held-back labels."""
        return self.handover.offer("forest") if later else self._score_forest(responder)

    def _score_forest(self, responder: FirstResponder, should_stop: Callable[[], bool] = lambda: False) -> str | None:
        """Score the first responder (and its blend with the net) on the held-back labels, its scored classifiers
        fitted up to the stage shown first (:meth:`~.first_responder.FirstResponder.fit_scored`); the learner to
        show."""
        revision, coords, truth = self._held_back()
        predicted = {}
        if len(coords) and responder.fit_scored(should_stop):
            forest_at = responder.predict_scored_at(coords)
            self._forest_held_back = (revision, forest_at)
            predicted["forest"] = forest_at.argmax(1)
            net_at = self._net_at_held_back(coords)
            if net_at is not None:  # the net too, on the same labels: no learner keeps a score of labels gone
                predicted["net"] = net_at.argmax(1)
                predicted["blend"] = blend(forest_at, net_at).argmax(1)
        self._score(predicted, coords, truth)
        return self.handover.offer("forest")  # the forest, unless a learner is shown already

    def _full(self, learner: str, store: Recorder | None, revision: int) -> Prediction:
        """The whole-volume prediction of ``learner`` from the latest probabilities, estimated and recorded."""
        full = self.estimated(self._composed(Box.full(self.volume.shape), learner, revision=revision))
        if store is not None:
            store.record_prediction(full)
        return full

    def estimated(self, prediction: Prediction) -> Prediction:
        """``prediction`` with the expected Dice of the mask shown: made anew from a whole-volume prediction (of an
        in-memory volume), carried on by a prediction of the view.

        The mask is scored under the first responder's probabilities when there are any (they are calibrated
        well enough on the shared volumes; a net's are not, :mod:`.estimate`), else under its own learner's.
        """
        if prediction.box == Box.full(self.volume.shape) and not self.volume.lazy:
            forest = self._latest.get("forest")
            judge = forest if forest is not None and forest.shape == prediction.probabilities.shape \
                else prediction.probabilities
            self._estimate = expected_dice(judge, np.asarray(self.volume.labels), prediction.labels,
                                           seed=self.config.train.seed)
        return replace(prediction, estimate=self._estimate)

    def guidance(self, shown: Prediction) -> Iterator[Guidance]:
        """Where to paint next, from a whole-volume prediction just shown (in-memory volumes)."""
        if self.volume.lazy:
            return
        labeled = np.asarray(self.volume.labels) > 0
        yield Guidance(tuple(suggest_slices(shown.uncertainty, labeled)),
                       tuple(likely_errors(shown.uncertainty, labeled)), shown.revision)

    def set_forest(self, probabilities: np.ndarray) -> None:
        """Keep the first responder's whole-volume probabilities and hand its confident answers to the net."""
        self._latest["forest"] = probabilities
        weight = distill_weight(self.config.responder.distill, self.handover.scores)
        self.volume.pseudo = pseudo_labels(probabilities, weight) if self.config.responder.distill > 0 else None

    def _fade_pseudo_labels(self) -> None:
        """Reweigh the pseudo-labels after the learners were scored again."""
        pseudo = self.volume.pseudo
        if pseudo is not None:
            self.volume.pseudo = replace(pseudo, weight=distill_weight(self.config.responder.distill,
                                                                       self.handover.scores))

    def _net_at_held_back(self, coords: np.ndarray) -> np.ndarray | None:
        """The net's latest whole-volume probabilities at ``coords`` ``(n, K + 1)`` (None before it predicted)."""
        net = self._latest.get("net")
        if net is None or net.shape[0] != self.volume.num_classes + 1:
            return None
        return np.moveaxis(net[:, coords[:, 0], coords[:, 1], coords[:, 2]], 0, 1)

    def show_net(self, prediction: Prediction, responder: FirstResponder | None) -> Prediction | None:
        """Score a net prediction (of the whole volume) and return what is to be shown, if it changes the view."""
        if responder is None:
            self.handover.shown = "net"
            return prediction
        before = self.handover.shown
        net = self._latest.get("net")
        if net is None or net.shape != prediction.probabilities.shape[:1] + self.volume.shape:
            net = self._latest["net"] = np.zeros((prediction.probabilities.shape[0],) + self.volume.shape,
                                                 np.float32)
        net[(slice(None),) + prediction.box.slices] = prediction.probabilities
        forest = self._latest.get("forest")
        have_forest = responder.fitted and forest is not None and forest.shape == net.shape
        if prediction.box == Box.full(self.volume.shape):
            revision, coords, truth = self._held_back()
            net_at = self._net_at_held_back(coords)
            predicted: dict[str, np.ndarray] = {}
            if net_at is not None and len(coords):
                predicted["net"] = net_at.argmax(1)
                forest_revision, forest_at = self._forest_held_back
                if have_forest and forest_at is not None and forest_revision == revision:
                    predicted["blend"] = blend(forest_at, net_at).argmax(1)
            if predicted:
                self._score(predicted, coords, truth)
                self._fade_pseudo_labels()
            elif self.volume.holdout is None:  # nothing is held back (held_back = 0): the net once it predicts
                self.handover.shown = "net"
            elif not have_forest:
                self.handover.offer("net")
        shown = self.handover.shown
        if shown == "net" or (shown == "blend" and not have_forest) or shown is None:
            return replace(prediction, learner="net", scores=dict(self.handover.scores),
                           intervals=dict(self.handover.intervals))
        if shown == "blend":
            return self._composed(prediction.box, "blend", net=prediction.probabilities,
                                  revision=min(prediction.revision, responder.revision))
        if before in ("net", "blend") and have_forest:  # handed back: the net's mask is on screen, not the forest's
            return self._composed(Box.full(self.volume.shape), "forest", revision=responder.revision)
        return None  # the first responder stays shown: its mask is already on screen

    def _composed(self, box: Box, learner: str, *, forest: np.ndarray | None = None,
                  net: np.ndarray | None = None, revision: int | None = None) -> Prediction:
        """A :class:`Prediction` of ``box`` by ``learner`` from the given or the latest probabilities, stamped with
        the annotation ``revision`` its learners saw (default: now), so that labels painted since are merged."""
        sl = (slice(None),) + box.slices
        latest_net = self._latest.get("net")
        stale = latest_net is None or latest_net.shape[0] != self.volume.num_classes + 1
        if learner == "blend" and net is None and stale:
            learner = "forest"  # a class was added since the net last predicted: nothing to blend with yet
        if forest is None and learner != "net":
            forest = self._latest["forest"][sl]
        if net is None and learner != "forest":
            net = self._latest["net"][sl]
        probs = forest if learner == "forest" else net if learner == "net" else blend(forest, net)
        probs = np.ascontiguousarray(probs, dtype=np.float32)
        return Prediction(box=box, labels=top_class(probs), probabilities=probs,
                          uncertainty=entropy(probs), step=self._step(),
                          revision=self.volume.revision if revision is None else revision,
                          learner=learner, scores=dict(self.handover.scores),
                          intervals=dict(self.handover.intervals))
