"""NIfTI-1/2 volumes (``.nii``, ``.nii.gz``) through nibabel.

Orientation, precisely: NIfTI stores voxels in index order ``(i, j, k)`` and an
affine mapping ``(i, j, k, 1)`` to world millimetres (RAS+). The reader does
**not** reorient (no ``as_closest_canonical``): ``data`` is the stored array
with its axes reversed, ``(z, y, x) = (k, j, i)``, so ``z`` is whatever the
third stored axis is (the slice axis of an axial CT; for a sagittal scan it is
left-right). Spacing is the header's ``pixdim`` (``get_zooms``) reversed, in
the file's spatial unit (normally mm). The affine is returned unchanged in
:attr:`VolumeFile.affine`; :func:`write_nifti` reverses the axes back and
writes that affine, so a mask computed on ``data`` overlays the source image
voxel for voxel in ITK-SNAP, 3D Slicer or FSLeyes. napari shows ``data`` with
``scale=spacing`` only (no rotation or flips), which is what painting needs.

A 4D file ``(i, j, k, c)`` (e.g. the four MRI contrasts of a BraTS case) is
read as channels ``(c, z, y, x)``; size-1 axes past the third are dropped
(``(i, j, k, 1, c)`` vector images included). A time series therefore reads
as channels: split it before segmenting.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.volume import Spacing
from .base import VolumeFile, VolumeFileError, check_level, checked_spacing


def read_nifti(path: Path, level: int = 0) -> VolumeFile:
    """Read a NIfTI file as ``(z, y, x)`` (or ``(c, z, y, x)``) with spacing and the source affine."""
    import nibabel as nib

    check_level(path, level, 1)
    try:
        img = nib.load(str(path))
        arr = np.asarray(img.dataobj)  # applies scl_slope / scl_inter when set
        zooms = tuple(float(str(np.float32(z))) for z in img.header.get_zooms()[:3])  # 0.3, not 0.30000001
        affine = np.asarray(img.affine, dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 (nibabel, gzip and zlib raise many types for corrupt files)
        raise VolumeFileError(f"{path}: cannot read as NIfTI ({type(exc).__name__}: {exc})") from exc
    if arr.ndim > 3:
        arr = arr.reshape(arr.shape[:3] + tuple(n for n in arr.shape[3:] if n > 1))
    if arr.ndim not in (3, 4):
        raise VolumeFileError(f"{path}: NIfTI data of shape {arr.shape} is not a 3D volume "
                              "(need (i, j, k) or (i, j, k, channels))")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))  # big-endian files: torch needs native order
    arr = np.ascontiguousarray(arr.T)  # (i, j, k[, c]) -> ([c,] z, y, x)
    if len(zooms) < 3 or not all(np.isfinite(z) and z > 0 for z in zooms):
        zooms = tuple(float(n) for n in np.linalg.norm(affine[:3, :3], axis=0))  # pixdim unset: the affine's
    channel_axis = 0 if arr.ndim == 4 else None
    return VolumeFile(arr, checked_spacing(path, zooms[::-1]), affine, channel_axis, path, 0, 1,
                      "czyx" if arr.ndim == 4 else "zyx")


def write_nifti(path: Path, mask: np.ndarray, spacing: Spacing, affine: np.ndarray | None = None, *,
                origin: Sequence[float] | None = None) -> None:
    """Write a ``(z, y, x)`` mask as NIfTI ``(i, j, k) = (x, y, z)``.

    Parameters
    ----------
    affine : np.ndarray, optional
        4x4 voxel-to-world matrix of the reference image (:attr:`VolumeFile.affine`);
        it fixes the geometry, written with units of millimetres (NIfTI's usual unit; the units of a reference
        in another unit are not carried) and ``spacing`` is then only checked for validity.
        Without it: ``diag(x, y, z, 1)`` from ``spacing``, moved to ``origin``, no rotation, its units unset (a
        napari layer's units are its own).
    origin : sequence of float, optional
        ``(z, y, x)`` position of the first voxel where there is no ``affine``.
    """
    import nibabel as nib

    reference = affine is not None
    if affine is None:
        affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
        if origin is not None:
            affine[:3, 3] = [origin[2], origin[1], origin[0]]
    affine = np.asarray(affine, float)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise ValueError(f"affine must be a finite 4x4 matrix, got shape {affine.shape}")
    img = nib.Nifti1Image(np.ascontiguousarray(mask.T), affine)
    if reference:
        img.header.set_xyzt_units("mm")  # a NIfTI reference affine is in millimetres
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_intent("label")  # NIFTI_INTENT_LABEL: a label map (viewers and this reader open it as labels)
    nib.save(img, str(path))


def is_label_map(path: Path) -> bool:
    """Whether the NIfTI header at ``path`` declares a label map (``NIFTI_INTENT_LABEL``); False if unreadable."""
    import nibabel as nib

    try:
        return nib.load(str(path)).header.get_intent()[0] == "label"
    except Exception:  # noqa: BLE001 (read_nifti names what is wrong)
        return False
