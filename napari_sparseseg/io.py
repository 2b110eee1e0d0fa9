"""Reading volumes from files: npz (image/labels/spacing), TIFF, NIfTI, zarr.

Qt-free. Every reader returns ``(array, spacing)`` with axes ``(z, y, x)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .core.volume import Spacing, validate_spacing


class VolumeFileError(ValueError):
    """A file that cannot be read as a volume; the message says why."""


def load_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray | None, Spacing]:
    """Read ``image``, optional ``labels`` and optional ``spacing`` from an ``.npz``."""
    try:
        with np.load(path) as data:
            if "image" not in data:
                raise VolumeFileError(f"{path}: no 'image' array (found {sorted(data.files)})")
            image = data["image"]
            labels = data.get("labels", None)
            spacing = validate_spacing(data.get("spacing", None))
    except (OSError, ValueError) as exc:
        if isinstance(exc, VolumeFileError):
            raise
        raise VolumeFileError(f"{path}: cannot read as .npz ({exc})") from exc
    return image, labels, spacing


def load_volume(path: str | Path, key: str = "image") -> tuple[np.ndarray, Spacing]:
    """Read one array and its spacing from npz, tif/tiff, nii/nii.gz or zarr."""
    p = Path(path)
    name = p.name.lower()
    if not p.exists():
        raise VolumeFileError(f"{path}: no such file")
    if name.endswith(".npz"):
        image, labels, spacing = load_npz(p)
        arr = labels if key == "labels" else image
        if arr is None:
            raise VolumeFileError(f"{path}: no '{key}' array")
        return arr, spacing
    if name.endswith((".tif", ".tiff")):
        import tifffile

        try:
            with tifffile.TiffFile(p) as tif:
                arr = tif.asarray()
                spacing = _tiff_spacing(tif)
        except Exception as exc:  # tifffile raises many types for corrupt files
            raise VolumeFileError(f"{path}: cannot read as TIFF ({exc})") from exc
        return arr, spacing
    if name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        try:
            img = nib.load(str(p))
            arr = np.asarray(img.dataobj)
            zooms = img.header.get_zooms()[:3]
        except Exception as exc:
            raise VolumeFileError(f"{path}: cannot read as NIfTI ({exc})") from exc
        # NIfTI stores (i, j, k) = (x, y, z); transpose to (z, y, x).
        return np.ascontiguousarray(arr.transpose(2, 1, 0)), validate_spacing(zooms[::-1])
    if name.endswith(".zarr") or (p / "zarr.json").exists():
        import zarr

        try:
            arr = zarr.open_array(str(p), mode="r")
            spacing = validate_spacing(arr.attrs.get("spacing"))
            return np.asarray(arr[...]), spacing
        except Exception as exc:
            raise VolumeFileError(f"{path}: cannot read as a zarr array ({exc})") from exc
    raise VolumeFileError(f"{path}: unsupported file type (use .npz, .tif, .nii(.gz) or .zarr)")


def _tiff_spacing(tif) -> Spacing:
    """Spacing from ImageJ metadata (``spacing`` = z step, XResolution = pixels per unit)."""
    try:
        ij = tif.imagej_metadata or {}
        page = tif.pages[0]
        xres = page.tags.get("XResolution")
        yres = page.tags.get("YResolution")
        sx = xres.value[1] / xres.value[0] if xres else 1.0
        sy = yres.value[1] / yres.value[0] if yres else 1.0
        return validate_spacing((float(ij.get("spacing", 1.0)), sy, sx))
    except (ValueError, ZeroDivisionError, TypeError, AttributeError):
        return (1.0, 1.0, 1.0)


def save_mask(path: str | Path, mask: np.ndarray, spacing: Spacing) -> None:
    """Write a mask (0 = background, 1..K) as .npz, .tif or .nii.gz keeping spacing."""
    p = Path(path)
    name = p.name.lower()
    if name.endswith(".npz"):
        np.savez_compressed(p, labels=mask, spacing=np.asarray(spacing, np.float32))
    elif name.endswith((".tif", ".tiff")):
        import tifffile

        tifffile.imwrite(p, mask, imagej=True, resolution=(1 / spacing[2], 1 / spacing[1]),
                         metadata={"spacing": spacing[0], "axes": "ZYX"})
    elif name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
        nib.save(nib.Nifti1Image(np.ascontiguousarray(mask.transpose(2, 1, 0)), affine), str(p))
    else:
        raise VolumeFileError(f"{path}: unsupported output type (use .npz, .tif or .nii.gz)")
