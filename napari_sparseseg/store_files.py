"""The files of a session store: its layout, chunk grid, files written whole, and the checks before opening one.

Layout (see ``docs/session-store.md`` for the full description)::

    STORE.zarr/
      zarr.json            root group; attrs: napari_sparseseg_session {version}, config, spacing,
                           num_classes, class_names, colors, image_ref, channel_axis, chunks, origin, affine
      image/               raw image (c, z, y, x) or (z, y, x), only when image_ref is null
      labels/              uint8 (z, y, x), annotation encoding (0 = unlabeled, 1 = background, k+1 = class k)
      source/              uint8 (z, y, x), Source enum (0 none, 1 painted, 2 corrected)
      weights/             float32 (z, y, x), w(y) the trainer uses (derived from labels + source)
      prediction/          uint8 (z, y, x), mask encoding (0 = background), user labels merged in
      probabilities/       float16 (K+1, z, y, x) softmax
      uncertainty/         float16 (z, y, x) normalised entropy in [0, 1]
      checkpoints/latest.pt, best.pt, index.json
      history.jsonl        one JSON line per training step
      volumes/<n>/         n = 1, 2, ...: another volume the net learns from, a zarr group of its own
                           (image/ unless image_ref, labels/, source/, prediction/; attrs spacing,
                           channel_axis, image_ref, image_name, chunks, origin, affine)

Everything here works on paths; a session written into a store's arrays and
read back is :mod:`napari_sparseseg.store_arrays`, the live store that keeps
them in step with a session :class:`napari_sparseseg.store.SessionStore`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .core.box import Box
from .core.file_mode import as_new_file

#: Root attribute that marks a directory as a session store.
STORE_KEY = "napari_sparseseg_session"
#: Layout version written by this code; stores with a higher version are refused. 2: other volumes (``volumes/``).
STORE_VERSION = 2
#: Largest chunk (z, y, x) of the volume arrays.
MAX_CHUNKS: tuple[int, int, int] = (32, 128, 128)

VOLUME_ARRAYS = ("labels", "source", "weights", "prediction", "uncertainty")


def is_session_store(path: str | Path) -> bool:
    """True if ``path`` is a directory whose root ``zarr.json`` carries the session marker (never raises)."""
    try:
        meta = json.loads((Path(path) / "zarr.json").read_text())
        attributes = meta.get("attributes", {})
        return isinstance(attributes, dict) and STORE_KEY in attributes
    except (OSError, ValueError, AttributeError):
        return False


def volume_folders(path: str | Path) -> list[Path]:
    """The folders ``volumes/<n>`` of a store's other volumes, in the order they were added (hidden ones, being
    written, left out)."""
    folder = Path(path) / "volumes"
    if not folder.is_dir():
        return []
    named = (p for p in folder.iterdir() if p.is_dir() and re.fullmatch(r"[1-9][0-9]*", p.name))
    return sorted(named, key=lambda p: int(p.name))


def check_stored_volume(group: Any, shape: Sequence[int], names: Sequence[str], where: str | Path) -> tuple[int, ...]:
    """Refuse a stored volume whose arrays or chunk grid a session cannot use; returns its chunk grid.

    Parameters
    ----------
    group : zarr.Group
        The store's root or one of its ``volumes/<n>`` groups.
    shape : sequence of int
        The volume's ``(z, y, x)``.
    names : sequence of str
        Arrays that must be uint8 of that shape (``labels``, ``source``, ``prediction``).
    where : str or Path
        Named in the error.

    Raises
    ------
    ValueError
        For a ``chunks`` attribute that is not three positive integers, or an array of another shape or dtype.
    """
    chunks = group.attrs.get("chunks")
    if (not isinstance(chunks, (list, tuple)) or len(chunks) != 3
            or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in chunks)):
        raise ValueError(f"{where}: the chunk grid {chunks!r} is not three positive integers: the store is damaged")
    for name in names:
        array = group[name]
        if tuple(array.shape) != tuple(shape) or array.dtype != "uint8":
            raise ValueError(f"{where}: {name} is {array.dtype} {tuple(array.shape)}, not uint8 {tuple(shape)}: "
                             "the store is damaged")
    return tuple(chunks)


# ==================================================================== the chunk grid
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


def chunk_boxes(box: Box, chunks: Sequence[int], shape: Sequence[int]) -> list[Box]:
    """The chunk-grid boxes covering ``box`` (aligned first)."""
    box = align_to_chunks(box, chunks, shape)
    if box.empty:
        return []
    ranges = [range(a, b, c) for a, b, c in zip(box.start, box.stop, chunks)]
    return [Box((z, y, x), (z + chunks[0], y + chunks[1], x + chunks[2])).clip(shape)
            for z in ranges[0] for y in ranges[1] for x in ranges[2]]


# ==================================================================== files written whole or not at all
def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        as_new_file(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_copy_file(source: Path, target: Path) -> None:
    """Copy ``source`` to a temporary file beside ``target`` and rename it into place."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        as_new_file(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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


# ==================================================================== before opening
def check_metadata(path: Path) -> None:
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


def remove_partial_files(path: Path) -> None:
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
    for p in path.glob("volumes/.*.creating-*"):  # a volume whose adding was killed: it never was in the store
        shutil.rmtree(p, ignore_errors=True)


def checked_geometry(origin: Any = None, affine: Any = None) -> tuple[list[float] | None, list[list[float]] | None]:
    """``(origin, affine)`` of a stored image as JSON lists: an origin of three finite numbers (None: absent or
    all zero), a finite 4x4 affine (None: absent).

    Raises
    ------
    ValueError
        If either is given and malformed (a store's attributes are untrusted input when read back).
    """
    if origin is not None:
        values = np.asarray(origin, dtype=np.float64) if np.ndim(origin) == 1 and len(origin) == 3 else None
        if values is None or not np.all(np.isfinite(values)):
            raise ValueError(f"origin must be 3 finite numbers (z, y, x), got {origin!r}")
        origin = [float(v) for v in values] if values.any() else None
    if affine is not None:
        try:
            matrix = np.asarray(affine, dtype=np.float64)
        except (TypeError, ValueError):
            matrix = None
        if matrix is None or matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
            raise ValueError("affine must be a finite 4x4 matrix")
        affine = matrix.tolist()
    return origin, affine


def image_fingerprint(image: Any) -> str:
    """A digest of ``image`` (NumPy or lazy, any layout): its shape, its dtype and three blocks of up to 8 voxels a
    side on its diagonal, read at once even from a large lazy image. Another image in a file a store refers to
    (the same shape, other voxels) almost surely gives another digest."""
    import hashlib

    digest = hashlib.sha256(f"{tuple(int(n) for n in image.shape)} {np.dtype(image.dtype).str}".encode())
    for at in (0.25, 0.5, 0.75):
        block = tuple(slice(int(n * at), int(n * at) + 8) for n in image.shape)
        digest.update(np.ascontiguousarray(np.asarray(image[block])).tobytes())
    return digest.hexdigest()[:32]
