"""What a Start builds: a new session from the chosen layers, or the one that is still valid (:func:`reuse`).

The session is built in the training worker (building a net and normalising a
large volume takes seconds); these functions prepare, on the GUI thread, the
arrays and settings it is built from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from ..core.annotation import Source
from ..core.encoding import layer_to_annotation

if TYPE_CHECKING:
    from napari.layers import Image, Labels

    from ..core.config import SessionConfig
    from ..core.feature_stack import FeatureStack
    from ..core.session import SegmentationSession


def session_key(image: Image | None, annotation: Labels | None, config: SessionConfig,
                channels: Sequence[Image] = ()) -> tuple:
    """What a session was built for: another key at Start means a new model (the correction weight aside, which
    a live session takes as it is). The image's further channel layers come last."""
    return (image, annotation, config.model, config.device, replace(config.train, correction_weight=1.0),
            config.inference, tuple(channels))


def new_session(image: Image, annotation: Labels, num_classes: int, config: SessionConfig,
                features: FeatureStack | None, channels: Sequence[Image] = (),
                corrected: np.ndarray | None = None) -> Callable[[], SegmentationSession]:
    """A builder of a new session on ``image`` (with ``channels``, further image layers read as its channels) and
    the labels painted on ``annotation`` now; those of the voxels ``corrected`` (bool, ``LabelSync.corrected``) are
    corrections (weighted by the correction weight).

    The labels are snapshotted here (values that are no class dropped); strokes painted while the session is
    being built reach it when it is ready (``LabelSync.resync``). A lazy image (zarr, dask), or the channels, are
    read into memory in the builder, or were already by its ``features`` (the session is built on that array,
    which the bank matches). The builder leaves one CPU core to the GUI.
    """
    labels = np.asarray(annotation.data)  # layer encoding: values that are no class here stay unlabeled
    snapshot = layer_to_annotation(labels, num_classes)
    corrections = np.nonzero(corrected & (snapshot > 0)) if corrected is not None else None
    arrays, spacing = (image.data, *(c.data for c in channels)), tuple(float(s) for s in image.scale[-3:])

    def build() -> SegmentationSession:
        from ..core.channels import ChannelStack
        from ..core.device import set_cpu_threads
        from ..core.session import SegmentationSession

        set_cpu_threads(leave_free=1)  # one core keeps the GUI responsive
        if features is not None:
            array = features.array()
        else:
            array = np.asarray(arrays[0] if len(arrays) == 1 else ChannelStack(arrays))
        session = SegmentationSession(array, num_classes=num_classes, spacing=spacing, annotation=snapshot,
                                      channel_axis=None if len(arrays) == 1 else 0, config=config, features=features)
        if corrections is not None and corrections[0].size:
            session.add_labels(corrections, snapshot[corrections], Source.CORRECTED)
        return session

    return build


def reuse(session: SegmentationSession) -> Callable[[], SegmentationSession]:
    """A builder that hands back ``session`` (a Start after Stop, with unchanged settings: training goes on)."""

    def build() -> SegmentationSession:
        return session

    return build
