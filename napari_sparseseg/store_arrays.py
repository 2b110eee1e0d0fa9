"""A session written into a new store's arrays, and a session rebuilt from a store's arrays.

:func:`build_store_folder` writes everything of a new store but the labels
(the image copied slab by slab, the empty volume arrays, the attributes, and a
folder per other volume the session learns from, :func:`build_volume_folder`);
:func:`read_stored_session` checks a store's version and rebuilds its
:class:`~napari_sparseseg.core.session.SegmentationSession`, the labels of
every volume put back chunk by chunk (:func:`restore_labels`), after which
:func:`repair_derived_chunks` makes the stored source and weights agree with
the labels again where a kill fell between a chunk's writes. The live store
around them is :class:`napari_sparseseg.store.SessionStore`.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .core.annotation import Source
from .core.box import Box
from .core.config import SessionConfig
from .core.encoding import UNLABELED
from .store_files import (
    STORE_KEY,
    STORE_VERSION,
    check_stored_volume,
    checked_geometry,
    chunk_boxes,
    default_chunks,
    image_fingerprint,
    volume_folders,
)

if TYPE_CHECKING:
    from .core.annotation import AnnotatedVolume
    from .core.session import OtherVolume, SegmentationSession


def build_store_folder(path: Path, session: SegmentationSession, *, image: np.ndarray | None,
                       image_ref: dict[str, Any] | None, class_names: Sequence[str] | None,
                       colors: Sequence[Sequence[float]] | None, chunks: Sequence[int] | None,
                       image_name: str | None, origin: Sequence[float] | None = None,
                       affine: Any = None) -> tuple[Path, Any]:
    """Check the arguments of :meth:`SessionStore.create` and write the new store, all but its labels.

    The store is written to a hidden sibling folder of ``path``, so that a store killed while being created
    never appears under ``path``; the caller writes the labels and renames the folder into place.

    Returns
    -------
    tuple
        ``(folder, root)``: the hidden folder and its zarr root group.

    Raises
    ------
    ValueError
        If no image is available, or class names/colours/chunks/origin/affine do not fit the session.
    """
    import zarr

    origin, affine = checked_geometry(origin, affine)

    vol = session.volume
    k = vol.num_classes
    if image_ref is None:
        image = session.image if image is None else image
        if image is None:
            raise ValueError("no image to store: pass image= or image_ref=")
    else:
        image_ref = {"path": str(Path(image_ref["path"]).resolve()), "key": image_ref.get("key", "image"),
                     "level": image_ref.get("level"), "fingerprint": image_fingerprint(session.image)}
    names = [str(n) for n in class_names] if class_names is not None else [f"class {i + 1}" for i in range(k)]
    if len(names) != k:
        raise ValueError(f"got {len(names)} class names for {k} foreground classes")
    if colors is not None and len(colors) != k:
        raise ValueError(f"got {len(colors)} colours for {k} foreground classes")
    chunks = default_chunks(vol.shape) if chunks is None else tuple(int(c) for c in chunks)
    if len(chunks) != 3 or min(chunks) < 1:
        raise ValueError(f"chunks must be three positive integers (z, y, x), got {chunks}")

    building = path.parent / f".{path.name}.creating-{os.getpid()}"
    if building.exists():
        shutil.rmtree(building)
    root = zarr.open_group(str(building), mode="w", zarr_format=3)
    shape = vol.shape
    channel_axis = session.channel_axis if image_ref is not None else None
    if image_ref is None:
        channel_axis = copy_image(root, image, session.channel_axis, shape, chunks)
    root.create_array("labels", shape=shape, chunks=chunks, dtype=np.uint8, fill_value=0)
    root.create_array("source", shape=shape, chunks=chunks, dtype=np.uint8, fill_value=0)
    root.create_array("weights", shape=shape, chunks=chunks, dtype=np.float32, fill_value=0.0)
    root.create_array("prediction", shape=shape, chunks=chunks, dtype=np.uint8, fill_value=0)
    root.create_array("probabilities", shape=(k + 1,) + shape, chunks=(1,) + chunks, dtype=np.float16,
                      fill_value=0.0)
    root.create_array("uncertainty", shape=shape, chunks=chunks, dtype=np.float16, fill_value=0.0)
    (building / "checkpoints").mkdir(exist_ok=True)
    (building / "history.jsonl").touch()
    for index, other in enumerate(session.other_volumes, start=1):
        build_volume_folder(building, index, other)
    attrs = {"config": session.config.to_dict(), "spacing": list(vol.spacing), "num_classes": k,
             "class_names": names, "colors": [list(map(float, c)) for c in colors] if colors is not None else None,
             "image_ref": image_ref, "channel_axis": channel_axis, "chunks": list(chunks),
             "image_name": None if image_name is None else str(image_name), "created": time.time(),
             "origin": origin, "affine": affine}
    root.attrs.update(attrs)
    root.attrs.update({STORE_KEY: {"version": STORE_VERSION}})
    return building, root


def build_volume_folder(path: Path, index: int, other: OtherVolume) -> Path:
    """Write ``volumes/<index>`` of the store at ``path``: another volume the session learns from.

    Its image (copied, unless ``other.image_ref`` names its file), empty ``labels``, ``source`` and ``prediction``
    arrays on its own chunk grid, and its attributes (``spacing``, ``channel_axis``, ``image_ref``, ``image_name``,
    ``chunks``). Written into a hidden sibling folder and renamed into place, so a kill never leaves half a
    volume under that name. Returns the folder.
    """
    import zarr

    target = path / "volumes" / str(index)
    if target.exists():
        raise ValueError(f"{target} exists already: the store's volumes are out of step with its session")
    target.parent.mkdir(exist_ok=True)
    building = target.parent / f".{index}.creating-{os.getpid()}"
    if building.exists():
        shutil.rmtree(building)
    try:
        root = zarr.open_group(str(building), mode="w", zarr_format=3)
        vol, ref = other.volume, other.image_ref
        chunks = default_chunks(vol.shape)
        channel_axis = other.channel_axis
        if ref is None:
            channel_axis = copy_image(root, other.image, other.channel_axis, vol.shape, chunks)
        else:
            ref = {"path": str(Path(ref["path"]).resolve()), "key": ref.get("key", "image"), "level": ref.get("level"),
                   "fingerprint": image_fingerprint(other.image)}
        for name in ("labels", "source", "prediction"):
            root.create_array(name, shape=vol.shape, chunks=chunks, dtype=np.uint8, fill_value=0)
        origin, affine = checked_geometry(**(other.geometry or {}))
        root.attrs.update({"spacing": list(vol.spacing), "channel_axis": channel_axis, "image_ref": ref,
                           "image_name": other.name, "chunks": list(chunks), "origin": origin, "affine": affine})
        os.rename(building, target)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return target


def copy_image(root: Any, image: Any, channel_axis: int | None, shape: tuple[int, int, int],
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


def read_stored_session(path: Path, root: Any, *, config: SessionConfig | None, device: str | None,
                        eager_image_bytes: int) -> tuple[SegmentationSession, set[tuple[int, int, int]]]:
    """The session of the store ``root`` (at ``path``): its image, settings and labels, an untrained model.

    Parameters
    ----------
    config : SessionConfig, optional
        Settings to use instead of the stored ones.
    device : str, optional
        Override the device.
    eager_image_bytes : int
        Images up to this size are read into memory; larger ones stay lazy (read per patch).

    Returns
    -------
    tuple
        ``(session, labeled_chunks)``: the start corners of the chunks that hold labels (:func:`restore_labels`).

    Raises
    ------
    ValueError
        If the store was written by a newer version, or its image reference cannot be read.
    """
    from .core.session import SegmentationSession

    attrs = dict(root.attrs)
    version = int(attrs[STORE_KEY].get("version", 0))
    if version > STORE_VERSION:
        raise ValueError(f"{path}: session store version {version} is newer than this napari-sparseseg "
                         f"understands ({STORE_VERSION}); upgrade the package")
    cfg = config or SessionConfig.from_dict(attrs["config"], legacy=True)
    if device is not None:
        cfg = replace(cfg, device=device)
    image = stored_image(root, eager_image_bytes)
    session = SegmentationSession(image, num_classes=int(attrs["num_classes"]), spacing=attrs["spacing"],
                                  channel_axis=attrs.get("channel_axis"), config=cfg)
    chunks = check_stored_volume(root, session.volume.shape, ("labels", "source", "prediction"), path)
    labeled = restore_labels(session.volume, root["labels"], root["source"], chunks)
    for folder in volume_folders(path):
        _read_other_volume(session, folder, eager_image_bytes)
    return session, labeled


def stored_image(group: Any, eager_image_bytes: int) -> Any:
    """The image of a stored volume (the root of a store or a ``volumes/<n>`` group): its ``image`` array, or the file
    its ``image_ref`` attribute names, read into memory when it holds at most ``eager_image_bytes`` (normalised
    exactly), else left lazy (read per patch).

    Raises
    ------
    ValueError
        If the file an ``image_ref`` names holds another image than the one the session was made from (its
        :func:`image_fingerprint` differs): the stored labels belong to that one.
    """
    from .io import read_volume

    ref = group.attrs.get("image_ref")
    if ref is None:
        image = group["image"]
    else:
        image = read_volume(ref["path"], key=ref.get("key", "image"), level=ref.get("level") or 0, lazy=True).data
        expected = ref.get("fingerprint")  # (stores written before it have none)
        if expected is not None and image_fingerprint(image) != expected:
            raise ValueError(f"{ref['path']}: not the image this session was made from (the file's voxels changed "
                             "since): its labels belong to that image; put it back, or start a new session")
    return np.asarray(image[...]) if image.nbytes <= eager_image_bytes else image


def _read_other_volume(session: SegmentationSession, folder: Path, eager_image_bytes: int) -> None:
    """Add the volume stored in ``folder`` (``volumes/<n>``) to what ``session`` learns from, its labels restored.

    Raises
    ------
    ValueError
        Naming the folder, if its image cannot be read or cannot train one net with the session's, or its arrays
        or chunk grid are not those of its image (:func:`~.store_files.check_stored_volume`).
    """
    import zarr

    group = zarr.open_group(str(folder), mode="r")
    attrs = dict(group.attrs)
    try:
        image = stored_image(group, eager_image_bytes)
        name = attrs.get("image_name")
        origin, affine = checked_geometry(attrs.get("origin"), attrs.get("affine"))
        volume = session.add_training_volume(image, spacing=attrs["spacing"], channel_axis=attrs.get("channel_axis"),
                                             name=name if isinstance(name, str) else None,
                                             image_ref=attrs.get("image_ref"),
                                             geometry={"origin": origin, "affine": affine})
        chunks = check_stored_volume(group, volume.shape, ("labels", "source", "prediction"), folder)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{folder}: another volume of the session cannot be read back: {exc}") from exc
    restore_labels(volume, group["labels"], group["source"], chunks)


def restore_labels(vol: AnnotatedVolume, labels: Any, source: Any,
                   chunks: Sequence[int]) -> set[tuple[int, int, int]]:
    """Put stored labels and their sources back into ``vol``, one chunk at a time.

    Parameters
    ----------
    vol : AnnotatedVolume
        A session's volume (its own, or one of ``other_volumes``).
    labels, source : array-like
        uint8 ``(z, y, x)`` arrays (zarr or NumPy) in annotation encoding / :class:`Source`.
    chunks : sequence of int
        Read granularity ``(z, y, x)``; chunks without labels are skipped.

    Returns
    -------
    set of tuple
        Start corners of the chunks that hold labels. Corrections keep their source (and weight); a
        labeled voxel without a source (a kill between the two chunk writes) counts as painted.

    Raises
    ------
    ValueError
        If the stored arrays do not have the volume's shape, or hold values that are no class.
    """
    if tuple(labels.shape) != vol.shape or tuple(source.shape) != vol.shape:
        raise ValueError(f"stored labels {labels.shape} / source {source.shape} do not match the image {vol.shape}")
    labeled = set()
    for b in chunk_boxes(Box.full(vol.shape), chunks, vol.shape):
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


def repair_derived_chunks(vol: AnnotatedVolume, group: Any, chunks: Sequence[int],
                          weights: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None) -> int:
    """Rewrite the stored ``source`` (and ``weights``) chunks that disagree with ``vol``'s restored labels.

    A flush writes a chunk's labels, then its source, then its weights, each file atomically; a kill between
    two of them leaves the newer labels beside an older source or weights chunk. :func:`restore_labels` already
    reads such a chunk sensibly (a labeled voxel without a source counts as painted), so the volume in memory
    is the truth; this puts it back on disk, so that the store read by any other tool is consistent.

    Parameters
    ----------
    vol : AnnotatedVolume
        The volume whose labels were just restored from ``group``.
    group : zarr.Group
        Its stored arrays, open for writing.
    chunks : sequence of int
        The stored chunk shape ``(z, y, x)``.
    weights : callable, optional
        ``weights(labels, source)`` -> float32 ``w(y)`` of one chunk, for a group that stores ``weights``
        (a store's own volume); a stored chunk within 1 % of it is kept (the class balance moves slowly).

    Returns
    -------
    int
        The number of chunks rewritten (0 after a clean close).
    """
    names = ("source",) if weights is None else ("source", "weights")
    stored = [_stored_chunk_starts(group, name, chunks) for name in names]
    repaired = 0
    for b in chunk_boxes(Box.full(vol.shape), chunks, vol.shape):
        labels, source = vol.snapshot(b)
        if not labels.any() and not any(s is None or b.start in s for s in stored):
            continue  # nothing labeled and nothing stored: the arrays' fill value, 0, is right
        fixed = False
        if not np.array_equal(np.asarray(group["source"][b.slices]), source):
            group["source"][b.slices] = source
            fixed = True
        if weights is not None:
            expected = weights(labels, source)
            if not np.allclose(np.asarray(group["weights"][b.slices]), expected, rtol=1e-2, atol=0.0):
                group["weights"][b.slices] = expected
                fixed = True
        repaired += fixed
    return repaired


def _stored_chunk_starts(group: Any, name: str, chunks: Sequence[int]) -> set[tuple[int, ...]] | None:
    """Start corners of the chunks of array ``name`` that have a file in a local store (None: cannot tell, so every
    chunk is read): a store's arrays have thousands of chunks, most of them never written."""
    root = getattr(group.store, "root", None)
    encoding = getattr(group[name].metadata, "chunk_key_encoding", None)
    if root is None or type(encoding).__name__ != "DefaultChunkKeyEncoding" or encoding.separator != "/":
        return None
    folder = Path(root) / group.path / name / "c"
    starts = set()
    for file in folder.rglob("*"):
        parts = file.relative_to(folder).parts
        if file.is_file() and len(parts) == len(chunks) and all(p.isdigit() for p in parts):
            starts.add(tuple(int(p) * c for p, c in zip(parts, chunks)))
    return starts
