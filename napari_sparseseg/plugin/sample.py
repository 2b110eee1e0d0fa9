"""npe2 sample data: the synthetic cells volume with an empty annotation layer."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.encoding import ANNOTATION_DTYPE

#: Name of the annotation layer the sample opens (the widget picks it up).
ANNOTATION_NAME = "annotation"


def make_sample_data(shape: tuple[int, int, int] = (48, 128, 128), seed: int = 0) -> list[tuple[Any, dict, str]]:
    """Synthetic cells (nucleus, vesicle) and an empty annotation layer, ready to paint.

    Parameters
    ----------
    shape : tuple of int
        ``(z, y, x)`` voxels; the default opens in about a second.
    seed : int
        Seed of the generator.

    Returns
    -------
    list of LayerDataTuple
        The image (``scale`` = physical spacing, ground truth and class names in
        ``metadata``) and an empty ``uint8`` labels layer to paint on (layer encoding: 0 = unlabeled,
        class k = k, background 255).
    """
    from ..sample_data import make_cells_volume

    vol = make_cells_volume(tuple(shape), seed=seed)
    scale = tuple(float(s) for s in vol.spacing)
    image_meta = {
        "name": "cells",
        "scale": scale,
        "colormap": "gray",
        "contrast_limits": tuple(float(v) for v in np.percentile(vol.image, (0.5, 99.8))),
        "metadata": {"class_names": tuple(vol.class_names), "ground_truth": vol.labels,
                     "spacing": scale},
    }
    annotation = np.zeros(vol.image.shape, dtype=ANNOTATION_DTYPE)
    label_meta = {"name": ANNOTATION_NAME, "scale": scale, "opacity": 0.7,
                  "metadata": {"sparseseg_role": "annotation"}}
    return [(vol.image, image_meta, "image"), (annotation, label_meta, "labels")]
