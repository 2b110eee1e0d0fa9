"""The ``predict`` command: apply a saved model to an image file, a folder or glob of images, or on a cluster.

Masks are written in the mask encoding (0 = background, 1..K = classes); for
many images, each mask goes beside the others in the output folder as
``NAME_mask.SUFFIX`` (:func:`mask_path`), and a rerun keeps those already there.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .common import check_not_an_input, check_output_path, one_line_message, progress_bar, read_with_channels


def _is_zarr_array_path(path: str) -> bool:
    """A plain ``.zarr`` output (written block by block); ``.ome.zarr`` goes through ``save_mask``."""
    name = path.lower().rstrip("/")
    return name.endswith(".zarr") and not name.endswith(".ome.zarr")


def _predict_distributed(args: argparse.Namespace) -> int:
    from ..distributed import predict_distributed

    bar = progress_bar(0, "blocks")
    bar.bar_format = "{l_bar}{bar}| {n}/{total} blocks"

    def progress(done: int, total: int) -> None:
        bar.total, bar.n = total, done
        bar.refresh()

    result = predict_distributed(args.image, args.model, args.out, scheduler=args.scheduler,
                                 block=args.block or (64, 256, 256), level=args.level,
                                 device=args.device, progress=progress)
    bar.close()
    print(f"wrote {args.out}: classes {result.classes} ({result.blocks} blocks on {result.workers} workers, "
          f"{result.seconds:.1f} s)")
    return 0


#: Image suffixes, longest first: a mask written for an image keeps its format (``embryo.tif`` -> ``embryo_mask.tif``).
_IMAGE_SUFFIXES = (".ome.zarr", ".ome.tiff", ".ome.tif", ".nii.gz", ".tiff", ".tif", ".nii", ".npz", ".zarr")


def image_files(spec: str) -> list[Path] | None:
    """The image files a folder or a glob pattern names, sorted (None when ``spec`` names one file or store).

    Raises
    ------
    ValueError
        If the folder or pattern holds no image file.
    """
    import glob

    from ..io import volume_format

    path = Path(spec)
    if path.is_file():  # one file, even where its name holds glob characters ("scan[1].tif")
        return None
    if path.is_dir() and volume_format(path) is None:  # a plain folder (a zarr store is one image)
        candidates = list(path.iterdir())
    elif any(ch in spec for ch in "*?["):
        candidates = [Path(p) for p in glob.glob(spec)]
    else:
        return None
    files = sorted(p for p in candidates if not p.name.startswith(".") and p.name.lower().endswith(_IMAGE_SUFFIXES)
                   and volume_format(p) is not None)
    if not files:
        raise ValueError(f"{spec}: no image files ({', '.join(_IMAGE_SUFFIXES)}) found there")
    return files


def _split_suffix(path: Path, suffixes: tuple[str, ...]) -> tuple[str, str]:
    """``path``'s file name split before its suffix (the longest of ``suffixes`` it ends with; "" when none)."""
    name = path.name
    suffix = next((s for s in sorted(suffixes, key=len, reverse=True) if name.lower().endswith(s)), "")
    return name[: len(name) - len(suffix)], name[len(name) - len(suffix):]


def strip_suffix(path: Path) -> str:
    """An image file's name without its suffix (``a.nii.gz`` -> ``a``)."""
    return _split_suffix(path, _IMAGE_SUFFIXES)[0]


def _tagged(path: Path, tag: str, suffixes: tuple[str, ...]) -> str:
    """``path``'s file name with ``tag`` before its suffix (the longest of ``suffixes`` it ends with)."""
    stem, suffix = _split_suffix(path, suffixes)
    return f"{stem}{tag}{suffix}"


def mask_path(image: Path, out_dir: Path) -> Path:
    """Where the mask of ``image`` goes in ``out_dir``: its name with ``_mask`` before the suffix."""
    return out_dir / _tagged(image, "_mask", _IMAGE_SUFFIXES)


def instances_path(mask_out: str | Path) -> Path:
    """Where the separate objects of the mask written to ``mask_out`` go: its name with ``_instances`` before the
    suffix, in the same format."""
    from ..io import MASK_SUFFIXES

    out = Path(mask_out)
    return out.with_name(_tagged(out, "_instances", MASK_SUFFIXES + (".ome.tif", ".ome.tiff")))


def _predict_file(model: dict[str, Any], image: str | Path, out: str | Path, args: argparse.Namespace) -> str:
    """Predict one image with a loaded model and write its mask; returns what was written, in words."""
    from ..core.channels import channel_order, matched_words
    from ..core.checkpoint import channel_names
    from ..core.session import SegmentationSession
    from ..io import save_mask

    channels = list(getattr(args, "channel", None) or [])
    names, given = channel_names(model), [Path(p).name for p in (image, *channels)]
    order = channel_order(names, given) if names and channels else None
    if order is not None:  # the files given in another order than the model's channels: stacked in its order
        print(f"note: {matched_words(names, given, order)}", file=sys.stderr)
    source = read_with_channels(str(image), channels, args.level, order)
    spacing = source.spacing
    trained = model["state"].get("spacing")
    if trained is not None and not np.allclose(trained, spacing, rtol=0.25):
        print(f"warning: {image} has voxel spacing {tuple(spacing)}, the model was trained at "
              f"{tuple(trained)}: objects will look another size to it (resample, or pick a pyramid level)",
              file=sys.stderr)
    session = SegmentationSession.from_model(source.data, model, spacing=spacing,
                                             channel_axis=source.channel_axis, device=args.device)
    if _is_zarr_array_path(str(out)) and not getattr(args, "instances", False):  # block by block, whole chunks
        from ..core.blockwise import predict_to_array
        from ..distributed import open_mask_output

        with open_mask_output(str(out), session.volume.shape, args.block or (64, 256, 256), spacing,
                              origin=source.origin) as arr:
            predict_to_array(session.trainer, arr, final=True)  # in place only when whole: a rerun never keeps half
        return f"{out}: {arr.nchunks} chunks"
    mask = session.segment()  # in memory (also for a .zarr with --instances: objects are split in memory)
    save_mask(out, mask, spacing, affine=source.affine, origin=source.origin)  # the source geometry
    written = f"{out}: classes {np.unique(mask).tolist()}"
    if getattr(args, "instances", False):
        from ..core.instances import split_instances

        objects, objects_out = split_instances(mask, spacing), instances_path(out)
        save_mask(objects_out, objects, spacing, affine=source.affine, origin=source.origin)
        written += f"; {objects_out}: {int(objects.max())} objects"
    return written


def _written(path: Path) -> bool:
    """Whether a whole mask is at ``path`` (masks are put in place whole: one that is not was damaged since, and is
    written again). Checked without reading the voxels into memory."""
    from ..formats.zarr_store import zarr_kind

    if path.is_dir():
        return zarr_kind(path) is not None
    if not path.is_file():
        return False
    if not _complete(path):
        print(f"note: {path} does not read as a whole mask: written again", file=sys.stderr)
        return False
    return True


def _complete(path: Path) -> bool:
    """Whether the mask file at ``path`` is whole: its container reads and holds all its voxels' bytes (an
    ``.npz`` its ``labels`` entry, a TIFF every page's data, a NIfTI its data block; a ``.nii.gz`` decompresses to
    its end), in constant memory."""
    import gzip
    import zipfile

    name = path.name.lower()
    try:
        if name.endswith(".npz"):
            with zipfile.ZipFile(path) as archive:
                return "labels.npy" in archive.namelist()
        if name.endswith((".tif", ".tiff")):
            import tifffile

            from ..formats.tiff import declared_images

            with tifffile.TiffFile(path) as tif:
                size, series = path.stat().st_size, tif.series[0]
                if series.dataoffset is not None:  # one contiguous block (a large ImageJ file: one page listed)
                    return series.dataoffset + series.nbytes <= size
                return 0 < len(tif.pages) and declared_images(tif) <= len(tif.pages) and all(
                    not page.dataoffsets or page.dataoffsets[-1] + page.databytecounts[-1] <= size
                    for page in tif.pages)
        if name.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            header = nib.load(str(path)).header
            expected = int(header.get_data_offset()) + int(np.prod(header.get_data_shape())) \
                * header.get_data_dtype().itemsize
            if name.endswith(".nii"):
                return path.stat().st_size >= expected
            read = 0
            with gzip.open(path, "rb") as stream:
                while chunk := stream.read(1 << 22):
                    read += len(chunk)
            return read >= expected
    except Exception:  # noqa: BLE001 (zipfile, tifffile, nibabel and gzip raise many types for damaged files)
        return False
    return True


def _check_distinct_outputs(files: list[Path], out_dir: Path) -> None:
    """Refuse images whose masks would go to one path (``x.npz`` of two folders): one mask would be lost, and a
    rerun would take it for the other's."""
    seen: dict[Path, Path] = {}
    for f in files:
        out = mask_path(f, out_dir)
        if out in seen:
            raise ValueError(f"{seen[out]} and {f} would both write {out}: predict each folder into an --out of "
                             "its own (or rename one)")
        seen[out] = f


def _outputs_among(files: list[Path], out_dir: Path) -> set[Path]:
    """Those of ``files`` that are where the mask (or objects) of another of them goes in ``out_dir``."""
    outputs = set()
    for f in files:
        mask = mask_path(f, out_dir)
        outputs.update((mask.resolve(), instances_path(mask).resolve()))
    return {f for f in files if f.resolve() in outputs}


def _predict_many(model: dict[str, Any], files: list[Path], args: argparse.Namespace) -> int:
    """Predict every file into the folder ``args.out``; masks already there are kept (a rerun resumes)."""
    from tqdm import tqdm

    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir}: with a folder or pattern of images, --out must be a folder")
    if not out_dir.parent.is_dir():
        raise ValueError(f"{out_dir}: the folder {out_dir.parent} does not exist")
    earlier = _outputs_among(files, out_dir)
    if earlier:  # --out is the images' own folder: the masks of a run before are not images to segment
        print(f"note: {len(earlier)} file(s) in {out_dir} are masks of these images, not images: left out",
              file=sys.stderr)
        files = [f for f in files if f not in earlier]
    _check_distinct_outputs(files, out_dir)
    out_dir.mkdir(exist_ok=True)
    failed, skipped = [], 0
    bar = tqdm(files, desc="predicting", unit="file", file=sys.stderr, disable=None)
    for image in bar:
        out = mask_path(image, out_dir)
        bar.set_postfix_str(image.name, refresh=True)
        if _written(out) and (not args.instances or _written(instances_path(out))):
            skipped += 1
            continue
        try:
            bar.write(f"wrote {_predict_file(model, image, out, args)}")
        except (ValueError, OSError, MemoryError, KeyError) as exc:  # one bad file does not stop the others
            failed.append(image)
            bar.write(f"error: {one_line_message(exc)}", file=sys.stderr)
    bar.close()
    done = len(files) - len(failed) - skipped
    print(f"{done} mask(s) written to {out_dir}, {skipped} already there (kept), {len(failed)} failed")
    if failed:
        print(f"error: {len(failed)} of {len(files)} images failed: {', '.join(p.name for p in failed)}",
              file=sys.stderr)
        return 2
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    if args.block is not None and (len(args.block) != 3 or min(args.block) < 1):
        raise ValueError(f"--block needs three positive sizes Z Y X, got {args.block}")
    files = image_files(args.image)
    if files is None:
        check_output_path(args.out)
        inputs = [args.image, args.model, *(getattr(args, "channel", None) or [])]
        check_not_an_input(args.out, inputs, "--out")
        if args.instances:
            check_not_an_input(str(instances_path(args.out)), inputs, "--out (its objects)")
    elif args.scheduler:
        raise ValueError("--scheduler predicts one image; run one predict per image on the cluster")
    if getattr(args, "channel", None) and (files is not None or args.scheduler):
        raise ValueError("--channel gives the further channels of one image file: predict one image with it (or "
                         "stack each image's channels into one 4D file to predict a folder)")
    if args.instances and args.scheduler:
        raise ValueError("--instances splits the whole mask in memory: predict without --scheduler")
    from ..core.checkpoint import read_model

    model = read_model(args.model)
    if model["state"].get("step") == 0:
        print(f"warning: {args.model}: this net never trained a step: its masks mean nothing (train it first)",
              file=sys.stderr)
    if args.scheduler:
        return _predict_distributed(args)
    if files is not None:
        return _predict_many(model, files, args)
    print(f"wrote {_predict_file(model, args.image, args.out, args)}")
    return 0
