"""Writing what a session produces into its store: edits, training steps, predictions and checkpoints.

The labels and source are the user's work. :meth:`StoreWriter.flush` writes
the chunks an edit touched (with their weights; of the other volumes the
session learns from, their labels and source), the buffered training
history and the queued predictions; a background thread
(:meth:`~.store_autosave.Autosave.start_autosave`) flushes every ``interval`` seconds.
:meth:`StoreWriter.save_checkpoint` writes the model atomically
(``latest.pt``, and ``best.pt`` at the lowest smoothed loss).
:class:`StoreWriter` is the base of :class:`napari_sparseseg.store.SessionStore`,
which creates, opens and reads stores.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .core.annotation import _weights
from .core.box import Box
from .core.events import Prediction, TrainStep
from .store_autosave import Autosave
from .store_files import (
    align_to_chunks,
    atomic_copy_file,
    atomic_write_text,
    chunk_boxes,
    volume_folders,
)

if TYPE_CHECKING:
    from .core.annotation import AnnotatedVolume
    from .core.session import OtherVolume, SegmentationSession
    from .core.trainer import Trainer

log = logging.getLogger(__name__)

#: Seconds of training between two automatic checkpoints (:meth:`StoreWriter.on_step`).
CHECKPOINT_SECONDS = 30.0
#: Smoothing of the training loss that decides the best checkpoint (exponential moving average factor).
LOSS_SMOOTHING = 0.1
#: Least seconds between two rewrites of all labeled weight chunks after the class balance changed.
WEIGHTS_REFRESH_SECONDS = 5.0


@dataclass
class VolumeWriter:
    """Where the labels, sources and predictions of one of a session's other volumes go (``volumes/<n>``)."""

    volume: AnnotatedVolume
    group: Any
    chunks: tuple[int, int, int]
    folder: Path
    flushed_revision: int = -1


class StoreWriter(Autosave):
    """Writes a session's edits, steps, predictions and checkpoints into its store (base of ``SessionStore``).

    Parameters
    ----------
    path : Path
        The store directory.
    group : zarr.Group
        Its root group, open for writing.
    session : SegmentationSession
        The session whose edits are written.
    """

    def __init__(self, path: Path, group: Any, session: SegmentationSession) -> None:
        self.path = Path(path)
        self._group = group
        self.session = session
        self.chunks: tuple[int, int, int] = tuple(group.attrs["chunks"])  # type: ignore[assignment]
        self._flush_lock = threading.Lock()
        self._meta_lock = threading.Lock()
        self._buffer_lock = threading.Lock()
        self._history: list[dict[str, Any]] = []
        self._successor: StoreWriter | None = None  # the store that replaced this one (see hand_over)
        self._predictions: deque[tuple[Prediction, np.ndarray]] = deque()
        self._flushed_revision = -1
        self._num_classes = int(group.attrs["num_classes"])
        self._labeled_chunks: set[tuple[int, int, int]] = set()
        self._weights_class_weight: np.ndarray | None = None
        self._weights_refreshed = time.monotonic()
        self._smoothed_loss: float | None = None
        self._last_checkpoint = time.monotonic()
        Autosave.__init__(self)
        self._volume_error: Exception | None = None  # of another volume, during one flush
        folders = volume_folders(self.path)
        if len(folders) != len(session.other_volumes):
            raise ValueError(f"{self.path}: {len(folders)} stored other volumes for a session of "
                             f"{len(session.other_volumes)}")
        #: The session's other volumes, as ``session.other_volumes``.
        self.others = [self._writer(folder, other) for folder, other in zip(folders, session.other_volumes)]

    @staticmethod
    def _writer(folder: Path, other: OtherVolume) -> VolumeWriter:
        import zarr

        group = zarr.open_group(str(folder), mode="r+", zarr_format=3)
        return VolumeWriter(other.volume, group, tuple(group.attrs["chunks"]), folder)  # type: ignore[arg-type]

    # ================================================================ recording
    def record_step(self, event: TrainStep) -> None:
        """Buffer one training step for ``history.jsonl`` (written by the next flush); in the successor's buffer
        once this store was replaced (:meth:`hand_over`)."""
        row = {"step": event.step, "loss": event.loss, "label_loss": event.label_loss, "lr": event.learning_rate,
               "elapsed": event.elapsed, "labeled_error_rate": event.labeled_error_rate,
               "revision": event.revision, "time": time.time()}
        fit = event.tracked_loss  # the label terms: the smoothness and hardest-voxel terms ramp in and out
        with self._buffer_lock:
            successor = self._successor
            if successor is None:
                self._history.append(row)
                if np.isfinite(fit):
                    s, a = self._smoothed_loss, LOSS_SMOOTHING
                    self._smoothed_loss = fit if s is None else (1 - a) * s + a * fit
        if successor is not None:  # the training thread took this store just before it was replaced
            successor.record_step(event)

    def hand_over(self, successor: StoreWriter) -> None:
        """From now on, record steps and predictions into ``successor`` (a new store of the same session): a thread
        that took this store just before the switch loses nothing."""
        with self._buffer_lock:
            self._successor = successor

    def _replaced_by(self) -> StoreWriter | None:
        with self._buffer_lock:
            return self._successor

    def on_step(self, trainer: Trainer, event: TrainStep, every: float = CHECKPOINT_SECONDS) -> bool:
        """Record ``event`` and write a checkpoint if ``every`` seconds passed since the last one.

        Call it from the training thread (:meth:`SegmentationSession.interactive` does), so the
        weights are never saved while a step changes them. Returns True if a checkpoint was written.
        """
        successor = self._replaced_by()
        if successor is not None:
            return successor.on_step(trainer, event, every)
        self.record_step(event)
        if self._replaced_by() is None and time.monotonic() - self._last_checkpoint >= every:
            self.save_checkpoint(trainer)
            return True
        return False

    def checkpoint_index(self) -> dict[str, Any]:
        """``{"latest": {...}, "best": {...}}`` with step, loss, time of each checkpoint (``{}`` if none).

        The file is read as untrusted: an entry that is not a mapping with a finite (or no) loss is left out, so a
        damaged index costs only the comparison of the next checkpoint with the best one.
        """
        try:
            index = json.loads((self.path / "checkpoints" / "index.json").read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(index, dict):
            return {}
        return {key: entry for key, entry in index.items()
                if key in ("latest", "best") and isinstance(entry, dict) and _plain_loss(entry.get("loss"))}

    def save_checkpoint(self, trainer: Trainer | None = None, loss: float | None = None) -> Path | None:
        """Atomically write ``checkpoints/latest.pt``, and ``best.pt`` when ``loss`` is the lowest so far.

        Weights that are not finite, or of a net that has not trained a step, are never written: the previous
        checkpoints stay, and ``None`` is returned.

        ``loss`` defaults to the smoothed label loss (``TrainStep.label_loss``) of the recorded steps. Call it from the
        training thread, or when no training runs.
        """
        from .core.checkpoint import save_model

        trainer = trainer or self.session.trainer
        if trainer.step == 0:  # an untrained net is no model (as the window's Save model and `train --model` hold)
            return None
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
        best = self.checkpoint_index().get("best")  # only this (training) thread writes checkpoints
        is_best = loss is not None and (best is None or best.get("loss") is None or loss <= best["loss"])
        if is_best:  # the copy runs outside the lock, which the autosave thread's prediction writes take too
            atomic_copy_file(latest, folder / "best.pt")
        with self._meta_lock:
            index = self.checkpoint_index()
            index["latest"] = entry
            if is_best:
                index["best"] = entry
            atomic_write_text(folder / "index.json", json.dumps(index, indent=1))
        self._last_checkpoint = time.monotonic()
        return latest

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
            successor = self._successor
            if successor is None:
                self._predictions.append((prediction, merged))
        if successor is not None:
            return successor.record_prediction(prediction, merged)
        if self._thread is None:
            self.flush()

    # ================================================================ flushing
    def flush(self) -> Box:
        """Write what changed since the last flush: label/source/weight chunks, history, predictions.

        Returns the (chunk-aligned) box of labels written.
        """
        with self._flush_lock:
            self._volume_error = None
            box = self._flush_labels()
            for step in (self._flush_history, self._refresh_weights):
                step()
                box = box.union(self._flush_labels())  # the user's strokes made meanwhile go first
            while True:
                with self._buffer_lock:
                    item = self._predictions.popleft() if self._predictions else None
                if item is None:
                    break
                self._write_prediction(*item)
                box = box.union(self._flush_labels())  # strokes made meanwhile go first
            if self._volume_error is not None:  # after everything else was written
                raise self._volume_error
            return box

    def _flush_labels(self) -> Box:
        """Write the changed label chunks of the session's volume, then of each other volume (an error on one of
        them is kept and raised by :meth:`flush` once everything else is written)."""
        box = self._flush_own_labels()
        for other in self.others:
            try:
                self._flush_other(other)
            except Exception as exc:  # noqa: BLE001 (raised by flush, once every volume and step had its turn)
                self._volume_error = self._volume_error or exc
        return box

    def _flush_own_labels(self) -> Box:
        vol = self.session.volume
        revision = vol.revision
        if revision == self._flushed_revision:
            return Box((0, 0, 0), (0, 0, 0))
        box = align_to_chunks(vol.changes_since(self._flushed_revision), self.chunks, vol.shape)
        if vol.num_classes != self._num_classes:
            self._set_num_classes(vol.num_classes)
        tc = self.session.config.train
        cw = vol.class_weights(tc.class_balance_power)
        for b, labels, source in self._changed_chunks(vol, box, self.chunks, first=self._flushed_revision < 0):
            self._group["labels"][b.slices] = labels
            self._group["source"][b.slices] = source
            self._group["weights"][b.slices] = _weights(labels, source, cw, tc.correction_weight)
            if labels.any():
                self._labeled_chunks.add(b.start)
            else:
                self._labeled_chunks.discard(b.start)
        self._flushed_revision = revision
        return box

    @staticmethod
    def _changed_chunks(vol: AnnotatedVolume, box: Box, chunks: tuple[int, int, int], *, first: bool
                        ) -> Iterator[tuple[Box, np.ndarray, np.ndarray]]:
        """``(chunk box, labels, source)`` of each chunk of ``vol`` in ``box``, one at a time (memory stays bounded);
        on a ``first`` flush only the chunks that hold labels (a new store reads 0 where nothing was written)."""
        for b in chunk_boxes(box, chunks, vol.shape):
            labels, source = vol.snapshot(b)
            if not first or labels.any():
                yield b, labels, source

    def _flush_other(self, other: VolumeWriter) -> None:
        """Write the label and source chunks of another volume that changed since its last flush."""
        revision = other.volume.revision
        if revision == other.flushed_revision:
            return
        changed = other.volume.changes_since(other.flushed_revision)
        for b, labels, source in self._changed_chunks(other.volume, changed, other.chunks,
                                                      first=other.flushed_revision < 0):
            other.group["labels"][b.slices] = labels
            other.group["source"][b.slices] = source
        other.flushed_revision = revision

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
        with self._buffer_lock:  # rows leave the buffer only once on disk: history() never misses them in between
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
        if prediction.volume > 0:  # another volume: its class map only
            volume = self.session.other_volumes[prediction.volume - 1].volume
            group = next(w.group for w in self.others if w.volume is volume)
            group["prediction"][prediction.box.slices] = merged.astype(np.uint8, copy=False)
            with self._meta_lock:
                group["prediction"].attrs.update({"step": prediction.step, "time": time.time()})
            return
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


def _plain_loss(loss: Any) -> bool:
    """Whether a checkpoint index's loss is usable: none, or a finite number."""
    return loss is None or (isinstance(loss, (int, float)) and not isinstance(loss, bool) and math.isfinite(loss))
