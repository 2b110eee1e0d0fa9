"""Open napari with a volume (or the sample), an empty annotation layer and the widget docked.

``python -m napari_sparseseg._launch [PATH]`` (the CLI's ``gui`` command calls
:func:`launch`). Without ``PATH`` the synthetic sample opens.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import napari

    from ._widget import SparseSegWidget


def launch(path: str | Path | None = None, *, viewer: napari.Viewer | None = None,
           run: bool = True) -> tuple[napari.Viewer, SparseSegWidget]:
    """Open ``path`` (npz, tif, nii(.gz), zarr; see :func:`napari_sparseseg.io.load_volume`) or the sample.

    Parameters
    ----------
    path : str or Path, optional
        A 3D volume; its spacing becomes the layers' scale.
    viewer : napari.Viewer, optional
        Open into this viewer instead of a new one.
    run : bool
        Enter the Qt event loop (blocks until the window closes).

    Returns
    -------
    viewer, widget
    """
    import napari

    from ._sample import ANNOTATION_NAME, make_sample_data
    from ._widget import SparseSegWidget
    from .core.encoding import ANNOTATION_DTYPE

    viewer = viewer or napari.Viewer(title="napari-sparseseg")
    if path is None:
        for data, meta, kind in make_sample_data():
            getattr(viewer, f"add_{kind}")(data, **meta)
    else:
        from .io import load_volume

        image, spacing = load_volume(path)
        scale = tuple(float(s) for s in spacing)
        viewer.add_image(image, name=Path(path).name, scale=scale)
        viewer.add_labels(np.zeros(image.shape[-3:], ANNOTATION_DTYPE), name=ANNOTATION_NAME, scale=scale,
                          opacity=0.7, metadata={"sparseseg_role": "annotation"})
    widget = SparseSegWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Sparse-slice 3D segmentation")
    viewer.layers.selection.active = viewer.layers[-1]
    viewer.layers[-1].mode = "paint"
    if run:
        napari.run()
    return viewer, widget


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m napari_sparseseg._launch", description=__doc__)
    parser.add_argument("path", nargs="?", help="3D volume file; omit for the synthetic sample")
    args = parser.parse_args(argv)
    launch(args.path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
