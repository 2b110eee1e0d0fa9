"""Open napari with a volume (or the sample), an empty annotation layer and the widget docked.

``python -m napari_sparseseg.plugin.launch [PATH]`` (the CLI's ``gui`` command calls
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

    from .widget import SparseSegWidget


def launch(path: str | Path | None = None, *, viewer: napari.Viewer | None = None,
           run: bool = True) -> tuple[napari.Viewer, SparseSegWidget]:
    """Open ``path`` (npz, tif, nii(.gz), zarr, OME-Zarr; read as napari's reader would) or the sample.

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

    from ..core.encoding import ANNOTATION_DTYPE
    from .sample import ANNOTATION_NAME, make_sample_data
    from .widget import SparseSegWidget

    viewer = viewer or napari.Viewer(title="napari-sparseseg")
    if path is None:
        for data, meta, kind in make_sample_data():
            getattr(viewer, f"add_{kind}")(data, **meta)
    else:
        from .reader import read_layers

        layers = read_layers(str(path))  # the napari reader: channels, pyramid levels, spacing as scale
        for data, meta, kind in layers:
            getattr(viewer, f"add_{kind}")(data, **meta)
        data, meta, _ = layers[0]
        shape = (data[0] if meta.get("multiscale") else data).shape
        if meta.get("channel_axis") is not None:
            shape = tuple(n for i, n in enumerate(shape) if i != meta["channel_axis"])
        viewer.add_labels(np.zeros(shape[-3:], ANNOTATION_DTYPE), name=ANNOTATION_NAME, scale=meta["scale"],
                          opacity=0.7, metadata={"sparseseg_role": "annotation"})
    widget = SparseSegWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Sparse-slice 3D segmentation")
    viewer.layers.selection.active = viewer.layers[-1]
    viewer.layers[-1].mode = "paint"
    if run:
        napari.run()
    return viewer, widget


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m napari_sparseseg.plugin.launch", description=__doc__)
    parser.add_argument("path", nargs="?", help="3D volume file; omit for the synthetic sample")
    args = parser.parse_args(argv)
    launch(args.path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
