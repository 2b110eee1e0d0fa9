"""Short runs on the real volumes in ../shared/data (skipped where absent).

The accuracy tables live in BENCHMARKS.md; these guard that the plugin's loop still learns real CT and
microscopy from three painted slices. They count training steps, not seconds, so a slow or busy machine takes
longer but sees the same thing.
"""

import numpy as np
import pytest

from napari_sparseseg.core.box import Box
from napari_sparseseg.core.config import SessionConfig, TrainConfig
from napari_sparseseg.core.events import Prediction
from napari_sparseseg.core.session import SegmentationSession
from napari_sparseseg.evaluation.metrics import evaluate_masks
from napari_sparseseg.evaluation.protocols import protocol_mask, simulate_annotation
from tests.conftest import shared_file

STEPS = 40


@pytest.mark.parametrize("name", ["msd_spleen_ct_crop.npz", "bbbc050_mouse_embryo_nuclei.npz"])
def test_learns_real_volume_from_three_slices(name):
    with np.load(shared_file(name)) as d:
        image, truth, spacing = d["image"], d["labels"], tuple(float(s) for s in d["spacing"])
    k = int(truth.max())
    labeled = protocol_mask(truth.shape, "z:3", truth)
    annotation = simulate_annotation(truth, "z:3", labeled)
    session = SegmentationSession(image, num_classes=k, spacing=spacing, annotation=annotation,
                                  config=SessionConfig(train=TrainConfig(amp=False), device="cpu"))
    shown: list[Prediction] = []
    events = session.interactive(should_stop=lambda: bool(shown) and session.trainer.step >= STEPS)
    for event in events:
        if isinstance(event, Prediction) and event.box == Box.full(truth.shape):
            shown.append(event)
    events.close()

    def dice(classes: np.ndarray) -> float:
        return evaluate_masks(truth, np.where(labeled, truth, classes).astype(np.uint8), k + 1)["dice_fg"]

    assert shown[0].learner == "forest" and dice(shown[0].labels) > 0.85  # the first mask: the first responder
    assert dice(shown[-1].labels) > 0.85  # what is on screen at the end
    net = session.predict()  # the net after STEPS steps has learned the volume too
    assert session.trainer.step >= STEPS and dice(net.labels) > 0.5
