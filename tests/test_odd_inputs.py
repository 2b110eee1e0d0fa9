"""Inputs at the edges a real user brings: an offset far above the contrast, a volume smaller than the net's
stride, labels of one class (from the start, or after a correction), a stack one voxel wide."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sparseseg.core.session import SegmentationSession
from tests.conftest import sphere_volume, tiny_config


def _dice(truth: np.ndarray, mask: np.ndarray) -> float:
    t, p = truth > 0, mask > 0
    return float(2 * (t & p).sum() / max(1, t.sum() + p.sum()))


@pytest.mark.parametrize("offset", [0.0, 1e9])
def test_a_contrast_far_below_the_images_magnitude_is_kept(offset):
    image, mask = sphere_volume((16, 32, 32), radius=7)
    image = image.astype(np.float64) * 10 + offset  # a float64 image: 1e9 + a contrast of 10
    session = SegmentationSession(image, num_classes=1, config=tiny_config(trees=8))
    for z in (4, 8, 12):
        session.add_labels((z, slice(None), slice(None)), mask[z] + 1)
    assert len(np.unique(session.volume.features[0])) > 1000  # the net's input: not squashed to a few values
    responder = session.responder
    assert responder.fit()
    assert _dice(mask, responder.predict().argmax(0)) > 0.9  # before: everything background at 1e9


@pytest.mark.parametrize("shape", [(8, 8, 8), (2, 2, 2), (1, 8, 8)])
def test_a_volume_no_larger_than_the_nets_stride_trains_and_predicts(shape):
    image = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    annotation = np.zeros(shape, np.uint8)
    annotation[..., 0], annotation[..., -1] = 1, 2
    session = SegmentationSession(image, num_classes=1, annotation=annotation, config=tiny_config())
    steps = [e for e in session.train(max_steps=2) if hasattr(e, "loss")]
    assert len(steps) == 2 and all(np.isfinite(e.loss) for e in steps)  # a one-voxel bottleneck raised before
    assert session.predict().labels.shape == shape


def test_labels_corrected_down_to_one_class_drop_the_forests_mask_and_scores():
    from napari_sparseseg.core.holdout import HoldOut

    image, mask = sphere_volume((16, 48, 48), radius=10)
    session = SegmentationSession(image, num_classes=1, config=tiny_config())
    for z in (3, 8, 12):
        session.add_labels((z, slice(None), slice(None)), mask[z] + 1)
    volume, display, responder = session.volume, session.display, session.responder
    volume.holdout = HoldOut(volume.spacing, 0.25, block=4, seed=0, multiple_of=responder.block_multiple)
    list(display.respond(responder, lambda: None))
    assert display.latest("forest") is not None and "forest" in display.handover.scores
    assert volume.pseudo is not None  # the forest's confident answers teach the net
    for z in (3, 8, 12):
        session.add_correction((z, slice(None), slice(None)), 1)  # every foreground label corrected away
    list(display.respond(responder, lambda: None))
    assert display.latest("forest") is None and "forest" not in display.handover.scores  # was kept for good
    assert not responder.fitted and display.handover.shown != "forest"
    assert volume.pseudo is None  # nor do its answers of the labels gone teach it any more


def test_a_class_no_volume_has_labels_of_is_never_predicted_by_the_net():
    image, _ = sphere_volume((16, 32, 32), radius=7)
    session = SegmentationSession(image, num_classes=2, config=tiny_config())
    session.add_labels((8, slice(None), slice(None)), 1)  # background only: no class was painted
    for _ in session.train(max_steps=2):
        pass
    prediction = session.predict()
    assert (prediction.labels == 0).all()  # before: half the volume an untrained class
    assert prediction.probabilities[1:].max() < 1e-6


def test_a_loaded_model_keeps_the_classes_it_learned_when_fine_tuned_on_fewer(tmp_path):
    from napari_sparseseg.core.checkpoint import save_model

    image, mask = sphere_volume((16, 32, 32), radius=7)
    two = np.where(mask > 0, 1 + (np.indices(mask.shape)[2] > 16), 0)  # two classes: the sphere's halves
    session = SegmentationSession(image, num_classes=2, config=tiny_config())
    session.add_labels((8, slice(None), slice(None)), two[8] + 1)
    for _ in session.train(max_steps=2):
        pass
    unlearned = SegmentationSession(image, num_classes=3, config=tiny_config())  # class 3 never painted
    unlearned.add_labels((8, slice(None), slice(None)), two[8] + 1)
    for _ in unlearned.train(max_steps=1):
        pass
    for source, expect_masked in ((session, False), (unlearned, True)):
        path = save_model(source.trainer, tmp_path / "model.pt")
        tuned = SegmentationSession.from_model(image, path, device="cpu")
        tuned.add_labels((4, slice(None), slice(None)), 1)  # fine-tuning labels of the background alone
        tuned.trainer.update_decision_offset()
        masked = (tuned.trainer.weights.model.decision_offset.numpy() < -10).tolist()
        # the classes the model learned stay (before: every class unpainted here was hidden); one it never learned
        # stays hidden
        assert masked == ([False, False, False, True] if expect_masked else [False, False, False])
