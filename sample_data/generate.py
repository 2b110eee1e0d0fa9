"""Write synthetic sample volumes with dense ground truth to disk.

The generator itself is :mod:`napari_sparseseg.sample_data` (also behind
napari's ``File > Open Sample`` menu and ``napari-sparseseg demo``). This
script saves volumes in the format ``napari-sparseseg evaluate`` reads::

    python sample_data/generate.py cells.npz --shape 48 128 128 --seed 0
    napari-sparseseg evaluate cells.npz --protocol z:3 --budget-seconds 60

Nothing generated here is committed: volumes are made on demand.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from napari_sparseseg.sample_data import make_cells_volume


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output .npz (image, labels, spacing, class_names)")
    parser.add_argument("--shape", type=int, nargs=3, default=(48, 128, 128), metavar=("Z", "Y", "X"))
    parser.add_argument("--cells", type=int, default=20)
    parser.add_argument("--spacing", type=float, nargs=3, default=(2.0, 0.5, 0.5), metavar=("DZ", "DY", "DX"))
    parser.add_argument("--noise", type=float, default=0.08)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    vol = make_cells_volume(tuple(args.shape), n_cells=args.cells, spacing=tuple(args.spacing), seed=args.seed,
                            noise=args.noise)
    np.savez_compressed(args.out, image=vol.image, labels=vol.labels, spacing=np.asarray(vol.spacing, np.float32),
                        class_names=np.asarray(vol.class_names))
    print(f"wrote {args.out}: image {vol.image.shape} {vol.image.dtype}, classes {list(vol.class_names)}, "
          f"spacing {vol.spacing}")
    return args.out


if __name__ == "__main__":
    main()
