"""The ``train`` and ``resume`` commands: train on an image and its sparse labels, or continue a session store.

Labels given to ``train`` are in the annotation encoding (0 = unlabeled,
1 = background, k+1 = class k), or, when they hold the value 255, an
annotation layer saved from napari (class k = k, background 255: the layer
encoding), which is converted; :func:`annotation_warnings` says what looks
wrong with them before any training.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .common import (
    LEARNER_NAMES,
    advance_bar,
    check_not_an_input,
    check_output_path,
    progress_bar,
    read_with_channels,
    session_config,
)


def _check_stored_image(path: str, image, store_path: str, stored) -> None:
    """Refuse labels of ``image`` for a session store that holds another image (its labels would land on it).

    Compares the shapes, then the middle block of up to 16 voxels a side (cheap, and read lazily from a store that
    refers to its image).

    Raises
    ------
    ValueError
        If the shapes or the voxels differ.
    """
    shape, stored_shape = tuple(np.shape(image)), tuple(np.shape(stored))
    if shape != stored_shape:
        raise ValueError(f"{path}: shape {shape}, but the session {store_path} holds an image of shape "
                         f"{stored_shape}: its labels belong to that image; give that image, or a new --session path")
    middle = tuple(slice(max(0, n // 2 - 8), n // 2 + 8) for n in shape)
    if not np.array_equal(np.asarray(image[middle]), np.asarray(stored[middle])):
        raise ValueError(f"{path}: not the image the session {store_path} was made from (same shape, other voxels): "
                         "its labels belong to that image; give that image, or a new --session path")


def cmd_train(args: argparse.Namespace) -> int:
    from ..core.checkpoint import save_model
    from ..core.session import SegmentationSession

    if not args.model and not args.session:
        raise ValueError("train needs --model and/or --session to keep what it learns")
    if args.seconds <= 0:
        raise ValueError(f"--seconds must be > 0, got {args.seconds:g}")
    check_output_path(args.out)
    if args.model and not Path(args.model).parent.is_dir():
        raise ValueError(f"{args.model}: the folder {Path(args.model).parent} does not exist")
    also = list(getattr(args, "also", []))
    if getattr(args, "also_folder", None):
        also += labeled_pairs(args.also_folder, exclude=(args.image, args.annotation, *(a for a, _ in also)))
    if also and args.session and Path(args.session).exists():
        raise ValueError(f"--also: {args.session} exists and keeps the volumes it was created with; continue it "
                         "with `resume`, or give a new --session path")
    channels = list(getattr(args, "channel", None) or [])
    inputs = [args.image, args.annotation, *channels, *(path for pair in also for path in pair)]
    if args.session and Path(args.session).exists():
        inputs += referenced_files(args.session)  # the images its volumes stay in
    check_not_an_input(args.out, inputs + [args.model, args.session], "--out")
    check_not_an_input(args.model, inputs + [args.session], "--model")
    if channels and also:
        raise ValueError("--channel and --also: other volumes join a session of one image file; stack each volume's "
                         "channels into one 4D file to learn from several")
    source, annotation = _read_labeled(args.image, args.annotation, args, channels)
    image, spacing = source.data, source.spacing
    k = args.classes or max(int(annotation.max()) - 1, 1)
    if not np.any(annotation > 0) and not (args.session and Path(args.session).exists()):
        raise ValueError(f"{args.annotation}: no labeled voxels; the annotation encoding is 0 = unlabeled, "
                         "1 = background, 2.. = classes: label some background and some of each class")
    if args.session and Path(args.session).exists():
        from ..store import SessionStore

        store, session = SessionStore.open(args.session, device=args.device)
        try:
            _check_stored_image(args.image, image, args.session, session.image)
        except ValueError:
            store.close(checkpoint=False)
            raise
        painted = np.nonzero(annotation > 0)  # the file's strokes are painted over the stored labels
        session.add_labels(painted, annotation[painted])
    else:
        others = [(path, *_read_labeled(path, annotation_path, args)) for path, annotation_path in also]
        _check_memory(args.image, source, k, [(path, other) for path, other, _ in others])
        session = SegmentationSession(image, num_classes=k, spacing=spacing, annotation=annotation,
                                      channel_axis=source.channel_axis, config=session_config(args))
        for other_path, other_source, other_annotation in others:
            _add_volume(session, other_path, other_source, other_annotation, args)
        store = _create_store(args.session, session, args.image, args.level, copy=bool(channels), source=source) \
            if args.session else None
    shown = _train_for(session, args.seconds)
    if store is not None:
        store.close(checkpoint=True)
        print(f"session saved after {session.trainer.step} steps to {args.session}")
    untrained = bool(args.model) and session.trainer.step == 0
    if untrained:  # as the window's Save model: an untrained net is no model
        print(f"warning: the net did not train a step in {args.seconds:g} s (the first responder's filter bank and "
              f"fits took the time): no model written to {args.model}; give more --seconds", file=sys.stderr)
    elif args.model:
        save_model(session.trainer, args.model,
                   channel_names=[Path(p).name for p in (args.image, *channels)] if channels else None)
        print(f"saved model after {session.trainer.step} steps to {args.model}")
    if shown is None:
        return 130
    if args.out:
        _write_shown(args.out, session, shown, source)
    return 1 if untrained else 0


def _read_labeled(image_path: str, annotation_path: str, args: argparse.Namespace, channels: list[str] = ()):
    """``(source, annotation)``: an image (``io.read_volume``; with ``channels``, further 3D images stacked after it,
    ``common.read_with_channels``) and its sparse labels, with a warning for what looks wrong in them
    (:func:`annotation_warnings`)."""
    source = read_with_channels(image_path, list(channels), args.level)
    annotation = _read_annotation(annotation_path, args.level, getattr(args, "encoding", "auto"))
    if tuple(annotation.shape) != tuple(source.shape):
        raise ValueError(f"{annotation_path}: labels of shape {tuple(annotation.shape)}, but the image {image_path} "
                         f"is {tuple(source.shape)} (z, y, x): the labels must cover the image voxel for voxel")
    for warning in annotation_warnings(annotation, args.classes or None):  # --classes 0: from the labels
        print(f"warning: {annotation_path}: {warning}", file=sys.stderr)
    return source, annotation


def _check_memory(image_path: str, source, num_classes: int, others: list) -> None:
    """Refuse, before the session is built, a session that would not fit this machine's memory
    (:mod:`~napari_sparseseg.core.footprint`), rather than be killed for memory minutes into training."""
    from ..core.footprint import session_bytes, too_large

    def zyx(volume) -> tuple[tuple[int, int, int], int]:
        return volume.shape, 1 if volume.channel_axis is None else int(volume.data.shape[volume.channel_axis])

    shape, channels = zyx(source)
    need = session_bytes(shape, source.spacing, num_classes, channels, [zyx(other) for _, other in others])
    need += sum(int(np.asarray(v.data).nbytes) for v in (source, *(other for _, other in others)))  # read in
    names = image_path + "".join(f" with {path}" for path, _ in others)
    problem = too_large(names, need, None, "Train on a crop or a coarser pyramid level (--level) of it, or in Python "
                        "on a zarr image without reading it in (README, Volumes larger than memory)")
    if problem:
        raise ValueError(problem)


def _add_volume(session, image_path: str, source, annotation: np.ndarray, args: argparse.Namespace) -> None:
    """Add another image and its labels (read as ``train`` reads the first) to what the net learns from."""
    try:
        volume = session.add_training_volume(source.data, annotation=annotation, spacing=source.spacing,
                                             channel_axis=source.channel_axis, name=Path(image_path).name.split(".")[0],
                                             image_ref={"path": image_path, "key": "image", "level": args.level},
                                             geometry={"origin": source.origin, "affine": source.affine})
    except ValueError as e:
        raise ValueError(f"--also {image_path}: {e}") from None
    print(f"also learning from {image_path} ({volume.n_labeled} labeled voxels)")


#: Name tag of a sparse annotation beside its image in a folder: ``NAME.tif`` and ``NAME_annotation.npz``.
ANNOTATION_TAG = "_annotation"


def labeled_pairs(folder: str, exclude: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """``(image, annotation)`` paths of a folder: each image file ``NAME.SUFFIX`` with a file
    ``NAME_annotation.SUFFIX2`` beside it (any readable format; the tag in any case). A file is an annotation when
    its name less the tag is another file's name; images without one are named on stderr and left out, as are the
    files in ``exclude`` (given otherwise already).

    Raises
    ------
    ValueError
        If ``folder`` is not a folder, holds no image with an annotation beside it, or an image has two.
    """
    from .predict import image_files, strip_suffix

    if not Path(folder).is_dir():
        raise ValueError(f"--also-folder {folder}: not a folder")
    files = [f for f in image_files(folder) or [] if f.resolve() not in {Path(p).resolve() for p in exclude}]
    stems = {f: strip_suffix(f).lower() for f in files}
    names = set(stems.values())
    tag = ANNOTATION_TAG.lower()
    annotations = [f for f, s in stems.items() if s.endswith(tag) and s[: -len(tag)] in names]
    pairs, unlabeled = [], []
    for image in (f for f in files if f not in annotations):
        found = [a for a in annotations if stems[a][: -len(tag)] == stems[image]]
        if len(found) > 1 or (found and sum(s == stems[image] for s in stems.values()) > 1):
            raise ValueError(f"--also-folder {folder}: {image.name}: which annotation goes with which image is "
                             f"ambiguous ({', '.join(sorted(f.name for f in found))}); keep one of each")
        if found:
            pairs.append((str(image), str(found[0])))
        else:
            unlabeled.append(image.name)
    if unlabeled:
        print(f"note: --also-folder {folder}: no NAME{ANNOTATION_TAG} file beside {', '.join(unlabeled)}: left out",
              file=sys.stderr)
    if not pairs:
        raise ValueError(f"--also-folder {folder}: no image with a sparse annotation beside it "
                         f"(NAME.tif and NAME{ANNOTATION_TAG}.npz, say)")
    return pairs


def cmd_resume(args: argparse.Namespace) -> int:
    from ..store import SessionStore

    check_output_path(args.out)
    check_not_an_input(args.out, [args.store, *referenced_files(args.store)], "--out")
    store, session = SessionStore.open(args.store, device=args.device)
    if store.resume_error:
        print(f"warning: {store.resume_error}", file=sys.stderr)
    start = session.trainer.step
    others = f", and {len(session.other_volumes)} other volumes" if session.other_volumes else ""
    print(f"resuming {args.store} at step {start} ({session.volume.n_labeled} labeled voxels{others})")
    store.start_autosave()
    shown = _train_for(session, args.seconds)
    store.close(checkpoint=True)
    print(f"saved checkpoint at step {session.trainer.step} (+{session.trainer.step - start}) to {args.store}")
    if shown is None:
        return 130
    if args.out:
        _write_shown(args.out, session, shown, _stored_image(store.attrs.get("image_ref")))
    return 0


def referenced_files(store_path: str | Path) -> list[str]:
    """The image files a session store's volumes stay in (its ``image_ref`` attributes), read without opening
    the store; none where it is no store (opening it says why)."""
    import zarr

    from ..store_files import volume_folders

    paths = []
    try:
        for folder in [Path(store_path), *volume_folders(store_path)]:
            ref = zarr.open_group(str(folder), mode="r").attrs.get("image_ref")
            if isinstance(ref, dict) and isinstance(ref.get("path"), str):
                paths.append(ref["path"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return paths


def _stored_image(image_ref: object):
    """The image file a store refers to, opened lazily for its geometry (its NIfTI affine, its origin); None where
    it is copied into the store or gone."""
    from ..io import read_volume

    if not isinstance(image_ref, dict) or not isinstance(image_ref.get("path"), str):
        return None
    try:
        return read_volume(image_ref["path"], key=str(image_ref.get("key") or "image"),
                           level=int(image_ref.get("level") or 0), lazy=True)  # the level it trained on
    except (OSError, ValueError):
        return None  # the store opened, so its image is readable; a file that went since only costs the geometry


def _train_for(session, seconds: float):
    """Run the window's loop for ``seconds`` of wall-clock time with a progress bar (``core.shown.run_shown``):
    the first responder answers, the net trains and takes over when it scores better on held-back labels. The
    :class:`~.core.shown.ShownMask` at the end, or None if Ctrl-C ended it (what was learned is kept for saving).
    A budget too short for a whole mask is stretched until there is one, and the user told."""
    from ..core.events import Notice
    from ..core.shown import run_shown

    bar = progress_bar(seconds, "training")
    told = []

    def report(event, shown, elapsed: float) -> None:
        if isinstance(event, Notice):
            bar.write(f"{event.level}: {event.message}", file=sys.stderr)
        if not told and elapsed >= seconds and not shown.whole:
            told.append(True)
            bar.write(f"the {seconds:g} s are up before the first mask of the whole volume: waiting for it",
                      file=sys.stderr)
        what = LEARNER_NAMES.get(shown.learner, "nothing yet")
        estimate = f" (estimated Dice {shown.estimate.dice:.2f})" if shown.estimate is not None else ""
        advance_bar(bar, min(elapsed, seconds), f"step {session.trainer.step}, showing {what}{estimate}")

    try:
        shown = run_shown(session, seconds, report)
        if shown.overtime > 0 and shown.whole:
            bar.write(f"note: the first mask of the whole volume came {shown.overtime:.1f} s after the {seconds:g} s "
                      "budget; the command waited for it", file=sys.stderr)
        elif not shown.whole:
            bar.write(f"note: no mask of the whole volume came within {seconds + shown.overtime:.0f} s: the net's "
                      "own is written", file=sys.stderr)
        return shown
    except KeyboardInterrupt:
        bar.write(f"interrupted at step {session.trainer.step}: saving what was learned", file=sys.stderr)
        return None
    finally:
        bar.close()


def _write_shown(path: str, session, shown, source=None) -> None:
    """Write the mask the window would show at the end (``core.shown.final_mask``) on the grid of the image file
    ``source`` (a ``VolumeFile``: its NIfTI affine, its origin) and say whose it is."""
    from ..core.shown import final_mask
    from ..io import save_mask

    save_mask(path, final_mask(session, shown), session.volume.spacing,
              affine=None if source is None else source.affine, origin=None if source is None else source.origin)
    latest = session.display.handover.scores  # (the last mask may have come before its learner was scored)
    scores = ", ".join(f"{LEARNER_NAMES[k]} {v:.3f}" for k, v in sorted(latest.items()) if k in LEARNER_NAMES)
    print(f"wrote the segmentation shown at the end ({LEARNER_NAMES[shown.written]}) to {path}"
          + (f"; Dice on held-back labels: {scores}" if scores else ""))


def _read_annotation(path: str, level: int, encoding: str = "auto") -> np.ndarray:
    """Sparse labels (``npz`` key ``labels``); read at ``level`` only if the file is itself a multiscale OME-Zarr.

    Raises
    ------
    ValueError
        For labels that are not whole numbers in 0..255.
    """
    from ..core.encoding import LAYER_BACKGROUND, layer_to_annotation
    from ..io import read_volume

    vol = read_volume(path, key="labels", lazy=True)
    if level and vol.n_levels > 1:
        vol = read_volume(path, key="labels", level=level, lazy=True)
    labels = np.asarray(vol.data)
    if labels.dtype.kind == "f" and (not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels))):
        raise ValueError(f"{path}: labels must be whole numbers (0 = unlabeled, 1 = background, 2.. = classes), "
                         f"got {labels.dtype} values with fractions")
    if labels.dtype.kind not in "uif":
        raise ValueError(f"{path}: labels must be integers in 0..255, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"{path}: labels must be integers in 0..255, got values {labels.min()}..{labels.max()}")
    labels = labels.astype(np.uint8)
    if encoding == "auto" and labels.size and labels.max() == LAYER_BACKGROUND:  # class 254 if annotation: not meant
        print(f"note: {path}: value {LAYER_BACKGROUND} marks background as in napari's annotation layer; read as "
              f"class k = k, background {LAYER_BACKGROUND} (--encoding annotation to read it otherwise)",
              file=sys.stderr)
        encoding = "layer"
    return layer_to_annotation(labels) if encoding == "layer" else labels


def annotation_warnings(annotation: np.ndarray, classes: int | None = None) -> list[str]:
    """What a user should hear about sparse labels before training on them (annotation encoding)."""
    values, counts = np.unique(annotation, return_counts=True)
    present = {int(v) for v in values}
    labeled = present - {0}
    warnings = []
    if 0 not in present:
        warnings.append("every voxel is labeled: is this a ground-truth mask? The annotation encoding is "
                        "0 = unlabeled, 1 = background, 2.. = classes (a mask has 0 = background)")
    if labeled == {1}:
        warnings.append("only background (value 1) is labeled: the model will learn no class. If this is a mask "
                        "with 0 = background and 1 = object, add 1 to it (0 stays unlabeled)")
    elif labeled and 1 not in labeled:
        warnings.append("no background (value 1) is labeled: the model cannot learn where the classes end")
    elif labeled and 0 in present and _fills_solid_regions(annotation > 0):
        warnings.append("the labels fill solid 3D regions through most slices, as a mask does, not a few painted "
                        "slices or strokes: is this a ground-truth mask with 0 = background? The annotation encoding "
                        "is 0 = unlabeled, 1 = background, 2.. = classes: add 1 to a mask (0 stays unlabeled)")
    if classes is None and labeled:
        missing = sorted(set(range(2, max(labeled) + 1)) - labeled)
        if missing:
            warnings.append(f"values {missing} do not occur, yet the largest value {max(labeled)} makes "
                            f"{max(labeled) - 1} classes: a stray label? Pass --classes K to say how many")
    return warnings


def _fills_solid_regions(labeled: np.ndarray) -> bool:
    """Whether labels ``(z, y, x)`` bool look like a dense mask: most labeled voxels have all six neighbours labeled
    (painted slices and strokes have almost none) and they reach over half of the z slices."""
    if labeled.ndim != 3 or min(labeled.shape) < 3:
        return False
    inner = labeled[1:-1, 1:-1, 1:-1].copy()
    for axis in range(3):
        for shift in (slice(None, -2), slice(2, None)):
            index = [slice(1, -1)] * 3
            index[axis] = shift
            inner &= labeled[tuple(index)]
    return bool(inner.sum() > 0.5 * labeled.sum() and labeled.any(axis=(1, 2)).mean() > 0.5)


def _create_store(path: str, session, image_path: str, level: int = 0, copy: bool = False, source=None):
    """A session store for the CLI, referencing the image file (and pyramid level) instead of copying it, unless
    ``copy`` (an image stacked from several files, which no one file holds); it keeps where the image lies
    (``source``: the ``VolumeFile`` read, its origin and NIfTI affine), for the window that reopens it."""
    from ..store import SessionStore

    ref = None if copy else {"path": image_path, "key": "image", "level": level}
    store = SessionStore.create(path, session, image_ref=ref, image_name=Path(image_path).name.split(".")[0],
                                origin=getattr(source, "origin", None), affine=getattr(source, "affine", None))
    store.start_autosave()
    return store
