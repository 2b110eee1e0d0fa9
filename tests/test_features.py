"""The first responder's filter bank: its values against a plain reference, and the memory it takes to compute."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_sparseseg.core.features import SCALE_TEMPORARIES, SIGMAS, compute_features, feature_names


def _smooth_image(shape=(20, 24, 28), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndi.gaussian_filter(rng.random(shape), 1.5).astype(np.float32)


def _reference_scale(img: np.ndarray, sigma: np.ndarray, rel: np.ndarray) -> np.ndarray:
    """The nine columns of one scale from scipy's derivative filters and ``np.linalg.eigvalsh``: ``(z, y, x, 9)``."""

    def derivative(order):
        value = ndi.gaussian_filter(img.astype(np.float64), sigma, order=order, mode="reflect")
        return value * np.prod([r**o for r, o in zip(rel, order)])

    g = [derivative(o) for o in ((1, 0, 0), (0, 1, 0), (0, 0, 1))]
    pairs = [(0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2)]
    hessian = {p: derivative(tuple(int(a == p[0]) + int(a == p[1]) for a in range(3))) for p in pairs}
    outer = np.maximum(0.5 * sigma, 0.5)
    tensor = {(a, b): ndi.gaussian_filter(g[a] * g[b], outer, mode="reflect") for a, b in pairs}

    def eig(entries):
        m = np.empty(img.shape + (3, 3))
        for (a, b), value in entries.items():
            m[..., a, b] = m[..., b, a] = value
        return np.linalg.eigvalsh(m)[..., ::-1]  # descending

    smooth = ndi.gaussian_filter(img.astype(np.float64), sigma, mode="reflect")
    log = hessian[(0, 0)] + hessian[(1, 1)] + hessian[(2, 2)]
    magnitude = np.sqrt(sum(x * x for x in g))
    return np.concatenate([smooth[..., None], log[..., None], magnitude[..., None], eig(hessian), eig(tensor)],
                          axis=-1)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (2.0, 1.0, 1.0)])
def test_each_scale_is_the_smoothed_image_its_derivatives_and_descending_eigenvalues(spacing):
    img = _smooth_image()
    sigmas = (1.0, 2.0)
    feats = compute_features(img, spacing, sigmas=sigmas)
    assert feats.shape == img.shape + (len(feature_names(sigmas)),)
    normalised = feats[..., 0]
    rel = min(spacing) / np.asarray(spacing)
    for i, s in enumerate(sigmas):
        reference = _reference_scale(normalised, np.maximum(s * rel, 0.5), rel)
        columns = feats[..., 1 + 9 * i: 10 + 9 * i]
        scale = np.abs(reference).max(axis=(0, 1, 2))
        np.testing.assert_allclose(columns / scale, reference / scale, atol=2e-4)
        assert np.all(np.diff(columns[..., 3:6], axis=-1) <= 1e-6)  # the Hessian's eigenvalues, descending
        assert np.all(np.diff(columns[..., 6:9], axis=-1) <= 1e-6)


def test_a_half_precision_bank_is_the_full_one_with_each_column_scaled():
    img = _smooth_image(seed=1)
    full = compute_features(img, (2.0, 1.0, 1.0), contrast=True)
    half = compute_features(img, (2.0, 1.0, 1.0), contrast=True, dtype=np.float16).astype(np.float32)
    for col in range(full.shape[-1]):
        a, b = full[..., col].ravel(), half[..., col].ravel()
        ratio = np.dot(a, b) / max(np.dot(a, a), 1e-30)  # the column's scale
        assert ratio > 0
        np.testing.assert_allclose(b / ratio, a, atol=2e-3 * np.abs(a).max() + 1e-6)


@pytest.mark.parametrize("workers", [1, 2])
def test_computing_the_bank_holds_a_bounded_number_of_volume_copies_beside_it(workers):
    """NumPy's allocations are traced exactly: the peak beyond the stack is counted, not timed."""
    img = _smooth_image((64, 96, 96), seed=2)
    tracemalloc.start()
    try:
        feats = compute_features(img, contrast=True, workers=workers)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    copies = (peak - feats.nbytes) / (4 * img.size)
    # each worker its scale's temporaries; the normalised image; the eigenvalues' float64 blocks (a few MiB)
    assert copies <= workers * SCALE_TEMPORARIES + 2 + 8 * 2**20 * workers / (4 * img.size)


def test_volume_summaries_in_blocks_of_planes_equal_the_whole_volume_at_once(monkeypatch):
    """The class map, entropy and pseudo-labels of host probabilities are computed a few planes at a time."""
    import torch

    from napari_sparseseg.core import box
    from napari_sparseseg.core.distill import CONFIDENT_MARGIN, pseudo_labels
    from napari_sparseseg.core.inference import class_map_and_uncertainty, entropy, top_class

    rng = np.random.default_rng(3)
    logits = rng.normal(size=(4, 9, 10, 11)).astype(np.float32) * 3
    probs = np.exp(logits) / np.exp(logits).sum(0)
    probs[:, 0, 0, 0] = (0.4, 0.4, 0.1, 0.1)  # a tie: the first class
    assert box.plane_blocks((9, 10, 11), 250) == [slice(0, 2), slice(2, 4), slice(4, 6), slice(6, 8), slice(8, 9)]
    monkeypatch.setattr(box, "SUMMARY_BLOCK_VOXELS", 250)  # blocks of two planes
    labels = top_class(probs)
    assert labels.dtype == np.uint8 and labels[0, 0, 0] == 0
    np.testing.assert_array_equal(labels, probs.argmax(0))
    p = np.clip(probs, 1e-8, 1.0)
    np.testing.assert_allclose(entropy(probs), -(p * np.log(p)).sum(0) / np.log(4), rtol=1e-5, atol=1e-6)
    pseudo = pseudo_labels(probs, 0.5)
    ordered = np.sort(probs, axis=0)
    margin = ordered[-1] - ordered[-2]
    np.testing.assert_array_equal(pseudo.classes, probs.argmax(0))
    np.testing.assert_allclose(pseudo.confidence, np.where(margin >= CONFIDENT_MARGIN, margin, 0), atol=1e-3)
    assert pseudo.confidence.dtype == np.float16
    host, host_labels, host_entropy = class_map_and_uncertainty(torch.from_numpy(probs))
    np.testing.assert_array_equal(host_labels, labels)
    np.testing.assert_allclose(host_entropy, entropy(probs))


@pytest.mark.parametrize("workers", [1, 2])
def test_the_bank_reports_each_group_of_columns_as_it_is_written(workers):
    reports = []
    compute_features(_smooth_image(), contrast=True, workers=workers, progress=lambda d, t: reports.append((d, t)))
    total = len(SIGMAS) + 1  # a group per scale, and the contrast columns
    assert sorted(reports) == [(d, total) for d in range(1, total + 1)]
