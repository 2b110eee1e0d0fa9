"""A session on a uint8 zarr volume too large to load: open, paint, train, predict the view, bounded memory.

Creates (once) a synthetic volume of about 4 GiB (default ``256 x 4096 x
4096`` uint8, chunks ``32 x 256 x 256``) outside the repository, generated
chunk by chunk: smooth blobs (a random coarse lattice, linearly interpolated
per chunk at global coordinates, so the chunks join seamlessly) plus noise.
Eagerly, the session would hold float32 features of two views per voxel
(8 bytes/voxel: 32 GiB) plus dense labels and sources (2 bytes/voxel): more
than this machine's memory. Lazily it opens the zarr array, fits intensity
statistics on a bounded sample of chunks, keeps labels in sparse chunks and
reads only the chunks each patch or prediction block needs.

Then: paint a few thresholded slice regions, train ``--steps`` steps, predict
the region in view block by block (the blocks of
:func:`napari_sparseseg.core.blockwise.iter_blocks` meeting the view, written
into an output zarr as they finish), and report seconds and peak resident
memory (``ru_maxrss`` and a psutil sampler) per phase.

    nice -n 10 python benchmarks/larger_than_memory.py --steps 20
    python benchmarks/larger_than_memory.py --shape 64 1024 1024 --steps 3   # quick
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import shutil
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "larger_than_memory.json"
LATTICE_STRIDE = (8, 32, 32)
THRESHOLD = 0.62


# -- synthetic volume, generated chunk by chunk ---------------------------------------------------
def _lattice(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """Coarse random lattice (a few MB) whose interpolation is the blob field."""
    size = [s // st + 2 for s, st in zip(shape, LATTICE_STRIDE)]
    return np.random.default_rng(seed).random(size, dtype=np.float32)


def _interp_matrix(start: int, n: int, stride: int, m: int) -> tuple[np.ndarray, int]:
    """Linear interpolation weights ``(n, k)`` from lattice rows ``[lo, lo + k)`` to voxels ``[start, start + n)``."""
    pos = (np.arange(start, start + n) + 0.5) / stride
    i0 = np.floor(pos).astype(int)
    lo, hi = int(i0.min()), min(int(i0.max()) + 2, m)
    frac = (pos - i0).astype(np.float32)
    w = np.zeros((n, hi - lo), np.float32)
    w[np.arange(n), i0 - lo] = 1 - frac
    w[np.arange(n), np.minimum(i0 + 1, m - 1) - lo] += frac
    return w, lo


def blob_field(lattice: np.ndarray, start: tuple[int, ...], size: tuple[int, ...]) -> np.ndarray:
    """Smooth field in ``[0, 1]`` at global voxels ``[start, start + size)``; same values whatever the blocking."""
    mats = [_interp_matrix(a, n, st, m) for a, n, st, m in zip(start, size, LATTICE_STRIDE, lattice.shape)]
    sub = lattice[tuple(slice(lo, lo + w.shape[1]) for w, lo in mats)]
    out = np.tensordot(mats[0][0], sub, axes=(1, 0))
    out = np.tensordot(out, mats[1][0], axes=(1, 1)).transpose(0, 2, 1)
    return np.tensordot(out, mats[2][0], axes=(2, 1))


def chunk_image(lattice: np.ndarray, start: tuple[int, ...], size: tuple[int, ...], seed: int) -> np.ndarray:
    """uint8 image of one chunk: bright blobs where the field exceeds ``THRESHOLD``, plus noise."""
    field = blob_field(lattice, start, size)
    ramp = np.clip((field - THRESHOLD) * 20 + 0.5, 0, 1)  # blurred edge, ~0.05 of the field wide
    noise = np.random.default_rng([seed, *start]).integers(0, 40, size, dtype=np.uint8)
    return (40 + 140 * ramp).astype(np.uint8) + noise


def generate(path: str, shape: tuple[int, int, int], chunks: tuple[int, int, int], seed: int) -> None:
    """Write the synthetic volume chunk by chunk (bounded memory: one chunk at a time)."""
    import zarr

    lattice = _lattice(shape, seed)
    arr = zarr.open_array(path, mode="w", shape=shape, chunks=chunks, dtype=np.uint8,
                          attributes={"seed": seed, "generator": "benchmarks/larger_than_memory.py"})
    grid = [range(0, s, c) for s, c in zip(shape, chunks)]
    for z0 in grid[0]:
        for y0 in grid[1]:
            for x0 in grid[2]:
                start = (z0, y0, x0)
                size = tuple(min(c, s - a) for a, c, s in zip(start, chunks, shape))
                arr[tuple(slice(a, a + n) for a, n in zip(start, size))] = chunk_image(lattice, start, size, seed)


def _disk_bytes(path: str) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


# -- memory accounting --------------------------------------------------------------------------
class PeakRSS:
    """Samples the resident set size every ``interval`` seconds in a thread; ``peak`` since the last reset."""

    def __init__(self, interval: float = 0.05) -> None:
        import psutil

        self._proc = psutil.Process()
        self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def reset(self) -> int:
        self.peak = self._proc.memory_info().rss
        return self.peak

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--path", default="/tmp/sparseseg_big.zarr", help="synthetic volume (created if absent)")
    p.add_argument("--out", default="/tmp/sparseseg_big_prediction.zarr", help="prediction zarr (overwritten)")
    p.add_argument("--shape", type=int, nargs=3, default=(256, 4096, 4096))
    p.add_argument("--chunks", type=int, nargs=3, default=(32, 256, 256))
    p.add_argument("--view", type=int, nargs=3, default=(32, 512, 512), help="size of the region in view")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--base", type=int, default=8, help="U-Net base channels")
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--patch", type=int, nargs=3, default=(16, 64, 64))
    p.add_argument("--overlap", type=float, default=0.25, help="sliding-window overlap of the prediction")
    p.add_argument("--threads", type=int, default=1, help="torch threads (2 oversubscribe a busy 2-core box)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cleanup", action="store_true", help="delete the volume and the prediction afterwards")
    args = p.parse_args()
    path, shape, chunks = str(args.path), tuple(args.shape), tuple(args.chunks)
    if Path(path).resolve().is_relative_to(ROOT):
        raise SystemExit(f"--path {path} is inside the repository; put the big volume elsewhere")

    import zarr

    t0 = time.perf_counter()
    created = False
    if not (Path(path) / "zarr.json").exists():
        # a child process, so this process's ru_maxrss measures the session only
        proc = mp.get_context("spawn").Process(target=generate, args=(path, shape, chunks, args.seed))
        proc.start()
        proc.join()
        if proc.exitcode != 0:
            raise SystemExit(f"generating {path} failed (exit code {proc.exitcode})")
        created = True
    t_generate = time.perf_counter() - t0
    image = zarr.open_array(path, mode="r")
    shape = tuple(image.shape)

    import torch

    from napari_sparseseg.core.blockwise import iter_blocks, merge_labels
    from napari_sparseseg.core.box import Box
    from napari_sparseseg.core.config import InferenceConfig, ModelConfig, SessionConfig, TrainConfig
    from napari_sparseseg.core.session import SegmentationSession

    torch.set_num_threads(args.threads)
    config = SessionConfig(model=ModelConfig(base_channels=args.base, depth=args.depth),
                           train=TrainConfig(patch_voxels=int(np.prod(args.patch)), warmup_steps=5,
                                             seed=args.seed),
                           inference=InferenceConfig(overlap=args.overlap, batch_size=2), device="cpu")
    sampler = PeakRSS()
    phases: dict[str, dict] = {}

    def phase(name: str, start: float, **extra) -> None:
        phases[name] = {"seconds": round(time.perf_counter() - start, 2),
                        "peak_rss_mib": round(sampler.peak / 2**20, 1),
                        "ru_maxrss_mib": round(_maxrss_bytes() / 2**20, 1), **extra}
        print(f"{name:>8}: {phases[name]}", flush=True)
        sampler.reset()

    phase("baseline", time.perf_counter())
    t = time.perf_counter()
    session = SegmentationSession(image, num_classes=1, spacing=(1.0, 1.0, 1.0), config=config)
    phase("open", t, patch=list(session.trainer.patch_size))
    volume = session.volume

    # The region in view: centred in the volume; paint 3 of its z-slices and 2 slices elsewhere (thresholded field).
    view_start = tuple((s - v) // 2 // c * c for s, v, c in zip(shape, args.view, chunks))  # on the chunk grid
    view = tuple(slice(a, a + v) for a, v in zip(view_start, args.view))
    lattice = _lattice(shape, int(image.attrs.get("seed", args.seed)))
    t = time.perf_counter()
    regions = [(view[0].start + k, view[1], view[2]) for k in (4, args.view[0] // 2, args.view[0] - 5)]
    w, a = min(512, shape[1] // 2, shape[2] // 2), min(shape[1], shape[2]) // 8
    regions += [(shape[0] // 4, slice(a, a + w), slice(a, a + w)),
                (3 * shape[0] // 4, slice(shape[1] - a - w, shape[1] - a), slice(shape[2] // 2 - w // 2,
                                                                            shape[2] // 2 + w // 2))]
    for z, ys, xs in regions:
        truth = blob_field(lattice, (z, ys.start, xs.start), (1, ys.stop - ys.start, xs.stop - xs.start))[0]
        session.add_labels((z, ys, xs), np.where(truth > THRESHOLD, 2, 1).astype(np.uint8))
    phase("paint", t, labeled_voxels=volume.n_labeled, label_chunks=volume.labels.n_chunks,
          label_bytes=volume.labels.nbytes_allocated + volume.source.nbytes_allocated)

    t = time.perf_counter()
    losses = [e.loss for e in session.train(max_steps=args.steps) if hasattr(e, "loss")]
    phase("train", t, steps=len(losses), first_loss=round(losses[0], 4), last_loss=round(losses[-1], 4),
          seconds_per_step=round((time.perf_counter() - t) / max(len(losses), 1), 3))

    # Predict the view block by block (output chunks meeting the view), writing each block as it finishes.
    out = zarr.open_array(str(args.out), mode="w", shape=shape, chunks=chunks, dtype=np.uint8)
    view_box = Box(view_start, tuple(a + v for a, v in zip(view_start, args.view)))
    blocks = [b for b in iter_blocks(shape, chunks, view_box)
              if all(a < v1 and b1 > v0 for a, b1, v0, v1 in zip(b.start, b.stop, view_box.start, view_box.stop))]
    t = time.perf_counter()
    for b in blocks:
        pred = session.trainer.predict(b)
        out[b.slices] = merge_labels(pred.labels, volume.labels[b.slices])
    predicted = int(sum(np.prod(b.shape) for b in blocks))
    phase("predict", t, blocks=len(blocks), voxels=predicted,
          voxels_per_second=round(predicted / max(time.perf_counter() - t, 1e-9)))
    sampler.stop()

    mask = np.asarray(out[view])
    truth = blob_field(lattice, view_start, tuple(args.view)) > THRESHOLD
    inter = np.logical_and(mask == 1, truth).sum()
    dice = float(2 * inter / max((mask == 1).sum() + truth.sum(), 1))

    n_vox = int(np.prod(shape))
    n_feat = volume.features.shape[0]
    result = {
        "machine": f"{os.cpu_count()}-core CPU, {_total_memory_gib():.0f} GiB RAM",
        "shape": list(shape), "chunks": list(chunks), "view": list(args.view),
        "image_bytes": n_vox, "on_disk_bytes": _disk_bytes(path),
        "eager_bytes": n_vox * n_feat * 4 + 2 * n_vox,
        "eager_note": f"{n_feat} float32 feature channels + uint8 labels + uint8 source",
        "generated": created, "generate_seconds": round(t_generate, 1) if created else None,
        "model": {"base_channels": args.base, "depth": args.depth, "patch": list(session.trainer.patch_size),
                  "overlap": args.overlap, "threads": args.threads},
        "phases": phases, "peak_rss_mib": round(_maxrss_bytes() / 2**20, 1),
        "view_dice_vs_synthetic_truth": round(dice, 3),
        "whole_volume_prediction_hours_at_this_rate": round(
            n_vox / max(phases["predict"]["voxels_per_second"], 1) / 3600, 1),
        "prediction_path": "core.blockwise.iter_blocks + Trainer.predict per output chunk meeting the view",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    gib = 2**30
    print(f"\nvolume {shape} uint8: {n_vox / gib:.2f} GiB in memory, {result['on_disk_bytes'] / gib:.2f} GiB on disk; "
          f"eager session would need {result['eager_bytes'] / gib:.1f} GiB")
    print(f"{'phase':>8} | {'seconds':>8} | {'peak RSS MiB':>12}")
    for name, ph in phases.items():
        print(f"{name:>8} | {ph['seconds']:>8} | {ph['peak_rss_mib']:>12}")
    print(f"peak RSS of the whole run (ru_maxrss): {result['peak_rss_mib']} MiB; view Dice {dice:.3f}; "
          f"written to {RESULTS.relative_to(ROOT)}")
    if args.cleanup:
        shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(str(args.out), ignore_errors=True)


def _total_memory_gib() -> float:
    import psutil

    return psutil.virtual_memory().total / 2**30


if __name__ == "__main__":
    main()
