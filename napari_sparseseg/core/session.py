"""A small session API (after nnInteractive's inference session).

>>> s = SegmentationSession(image, num_classes=1, spacing=(2.0, 0.5, 0.5))
>>> s.add_labels((5, slice(None), slice(None)), slice_annotation)   # doctest: +SKIP
>>> for event in s.train(max_seconds=30): ...                      # doctest: +SKIP
>>> mask = s.segment()                                              # doctest: +SKIP

The session owns the annotated volume and the trainer; it never imports Qt
or napari. :meth:`interactive` is the compute generator the plugin runs in a
worker thread: it trains and, every few seconds, predicts the box in view and
then the rest of the volume.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .annotation import AnnotatedVolume, Box, Source
from .config import SessionConfig
from .distill import distill_weight, pseudo_labels
from .encoding import merge_labels
from .estimate import DiceEstimate, expected_dice
from .events import Guidance, Notice, Prediction, TrainStep, Waiting
from .first_responder import FeatureStack, FirstResponder
from .guidance import likely_errors, suggest_slices
from .handover import HandOver, blend, held_back_scores
from .holdout import HoldOut
from .inference import entropy
from .trainer import Trainer

Event = TrainStep | Waiting | Notice | Prediction | Guidance


class Recorder(Protocol):
    """What :meth:`SegmentationSession.interactive` tells a session store (``napari_sparseseg.store``), if any."""

    def on_step(self, trainer: Trainer, event: TrainStep) -> None:
        """A training step finished (called in the training thread)."""

    def record_prediction(self, prediction: Prediction) -> None:
        """A prediction is about to be shown."""


class SegmentationSession:
    """Image + sparse labels + a 3D U-Net that keeps learning from them.

    Parameters
    ----------
    image : np.ndarray
        ``(z, y, x)``, or 4D with ``channel_axis``.
    num_classes : int
        Foreground classes ``K``.
    spacing : sequence of float, optional
        Voxel size ``(z, y, x)``; drives patch shape and anisotropic pooling.
    channel_axis : int, optional
        Channel axis of a 4D image.
    annotation : np.ndarray, optional
        Initial labels, annotation encoding (0 = unlabeled, 1 = background).
    config : SessionConfig
        Model, training, inference and device settings.
    features : FeatureStack, optional
        The first responder's filter bank of ``image`` at ``spacing``, when it was made (and perhaps computed)
        ahead, e.g. while the user painted.
    """

    def __init__(self, image: np.ndarray, *, num_classes: int = 1, spacing: Sequence[float] | None = None,
                 channel_axis: int | None = None, annotation: np.ndarray | None = None,
                 config: SessionConfig = SessionConfig(), features: FeatureStack | None = None) -> None:
        self.config = config
        #: The raw image as given (a reference, not a copy) and its channel axis: what a session store saves.
        self.image, self.channel_axis = image, channel_axis
        #: Optional session store (``napari_sparseseg.store.SessionStore``) that :meth:`interactive` records steps,
        #: checkpoints and predictions into.
        self.store: Recorder | None = None
        self.volume = AnnotatedVolume(image, num_classes=num_classes, spacing=spacing, channel_axis=channel_axis,
                                      annotation=annotation, intensity_views=config.train.intensity_views)
        self.trainer = Trainer(self.volume, config)
        #: The fast first responder (its feature stack is computed on first use, or ahead by :meth:`warm_up`).
        self.responder = FirstResponder(image, self.volume, config.responder, channel_axis=channel_axis,
                                        seed=config.train.seed, features=features)
        #: Which learner's prediction :meth:`interactive` shows, and their latest held-back scores.
        self.handover = HandOver(config.responder.margin)
        #: The latest whole-volume class probabilities ``(K + 1, z, y, x)`` of each learner (None: none yet).
        self._latest: dict[str, np.ndarray | None] = {"forest": None, "net": None}
        self._held_back_cache: tuple[int, np.ndarray, np.ndarray] = (-1, np.empty((0, 3), int), np.empty(0, int))
        #: ``(revision, (n, K + 1) probabilities)`` of the first responder fitted without the held-back labels, at
        #: the held-back voxels of that label revision (what the forest and the blend are scored with).
        self._forest_held_back: tuple[int, np.ndarray | None] = (-1, None)
        #: The expected Dice of the latest whole-volume mask shown (:mod:`.estimate`).
        self._estimate: DiceEstimate | None = None

    @classmethod
    def from_model(cls, image: np.ndarray, model: str | Path | dict[str, Any], *,
                   spacing: Sequence[float] | None = None, channel_axis: int | None = None,
                   device: str = "auto") -> SegmentationSession:
        """A session on a new image that starts from a saved model (to predict it, or to fine-tune).

        Parameters
        ----------
        image : np.ndarray
            ``(z, y, x)``, or 4D with ``channel_axis``.
        model : str, Path or dict
            A checkpoint written by :func:`.checkpoint.save_model`, or its payload from
            :func:`.checkpoint.read_model`.
        spacing, channel_axis
            Of ``image``; a spacing other than the training one keeps the model's planned layout.
        device : {"auto", "cpu", "cuda", "mps"}

        Raises
        ------
        ValueError
            If ``model`` is not a checkpoint, or its input channels do not match the image.
        """
        from .checkpoint import config_of, load_into, read_model

        payload = model if isinstance(model, dict) else read_model(model)
        config = replace(config_of(payload), device=device)
        session = cls(image, num_classes=payload["num_classes"], spacing=spacing, channel_axis=channel_axis,
                      config=config)
        load_into(session.trainer, payload)
        return session

    # -- interactions ---------------------------------------------------------------
    def add_labels(self, index: tuple, values: np.ndarray | int, source: Source = Source.PAINTED) -> Box:
        """Label voxels (annotation encoding; 0 erases). Returns the changed box."""
        return self.volume.set_labels(index, values, source)

    def add_correction(self, index: tuple, values: np.ndarray | int) -> Box:
        """Label voxels as a correction of the prediction (weighted by ``correction_weight``)."""
        return self.volume.set_labels(index, values, Source.CORRECTED)

    def update_training(self, **changes) -> SessionConfig:
        """Change training settings of a live session (e.g. ``correction_weight``).

        The trainer reads its config at every step, so the next step uses the
        change. Settings that shape the model (patch size, channels) are fixed
        at construction and not affected.
        """
        self.config = replace(self.config, train=replace(self.config.train, **changes))
        self.trainer.config = self.config
        return self.config

    # -- compute ----------------------------------------------------------------------
    def warm_up(self) -> None:
        """Compute the first responder's feature stack now (call it in a thread when the image is chosen)."""
        if self._live_responder() is not None:
            self.responder.warm()

    def train(self, **limits) -> Iterator[TrainStep | Waiting | Notice]:
        """Train; see :meth:`Trainer.run` for the limits."""
        return self.trainer.run(**limits)

    def predict(self, box: Box | None = None) -> Prediction:
        """Raw network prediction of ``box`` (default: whole volume)."""
        return self.trainer.predict(box)

    def merge(self, prediction: Prediction) -> np.ndarray:
        """The prediction with every labeled voxel replaced by its label (mask encoding)."""
        return merge_labels(prediction.labels, self.volume.labels[prediction.box.slices])

    # -- what a user interface reads and changes (the session is its only door) ------
    @property
    def num_classes(self) -> int:
        """Foreground classes ``K``."""
        return self.volume.num_classes

    @property
    def revision(self) -> int:
        """Annotation revision: grows with every change of the labels."""
        return self.volume.revision

    def labels_at(self, index: tuple) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the labels (annotation encoding) and their sources (:class:`Source`) at ``index``."""
        return self.volume.labels[index].copy(), self.volume.source[index].copy()

    def changes_since(self, revision: int) -> Box:
        """The box of every voxel labeled or erased after ``revision`` (empty when none)."""
        return self.volume.changes_since(revision)

    def ensure_classes(self, count: int) -> None:
        """Add output classes until there are ``count`` foreground classes (the net grows an output channel)."""
        while self.volume.num_classes < count:
            self.volume.add_class()

    def segment(self) -> np.ndarray:
        """Dense mask of the whole volume (0 = background, 1..K), labels kept where painted.

        Uses test-time mirroring along ``inference.final_mirror_axes``.
        """
        return self.merge(self.trainer.predict(final=True))

    def interactive(self, view_box: Callable[[], Box | None] = lambda: None, *,
                          refresh_seconds: float = 3.0, first_refresh_steps: int = 10,
                          should_stop: Callable[[], bool] = lambda: False,
                          max_predict_share: float = 0.3) -> Iterator[Event]:
        """Train forever, streaming what the user should see: the first responder's, the net's or their blend.

        From the first labels, the first responder (a pixel classifier on a precomputed filter bank,
        :mod:`.first_responder`) answers within about a second: the box in view, then the volume. Meanwhile the
        net trains; every few seconds it predicts the volume, and every learner is scored on the held-back labels
        (:mod:`.holdout`) that none of them trains on. The prediction yielded is the one :class:`~.handover.HandOver`
        chooses (``Prediction.learner``): the net takes over only when it scores better, so the mask shown never
        gets worse when it does, and does not flicker between two learners that are level. Where the first
        responder is not available (switched off, or a volume too large for its feature stack, with a
        :class:`Notice`) the net's predictions are shown as they come.

        Yields every :class:`TrainStep` / :class:`Waiting`, :class:`Notice` and :class:`Prediction`. The time
        spent predicting is capped: after a net prediction that took ``p`` seconds the next one waits at least
        ``p * (1 / max_predict_share - 1)`` seconds (and at least ``refresh_seconds``); a refit of the first
        responder waits at least as long as the previous one took. While the net is shown, refreshes alternate
        between the box in view and the whole volume; a change of the view is predicted first.

        Parameters
        ----------
        view_box : callable
            The box the user looks at (``None`` in 3D view), asked at each refresh.
        refresh_seconds : float
            Minimum seconds between two net predictions.
        first_refresh_steps : int
            Steps after which the net first predicts.
        should_stop : callable
            Polled between steps.
        max_predict_share : float
            Largest share of wall time spent on net predictions, in ``(0, 1]``.
        """
        if not 0 < max_predict_share <= 1:
            raise ValueError(f"max_predict_share must be in (0, 1], got {max_predict_share}")
        trainer, shape, volume = self.trainer, self.volume.shape, self.volume
        responder = self._live_responder()
        if responder is None and self.config.responder.enabled:
            yield Notice(f"no first responder for this volume: {self.responder.unavailable_reason()}", "info")
        rc = self.config.responder
        volume.holdout = HoldOut(volume.spacing, rc.held_back, seed=self.config.train.seed) \
            if responder is not None and rc.held_back > 0 else None
        shown_step = -1
        last_end, last_cost = time.perf_counter(), 0.0
        fit_end, fit_cost = -np.inf, 0.0
        last_view: Box | None = None
        full_due = False
        try:
            while not should_stop():
                if (responder is not None and volume.n_labeled and responder.revision != volume.revision
                        and time.perf_counter() - fit_end >= fit_cost):
                    t0 = time.perf_counter()
                    yield from self._respond(responder, view_box)
                    fit_end = time.perf_counter()
                    fit_cost = fit_end - t0
                    if should_stop():
                        return
                event = next(self.train(max_steps=1, should_stop=should_stop), None)
                if event is None:
                    return
                if self.store is not None and isinstance(event, TrainStep):
                    self.store.on_step(self.trainer, event)  # history + periodic checkpoint, in the training thread
                yield event
                if not isinstance(event, TrainStep):  # Waiting, or a Notice (passed on as is)
                    continue
                now = time.perf_counter()
                if shown_step < 0:
                    due = trainer.step >= first_refresh_steps
                else:
                    gap = max(refresh_seconds, last_cost * (1.0 / max_predict_share - 1.0))
                    due = now - last_end >= gap
                if not due or should_stop():
                    continue
                box = view_box() if self.handover.shown in ("net", "blend") or responder is None else None
                if box is not None:  # while the first responder is shown the net predicts the volume, to be scored
                    box = box.clip(shape)
                    if box.empty:
                        box = None
                if box is not None and (not full_due or box != last_view):
                    target, full_due, last_view = box, True, box
                else:
                    target, full_due = None, False
                t0 = time.perf_counter()
                prediction = self.predict(target)
                shown = self._show_net(prediction, responder)
                if shown is not None:
                    shown = self._estimated(shown)
                    if self.store is not None:
                        self.store.record_prediction(shown)  # queued for the store's autosave thread
                    yield shown
                    if shown.box == Box.full(shape):
                        yield from self._guidance(shown)
                last_end = time.perf_counter()
                last_cost = last_end - t0
                shown_step = trainer.step
        finally:
            trainer.close()  # ends the batch-prefetching thread; the next run starts another
            volume.holdout, volume.pseudo = None, None

    # -- the first responder and the hand-over ----------------------------------------
    def _live_responder(self) -> FirstResponder | None:
        """The first responder, when this volume can have one."""
        return self.responder if self.responder.unavailable_reason() is None else None

    def _held_back(self) -> tuple[np.ndarray, np.ndarray]:
        """``(coords (n, 3), classes (n,))`` of the labeled voxels held back now (cached per revision)."""
        revision = self.volume.revision
        if self._held_back_cache[0] != revision:
            coords, classes, held = self.responder.labeled_rows(self.volume.holdout)
            self._held_back_cache = (revision, coords[held], classes[held])
        return self._held_back_cache[1], self._held_back_cache[2]

    def _score(self, predicted: dict[str, np.ndarray]) -> None:
        """Score learners' class predictions ``(n,)`` at the held-back voxels and let the hand-over choose."""
        coords, truth = self._held_back()
        if not len(coords) or not predicted:
            return
        self.handover.update(held_back_scores(truth, predicted, self.volume.num_classes + 1,
                                              self.volume.holdout.block_of(coords), seed=self.config.train.seed))

    def _respond(self, responder: FirstResponder, view_box: Callable[[], Box | None]) -> Iterator[Event]:
        """Refit the first responder on the labels now, score it, and yield what is to be shown."""
        if not responder.fit(self.volume.holdout):
            return  # fewer than two classes labeled
        coords, _ = self._held_back()
        predicted = {}
        if responder.scored and len(coords):
            forest_at = responder.predict_scored_at(coords)
            self._forest_held_back = (self.volume.revision, forest_at)
            predicted["forest"] = forest_at.argmax(1)
            net_at = self._net_at_held_back(coords)
            if net_at is not None:
                predicted["blend"] = blend(forest_at, net_at).argmax(1)
        self._score(predicted)
        shown = self.handover.shown
        if shown is None or self.handover.scores.get("forest") is None:
            shown = self.handover.offer("forest")
        if shown == "net":
            self._set_forest(responder.predict())  # kept for the blend and the net's targets; the net stays shown
            return
        box = view_box()
        box = None if box is None else box.clip(self.volume.shape)
        if box is not None and not box.empty:
            yield self._estimated(self._composed(box, shown, forest=responder.predict(box)))
        self._set_forest(responder.predict())
        full = self._estimated(self._composed(Box.full(self.volume.shape), shown))
        if self.store is not None:
            self.store.record_prediction(full)
        yield full
        yield from self._guidance(full)

    def _estimated(self, prediction: Prediction) -> Prediction:
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

    def _guidance(self, shown: Prediction) -> Iterator[Guidance]:
        """Where to paint next, from a whole-volume prediction just shown (in-memory volumes)."""
        if self.volume.lazy:
            return
        labeled = np.asarray(self.volume.labels) > 0
        yield Guidance(tuple(suggest_slices(shown.uncertainty, labeled)),
                       tuple(likely_errors(shown.uncertainty, labeled)), shown.revision)

    def _set_forest(self, probabilities: np.ndarray) -> None:
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

    def _show_net(self, prediction: Prediction, responder: FirstResponder | None) -> Prediction | None:
        """Score a net prediction (of the whole volume) and return what is to be shown, if it changes the view."""
        if responder is None:
            self.handover.shown = "net"
            return prediction
        net = self._latest.get("net")
        if net is None or net.shape != prediction.probabilities.shape[:1] + self.volume.shape:
            net = self._latest["net"] = np.zeros((prediction.probabilities.shape[0],) + self.volume.shape,
                                                 np.float32)
        net[(slice(None),) + prediction.box.slices] = prediction.probabilities
        forest = self._latest.get("forest")
        have_forest = responder.fitted and forest is not None and forest.shape == net.shape
        if prediction.box == Box.full(self.volume.shape):
            coords, _ = self._held_back()
            net_at = self._net_at_held_back(coords)
            predicted: dict[str, np.ndarray] = {}
            if net_at is not None and len(coords):
                predicted["net"] = net_at.argmax(1)
                revision, forest_at = self._forest_held_back
                if have_forest and forest_at is not None and revision == self.volume.revision:
                    predicted["blend"] = blend(forest_at, net_at).argmax(1)
            if predicted:
                self._score(predicted)
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
            return self._composed(prediction.box, "blend", net=prediction.probabilities)
        return None  # the first responder stays shown: its mask is already on screen

    def _composed(self, box: Box, learner: str, *, forest: np.ndarray | None = None,
                  net: np.ndarray | None = None) -> Prediction:
        """A :class:`Prediction` of ``box`` by ``learner`` from the given or the latest probabilities."""
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
        return Prediction(box=box, labels=probs.argmax(0).astype(np.uint8), probabilities=probs,
                          uncertainty=entropy(probs), step=self.trainer.step, revision=self.volume.revision,
                          learner=learner, scores=dict(self.handover.scores),
                          intervals=dict(self.handover.intervals))
