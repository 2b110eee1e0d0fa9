"""Edits that land between the loop's events reach what the user sees and what trains: a hand-back to the forest
shows the forest's mask, scores compare learners on the same labels, corrections always train, an erased label
stops showing, a class added mid-step trains, and a negative plane number is the plane NumPy reads."""

import numpy as np

from napari_sparseseg.core.annotation import AnnotatedVolume, Source
from napari_sparseseg.core.box import Box
from napari_sparseseg.core.events import Prediction, TrainStep
from napari_sparseseg.core.holdout import HoldOut
from napari_sparseseg.core.inference import entropy
from napari_sparseseg.core.session import SegmentationSession
from napari_sparseseg.core.trainer import Trainer
from tests.conftest import sphere_volume, tiny_config


def _three_slices(shape=(16, 48, 48), radius=10.0, **responder):
    image, mask = sphere_volume(shape, radius=radius)
    annotation = np.zeros(mask.shape, np.uint8)
    for z in (shape[0] // 5, shape[0] // 2, shape[0] - 1 - shape[0] // 5):
        annotation[z] = mask[z] + 1
    session = SegmentationSession(image, num_classes=1, config=tiny_config(**responder))
    session.add_labels((slice(None),) * 3, annotation)
    return session, mask


def _net_prediction(volume, labels: np.ndarray) -> Prediction:
    p = np.stack([1 - labels, labels]).astype(np.float32)
    return Prediction(Box.full(volume.shape), labels.astype(np.uint8), p, entropy(p), 0, volume.revision)


def test_a_hand_back_to_the_forest_puts_the_forests_mask_on_screen_and_scores_are_of_the_same_labels():
    session, mask = _three_slices(distill=0)
    volume, display, responder = session.volume, session.display, session.responder
    volume.holdout = HoldOut(volume.spacing, 0.25, block=4, seed=0, multiple_of=responder.block_multiple)
    # held-back sphere voxels of z = 9..11 labeled background: the forest cannot learn them, a net that says so can
    held = volume.holdout.box((9, 0, 0), (3, 48, 48))
    session.add_labels((slice(9, 12), slice(None), slice(None)),
                       np.where(held & (mask[9:12] > 0), 1, 0).astype(np.uint8))
    list(display.respond(responder, lambda: None))
    good = mask.copy()
    good[9:12][held & (mask[9:12] > 0)] = 0
    assert display.show_net(_net_prediction(volume, good), responder).learner == "net"
    session.add_labels((5, slice(None), slice(None)), mask[5] + 1)  # the user paints another slice
    list(display.respond(responder, lambda: None))
    scores = dict(display.handover.scores)
    assert "net" in scores and display.handover.shown == "net"  # the net rescored with the forest, on these labels
    back = display.show_net(_net_prediction(volume, np.zeros_like(mask)), responder)  # the net's next is worse
    assert display.handover.shown == "forest"
    assert back is not None and back.learner == "forest" and back.box == Box.full(volume.shape)


def test_corrections_are_never_held_back():
    session, mask = _three_slices()
    volume = session.volume
    volume.holdout = HoldOut(volume.spacing, 0.25, block=4, seed=0, multiple_of=session.responder.block_multiple)
    session.add_correction((5, slice(None), slice(None)), mask[5] + 1)
    held = volume.holdout.box((5, 0, 0), (1, 48, 48))[0]
    assert held.any()
    patch = volume.read_patch((5, 0, 0), (1, 48, 48), volume.class_weights(0.5), 2.0)
    assert (patch.weight[0][held] > 0).all()  # the net trains on every corrected voxel
    coords, _, held_rows = session.responder.labeled_rows(volume.holdout)
    sources = volume.source[tuple(coords[held_rows].T)]
    assert held_rows.any() and not (sources == Source.CORRECTED).any()  # and none is scored on


def test_a_label_erased_after_a_prediction_was_merged_shows_the_prediction_again():
    from napari_sparseseg.plugin.bridge import Refresh, merge_late_edits

    image, _ = sphere_volume((4, 16, 16))
    session = SegmentationSession(image, config=tiny_config())
    session.add_labels((2, slice(None), slice(None)), 1)
    session.add_labels((2, 8, 8), 2)  # a wrong foreground voxel
    prediction = session.predict()
    prediction = Prediction(prediction.box, np.zeros_like(prediction.labels), prediction.probabilities,
                            prediction.uncertainty, prediction.step, prediction.revision)
    refresh = Refresh(prediction, session.merge(prediction), session.revision)  # merged by the worker
    session.add_labels((2, 8, 8), 0)  # then erased on the GUI thread
    assert merge_late_edits(session, refresh)[2, 8, 8] == 0


def test_a_class_added_and_painted_while_a_step_runs_trains_in_that_step(monkeypatch):
    session, mask = _three_slices((8, 32, 32), radius=6.0)
    take = session.trainer.batches.take

    def class_added_meanwhile(*args, **kwargs):  # the window adds a class, the user paints it, mid-step
        if session.num_classes == 1 and session.trainer.step == 1:
            session.ensure_classes(2)
            session.add_labels((4, slice(10, 20), slice(10, 20)), 3)
        return take(*args, **kwargs)

    monkeypatch.setattr(session.trainer.batches, "take", class_added_meanwhile)
    monkeypatch.setattr(Trainer, "_guard", lambda self, progress: False)
    events = list(session.train(max_steps=3))
    assert [e.step for e in events if isinstance(e, TrainStep)] == [1, 2, 3]
    assert session.trainer.model.head.out_channels == 3


def test_a_negative_plane_number_is_the_plane_numpy_reads():
    image, _ = sphere_volume((4, 16, 16))
    volume = AnnotatedVolume(image)
    box = volume.set_labels((-1, slice(None), slice(None)), 2)
    assert box == Box((3, 0, 0), (4, 16, 16)) and volume.labels[3].all()
    assert volume.plane_coverage() == 1.0
    revision = volume.revision
    volume.set_labels((-1, 5, 5), 0)
    assert volume.changes_since(revision) == Box((3, 5, 5), (4, 6, 6))


def test_a_slice_painted_while_the_learners_are_scored_never_stops_the_run():
    """The user paints (a stroke crossing held-back blocks) while the first responder predicts at the held-back
    voxels: the scores are of the labels the predictions were made at, and the next scoring takes the stroke."""
    session, mask = _three_slices(distill=0)
    volume, display, responder = session.volume, session.display, session.responder
    volume.holdout = HoldOut(volume.spacing, 0.25, block=4, seed=0, multiple_of=responder.block_multiple)
    list(display.respond(responder, lambda: None))  # first responder shown and scored
    session.add_labels((5, slice(None), slice(None)), mask[5] + 1)
    predict = responder.predict_scored_at

    def predict_while_the_user_paints(coords):
        session.add_labels((7, slice(None), slice(None)), mask[7] + 1)  # the stroke lands mid-scoring
        return predict(coords)

    responder.predict_scored_at = predict_while_the_user_paints
    list(display.respond(responder, lambda: None))  # raised ValueError before: labels and answers of two lengths
    assert display.handover.shown == "forest" and "forest" in display.handover.scores
    responder.predict_scored_at = predict
    before = len(display._held_back()[1])
    list(display.respond(responder, lambda: None))
    assert len(display._held_back()[1]) >= before  # the stroke is scored on from the next labels
