"""Simulated annotation protocols: slices, scribbles and full supervision."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_sparseseg.core.encoding import annotation_to_mask
from napari_sparseseg.evaluation.protocols import (
    annotated_slice_count,
    brush_radius,
    protocol_mask,
    scribble_slice,
    simulate_annotation,
    slice_positions,
)
from napari_sparseseg.evaluation.simulated_user import baseline_applicability
from napari_sparseseg.sample_data import make_cells_volume


@pytest.fixture(scope="module")
def cells():
    return make_cells_volume((24, 96, 96), n_cells=8, seed=3)


def test_scribble_labels_are_exact_and_few(cells):
    truth = cells.labels
    ann = simulate_annotation(truth, "scribble:3")
    labeled = ann > 0
    np.testing.assert_array_equal(annotation_to_mask(ann)[labeled], truth[labeled])
    for z in range(truth.shape[0]):
        frac = labeled[z].mean()
        if z in slice_positions(truth.shape[0], 3):
            assert 0.01 < frac < 0.15, (z, frac)
        else:
            assert frac == 0
    # far fewer than whole slices, and both background and foreground painted
    assert labeled.sum() < 0.2 * protocol_mask(truth.shape, "z:3").sum()
    assert set(np.unique(ann[labeled])) == {1, 2, 3}


def test_scribble_touches_every_component_and_stays_inside(cells):
    truth = cells.labels
    mask = protocol_mask(truth.shape, "scribble:3", truth)
    r = brush_radius(truth.shape[1:])
    for z in slice_positions(truth.shape[0], 3):
        t, m = truth[z], mask[z]
        for c in range(1, int(truth.max()) + 1):
            comps, n = ndi.label(t == c)
            for i in range(1, n + 1):
                assert m[comps == i].any(), f"slice {z} class {c} component {i} not scribbled"
        # background strokes keep more than a brush radius away from every object
        dist = ndi.distance_transform_edt(t == 0)
        assert (dist[m & (t == 0)] > r).all()


def test_scribble_is_deterministic_and_seeded_by_slice(cells):
    truth = cells.labels
    a = protocol_mask(truth.shape, "scribble:3", truth)
    b = protocol_mask(truth.shape, "scribble:3", truth)
    np.testing.assert_array_equal(a, b)
    z = slice_positions(truth.shape[0], 3)[0]
    np.testing.assert_array_equal(a[z], scribble_slice(truth[z], seed=z))
    assert not np.array_equal(scribble_slice(truth[z], seed=z), scribble_slice(truth[z], seed=z + 1))


def test_tiny_object_gets_a_dot_and_empty_slice_gets_background_strokes():
    t = np.zeros((64, 64), np.uint8)
    t[30:32, 40:42] = 1  # thinner than the brush: survives no erosion
    m = scribble_slice(t, seed=0)
    assert m[30:32, 40:42].any()
    empty = scribble_slice(np.zeros((64, 64), np.uint8), seed=0)
    assert 0 < empty.mean() < 0.15


def test_full_and_ortho_masks():
    shape = (8, 16, 20)
    assert protocol_mask(shape, "full").all()
    ortho = protocol_mask(shape, "ortho:1")
    assert ortho[4].all() and ortho[:, 8].all() and ortho[:, :, 10].all()
    assert annotated_slice_count("ortho:2", shape) == 6
    assert annotated_slice_count("scribble:3", shape) == 3
    assert annotated_slice_count("full", shape) == 8


@pytest.mark.parametrize("protocol, match", [
    ("scribble:0", "at least 1"),
    ("scribble:99", "only 24"),
    ("scribble:-1", "unknown protocol"),
    ("scribble", "unknown protocol"),
    ("full:3", "unknown protocol"),
])
def test_bad_scribble_k_messages(cells, protocol, match):
    with pytest.raises(ValueError, match=match):
        protocol_mask(cells.labels.shape, protocol, cells.labels)


def test_scribble_needs_the_ground_truth():
    with pytest.raises(ValueError, match="needs the ground truth"):
        protocol_mask((8, 16, 16), "scribble:1")
    with pytest.raises(ValueError, match="needs the ground truth"):
        protocol_mask((8, 16, 16), "scribble:1", np.zeros((8, 16, 17), np.uint8))


def test_baselines_not_applicable_are_named():
    assert baseline_applicability("interp", "z:3") is None
    assert baseline_applicability("interp", "ortho:2") is None
    assert "scribbles" in baseline_applicability("interp", "scribble:3")
    assert baseline_applicability("rf", "scribble:3") is None
    assert baseline_applicability("rf", "full") is not None


def _tiny_config():
    from napari_sparseseg.core.config import InferenceConfig, ModelConfig, SessionConfig, TrainConfig

    return SessionConfig(model=ModelConfig(base_channels=4, depth=2), train=TrainConfig(patch_voxels=16**3),
                         inference=InferenceConfig(final_mirror_axes=()), device="cpu")


def test_evaluate_scribbles_skips_interpolation_and_full_scores_the_raw_net():
    import torch

    from napari_sparseseg.evaluation.simulated_user import evaluate_volume

    torch.set_num_threads(1)
    vol = make_cells_volume((16, 32, 32), n_cells=3, seed=1)
    r = evaluate_volume(vol.image, vol.labels, spacing=vol.spacing, protocol="scribble:2", budget_seconds=1,
                        config=_tiny_config(), baselines=("rf", "interp"))
    assert r["baselines"]["interp"]["applicable"] is False
    assert "dice_fg" in r["baselines"]["rf"]
    assert 0 < r["annotated_fraction"] < 0.02
    full = evaluate_volume(vol.image, vol.labels, spacing=vol.spacing, protocol="full", budget_seconds=1,
                           config=_tiny_config(), baselines=("rf", "interp"))
    assert full["annotated_fraction"] == 1.0
    assert all(b["applicable"] is False for b in full["baselines"].values())
    # the merged mask would copy the labels (Dice 1); the raw network output is scored instead
    assert full["dice_fg"] < 0.999
    assert np.isnan(full["unannotated"]["dice_fg"])


def test_ortho_interpolation_uses_the_axial_slices_only():
    import torch

    from napari_sparseseg.evaluation.simulated_user import evaluate_volume

    torch.set_num_threads(1)
    vol = make_cells_volume((16, 32, 32), n_cells=3, seed=1)
    r = evaluate_volume(vol.image, vol.labels, spacing=vol.spacing, protocol="ortho:2", budget_seconds=0.5,
                        config=_tiny_config(), baselines=("interp",))
    from napari_sparseseg.baselines.interpolation import interpolate_slices
    from napari_sparseseg.evaluation.metrics import evaluate_masks

    # interpolation between the two axial slices, with every ortho-labeled voxel (y and x slices too) kept
    expected = interpolate_slices(simulate_annotation(vol.labels, "z:2"), axis=0)
    labeled = protocol_mask(vol.labels.shape, "ortho:2")
    expected[labeled] = vol.labels[labeled]
    want = evaluate_masks(vol.labels, expected, 3)["dice_fg"]
    assert r["baselines"]["interp"]["dice_fg"] == pytest.approx(want)
