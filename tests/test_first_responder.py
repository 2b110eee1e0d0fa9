"""The first responder, the held-back labels, the hand-over and the net's pseudo-labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_sparseseg.core.annotation import AnnotatedVolume
from napari_sparseseg.core.box import Box
from napari_sparseseg.core.config import ResponderConfig
from napari_sparseseg.core.context import CONTEXT_SIGMAS, context_columns, context_features
from napari_sparseseg.core.distill import CONFIDENT_MARGIN, FADE_GAP, distill_weight, pseudo_labels
from napari_sparseseg.core.events import Guidance, Prediction, TrainStep
from napari_sparseseg.core.first_responder import FirstResponder
from napari_sparseseg.core.handover import HandOver, held_back_dice
from napari_sparseseg.core.holdout import HoldOut
from napari_sparseseg.core.session import SegmentationSession
from tests.conftest import sphere_volume, tiny_config

SHAPE = (16, 32, 32)
SPACING = (2.0, 1.0, 1.0)
CONFIG = tiny_config()


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture
def every_stage_kept(monkeypatch):
    """Each later stage is kept whatever its certainty (on the tiny sphere a second stage can be less certain): for
    the tests of how stages are shown, not of which are kept."""
    from napari_sparseseg.core import first_responder

    monkeypatch.setattr(first_responder, "less_certain", lambda current, candidate: False)


def _labeled_volume(**kwargs) -> tuple[AnnotatedVolume, np.ndarray, np.ndarray]:
    image, mask = sphere_volume(SHAPE, radius=7)
    volume = AnnotatedVolume(image, num_classes=1, spacing=SPACING, **kwargs)
    for z in (5, 8, 11):
        volume.set_labels((z, slice(None), slice(None)), mask[z] + 1)
    return volume, image, mask


# -- held-back labels ------------------------------------------------------------------------
@pytest.mark.parametrize("share", [0.0, 0.125, 0.3])
def test_holdout_holds_back_about_its_share_in_blocks_and_box_agrees_with_points(share):
    holdout = HoldOut((2.0, 0.5, 0.5), share, block=8)
    assert holdout.block == (2, 8, 8)  # coarse z gets fewer voxels per block
    held = holdout.box((0, 0, 0), (64, 256, 256))
    assert abs(held.mean() - share) < 0.03
    coords = np.stack(np.nonzero(np.ones((8, 16, 16), bool)), axis=1) + (3, -5, 7)
    np.testing.assert_array_equal(holdout.at(coords), holdout.box((3, -5, 7), (8, 16, 16)).ravel())
    blocks = holdout.box((0, 0, 0), (2, 8, 8))
    assert blocks.all() or not blocks.any()  # one block: held back whole or not at all


def test_training_patches_never_train_on_held_back_labels():
    volume, _, _ = _labeled_volume()
    cw = volume.class_weights(1.0)
    before = volume.read_patch((0, 0, 0), SHAPE, cw, 1.0)
    volume.holdout = HoldOut(SPACING, 0.3, block=4)
    after = volume.read_patch((0, 0, 0), SHAPE, cw, 1.0)
    held = volume.holdout.box((0, 0, 0), SHAPE)
    assert (before.weight[held] > 0).any()
    assert not after.weight[held].any()
    np.testing.assert_array_equal(after.weight[~held], before.weight[~held])


# -- the first responder -----------------------------------------------------------------------
@pytest.mark.parametrize(("stages", "refinements"), [(1, 0), (3, 0), (3, 1), (3, 2)])
def test_first_responder_segments_the_sphere_from_three_slices_without_the_held_back_labels(stages, refinements):
    volume, image, mask = _labeled_volume()
    responder = FirstResponder(image, volume, ResponderConfig(trees=16, stages=stages))
    holdout = HoldOut(SPACING, 0.125)
    assert responder.fit(holdout)
    assert responder.revision == volume.revision and responder.stage == 1
    assert responder.refined == (stages == 1)
    for _ in range(refinements):
        assert responder.refine()
    assert responder.stage == 1 + refinements and responder.refined == (responder.stage == stages)
    if responder.refined:
        assert not responder.refine()  # every stage fitted: nothing more until the next fit
    probs = responder.predict()
    assert probs.shape == (2,) + SHAPE and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    pred = probs.argmax(0)
    dice = 2 * np.sum((pred == 1) & (mask == 1)) / (np.sum(pred == 1) + np.sum(mask == 1))
    assert dice > 0.9
    box = Box((4, 8, 8), (12, 20, 24))
    np.testing.assert_allclose(responder.predict(box), probs[(slice(None),) + box.slices], atol=1e-6)
    coords = np.array([[8, 16, 16], [0, 0, 0]])
    np.testing.assert_allclose(responder.predict_at(coords), probs[:, coords[:, 0], coords[:, 1], coords[:, 2]].T,
                               atol=1e-6)


def test_local_contrast_columns_read_objects_alike_where_the_signal_fades():
    """A blob 3x brighter above the background than its twin reads the same in the local contrast columns, not in
    the Gaussian of the bank; without ``contrast`` the bank is unchanged."""
    from napari_sparseseg.core.features import CONTRAST_SIGMAS, compute_features, feature_names

    z, y, x = np.mgrid[:24, :64, :128].astype(np.float32)
    image = np.full(z.shape, 10.0, np.float32)
    for cx, gain in ((32, 30.0), (96, 90.0)):
        image += gain * np.exp(-((z - 12) ** 2 + (y - 32) ** 2 + (x - cx) ** 2) / (2 * 4.0**2))
    bank = compute_features(image)
    full = compute_features(image, contrast=True)
    assert full.shape[-1] == len(feature_names(contrast=True)) == bank.shape[-1] + len(CONTRAST_SIGMAS)
    np.testing.assert_array_equal(full[..., : bank.shape[-1]], bank)
    gaussian, contrast = feature_names().index("gaussian_1.0"), bank.shape[-1]
    dim, bright = full[12, 32, 32], full[12, 32, 96]
    assert bright[gaussian] > 2 * dim[gaussian]
    assert abs(bright[contrast] - dim[contrast]) < 0.15 * abs(dim[contrast])  # the floor and the twin nearby


def test_the_forests_read_the_contrast_and_split_on_more_columns_from_whole_slices_not_strokes(every_stage_kept):
    from napari_sparseseg.core.forest_plan import PLANE_MAX_FEATURES

    volume, image, mask = _labeled_volume()  # whole slices: plane coverage 1
    responder = FirstResponder(image, volume, ResponderConfig(trees=4, stages=2))
    assert responder.fit() and responder.refine()
    n_stack = responder.warm().shape[-1]
    assert responder._forest.n_features_in_ == n_stack + context_columns(1)
    assert responder._forest.max_features == PLANE_MAX_FEATURES  # every stage
    strokes = AnnotatedVolume(image, num_classes=1, spacing=SPACING)
    for z in (5, 8, 11):  # a short line through the object and one in the background, per slice
        strokes.set_labels((z, 16, slice(12, 20)), mask[z, 16, 12:20] + 1)
        strokes.set_labels((z, 2, slice(2, 10)), 1)
    assert strokes.plane_coverage() < 0.5
    responder = FirstResponder(image, strokes, ResponderConfig(trees=4, stages=1), features=responder.features)
    assert responder.fit()
    assert responder._forest.n_features_in_ == n_stack - 2
    assert getattr(responder._forest, "classifier", responder._forest).max_features == "sqrt"
    assert responder.predict().shape == (2,) + SHAPE


def test_less_certain_compares_mean_uncertainty_within_its_tolerance():
    from napari_sparseseg.core.context import less_certain

    sure, unsure = np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([[0.6, 0.4], [0.5, 0.5]])
    assert less_certain(sure, unsure) and not less_certain(unsure, sure)
    assert not less_certain(sure, sure * 0.96 + 0.02, tolerance=0.5)  # within the tolerance
    assert not less_certain(np.empty((0, 2)), np.empty((0, 2)))


def test_a_next_stage_less_certain_where_nothing_is_labeled_is_not_kept(monkeypatch):
    from napari_sparseseg.core import first_responder

    volume, image, _ = _labeled_volume()
    responder = FirstResponder(image, volume, ResponderConfig(trees=4, stages=3))
    assert responder.fit()
    first = responder.predict()
    seen = []

    def judge(current, candidate):
        seen.append((current.shape, candidate.shape))
        return True  # as if the candidate were less certain

    monkeypatch.setattr(first_responder, "less_certain", judge)
    assert not responder.refine(first)
    assert responder.refined and responder.stage == 1  # settled on the first stage: nothing more to fit
    np.testing.assert_array_equal(responder.predict(), first)
    n_unlabeled = int((volume.labels[tuple(responder._shift[1].T)] == 0).sum())
    assert seen == [((n_unlabeled, 2), (n_unlabeled, 2))]  # judged on the unlabeled voxels of the sample only
    monkeypatch.undo()
    volume.set_labels((2, slice(None), slice(None)), 1)
    assert responder.fit() and not responder.refined and responder.refine(responder.predict())  # new labels: anew


def test_the_forest_shown_learns_every_label_and_the_forest_scored_never_sees_the_held_back_ones():
    volume, image, mask = _labeled_volume()
    holdout = HoldOut(SPACING, 0.3, block=4)
    coords, classes, held = FirstResponder(image, volume, ResponderConfig(trees=8)).labeled_rows(holdout)
    flipped = coords[held & (classes == 1)]
    assert len(flipped) > 10
    # Label the held-back sphere voxels background, against the image: only a learner that saw these labels
    # answers with them.
    volume.set_labels((flipped[:, 0], flipped[:, 1], flipped[:, 2]), 1)
    responder = FirstResponder(image, volume, ResponderConfig(trees=8))
    assert responder.fit(holdout) and not responder.scored  # the forest shown first, alone
    assert responder.fit_scored() and responder.scored and not holdout.released
    assert np.mean(responder.predict_at(flipped).argmax(1) == 0) > 0.9  # the forest shown fits every label
    assert np.mean(responder.predict_scored_at(flipped).argmax(1) == 1) > 0.9  # the one scored never saw them
    while responder.refine():  # and so do the later stages, and the stages whose maps they read
        with pytest.raises(RuntimeError):  # a stage shown is not scored with its predecessor's forest
            responder.predict_scored_at(flipped)
        assert responder.fit_scored() and responder.scored
        assert np.mean(responder.predict_at(flipped).argmax(1) == 0) > 0.9
        assert np.mean(responder.predict_scored_at(flipped).argmax(1) == 1) > 0.9
    assert responder.stage == ResponderConfig().stages > 1
    unsplit = FirstResponder(image, volume, ResponderConfig(trees=8))
    assert unsplit.fit() and not unsplit.fit_scored() and not unsplit.scored  # nothing held back: nothing to score
    with pytest.raises(RuntimeError):
        unsplit.predict_scored_at(flipped)


def test_each_later_stage_reads_maps_aligned_with_the_volume_and_restarts_with_each_fit():
    rng = np.random.default_rng(0)
    mask = np.zeros((24, 48, 48), np.uint8)
    mask[6:18, 12:36, 24:40] = 1  # off-centre in x: a transposed or shifted map would move the mask
    image = (mask + rng.normal(0, 0.9, mask.shape)).astype(np.float32)
    volume = AnnotatedVolume(image, num_classes=1, spacing=(1.0, 1.0, 1.0))
    for z in (8, 15):
        volume.set_labels((z, slice(None), slice(None)), mask[z] + 1)
    responder = FirstResponder(image, volume, ResponderConfig(trees=16))
    assert responder.fit()
    first = responder.predict()
    assert responder.refine(np.zeros((2, 1, 1, 1), np.float32))  # a map of another shape: it predicts its own

    def dice(pred):
        return 2 * np.sum((pred == 1) & (mask == 1)) / (np.sum(pred == 1) + np.sum(mask == 1))

    # Whether a later stage gains depends on the volume (benchmarks/autocontext.py); here each must answer about
    # as well as the first stage, which a map misaligned with the volume would not let it.
    assert dice(responder.predict().argmax(0)) > dice(first.argmax(0)) - 0.03 > 0.9
    assert responder.refine() and responder.refined
    assert dice(responder.predict().argmax(0)) > dice(first.argmax(0)) - 0.03
    volume.set_labels((3, slice(None), slice(None)), 1)
    assert responder.fit() and responder.stage == 1 and not responder.refined  # new labels: the first stage again
    np.testing.assert_allclose(responder.predict().sum(0), 1.0, atol=1e-5)


def test_context_features_smooth_each_foreground_class_isotropically_in_physical_units():
    proba = np.zeros((3, 9, 33, 33), np.float32)
    proba[0] = 1
    proba[:, 4, 16, 16] = (0, 1, 0)  # a point of class 1; class 2 nowhere
    ctx = context_features(proba, (4.0, 1.0, 1.0))
    assert ctx.shape == (9, 33, 33, context_columns(2)) and ctx.dtype == np.float32
    assert ctx[..., len(CONTEXT_SIGMAS):].max() == 0  # class 2's columns
    narrow = ctx[..., 0]
    assert narrow[4, 16, 16] == narrow.max()
    # one z step is 4 units: the profile along z falls as it does 4 voxels along y
    np.testing.assert_allclose(narrow[5, 16, 16], narrow[4, 20, 16], rtol=0.05)
    with pytest.raises(ValueError):
        context_features(proba[:1], (1.0, 1.0, 1.0))
    with pytest.raises(ValueError):
        context_features(proba, (0.0, 1.0, 1.0))


def test_first_responder_needs_two_classes_and_declines_lazy_or_huge_volumes():
    image, mask = sphere_volume(SHAPE)
    volume = AnnotatedVolume(image, num_classes=2, spacing=SPACING)
    responder = FirstResponder(image, volume, ResponderConfig())
    volume.set_labels((8, slice(None), slice(None)), 1)  # background only
    assert not responder.fit() and not responder.fitted
    assert responder.revision == volume.revision  # answered: no refit until the labels change
    volume.set_labels((8, slice(10, 20), slice(10, 20)), 2)
    assert responder.fit()
    assert responder.predict_at(np.array([[8, 15, 15]]))[0, 2] == 0  # class 2 never labeled: probability 0
    small = FirstResponder(image, volume, ResponderConfig(max_feature_bytes=1024))
    assert "GiB" in small.unavailable_reason()
    off = FirstResponder(image, volume, ResponderConfig(enabled=False))
    assert "switched off" in off.unavailable_reason()


# -- the hand-over -----------------------------------------------------------------------------
def test_held_back_score_weighs_finding_the_objects_and_naming_their_classes():
    truth = np.array([0, 1, 1, 2, 2, 0])
    assert held_back_dice(truth, truth, 3) == 1.0
    pred = np.array([0, 1, 0, 2, 2, 2])
    foreground, per_class = 6 / 8, np.mean([2 / 3, 4 / 5])
    assert held_back_dice(truth, pred, 3) == pytest.approx((foreground + per_class) / 2)
    assert held_back_dice(np.array([0, 1, 1, 0]), np.array([0, 1, 0, 1]), 2) == pytest.approx(0.5)  # one class
    # background only: no score (all-background answers would win it, whether or not they find any object)
    assert held_back_dice(np.zeros(4, int), np.array([0, 0, 1, 0]), 2) is None
    assert held_back_dice(np.empty(0, int), np.empty(0, int), 2) is None


def test_hand_over_never_shows_a_learner_that_scores_lower_and_does_not_flicker():
    hand = HandOver(margin=0.01)
    assert hand.offer("forest") == "forest"
    assert hand.update({"forest": 0.90}) == "forest"
    assert hand.update({"net": 0.60, "blend": 0.85}) == "forest"
    assert hand.update({"net": 0.905}) == "forest"  # level within the margin: no switch
    assert hand.update({"net": 0.92}) == "net"
    assert hand.update({"net": 0.915}) == "net"  # a small dip does not switch back
    assert hand.update({"forest": 0.93}) == "forest"  # the forest refitted on new labels: clearly better
    rng = np.random.default_rng(0)
    for _ in range(200):
        hand.update({name: float(rng.uniform(0.8, 0.9)) for name in ("forest", "net", "blend")})
        assert hand.scores[hand.shown] >= max(hand.scores.values()) - hand.margin



def test_the_first_responder_comes_back_as_soon_as_the_learner_that_replaced_it_is_no_longer_better():
    for home, after in (("forest", "forest"), (None, "net")):
        hand = HandOver(margin=0.01, home=home)
        hand.update({"forest": 0.90})
        assert hand.update({"net": 0.93}) == "net"
        assert hand.update({"net": 0.90}) == after  # level again: home wins ties; without a home the net stays
    hand = HandOver(margin=0.01)
    hand.update({"forest": 0.90, "net": 0.93})
    assert hand.update({"net": 0.89, "blend": 0.95}) == "blend"  # home first, then a clear winner over it


@pytest.mark.parametrize("kwargs", [{"margin": 1.0}, {"margin": -0.1}, {"confidence": 0.2}, {"home": "tree"}])
def test_hand_over_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        HandOver(**kwargs)

# -- pseudo-labels -----------------------------------------------------------------------------
def test_pseudo_labels_train_unlabeled_confident_voxels_only_and_fade_as_the_net_catches_up():
    probs = np.zeros((2,) + SHAPE, np.float32)
    probs[1] = 0.9
    probs[1, :, :, :16] = 0.6  # not confident: margin 0.2 < CONFIDENT_MARGIN
    probs[0] = 1 - probs[1]
    pseudo = pseudo_labels(probs, 0.5)
    assert pseudo.classes.dtype == np.uint8 and (pseudo.classes == 1).all()
    assert np.allclose(pseudo.confidence[..., 16:].astype(np.float32), 0.8, atol=1e-3)
    assert not pseudo.confidence[..., :16].any() and 0.8 >= CONFIDENT_MARGIN
    volume, _, _ = _labeled_volume()
    volume.pseudo = pseudo
    volume.holdout = HoldOut(SPACING, 0.3, block=4)
    cw = volume.class_weights(1.0)
    patch = volume.read_patch((0, 0, 0), SHAPE, cw, 1.0)
    labeled = volume.labels > 0
    held = volume.holdout.box((0, 0, 0), SHAPE)
    free = ~labeled & ~held
    assert (patch.target[free & (pseudo.confidence > 0)] == 1).all()
    np.testing.assert_allclose(patch.weight[free], 0.5 * pseudo.confidence[free].astype(np.float32) * cw[1],
                               rtol=1e-3)
    np.testing.assert_array_equal(patch.target[labeled], volume.labels[labeled].astype(np.int64) - 1)  # labels win
    assert not patch.weight[held].any()
    assert distill_weight(0.5, {"forest": 0.9}) == 0.5
    assert distill_weight(0.5, {"forest": 0.9, "net": 0.9 - FADE_GAP}) == pytest.approx(0.5)
    assert distill_weight(0.5, {"forest": 0.9, "net": 0.9 - FADE_GAP / 2}) == pytest.approx(0.25)
    assert distill_weight(0.5, {"forest": 0.9, "net": 0.95}) == 0.0
    assert distill_weight(0.0, {"forest": 0.9}) == 0.0


# -- the session loop --------------------------------------------------------------------------
def _three_slice_session(shape=SHAPE, radius=7, **responder) -> tuple[SegmentationSession, np.ndarray]:
    """Three painted slices of a sphere; of ``SHAPE``, only background is held back, of ``(16, 48, 48)`` with
    ``radius=10`` some of the sphere, too."""
    image, mask = sphere_volume(shape, radius=radius)
    config = tiny_config(trees=8, **responder)
    session = SegmentationSession(image, num_classes=1, spacing=SPACING, config=config)
    for z in (5, 8, 11):
        session.add_labels((z, slice(None), slice(None)), mask[z] + 1)
    return session, mask


def test_the_first_responder_shows_the_view_then_the_volume_before_the_net_has_trained():
    session, mask = _three_slice_session()
    view = Box((8, 0, 0), (9, 32, 32))
    events = session.interactive(lambda: view, first_refresh_steps=10**6)
    predictions = []
    for event in events:
        if isinstance(event, Prediction):
            predictions.append(event)
            assert session.trainer.step == 0  # shown before a single training step
        if isinstance(event, TrainStep):
            break
    events.close()
    assert [p.learner for p in predictions[:2]] == ["forest", "forest"]
    assert predictions[0].box == view and predictions[1].box == Box.full(SHAPE)
    assert predictions[1].score is None  # not scored before it is shown (nor after: background alone is held back)
    shown = predictions[1].labels
    true_dice = 2 * np.sum(shown & mask) / (shown.sum() + mask.sum())
    assert true_dice > 0.9
    estimate = predictions[1].estimate  # what the user is told, made from the whole volume shown
    assert estimate is not None and abs(estimate.dice - true_dice) < 0.1
    assert estimate.interval[0] <= estimate.dice <= estimate.interval[1] and len(estimate.per_class) == 1
    assert session.volume.holdout is None and session.volume.pseudo is None  # the loop cleans up after itself


def test_a_net_that_finds_nothing_does_not_replace_the_first_responder_where_only_background_is_held_back():
    session, mask = _three_slice_session()  # its held-back blocks hold background only
    events = session.interactive(lambda: None, first_refresh_steps=3, refresh_seconds=0.0)
    shown = []
    for event in events:
        if isinstance(event, Prediction) and event.box == Box.full(SHAPE):
            shown.append(event)
        if session.trainer.step >= 10:  # the net predicted (from step 3 on) before it has found the sphere
            break
    events.close()
    assert session.display.latest("net") is not None
    rev, coords, truth = session.display._held_back()
    assert len(truth) and not np.any(truth > 0)
    assert session.display.handover.shown == "forest" and "net" not in session.display.handover.scores
    assert all(p.learner == "forest" for p in shown)
    last = shown[-1].labels > 0
    assert 2 * np.sum(last & (mask > 0)) / (last.sum() + mask.sum()) > 0.9  # the mask on screen: still the sphere


def test_scores_of_held_back_foreground_that_is_gone_are_dropped_and_the_learner_shown_stays():
    from napari_sparseseg.core.holdout import HoldOut

    session, _ = _three_slice_session()
    display = session.display
    display.volume.holdout = HoldOut(SPACING, 0.3, block=4)
    n = 400
    coords = np.stack([np.full(n, 8), np.repeat(np.arange(20), 20), np.tile(np.arange(20), 20)], 1)
    truth = (np.arange(n) % 3 == 0).astype(np.int64)
    display.handover.shown = "forest"
    display._score({"forest": np.zeros(n, np.int64), "net": truth.copy()}, coords, truth)
    assert display.handover.shown == "net"  # the net found the held-back foreground, the forest did not
    display._score({"forest": np.zeros(n, np.int64), "net": np.ones(n, np.int64)}, coords, np.zeros(n, np.int64))
    assert display.handover.scores == {}  # its strokes erased (or its class released) since: no stale score
    assert display.handover.shown == "net"  # and no switch on a stroke: nothing shows the other to be better
    assert session.display.handover.update({}) == "net"


def test_the_forest_shown_is_scored_after_its_masks_and_before_them_once_the_net_leads(every_stage_kept):
    session, _ = _three_slice_session()
    display, responder, stages = session.display, session.responder, ResponderConfig().stages
    session.volume.holdout = HoldOut(SPACING, 0.3, block=4)
    order: list[str] = []
    fit_scored = responder.fit_scored
    responder.fit_scored = lambda *args: order.append("scored") or fit_scored(*args)
    for event in display.respond(responder, lambda: None):
        order.append(type(event).__name__)
    # The forest on screen: each stage's mask and where to paint next come first, the scored forests after them.
    assert order == ["Prediction"] * stages + ["Guidance", "scored"]
    assert responder.scored and display.handover.shown == "forest" and display.handover.scores["forest"] > 0.8
    display.handover.shown, display.handover.scores["net"] = "net", 1.0  # the net leads, and no score beats it
    display.handover.home = None  # (the forest, at home, would come back on a tie)
    session.add_correction((2, slice(None), slice(None)), 1)
    order.clear()
    for event in display.respond(responder, lambda: None):
        order.append(type(event).__name__)
    assert order == ["scored"] * stages  # each stage scored before its mask would be shown: none beats the net
    assert display.handover.shown == "net" and responder.scored


def test_every_prediction_shown_scores_within_the_margin_of_the_best_learner():
    session, mask = _three_slice_session((16, 48, 48), radius=10, margin=0.0)  # the sphere held back, too
    seen: list[Prediction] = []
    events = session.interactive(refresh_seconds=0.0, first_refresh_steps=2, max_predict_share=1.0)
    for event in events:
        if isinstance(event, Prediction):
            seen.append(event)
        if session.trainer.step >= 6 and session.volume.labels[2].max() == 0:  # new labels: masks after scoring
            session.add_labels((2, slice(None), slice(None)), mask[2] + 1)
        if any(p.scores for p in seen) or session.trainer.step >= 300:
            break
    events.close()
    scored = [p for p in seen if p.scores]
    assert scored and {"forest", "net"} <= set(scored[-1].scores)
    for p in scored:
        assert p.scores[p.learner] >= max(p.scores.values()) - 1e-9, (p.learner, p.scores)


def test_a_correction_refits_the_first_responder_while_the_net_trains():
    session, mask = _three_slice_session()
    events = session.interactive(first_refresh_steps=10**6)
    for event in events:
        if isinstance(event, Prediction) and event.box == Box.full(SHAPE):
            break
    fitted = session.responder.revision
    session.add_correction((2, slice(None), slice(None)), 1)
    revisions = []
    for event in events:  # the second stage of the labels before may come first; then the refit on the correction
        if isinstance(event, Prediction):
            revisions.append(event.revision)
            if event.revision == session.volume.revision or len(revisions) > 10:
                break
    events.close()
    assert session.responder.revision > fitted and revisions[-1] == session.volume.revision


def test_each_stage_replaces_the_mask_and_carries_the_revision_of_the_labels_it_was_fitted_on(every_stage_kept):
    session, _ = _three_slice_session()
    events = session.interactive(first_refresh_steps=10**6)
    full, stages = [], []
    for event in events:
        if isinstance(event, Prediction) and event.box == Box.full(SHAPE):
            full.append(event)
            stages.append(session.responder.stage)
            if len(full) == 1:
                fitted = session.volume.revision
                session.add_correction((2, slice(None), slice(None)), 1)  # painted while the later stages fit
        if isinstance(event, Guidance):
            break  # where to paint next follows the last stage's mask
    events.close()
    assert stages == list(range(1, ResponderConfig().stages + 1))  # each stage's mask shown, first to last
    assert session.responder.refined and all(p.learner == "forest" for p in full)
    assert all(p.revision == fitted for p in full) and fitted < session.volume.revision  # the stroke is merged over


def test_stop_is_heard_before_each_later_stage_and_the_next_start_fits_the_rest(every_stage_kept):
    session, _ = _three_slice_session()
    stop: list[bool] = []
    for event in session.interactive(first_refresh_steps=10**6, should_stop=lambda: bool(stop)):
        if isinstance(event, Prediction) and event.box == Box.full(SHAPE):
            stop.append(True)  # the user presses Stop as the first mask appears
    assert len(stop) == 1 and session.responder.stage == 1 and not session.responder.refined
    assert session.responder.behind and session.responder.revision == session.volume.revision
    events = session.interactive(first_refresh_steps=10**6)  # Start again, the labels unchanged
    shown = []
    for event in events:
        if isinstance(event, Prediction):
            shown.append(event)
        if isinstance(event, Guidance):
            break
    events.close()
    assert session.responder.refined and not session.responder.behind  # refined, not refitted
    assert len(shown) == ResponderConfig().stages - 1  # the later stages only
    assert all(p.box == Box.full(SHAPE) and p.revision == session.volume.revision for p in shown)


def test_the_store_gets_the_mask_that_stays_on_screen_once():
    session, _ = _three_slice_session()
    recorded: list[Prediction] = []

    class Recorder:
        def on_step(self, trainer, event):
            pass

        def record_prediction(self, prediction):
            recorded.append(prediction)

    list(session.display.respond(session.responder, lambda: None, Recorder()))
    assert len(recorded) == 1 and session.responder.refined  # the last stage's mask, not the earlier ones too
    session.add_correction((2, slice(None), slice(None)), 1)
    list(session.display.respond(session.responder, lambda: None, Recorder(), should_stop=lambda: True))
    assert len(recorded) == 2 and session.responder.stage == 1  # stopped: the first stage's mask is kept
    assert recorded[1].revision == session.volume.revision
    session.add_correction((3, slice(None), slice(None)), 1)
    asked = []
    list(session.display.respond(session.responder, lambda: None, Recorder(),
                                 should_stop=lambda: asked.append(1) or len(asked) > 1))
    assert len(recorded) == 3 and session.responder.stage == 2  # stopped after the second stage: its mask is kept
    np.testing.assert_allclose(recorded[2].probabilities, session.responder.predict(), atol=1e-6)


@pytest.mark.parametrize("resumed", [False, True])
def test_a_stage_not_kept_leaves_the_mask_on_screen_stored_once_and_guidance_follows(monkeypatch, resumed):
    from napari_sparseseg.core import first_responder

    session, _ = _three_slice_session()
    recorded: list[Prediction] = []

    class Recorder:
        def record_prediction(self, prediction):
            recorded.append(prediction)

    if resumed:  # stopped after the first stage; Start again takes up the next one, which is not kept
        list(session.display.respond(session.responder, lambda: None, Recorder(), should_stop=lambda: True))
        recorded.clear()
    monkeypatch.setattr(first_responder, "less_certain", lambda current, candidate: True)
    events = list(session.display.respond(session.responder, lambda: None, Recorder()))
    assert session.responder.refined and session.responder.stage == 1
    assert len(recorded) == 1 and recorded[0].box == Box.full(SHAPE)  # the first stage's mask, stored once
    np.testing.assert_allclose(recorded[0].probabilities, session.responder.predict(), atol=1e-6)
    assert isinstance(events[-1], Guidance)


def test_without_a_first_responder_the_net_is_shown_with_a_notice():
    session, _ = _three_slice_session(max_feature_bytes=1)  # too large for its feature stack
    events = session.interactive(first_refresh_steps=1, refresh_seconds=0.0)
    notices, prediction = [], None
    for event in events:
        if isinstance(event, Prediction):
            prediction = event
            break
        notices.append(event)
    events.close()
    assert prediction.learner == "net"
    assert any("GiB" in getattr(n, "message", "") for n in notices)


def test_a_class_the_blocks_would_take_away_is_released_for_every_learner():
    volume, image, mask = _labeled_volume()
    # One block covers the volume: held back whole or not at all; pick a seed that holds it back.
    seed = next(s for s in range(64) if HoldOut(SPACING, 0.5, block=64, seed=s).box((0, 0, 0), (1, 1, 1))[0, 0, 0])
    holdout = HoldOut(SPACING, 0.5, block=64, seed=seed)
    responder = FirstResponder(image, volume, ResponderConfig(trees=4))
    coords, classes, held = responder.labeled_rows(holdout)
    assert holdout.released == {0, 1} and not held.any()
    assert responder.fit(holdout)
    volume.holdout = holdout
    patch = volume.read_patch((0, 0, 0), SHAPE, volume.class_weights(1.0), 1.0)
    assert (patch.weight[volume.labels > 0] > 0).all()  # nothing labeled is withheld from the net either


def test_the_held_back_interval_brackets_the_score_and_narrows_with_more_blocks():
    from napari_sparseseg.core.handover import held_back_scores

    rng = np.random.default_rng(0)

    def scored(n_blocks):
        groups = np.repeat(np.arange(n_blocks), 50)
        truth = (rng.random(groups.size) < 0.3).astype(int)
        predicted = np.where(rng.random(groups.size) < 0.1, 1 - truth, truth)  # 10 % wrong
        return held_back_scores(truth, {"net": predicted}, 2, groups)["net"]

    few, many = scored(8), scored(200)
    assert few.interval[0] <= few.dice <= few.interval[1]
    assert many.interval[0] <= many.dice <= many.interval[1]
    assert many.interval[1] - many.interval[0] < few.interval[1] - few.interval[0]
    assert held_back_scores(np.empty(0, int), {"net": np.empty(0, int)}, 2, np.empty(0, int)) == {}


def test_a_lead_the_held_back_labels_cannot_tell_from_chance_does_not_change_the_mask():
    from napari_sparseseg.core.handover import held_back_scores

    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(6), 40)
    truth = (rng.random(groups.size) < 0.4).astype(int)
    forest = np.where(rng.random(groups.size) < 0.15, 1 - truth, truth)
    noisy = forest.copy()
    noisy[groups == 0] = truth[groups == 0]  # better on one block of six only
    hand = HandOver(margin=0.0)
    hand.update(held_back_scores(truth, {"forest": forest}, 2, groups))
    hand.update(held_back_scores(truth, {"blend": noisy}, 2, groups))
    assert hand.scores["blend"] > hand.scores["forest"]
    assert hand.shown == "forest"  # a lead on one block in six: not sure enough to switch
    better = truth.copy()
    better[rng.random(groups.size) < 0.02] ^= 1
    hand.update(held_back_scores(truth, {"net": better}, 2, groups))
    assert hand.shown == "net"  # better on every block: switch


def test_predictions_carry_an_interval_for_the_learner_shown():
    image, mask = sphere_volume((16, 96, 96), radius=30)
    config = tiny_config(trees=8, held_back=0.3)
    session = SegmentationSession(image, num_classes=1, spacing=SPACING, config=config)
    for z in (5, 8, 11):
        session.add_labels((z, slice(None), slice(None)), mask[z] + 1)
    events = session.interactive(first_refresh_steps=10**6)
    for event in events:
        if isinstance(event, TrainStep):  # the forest's masks are on screen and scored
            break
    session.add_correction((2, slice(None), slice(None)), 1)
    for event in events:
        if isinstance(event, Prediction) and event.box == Box.full((16, 96, 96)):
            break
    events.close()
    low, high = event.interval  # the mask on the new labels carries the latest score of its learner
    assert event.learner == "forest" and low <= event.score <= high


class _ReadingClock:
    """The simulated user's clock, 20 ms a reading (a reading an event, about): when it paints depends on the
    events, not on how fast this machine makes them (on a loaded machine a 6 s wall-clock budget ended before any
    suggestion came)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def now(self) -> float:
        self.seconds += 0.02
        return self.seconds

    def pause_while(self, work):
        return work()


@pytest.fixture
def reading_clock(monkeypatch):
    from napari_sparseseg.evaluation import simulated_user

    monkeypatch.setattr(simulated_user, "_Clock", _ReadingClock)


def test_a_simulated_user_who_follows_the_suggestions_paints_the_suggested_slices(reading_clock):
    from napari_sparseseg.evaluation.simulated_user import evaluate_volume

    image, mask = sphere_volume((16, 48, 48), radius=12)
    config = tiny_config(trees=8)
    r = evaluate_volume(image, mask, spacing=SPACING, protocol="suggest:3", budget_seconds=6, config=config,
                        baselines=("rf", "interp"))
    assert len(r["painted"]) == 2 and all(p["seconds"] >= 2 for p in r["painted"])
    assert r["annotated_fraction"] > 1 / 16  # more than the first axial slice
    assert r["baselines"]["interp"]["applicable"] is False and r["baselines"]["rf"]["dice_fg"] > 0.5
    from napari_sparseseg.cli.evaluate import _table

    assert "slices painted" not in _table(r)
    assert "note: 2 of the 3 slices painted" in _table(dict(r, painted=r["painted"][:1]))  # a budget too short
    with pytest.raises(ValueError, match="suggest:K"):
        evaluate_volume(image, mask, spacing=SPACING, protocol="suggest:x", budget_seconds=1, config=config)


def test_a_simulated_user_who_paints_only_the_suggested_uncertain_regions(reading_clock):
    from napari_sparseseg.evaluation.simulated_user import evaluate_volume

    image, mask = sphere_volume((16, 48, 48), radius=12)
    r = evaluate_volume(image, mask, spacing=SPACING, protocol="suggest-scribble:3", budget_seconds=6,
                        config=tiny_config(trees=8))
    assert len(r["painted"]) == 2
    plane = 48 * 48 if r["painted"][0]["axis"] == 0 else 16 * 48
    assert all(0 < p["voxels"] <= plane for p in r["painted"])
    assert r["annotated_fraction"] < 3 / 16  # regions and a scribble, not three whole slices
