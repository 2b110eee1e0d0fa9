"""Tests of the synthetic sample volumes (axes (z, y, x), mask encoding)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_sparseseg.sample_data import SyntheticVolume, make_cells_volume

SMALL = (16, 48, 48)


@pytest.fixture(scope="module")
def default_volume() -> SyntheticVolume:
    return make_cells_volume()


def test_default_shapes_dtypes_and_metadata(default_volume: SyntheticVolume) -> None:
    v = default_volume
    assert v.image.shape == v.labels.shape == (48, 128, 128)
    assert v.image.dtype == np.float32
    assert v.labels.dtype == np.uint8
    assert v.spacing == (2.0, 0.5, 0.5)
    assert all(isinstance(s, float) for s in v.spacing)
    assert v.class_names == ("nucleus", "vesicle")
    assert v.n_classes == 2
    assert np.isfinite(v.image).all()
    assert v.image.min() >= 0
    assert "SyntheticVolume(shape=(48, 128, 128)" in repr(v)


@pytest.mark.parametrize("shape", [(8, 8, 8), (9, 33, 17), (20, 40, 60)])
def test_shapes_and_all_classes_present(shape: tuple[int, int, int]) -> None:
    v = make_cells_volume(shape, n_cells=3, seed=4)
    assert v.image.shape == v.labels.shape == shape
    assert set(np.unique(v.labels)) == {0, 1, 2}


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_all_classes_present_and_plausible_fractions(seed: int) -> None:
    v = make_cells_volume(SMALL, n_cells=6, seed=seed)
    counts = np.bincount(v.labels.ravel(), minlength=3)
    assert counts.size == 3, "labels must stay in 0..K"
    frac = counts / v.labels.size
    assert frac[0] > 0.5  # mostly background
    assert 0.01 < frac[1] < 0.4  # nuclei
    assert 0 < frac[2] < frac[1]  # vesicles: few, small


def test_deterministic_per_seed() -> None:
    a = make_cells_volume(SMALL, n_cells=5, seed=7)
    b = make_cells_volume(SMALL, n_cells=5, seed=7)
    c = make_cells_volume(SMALL, n_cells=5, seed=8)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, c.labels)
    assert not np.array_equal(a.image, c.image)


def test_classes_brighter_than_background_on_average(
    default_volume: SyntheticVolume,
) -> None:
    v = default_volume
    means = [float(v.image[v.labels == k].mean()) for k in range(3)]
    assert means[0] < means[1] < means[2]  # background < nucleus < vesicle


def _best_threshold_dice(image: np.ndarray, mask: np.ndarray) -> float:
    best = 0.0
    for t in np.quantile(image, np.linspace(0.5, 0.999, 120)):
        pred = image > t
        best = max(
            best, 2.0 * float((pred & mask).sum()) / float(pred.sum() + mask.sum())
        )
    return best


def test_not_separable_by_one_global_threshold(default_volume: SyntheticVolume) -> None:
    v = default_volume
    assert _best_threshold_dice(v.image, v.labels == 1) < 0.95
    assert _best_threshold_dice(v.image, v.labels > 0) < 0.95


def test_object_brightness_varies_between_cells(
    default_volume: SyntheticVolume,
) -> None:
    v = default_volume
    lab, n = ndi.label(v.labels == 1)
    means = ndi.median(v.image, lab, index=np.arange(1, n + 1))
    assert np.max(means) / np.min(means) > 1.5


def test_noise_level() -> None:
    clean = make_cells_volume(SMALL, n_cells=4, seed=2, noise=0.0)
    noisy = make_cells_volume(SMALL, n_cells=4, seed=2, noise=0.2)
    np.testing.assert_array_equal(clean.labels, noisy.labels)
    bg = clean.labels == 0
    # the noise-free image is smooth: neighbouring x voxels differ little
    assert np.abs(np.diff(clean.image, axis=2))[bg[:, :, 1:]].mean() < 0.02
    assert (noisy.image - clean.image)[bg].std() > 0.05


def _interior_extents(labels: np.ndarray) -> np.ndarray:
    """(n, 3) bounding-box sizes in voxels of nuclei not cut by the border."""
    lab, _ = ndi.label(labels == 1)
    out = []
    for sl in ndi.find_objects(lab):
        if any(s.start == 0 or s.stop == n for s, n in zip(sl, labels.shape)):
            continue
        out.append([s.stop - s.start for s in sl])
    return np.asarray(out, dtype=float).reshape(-1, 3)


@pytest.mark.parametrize(
    ("shape", "spacing"),
    [
        ((48, 128, 128), (2.0, 0.5, 0.5)),  # z step 4x the in-plane step
        ((32, 64, 64), (1.0, 1.0, 1.0)),  # isotropic
        ((128, 128, 32), (0.5, 0.5, 2.0)),  # coarse x instead of z
    ],
)
def test_objects_are_defined_in_physical_space(
    shape: tuple[int, int, int], spacing: tuple[float, float, float]
) -> None:
    ext = np.concatenate(
        [
            _interior_extents(make_cells_volume(shape, spacing=spacing, seed=s).labels)
            for s in (0, 1)
        ]
    )
    assert len(ext) >= 5
    vox = np.median(ext, axis=0)
    phys = vox * np.asarray(spacing)
    # roughly round in physical units ...
    assert phys.max() / phys.min() < 1.4
    # ... hence squashed along a coarse axis in voxel units, by the spacing ratio
    for a in range(3):
        for b in range(3):
            expected = spacing[b] / spacing[a]
            assert vox[a] / vox[b] == pytest.approx(expected, rel=0.4)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"shape": (64, 64)}, "(64, 64)"),
        ({"shape": (4, 64, 64, 1)}, "(4, 64, 64, 1)"),
        ({"shape": (7, 64, 64)}, "(7, 64, 64)"),
        ({"shape": (16, 64, 5)}, "(16, 64, 5)"),
        ({"shape": (16.0, 64, 64)}, "(16.0, 64, 64)"),
        ({"shape": 64}, "64"),
        ({"n_cells": 0}, "0"),
        ({"n_cells": -3}, "-3"),
        ({"n_cells": 2.5}, "2.5"),
        ({"spacing": (0.0, 1.0, 1.0)}, "(0.0, 1.0, 1.0)"),
        ({"spacing": (1.0, -0.5, 1.0)}, "(1.0, -0.5, 1.0)"),
        ({"spacing": (1.0, 1.0)}, "(1.0, 1.0)"),
        ({"spacing": (1.0, float("nan"), 1.0)}, "nan"),
        ({"spacing": "abc"}, "abc"),
        ({"noise": -0.1}, "-0.1"),
        ({"noise": float("inf")}, "inf"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_value(
    kwargs: dict, needle: str
) -> None:
    with pytest.raises(ValueError) as err:
        make_cells_volume(**kwargs)
    assert needle in str(err.value)


def test_synthetic_volume_validates_its_fields() -> None:
    img = np.zeros((8, 8, 8), np.float32)
    with pytest.raises(ValueError, match="differs"):
        SyntheticVolume(img, np.zeros((8, 8, 9), np.uint8), (1.0, 1.0, 1.0), ("a",))
    with pytest.raises(ValueError, match="3D"):
        SyntheticVolume(img[0], np.zeros((8, 8), np.uint8), (1.0, 1.0, 1.0), ("a",))
    lab = np.zeros((8, 8, 8), np.uint8)
    lab[0, 0, 0] = 2
    with pytest.raises(ValueError, match="class 2"):
        SyntheticVolume(img, lab, (1.0, 1.0, 1.0), ("a",))


def test_generate_script_writes_an_evaluate_ready_file(tmp_path):
    import runpy
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "sample_data" / "generate.py"
    out = tmp_path / "cells.npz"
    argv = sys.argv
    sys.argv = [str(script), str(out), "--shape", "16", "32", "32"]
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = argv
    with np.load(out) as d:
        assert d["image"].shape == d["labels"].shape == (16, 32, 32)
        assert d["spacing"].shape == (3,)
