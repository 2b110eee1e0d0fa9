"""The volumes the first-responder benchmarks run on: shared ``.npz`` files and, optionally, the synthetic sample.

Imported by the scripts in this folder (``python benchmarks/NAME.py`` puts the folder on ``sys.path``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def load_volumes(files: Sequence[str], sample: bool) -> list[tuple[str, np.ndarray, np.ndarray, tuple[float, ...]]]:
    """``(name, image (z, y, x), labels (z, y, x), spacing (z, y, x))`` of the sample (first) and each file."""
    volumes = []
    if sample:
        from napari_sparseseg.sample_data import make_cells_volume

        v = make_cells_volume()
        volumes.append(("sample_cells", v.image, v.labels, tuple(v.spacing)))
    for f in files:
        with np.load(f) as d:
            volumes.append((f.rsplit("/", 1)[-1][:-4], d["image"], d["labels"],
                            tuple(float(s) for s in d["spacing"])))
    return volumes
