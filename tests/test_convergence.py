import numpy as np
import pytest

from napari_sparseseg.core.box import Box
from napari_sparseseg.core.convergence import probe_box, surface_drift, surface_voxels


def _ball(radius: float, shape=(24, 24, 24)) -> np.ndarray:
    zz, yy, xx = np.indices(shape) - (np.array(shape)[:, None, None, None] - 1) / 2
    return (np.sqrt(zz**2 + yy**2 + xx**2) <= radius).astype(np.uint8)


def test_identical_maps_do_not_drift():
    ball = _ball(6)
    assert surface_drift(ball, ball) == 0.0


@pytest.mark.parametrize("grow", [1, 2, 3])
def test_drift_counts_layers_of_the_surface(grow):
    small, large = _ball(7), _ball(7 + grow)
    assert surface_drift(small, large) == pytest.approx(grow, rel=0.35)


def test_drift_is_about_the_same_for_one_large_or_many_small_objects():
    """Boundary flicker of one voxel layer reads about 1 whatever the objects' size: the rule generalises."""
    one = surface_drift(_ball(9, (40, 40, 40)), _ball(10, (40, 40, 40)))
    many_small, many_large = np.zeros((40, 40, 40), np.uint8), np.zeros((40, 40, 40), np.uint8)
    for z in (10, 30):
        for y in (10, 30):
            many_small[z - 10:z + 10, y - 10:y + 10, :20] = _ball(3, (20, 20, 20))
            many_large[z - 10:z + 10, y - 10:y + 10, :20] = _ball(4, (20, 20, 20))
    assert surface_drift(many_small, many_large) == pytest.approx(one, rel=0.4)


def test_surface_ignores_the_region_border_and_counts_each_class():
    full = np.ones((6, 6, 6), np.uint8)
    assert surface_voxels(full) == 0  # a crop of a larger object: no surface of its own
    two = full.copy()
    two[:, :, 3:] = 2
    assert surface_voxels(two) == 2 * 36  # one face layer on each side of the class boundary


def test_drift_rejects_maps_of_different_shapes():
    with pytest.raises(ValueError, match="different shapes"):
        surface_drift(np.zeros((2, 3, 4)), np.zeros((2, 3, 5)))


def test_probe_box_is_the_whole_small_volume_and_a_centred_crop_of_a_large_one():
    assert probe_box((20, 60, 60), (16, 32, 32), (10, 30, 30), windows=2) == Box.full((20, 60, 60))
    assert probe_box((8, 20, 60), (16, 32, 32), (4, 10, 30)) == Box((0, 0, 14), (8, 20, 46))
    box = probe_box((200, 600, 600), (16, 32, 32), (5.0, 590.0, 300.0), windows=2)
    assert box.shape == (32, 64, 64)
    assert box == Box((0, 536, 268), (32, 600, 332))  # shifted to lie inside the volume
