"""The first responder's filter bank of one image: computed once, in the background, shared by its sessions.

Axes: the stack is ``(z, y, x, F)``, ``F`` columns per image channel (:func:`~.features.feature_names`).
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .binning import bin_mean, binned_shape, binning_factors
from .context import context_columns
from .features import SCALE_TEMPORARIES, ComputationCancelled, compute_features, feature_names
from .lazy import is_lazy
from .volume import as_channels_first

__all__ = ["EXTRA_THREAD_BYTES", "PREVIEW_VOXELS", "FeatureStack", "Grid", "ImageSource", "choose_grid",
           "feature_workers", "describe_grid", "preview_grid", "responder_bytes", "stack_bytes"]


def stack_bytes(shape: Sequence[int], channels: int = 1, itemsize: int = 4) -> int:
    """Memory of the feature stack of a ``(z, y, x)`` volume with ``channels`` image channels, ``itemsize`` bytes a
    value (float32: 4, float16: 2)."""
    return int(np.prod(shape)) * len(feature_names(contrast=True)) * int(channels) * int(itemsize)


@dataclass(frozen=True)
class Grid:
    """Where and how the first responder keeps a volume's filter bank (:func:`choose_grid`).

    Attributes
    ----------
    factors : tuple of int
        Bins ``(fz, fy, fx)`` of the grid (:mod:`.binning`); ``(1, 1, 1)`` is the full grid.
    half : bool
        The stack is float16, each column scaled to unit root mean square (:func:`~.features.compute_features`).
    """

    factors: tuple[int, int, int] = (1, 1, 1)
    half: bool = False

    def __post_init__(self) -> None:
        if len(self.factors) != 3 or any(int(f) != f or f < 1 for f in self.factors):
            raise ValueError(f"bins must be three positive integers, got {self.factors!r}")
        object.__setattr__(self, "factors", tuple(int(f) for f in self.factors))

    @property
    def binned(self) -> bool:
        """Whether the grid is coarser than the volume's."""
        return self.factors != (1, 1, 1)

    @property
    def dtype(self) -> type:
        """The stack's dtype."""
        return np.float16 if self.half else np.float32

    @property
    def itemsize(self) -> int:
        """Bytes a value of the stack takes."""
        return 2 if self.half else 4


#: Memory the threads computing a filter bank may hold beyond the first one's: each holds up to
#: :data:`~.features.SCALE_TEMPORARIES` float32 copies of the volume (its scale's derivatives) while it works.
EXTRA_THREAD_BYTES = 1 << 30


def feature_workers(shape: Sequence[int], threads: int) -> int:
    """Threads to compute the filter bank of a ``(z, y, x)`` grid with: at most ``threads`` (as many as training
    uses; the plugin leaves one core to the window), fewer where their temporaries would pass
    :data:`EXTRA_THREAD_BYTES`."""
    per_thread = SCALE_TEMPORARIES * 4 * int(np.prod(shape))
    return max(1, min(int(threads), 1 + EXTRA_THREAD_BYTES // max(per_thread, 1)))


def responder_bytes(shape: Sequence[int], channels: int = 1, num_classes: int = 1, itemsize: int = 4) -> int:
    """Memory of the first responder on a grid of ``shape``: the feature stack (``itemsize`` bytes a value) and the
    two float32 context maps it keeps (the shown and the scored forests' next stage, :mod:`.context`)."""
    context = 2 * int(np.prod(shape)) * context_columns(num_classes) * 4
    return stack_bytes(shape, channels, itemsize) + context


def choose_grid(shape: Sequence[int], spacing: Sequence[float], max_bytes: int, channels: int = 1,
                num_classes: int = 1) -> Grid | None:
    """The first responder's grid for a volume: the finest that fits ``max_bytes``.

    In turn: the full grid in float32 (every volume up to about 20 million voxels per channel at 4 GiB); the
    full grid in float16 (up to about 38 million); a binned grid in float16 (:func:`~.binning.binning_factors`).
    Half precision before bins: forced onto bins of 2, thin tubes of a 1.5-voxel radius lost up to 0.49 Dice and
    the shared volumes up to 0.082, onto float16 at most 0.009 (three seeds, ``benchmarks/binned_responder.py``).

    Returns
    -------
    Grid or None
        None when not even bins of :data:`~.binning.MAX_FACTOR` fit.
    """
    if responder_bytes(shape, channels, num_classes) <= max_bytes:
        return Grid()
    factors = binning_factors(shape, spacing, lambda s: responder_bytes(s, channels, num_classes, 2), max_bytes)
    return None if factors is None else Grid(factors, half=True)


#: A bank of more voxels than this (about 10 s on one core) gets a binned preview, computed first and answering
#: until the bank itself is ready (:func:`preview_grid`).
PREVIEW_VOXELS = 4_000_000


def preview_grid(shape: Sequence[int], spacing: Sequence[float], grid: Grid) -> Grid | None:
    """A coarser grid of at most :data:`PREVIEW_VOXELS` for a first answer while ``grid``'s bank computes (None when
    ``grid`` is that small already, or nothing up to the largest bins is). Bins as :func:`choose_grid`'s, in float16."""
    if int(np.prod(binned_shape(shape, grid.factors))) <= PREVIEW_VOXELS:
        return None
    factors = binning_factors(shape, spacing, lambda s: int(np.prod(s)), PREVIEW_VOXELS)
    return None if factors is None else Grid(factors, half=True)


def describe_grid(grid: Grid | None, full_bytes: int, max_bytes: int, preview: FeatureStack | None) -> str | None:
    """A line for the user about the first responder's bank: kept in half precision or binned (``grid``; its full
    float32 size ``full_bytes`` over ``max_bytes``), and a ``preview`` answering first; None when neither."""
    notes = []
    if grid is not None and grid != Grid():
        how = "in half precision" + (f", binned {' x '.join(map(str, grid.factors))}" if grid.binned else "")
        notes.append(f"the first responder keeps this volume's filter bank {how} (in full it would take "
                     f"{full_bytes / 2**30:.1f} GiB, limit {max_bytes / 2**30:.1f} GiB); the net predicts every voxel")
    if preview is not None:
        notes.append(f"until its filter bank is ready a preview binned {' x '.join(map(str, preview.factors))} answers")
    return "; ".join(notes) or None


class ImageSource:
    """The image a stack (and its preview) is computed from: an in-memory array as it is, or a lazy one (zarr, dask,
    memmap) read into memory once, on first use, and kept, so that a session can be built on that same array.

    Parameters
    ----------
    image : array-like
        ``(z, y, x)``, or 4D with a channel axis.
    """

    def __init__(self, image) -> None:
        self.image = image
        self._array: np.ndarray | None = None if is_lazy(image) else image
        self._lock = threading.Lock()

    def array(self) -> np.ndarray:
        """The image in memory (read now from a lazy image, once; thread-safe)."""
        with self._lock:
            if self._array is None:
                self._array = np.asarray(self.image)
            return self._array

    def matches(self, image) -> bool:
        """Whether ``image`` is this image: the array object given, or the one it was read into."""
        return image is self.image or (self._array is not None and image is self._array)


class FeatureStack:
    """The filter bank of one image, computed once (thread-safe) and shared by whoever asks first.

    The plugin makes one when an image is chosen and computes it in a background thread while the user
    paints; the session's first responder then finds it ready.

    Parameters
    ----------
    image : array-like or ImageSource
        ``(z, y, x)``, or 4D with ``channel_axis``: in memory, or lazy (zarr, dask), read whole when the bank is
        computed (:class:`ImageSource`; :meth:`array` hands that array to the session).
    spacing : sequence of float
        Voxel size ``(z, y, x)``.
    channel_axis : int, optional
        Channel axis of a 4D image.
    grid : Grid
        Bins and precision of the stack (:func:`choose_grid`; a volume whose full float32 bank would not fit in
        memory); the default is the full grid in float32.
    preview : Grid, optional
        A coarser grid (:func:`preview_grid`) whose bank :meth:`compute` makes first, for a first answer sooner.
    """

    def __init__(self, image, spacing: Sequence[float], channel_axis: int | None = None,
                 grid: Grid = Grid(), preview: Grid | None = None) -> None:
        #: The image, read once for the stack and its preview.
        self.source = image if isinstance(image, ImageSource) else ImageSource(image)
        self.spacing, self.channel_axis = tuple(float(s) for s in spacing), channel_axis
        #: The preview's bank (None: no preview).
        self.preview = None if preview is None else FeatureStack(self.source, spacing, channel_axis, preview)
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        #: Why the background computation (:meth:`start`) failed, if it did.
        self.error: Exception | None = None
        #: Bins and precision of the stack.
        self.grid = grid
        #: Voxel size ``(z, y, x)`` of that grid.
        self.grid_spacing = tuple(s * f for s, f in zip(self.spacing, grid.factors))
        self._stack: np.ndarray | None = None
        self._lock, self._lock_start = threading.Lock(), threading.Lock()
        #: Seconds the computation took (None until computed).
        self.seconds: float | None = None
        #: ``time.perf_counter()`` when the computation (a lazy image's read included) began (None: not yet).
        self.started: float | None = None
        #: Share of the bank's columns computed so far, 0 to 1 (:func:`~.features.compute_features`'s progress).
        self.share_done = 0.0

    @property
    def factors(self) -> tuple[int, int, int]:
        """Bins ``(fz, fy, fx)`` of the grid the bank is computed on."""
        return self.grid.factors

    @property
    def ready(self) -> bool:
        """Whether the stack is computed."""
        return self._stack is not None

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        """``(z, y, x)`` of the grid the bank is computed on."""
        shape = list(self.source.image.shape)
        if self.channel_axis is not None:
            del shape[self.channel_axis]
        return binned_shape(shape, self.factors)

    @property
    def binned(self) -> bool:
        """Whether the bank is of a binned grid."""
        return self.grid.binned

    def matches(self, image, spacing: Sequence[float], channel_axis: int | None = None) -> bool:
        """Whether this is the stack of ``image`` (the same array object, or the array a lazy one was read into,
        :meth:`array`) at ``spacing``."""
        return (self.source.matches(image) and channel_axis == self.channel_axis
                and tuple(float(s) for s in spacing) == self.spacing)

    def array(self) -> np.ndarray:
        """The image in memory, the one the bank is computed from: the image given, or a lazy one read now (once)."""
        return self.source.array()

    def compute(self, should_stop: Callable[[], bool] | None = None) -> np.ndarray:
        """The preview's bank first (when there is one), then this one's; returns this one's (``should_stop``: as for
        :meth:`get`)."""
        if self.preview is not None:
            self.preview.get(should_stop)
        return self.get(should_stop)

    def start(self) -> None:
        """:meth:`compute` in a daemon thread, once (later calls do nothing); an error there (say, out of memory)
        is kept in :attr:`error` and the preview goes on answering."""
        with self._lock_start:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._compute_in_background, daemon=True, name="sparseseg-features")
        self._thread.start()

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._cancel.is_set()

    def cancel(self) -> None:
        """Stop the background computation (:meth:`start`) before its next filter scale; what it computed is dropped
        (freed with the stack). For good: :meth:`start` does not resume it, a later :meth:`get` computes the bank in
        the caller's thread."""
        self._cancel.set()

    def _compute_in_background(self) -> None:
        try:
            self.compute(should_stop=self._cancel.is_set)
        except ComputationCancelled:
            pass
        except Exception as error:  # a thread's exception would only reach threading.excepthook
            self.error = error
            warnings.warn(f"the first responder's filter bank could not be computed ({error!r}); its preview "
                          "goes on answering", RuntimeWarning, stacklevel=1)

    def to_fit_on(self) -> FeatureStack:
        """The stack a fit reads now: this bank when it is ready or has no preview; else its preview, while this
        bank computes in the background (:meth:`start`) for a later fit."""
        preview = self.preview
        if self.ready or preview is None:
            if preview is not None and preview.ready:
                preview.release()  # the bank answers from now on
            return self
        self.start()
        return preview

    def release(self) -> None:
        """Free the computed stack (a later :meth:`get` computes it again)."""
        with self._lock:
            self._stack = None

    def get(self, should_stop: Callable[[], bool] | None = None) -> np.ndarray:
        """float32 (or float16, :attr:`grid`) ``(z, y, x, F)`` of the (binned) grid, ``F`` = 48 columns per image
        channel (the 46 filters, then the 2 local contrast columns, :func:`~.features.compute_features`); computed
        on the first call. ``should_stop`` is asked before each filter scale: once true, nothing is kept and
        :class:`~.features.ComputationCancelled` is raised."""
        with self._lock:
            if self._stack is None:
                import torch

                self.started = t0 = time.perf_counter()
                raw = as_channels_first(self.array(), self.channel_axis)
                workers = feature_workers(self.grid_shape, torch.get_num_threads())
                stacks = []
                for i, channel in enumerate(raw):
                    def progress(done: int, total: int, i: int = i) -> None:
                        self.share_done = (i + done / total) / len(raw)

                    stacks.append(compute_features(bin_mean(channel, self.factors) if self.binned else channel,
                                                   self.grid_spacing, contrast=True, workers=workers,
                                                   dtype=self.grid.dtype, should_stop=should_stop, progress=progress))
                self._stack = stacks[0] if len(stacks) == 1 else np.concatenate(stacks, axis=-1)
                self.seconds = time.perf_counter() - t0
            return self._stack
