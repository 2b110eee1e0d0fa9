"""The first responder moved from the class shares of brush strokes towards the volume's (core/prior_shift.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from napari_sparseseg.core.annotation import AnnotatedVolume
from napari_sparseseg.core.config import ResponderConfig
from napari_sparseseg.core.first_responder import FirstResponder
from napari_sparseseg.core.holdout import HoldOut
from napari_sparseseg.core.prior_shift import MAX_RATIO, ShiftedClassifier, shift_for, volume_prior
from tests.conftest import sphere_volume

SHAPE = (16, 32, 32)
SPACING = (1.0, 1.0, 1.0)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.mark.parametrize("true_share", [0.05, 0.3, 0.7])
def test_em_recovers_the_class_shares_of_the_voxels_answered(true_share):
    # Two classes with known likelihoods (unit Gaussians at 0 and 2); a classifier fitted at 50/50 answers with the
    # exact posterior of those shares. EM on its answers over voxels drawn at another share finds that share.
    rng = np.random.default_rng(0)
    n = 40_000
    fg = rng.random(n) < true_share
    x = rng.normal(np.where(fg, 2.0, 0.0), 1.0)
    lik = np.stack([np.exp(-0.5 * x**2), np.exp(-0.5 * (x - 2.0) ** 2)], axis=1)
    posterior = lik / lik.sum(axis=1, keepdims=True)  # at training shares 0.5 / 0.5
    prior = volume_prior(posterior, np.array([0.5, 0.5]))
    assert prior.sum() == pytest.approx(1.0)
    assert prior[1] == pytest.approx(fg.mean(), abs=0.02)


def test_em_refuses_mismatched_or_non_positive_shares():
    with pytest.raises(ValueError, match="must be"):
        volume_prior(np.full((4, 3), 1 / 3), np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="positive"):
        volume_prior(np.full((4, 2), 0.5), np.array([1.0, 0.0]))


@pytest.mark.parametrize(("coverage", "tau"), [(1.0, 0.0), (1.7, 0.0), (0.0, 0.5), (0.1, 0.45), (-1.0, 0.5)])
def test_whole_slices_are_left_as_they_are_strokes_shifted(coverage, tau):
    assert shift_for(0.5, coverage) == pytest.approx(tau)


class _Fixed:
    """A 'fitted classifier' answering the same probabilities for every row."""

    classes_ = np.array([0, 2])

    def __init__(self, p):
        self.p = np.asarray(p, float)

    def predict_proba(self, rows):
        return np.tile(self.p, (len(rows), 1))


def test_shifted_classifier_reweights_and_renormalises():
    shifted = ShiftedClassifier(_Fixed([0.4, 0.6]), np.array([2.0, 0.5]))
    p = shifted.predict_proba(np.zeros((3, 5)))
    np.testing.assert_allclose(p, [[0.8 / 1.1, 0.3 / 1.1]] * 3)
    np.testing.assert_array_equal(shifted.classes_, [0, 2])
    for bad in ([1.0], [1.0, 0.0], [1.0, np.nan]):
        with pytest.raises(ValueError, match="positive finite"):
            ShiftedClassifier(_Fixed([0.4, 0.6]), np.array(bad))


def test_answers_that_never_favour_a_class_shift_it_a_bounded_way():
    # Answers of 0.5 / 0.5 everywhere from a classifier fitted at 0.2 / 0.8: EM's fixed point is 1 / 0, an infinite
    # shift against class 1; the ratio is bounded, so the class is shrunk, not wiped out.
    shifted = ShiftedClassifier.fit_to(_Fixed([0.5, 0.5]), np.zeros((100, 2)), np.array([0.2, 0.8]), tau=1.0)
    assert shifted.weights[0] > 1 > shifted.weights[1] >= 1 / MAX_RATIO
    assert np.all(shifted.predict_proba(np.zeros((1, 2)))[:, 1] > 0)


def _strokes(volume: AnnotatedVolume, mask: np.ndarray) -> None:
    """Strokes as a user paints them: the object's core densely, the background in a few short lines far away."""
    core = ndi.binary_erosion(mask.astype(bool), iterations=3)
    for z in (6, 8, 10):
        volume.set_labels((z, slice(None), slice(None)), np.where(core[z], 2, 0).astype(np.uint8))
        volume.set_labels((z, slice(1, 3), slice(2, 30)), np.ones((2, 28), np.uint8))
    assert volume.plane_coverage() < 0.5


def _fit_all_stages(image, volume, shift: float) -> np.ndarray:
    return _fit_all_stages_of(FirstResponder(image, volume, ResponderConfig(trees=16, stages=2, prior_shift=shift)))


def _fit_all_stages_of(responder: FirstResponder) -> np.ndarray:
    assert responder.fit()
    proba = responder.predict()
    while responder.refine(proba):
        proba = responder.predict()
    return proba


def test_a_forest_fitted_on_strokes_that_paint_the_object_densely_moves_towards_the_background():
    # Whether the move lands nearer the truth is measured on real volumes (benchmarks/autocontext.py); here: its
    # direction, and the object is still found.
    image, mask = sphere_volume(SHAPE, radius=7, noise=0.3)
    volume = AnnotatedVolume(image, num_classes=1, spacing=SPACING)
    _strokes(volume, mask)
    counts = volume.class_counts
    assert counts[1] / counts.sum() > 2 * mask.mean()  # the strokes paint the object more densely than it is

    kept = _fit_all_stages(image, volume, shift=0.0).argmax(0) > 0
    shifted = _fit_all_stages(image, volume, shift=0.5).argmax(0) > 0
    core = ndi.binary_erosion(mask.astype(bool), iterations=3)
    assert shifted.sum() < kept.sum()
    assert shifted[core].all()


def test_the_forest_scored_on_held_back_labels_is_moved_as_the_one_shown():
    image, mask = sphere_volume(SHAPE, radius=7, noise=0.3)
    volume = AnnotatedVolume(image, num_classes=1, spacing=SPACING)
    _strokes(volume, mask)
    responder = FirstResponder(image, volume, ResponderConfig(trees=16, stages=1, prior_shift=0.5))
    assert responder.fit(HoldOut(SPACING, 0.3, block=4)) and responder.fit_scored()
    assert responder.scored
    for forest in (responder._forest, responder._scored):
        assert isinstance(forest, ShiftedClassifier) and forest.weights[1] < 1 < forest.weights[0]


def test_whole_slices_give_exactly_the_forest_of_before():
    image, mask = sphere_volume(SHAPE, radius=7, noise=0.3)
    volume = AnnotatedVolume(image, num_classes=1, spacing=SPACING)
    for z in (4, 8, 12):
        volume.set_labels((z, slice(None), slice(None)), mask[z] + 1)
    assert volume.plane_coverage() == 1.0
    np.testing.assert_array_equal(_fit_all_stages(image, volume, shift=0.0), _fit_all_stages(image, volume, shift=1.0))


def test_two_foreground_classes_one_never_painted_keep_their_columns():
    image, mask = sphere_volume(SHAPE, radius=7, noise=0.3)
    volume = AnnotatedVolume(image, num_classes=2, spacing=SPACING)
    core = ndi.binary_erosion(mask.astype(bool), iterations=3)
    for z in (6, 8, 10):  # class 2 painted, class 1 never
        volume.set_labels((z, slice(None), slice(None)), np.where(core[z], 3, 0).astype(np.uint8))
        volume.set_labels((z, slice(1, 3), slice(2, 30)), np.ones((2, 28), np.uint8))
    responder = FirstResponder(image, volume, ResponderConfig(trees=8, stages=1))
    assert responder.fit()
    np.testing.assert_array_equal(responder._forest.classes_, [0, 2])
    assert responder._forest.weights.shape == (2,) and responder._forest.weights[1] < 1
    proba = responder.predict()
    assert proba.shape == (3,) + SHAPE and not proba[1].any()
    np.testing.assert_allclose(proba.sum(0), 1.0, atol=1e-5)


def test_the_same_labels_and_seed_give_the_same_shift():
    image, mask = sphere_volume(SHAPE, radius=7, noise=0.3)
    weights = []
    for _ in range(2):
        volume = AnnotatedVolume(image, num_classes=1, spacing=SPACING)
        _strokes(volume, mask)
        responder = FirstResponder(image, volume, ResponderConfig(trees=8, stages=1), seed=3)
        assert responder.fit()
        weights.append(responder._forest.weights)
    np.testing.assert_array_equal(*weights)


def test_a_binned_grid_reads_the_shares_at_its_bins():
    image, mask = sphere_volume(SHAPE, radius=7, noise=0.3)
    volume = AnnotatedVolume(image, num_classes=1, spacing=SPACING)
    _strokes(volume, mask)
    full = FirstResponder(image, volume, ResponderConfig(trees=8)).feature_bytes()
    responder = FirstResponder(image, volume, ResponderConfig(trees=8, stages=2, max_feature_bytes=full // 3))
    assert responder.grid is not None and responder.grid.binned
    proba = _fit_all_stages_of(responder)
    assert isinstance(responder._forest, ShiftedClassifier) and responder._forest.weights[1] < 1
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(0), 1.0, atol=1e-5)
