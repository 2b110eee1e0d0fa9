"""Training and inference speed of the default model against a plain eager fp32 reference.

Both nets are the same UNet3D (same width, depth, patch and batch); the
reference runs eager fp32 (TF32 off), ours runs the production path (bf16
autocast and, with ``--compile``, torch.compile; cudnn autotuning). Prints a
JSON line per measurement and ratios measured in the same run.

    python benchmarks/speed.py --device cuda --base 32 --patch 96 --batch 2 --compile
    python benchmarks/speed.py --device cpu --base 16 --patch 48 --batch 2     # CI-sized

With ``--volume Z Y X`` it also times a bare sliding-window pass over a volume
that size, and with ``--first-view Z Y X`` the time from the first labels to the
first prediction of the slice in view. Two modes measure the product path alone:

    python benchmarks/speed.py --device cuda --refresh 256 512 512        # streamed refresh via Trainer.predict
    python benchmarks/speed.py --device cuda --first-view 128 256 256 --first-view-only --warm-up
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from napari_sparseseg.core.config import InferenceConfig, ModelConfig, SessionConfig, TrainConfig
from napari_sparseseg.core.device import autocast
from napari_sparseseg.core.inference import predict_probabilities
from napari_sparseseg.core.loss import partial_label_loss
from napari_sparseseg.core.net import UNet3D


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_training(net: torch.nn.Module, device: torch.device, shape: tuple[int, ...], *, amp: bool,
                  steps: int, warmup: int, classes: int = 2) -> float:
    """Voxels/s of full training steps (forward, weighted loss, backward, AdamW)."""
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x = torch.randn(shape, device=device)
    t = torch.randint(0, classes, (shape[0],) + shape[2:], device=device)
    w = (torch.rand((shape[0],) + shape[2:], device=device) > 0.5).float()
    ctx = autocast(device, amp)
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            t0 = time.perf_counter()
        with ctx:
            out = net(x)
        loss = partial_label_loss(out, t, w)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return steps * shape[0] * float(np.prod(shape[2:])) / (time.perf_counter() - t0)


@torch.inference_mode()
def time_forward(net: torch.nn.Module, device: torch.device, shape: tuple[int, ...], *, amp: bool, steps: int,
                 warmup: int) -> float:
    x = torch.randn(shape, device=device)
    ctx = autocast(device, amp)
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            t0 = time.perf_counter()
        with ctx:
            net(x)
    _sync(device)
    return steps * shape[0] * float(np.prod(shape[2:])) / (time.perf_counter() - t0)


def first_view(shape: list[int], device: torch.device, base: int, compile_: bool) -> dict:
    """Session on a synthetic volume: label 3 slices, train until the first refresh, predict the view."""
    from napari_sparseseg.core.box import Box
    from napari_sparseseg.core.session import SegmentationSession
    from napari_sparseseg.evaluation.protocols import simulate_annotation
    from napari_sparseseg.sample_data import make_cells_volume

    vol = make_cells_volume(tuple(shape), n_cells=40)
    cfg = SessionConfig(model=ModelConfig(base_channels=base), train=TrainConfig(compile=compile_),
                        device=device.type)
    t0 = time.perf_counter()
    s = SegmentationSession(vol.image, num_classes=len(vol.class_names), spacing=vol.spacing,
                            annotation=simulate_annotation(vol.labels, "z:3"), config=cfg)
    built = time.perf_counter() - t0
    z = shape[0] // 2
    view = Box((z, 0, 0), (z + 1, shape[1], shape[2]))
    marks = {}
    for event in s.interactive(lambda: view, first_refresh_steps=10):
        if hasattr(event, "probabilities"):
            break
        if getattr(event, "step", None) in (1, 10):
            marks[f"first_view_step{event.step}_at"] = time.perf_counter() - t0
    _sync(device)
    return {"first_view_seconds": time.perf_counter() - t0, "first_view_shape": shape,
            "first_view_steps": s.trainer.step, "first_view_built_at": built, **marks}


def product_refresh(shape: list[int], device: torch.device) -> list[dict]:
    """Whole-volume streamed refresh through the product path (``Trainer.predict``), default model and config.

    Times the refresh a user waits for (features already normalised, class map and
    uncertainty on the host) under the default inference config and a few variants.
    """
    from dataclasses import replace

    from napari_sparseseg.core.box import Box
    from napari_sparseseg.core.session import SegmentationSession

    rng = np.random.default_rng(0)
    image = rng.normal(100, 20, size=shape).astype(np.float32)
    annotation = np.zeros(shape, np.uint8)
    annotation[shape[0] // 2, : shape[1] // 2] = 1
    annotation[shape[0] // 2, shape[1] // 2 :] = 2
    default = SessionConfig(device=device.type)
    session = SegmentationSession(image, num_classes=1, annotation=annotation, config=default)
    for _ in session.train(max_steps=2):
        pass
    trainer = session.trainer
    z = shape[0] // 2
    rows = []
    icfg = default.inference
    batch0 = icfg.batch_for(device.type)
    for overlap, batch, amp in [(icfg.overlap, batch0, True), (0.5, batch0, True), (icfg.overlap, 2, True),
                                (icfg.overlap, 8, False)]:
        inference = replace(default.inference, overlap=overlap, batch_size=batch, gpu_batch_size=batch)
        trainer.config = replace(default, inference=inference, train=replace(default.train, amp=amp))
        trainer.predict(Box((z, 0, 0), (z + 1, shape[1], shape[2])))  # warm-up: cudnn autotuning of the window
        _sync(device)
        t0 = time.perf_counter()
        trainer.predict()
        _sync(device)
        rows.append({"refresh_shape": shape, "overlap": overlap, "batch": batch, "amp": trainer.amp,
                     "window": list(trainer.patch_size), "refresh_seconds": time.perf_counter() - t0,
                     "default": (overlap, batch, amp) == (icfg.overlap, batch0, True)})
    trainer.config = default
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--base", type=int, default=32)
    ap.add_argument("--patch", type=int, default=96)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--ref-tf32", action="store_true", help="let the fp32 reference use TF32 convolutions")
    ap.add_argument("--volume", type=int, nargs=3, default=None)
    ap.add_argument("--first-view", type=int, nargs=3, default=None,
                    help="time first labels -> first prediction of the slice in view on a sample volume this size")
    ap.add_argument("--first-view-only", action="store_true",
                    help="time only --first-view, in a cold process (CUDA start-up counted), with the default model")
    ap.add_argument("--warm-up", action="store_true",
                    help="with --first-view-only: start the device first, untimed, as the widget does when it opens")
    ap.add_argument("--refresh", type=int, nargs=3, default=None,
                    help="time only the product's streamed whole-volume refresh of a volume this size")
    args = ap.parse_args()
    device = torch.device(args.device)

    def emit(out: dict) -> None:
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in out.items()}))

    meta = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
            "threads": torch.get_num_threads()}
    if args.refresh:
        for row in product_refresh(args.refresh, device):
            emit({**meta, **row})
        return
    if args.first_view_only:
        if not args.first_view:
            ap.error("--first-view-only needs --first-view Z Y X")
        from napari_sparseseg.core.device import warm_up

        out = {**meta, "cold_process": True, "warm_up_seconds": warm_up(device) if args.warm_up else None}
        out.update(first_view(args.first_view, device, ModelConfig().base_channels, args.compile))
        emit(out)
        return
    torch.manual_seed(0)
    cfg = ModelConfig(in_channels=2, num_classes=2, base_channels=args.base, depth=4)
    shape = (args.batch, 2, args.patch, args.patch, args.patch)
    out: dict = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                 "torch": torch.__version__, "base": args.base, "patch": args.patch, "batch": args.batch,
                 "threads": torch.get_num_threads()}

    # Reference: eager fp32, same net; strict fp32 unless --ref-tf32 (PyTorch's default lets cuDNN use TF32).
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = args.ref_tf32
        torch.backends.cudnn.allow_tf32 = args.ref_tf32
    out["ref_tf32"] = args.ref_tf32
    ref = UNet3D(cfg).to(device)
    out["ref_train_vox_s"] = time_training(ref, device, shape, amp=False, steps=args.steps, warmup=args.warmup)
    out["ref_infer_vox_s"] = time_forward(ref.eval(), device, shape, amp=False, steps=args.steps, warmup=args.warmup)
    del ref

    # Ours: bf16 autocast + cudnn autotuning (+ compile).
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats()
    net = UNet3D(cfg).to(device)
    fast = net
    if args.compile:
        t0 = time.perf_counter()
        fast = torch.compile(net)
        time_training(fast, device, shape, amp=True, steps=1, warmup=0)
        out["compile_seconds_train"] = time.perf_counter() - t0
    out["ours_train_vox_s"] = time_training(fast, device, shape, amp=True, steps=args.steps, warmup=args.warmup)
    net.eval()
    fast_eval = torch.compile(net) if args.compile else net
    out["ours_infer_vox_s"] = time_forward(fast_eval, device, shape, amp=True, steps=args.steps, warmup=args.warmup)
    out["train_ratio"] = out["ours_train_vox_s"] / out["ref_train_vox_s"]
    out["infer_ratio"] = out["ours_infer_vox_s"] / out["ref_infer_vox_s"]
    if device.type == "cuda":
        out["peak_gpu_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30

    if args.volume:
        vol = np.random.default_rng(0).random((2, *args.volume), dtype=np.float32)
        window = (args.patch,) * 3
        icfg = InferenceConfig(overlap=0.25, batch_size=4)
        predict_probabilities(fast_eval, vol[:, : args.patch * 2, : args.patch * 2, : args.patch * 2], window,
                              config=icfg, device=device)  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        predict_probabilities(fast_eval, vol, window, config=icfg, device=device)
        _sync(device)
        out["full_refresh_seconds"] = time.perf_counter() - t0
        out["full_refresh_shape"] = list(args.volume)
    if args.first_view:
        out.update(first_view(args.first_view, device, args.base, args.compile))
    print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in out.items()}))


if __name__ == "__main__":
    main()
