"""The session store: one zarr (v3) directory that holds everything of a session.

:class:`SessionStore` creates a store for a session or opens one back into a
session, and reads it. The layout on disk is described in
:mod:`napari_sparseseg.store_files` (and ``docs/session-store.md``); the
arrays written for a new store and read back on open are
:mod:`napari_sparseseg.store_arrays`; writing the edits, training steps,
predictions and checkpoints, and the autosave thread, are its base class
:class:`napari_sparseseg.store_writer.StoreWriter`.

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
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import store_lock
from .core.annotation import _weights
from .core.config import SessionConfig
from .store_arrays import (
    build_store_folder,
    build_volume_folder,
    read_stored_session,
    repair_derived_chunks,
    restore_labels,
)
from .store_files import (
    MAX_CHUNKS,
    STORE_KEY,
    STORE_VERSION,
    VOLUME_ARRAYS,
    align_to_chunks,
    atomic_write_text,
    check_metadata,
    default_chunks,
    is_session_store,
    read_history,
    remove_partial_files,
    volume_folders,
)
from .store_writer import CHECKPOINT_SECONDS, LOSS_SMOOTHING, WEIGHTS_REFRESH_SECONDS, StoreWriter

if TYPE_CHECKING:
    from .core.session import OtherVolume, SegmentationSession

__all__ = ["CHECKPOINT_SECONDS", "EAGER_IMAGE_BYTES", "LOSS_SMOOTHING", "MAX_CHUNKS", "STORE_KEY", "STORE_VERSION",
           "VOLUME_ARRAYS", "WEIGHTS_REFRESH_SECONDS", "SessionStore", "align_to_chunks", "default_chunks",
           "is_session_store", "read_history", "restore_labels"]

log = logging.getLogger(__name__)

#: Stored images up to this size are read into memory on open; larger ones stay lazy (read per patch).
EAGER_IMAGE_BYTES = 2 * 1024**3


class SessionStore(StoreWriter):
    """One session's persistent state in a zarr v3 directory (see :mod:`napari_sparseseg.store_files` for the layout).

    Build one with :meth:`create` or :meth:`open`, never directly. A store is
    bound to one :class:`~.session.SegmentationSession` (``store.session``;
    ``session.store`` points back).

    Thread safety: :meth:`flush` (the autosave thread), :meth:`record_step`,
    :meth:`record_prediction` (any thread) and :meth:`save_checkpoint` (the
    training thread) may run concurrently; metadata updates are serialised.
    """

    def __init__(self, path: Path, group: Any, session: SegmentationSession, *, bind: bool = True) -> None:
        super().__init__(path, group, session)
        if bind:
            session.store = self
        #: Why the checkpoint could not be loaded on open (``None`` when it was, or there was none).
        self.resume_error: str | None = None

    # ================================================================ create / open
    @classmethod
    def create(cls, path: str | Path, session: SegmentationSession, *, image: np.ndarray | None = None,
               image_ref: dict[str, Any] | None = None, class_names: Sequence[str] | None = None,
               colors: Sequence[Sequence[float]] | None = None, overwrite: bool = False,
               chunks: Sequence[int] | None = None, image_name: str | None = None,
               origin: Sequence[float] | None = None, affine: Any = None) -> SessionStore:
        """Write a new store for ``session`` (labels, source and weights as they are now; its other volumes too).

        Parameters
        ----------
        path : str or Path
            Directory to create (``.sparseseg`` by convention; ``.zarr`` is read too).
        session : SegmentationSession
            The session to save; bound to the store (``session.store``) once it is written. Its previous store, if
            any, hands over to it (:meth:`~.store_writer.StoreWriter.hand_over`: a step or prediction still given to
            the previous one is recorded here); its history stays there (:meth:`prepend_history` brings it).
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
        origin, affine : optional
            Where the image lies: the ``(z, y, x)`` position of its first voxel (its layer's ``translate``) and the
            4x4 NIfTI affine of the file it was read from; the reopened layers lie there, and a NIfTI mask saved
            from them overlays the scan.

        Raises
        ------
        ValueError
            If ``path`` exists (and not ``overwrite``, or it is not a session store), no image is
            available, or class names/colours do not match the number of classes.
        """
        import zarr

        path = Path(path)
        if path.exists():
            if not overwrite:
                raise ValueError(f"{path} already exists; pass overwrite=True to replace it")
            if not is_session_store(path):
                raise ValueError(f"{path} exists and is not a napari-sparseseg session store; refusing to replace it")
            store_lock.check_free(path)  # another process's session, autosaving into it: never deleted
            shutil.rmtree(path)
        previous = session.store
        building, root = build_store_folder(path, session, image=image, image_ref=image_ref, class_names=class_names,
                                            colors=colors, chunks=chunks, image_name=image_name, origin=origin,
                                            affine=affine)
        try:
            builder = cls(building, root, session, bind=False)  # the session records into ``previous`` meanwhile
            builder.flush()
            os.rename(building, path)
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
        store = cls(path, zarr.open_group(str(path), mode="r+", zarr_format=3), session, bind=False)
        store._flushed_revision, store._labeled_chunks = builder._flushed_revision, builder._labeled_chunks
        for mine, built in zip(store.others, builder.others):
            mine.flushed_revision = built.flushed_revision
        store_lock.acquire(path)
        session.store = store  # bound only once complete and locked: until now it recorded into ``previous``
        if previous is not None:
            previous.hand_over(store)  # a step the training thread began with it is recorded here
        return store

    @classmethod
    def open(cls, path: str | Path, *, config: SessionConfig | None = None,
             device: str | None = None) -> tuple[SessionStore, SegmentationSession]:
        """Rebuild the session of a store: image, labels and source (of its other volumes too), model from
        ``checkpoints/latest.pt``.

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
            raise ValueError(f"{path} does not exist: choose an existing session store folder (*.sparseseg)")
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

        check_metadata(path)
        remove_partial_files(path)
        root = zarr.open_group(str(path), mode="r+", zarr_format=3)
        session, labeled = read_stored_session(path, root, config=config, device=device,
                                               eager_image_bytes=EAGER_IMAGE_BYTES)
        store = cls(path, root, session)
        store._flushed_revision = session.volume.revision
        store._labeled_chunks = labeled
        for other in store.others:
            other.flushed_revision = other.volume.revision  # its labels were just read from the store
        repaired = store.repair_derived()
        if repaired:
            log.info("%s: %d source or weight chunks written by a flush cut short were repaired", path, repaired)
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

    def repair_derived(self) -> int:
        """Make the stored source and weights agree with the labels of every volume (see
        :func:`~.store_arrays.repair_derived_chunks`; :meth:`open` calls it); returns the number of chunks
        rewritten."""
        vol, tc = self.session.volume, self.session.config.train
        cw = vol.class_weights(tc.class_balance_power)
        with self._flush_lock:
            repaired = repair_derived_chunks(vol, self._group, self.chunks,
                                             lambda labels, source: _weights(labels, source, cw, tc.correction_weight))
            self._weights_class_weight = cw  # what is on disk now
            for other in self.others:
                repaired += repair_derived_chunks(other.volume, other.group, other.chunks)
        return repaired

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
        """Recorded training steps (what is on disk plus what is still buffered, read together: a flush moving rows
        between them meanwhile had hidden them)."""
        with self._buffer_lock:
            return read_history(self.path) + list(self._history)

    def prepend_history(self, other: str | Path) -> None:
        """Put the ``history.jsonl`` of store ``other`` before this store's rows (a session saved elsewhere)."""
        older = read_history(other)
        if not older:
            return
        with self._flush_lock:
            text = "".join(json.dumps(r) + "\n" for r in older + read_history(self.path))
            atomic_write_text(self.path / "history.jsonl", text)

    def set_classes(self, class_names: Sequence[str], colors: Sequence[Sequence[float]] | None = None) -> None:
        """Update the class names (and colours) stored in the root attributes."""
        with self._meta_lock:
            self._group.attrs.update({"class_names": [str(n) for n in class_names],
                                      "colors": [list(map(float, c)) for c in colors] if colors is not None
                                      else self._group.attrs.get("colors")})

    def record_config(self, config: SessionConfig) -> None:
        """Keep the session's settings changed while it runs (``session.update_training``): a reopened session
        trains, and shows, with the latest."""
        with self._meta_lock:
            self._group.attrs.update({"config": config.to_dict()})

    def add_volume(self, other: OtherVolume) -> None:
        """Keep another volume the session now learns from in ``volumes/<n>`` (its labels from the next flush on;
        ``session.add_training_volume`` calls it)."""
        with self._flush_lock:
            folders = volume_folders(self.path)
            folder = build_volume_folder(self.path, int(folders[-1].name) + 1 if folders else 1, other)
            try:
                writer = self._writer(folder, other)
                with self._meta_lock:
                    self._group.attrs.update({STORE_KEY: {"version": STORE_VERSION}})  # older readers refuse it
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            self.others.append(writer)

    def forget_volume(self, other: OtherVolume) -> None:
        """Remove the folder of ``other`` again (the session could not train on it after all)."""
        with self._flush_lock:
            writer = next((w for w in self.others if w.volume is other.volume), None)
            if writer is not None:
                self.others.remove(writer)
                shutil.rmtree(writer.folder, ignore_errors=True)

    def copy_prediction_from(self, other: SessionStore) -> bool:
        """Take over ``other``'s stored predictions (a session saved under a new name keeps what was shown).

        Returns False, copying nothing of the session's own volume, when ``other`` has none there, its arrays
        have another shape, or this store already holds one (recorded after the hand-over: newer). The other
        volumes' predictions are copied where this store has none.
        """
        with self._meta_lock:
            for mine, theirs in zip(self.others, other.others):
                if (mine.volume is theirs.volume and "step" in theirs.group["prediction"].attrs
                        and "step" not in mine.group["prediction"].attrs):
                    mine.group["prediction"][...] = theirs.group["prediction"][...]
                    mine.group["prediction"].attrs.update(dict(theirs.group["prediction"].attrs))
        if not other.has_prediction() or self.has_prediction():
            return False
        names = ("prediction", "probabilities", "uncertainty")
        if any(self._group[n].shape != other._group[n].shape for n in names):
            return False
        for name in names:
            self._group[name][...] = other._group[name][...]
        with self._meta_lock:
            self._group["prediction"].attrs.update(dict(other._group["prediction"].attrs))
        return True

    def close(self, checkpoint: bool = False) -> None:
        """Stop autosaving, flush, optionally write a last checkpoint (only when no training runs), unlock. A flush
        that fails still leaves the checkpoint written; its error is raised after."""
        try:
            try:
                self.stop_autosave(flush=True)
            finally:
                if checkpoint:
                    self.save_checkpoint()
        finally:
            store_lock.release(self.path)

