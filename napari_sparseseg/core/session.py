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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .annotation import AnnotatedVolume, Source
from .batches import check_compatible
from .box import Box
from .config import SessionConfig
from .display import Display, Event, Recorder
from .encoding import merge_labels
from .events import Notice, Prediction, TrainStep, Waiting
from .feature_stack import FeatureStack
from .first_responder import FirstResponder
from .handover import HandOver
from .holdout import HoldOut
from .trainer import Trainer

__all__ = ["Event", "OtherVolume", "Recorder", "SegmentationSession"]


@dataclass(frozen=True)
class OtherVolume:
    """A volume besides the session's own whose labels the net also learns from.

    Attributes
    ----------
    volume : AnnotatedVolume
        Its labels ``y`` and weights ``w(y)``, normalised on its own.
    image : array-like
        The raw image as given (a reference, not a copy): what a session store saves.
    channel_axis : int or None
        Channel axis of a 4D ``image``.
    name : str or None
        What the user calls it (a napari layer or file name).
    image_ref : dict or None
        ``{"path": file, "key": ..., "level": ...}`` when the image came from a file that a session store may
        reference instead of copying it.
    geometry : dict or None
        Where the image lies, for a session store to keep: ``{"origin": (z, y, x), "affine": 4x4 NIfTI}``.
    """

    volume: AnnotatedVolume
    image: Any
    channel_axis: int | None = None
    name: str | None = None
    image_ref: dict[str, Any] | None = None
    geometry: dict[str, Any] | None = None


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
        #: What :meth:`interactive` shows: the first responder's, the net's or their blend (and their scores).
        self.display = Display(self.volume, self.responder, config, lambda: self.trainer.step)
        #: The other volumes the net learns from, in the order they were added (``Prediction.volume`` - 1).
        self.other_volumes: list[OtherVolume] = []

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
        at construction and not affected. A session store bound to the session
        keeps the new settings.
        """
        self.config = replace(self.config, train=replace(self.config.train, **changes))
        self.trainer.config = self.display.config = self.config
        if self.store is not None:
            self.store.record_config(self.config)
        return self.config

    # -- compute ----------------------------------------------------------------------
    def warm_up(self) -> None:
        """Compute the first responder's feature stack now (call it in a thread when the image is chosen)."""
        if self.display.live_responder() is not None:
            self.responder.warm()

    def train(self, **limits) -> Iterator[TrainStep | Waiting | Notice]:
        """Train; see :meth:`Trainer.run` for the limits."""
        return self.trainer.run(**limits)

    def predict(self, box: Box | None = None, volume: int = 0) -> Prediction:
        """Raw network prediction of ``box`` (default: whole volume) of training volume ``volume`` (0: its own)."""
        return self.trainer.predict(box, volume=volume)

    def merge(self, prediction: Prediction) -> np.ndarray:
        """The prediction with every labeled voxel of its volume replaced by its label (mask encoding)."""
        labels = self.trainer.batches.volumes[prediction.volume].labels
        return merge_labels(prediction.labels, labels[prediction.box.slices])

    @property
    def handover(self) -> HandOver:
        """Which learner's prediction is shown, and their latest held-back scores."""
        return self.display.handover

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
        """Add output classes until there are ``count`` foreground classes (the net grows an output channel); every
        volume trained on gets them."""
        for volume in self.trainer.batches.volumes:
            while volume.num_classes < count:
                volume.add_class()

    def add_training_volume(self, image: np.ndarray, *, annotation: np.ndarray | None = None,
                            spacing: Sequence[float] | None = None, channel_axis: int | None = None,
                            name: str | None = None, image_ref: dict[str, Any] | None = None,
                            geometry: dict[str, Any] | None = None) -> AnnotatedVolume:
        """Another volume of the same kind whose labels the net also learns from (the 3D U-Net paper's training on
        sparse labels of several volumes, to segment others like them).

        The session's own volume stays the one held back from and shown with the first responder; patches are
        drawn from every labeled volume by its share of the labels (:mod:`.batches`), each volume normalised on
        its own. :meth:`interactive` predicts it with the net when the user looks at it; a session store keeps it
        (its image, labels and prediction).

        Parameters
        ----------
        image : np.ndarray
            ``(z, y, x)``, or 4D with ``channel_axis``; as many channels as the session's image.
        annotation : np.ndarray, optional
            Its labels, annotation encoding, shape of ``image``'s ``(z, y, x)``.
        spacing : sequence of float, optional
            Voxel size ``(z, y, x)``; within 10 % of the session's (patches are cut in voxels).
        channel_axis : int, optional
            Channel axis of a 4D image.
        name : str, optional
            What the user calls it (kept by a session store).
        image_ref, geometry : dict, optional
            The file the image was read from, and where it lies (see :class:`OtherVolume`).

        Returns
        -------
        AnnotatedVolume
            The volume, to label further with ``set_labels``.

        Raises
        ------
        ValueError
            For another channel count, labels beyond the session's classes, or another voxel size.
        OSError
            If the session's store cannot write it (nothing is added).
        """
        volume = AnnotatedVolume(image, num_classes=self.num_classes, spacing=spacing, channel_axis=channel_axis,
                                 annotation=annotation, intensity_views=self.config.train.intensity_views)
        check_compatible(self.volume, volume)
        other = OtherVolume(volume, image, channel_axis, name, image_ref, geometry)
        if self.store is not None:
            self.store.add_volume(other)  # first: a volume the store could not keep is not trained on either
        try:
            self.trainer.add_volume(volume)
        except BaseException:
            if self.store is not None:
                self.store.forget_volume(other)
            raise
        self.other_volumes.append(other)
        return volume

    @property
    def training_volumes(self) -> list[AnnotatedVolume]:
        """Every volume the net learns from, the session's own first (``Prediction.volume`` indexes it)."""
        return list(self.trainer.batches.volumes)

    def segment(self) -> np.ndarray:
        """Dense mask of the whole volume (0 = background, 1..K), labels kept where painted.

        Uses test-time mirroring along ``inference.final_mirror_axes``.
        """
        return self.merge(self.trainer.predict(final=True))

    def interactive(self, view_box: Callable[[], Box | None] = lambda: None, *,
                          refresh_seconds: float = 3.0, first_refresh_steps: int = 10,
                          should_stop: Callable[[], bool] = lambda: False,
                          max_predict_share: float = 0.3,
                          view_volume: Callable[[], tuple[int, Box | None]] = lambda: (0, None)
                          ) -> Iterator[Event]:
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
        between the box in view and the whole volume; a change of the view is predicted first. While the user
        looks at another training volume (``view_volume``), every other refresh predicts it with the net
        (``Prediction.volume``), in the same way: the box in view of it when that changed, else the whole volume.

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
        view_volume : callable
            The training volume the user looks at (an index of :attr:`training_volumes`; 0 its own) and the box in
            view of it (``None`` in 3D view), asked at each refresh.
        """
        if not 0 < max_predict_share <= 1:
            raise ValueError(f"max_predict_share must be in (0, 1], got {max_predict_share}")
        trainer, shape, volume = self.trainer, self.volume.shape, self.volume
        display = self.display
        responder = display.live_responder()
        if responder is None and self.config.responder.enabled:
            yield Notice(f"no first responder for this volume: {self.responder.unavailable_reason()}", "info")
        elif responder is not None and (note := responder.grid_note()):
            yield Notice(note, "info")
        rc = self.config.responder
        volume.holdout = HoldOut(volume.spacing, rc.held_back, seed=self.config.train.seed,
                                 multiple_of=responder.block_multiple) \
            if responder is not None and rc.held_back > 0 else None
        shown_step = -1
        last_end, last_cost = time.perf_counter(), 0.0
        fit_end, fit_cost = -np.inf, 0.0
        last_view: Box | None = None
        full_due, last_volume = False, 0
        other_views: dict[int, Box | None] = {}  # the box last predicted of each other volume (None: the whole)
        try:
            while not should_stop():
                if (responder is not None and volume.n_labeled and responder.behind
                        and time.perf_counter() - fit_end >= fit_cost):
                    t0, bank_ready = time.perf_counter(), responder.features.ready
                    yield from display.respond(responder, view_box, self.store, should_stop)
                    fit_end = time.perf_counter()
                    bank = (responder.features.seconds or 0.0) if responder.features.ready and not bank_ready else 0.0
                    fit_cost = max(0.0, fit_end - t0 - bank)  # the bank, computed once, is no cost of the next fits
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
                other, seen = view_volume() if last_volume == 0 else (0, None)  # alternate with its own volume
                if 0 < other < len(self.trainer.batches.volumes):
                    seen = None if seen is None else seen.clip(self.trainer.batches.volumes[other].shape)
                    if seen is not None and (seen.empty or other_views.get(other) == seen):
                        seen = None  # that view was predicted last time: the whole volume now
                    other_views[other] = seen
                    t0 = time.perf_counter()
                    prediction = self.predict(seen, volume=other)
                    if self.store is not None:
                        self.store.record_prediction(prediction)
                    yield prediction
                    last_end, last_volume = time.perf_counter(), other
                    last_cost = last_end - t0
                    continue
                last_volume = 0
                box = view_box() if display.handover.shown in ("net", "blend") or responder is None else None
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
                shown = display.show_net(prediction, responder)
                if shown is not None:
                    shown = display.estimated(shown)
                    if self.store is not None:
                        self.store.record_prediction(shown)  # queued for the store's autosave thread
                    yield shown
                    if shown.box == Box.full(shape):
                        yield from display.guidance(shown)
                last_end = time.perf_counter()
                last_cost = last_end - t0
                shown_step = trainer.step
        finally:
            trainer.close()  # ends the batch-prefetching thread; the next run starts another
            volume.holdout, volume.pseudo = None, None
