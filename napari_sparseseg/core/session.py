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
from typing import TYPE_CHECKING, Any

import numpy as np

from .annotation import AnnotatedVolume, Box, Source
from .config import SessionConfig
from .encoding import UNLABELED
from .events import Notice, Prediction, TrainStep, Waiting
from .trainer import Trainer

if TYPE_CHECKING:
    from .store import SessionStore

Event = TrainStep | Waiting | Notice | Prediction


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
    """

    def __init__(self, image: np.ndarray, *, num_classes: int = 1, spacing: Sequence[float] | None = None,
                 channel_axis: int | None = None, annotation: np.ndarray | None = None,
                 config: SessionConfig = SessionConfig()) -> None:
        self.config = config
        #: The raw image as given (a reference, not a copy) and its channel axis: what a session store saves.
        self.image, self.channel_axis = image, channel_axis
        #: Optional :class:`~.store.SessionStore` that :meth:`interactive` records steps and checkpoints into.
        self.store: SessionStore | None = None
        self.volume = AnnotatedVolume(image, num_classes=num_classes, spacing=spacing, channel_axis=channel_axis,
                                      annotation=annotation, intensity_views=config.train.intensity_views)
        self.trainer = Trainer(self.volume, config)

    @classmethod
    def open(cls, path: str | Path, **kwargs: Any) -> SegmentationSession:
        """Reopen a session store (see :meth:`.store.SessionStore.open`); the store is ``session.store``."""
        from .store import SessionStore

        return SessionStore.open(path, **kwargs)[1]

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
    def train(self, **limits) -> Iterator[TrainStep | Waiting | Notice]:
        """Train; see :meth:`Trainer.run` for the limits."""
        return self.trainer.run(**limits)

    def predict(self, box: Box | None = None) -> Prediction:
        """Raw network prediction of ``box`` (default: whole volume)."""
        return self.trainer.predict(box)

    def merge(self, prediction: Prediction) -> np.ndarray:
        """The prediction with every labeled voxel replaced by its label (mask encoding)."""
        labels = self.volume.labels[prediction.box.slices]
        return np.where(labels > UNLABELED, labels.astype(np.int64) - 1, prediction.labels).astype(np.uint8)

    def segment(self) -> np.ndarray:
        """Dense mask of the whole volume (0 = background, 1..K), labels kept where painted.

        Uses test-time mirroring along ``inference.final_mirror_axes``.
        """
        return self.merge(self.trainer.predict(final=True))

    def interactive(self, view_box: Callable[[], Box | None] = lambda: None, *,
                          refresh_seconds: float = 3.0, first_refresh_steps: int = 10,
                          should_stop: Callable[[], bool] = lambda: False,
                          max_predict_share: float = 0.3) -> Iterator[Event]:
        """Train forever, streaming predictions (view first, then the volume) within a time budget.

        Yields every :class:`TrainStep` / :class:`Waiting` and every
        :class:`Prediction`. The time spent predicting is capped: after a prediction that took ``p`` seconds the next
        one waits at least ``p * (1 / max_predict_share - 1)`` seconds (and at
        least ``refresh_seconds``). On a 2-core CPU a whole-volume prediction of
        the sample takes ~7 s against ~1 s per training step; refreshing every 3 s
        regardless left training ~15 % of the time.

        Refreshes alternate between the box in view and the whole volume; a
        change of the view (the user scrolled) is predicted first.

        Parameters
        ----------
        view_box : callable
            The box the user looks at (``None`` in 3D view), asked at each refresh.
        refresh_seconds : float
            Minimum seconds between two refreshes.
        first_refresh_steps : int
            Steps after which the first prediction (of the view) is shown.
        should_stop : callable
            Polled between steps.
        max_predict_share : float
            Largest share of wall time spent predicting, in ``(0, 1]``.
        """
        if not 0 < max_predict_share <= 1:
            raise ValueError(f"max_predict_share must be in (0, 1], got {max_predict_share}")
        trainer, shape = self.trainer, self.volume.shape
        shown_step = -1
        last_end, last_cost = time.perf_counter(), 0.0
        last_view: Box | None = None
        full_due = False
        try:
            while not should_stop():
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
                box = view_box()
                if box is not None:
                    box = box.clip(shape)
                    if box.empty:
                        box = None
                if box is not None and (not full_due or box != last_view):
                    target, full_due, last_view = box, True, box
                else:
                    target, full_due = None, False
                t0 = time.perf_counter()
                prediction = self.predict(target)
                if self.store is not None:
                    self.store.record_prediction(prediction)  # queued for the store's autosave thread
                yield prediction
                last_end = time.perf_counter()
                last_cost = last_end - t0
                shown_step = trainer.step
        finally:
            trainer.close()  # ends the batch-prefetching thread; the next run starts another
