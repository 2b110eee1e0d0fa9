"""Where a streamed whole-volume refresh spends its time (default config, CUDA).

Builds a session on a random 256x512x512 volume, trains 25 steps, then times
``Trainer.predict()`` whole and its parts: reading the mirrored region, the
upload, the net with Gaussian blending, the class map and entropy with the
copy to the host, and the bare forward passes at 2 and 8 windows per batch.

    python benchmarks/refresh_profile.py                                  # H100 figures in BENCHMARKS.md
    python benchmarks/refresh_profile.py --device cpu --shape 32 96 96   # smoke test
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from napari_sparseseg.core.config import SessionConfig
from napari_sparseseg.core.inference import (
    _forward,
    class_map_and_uncertainty,
    plan_windows,
    predict_planned,
    read_region,
)
from napari_sparseseg.core.session import SegmentationSession


def main(shape: tuple[int, int, int] = (256, 512, 512), repeats: int = 2, device: str = "cuda") -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(100, 20, size=shape).astype(np.float32)
    annotation = np.zeros(shape, np.uint8)
    annotation[shape[0] // 2, : shape[1] // 2] = 1
    annotation[shape[0] // 2, shape[1] // 2 :] = 2
    t = time.perf_counter()
    session = SegmentationSession(image, num_classes=1, annotation=annotation, config=SessionConfig(device=device))
    print(json.dumps({"session_build_seconds": round(time.perf_counter() - t, 3)}))
    for _ in session.train(max_steps=25):
        pass
    tr = session.trainer
    icfg, model, dev = tr.config.inference, tr.ema_model.eval(), tr.device

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def timed(fn, *args, **kwargs):
        """``fn(*args, **kwargs)`` and its wall time in seconds, the GPU synchronised on both sides."""
        sync()
        t0 = time.perf_counter()
        value = fn(*args, **kwargs)
        sync()
        return value, round(time.perf_counter() - t0, 3)

    def forwards(x: torch.Tensor, amp: bool, n: int) -> None:
        for _ in range(0, n, x.shape[0]):
            _forward(model, x, (), amp)

    for _ in range(repeats):
        out: dict = {}
        _, out["predict_total"] = timed(tr.predict)
        plan = plan_windows(shape, tr.patch_size, None, icfg.overlap, icfg.edge_margin)
        sub, out["read_region"] = timed(read_region, tr.volume.features, plan.region, shape)
        _, out["upload"] = timed(lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(dev), sub)
        probs, out["predict_planned"] = timed(predict_planned, model, sub, plan, config=icfg, device=dev, amp=tr.amp,
                                              as_tensor=True)
        _, out["class_map_host"] = timed(class_map_and_uncertainty, probs)
        out["windows"] = n = len(plan.corners)
        with torch.inference_mode():
            for batch, amp in ((icfg.batch_for(dev.type), tr.amp), (2, tr.amp), (8, False)):
                x = torch.randn((batch, sub.shape[0], *plan.window), device=dev)
                _, out[f"forward_only_b{batch}{'' if amp else '_fp32'}"] = timed(forwards, x, amp, n)
        print(json.dumps(out))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--shape", type=int, nargs=3, default=(256, 512, 512))
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    main(tuple(args.shape), args.repeats, args.device)
