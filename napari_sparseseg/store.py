"""The session store: one zarr (v3) directory that holds everything of a session.

Layout (see ``docs/session-store.md`` for the full description)::

    STORE.zarr/
      zarr.json            root group; attrs: napari_sparseseg_session {version}, config, spacing,
                           num_classes, class_names, colors, image_ref, channel_axis, chunks
      image/               raw image (c, z, y, x) or (z, y, x), only when image_ref is null
      labels/              uint8 (z, y, x), annotation encoding (0 = unlabeled, 1 = background, k+1 = class k)
      source/              uint8 (z, y, x), Source enum (0 none, 1 painted, 2 corrected)
      weights/             float32 (z, y, x), w(y) the trainer uses (derived from labels + source)
      prediction/          uint8 (z, y, x), mask encoding (0 = background), user labels merged in
      probabilities/       float16 (K+1, z, y, x) softmax
      uncertainty/         float16 (z, y, x) normalised entropy in [0, 1]
      checkpoints/latest.pt, best.pt, index.json
      history.jsonl        one JSON line per training step

Durability: the labels and source are the user's work. A background thread
(:meth:`SessionStore.start_autosave`) writes the chunks an edit touched within
``interval`` seconds; zarr's ``LocalStore`` writes every chunk and metadata
file to a temporary name and renames it, and checkpoints are written the same
way, so a process killed at any instant leaves a store that opens (proved by
``tests/test_store_kill.py``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import store_lock
from .core.annotation import Box, Source, _weights
from .core.config import SessionConfig
from .core.encoding import UNLABELED
from .core.events import Prediction, TrainStep

if TYPE_CHECKING:
    from .core.session import SegmentationSession
    from .core.trainer import Trainer

log = logging.getLogger(__name__)

#: Root attribute that marks a directory as a session store.
STORE_KEY = "napari_sparseseg_session"
#: Layout version written by this code; stores with a higher version are refused.
STORE_VERSION = 1
#: Largest chunk (z, y, x) of the volume arrays.
MAX_CHUNKS: tuple[int, int, int] = (32, 128, 128)
#: Seconds of training between two automatic checkpoints (:meth:`SessionStore.on_step`).
CHECKPOINT_SECONDS = 30.0
#: Smoothing of the training loss that decides the best checkpoint (exponential moving average factor).
LOSS_SMOOTHING = 0.1
#: Stored images up to this size are read into memory on open; larger ones stay lazy (read per patch).
EAGER_IMAGE_BYTES = 2 * 1024**3
#: Least seconds between two rewrites of all labeled weight chunks after the class balance changed.
WEIGHTS_REFRESH_SECONDS = 5.0

VOLUME_ARRAYS = ("labels", "source", "weights", "prediction", "uncertainty")


def is_session_store(path: str | Path) -> bool:
    """True if ``path`` is a directory whose root ``zarr.json`` carries the session marker (never raises)."""
    try:
        meta = json.loads((Path(path) / "zarr.json").read_text())
        return STORE_KEY in meta.get("attributes", {})
    except (OSError, ValueError, AttributeError):
        return False


def default_chunks(shape: Sequence[int]) -> tuple[int, int, int]:
    """Chunk shape ``(z, y, x)``: :data:`MAX_CHUNKS` clipped to the volume."""
    return tuple(int(max(1, min(s, c))) for s, c in zip(shape, MAX_CHUNKS))  # type: ignore[return-value]


def align_to_chunks(box: Box, chunks: Sequence[int], shape: Sequence[int]) -> Box:
    """Grow ``box`` to whole chunks of the grid (clipped to ``shape``), so writes never read-modify-write."""
    if box.empty:
        return box
    start = tuple(a // c * c for a, c in zip(box.start, chunks))
    stop = tuple(-(-b // c) * c for b, c in zip(box.stop, chunks))
    return Box(start, stop).clip(shape)  # type: ignore[arg-type]


def _chunk_boxes(box: Box, chunks: Sequence[int], shape: Sequence[int]) -> list[Box]:
    """The chunk-grid boxes covering ``box`` (aligned first)."""
    box = align_to_chunks(box, chunks, shape)
    if box.empty:
        return []
    ranges = [range(a, b, c) for a, b, c in zip(box.start, box.stop, chunks)]
    return [Box((z, y, x), (z + chunks[0], y + chunks[1], x + chunks[2])).clip(shape)
            for z in ranges[0] for y in ranges[1] for x in ranges[2]]


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class SessionStore:
    """One session's persistent state in a zarr v3 directory (see the module docstring for the layout).

    Build one with :meth:`create` or :meth:`open`, never directly. A store is
    bound to one :class:`~.session.SegmentationSession` (``store.session``;
    ``session.store`` points back).

    Thread safety: :meth:`flush` (the autosave thread), :meth:`record_step`,
    :meth:`record_prediction` (any thread) and :meth:`save_checkpoint` (the
    training thread) may run concurrently; metadata updates are serialised.
    """

    def __init__(self, path: Path, group: Any, session: SegmentationSession) -> None:
        self.path = Path(path)
        self._group = group
        self.session = session
        session.store = self
        self.chunks: tuple[int, int, int] = tuple(group.attrs["chunks"])  # type: ignore[assignment]
        self._flush_lock = threading.Lock()
        self._meta_lock = threading.Lock()
        self._buffer_lock = threading.Lock()
        self._history: list[dict[str, Any]] = []
        self._predictions: deque[tuple[Prediction, np.ndarray]] = deque()
        self._flushed_revision = -1
        self._num_classes = int(group.attrs["num_classes"])
        self._labeled_chunks: set[tuple[int, int, int]] = set()
        self._weights_class_weight: np.ndarray | None = None
        self._weights_refreshed = time.monotonic()
        self._smoothed_loss: float | None = None
        self._last_checkpoint = time.monotonic()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._interval = 0.25
        #: Last exception of the autosave thread (it keeps running; the next flush retries).
        self.last_error: BaseException | None = None
        #: Why the checkpoint could not be loaded on open (``None`` when it was, or there was none).
        self.resume_error: str | None = None

    # ================================================================ create / open
    @classmethod
    def create(cls, path: str | Path, session: SegmentationSession, *, image: np.ndarray | None = None,
               image_ref: dict[str, Any] | None = None, class_names: Sequence[str] | None = None,
               colors: Sequence[Sequence[float]] | None = None, overwrite: bool = False,
               chunks: Sequence[int] | None = None, image_name: str | None = None) -> SessionStore:
        """Write a new store for ``session`` (labels, source and weights as they are now).

        Parameters
        ----------
        path : str or Path
            Directory to create (``.zarr`` by convention).
        session : SegmentationSession
            The session to save; bound to the store (``session.store``).
        image : np.ndarray, optional
            Raw image to copy into the store (default ``session.image``); ignored when ``image_ref`` is given.
        image_ref : dict, optional
            ``{"path": file, "key": "image", "level": None}``: the image stays in that file
            (read back with :func:`napari_sparseseg.io.read_volume`).
        class_names, colors : sequence, optional
            Names (``K``) and RGBA colours (``K``, values in [0, 1]) of the foreground classes.
        overwrite : bool
            Replace an existing store at ``path`` (anything else there is refused).
        chunks : sequence of int, optional
            Chunk shape ``(z, y, x)`` (default :func:`default_chunks`).
        image_name : str, optional
            What the user calls the image (its napari layer or file name): the reopened layers are named after it.

        Raises
        ------
        ValueError
            If ``path`` exists (and not ``overwrite``, or it is not a session store), no image is
            available, or class names/colours do not match the number of classes.
        """
        import zarr

        path = Path(path)
        vol = session.volume
        k = vol.num_classes
        if path.exists():
            if not overwrite:
                raise ValueError(f"{path} already exists; pass overwrite=True to replace it")
            if not is_session_store(path):
                raise ValueError(f"{path} exists and is not a napari-sparseseg session store; refusing to replace it")
            shutil.rmtree(path)
        if image_ref is None:
            image = session.image if image is None else image
            if image is None:
                raise ValueError("no image to store: pass image= or image_ref=")
        else:
            image_ref = {"path": str(Path(image_ref["path"]).resolve()), "key": image_ref.get("key", "image"),
                         "level": image_ref.get("level")}
        names = [str(n) for n in class_names] if class_names is not None else [f"class {i + 1}" for i in range(k)]
        if len(names) != k:
            raise ValueError(f"got {len(names)} class names for {k} foreground classes")
        if colors is not None and len(colors) != k:
            raise ValueError(f"got {len(colors)} colours for {k} foreground classes")
        chunks = default_chunks(vol.shape) if chunks is None else tuple(int(c) for c in chunks)
        if len(chunks) != 3 or min(chunks) < 1:
            raise ValueError(f"chunks must be three positive integers (z, y, x), got {chunks}")

        # Built in a hidden sibling folder and renamed into place once complete: a store killed while being
        # created never appears under ``path``.
        building = path.parent / f".{path.name}.creating-{os.getpid()}"
        if building.exists():
            shutil.rmtree(building)
        root = zarr.open_group(str(building), mode="w", zarr_format=3)
        shape = vol.shape
        channel_axis = session.channel_axis if image_ref is not None else None
        if image_ref is None:
            channel_axis = _copy_image(root, image, session.channel_axis, shape, chunks)
        root.create_array("labels", shape=shape, chunks=chunks, dtype=np.uint8, fill_value=0)
        root.create_array("source", shape=shape, chunks=chunks, dtype=np.uint8, fill_value=0)
        root.create_array("weights", shape=shape, chunks=chunks, dtype=np.float32, fill_value=0.0)
        root.create_array("prediction", shape=shape, chunks=chunks, dtype=np.uint8, fill_value=0)
        root.create_array("probabilities", shape=(k + 1,) + shape, chunks=(1,) + chunks, dtype=np.float16,
                          fill_value=0.0)
        root.create_array("uncertainty", shape=shape, chunks=chunks, dtype=np.float16, fill_value=0.0)
        (building / "checkpoints").mkdir(exist_ok=True)
        (building / "history.jsonl").touch()
        attrs = {"config": session.config.to_dict(), "spacing": list(vol.spacing), "num_classes": k,
                 "class_names": names, "colors": [list(map(float, c)) for c in colors] if colors is not None else None,
                 "image_ref": image_ref, "channel_axis": channel_axis, "chunks": list(chunks),
                 "image_name": None if image_name is None else str(image_name), "created": time.time()}
        root.attrs.update(attrs)
        root.attrs.update({STORE_KEY: {"version": STORE_VERSION}})
        try:
            builder = cls(building, root, session)
            builder.flush()
            os.rename(building, path)
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
        store = cls(path, zarr.open_group(str(path), mode="r+", zarr_format=3), session)
        store._flushed_revision, store._labeled_chunks = builder._flushed_revision, builder._labeled_chunks
        store_lock.acquire(path)
        return store

    @classmethod
    def open(cls, path: str | Path, *, config: SessionConfig | None = None,
             device: str | None = None) -> tuple[SessionStore, SegmentationSession]:
        """Rebuild the session of a store: image, labels and source, model from ``checkpoints/latest.pt``.

        Parameters
        ----------
        path : str or Path
            The store directory.
        config : SessionConfig, optional
            Settings to use instead of the stored ones (the model shape must match the checkpoint).
        device : str, optional
            Override the device (``"cpu"``, ``"cuda"``, ...).

        Returns
        -------
        tuple
            ``(store, session)``; training resumes at the checkpoint's step. If the checkpoint
            cannot be loaded, ``store.resume_error`` says why and the model starts fresh.

        Raises
        ------
        ValueError
            If ``path`` is not a session store, was written by a newer version, or its image
            reference cannot be read.
        """
        path = Path(path)
        if not path.exists():
            raise ValueError(f"{path} does not exist: choose an existing session store folder (*.zarr)")
        if not path.is_dir() or not is_session_store(path):
            raise ValueError(f"{path} is not a napari-sparseseg session store (no {STORE_KEY!r} in its zarr.json); "
                             "choose the store folder, or another path for a new session")
        held = store_lock.holder(path)
        reopening = held is not None and held.get("pid") == os.getpid()  # this process has it open already
        store_lock.acquire(path)  # before anything is written: another process may be writing it
        try:
            return cls._open_locked(path, config, device)
        except Exception as exc:
            if not reopening:
                store_lock.release(path)  # a store that does not open stays free for the next attempt
            if isinstance(exc, (ValueError, OSError, MemoryError)):
                raise
            raise ValueError(f"{path}: the session store is damaged ({type(exc).__name__}: {exc}); restore it "
                             "from a backup, or start a new session from the image") from exc

    @classmethod
    def _open_locked(cls, path: Path, config: SessionConfig | None, device: str | None
                     ) -> tuple[SessionStore, SegmentationSession]:
        """:meth:`open` once the store's lock is held."""
        import zarr

        from .core.checkpoint import load_into, read_model
        from .core.session import SegmentationSession
        from .io import read_volume

        _check_metadata(path)
        _remove_partial_files(path)
        root = zarr.open_group(str(path), mode="r+", zarr_format=3)
        attrs = dict(root.attrs)
        version = int(attrs[STORE_KEY].get("version", 0))
        if version > STORE_VERSION:
            raise ValueError(f"{path}: session store version {version} is newer than this napari-sparseseg "
                             f"understands ({STORE_VERSION}); upgrade the package")
        cfg = config or SessionConfig.from_dict(attrs["config"])
        if device is not None:
            cfg = replace(cfg, device=device)
        ref = attrs.get("image_ref")
        channel_axis = attrs.get("channel_axis")
        if ref is None:
            image = root["image"]
        else:
            image = read_volume(ref["path"], key=ref.get("key", "image"), level=ref.get("level") or 0, lazy=True).data
        if image.nbytes <= EAGER_IMAGE_BYTES:
            image = np.asarray(image[...])  # small enough: in memory, normalised exactly
        session = SegmentationSession(image, num_classes=int(attrs["num_classes"]), spacing=attrs["spacing"],
                                      channel_axis=channel_axis, config=cfg)
        labeled = restore_labels(session, root["labels"], root["source"], tuple(attrs["chunks"]))
        store = cls(path, root, session)
        store._flushed_revision = session.volume.revision
        store._labeled_chunks = labeled
        latest = path / "checkpoints" / "latest.pt"
        if latest.exists():
            try:
                load_into(session.trainer, read_model(latest))
            except (ValueError, KeyError, RuntimeError) as exc:
                store.resume_error = f"checkpoint not loaded, training starts afresh: {exc}"
                log.warning("%s: %s", path, store.resume_error)
        index = store.checkpoint_index()
        if "best" in index:
            store._smoothed_loss = index.get("latest", index["best"]).get("loss")
        return store, session

    # ================================================================ reading
    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self._group.attrs)

    @property
    def class_names(self) -> list[str]:
        return list(self._group.attrs.get("class_names") or [])

    @property
    def colors(self) -> list[list[float]] | None:
        return self._group.attrs.get("colors")

    def array(self, name: str) -> Any:
        """The zarr array ``name`` (``labels``, ``prediction``, ...)."""
        return self._group[name]

    def read(self, name: str) -> np.ndarray:
        """A whole array as NumPy."""
        return np.asarray(self._group[name][...])

    def has_prediction(self) -> bool:
        return "step" in self._group["prediction"].attrs

    def history(self) -> list[dict[str, Any]]:
        """Recorded training steps (what is on disk plus what is still buffered)."""
        out = read_history(self.path)
        with self._buffer_lock:
            return out + list(self._history)

    def checkpoint_index(self) -> dict[str, Any]:
        """``{"latest": {...}, "best": {...}}`` with step, loss, time of each checkpoint (``{}`` if none)."""
        try:
            return json.loads((self.path / "checkpoints" / "index.json").read_text())
        except (OSError, ValueError):
            return {}

    def prepend_history(self, other: str | Path) -> None:
        """Put the ``history.jsonl`` of store ``other`` before this store's rows (a session saved elsewhere)."""
        older = read_history(other)
        if not older:
            return
        with self._flush_lock:
            text = "".join(json.dumps(r) + "\n" for r in older + read_history(self.path))
            _atomic_write_text(self.path / "history.jsonl", text)

    def set_classes(self, class_names: Sequence[str], colors: Sequence[Sequence[float]] | None = None) -> None:
        """Update the class names (and colours) stored in the root attributes."""
        with self._meta_lock:
            self._group.attrs.update({"class_names": [str(n) for n in class_names],
                                      "colors": [list(map(float, c)) for c in colors] if colors is not None
                                      else self._group.attrs.get("colors")})

    # ================================================================ recording
    def record_step(self, event: TrainStep) -> None:
        """Buffer one training step for ``history.jsonl`` (written by the next flush)."""
        row = {"step": event.step, "loss": event.loss, "label_loss": event.label_loss, "lr": event.learning_rate,
               "elapsed": event.elapsed, "labeled_error_rate": event.labeled_error_rate,
               "revision": event.revision, "time": time.time()}
        fit = event.tracked_loss  # the label terms: the smoothness and hardest-voxel terms ramp in and out
        with self._buffer_lock:
            self._history.append(row)
            if np.isfinite(fit):
                s, a = self._smoothed_loss, LOSS_SMOOTHING
                self._smoothed_loss = fit if s is None else (1 - a) * s + a * fit

    def on_step(self, trainer: Trainer, event: TrainStep, every: float = CHECKPOINT_SECONDS) -> bool:
        """Record ``event`` and write a checkpoint if ``every`` seconds passed since the last one.

        Call it from the training thread (:meth:`SegmentationSession.interactive` does), so the
        weights are never saved while a step changes them. Returns True if a checkpoint was written.
        """
        self.record_step(event)
        if time.monotonic() - self._last_checkpoint >= every:
            self.save_checkpoint(trainer)
            return True
        return False

    def record_prediction(self, prediction: Prediction, merged: np.ndarray | None = None) -> None:
        """Queue a prediction for the store (written by the autosave thread, or now if autosave is off).

        Parameters
        ----------
        prediction : Prediction
            Network output of ``prediction.box``.
        merged : np.ndarray, optional
            uint8 ``(z, y, x)`` of the box, mask encoding with the user labels merged in
            (default: ``session.merge(prediction)`` now).
        """
        if merged is None:
            merged = self.session.merge(prediction)
        with self._buffer_lock:
            self._predictions.append((prediction, merged))
        if self._thread is None:
            self.flush()

    def save_checkpoint(self, trainer: Trainer | None = None, loss: float | None = None) -> Path | None:
        """Atomically write ``checkpoints/latest.pt``, and ``best.pt`` when ``loss`` is the lowest so far.

        Weights that are not finite are never written: the previous checkpoints stay, and ``None`` is returned.

        ``loss`` defaults to the smoothed label loss (``TrainStep.label_loss``) of the recorded steps. Call it from the
        training thread, or when no training runs.
        """
        from .core.checkpoint import save_model

        trainer = trainer or self.session.trainer
        if loss is None:
            loss = self._smoothed_loss
        folder = self.path / "checkpoints"
        try:
            latest = save_model(trainer, folder / "latest.pt")
        except FloatingPointError as exc:  # never overwrite good checkpoints with NaN weights
            log.warning("session store %s: %s; the previous checkpoints are kept", self.path, exc)
            self.last_error = exc
            return None
        entry = {"step": trainer.step, "elapsed": trainer.elapsed, "loss": loss, "time": time.time()}
        with self._meta_lock:
            index = self.checkpoint_index()
            index["latest"] = entry
            best = index.get("best")
            if loss is not None and (best is None or best.get("loss") is None or loss <= best["loss"]):
                fd, tmp = tempfile.mkstemp(dir=folder, prefix="best.pt", suffix=".tmp")
                os.close(fd)
                try:
                    shutil.copyfile(latest, tmp)
                    os.replace(tmp, folder / "best.pt")
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
                index["best"] = entry
            _atomic_write_text(folder / "index.json", json.dumps(index, indent=1))
        self._last_checkpoint = time.monotonic()
        return latest

    # ================================================================ flushing
    def flush(self) -> Box:
        """Write what changed since the last flush: label/source/weight chunks, history, predictions.

        Returns the (chunk-aligned) box of labels written.
        """
        with self._flush_lock:
            box = self._flush_labels()
            self._flush_history()
            self._refresh_weights()
            while True:
                with self._buffer_lock:
                    item = self._predictions.popleft() if self._predictions else None
                if item is None:
                    break
                self._write_prediction(*item)
                box = box.union(self._flush_labels())  # strokes made meanwhile go first
            return box

    def _flush_labels(self) -> Box:
        vol = self.session.volume
        revision = vol.revision
        if revision == self._flushed_revision:
            return Box((0, 0, 0), (0, 0, 0))
        box = align_to_chunks(vol.changes_since(self._flushed_revision), self.chunks, vol.shape)
        if vol.num_classes != self._num_classes:
            self._set_num_classes(vol.num_classes)
        tc = self.session.config.train
        cw = vol.class_weights(tc.class_balance_power)
        first = self._flushed_revision < 0
        for b in _chunk_boxes(box, self.chunks, vol.shape):  # one chunk at a time: memory stays bounded
            labels, source = vol.snapshot(b)
            labeled = bool(labels.any())
            if first and not labeled:
                continue  # a new store reads 0 where nothing was written
            self._group["labels"][b.slices] = labels
            self._group["source"][b.slices] = source
            self._group["weights"][b.slices] = _weights(labels, source, cw, tc.correction_weight)
            if labeled:
                self._labeled_chunks.add(b.start)
            else:
                self._labeled_chunks.discard(b.start)
        self._flushed_revision = revision
        return box

    def _refresh_weights(self) -> None:
        """Rewrite the weights of labeled chunks when the class balance moved (rate-limited)."""
        vol = self.session.volume
        tc = self.session.config.train
        cw = vol.class_weights(tc.class_balance_power)
        old = self._weights_class_weight
        self._weights_class_weight = cw
        if old is None or (old.shape == cw.shape and np.allclose(old, cw, rtol=1e-2)):
            return
        if time.monotonic() - self._weights_refreshed < WEIGHTS_REFRESH_SECONDS:
            self._weights_class_weight = old  # not yet: compare against what is on disk next time
            return
        self._weights_refreshed = time.monotonic()
        for start in sorted(self._labeled_chunks):
            b = Box(start, tuple(s + c for s, c in zip(start, self.chunks))).clip(vol.shape)  # type: ignore[arg-type]
            labels, source = vol.snapshot(b)
            self._group["weights"][b.slices] = _weights(labels, source, cw, tc.correction_weight)

    def _flush_history(self) -> None:
        with self._buffer_lock:
            rows, self._history = self._history, []
        if rows:
            with open(self.path / "history.jsonl", "a") as fh:
                fh.write("".join(json.dumps(r) + "\n" for r in rows))

    def _set_num_classes(self, k: int) -> None:
        with self._meta_lock:
            probs = self._group["probabilities"]
            if probs.shape[0] != k + 1:
                probs.resize((k + 1,) + tuple(probs.shape[1:]))
            names = list(self._group.attrs.get("class_names") or [])
            names += [f"class {i + 1}" for i in range(len(names), k)]
            self._group.attrs.update({"num_classes": k, "class_names": names[:k]})
            self._num_classes = k

    def _write_prediction(self, prediction: Prediction, merged: np.ndarray) -> None:
        k = prediction.probabilities.shape[0] - 1
        if k != self._num_classes:
            self._set_num_classes(k)
        sl = prediction.box.slices
        self._group["prediction"][sl] = merged.astype(np.uint8, copy=False)
        self._group["probabilities"][(slice(None),) + sl] = prediction.probabilities.astype(np.float16)
        self._group["uncertainty"][sl] = prediction.uncertainty.astype(np.float16)
        with self._meta_lock:
            self._group["prediction"].attrs.update({"step": prediction.step, "revision": prediction.revision,
                                                    "time": time.time()})

    def copy_prediction_from(self, other: SessionStore) -> bool:
        """Take over ``other``'s stored prediction (a session saved under a new name keeps what was shown).

        Returns False, copying nothing, when ``other`` has none or its arrays have another shape.
        """
        if not other.has_prediction():
            return False
        names = ("prediction", "probabilities", "uncertainty")
        if any(self._group[n].shape != other._group[n].shape for n in names):
            return False
        for name in names:
            self._group[name][...] = other._group[name][...]
        with self._meta_lock:
            self._group["prediction"].attrs.update(dict(other._group["prediction"].attrs))
        return True

    # ================================================================ autosave thread
    def start_autosave(self, interval: float = 0.25) -> None:
        """Flush every ``interval`` seconds in a daemon thread (idempotent)."""
        if interval <= 0:
            raise ValueError(f"autosave interval must be > 0 seconds, got {interval}")
        self._interval = float(interval)
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._autosave_loop, name="sparseseg-autosave", daemon=True)
        self._thread.start()
        _flush_before_exit(self)

    def stop_autosave(self, flush: bool = True) -> None:
        """Stop the autosave thread (after a last flush when ``flush``)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join()
        if flush:
            self.flush()

    @property
    def autosaving(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _autosave_loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.flush()
                self.last_error = None
            except Exception as exc:  # noqa: BLE001 (a full disk must not kill the thread; the next flush retries)
                if self.last_error is None:
                    log.warning("session store %s: autosave failed: %s", self.path, exc)
                self.last_error = exc

    def close(self, checkpoint: bool = False) -> None:
        """Stop autosaving, flush, optionally write a last checkpoint (only when no training runs), unlock."""
        try:
            self.stop_autosave(flush=True)
            if checkpoint:
                self.save_checkpoint()
        finally:
            store_lock.release(self.path)


# ==================================================================== helpers
def _flush_before_exit(store: SessionStore) -> None:
    """Have a script that exits without closing ``store`` still flush it, while zarr's I/O threads still run.

    Interpreter shutdown stops the thread pools (zarr writes through them) before ``atexit`` functions run, so a
    flush from ``atexit`` failed ("cannot schedule new futures after interpreter shutdown"). Hooks registered with
    ``threading._register_atexit`` run first, newest first, so this one runs before the pools stop. Where that
    private hook is missing, ``atexit`` is the fallback.
    """
    import weakref

    ref = weakref.ref(store)

    def flush() -> None:
        live = ref()
        if live is not None and live.autosaving:
            try:
                live.stop_autosave(flush=True)
            except Exception as exc:  # noqa: BLE001 (at exit: report, never raise)
                log.warning("session store %s: last flush at exit failed: %s", live.path, exc)

    register = getattr(threading, "_register_atexit", None)
    try:
        if register is None:
            raise RuntimeError
        register(flush)
    except RuntimeError:  # no hook, or the interpreter is already shutting down
        import atexit

        atexit.register(flush)


def restore_labels(session: SegmentationSession, labels: Any, source: Any,
                   chunks: Sequence[int]) -> set[tuple[int, int, int]]:
    """Put stored labels and their sources back into ``session.volume``, one chunk at a time.

    Parameters
    ----------
    labels, source : array-like
        uint8 ``(z, y, x)`` arrays (zarr or NumPy) in annotation encoding / :class:`Source`.
    chunks : sequence of int
        Read granularity ``(z, y, x)``; chunks without labels are skipped.

    Returns
    -------
    set of tuple
        Start corners of the chunks that hold labels. Corrections keep their source (and weight); a
        labeled voxel without a source (a kill between the two chunk writes) counts as painted.
    """
    vol = session.volume
    if tuple(labels.shape) != vol.shape or tuple(source.shape) != vol.shape:
        raise ValueError(f"stored labels {labels.shape} / source {source.shape} do not match the image {vol.shape}")
    labeled = set()
    for b in _chunk_boxes(Box.full(vol.shape), chunks, vol.shape):
        lab = np.asarray(labels[b.slices])
        if not lab.any():
            continue
        labeled.add(b.start)
        vol.set_labels(b.slices, lab, Source.PAINTED)
        corrected = np.nonzero((np.asarray(source[b.slices]) == Source.CORRECTED) & (lab > UNLABELED))
        if corrected[0].size:
            world = tuple(c + o for c, o in zip(corrected, b.start))
            vol.set_labels(world, lab[corrected], Source.CORRECTED)
    return labeled


def _copy_image(root: Any, image: Any, channel_axis: int | None, shape: tuple[int, int, int],
                chunks: tuple[int, int, int]) -> int | None:
    """Write the raw image into ``root["image"]`` channels first, one z slab at a time (lazy images stay lazy).

    Returns the stored channel axis (0 for 4D, ``None`` for 3D).
    """
    from .core.lazy import ChannelsFirst

    raw = ChannelsFirst(image, channel_axis)
    if raw.shape[1:] != shape:
        raise ValueError(f"image of shape {tuple(image.shape)} does not match the session volume {shape}")
    multi = raw.shape[0] > 1
    arr = root.create_array("image", shape=raw.shape if multi else shape, chunks=((1,) + chunks) if multi else chunks,
                            dtype=raw.dtype)
    for z0 in range(0, shape[0], chunks[0]):
        z = slice(z0, min(z0 + chunks[0], shape[0]))
        slab = raw[(slice(None), z, slice(None), slice(None))]
        arr[(slice(None), z) if multi else (z,)] = slab if multi else slab[0]
    return 0 if multi else None


def read_history(path: str | Path) -> list[dict[str, Any]]:
    """Rows of ``history.jsonl``; a line cut short by a crash is skipped."""
    rows = []
    try:
        text = (Path(path) / "history.jsonl").read_text()
    except OSError:
        return rows
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def _check_metadata(path: Path) -> None:
    """Refuse a store whose zarr metadata is not readable JSON, naming the file (zarr's own error does not).

    Raises
    ------
    ValueError
        Naming the first ``zarr.json`` that cannot be read or parsed.
    """
    for meta in sorted(path.rglob("zarr.json")):
        try:
            json.loads(meta.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{meta}: unreadable zarr metadata ({exc}): the session store is damaged; restore it "
                             "from a backup, or start a new session from the image") from exc


def _remove_partial_files(path: Path) -> None:
    """Delete what a killed writer left: zarr's ``*.partial``, checkpoint ``*.tmp``, a cut last history line."""
    history = path / "history.jsonl"
    try:
        data = history.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(history, "r+b") as fh:
                fh.truncate(data.rfind(b"\n") + 1)
    except OSError:
        pass
    for pattern in ("**/*.partial", "checkpoints/*.tmp", "*.tmp"):
        for p in path.glob(pattern):
            try:
                p.unlink()
            except OSError:
                pass
