"""Reading and writing volumes: npz, TIFF, NIfTI, zarr and OME-Zarr (the one public I/O module).

Qt-free. Arrays have axes ``(z, y, x)`` (images may add one channel axis) and
spacing travels with them as ``(z, y, x)``. Per-format details (which metadata
give the spacing, what happens to NIfTI orientation) live in the modules of
:mod:`napari_sparseseg.formats` and in ``docs/file-formats.md``.

=================  ======================================  ==========================================
suffix             read (:func:`read_volume`)              write (:func:`save_mask`)
=================  ======================================  ==========================================
``.npz``           ``image`` / ``labels``, ``spacing``     ``labels``, ``spacing``
``.tif, .tiff``    ImageJ, OME-TIFF, plain; ZYX or +C      ImageJ ZYX stack with spacing
``.nii, .nii.gz``  nibabel; spacing + affine               NIfTI-1 with the reference affine
``.zarr``          zarr array (``attrs["spacing"]``)       zarr v3 array, ``attrs["spacing"]``, ``"origin"``
``.ome.zarr``      OME-Zarr NGFF 0.4/0.5, any ``level``    OME-Zarr NGFF 0.5, one level, translation
=================  ======================================  ==========================================

Every failure (missing, corrupt, unsupported, level out of range) raises
:class:`VolumeFileError`, a ``ValueError`` whose message names the path.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .core.file_mode import as_new_file
from .core.volume import Spacing
from .formats.base import VolumeFile, VolumeFileError, mask_for_writing
from .formats.npz import load_npz

__all__ = ["VolumeFile", "VolumeFileError", "load_npz", "load_volume", "read_volume", "save_mask", "volume_format"]

#: Suffixes :func:`save_mask` writes.
MASK_SUFFIXES = (".npz", ".tif", ".tiff", ".nii", ".nii.gz", ".zarr", ".ome.zarr")


def volume_format(path: str | Path) -> str | None:
    """The format :func:`read_volume` would use for ``path``: ``"npz"``, ``"tiff"``, ``"nifti"``, ``"zarr"`` or None.

    Decided from the name (and, for a directory, its zarr metadata); nothing is read.
    """
    from .formats.zarr_store import is_zarr_dir

    p = Path(path)
    name = p.name.lower()
    if name.endswith(".npz"):
        return "npz"
    if name.endswith((".tif", ".tiff")):
        return "tiff"
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith(".zarr") or is_zarr_dir(p):
        return "zarr"
    return None


def read_volume(path: str | Path, *, key: str = "image", level: int = 0, lazy: bool = False) -> VolumeFile:
    """Read a volume with its spacing (and NIfTI affine) from any supported file.

    Parameters
    ----------
    path : str or Path
        ``.npz``, ``.tif``/``.tiff`` (incl. OME-TIFF), ``.nii``/``.nii.gz``, a zarr
        array directory or an OME-Zarr image directory.
    key : str
        Which array: ``"image"`` or ``"labels"`` of an ``.npz``; the array of that
        name in a plain zarr group; ``"labels"`` picks the first NGFF label image of
        an OME-Zarr. Ignored for TIFF and NIfTI (the file is the array).
    level : int
        Pyramid level of an OME-Zarr (0 = full resolution); other formats have only 0.
    lazy : bool
        For zarr and OME-Zarr return the ``zarr.Array`` (chunks read on access;
        a dask array where a size-1 ``t`` axis is dropped). Other formats are
        always read into memory.

    Returns
    -------
    VolumeFile
        ``data`` with axes ``VolumeFile.axes`` (``"zyx"``, or with one ``"c"`` at
        ``channel_axis``), ``spacing`` ``(z, y, x)``, ``affine`` (NIfTI), levels.

    Raises
    ------
    VolumeFileError
        Missing file, unsupported suffix, corrupt file, no 3D volume inside, a
        zarr group that is neither an array nor OME-Zarr, level out of range.
    """
    p = Path(path)
    if not p.exists():
        raise VolumeFileError(f"{path}: no such file or directory")
    kind = volume_format(p)
    if kind == "npz":
        from .formats.npz import read_npz

        return read_npz(p, key, level)
    if kind == "tiff":
        from .formats.tiff import read_tiff

        return read_tiff(p, level)
    if kind == "nifti":
        from .formats.nifti import read_nifti

        return read_nifti(p, level)
    if kind == "zarr":
        from .formats.zarr_store import read_zarr

        return read_zarr(p, key, level, lazy)
    raise VolumeFileError(f"{path}: unsupported file type (use .npz, .tif/.tiff, .nii/.nii.gz, .zarr or .ome.zarr)")


def load_volume(path: str | Path, key: str = "image") -> tuple[np.ndarray, Spacing]:
    """Read one array and its spacing ``(z, y, x)``: :func:`read_volume` at level 0, into memory."""
    vol = read_volume(path, key=key)
    return vol.data, vol.spacing


def _check_npz_replaceable(path: Path) -> None:
    """Refuse to write a mask over an ``.npz`` that holds more than a mask (an image beside its labels)."""
    if not path.is_file():
        return
    try:
        with np.load(path, allow_pickle=False) as data:
            extra = sorted(set(data.files) - {"labels", "spacing"})
    except Exception:  # noqa: BLE001 (not an archive we can list: a damaged file is replaced as any other file)
        return
    if extra:
        raise VolumeFileError(f"{path}: holds {extra} beside a mask; refusing to overwrite it (the mask would "
                              "replace them): choose another name")


@contextlib.contextmanager
def _written_whole(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix) that becomes ``path`` only once written whole.

    A failure while writing (a full disk, an interrupt) leaves the old file, or none, and no partial file.
    """
    suffix = "".join(path.suffixes[-2:]) if path.name.lower().endswith(".nii.gz") else path.suffix
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        as_new_file(tmp)  # not mkstemp's 0600
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def written_whole_dir(path: Path) -> Iterator[Path]:
    """A temporary folder beside ``path`` that replaces ``path`` (a zarr store) only once written whole.

    The old store is renamed aside, the new one renamed into place, then the old one removed: a failure while
    writing leaves the old store untouched and no partial one; a kill between the two renames leaves the old
    store beside, as ``.NAME.replaced-PID``.
    """
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial"))
    os.rmdir(tmp)  # the writer creates it
    try:
        yield tmp
        as_new_file(tmp, folder=True)  # not mkdtemp's 0700
        if path.exists():
            aside = path.with_name(f".{path.name}.replaced-{os.getpid()}")
            os.replace(path, aside)
            os.replace(tmp, path)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def save_mask(path: str | Path, mask: np.ndarray, spacing: Spacing, *, affine: np.ndarray | None = None,
              origin: tuple[float, float, float] | None = None) -> None:
    """Write a mask (0 = background, 1..K) keeping its spacing; the suffix picks the format.

    Parameters
    ----------
    path : str or Path
        ``.npz``, ``.tif``/``.tiff`` (ImageJ), ``.nii``/``.nii.gz``, ``.zarr``
        (plain zarr v3 array) or ``.ome.zarr`` (NGFF 0.5, one level). An existing
        mask this package wrote is replaced; any other existing directory, zarr
        data it did not write as a mask and an ``.npz`` holding more than a mask
        are left alone (error).
    mask : np.ndarray
        ``(z, y, x)`` non-negative integers; kept as ``uint8``/``uint16``, other
        integer types stored as the smallest unsigned type holding the values.
    spacing : sequence of 3 float
        ``(z, y, x)`` voxel size.
    affine : np.ndarray, optional
        NIfTI only: the reference image's 4x4 affine (:attr:`VolumeFile.affine`),
        written as is so the mask overlays the image; default ``diag(x, y, z, 1)``
        moved to ``origin``.
    origin : tuple of float, optional
        World position ``(z, y, x)`` of voxel ``(0, 0, 0)`` (napari's ``translate``): an OME-Zarr
        ``translation``, a zarr array's ``attrs["origin"]``, a NIfTI's affine without a reference;
        ``.npz`` and TIFF do not keep it.

    Raises
    ------
    ValueError
        Bad mask or spacing; :class:`VolumeFileError` for an unsupported suffix or
        a path that cannot be written.
    """
    p = Path(path)
    name = p.name.lower()
    if not name.endswith(MASK_SUFFIXES):
        raise VolumeFileError(f"{path}: unsupported output type (use {', '.join(MASK_SUFFIXES)})")
    mask, spacing = mask_for_writing(mask, spacing)
    if not p.parent.is_dir():
        raise VolumeFileError(f"{path}: the folder {p.parent} does not exist")
    if name.endswith(".npz"):
        from .formats.npz import write_npz

        _check_npz_replaceable(p)
        with _written_whole(p) as tmp:
            write_npz(tmp, mask, spacing)
    elif name.endswith((".tif", ".tiff")):
        from .formats.tiff import write_tiff

        with _written_whole(p) as tmp:
            write_tiff(tmp, mask, spacing)
    elif name.endswith((".nii", ".nii.gz")):
        from .formats.nifti import write_nifti

        with _written_whole(p) as tmp:
            write_nifti(tmp, mask, spacing, affine, origin=origin)
    else:
        from .formats.zarr_store import check_replaceable, write_ome_zarr, write_zarr

        check_replaceable(p)
        with written_whole_dir(p) as tmp:
            (write_ome_zarr if name.endswith(".ome.zarr") else write_zarr)(tmp, mask, spacing, origin)
