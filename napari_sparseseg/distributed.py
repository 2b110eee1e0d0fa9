"""Batch prediction of a huge volume on a dask.distributed cluster, block by block.

The client reads the checkpoint's config, fits the intensity statistics once
(whole-volume statistics: a block's normalisation never depends on the block)
and submits one task per block of a chunk-aligned block grid. Each task reads
exactly the union of the whole-volume window grid's windows that meet its
block (:func:`~.core.inference.plan_windows`: the block plus its halo) from
the source, predicts, and writes the block into the output zarr store (blocks
are the store's chunks, so writes never overlap) or returns it for a small
output file. The result equals a single-process whole-volume prediction
whatever the block grid or the worker count.

Workers read the checkpoint once each (a per-process cache keyed by path and
modification time) and use one torch thread (a worker per core).

Qt-free; torch and dask are imported only when a prediction runs.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .core.box import Box
from .core.config import InferenceConfig
from .core.volume import Spacing, validate_spacing

__all__ = ["DistributedResult", "open_mask_output", "predict_distributed"]

#: Per-worker-process cache of models: (path, mtime_ns, spacing, device) -> (model, device).
_MODELS: dict[tuple, Any] = {}


@dataclass(frozen=True)
class ModelSpec:
    """What a worker needs to rebuild the model and plan its windows (small, pickled once per task).

    Attributes
    ----------
    path : str
        Checkpoint file (readable by every worker).
    mtime_ns : int
        Its modification time: a rewritten checkpoint is read again.
    spacing : (float, float, float)
        Voxel size ``(z, y, x)`` the net's anisotropic levels were planned for: the checkpoint's (the image's
        when the checkpoint does not say).
    shape : (int, int, int)
        ``(Z, Y, X)`` of the whole volume (the window grid covers it).
    window : (int, int, int)
        Sliding window, the patch shape the trainer would use on this volume.
    inference : InferenceConfig
        Overlap, sigma, batch and mirroring of the prediction.
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``mps``, resolved on the worker.
    """

    path: str
    mtime_ns: int
    spacing: Spacing
    shape: tuple[int, int, int]
    window: tuple[int, int, int]
    inference: InferenceConfig
    device: str = "cpu"


@dataclass(frozen=True)
class DistributedResult:
    """Summary of a :func:`predict_distributed` run."""

    out_path: Path
    shape: tuple[int, int, int]
    blocks: int
    workers: int
    seconds: float
    classes: list[int]


def _worker_model(spec: ModelSpec) -> tuple[Any, Any]:
    """The EMA (or raw) model of ``spec.path`` on this worker, read once per process."""
    key = (spec.path, spec.mtime_ns, spec.spacing, spec.device)
    if key not in _MODELS:
        from .core.checkpoint import config_of, read_model
        from .core.config import ModelConfig
        from .core.device import fast_bf16, select_device
        from .core.net import UNet3D

        payload = read_model(spec.path)
        config, state = config_of(payload), payload["state"]
        device = select_device(spec.device)
        model = UNet3D(ModelConfig(**state["model_config"]), spec.spacing)
        model.load_state_dict(state["ema"] if "ema" in state else state["model"])
        _MODELS.clear()  # one model per worker: a new checkpoint replaces the old one
        _MODELS[key] = (model.to(device).eval(), device, config.train.amp and fast_bf16(device))
    return _MODELS[key]


def _predict_block(source: Any, stats: Any, spec: ModelSpec, box: Box, out: str | None,
                   probabilities: str | None) -> tuple[Box, np.ndarray | None, np.ndarray]:
    """Task: predict ``box`` from ``source`` (channels-first raw image); write or return its mask, and its classes."""
    import torch

    from .core.inference import plan_windows, predict_planned, read_region
    from .core.lazy import LazyFeatures

    torch.set_num_threads(1)
    model, device, amp = _worker_model(spec)
    features = LazyFeatures(source, stats, channel_axis=0)
    plan = plan_windows(spec.shape, spec.window, box, spec.inference.overlap, spec.inference.edge_margin)
    region = read_region(features, plan.region, spec.shape)  # the block plus its halo, nothing else
    icfg = replace(spec.inference, batch_size=spec.inference.batch_for(torch.device(device).type))
    probs = predict_planned(model, region, plan, config=icfg, device=device, amp=amp)
    labels = probs.argmax(0).astype(np.uint8)
    if probabilities is not None:
        import zarr

        zarr.open_array(probabilities, mode="r+")[(slice(None),) + box.slices] = probs
    classes = np.unique(labels)
    if out is None:
        return box, labels, classes
    import zarr

    zarr.open_array(out, mode="r+")[box.slices] = labels
    return box, None, classes


@contextlib.contextmanager
def open_mask_output(path: str | Path, shape: Sequence[int], chunks: Sequence[int], spacing: Sequence[float],
                     *, channels: int | None = None, dtype: str = "uint8",
                     origin: Sequence[float] | None = None) -> Iterator[Any]:
    """A new zarr v3 array for a blockwise result, put in place of ``path`` only when the ``with`` block ends.

    The array is written in a hidden folder beside ``path`` (:func:`~.io.written_whole_dir`): a run killed or
    failed part-way leaves no partial mask that a rerun would take for a finished one, and an existing mask
    stays until the new one is whole.

    Parameters
    ----------
    path : str or Path
        ``.zarr`` directory.
    shape, chunks : sequence of int
        ``(Z, Y, X)`` and its chunk (block) shape.
    spacing : sequence of float
        ``(z, y, x)``, stored in ``attrs["spacing"]``.
    channels : int, optional
        Leading class axis (probabilities ``(K + 1, Z, Y, X)``, one chunk along it).
    dtype : str
        ``uint8`` for masks, ``float32`` for probabilities.
    origin : sequence of float, optional
        ``(z, y, x)`` position of the first voxel (the image's), stored in ``attrs["origin"]``.

    Yields
    ------
    zarr.Array
        The array, in its temporary folder (``array.store.root``: where other processes write their blocks).

    Raises
    ------
    VolumeFileError
        If ``path`` exists and is not a zarr store, or is a session store (a ``ValueError``).
    """
    import zarr

    from .formats.zarr_store import check_replaceable, output_attributes
    from .io import written_whole_dir

    p = Path(path)
    check_replaceable(p)  # a session store, an image folder or a file is never replaced by a mask
    shape, chunks = tuple(int(s) for s in shape), tuple(int(min(c, s)) for c, s in zip(chunks, shape))
    names: tuple[str, ...] = ("z", "y", "x")
    if channels is not None:
        shape, chunks, names = (int(channels),) + shape, (int(channels),) + chunks, ("c",) + names
    with written_whole_dir(p) as tmp:
        yield zarr.create_array(str(tmp), shape=shape, chunks=chunks, dtype=dtype, zarr_format=3,
                                dimension_names=names, attributes=output_attributes(
                                    spacing, origin, kind="mask" if channels is None else "probabilities"))


def _open_image(image: Any, level: int, spacing: Sequence[float] | None,
                channel_axis: int | None) -> tuple[Any, Spacing, int | None, Any]:
    """``(data, spacing, channel_axis, file)`` of a path (lazily for zarr; ``file`` its ``VolumeFile``, whose
    affine and origin the mask keeps) or an in-memory array (``file`` None)."""
    if isinstance(image, (str, Path)):
        from .io import read_volume

        vol = read_volume(image, level=level, lazy=True)
        return vol.data, vol.spacing, vol.channel_axis, vol
    return image, validate_spacing(spacing), channel_axis, None


def predict_distributed(image: Any, model_path: str | Path, out_path: str | Path, *, scheduler: str | None = None,
                        block: Sequence[int] = (64, 256, 256), level: int = 0, spacing: Sequence[float] | None = None,
                        channel_axis: int | None = None, device: str = "cpu", n_workers: int = 2,
                        final: bool = True, probabilities_path: str | Path | None = None,
                        progress: Callable[[int, int], None] | None = None) -> DistributedResult:
    """Segment ``image`` with a saved model on a dask.distributed cluster, blockwise.

    Parameters
    ----------
    image : str, Path or array
        Volume file (a zarr / OME-Zarr store is read lazily, chunk by chunk;
        other formats are read into memory and scattered to the workers), or
        an array ``(z, y, x)`` (4D with ``channel_axis``).
    model_path : str or Path
        Checkpoint written by :func:`~.core.checkpoint.save_model`; every
        worker must be able to read it (same path).
    out_path : str or Path
        ``.zarr``: a uint8 mask ``(Z, Y, X)`` chunked by ``block`` with
        ``attrs["spacing"]``, written by the workers. Any other suffix
        :func:`~.io.save_mask` accepts (``.ome.zarr`` included): blocks are
        gathered on the client (small volumes only).
    scheduler : str, optional
        Address of a running scheduler (``"tcp://host:8786"``); ``None`` or
        ``"local"`` starts a ``LocalCluster`` of ``n_workers`` single-threaded
        processes, closed at the end.
    block : sequence of int
        Block (and output chunk) shape ``(z, y, x)``; any grid gives the same result.
    level : int
        Pyramid level of an OME-Zarr image.
    spacing : sequence of float, optional
        Voxel size of an array ``image`` (a file brings its own).
    channel_axis : int, optional
        Channel axis of a 4D array ``image``.
    device : str
        Where the workers run the net (``cpu``, ``cuda``, ``auto``).
    n_workers : int
        Workers of the local cluster.
    final : bool
        Test-time mirroring of the final segmentation (as ``predict`` on one process).
    probabilities_path : str or Path, optional
        Also write float32 probabilities ``(K + 1, Z, Y, X)`` to this ``.zarr``.
    progress : callable, optional
        ``progress(done, total)`` after each finished block.

    Returns
    -------
    DistributedResult
        Output path, shape, block count, workers and wall seconds.

    Raises
    ------
    ValueError
        Unreadable model or image, channel mismatch, bad block, or a
        non-zarr ``probabilities_path``.
    """
    from .core.blockwise import iter_blocks
    from .core.checkpoint import config_of, read_model
    from .core.lazy import ChannelsFirst
    from .core.net import plan_levels, total_stride
    from .core.sampler import patch_shape
    from .core.volume import IntensityStats, as_channels_first

    t0 = time.perf_counter()
    block = tuple(int(b) for b in block)
    if len(block) != 3 or min(block) < 1:
        raise ValueError(f"block must be three positive sizes (z, y, x), got {block}")
    out_path = Path(out_path)
    zarr_out = out_path.name.lower().endswith(".zarr") and not out_path.name.lower().endswith(".ome.zarr")
    if probabilities_path is not None and not str(probabilities_path).lower().endswith(".zarr"):
        raise ValueError(f"probabilities_path must be a .zarr store, got {probabilities_path}")
    payload = read_model(model_path)
    config = config_of(payload)
    data, spacing, channel_axis, source = _open_image(image, level, spacing, channel_axis)
    affine, origin = (None, None) if source is None else (source.affine, source.origin)
    if isinstance(data, np.ndarray):
        raw: Any = np.ascontiguousarray(as_channels_first(data, channel_axis))
    else:
        raw = ChannelsFirst(data, channel_axis)
    # One fit for the whole volume (the same numbers AnnotatedVolume uses for an in-memory image).
    stats = IntensityStats.fit(raw, config.train.intensity_views)
    if stats.num_features != payload["in_channels"]:
        views = max(len(stats.views), 1)
        raise ValueError(f"model expects {payload['in_channels'] // views} image channel(s), the image has "
                         f"{len(stats.channels)} (shape {tuple(raw.shape)})")
    shape = tuple(int(s) for s in raw.shape[1:])
    mc = config.model
    # The net keeps the levels it was trained with (as NetWeights.load_state_dict rebuilds it in one process).
    planned = tuple(float(v) for v in payload["state"].get("spacing", spacing))
    multiple = total_stride(plan_levels(planned, mc.depth, mc.anisotropy_threshold)[1])
    window = patch_shape(shape, spacing, config.train.patch_voxels, multiple)
    icfg = config.inference
    if final:
        icfg = icfg.final()
    path = Path(model_path).resolve()
    spec = ModelSpec(str(path), path.stat().st_mtime_ns, planned, shape, window, icfg, device)  # type: ignore[arg-type]
    boxes = iter_blocks(shape, block)
    with contextlib.ExitStack() as outputs:  # each zarr output put in place only once every block is in it
        out_store = prob_store = None
        if zarr_out:
            out_store = str(outputs.enter_context(open_mask_output(out_path, shape, block, spacing,
                                                                   origin=origin)).store.root)
        if probabilities_path is not None:
            prob_store = str(outputs.enter_context(open_mask_output(
                probabilities_path, shape, block, spacing, channels=payload["num_classes"] + 1,
                dtype="float32", origin=origin)).store.root)
        mask, present, workers = _run_blocks(raw, stats, spec, boxes, out_store, prob_store, scheduler, n_workers,
                                             progress, None if zarr_out else shape)
    if mask is not None:
        from .io import save_mask

        save_mask(out_path, mask, spacing, affine=affine, origin=origin)  # the image's grid, as in one process
    return DistributedResult(out_path, shape, len(boxes), workers, time.perf_counter() - t0,  # type: ignore[arg-type]
                             np.flatnonzero(present).tolist())


def _run_blocks(raw: Any, stats: Any, spec: ModelSpec, boxes: Sequence[Box], out_store: str | None,
                prob_store: str | None, scheduler: str | None, n_workers: int,
                progress: Callable[[int, int], None] | None,
                gather: tuple[int, int, int] | None) -> tuple[np.ndarray | None, np.ndarray, int]:
    """Predict every box on the cluster: ``(mask, classes present (256,) bool, workers)``; the mask ``gather``-shaped
    when the blocks come back to the client (None when the workers wrote them to ``out_store``)."""
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler in (None, "local"):
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster.scheduler_address)
    else:
        client = Client(scheduler)
    try:
        workers = len(client.scheduler_info().get("workers", {}))
        # zarr arrays pickle by reference to their store; an in-memory image is sent to every worker once.
        source = client.scatter(raw, broadcast=True) if isinstance(raw, np.ndarray) else raw
        futures = [client.submit(_predict_block, source, stats, spec, box, out_store, prob_store, pure=False)
                   for box in boxes]
        mask = None if gather is None else np.zeros(gather, np.uint8)
        present = np.zeros(256, bool)
        for done, future in enumerate(as_completed(futures), 1):
            box, labels, classes = future.result()
            present[classes] = True
            if mask is not None:
                mask[box.slices] = labels
            future.release()
            if progress is not None:
                progress(done, len(boxes))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return mask, present, workers
