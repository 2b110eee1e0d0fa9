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

import numpy as np

from .annotation import AnnotatedVolume, Box, Source
from .config import SessionConfig
from .encoding import UNLABELED
from .events import Prediction, TrainStep, Waiting
from .trainer import Trainer

Event = TrainStep | Waiting | Prediction


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
        self.volume = AnnotatedVolume(image, num_classes=num_classes, spacing=spacing, channel_axis=channel_axis,
                                      annotation=annotation, intensity_views=config.train.intensity_views)
        self.trainer = Trainer(self.volume, config)

    # -- interactions ---------------------------------------------------------------
    def add_labels(self, index: tuple, values: np.ndarray | int, source: Source = Source.PAINTED) -> Box:
        """Label voxels (annotation encoding; 0 erases). Returns the changed box."""
        return self.volume.set_labels(index, values, source)

    def add_correction(self, index: tuple, values: np.ndarray | int) -> Box:
        """Label voxels as a correction of the prediction (weighted by ``correction_weight``)."""
        return self.volume.set_labels(index, values, Source.CORRECTED)

    # -- compute ----------------------------------------------------------------------
    def train(self, **limits) -> Iterator[TrainStep | Waiting]:
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
        """Dense mask of the whole volume (0 = background, 1..K), labels kept where painted."""
        return self.merge(self.predict())

    def interactive(self, view_box: Callable[[], Box | None] = lambda: None, *, refresh_seconds: float = 3.0,
                    first_refresh_steps: int = 10, should_stop: Callable[[], bool] = lambda: False,
                    ) -> Iterator[Event]:
        """Train forever, streaming predictions: the box in view first, then the volume.

        Parameters
        ----------
        view_box : callable
            Returns the box the user looks at (or ``None``); asked at each refresh.
        refresh_seconds : float
            Wall-clock seconds between refreshes while training.
        first_refresh_steps : int
            Steps after which the first prediction is shown (a fast first look).
        should_stop : callable
            Polled between steps; true ends the generator.
        """
        last_refresh = time.perf_counter()
        shown_step = -1
        full_pending = False
        while not should_stop():
            event = next(self.trainer.run(max_steps=1, should_stop=should_stop), None)
            if event is None:
                return
            yield event
            if isinstance(event, Waiting):
                continue
            now = time.perf_counter()
            due = (shown_step < 0 and self.trainer.step >= first_refresh_steps) or (
                shown_step >= 0 and now - last_refresh >= refresh_seconds)
            if due:
                box = view_box()
                if box is not None and not box.clip(self.volume.shape).empty:
                    yield self.predict(box)
                    full_pending = True
                else:
                    yield self.predict()
                    full_pending = False
                shown_step, last_refresh = self.trainer.step, time.perf_counter()
            elif full_pending and not should_stop():
                # The view is up to date; fill in the rest before the next refresh.
                yield self.predict()
                full_pending = False
