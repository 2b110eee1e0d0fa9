"""Tests of the non-deep-learning baselines on a small synthetic volume."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from napari_sparseseg.baselines import interpolate_slices, random_forest_segment
from napari_sparseseg.baselines.interpolation import labeled_slice_indices
from napari_sparseseg.baselines.random_forest import compute_features, feature_names
from napari_sparseseg.core.encoding import annotation_to_mask, mask_to_annotation

# ITK's SWIG wrappers warn on import ("builtin type SwigPyPacked has no __module__").
pytestmark = pytest.mark.filterwarnings("ignore:builtin type .* has no __module__:DeprecationWarning")

SHAPE = (24, 48, 48)
SPACING = (2.0, 1.0, 1.0)


def _dice(pred: np.ndarray, gt: np.ndarray) -> float:
    return float(2 * (pred & gt).sum() / max(pred.sum() + gt.sum(), 1))


@pytest.fixture(scope="module")
def volume() -> tuple[np.ndarray, np.ndarray]:
    """Two spheres (classes 1 and 2) in a noisy anisotropic volume.

    Returns image (float32) and ground truth (mask encoding), axes (z, y, x).
    """
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in SHAPE), indexing="ij")
    zp = z * SPACING[0]
    gt = np.zeros(SHAPE, np.uint8)
    gt[(zp - 23) ** 2 + (y - 15) ** 2 + (x - 15) ** 2 < 11**2] = 1
    gt[(zp - 23) ** 2 + (y - 33) ** 2 + (x - 32) ** 2 < 10**2] = 2
    rng = np.random.default_rng(42)
    image = np.where(gt == 1, 1.0, np.where(gt == 2, 0.5, 0.0)) + rng.normal(0, 0.35, SHAPE)
    return (100 + 50 * image).astype(np.float32), gt


def _sparse(gt: np.ndarray, n_slices: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Protocol z:n: fully label n axial slices from the ground truth."""
    zs = np.round(np.linspace(0, gt.shape[0] - 1, n_slices + 2)).astype(int)[1:-1]
    ann = np.zeros(gt.shape, np.uint8)
    ann[zs] = mask_to_annotation(gt[zs])
    return ann, zs


def test_features_shape_and_finite(volume):
    image, _ = volume
    feats = compute_features(image[:8, :16, :16], SPACING)
    assert feats.shape == (8, 16, 16, len(feature_names()))
    assert feats.dtype == np.float32
    assert np.isfinite(feats).all()


def test_random_forest_dice(volume):
    image, gt = volume
    ann, _ = _sparse(gt)
    out = random_forest_segment(image, ann, SPACING, n_estimators=30, max_samples=20_000)
    assert out.shape == gt.shape and out.dtype == np.uint8
    labeled = ann > 0
    np.testing.assert_array_equal(out[labeled], annotation_to_mask(ann)[labeled])
    for c in (1, 2):
        assert _dice(out == c, gt == c) > 0.8, c
    # Deterministic for a fixed seed.
    again = random_forest_segment(image, ann, SPACING, n_estimators=30, max_samples=20_000)
    np.testing.assert_array_equal(out, again)


def test_random_forest_validation(volume):
    image, gt = volume
    ann, _ = _sparse(gt)
    with pytest.raises(ValueError, match="does not match"):
        random_forest_segment(image, ann[:-1])
    with pytest.raises(ValueError, match="3D"):
        random_forest_segment(image[0], ann[0])
    with pytest.raises(ValueError, match="at least 2 labeled classes"):
        random_forest_segment(image, np.where(ann > 0, 1, 0).astype(np.uint8))
    with pytest.raises(ValueError, match="spacing"):
        random_forest_segment(image, ann, (1.0, 0.0, 1.0))


def test_labeled_slice_indices():
    ann = np.zeros((5, 4, 4), np.uint8)
    ann[0] = 1  # fully background: labeled, no foreground
    ann[2, 1, 1] = 3  # one foreground stroke: labeled
    ann[3, 0, 0] = 1  # a background stroke only: not a labeled slice
    assert labeled_slice_indices(ann, 0) == [0, 2]
    assert labeled_slice_indices(ann, 1) == [1]


def test_interpolation_missing_itk(monkeypatch, volume):
    _, gt = volume
    ann, _ = _sparse(gt)
    monkeypatch.setitem(sys.modules, "itk", None)
    with pytest.raises(ImportError, match="pip install itk-morphologicalcontourinterpolation"):
        interpolate_slices(ann)


def test_interpolation(volume):
    pytest.importorskip("itk")
    _, gt = volume
    ann, zs = _sparse(gt)
    out = interpolate_slices(ann, axis=0)
    assert out.shape == gt.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[zs], gt[zs])
    for c in (1, 2):
        assert _dice(out == c, gt == c) > 0.5, c
    # Unlabeled slices got filled in, beyond what the slices alone give.
    assert _dice(out > 0, gt > 0) > _dice(annotation_to_mask(ann) > 0, gt > 0) + 0.2
    # The same annotation along another axis gives the transposed result.
    out_x = interpolate_slices(np.moveaxis(ann, 0, 2), axis=2)
    np.testing.assert_array_equal(out_x, np.moveaxis(out, 0, 2))
    # Nothing to interpolate between: the annotation comes back as a mask.
    one = np.zeros_like(ann)
    one[zs[1]] = ann[zs[1]]
    np.testing.assert_array_equal(interpolate_slices(one), annotation_to_mask(one))
