"""Short runs on the real volumes in ../shared/data (skipped where absent).

The 300 s accuracy table lives in BENCHMARKS.md; these guard that the whole
pipeline still learns real CT and microscopy within a CI-sized budget.
"""

import numpy as np
import pytest

from napari_sparseseg.core.config import SessionConfig
from napari_sparseseg.evaluate import evaluate_volume
from tests.conftest import shared_file


@pytest.mark.parametrize("name, seconds", [("msd_spleen_ct_crop.npz", 30), ("bbbc050_mouse_embryo_nuclei.npz", 60)])
def test_learns_real_volume_from_three_slices(name, seconds):
    with np.load(shared_file(name)) as d:
        image, labels, spacing = d["image"], d["labels"], d["spacing"]
    r = evaluate_volume(image, labels, spacing=spacing, protocol="z:3", budget_seconds=seconds,
                        config=SessionConfig(device="cpu"))
    assert r["dice_fg"] > 0.5, r["curve"]
    assert r["curve"][-1]["dice_fg"] == r["dice_fg"]
