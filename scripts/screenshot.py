"""Regenerate docs/screenshot.png: the real napari window with the widget docked.

Opens the sample volume, paints 3 axial slices from its ground truth through
the annotation layer (as strokes), trains on the CPU for ``--seconds`` while
predictions stream into the prediction layer, and grabs the whole window.
The view is an xz slice, so the three painted slices show as lines with the
dense prediction between them.

Needs an X server with OpenGL (offscreen renders a black canvas)::

    QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/screenshot.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=120.0,
                        help="training time before the grab (2 CPU cores: ~90 steps of the small model)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshot.png")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    args = parser.parse_args(argv)

    import napari
    from napari.utils.io import imsave
    from qtpy.QtWidgets import QApplication

    from napari_sparseseg.core.encoding import mask_to_layer
    from napari_sparseseg.plugin.sample import make_sample_data
    from napari_sparseseg.plugin.widget import SparseSegWidget

    viewer = napari.Viewer(title="napari-sparseseg", show=True)
    viewer.window._qt_window.resize(1500, 950)
    app = QApplication.instance()
    (img, img_meta, _), (ann, ann_meta, _) = make_sample_data()
    viewer.add_image(img, **img_meta)
    annotation = viewer.add_labels(ann, **ann_meta)
    widget = SparseSegWidget(viewer, refresh_seconds=3.0)
    viewer.window.add_dock_widget(widget, name="Sparse-slice 3D segmentation")
    widget.training_panel.device_combo.setCurrentText(args.device)
    gt = img_meta["metadata"]["ground_truth"]
    for z in np.round(np.linspace(0, gt.shape[0] - 1, 5)).astype(int)[1:-1]:
        yy, xx = np.indices(gt.shape[1:]).reshape(2, -1)
        annotation.data_setitem((np.full(yy.size, z), yy, xx), mask_to_layer(gt[z])[yy, xx])
    viewer.dims.order = (1, 0, 2)  # an xz view: the painted slices are horizontal lines
    viewer.dims.set_current_step(1, gt.shape[1] // 2)
    widget.start()

    full_seen = []
    widget.prediction_shown.connect(lambda r: full_seen.append(r.prediction.box.shape == gt.shape))
    end = time.perf_counter() + args.seconds
    while time.perf_counter() < end or not any(full_seen):
        app.processEvents()
        time.sleep(0.01)
        if time.perf_counter() > end + 120:
            break
    viewer.layers.selection.active = annotation
    viewer.reset_view()
    for _ in range(20):
        app.processEvents()
        time.sleep(0.02)
    shot = viewer.screenshot(canvas_only=False, flash=False)
    widget.close_session()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    imsave(str(args.out), shot)
    print(f"wrote {args.out} {shot.shape}; step {widget.last_step.step if widget.last_step else 0}, "
          f"{widget.refreshes.count} refreshes")
    viewer.close()
    return args.out


if __name__ == "__main__":
    main(sys.argv[1:])
