"""GUI responsiveness while the plugin trains, measured in the real napari window.

A Qt timer beats every ``--interval`` ms on the GUI thread while the widget
trains (worker thread) and streams predictions into the prediction layer; the
gaps between beats are the event loop's latency. Also measured: seconds from
the first stroke to the first prediction on screen.

Protocol: open the sample volume, dock the widget with its defaults (small
model; device ``--device``), press Start on the empty annotation (the model is
built, the worker waits), then paint 3 axial slices from the ground truth
(t0 = first stroke) and wait for the first prediction drawn (t1). Then keep
training for ``--seconds`` with the heartbeat running.

Run under an X server (Qt needs OpenGL for layers)::

    QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/responsiveness.py

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="training time with the heartbeat on")
    parser.add_argument("--interval", type=int, default=10, help="heartbeat period, ms")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--prefetch", default="auto", choices=("auto", "always", "never"),
                        help="TrainConfig.prefetch: build the next batch in a thread while a step computes")
    parser.add_argument("--shape", type=int, nargs=3, default=(48, 128, 128), help="sample volume (z y x)")
    parser.add_argument("--refresh-seconds", type=float, default=3.0)
    parser.add_argument("--idle-seconds", type=float, default=5.0,
                        help="heartbeat with the window idle first (baseline of this X server)")
    args = parser.parse_args(argv)

    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_sparseseg.core.config import SessionConfig, TrainConfig
    from napari_sparseseg.core.encoding import mask_to_layer
    from napari_sparseseg.plugin.sample import make_sample_data
    from napari_sparseseg.plugin.widget import SparseSegWidget

    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    (img, img_meta, _), (ann, ann_meta, _) = make_sample_data(tuple(args.shape))
    viewer.add_image(img, **img_meta)
    annotation = viewer.add_labels(ann, **ann_meta)
    config = SessionConfig(train=TrainConfig(prefetch=args.prefetch))
    widget = SparseSegWidget(viewer, config=config, refresh_seconds=args.refresh_seconds)
    viewer.window.add_dock_widget(widget, name="sparse-slice segmentation")
    widget.training_panel.device_combo.setCurrentText(args.device)
    gt = img_meta["metadata"]["ground_truth"]

    def wait_until(cond, timeout: float) -> bool:
        end = time.perf_counter() + timeout
        while not cond():
            if time.perf_counter() > end:
                return False
            app.processEvents()
            time.sleep(0.002)
        return True

    def heartbeat(seconds: float) -> np.ndarray:
        beats: list[float] = []
        timer = QTimer()
        timer.setInterval(args.interval)
        timer.timeout.connect(lambda: beats.append(time.perf_counter()))
        timer.start()
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            app.processEvents()
            time.sleep(0.001)
        timer.stop()
        return np.diff(np.asarray(beats)) * 1000.0

    def summary(gaps: np.ndarray) -> dict:
        return {"p50": round(float(np.percentile(gaps, 50)), 2), "p99": round(float(np.percentile(gaps, 99)), 2),
                "max": round(float(gaps.max()), 2), "over_50ms": int((gaps > 50).sum()),
                "over_250ms": int((gaps > 250).sum())}

    wait_until(lambda: False, 1.0)  # let the window settle
    idle = heartbeat(args.idle_seconds)

    # Start on the empty annotation: the model is built and the worker waits for strokes.
    widget.start()
    if not wait_until(lambda: widget.session is not None, 120):
        raise SystemExit("the session was not built within 120 s")

    shown: list[float] = []
    steps_seen: list[float] = []
    widget.prediction_shown.connect(lambda _r: shown.append(time.perf_counter()))
    widget.step_done.connect(lambda _e: steps_seen.append(time.perf_counter()))
    handler_ms: list[float] = []
    show = widget._show_prediction

    def timed_show(refresh):  # GUI-thread cost of putting a prediction on screen
        t = time.perf_counter()
        show(refresh)
        handler_ms.append((time.perf_counter() - t) * 1000)

    widget._show_prediction = timed_show
    zs = np.round(np.linspace(0, gt.shape[0] - 1, 5)).astype(int)[1:-1]
    t0 = time.perf_counter()
    for z in zs:  # each call is one stroke, as a mouse drag would commit
        yy, xx = np.indices(gt.shape[1:]).reshape(2, -1)
        annotation.data_setitem((np.full(yy.size, z), yy, xx), mask_to_layer(gt[z])[yy, xx])
        app.processEvents()
    if not wait_until(lambda: bool(shown), 300):
        raise SystemExit("no prediction within 300 s")
    app.processEvents()  # draw it
    first_prediction = time.perf_counter() - t0
    first_step = steps_seen[0] - t0 if steps_seen else float("nan")
    steps_at_first = widget.last_step.step if widget.last_step else 0

    step0 = widget.last_step.step if widget.last_step else 0
    refresh0 = widget.refreshes.count
    gaps = heartbeat(args.seconds)
    steps = (widget.last_step.step if widget.last_step else 0) - step0
    refreshes = widget.refreshes.count - refresh0
    device = str(widget.session.trainer.device)
    built_ahead, built_in_step = widget.session.trainer.batches.built_ahead
    pred = np.asarray(widget.prediction_layer.data)
    dice = float(2 * ((pred > 0) & (gt > 0)).sum() / max((pred > 0).sum() + (gt > 0).sum(), 1))
    widget.close_session()

    result = {
        "benchmark": "responsiveness",
        "device": device,
        "torch_threads": __import__("torch").get_num_threads(),
        "prefetch": args.prefetch,
        "prefetched_batches": built_ahead,
        "inline_batches": built_in_step,
        "cpu_count": os.cpu_count(),
        "shape": list(args.shape),
        "interval_ms": args.interval,
        "seconds": args.seconds,
        "beats": int(gaps.size),
        "gap_ms": summary(gaps),
        "idle_gap_ms": summary(idle),
        "train_steps": steps,
        "refreshes": refreshes,
        "first_stroke_to_first_prediction_s": round(first_prediction, 2),
        "first_stroke_to_first_step_s": round(first_step, 2),
        "steps_before_first_prediction": steps_at_first,
        "gui_prediction_handler_ms_max": round(max(handler_ms), 1) if handler_ms else None,
        "foreground_dice_at_end": round(dice, 3),
        "platform": platform.platform(),
    }
    print(json.dumps(result))
    viewer.close()
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
